"""Every bundled spec on every zoo model in one real pytest session: items pass, fail or skip
with one-line reasons, and nothing reaches the user as a traceback or an internal error."""

from __future__ import annotations

import re

import pytest

from pytest_weights.spec import bundled_specs


@pytest.mark.slow
def test_every_bundled_spec_on_every_zoo_model_without_a_traceback(pytester, zoo):
    args = [a for path in zoo.values() for a in ("--checkpoint", str(path))]
    args += [a for name in sorted(bundled_specs()) for a in ("--weights-spec", name)]
    result = pytester.runpytest(*args, "--weights-no-cache", "-p", "no:cacheprovider", "-rfEs")
    out = result.stdout.str()
    assert result.ret in (0, 1), out[-3000:]
    for marker in ("Traceback", "INTERNALERROR", "Interrupted", 'File "', "Error: ", "error during collection"):
        assert marker not in out, marker
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 0
    assert outcomes.get("errors", 0) == 0, out[-3000:]
    # every default-spec item passes or skips on every zoo model
    assert not re.search(r"FAILED default\.weights\.yaml::", out), out[-3000:]
    # specs that need what a single checkpoint lacks say so in one line
    assert "needs" in out or "pass --reference" in out
