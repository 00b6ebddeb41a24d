"""The value histogram: bins are disjoint intervals in value order that hold exactly the values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights.engine import reduce_tensor
from pytest_weights.stats import ValueHistogram
from pytest_weights.stats.kernels import F32_MANTISSA_BITS

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2]


def histogram(t: torch.Tensor, slice_elements: int = 1 << 20):
    return reduce_tensor(t, [ValueHistogram()], slice_elements=slice_elements)[ValueHistogram()]


def sample(seed: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = 0.5 if dtype.itemsize == 1 else 0.02
    x = torch.randn(n, generator=g, dtype=torch.float64) * scale
    x[torch.rand(n, generator=g) < 0.05] = 0.0
    return x.to(dtype)


def assert_holds_exactly(h, t: torch.Tensor) -> None:
    """Every finite value lies in exactly one bin, and each bin's count is its number of values."""
    x = t.to(torch.float64).numpy().ravel()
    x = x[np.isfinite(x)]
    lo, hi, c = h.lo.numpy(), h.hi.numpy(), h.counts.numpy()
    assert h.n == len(x) == c.sum()
    assert (lo <= hi).all() and (c > 0).all()
    assert (hi[:-1] <= lo[1:]).all()  # disjoint, in value order
    if h.slack:  # float64 is binned after rounding to float32: an edge is blurred by the slack
        near = np.searchsorted(lo, x, side="right") - 1
        slack = h.slack * np.abs(x)
        around = (np.clip(near + d, 0, len(c) - 1) for d in (-1, 0, 1))
        assert np.any([(x >= lo[k] - slack) & (x <= hi[k] + slack) for k in around], axis=0).all()
        return
    # float32 bins are [a, b) in magnitude: [a, b) for x ≥ 0, (−b, −a] for x < 0
    j = np.where(x < 0, np.searchsorted(hi, x, side="left"), np.searchsorted(lo, x, side="right") - 1)
    assert (j >= 0).all() and (j < len(c)).all()
    assert (x <= hi[j]).all() and (x >= lo[j]).all()
    assert (np.bincount(j, minlength=len(c)) == c).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5000), dtype=st.sampled_from(DTYPES))
def test_bins_hold_exactly_the_values(seed, n, dtype):
    t = sample(seed, n, dtype)
    h = histogram(t)
    assert_holds_exactly(h, t)
    assert h.exact == (dtype.itemsize <= 2)
    if h.exact:
        assert torch.equal(h.lo, h.hi)
        assert torch.equal(h.lo, torch.unique(t.to(torch.float64)))  # one bin per distinct value


@pytest.mark.parametrize("scale", [1e-30, 1e-6, 0.02, 1.0, 1e6, 1e30])
def test_float32_bins_are_relative_at_every_scale(scale):
    t = torch.randn(20_000, generator=torch.Generator().manual_seed(1)) * scale
    h = histogram(t)
    assert_holds_exactly(h, t)
    big = h.lo.abs() > 1e-35 * scale
    width = (h.hi - h.lo)[big] / torch.minimum(h.lo.abs(), h.hi.abs())[big]
    assert width.max() <= 2.0**-F32_MANTISSA_BITS * (1 + 1e-12)
    assert width.min() >= 2.0 ** -(F32_MANTISSA_BITS + 1) * (1 - 1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4000), step=st.integers(1, 700), dtype=st.sampled_from(DTYPES))
def test_counts_do_not_depend_on_slicing_or_order(seed, n, step, dtype):
    t = sample(seed, n, dtype)
    a = histogram(t)
    b = histogram(t[torch.randperm(n, generator=torch.Generator().manual_seed(seed))], slice_elements=step)
    for field in ("lo", "hi", "counts"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_signed_zeros_share_one_bin_and_non_finite_values_are_left_out():
    t = torch.tensor([0.0, -0.0, -0.0, 1.0, float("nan"), float("inf"), -float("inf"), -2.0])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        h = histogram(t.to(dtype))
        assert h.n == 5
        zero = int(((h.lo <= 0) & (h.hi >= 0)).nonzero())
        assert int(h.counts[zero]) == 3
        assert_holds_exactly(h, t.to(dtype))


def test_subnormals_and_extremes_of_float32():
    tiny = torch.finfo(torch.float32).tiny
    t = torch.tensor([tiny / 8, -tiny / 2, tiny, 3.4e38, -3.4e38, 1e-45])
    h = histogram(t)
    assert_holds_exactly(h, t)
    assert h.n == 6
