"""The NaN/Inf policy without the moments: the Weibull kinds count NaN/Inf from their own histogram."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import load_spec
from pytest_weights.stats import Moments
from pytest_weights.stats.finite import NonFinite, NonFiniteResult


def test_the_weibull_spec_needs_no_moments():
    """Its kinds read the log|w| histogram; the NaN/Inf counts come from it, not from a power-sums sweep."""
    for entry in load_spec("weibull").assertions:
        needed = entry.assertion.required_statistics()
        assert NonFinite() in needed and Moments() not in needed, entry.name


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    nans=st.integers(0, 20),
    infs=st.integers(0, 20),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_counts_equal_numpy(n, nans, infs, dtype, seed):
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.02, n)
    where = g.permutation(n)
    x[where[: min(nans, n)]] = np.nan
    rest = where[min(nans, n) :]
    x[rest[: min(infs, len(rest))]] = np.where(g.random(min(infs, len(rest))) < 0.5, np.inf, -np.inf)
    t = torch.from_numpy(x).to(dtype)
    got = reduce_tensor(t, [NonFinite()], slice_elements=257)[NonFinite()]
    ref = t.double().numpy()
    assert got == NonFiniteResult(n, int(np.isnan(ref).sum()), int(np.isinf(ref).sum()))


def test_a_healthy_tensor_is_not_swept_again():
    """No NaN/Inf in the histogram: the counts come from it (no sweep of their own)."""
    values = reduce_tensor(torch.randn(5000) * 0.02, [NonFinite()])
    assert values[NonFinite()] == NonFiniteResult(5000, 0, 0)
    assert Moments() not in values


def test_weibull_items_fail_a_tensor_with_nan_naming_the_counts():
    g = torch.Generator().manual_seed(0)
    sd = {f"layers.{i}.weight": torch.randn(128, 128, generator=g) * 0.02 for i in range(3)}
    sd["layers.1.weight"][0, :7] = float("nan")
    sd["layers.1.weight"][1, :2] = float("inf")
    report = check(sd, "weibull", device="cpu")
    fit = next(r for r in report.results if r.name == "weibull-fit")
    assert not fit.passed
    row = next(d for d in fit.deviations if d.subject == "layers.1.weight")
    assert row.observed == f"7 NaN, 2 Inf of {128 * 128} values"
    assert {d.subject for d in fit.deviations} == {"layers.1.weight"}
