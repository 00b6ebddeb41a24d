"""Run-scope assertions over a directory of step checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights.assertions.series import Series, show, sparkline

STD_BY_STEP = {0: 0.020, 100: 0.030, 200: 0.036, 300: 0.040, 400: 0.0402, 500: 0.0403}  # rises, saturates
PEAKED = {0: 0.020, 100: 0.034, 200: 0.040, 300: 0.038, 400: 0.036, 500: 0.035}  # overshoots, relaxes


def make_run(root, stds: dict[int, float], layers: int = 4):
    for step, std in stds.items():
        g = torch.Generator().manual_seed(step)
        tensors = {f"model.layers.{i}.mlp.weight": torch.randn(64, 64, generator=g) * std for i in range(layers)}
        save(root / f"checkpoint-{step}" / "model.safetensors", tensors)
    return root


SPEC = """
defaults:
  select: {include: ["*.mlp.weight"]}
assertions:
  - {name: std-grows, kind: run_trend, stat: std, per: role, direction: grows, min_rho: 0.9}
  - {name: std-saturates, kind: saturates, stat: std, per: pooled, last: 3, tol: 0.02}
  - {name: no-overshoot, kind: overshoot, stat: std, per: tensor, max_relaxation: 0.05}
  - {name: std-drift-bounded, kind: drift, stat: std, per: pooled, max_rel: 1.1}
  - {name: final-std, kind: final_range, stat: std, per: role, min: 0.039, max: 0.041}
"""


def test_saturating_run_passes_and_peaked_run_fails_naming_steps(pytester, tmp_path):
    good, bad = make_run(tmp_path / "good", STD_BY_STEP), make_run(tmp_path / "bad", PEAKED)
    pytester.makefile(".weights.yaml", run=SPEC)
    ok = pytester.runpytest("run.weights.yaml", "--checkpoint", str(good), "-p", "no:cacheprovider")
    ok.assert_outcomes(passed=5)
    fail = pytester.runpytest("run.weights.yaml", "--checkpoint", str(bad), "-p", "no:cacheprovider")
    # peaked run: not monotone (ρ < 0.9), not saturated, relaxes > 5 %, final std too low; drift still bounded
    fail.assert_outcomes(failed=4, passed=1)
    out = fail.stdout.str()
    assert "peak" in out and "at step 200" in out
    assert "model.layers.*.mlp.weight" in out
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")


def test_latest_checks_newest_checkpoint_but_keeps_the_trajectory(pytester, tmp_path):
    run = make_run(tmp_path / "run", STD_BY_STEP)
    pytester.makefile(".weights.yaml", run=SPEC)
    result = pytester.runpytest(
        "run.weights.yaml", "--checkpoint", str(run), "--weights-latest", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=5)


def test_run_kind_without_a_run_fails_clearly(pytester, tmp_path):
    ckpt = save(tmp_path / "one.safetensors", {"model.layers.0.mlp.weight": torch.randn(8, 8)})
    pytester.makefile(".weights.yaml", run=SPEC)
    result = pytester.runpytest("run.weights.yaml", "--checkpoint", str(ckpt), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines(["*judges a training run: pass a directory of step checkpoints*"])


def test_series_values_match_numpy(tmp_path):
    from pytest_weights import open_checkpoint
    from pytest_weights.runner import Checker
    from pytest_weights.spec import parse_spec

    run = make_run(tmp_path / "run", STD_BY_STEP, layers=2)
    spec = parse_spec(SPEC, "r.weights.yaml").assertions[0]
    ckpts = [(s, open_checkpoint(run / f"checkpoint-{s}")) for s in STD_BY_STEP]
    result = Checker("cpu").evaluate_run(ckpts, spec, "run")
    series = result.observed["model.layers.*.mlp.weight"]
    assert series["steps"] == list(STD_BY_STEP)
    for step, value in zip(series["steps"], series["values"], strict=True):
        ws = [
            ck.read(f"model.layers.{i}.mlp.weight").double().std(unbiased=False).item()
            for i in range(2)
            for s, ck in ckpts
            if s == step
        ]
        assert value == pytest.approx(sorted(ws)[0] / 2 + sorted(ws)[1] / 2, rel=1e-6)  # median of two


def test_sparkline_and_compact_series():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    text = show(list(range(0, 1000, 100)), [float(i) for i in range(10)])
    assert text.startswith("▁") and "0:0" in text and "900:9" in text
    assert Series("x", (1, 2), (1.0, 2.0)).subject == "x"


def test_bifurcation_bimodal_and_split(pytester, tmp_path):
    root = tmp_path / "run"
    for step in (0, 100, 200, 300):
        g = torch.Generator().manual_seed(step)
        t = {f"model.layers.{i}.mlp.weight": torch.randn(64, 64, generator=g) * 0.02 for i in range(3)}
        if step >= 200:  # layer 2 turns bimodal (two clusters at ±0.05) and its scale splits from the others
            w = torch.randn(64, 64, generator=g) * 0.005
            t["model.layers.2.mlp.weight"] = w + 0.05 * torch.sign(torch.randn(64, 64, generator=g))
        save(root / f"checkpoint-{step}" / "model.safetensors", t)
    pytester.makefile(
        ".weights.yaml",
        run="""
assertions:
  - {name: no-bimodal, kind: bifurcation}
  - {name: not-before-300, kind: bifurcation, not_before: 300}
  - {name: late-is-fine, kind: bifurcation, not_before: 200}
  - {name: no-split, kind: bifurcation, mode: split, stat: std, threshold: 0.5}
""",
    )
    result = pytester.runpytest("run.weights.yaml", "--checkpoint", str(root), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=3, passed=1)
    out = result.stdout.str()
    assert "model.layers.2.mlp.weight" in out and "bifurcates at step 200" in out
    assert "model.layers.*.mlp.weight" in out  # the split role


# ---------------------------------------------------------------------------- per-step verdicts


def _kinds():
    from pytest_weights.assertions.drift import Drift
    from pytest_weights.assertions.final_range import FinalRange
    from pytest_weights.assertions.overshoot import Overshoot
    from pytest_weights.assertions.saturates import Saturates

    return [
        Drift(stat="std", max_rel=0.1),
        Saturates(stat="std", last=3, tol=0.05),
        FinalRange(stat="std", min=0.5, max=1.5),
        Overshoot(stat="std", min_relaxation=0.05, max_relaxation=0.3),
    ]


@given(
    values=st.lists(st.floats(0.01, 10, allow_nan=False), min_size=3, max_size=8),
    k=st.integers(0, 3),
)
@settings(max_examples=400, deadline=None)
def test_per_step_verdicts_agree_with_the_kind(values: list[float], k: int) -> None:
    """The per-step band a run kind records (``min``/``max``/``failing``, drawn by the report) says
    a step fails exactly when the kind's own verdict on the series fails."""
    kind = _kinds()[k]
    ser = Series("s", tuple(range(0, 100 * len(values), 100)), tuple(values))
    lo, hi = kind.band(ser)
    failing = [not ((a is None or v >= a) and (b is None or v <= b)) for v, a, b in zip(values, lo, hi, strict=True)]
    assert any(failing) == (kind.judge(ser) is not None)
