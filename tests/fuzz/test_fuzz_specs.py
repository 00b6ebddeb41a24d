"""A quick slice of the spec fuzzer (``python -m tests.fuzz.specs --cases 2000`` runs a full campaign).

:data:`SLICES` seeds of :data:`CASES` mutated specs each: every one loads as a valid spec whose
assertions all judge small checkpoints without an internal error, or is refused with a short
SpecError naming the file; nothing else is raised, nothing is slow. ``PW_FUZZ_SEED`` in the
environment shifts the seeds to explore further.
"""

from __future__ import annotations

import os

import pytest

from pytest_weights.errors import SpecError

from . import specs as fuzz
from .specs import BAD, COUNTS, Finding, make_case, run_campaign

CASES = 100
BASE = int(os.environ.get("PW_FUZZ_SEED", "11"))
SLICES = (BASE, BASE + 1, BASE + 2)


@pytest.mark.parametrize("seed", SLICES)
def test_mutated_specs_load_or_are_refused_and_judge_without_crashing(seed):
    findings: list[Finding] = []
    counts = run_campaign(CASES, seed, findings)
    assert set(counts) == set(COUNTS) and counts["cases"] == CASES
    assert not findings, "\n".join(
        f"[{f.kind}] case {f.case} (seed {seed}, {f.mutation}): {f.detail}" for f in findings
    )
    assert all(counts[k] == 0 for k in BAD), counts
    assert counts["valid"] + counts["refused"] == CASES
    assert counts["valid"] > CASES // 5 and counts["refused"] > CASES // 5  # both sides are reached


def test_cases_are_reproducible():
    for case in range(30):
        assert make_case(3, case) == make_case(3, case)
    assert len({make_case(3, case)[0] for case in range(30)}) == 30


def test_every_mutation_is_used():
    used = {name for case in range(400) for name in make_case(0, case)[1].split("+")}
    assert set(fuzz.MUTATIONS) | {"generated"} <= used


def test_a_broken_invariant_is_counted(monkeypatch):
    def crash(path):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(fuzz, "load_spec", crash)
    findings: list[Finding] = []
    counts = run_campaign(3, 0, findings)
    assert counts["crashes_at_load"] == 3 and [f.kind for f in findings] == ["crashes_at_load"] * 3
    assert "TypeError: unhashable type" in findings[0].detail

    def long(path):
        raise SpecError(path, 1, "x" * 2000)

    monkeypatch.setattr(fuzz, "load_spec", long)
    assert run_campaign(2, 0)["long_messages"] == 2


def test_an_internal_error_while_judging_is_a_crash(monkeypatch):
    from pytest_weights.assertions import REGISTRY
    from pytest_weights.spec import parse_spec

    def boom(self, tensors):
        raise ZeroDivisionError("float division by zero")

    spec = parse_spec("assertions:\n  - kind: finite\n  - kind: stat_range\n    stat: std\n", "s.weights.yaml")
    assert fuzz.judge_all(spec) == []
    monkeypatch.setattr(REGISTRY["finite"], "evaluate", boom)
    (crash,) = fuzz.judge_all(spec)
    assert crash.startswith("s.weights.yaml:2 finite [finite]: ZeroDivisionError")
