"""KS distance to the fitted normal: bounds and exact value against scipy, invariances, scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_weights.engine import reduce_tensor
from pytest_weights.stats import KSNormal

#: Our mean/std come from float32 tile sums (relative error ~1e−8), numpy's from float64:
#: D moves by at most ~φ(0)·1e−8 between the two.
MOMENTS_SLACK = 1e-7
#: Documented worst case of error_bound for centred float32 data: max φ(z)·|z|·2⁻¹⁰.
CENTRED_BOUND = 0.242 * 2**-10


def ks(t: torch.Tensor, slice_elements: int = 1 << 20, **kw):
    return reduce_tensor(t, [KSNormal(**kw)], slice_elements=slice_elements)[KSNormal(**kw)]


def scipy_d(t: torch.Tensor) -> float:
    x = t.double().numpy().ravel()
    return stats.kstest(x, "norm", args=(x.mean(), x.std()), method="exact" if x.size < 50 else "asymp").statistic


CASES = {
    "gaussian": lambda g: torch.randn(700, 300, generator=g),
    "student-t5": lambda g: torch.distributions.StudentT(5.0).sample((200_000,)),
    "uniform": lambda g: torch.rand(100_000, generator=g),
    "lognormal": lambda g: torch.randn(50_000, generator=g).exp(),
    "discrete-ties": lambda g: torch.randint(-3, 4, (20_000,), generator=g).float(),
    "zero-spike": lambda g: torch.where(torch.rand(30_000, generator=g) < 0.4, 0.0, torch.randn(30_000, generator=g)),
    "heavy-outliers": lambda g: torch.cat([torch.randn(10_000, generator=g), torch.tensor([1e4, -1e4])]),
    "signed-zeros": lambda g: torch.cat([torch.randn(5_000, generator=g), torch.zeros(300), -torch.zeros(300)]),
    "tiny": lambda g: torch.randn(7, generator=g),
}


@pytest.mark.parametrize("name", CASES)
def test_float32_bounds_contain_scipy_statistic(name):
    torch.manual_seed(0)
    t = CASES[name](torch.Generator().manual_seed(0))
    got, ref = ks(t), scipy_d(t)
    assert got.statistic - MOMENTS_SLACK <= ref <= got.statistic + got.error_bound + MOMENTS_SLACK
    assert 0 <= got.error_bound <= KSNormal().max_error  # wider bounds are refined by a second sweep
    assert got.exact == (got.error_bound == 0)


@pytest.mark.parametrize("std", [1e-4, 0.02, 3.0])
def test_centred_weights_need_no_second_sweep(std):
    t = torch.randn(500, 400, generator=torch.Generator().manual_seed(4)) * std
    got = ks(t)
    assert 0 < got.error_bound <= CENTRED_BOUND
    assert not KSNormal().needs_sweep({**reduce_tensor(t, [KSNormal()])})


def test_offset_tensors_are_refined_to_the_exact_value():
    t = 1.0 + 0.01 * torch.randn(100_000, generator=torch.Generator().manual_seed(5))  # a LayerNorm gain
    got = ks(t)
    assert got.exact  # the bins are ~0.1 std wide here: the bounds alone would be ±0.04
    assert got.statistic == pytest.approx(scipy_d(t), abs=MOMENTS_SLACK)


@pytest.mark.parametrize("name", CASES)
def test_exact_option_matches_scipy(name):
    torch.manual_seed(0)
    t = CASES[name](torch.Generator().manual_seed(0))
    got = ks(t, max_error=0)
    assert got.exact and got.error_bound == 0
    assert got.statistic == pytest.approx(scipy_d(t), abs=MOMENTS_SLACK)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_16_and_8_bit_tensors_are_exact_without_a_second_sweep(dtype):
    g = torch.Generator().manual_seed(1)
    t = (torch.randn(300, 200, generator=g) * (0.5 if dtype.itemsize == 1 else 0.02)).to(dtype)
    got = ks(t)
    assert got.exact and got.error_bound == 0
    assert got.statistic == pytest.approx(scipy_d(t), abs=1e-12)  # 16-bit moments are exact


def test_float64_bounds_allow_for_rounding_to_float32():
    t = torch.randn(20_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64) ** 3
    got, ref = ks(t), scipy_d(t)
    assert got.statistic - 1e-12 <= ref <= got.statistic + got.error_bound + 1e-12
    assert ks(t, max_error=0).statistic == pytest.approx(ref, abs=1e-12)


def test_reported_lower_bound_is_close_in_practice():
    # D − L is the sampling noise inside bins (~√count/n), far below the worst-case bound
    t = torch.randn(1_000_000, generator=torch.Generator().manual_seed(3))
    got, ref = ks(t), scipy_d(t)
    assert 0 <= ref - got.statistic + MOMENTS_SLACK < 2e-5 < got.error_bound


def test_known_reference_points_from_paper_a():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    assert ks(torch.randn(1_000_000, generator=g)).statistic < 0.0015
    assert ks(torch.distributions.StudentT(5.0).sample((1_000_000,))).statistic == pytest.approx(0.038, abs=0.002)
    assert ks(torch.rand(1_000_000, generator=g)).statistic == pytest.approx(0.0577, abs=0.001)


def test_constant_tensor_is_maximally_non_gaussian():
    assert ks(torch.zeros(100, 100)).statistic == 1.0
    assert ks(torch.full((50,), 3.0)).statistic == 1.0


@pytest.mark.parametrize("exact", [False, True])
def test_slicing_gives_the_same_distance(exact):
    t = torch.distributions.StudentT(4.0).sample((300, 200))
    # the histogram is the same for any split; moments only by the float32 rounding of tile sums
    kw = {"max_error": 0.0} if exact else {}
    assert ks(t, slice_elements=1000, **kw).statistic == pytest.approx(ks(t, **kw).statistic, abs=MOMENTS_SLACK)


def test_exact_falls_back_to_bounds_when_too_many_candidates():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(200_000, generator=g)
    approx = ks(t, max_error=0, max_exact=10)
    assert not approx.exact
    ref = scipy_d(t)
    assert approx.statistic - MOMENTS_SLACK <= ref <= approx.statistic + approx.error_bound + MOMENTS_SLACK


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_invariant_to_scale_shift_and_permutation(seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(5000, generator=g, dtype=torch.float64) ** 3  # far from Gaussian
    moved = (t * scale + shift)[torch.randperm(5000, generator=g)]
    a, b = ks(t, max_error=0), ks(moved, max_error=0)
    assert b.statistic == pytest.approx(a.statistic, abs=1e-6)
    # the bounds move with the bins (relative to the values, not to the shift), but both hold D
    lo, hi = ks(moved), ks(t)
    assert max(lo.statistic, hi.statistic) <= a.statistic + 1e-6
    assert a.statistic <= min(lo.statistic + lo.error_bound, hi.statistic + hi.error_bound) + 1e-6


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 3000))
def test_permutation_leaves_the_histogram_bounds_unchanged(seed, n):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, generator=g) * 0.02
    a, b = ks(t, slice_elements=256), ks(t[torch.randperm(n, generator=g)])
    assert b.statistic == pytest.approx(a.statistic, abs=MOMENTS_SLACK)  # the same bins and counts
    assert b.error_bound == pytest.approx(a.error_bound, abs=2 * MOMENTS_SLACK)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1_000, 10_000, 100_000]))
def test_gaussian_sample_distance_shrinks_like_one_over_sqrt_n(seed, n):
    # With the mean and std fitted (Lilliefors), sqrt(n)·D has mean ≈ 0.63 and exceeds 1.6
    # with probability far below 1e-4; a constant 0.87/sqrt(n) holds for a known normal.
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    assert 0.15 < ks(x).statistic * math.sqrt(n) < 1.6


def test_mean_scaled_distance_matches_lilliefors():
    g = torch.Generator().manual_seed(7)
    vals = [ks(torch.randn(20_000, generator=g)).statistic * math.sqrt(20_000) for _ in range(60)]
    assert np.mean(vals) == pytest.approx(0.63, abs=0.06)


@pytest.mark.parametrize(
    "make",
    [
        lambda g, n: 1 + 4e-4 * torch.sign(torch.randn(n, generator=g)) + 5e-5 * torch.randn(n, generator=g),
        lambda g, n: 1 + 1e-5 * torch.sign(torch.randn(n, generator=g)),  # two spikes: few distinct values
    ],
    ids=["offset-bimodal", "two-spikes"],
)
def test_refinement_is_exact_when_candidate_bins_hold_millions_of_values(make):
    t = make(torch.Generator().manual_seed(6), 5_000_000)
    got = ks(t)
    assert got.exact
    assert got.statistic == pytest.approx(scipy_d(t), abs=MOMENTS_SLACK)


def test_too_many_distinct_values_leave_honest_bounds():
    t = 1.0 + 0.01 * torch.randn(50_000, generator=torch.Generator().manual_seed(7))
    got = ks(t, max_exact=100)
    assert not got.exact and got.error_bound > 1e-3
    assert got.statistic - MOMENTS_SLACK <= scipy_d(t) <= got.statistic + got.error_bound + MOMENTS_SLACK


def test_float64_beyond_the_float32_range():
    g = torch.Generator().manual_seed(8)
    wide = 1e39 + 1e38 * torch.randn(10_000, generator=g, dtype=torch.float64)
    far = torch.tensor([1e39, -2e39], dtype=torch.float64)
    outliers = torch.cat([torch.randn(10_000, generator=g, dtype=torch.float64), far])
    for t in (wide, outliers):
        got = ks(t)
        assert got.n == t.numel()
        assert got.statistic - 1e-9 <= scipy_d(t) <= got.statistic + got.error_bound + 1e-9


def test_gaussian_ks_fails_a_tensor_whose_bounds_straddle_the_tolerance():
    from pytest_weights.assertions.base import TensorView
    from pytest_weights.assertions.gaussian_ks import GaussianKS
    from pytest_weights.readers.base import TensorInfo

    t = 1.0 + 0.01 * torch.randn(50_000, generator=torch.Generator().manual_seed(7))
    stat = KSNormal()
    got = reduce_tensor(t, [stat])
    bounded = got[stat]._replace(exact=False, error_bound=0.02)  # as if refinement had been impossible
    info = TensorInfo("w", tuple(t.shape), t.dtype, "mem")
    for tol, passes in (
        (bounded.statistic + 0.03, True),
        (bounded.statistic + 0.01, False),
        (bounded.statistic / 2, False),
    ):
        outcome = GaussianKS(tol=tol).evaluate([TensorView(info, "", None, {**got, stat: bounded}, None)])
        assert outcome.passed is passes, tol
        if not passes and tol > bounded.statistic:
            assert "…" in outcome.deviations[0].observed and outcome.notes
