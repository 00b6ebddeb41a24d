"""Moments against numpy/scipy in float64; merge and chunking invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_weights.engine import reduce_tensor
from pytest_weights.stats import Moments

REL = 1e-6  # float32 data, float64 accumulation


def moments(t: torch.Tensor, chunk: int = 1 << 24):
    return reduce_tensor(t, [Moments()], chunk_elements=chunk)[Moments()]


def reference(x: np.ndarray) -> dict[str, float]:
    x = x.astype(np.float64).ravel()
    return {
        "mean": x.mean(),
        "std": x.std(),
        "rms": math.sqrt((x * x).mean()),
        "absmax": np.abs(x).max(),
        "skewness": stats.skew(x),
        "kurtosis": stats.kurtosis(x),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(300, 200, generator=g) * 0.02 + 0.001,
        lambda g: torch.distributions.StudentT(5.0).sample((50_000,)),
        lambda g: torch.rand(100, 100, generator=g) * 3 - 1,
        lambda g: torch.randn(1000, generator=g).exp(),
    ],
    ids=["gaussian", "student-t5", "uniform", "lognormal"],
)
def test_matches_numpy_and_scipy(make):
    torch.manual_seed(1)
    t = make(torch.Generator().manual_seed(1)).float()
    got, ref = moments(t), reference(t.numpy())
    for key, want in ref.items():
        # location/scale: relative 1e-6; skewness/kurtosis are dimensionless: absolute 1e-5
        # the mean: within 1e-6 of the std (a mean near 0 has no meaningful relative error)
        tol = {"abs": 1e-5} if key in ("skewness", "kurtosis") else {"rel": REL, "abs": 1e-12}
        if key == "mean":
            tol = {"abs": REL * ref["std"]}
        assert getattr(got, key) == pytest.approx(want, **tol), key


def test_counts_nan_and_inf_and_ignores_them():
    t = torch.randn(1000)
    clean = t.clone()
    t[3], t[10], t[500] = float("nan"), float("inf"), float("-inf")
    got = moments(t)
    assert (got.nan, got.inf, got.numel, got.n) == (1, 2, 1000, 997)
    keep = clean.numpy()[np.isfinite(t.numpy())]
    assert got.std == pytest.approx(keep.astype(np.float64).std(), rel=REL)


def test_constant_tensor_has_zero_std_and_nan_shape():
    got = moments(torch.full((64, 64), 0.5))
    assert got.std == 0.0 and got.mean == 0.5
    assert math.isnan(got.kurtosis) and math.isnan(got.skewness)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 60),
    cols=st.integers(1, 40),
    chunk=st.integers(1, 500),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-10, 10),
)
def test_chunking_does_not_change_the_result(rows, cols, chunk, seed, scale, shift):
    t = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale + shift
    whole, parts = moments(t), moments(t, chunk=chunk)
    assert parts.n == whole.n
    for key in ("mean", "std", "min", "max"):
        assert getattr(parts, key) == pytest.approx(getattr(whole, key), rel=1e-6, abs=1e-6 * scale)
    if whole.std > 0 and rows * cols > 3:
        assert parts.kurtosis == pytest.approx(whole.kurtosis, rel=1e-4, abs=1e-4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-4, 1e4))
def test_shape_statistics_are_scale_and_permutation_invariant(seed, scale):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(4000, generator=g) + torch.rand(4000, generator=g)
    a = moments(t)
    b = moments(t[torch.randperm(4000, generator=g)] * scale)
    assert b.kurtosis == pytest.approx(a.kurtosis, abs=1e-4)
    assert b.skewness == pytest.approx(a.skewness, abs=1e-4)
    assert b.std == pytest.approx(a.std * scale, rel=1e-5)


def test_merge_is_associative_and_order_free():
    m = Moments()
    g = torch.Generator().manual_seed(3)
    parts = [m.reduce(torch.randn(1, n, generator=g) * (i + 1), {}) for i, n in enumerate((5, 100, 1, 37))]
    left = m.merge(m.merge(m.merge(parts[0], parts[1]), parts[2]), parts[3])
    right = m.merge(parts[3], m.merge(parts[2], m.merge(parts[1], parts[0])))
    for a, b in zip(left, right, strict=True):
        assert a == pytest.approx(b, rel=1e-9)


def test_float16_and_bfloat16_are_upcast():
    base = torch.randn(128, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    for dtype in (torch.float16, torch.bfloat16):
        t = base.to(dtype)
        ref = t.float().numpy().astype(np.float64)
        assert moments(t).std == pytest.approx(ref.std(), rel=REL)


@pytest.mark.parametrize("scale", [1e-40, 1e-25, 1e-12, 1e12, 1e30])
def test_extreme_scales_neither_overflow_nor_underflow(scale):
    t = torch.randn(20_000, generator=torch.Generator().manual_seed(5)) * scale  # float32
    got, ref = moments(t), reference(t.numpy())
    assert got.std == pytest.approx(ref["std"], rel=REL)
    assert got.kurtosis == pytest.approx(ref["kurtosis"], abs=1e-5)
    assert got.skewness == pytest.approx(ref["skewness"], abs=1e-5)
