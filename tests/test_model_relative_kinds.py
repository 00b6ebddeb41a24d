"""``scale_consistency`` and ``flatness`` against independent references (numpy float64, scipy)
and their invariances: scaling the whole model, permuting its tensors, widths."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights import check
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.spec import parse_spec

SPEC = parse_spec(
    """
assertions:
  - {name: scale, kind: scale_consistency}
  - {name: flat, kind: flatness}
defaults:
  select: {min_ndim: 2, min_numel: 1}
""",
    "model.weights.yaml",
)


def model(seed: int, widths: list[int], gain: float = 1.0) -> dict[str, torch.Tensor]:
    """Linear layers at a trained-like scale: N(0, gain/fan_in) with heavy-ish tails (Student-t)."""
    g = np.random.default_rng(seed)
    out = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        w = g.standard_t(8, size=(fan_out, fan_in)) * math.sqrt(gain / fan_in)
        out[f"net.{i}.weight"] = torch.from_numpy(w.astype(np.float32))
    return out


def results(tensors: dict[str, torch.Tensor]) -> dict[str, object]:
    report = check(StateDictCheckpoint(tensors), SPEC, device="cpu")
    return {r.name: r for r in report.results}


def test_observed_values_match_numpy_and_scipy():
    tensors = model(0, [48, 96, 64, 80, 32])
    got = results(tensors)
    for name, t in tensors.items():
        x = t.double().numpy()
        expected_scale = x.std() * math.sqrt(x.shape[1])
        assert got["scale"].observed[name] == pytest.approx(expected_scale, rel=1e-6)
        assert got["flat"].observed[name] == pytest.approx(scipy.stats.kurtosis(x.ravel()), abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    factor=st.floats(1e-3, 1e3),
    widths=st.lists(st.integers(16, 96), min_size=4, max_size=7),
)
def test_verdicts_are_invariant_to_scaling_the_model_and_to_tensor_order(seed, factor, widths):
    tensors = model(seed, widths)
    base = results(tensors)
    scaled = results({k: v * factor for k, v in reversed(list(tensors.items()))})
    for name in ("scale", "flat"):
        assert base[name].passed == scaled[name].passed
        ratios = {k: v / np.median(list(base[name].observed.values())) for k, v in base[name].observed.items()}
        if name == "scale":
            s_med = np.median(list(scaled[name].observed.values()))
            for k, v in scaled[name].observed.items():
                assert v / s_med == pytest.approx(ratios[k], rel=1e-4)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(32, 96), min_size=4, max_size=6))
def test_a_healthy_model_at_any_widths_passes_and_one_rescaled_or_uniform_matrix_fails(seed, widths):
    tensors = model(seed, widths)
    got = results(tensors)
    assert got["scale"].passed and got["flat"].passed
    target = f"net.{seed % (len(widths) - 1)}.weight"
    for factor in (100.0, 0.01):
        bad = results({**tensors, target: tensors[target] * factor})["scale"]
        assert not bad.passed and [d.subject for d in bad.deviations] == [target]
    g = torch.Generator().manual_seed(seed)
    t = tensors[target]
    uniform = (torch.rand(t.shape, generator=g) * 2 - 1) * math.sqrt(3) * float(t.std())
    flat = results({**tensors, target: uniform})["flat"]
    assert not flat.passed and [d.subject for d in flat.deviations] == [target]


def test_a_model_still_at_its_uniform_init_passes_flatness_with_a_note():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 64) for _ in range(4)]  # kaiming_uniform: kurtosis ≈ −1.2 each
    got = results({f"net.{i}.weight": layer.weight.detach() for i, layer in enumerate(layers)})
    assert got["flat"].passed and got["scale"].passed
    assert any("near a uniform init" in n for n in got["flat"].notes)


def test_fewer_than_three_matrices_are_skipped_not_passed():
    got = results(model(0, [32, 64, 32]))
    assert got["scale"].skipped and got["flat"].skipped
    assert "nothing to compare: 2 tensor(s) selected, 3 needed" in got["scale"].summary
