"""KS distance to the fitted normal: exact against scipy, invariances, sample-size scaling."""

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

TOL = 1e-6  # absolute, on D


def ks(t: torch.Tensor, chunk: int = 1 << 24, **kw):
    return reduce_tensor(t, [KSNormal(**kw)], chunk_elements=chunk)[KSNormal(**kw)]


def scipy_d(t: torch.Tensor) -> float:
    x = t.double().numpy().ravel()
    return stats.kstest(x, "norm", args=(x.mean(), x.std()), method="asymp").statistic


CASES = {
    "gaussian": lambda g: torch.randn(700, 300, generator=g),
    "student-t5": lambda g: torch.distributions.StudentT(5.0).sample((200_000,)),
    "uniform": lambda g: torch.rand(100_000, generator=g),
    "lognormal": lambda g: torch.randn(50_000, generator=g).exp(),
    "discrete-ties": lambda g: torch.randint(-3, 4, (20_000,), generator=g).float(),
    "zero-spike": lambda g: torch.where(torch.rand(30_000, generator=g) < 0.4, 0.0, torch.randn(30_000, generator=g)),
    "heavy-outliers": lambda g: torch.cat([torch.randn(10_000, generator=g), torch.tensor([1e4, -1e4])]),
    "tiny": lambda g: torch.randn(7, generator=g),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_scipy_kstest_statistic(name):
    torch.manual_seed(0)
    t = CASES[name](torch.Generator().manual_seed(0))
    got = ks(t)
    assert got.exact
    assert got.statistic == pytest.approx(scipy_d(t), abs=TOL)


def test_known_reference_points_from_paper_a():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    assert ks(torch.randn(1_000_000, generator=g)).statistic < 0.0015
    assert ks(torch.distributions.StudentT(5.0).sample((1_000_000,))).statistic == pytest.approx(0.038, abs=0.002)
    assert ks(torch.rand(1_000_000, generator=g)).statistic == pytest.approx(0.0577, abs=0.001)


def test_constant_tensor_is_maximally_non_gaussian():
    assert ks(torch.zeros(100, 100)).statistic == 1.0
    assert ks(torch.full((50,), 3.0)).statistic == 1.0


def test_chunking_gives_the_same_distance():
    t = torch.distributions.StudentT(4.0).sample((300, 200))
    # chunked moments differ from whole-tensor ones only by float64 rounding
    assert ks(t, chunk=1000).statistic == pytest.approx(ks(t).statistic, abs=1e-8)


def test_falls_back_to_a_bounded_approximation_when_too_many_candidates():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(200_000, generator=g)
    approx = ks(t, max_exact=10)
    assert not approx.exact
    ref = scipy_d(t)
    assert approx.statistic - approx.error_bound - 1e-12 <= ref <= approx.statistic + 1e-12
    assert approx.error_bound < 1e-3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_invariant_to_scale_shift_and_permutation(seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(5000, generator=g, dtype=torch.float64) ** 3  # far from Gaussian
    moved = (t * scale + shift)[torch.randperm(5000, generator=g)]
    assert ks(moved).statistic == pytest.approx(ks(t).statistic, abs=1e-6)


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
