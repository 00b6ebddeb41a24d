"""Spectral statistics: known spectra, closed forms, WeightWatcher's power-law fit reproduced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import parse_spec
from pytest_weights.stats.scalars import SCALARS
from pytest_weights.stats.spectral import Spectral, powerlaw_fit


def spectral(t: torch.Tensor, chunk: int = 1 << 24, method: str = "gram"):
    return reduce_tensor(t, [Spectral(method)], chunk_elements=chunk)[Spectral(method)]


def with_spectrum(rows: int, cols: int, s: np.ndarray, seed: int = 0) -> torch.Tensor:
    """U diag(s) Vᵀ with random orthonormal U (rows × r) and V (cols × r), float64."""
    rng = np.random.default_rng(seed)
    r = len(s)
    u, _ = np.linalg.qr(rng.normal(size=(rows, r)))
    v, _ = np.linalg.qr(rng.normal(size=(cols, r)))
    return torch.from_numpy((u * s) @ v.T)


def ww_fit(evals: np.ndarray) -> tuple[float, float, float]:
    """WeightWatcher 0.7.7's WWFit (standard path), transcribed loop for loop in numpy."""
    data = np.sort(evals[evals > 1e-5]).astype(np.float64)
    n_all = len(data)
    log_data = np.log(data)
    alphas = np.zeros(n_all - 1)
    ds = np.ones(n_all - 1)
    for i, xmin in enumerate(data[:-1]):
        n = float(n_all - i)
        alpha = 1 + n / (np.sum(log_data[i:]) - n * log_data[i])
        alphas[i] = alpha
        if alpha > 1:
            ds[i] = np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    i = int(np.argmin(ds))
    return alphas[i], data[i], ds[i]


def ww_fit_small(evals: np.ndarray) -> tuple[float, float]:
    """WeightWatcher 0.7.7's fit_powerlaw_smallN (N < 20), transcribed."""
    data = np.sort(evals[evals > 1e-5]).astype(np.float64)
    n_all = len(data)
    log_data = np.log(data)
    js = np.full(n_all - 1, np.inf)
    alphas = np.zeros(n_all - 1)
    for i in range(n_all - 1):
        n = n_all - i
        if n < 8:
            continue
        s = np.sum(log_data[i:]) - n * log_data[i]
        if s <= 1e-12:
            continue
        a = 1.0 + (n - 1.0) / s
        alphas[i] = a
        if a <= 1.0:
            continue
        f_fit = 1.0 - (data[i:] / data[i]) ** (1.0 - a)
        js[i] = np.max(np.abs(np.arange(n) / n - f_fit)) - 0.868 / np.sqrt(n)
    j = int(np.nanargmin(js))
    return alphas[j], data[j]


# ---------------------------------------------------------------- known spectra, closed forms


@pytest.mark.parametrize(("rows", "cols"), [(300, 120), (120, 300), (200, 200), (64, 1)])
def test_known_spectrum_norms_and_stable_rank(rows, cols):
    r = min(rows, cols)
    s = np.geomspace(5.0, 0.01, r)
    t = with_spectrum(rows, cols, s)
    got = spectral(t)
    assert (got.rows, got.cols) == (rows, cols)
    assert got.spectral_norm == pytest.approx(5.0, rel=1e-12)
    assert got.frobenius == pytest.approx(math.sqrt((s**2).sum()), rel=1e-12)
    assert got.stable_rank == pytest.approx((s**2).sum() / 25.0, rel=1e-12)
    svd = spectral(t, method="svd")
    assert svd.spectral_norm == pytest.approx(got.spectral_norm, rel=1e-12)
    assert svd.stable_rank == pytest.approx(got.stable_rank, rel=1e-12)


def test_rank_one_matrix_has_stable_rank_one():
    u = torch.randn(100, 1, dtype=torch.float64)
    v = torch.randn(1, 40, dtype=torch.float64)
    got = spectral(u @ v)
    assert got.stable_rank == pytest.approx(1.0, rel=1e-9)
    assert got.spectral_norm == pytest.approx(float(u.norm() * v.norm()), rel=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 70), st.integers(2, 70), st.integers(1, 80), st.integers(0, 10_000))
def test_merges_exactly_whatever_the_split(rows, cols, chunk_rows, seed):
    """Gram (tall) and gathered rows (wide) both merge; the path depends only on the shape."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, cols, generator=g)
    whole, split = spectral(t), spectral(t, chunk=chunk_rows * cols)
    assert split.spectral_norm == pytest.approx(whole.spectral_norm, rel=1e-10)
    assert split.stable_rank == pytest.approx(whole.stable_rank, rel=1e-10)
    assert split.alpha == pytest.approx(whole.alpha, rel=1e-8, nan_ok=True)
    assert split.n_tail == whole.n_tail
    ref = np.linalg.svd(t.double().numpy(), compute_uv=False)
    assert whole.spectral_norm == pytest.approx(ref[0], rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.integers(8, 60), st.integers(8, 60), st.integers(0, 10_000), st.sampled_from([0.25, 2.0, 8.0]))
def test_transpose_permutation_and_scale(rows, cols, seed, c):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    base = spectral(t)
    for other in (spectral(t.T.contiguous()), spectral(t[torch.randperm(rows, generator=g)])):
        assert other.spectral_norm == pytest.approx(base.spectral_norm, rel=1e-10)
        assert other.alpha == pytest.approx(base.alpha, rel=1e-8)
    scaled = spectral(t * c)
    assert scaled.spectral_norm == pytest.approx(c * base.spectral_norm, rel=1e-10)
    assert scaled.stable_rank == pytest.approx(base.stable_rank, rel=1e-10)
    smallest = min(np.linalg.svd((t * c).numpy(), compute_uv=False)) ** 2
    if smallest > 1e-4:  # α is scale-free only while no eigenvalue nears the 1e-5 cut-off
        assert scaled.alpha == pytest.approx(base.alpha, rel=1e-8)


# ---------------------------------------------------------------- WeightWatcher's α


@pytest.mark.parametrize("seed", range(4))
def test_alpha_matches_weightwatcher_algorithm(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 400, 250
    # a heavy-tailed spectrum: σ² Pareto-distributed above a Marchenko–Pastur-like bulk
    s2 = np.concatenate([rng.uniform(0.5, 2.0, 200), (rng.pareto(2.0, 50) + 1) * 2.0])
    t = with_spectrum(rows, cols, np.sqrt(np.sort(s2)[::-1]), seed)
    got = spectral(t)
    alpha, xmin, d = ww_fit(np.linalg.svd(t.numpy(), compute_uv=False) ** 2)
    assert got.alpha == pytest.approx(alpha, rel=1e-9)
    assert got.alpha_xmin == pytest.approx(xmin, rel=1e-9)
    assert got.alpha_ks == pytest.approx(d, rel=1e-7)
    assert got.n_evals == 250


def test_alpha_of_a_pure_power_law():
    """λ ~ Pareto(α − 1): the fit recovers α (sampling error ~ (α−1)/√n)."""
    rng = np.random.default_rng(11)
    evals = (rng.pareto(2.0, 3000) + 1.0) * 0.1  # density ∝ λ^−3 above 0.1
    fit = powerlaw_fit(torch.from_numpy(evals))
    assert fit.alpha == pytest.approx(3.0, abs=0.15)
    assert fit.alpha == pytest.approx(ww_fit(evals)[0], rel=1e-9)


def test_small_n_fit_follows_weightwatcher():
    rng = np.random.default_rng(3)
    for n in (9, 12, 19):
        evals = np.sort(rng.pareto(1.5, n) + 1.0)
        fit = powerlaw_fit(torch.from_numpy(evals))
        alpha, xmin = ww_fit_small(evals)
        assert fit.alpha == pytest.approx(alpha, rel=1e-12)
        assert fit.xmin == pytest.approx(xmin, rel=1e-12)


def test_tiny_or_broken_matrices():
    assert math.isnan(spectral(torch.randn(5, 50)).alpha)  # a side < 8: WeightWatcher skips
    assert spectral(torch.randn(5, 50)).spectral_norm > 0
    bad = torch.randn(20, 20)
    bad[3, 3] = math.nan
    assert math.isnan(spectral(bad).spectral_norm)
    zero = spectral(torch.zeros(20, 20))
    assert zero.spectral_norm == 0 and math.isnan(zero.stable_rank) and math.isnan(zero.alpha)


def test_against_weightwatcher_package():
    """Optional: the installed weightwatcher gives the same α on the same matrices."""
    pytest.importorskip("weightwatcher")
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(1)
    for rows, cols in ((300, 200), (150, 400)):
        t = torch.from_numpy(rng.standard_t(3, size=(rows, cols)))
        evals = np.linalg.svd(t.numpy(), compute_uv=False) ** 2
        ref = WWFit(evals[evals > 1e-5])
        got = spectral(t)
        assert got.alpha == pytest.approx(ref.alpha, rel=1e-9)
        assert got.alpha_xmin == pytest.approx(ref.xmin, rel=1e-9)


# ---------------------------------------------------------------- the assertion kind


def run(tmp_path, tensors, text):
    return check(save(tmp_path / "m.safetensors", tensors), parse_spec(text, "t.weights.yaml"), device="cpu")


def test_spectral_assertion(tmp_path):
    rng = np.random.default_rng(0)
    heavy = np.sqrt(np.sort(np.concatenate([rng.uniform(0.5, 2, 150), (rng.pareto(2.0, 50) + 1) * 2]))[::-1])
    tensors = {
        "good.weight": with_spectrum(300, 200, heavy).float(),
        "rank1.weight": (torch.randn(300, 1) @ torch.randn(1, 200) + 1e-3 * torch.randn(300, 200)),
        "small.weight": torch.randn(4, 300),
    }
    text = "assertions:\n  - {kind: spectral, alpha_min: 1.5, alpha_max: 10, min_stable_rank: 3}\n"
    res = run(tmp_path, tensors, text).results[0]
    assert {d.subject for d in res.deviations} == {"rank1.weight"}
    assert "stable rank=" in res.deviations[0].observed and "α=" in res.deviations[0].observed
    assert res.notes and "side < 8" in res.notes[0]
    assert res.observed["good.weight"]["alpha"] == pytest.approx(spectral(tensors["good.weight"]).alpha)
    spec = parse_spec("assertions:\n  - {kind: spectral, alpha_min: null, alpha_max: null}\n", "t.weights.yaml")
    assert "needs at least one" in str(spec.errors[0])
    for name in ("spectral_norm", "stable_rank", "esd_alpha"):
        assert name in SCALARS


@pytest.mark.slow
def test_bundled_spectral_spec_passes_on_minilm(minilm, tmp_path):
    names = [
        "encoder.layer.4.attention.self.value.weight",  # largest α (8.44)
        "encoder.layer.0.attention.self.query.weight",  # smallest α (2.46)
        "encoder.layer.5.output.dense.weight",  # lowest stable rank (10.0), a wide matrix
        "encoder.layer.0.intermediate.dense.weight",  # a tall one
    ]
    report = check(minilm_subset(minilm, tmp_path, names), "spectral", device="cpu")
    assert report.passed, str(report)
    assert report.results[0].observed["encoder.layer.4.attention.self.value.weight"]["alpha"] == pytest.approx(
        8.4437, abs=1e-3
    )  # WeightWatcher 0.7.7 on the same matrix: 8.4437


def minilm_subset(minilm, tmp_path, names):
    """The MiniLM tensors nearest each threshold of a bundled spec (the whole model passes too,
    but checking all of it takes most of this file's time budget)."""
    from safetensors import safe_open

    with safe_open(str(minilm), "pt") as f:
        return save(tmp_path / "minilm-subset.safetensors", {n: f.get_tensor(n) for n in names})
