"""The hot-loop kernels against numpy float64: tiled power sums, keys and their values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights.stats import kernels


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3 * kernels.TILE), shift=st.floats(-1, 1))
def test_power_sums_match_float64(seed, n, shift):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02 + shift * 0.01
    got = kernels.power_sums(x).tolist()
    d = x.double().numpy()
    for k, (value, want) in enumerate(zip(got[:4], [d.sum(), (d**2).sum(), (d**3).sum(), (d**4).sum()], strict=True)):
        scale = (np.abs(d) ** (k + 1)).sum()  # relative to Σ|x|^k: a signed sum may cancel
        assert abs(value - want) <= 1e-6 * scale + 1e-30, k
    assert got[4:] == [d.min(), d.max()]


def test_power_sums_about_a_centre_and_in_float64():
    x = 1.0 + 0.01 * torch.randn(100_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = x.numpy() - 1.0
    got = kernels.power_sums(x, 1.0).tolist()
    assert got[1] == pytest.approx((d**2).sum(), rel=1e-12)
    assert got[3] == pytest.approx((d**4).sum(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_exact_keys_decode_to_the_values(dtype):
    x = (torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 2).to(dtype)
    assert torch.equal(kernels.key_values(dtype, kernels.keys(x).long()), x.to(torch.float64))


def test_float32_keys_decode_to_the_truncated_value():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(3)) * 1e-3
    low = kernels.key_values(torch.float32, kernels.keys(x).long())
    step = 2.0 ** (np.floor(np.log2(np.abs(x.double().numpy()))) - kernels.F32_MANTISSA_BITS)
    assert (np.abs(x.double().numpy()) - np.abs(low.numpy()) >= 0).all()  # truncated towards 0
    assert (np.abs(x.double().numpy()) - np.abs(low.numpy()) < step).all()  # by less than one step
    assert (np.sign(low.numpy()) == np.sign(x.numpy())).all()


def test_fused_pass_equals_the_separate_kernels():
    x = torch.randn(700_000, generator=torch.Generator().manual_seed(4))
    sums, counts = kernels.power_sums(x), kernels.key_counts(x)
    kernels.fuse(x, frozenset({"power_sums", "key_counts"}))
    try:
        assert torch.equal(kernels.power_sums(x), sums) and torch.equal(kernels.key_counts(x), counts)
    finally:
        kernels.forget()
