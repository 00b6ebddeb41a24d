"""Weibull fit of |w| (paper D): npm-weibull-py's protocol reproduced, MLE against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import parse_spec
from pytest_weights.stats import kernels
from pytest_weights.stats.weibull import (
    LogAbsHistogram,
    WeibullFit,
    WeibullMLE,
    linspace_like_numpy,
    weibull_class,
)

EDGES = np.linspace(-12, 2, 1025)


def fit(t: torch.Tensor, protocol: str = "mid_80", chunk: int = 1 << 22):
    """The fit with the tensor swept in slices of ``chunk`` elements (merged in order)."""
    return reduce_tensor(t, [WeibullFit(protocol)], slice_elements=chunk)[WeibullFit(protocol)]


def hist(t: torch.Tensor, chunk: int = 1 << 22):
    return reduce_tensor(t, [LogAbsHistogram()], slice_elements=chunk)[LogAbsHistogram()]


def ref_hist(x: np.ndarray) -> np.ndarray:
    """Independent reference: float64 log10 of the finite non-zero |x|, numpy's binning."""
    a = np.abs(x.astype(np.float64).ravel())
    a = a[np.isfinite(a) & (a > 0)]
    return np.histogram(np.log10(a), EDGES)[0]


def exact_mle(x: np.ndarray) -> tuple[float, float]:
    """Weibull MLE (loc 0) by solving the profile score equation on all the data in float64."""
    ln = np.log(x.astype(np.float64))
    top, mean = ln.max(), ln.mean()

    def score(k):
        w = np.exp(k * (ln - top))
        return 1 / k + mean - (w * ln).sum() / w.sum()

    k = optimize.brentq(score, 0.02, 50, xtol=1e-14)
    lam = math.exp(top + math.log(np.mean(np.exp(k * (ln - top)))) / k)
    return k, lam


def sample(kind: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "half-normal":
        return torch.randn(n, generator=g) * 0.02
    if kind == "weibull-0.8":  # |x| ~ Weibull(k=0.8, λ=0.05), random signs
        u = torch.rand(n, generator=g, dtype=torch.float64)
        mag = 0.05 * (-torch.log1p(-u)) ** (1 / 0.8)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        return (mag * sign).float()
    if kind == "laplace":
        return torch.distributions.Laplace(0.0, 0.03).sample((n,))
    if kind == "uniform":
        return torch.rand(n, generator=g) - 0.5
    raise ValueError(kind)


# ---------------------------------------------------------------- the histogram


def test_edges_are_numpy_linspace_bit_for_bit():
    assert np.array_equal(linspace_like_numpy(-12.0, 2.0, 1025).numpy(), EDGES)
    assert np.array_equal(LogAbsHistogram().edges().numpy(), EDGES)


def test_histogram_is_exact_and_counts_what_it_leaves_out():
    g = torch.Generator().manual_seed(1)
    body = torch.randn(50_000, generator=g) * 0.05
    special = torch.tensor([0.0, -0.0, 0.0, 1e-13, -5e-13, 150.0, -1e3, 100.0, -100.0, 1e-12, math.nan, math.inf])
    edges_exact = torch.pow(10.0, torch.tensor(EDGES[::97])).float()  # values at (rounded) bin edges
    x = torch.cat([body, special, edges_exact, -edges_exact])
    h = hist(x)
    assert np.array_equal(h.counts.numpy(), ref_hist(x.numpy()))
    assert (h.zeros, h.nonfinite) == (3, 2)
    a = np.abs(x.double().numpy())
    a = a[np.isfinite(a) & (a > 0)]
    # 1e-13, 5e-13, and float32(1e-12) < 1e-12 three times (once in special, ± at edge 0)
    assert h.below == int((np.log10(a) < -12).sum()) == 5
    assert h.above == 2  # 150, 1e3 (100 itself is in the last, closed bin)
    assert h.finite == x.numel() - 2
    assert h.n == h.finite - 3 - 5 - 2
    assert h.zero_fraction == pytest.approx(3 / h.finite)


def _around_edges(dtype: torch.dtype) -> torch.Tensor:
    """Every bin edge 10**e rounded to ``dtype``, and its neighbours one step below and above
    (float32 steps for float64: within one float64 step the bins are float64-accurate, and so is
    numpy's float64 log10, the reference)."""
    if dtype == torch.float64:
        return _around_edges(torch.float32).to(dtype)
    e = torch.pow(10.0, torch.tensor(EDGES)).to(dtype)
    big = torch.tensor(math.inf, dtype=dtype)
    return torch.cat([e, torch.nextafter(e, -big), torch.nextafter(e, big)]) if dtype.itemsize > 2 else e


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_values_at_every_bin_edge_are_binned_exactly(dtype):
    """The float32 look-up tables (float32, and 16-bit values widened) and the float64 logarithm
    path put every value next to an edge where float64 numpy does, signs and zeros included."""
    g = torch.Generator().manual_seed(7)
    body = (torch.randn(20_000, generator=g, dtype=torch.float64) * 0.05).to(dtype)
    x = torch.cat([_around_edges(dtype), body, torch.tensor([0.0, -0.0, 1e-45, math.nan, -math.inf]).to(dtype)])
    x = x * torch.where(torch.rand(len(x), generator=g) < 0.5, -1.0, 1.0).to(dtype)
    h = hist(x, chunk=kernels.TILE + 3)  # slices that end inside a tile
    assert np.array_equal(h.counts.numpy(), ref_hist(x.to(torch.float64).numpy()))
    a = np.abs(x.to(torch.float64).numpy())
    assert h.zeros == int((a == 0).sum())
    assert h.nonfinite == int((~np.isfinite(a)).sum())
    assert h.below == int(((a > 0) & (a < 1e-12)).sum())
    assert h.above == int((a[np.isfinite(a)] > 100).sum())
    if dtype == torch.float32:  # the tables and the logarithm agree bit for bit
        wide = hist(x.double())
        assert torch.equal(wide.counts, h.counts) and wide[1:] == h[1:]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(0, 10_000), st.floats(1e-6, 10.0))
def test_histogram_merges_exactly_whatever_the_split(rows, cols, seed, scale):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, cols, generator=g) * scale
    t[torch.rand(rows, cols, generator=g) < 0.05] = 0.0
    whole, split = hist(t), hist(t, chunk=max(1, cols * 3))
    assert torch.equal(whole.counts, split.counts)
    assert (whole.zeros, whole.below, whole.above) == (split.zeros, split.below, split.above)
    assert np.array_equal(whole.counts.numpy(), ref_hist(t.numpy()))


# ---------------------------------------------------------------- the probability-plot fit


@pytest.mark.parametrize("kind", ["half-normal", "weibull-0.8", "laplace", "uniform"])
@pytest.mark.parametrize("protocol", ["mid_80", "mid_90", "full_range"])
def test_matches_npm_weibull(kind, protocol):
    npm = pytest.importorskip("npm_weibull")
    t = sample(kind, 200_000)
    ref = npm.weibull_fit(npm.extract_to_histogram(t), protocol)
    got = fit(t, protocol)
    assert got.ok and ref["ok"]
    # The library bins with numpy's float32 log10 (not correctly rounded): a handful of
    # values sitting within ~1e-7 of an edge may land one bin apart. Same fit otherwise.
    moved = np.abs(hist(t).counts.numpy() - npm.extract_to_histogram(t)["hist"]).sum()
    assert moved <= 1e-4 * t.numel()
    assert got.k == pytest.approx(ref["k"], rel=1e-5)
    assert got.lam == pytest.approx(ref["lambda"], rel=1e-5)
    assert got.r2 == pytest.approx(ref["R2"], abs=1e-6)
    assert got.ks == pytest.approx(ref["KS"], abs=1e-5)
    assert got.n_used == ref["n_used"]


def test_half_normal_reference_values():
    """Paper D: mid-80 on half-normal data gives k ≈ 1.205 and λ ≈ 0.887σ; MLE k ≈ 1.26."""
    sigma = 0.02
    t = sample("half-normal", 1_000_000, seed=3)
    r = fit(t)
    assert r.k == pytest.approx(1.205, abs=0.005)
    assert r.lam / sigma == pytest.approx(0.887, abs=0.004)
    assert r.r2 > 0.995
    assert weibull_class(r.k, r.r2) == "transmission"
    m = fit(t, "mle")
    assert m.k == pytest.approx(1.26, abs=0.01)
    assert math.isnan(m.r2)


def test_weibull_data_recovers_its_parameters():
    r = fit(sample("weibull-0.8", 500_000, seed=4))
    assert r.k == pytest.approx(0.8, rel=0.01)
    assert r.lam == pytest.approx(0.05, rel=0.01)
    assert r.r2 > 0.999
    assert weibull_class(r.k, r.r2) == "strong_selection"


def test_too_few_values_fail_like_the_library():
    r = fit(torch.randn(99))
    assert not r.ok and math.isnan(r.k) and math.isnan(r.lam)
    zeros = fit(torch.zeros(64, 64))
    assert not zeros.ok and zeros.zeros == 4096
    assert not fit(torch.zeros(64, 64), "mle").ok
    assert not fit(torch.full((100, 100), 0.5)).ok  # one bin: fewer than 5 in the window


# ---------------------------------------------------------------- MLE


@pytest.mark.parametrize(("k", "lam", "n"), [(1.3, 0.05, 150_000), (0.7, 2.0, 100_000), (2.5, 1e-3, 100_000)])
def test_mle_matches_scipy_and_the_exact_solution(k, lam, n):
    rng = np.random.default_rng(7)
    x = (lam * rng.weibull(k, n)).astype(np.float32)
    x[x == 0] = np.float32(1e-30)
    got = fit(torch.from_numpy(x), "mle")
    c, loc, scale = stats.weibull_min.fit(x.astype(np.float64), floc=0)
    assert loc == 0
    assert got.k == pytest.approx(c, rel=1e-3)
    assert got.lam == pytest.approx(scale, rel=1e-3)
    ke, le = exact_mle(x)
    assert got.k == pytest.approx(ke, rel=2e-5)
    assert got.lam == pytest.approx(le, rel=2e-5)
    assert got.ks < 0.01


def test_mle_merges_across_blocks_and_ignores_zeros_and_signs():
    g = torch.Generator().manual_seed(5)
    t = torch.randn(300, 200, generator=g) * 0.1
    t[:, ::17] = 0.0
    whole, split = fit(t, "mle"), fit(t, "mle", chunk=1000)
    assert split.k == pytest.approx(whole.k, rel=1e-12)
    assert split.lam == pytest.approx(whole.lam, rel=1e-12)
    assert whole.zeros == 300 * len(range(0, 200, 17))
    x = t.abs().double().numpy().ravel()
    ke, _ = exact_mle(x[x > 0])
    assert whole.k == pytest.approx(ke, rel=2e-5)
    assert fit(-t, "mle") == whole


# ---------------------------------------------------------------- properties


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_scale_moves_lambda_not_k(seed, c):
    t = sample("half-normal", 40_000, seed)
    a, b = fit(t), fit(t * c)
    # the plot's bins are fixed in log10|w|, so a rescale shifts values across bin
    # boundaries: k moves by a fraction of a percent, λ follows c to the same order
    assert b.k == pytest.approx(a.k, rel=5e-3)
    assert b.lam == pytest.approx(c * a.lam, rel=5e-3)
    m1, m2 = fit(t, "mle"), fit(t * c, "mle")  # the MLE is scale-free up to its binning error
    assert m2.k == pytest.approx(m1.k, rel=2e-5)
    assert m2.lam == pytest.approx(c * m1.lam, rel=2e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 200))
def test_permutation_sign_and_split_invariance(seed, chunk_rows):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(200, 64, generator=g) * 0.03
    base = fit(t)
    perm = t.reshape(-1)[torch.randperm(t.numel(), generator=g)].reshape(200, 64)
    signs = torch.where(torch.rand(200, 64, generator=g) < 0.5, -1.0, 1.0)
    assert fit(perm) == base
    assert fit(t * signs) == base
    split = fit(t, chunk=chunk_rows * 64)
    assert split == base


def test_classes():
    assert weibull_class(1.2, 0.99) == "transmission"
    assert weibull_class(1.2, 0.9) == "other"  # in band, poor fit
    assert weibull_class(1.2, math.nan) == "transmission"  # MLE: R² not checked
    assert weibull_class(1.18, 0.99) == "transmission"
    assert weibull_class(1.1799, 0.99) == "mild_selection"
    assert weibull_class(0.95, 0.5) == "mild_selection"
    assert weibull_class(0.9, 0.99) == "strong_selection"
    assert weibull_class(1.3, 0.99) == "other"
    assert weibull_class(math.nan, math.nan) == "other"


def test_results_pickle_and_are_small():
    import pickle

    values = reduce_tensor(torch.randn(100, 100), [WeibullFit(), WeibullFit("mle")])
    for s in (WeibullFit(), WeibullFit("mle"), WeibullMLE()):
        assert repr(pickle.loads(pickle.dumps(values[s]))) == repr(values[s])  # NaN R² ≠ itself
    with pytest.raises(ValueError, match="protocol"):
        WeibullFit("mle-ish")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the assertion kind


def run(tmp_path, tensors, text):
    return check(save(tmp_path / "w.safetensors", tensors), parse_spec(text, "t.weights.yaml"), device="cpu")


def test_weibull_assertion_names_tensor_k_lambda_r2_class(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(256, 256, generator=g) * 0.02,  # half-normal |w|: transmission
        "b.weight": sample("weibull-0.8", 256 * 256, 1).reshape(256, 256),  # strong selection
        "c.weight": torch.rand(256, 256, generator=g) - 0.5,  # uniform: k ≈ 1.37, other
    }
    text = "assertions:\n  - {kind: weibull, classes: [transmission, mild_selection], r2_min: 0.99}\n"
    res = run(tmp_path, tensors, text).results[0]
    assert not res.passed
    rows = {d.subject: d for d in res.deviations}
    assert set(rows) == {"b.weight", "c.weight"}
    assert "class=strong_selection" in rows["b.weight"].observed
    assert "class=other" in rows["c.weight"].observed
    for d in rows.values():
        assert all(f in d.observed for f in ("k=", "λ=", "R²="))
    assert res.observed["a.weight"]["class"] == "transmission"
    ok = run(tmp_path, tensors, "assertions:\n  - {kind: weibull, k_min: 0.7, k_max: 1.5}\n").results[0]
    assert ok.passed


def test_weibull_assertion_parameters_are_validated(tmp_path):
    spec = parse_spec("assertions:\n  - {kind: weibull, protocol: mle, r2_min: 0.9}\n", "t.weights.yaml")
    assert "r2_min needs a probability-plot protocol" in str(spec.errors[0])
    spec = parse_spec("assertions:\n  - {kind: weibull, classes: [transmision]}\n", "t.weights.yaml")
    assert "'transmission'" in str(spec.errors[0]) and "transmision" in str(spec.errors[0])
    spec = parse_spec("assertions:\n  - {kind: weibull, k_min: 2, k_max: 1}\n", "t.weights.yaml")
    assert "k_min" in str(spec.errors[0])


def test_failed_fit_fails_the_assertion(tmp_path):
    res = run(tmp_path, {"z.weight": torch.zeros(64, 64)}, "assertions:\n  - {kind: weibull}\n").results[0]
    assert not res.passed
    assert "fit failed" in res.deviations[0].observed


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
def test_bundled_weibull_spec_passes_on_minilm_and_matches_the_library(minilm, tmp_path):
    names = [
        "pooler.dense.weight",  # lowest R² (0.9976), k 1.2000: top of the allowed classes
        "encoder.layer.3.attention.output.dense.weight",  # lowest k (1.085)
        "encoder.layer.3.attention.self.query.weight",  # k 1.198
        "embeddings.position_embeddings.weight",
        "encoder.layer.5.output.dense.weight",
    ]
    path = minilm_subset(minilm, tmp_path, names)
    report = check(path, "weibull", device="cpu")
    assert report.passed, str(report)
    npm = pytest.importorskip("npm_weibull")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        for name in names[:3]:
            t = f.get_tensor(name)
            ref = npm.weibull_fit(npm.extract_to_histogram(t))
            got = fit(t)
            assert got.k == pytest.approx(ref["k"], rel=1e-5)
            assert got.lam == pytest.approx(ref["lambda"], rel=1e-5)


def minilm_subset(minilm, tmp_path, names):
    """The MiniLM tensors nearest each threshold of a bundled spec (the whole model passes too,
    but checking all of it takes most of this file's time budget)."""
    from safetensors import safe_open

    with safe_open(str(minilm), "pt") as f:
        return save(tmp_path / "minilm-subset.safetensors", {n: f.get_tensor(n) for n in names})
