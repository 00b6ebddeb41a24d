"""Spectral statistics: known spectra, closed forms, WeightWatcher's power-law fit reproduced."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require, save
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import parse_spec
from pytest_weights.stats import spectral as spectral_module
from pytest_weights.stats.scalars import SCALARS
from pytest_weights.stats.spectral import Spectral, esd, powerlaw_fit

EPS = np.finfo(np.float64).eps


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
    for value in (math.nan, math.inf, -math.inf):
        for rows, cols in ((20, 20), (12, 40), (40, 12)):
            bad = torch.randn(rows, cols)
            bad[3, 5] = value
            assert math.isnan(spectral(bad).spectral_norm) and math.isnan(spectral(bad, chunk=3 * cols).alpha)
    zero = spectral(torch.zeros(20, 20))
    assert zero.spectral_norm == 0 and math.isnan(zero.stable_rank) and math.isnan(zero.alpha)


# ---------------------------------------------------------------- eigenvalues: float64 Gram vs float64 SVD


def heavy_tailed(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A matrix whose σ² are a uniform bulk plus a Pareto tail (like a trained layer's ESD)."""
    rng = np.random.default_rng(seed)
    r = min(rows, cols)
    bulk = rng.uniform(0.5, 2.0, r - r // 4)
    s2 = np.concatenate([bulk, (rng.pareto(2.0, r // 4) + 1) * 2.0])
    return with_spectrum(rows, cols, np.sqrt(np.sort(s2)[::-1]), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rows", "cols", "block_rows"), [(700, 300, 64), (300, 700, 50), (256, 256, 256), (90, 9, 4)])
def test_gram_eigenvalues_match_numpy_svd(rows, cols, block_rows, dtype):
    """Stated bound (module doc): |Δλ| ≤ (k + n)·ε·‖W‖_F², k = the summed side, n = the Gram's."""
    w = heavy_tailed(rows, cols, rows + cols).to(dtype)
    ref = np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2)  # independent: LAPACK gesdd
    got = esd(w, block_rows).numpy()
    assert got.shape == ref.shape == (min(rows, cols),)
    fro2 = float((w.double() ** 2).sum())
    bound = (max(rows, cols) + min(rows, cols)) * EPS * fro2
    assert np.abs(got - ref).max() <= bound
    assert np.abs(got - ref).max() <= 1e-13 * ref[-1]  # observed: far inside the worst case
    svd = esd(w, block_rows, method="svd").numpy()
    assert np.abs(svd - ref).max() <= 1e-13 * ref[-1]


def test_small_eigenvalues_lose_relative_accuracy_only_below_the_bound():
    """σ spanning 1e0…1e−9: σ² below ~1e−16·σ_max²·dim are noise through a Gram matrix, as stated."""
    s = np.geomspace(1.0, 1e-9, 60)
    w = with_spectrum(200, 60, s, 5)
    got = esd(w).numpy()
    ref = np.sort(s**2)
    bound = (200 + 60) * EPS * float((s**2).sum())
    assert np.abs(got - ref).max() <= bound
    big = ref > 1e3 * bound  # well above the bound: relative accuracy holds
    assert np.allclose(got[big], ref[big], rtol=1e-3, atol=0)
    assert big.sum() >= 25


# ---------------------------------------------------------------- blockwise merge, determinism


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 90), st.integers(8, 90), st.integers(1, 100), st.integers(0, 10_000))
def test_blockwise_merge_equals_one_block(rows, cols, block_rows, seed):
    w = heavy_tailed(rows, cols, seed).float()
    one, split = esd(w), esd(w, block_rows)
    assert torch.allclose(split, one, rtol=0, atol=64 * EPS * float(one[-1]) * max(rows, cols))
    a, b = spectral(w), spectral(w, chunk=block_rows * cols)
    assert b.alpha == pytest.approx(a.alpha, rel=1e-9)
    assert (b.n_tail, b.n_evals) == (a.n_tail, a.n_evals)
    assert b.frobenius == pytest.approx(a.frobenius, rel=1e-13)
    assert spectral(w, chunk=block_rows * cols) == b  # the same split: bit-identical


@pytest.mark.parametrize(
    ("rows", "cols"), [(2000, 600), (600, 2000), (700, 700), (1536, 384), (384, 1536), (9000, 300)]
)
def test_bit_identical_whatever_the_thread_count(rows, cols):
    """MKL's multi-threaded gemm gives other bits for e.g. 1536 × 384: the Gram products run on one thread."""
    w = heavy_tailed(rows, cols, 3).float()
    saved = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            out.append(spectral(w, chunk=300 * cols))
            assert torch.get_num_threads() == n  # restored
    finally:
        torch.set_num_threads(saved)
    assert out[0] == out[1] == out[2] == out[3]


def test_bounded_state_for_a_tall_matrix():
    """Once rows ≥ cols the state is the cols × cols Gram matrix only; no row is kept."""
    stat = Spectral()
    w = torch.randn(4000, 64)
    state = None
    for r in range(0, 4000, 100):
        part = stat.reduce(w[r : r + 100], {})
        state = part if state is None else stat.merge(state, part)
        assert state.blocks == () or state.n_rows < 64
    assert state.gram.shape == (64, 64) and state.n_rows == 4000


def test_parallel_tensors_only_while_the_gram_matrix_is_small():
    """An engine may run spectra side by side only while Gram + LAPACK copy ≤ 32 MiB (n ≤ 1448)."""
    stat = Spectral()
    assert stat.parallel_tensors((4864, 1216)) and stat.parallel_tensors((1216, 4864))
    assert stat.parallel_tensors((1448, 100_000)) and not stat.parallel_tensors((1449, 1449))
    assert not stat.parallel_tensors((8192, 8192)) and not Spectral("svd").parallel_tensors((64, 64))


# ---------------------------------------------------------------- invariances (hypothesis)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(8, 80),
    st.integers(8, 80),
    st.integers(0, 10_000),
    st.floats(1e-2, 1e2),
    st.integers(-6, 6),
)
def test_alpha_invariant_to_scale_and_permutations(rows, cols, seed, c, k):
    w = heavy_tailed(rows, cols, seed)  # σ² ≥ 0.5: far above the 1e−5 cut at every scale tried
    base = spectral(w)
    g = torch.Generator().manual_seed(seed)
    perm_rows = w[torch.randperm(rows, generator=g)]
    perm_cols = w[:, torch.randperm(cols, generator=g)]
    for other in (spectral(perm_rows), spectral(perm_cols), spectral(w * c)):
        assert other.alpha == pytest.approx(base.alpha, rel=1e-9)
        assert other.n_tail == base.n_tail
        assert other.stable_rank == pytest.approx(base.stable_rank, rel=1e-9)
    exact = spectral(w * 2.0**k)  # a power of two scales G exactly: only ln(4^k·λ) rounds
    assert exact.alpha == pytest.approx(base.alpha, rel=1e-14)
    assert exact.alpha_xmin == pytest.approx(base.alpha_xmin * 4.0**k, rel=1e-14)


# ---------------------------------------------------------------- the fit: vectorised = WeightWatcher's loop


@pytest.mark.parametrize("n", [20, 21, 97, 384, 1216, 3000])
def test_vectorised_fit_is_weightwatchers_loop_bit_for_bit(n):
    rng = np.random.default_rng(n)
    evals = np.concatenate([rng.uniform(0.1, 1.0, n - n // 5), (rng.pareto(1.5, n // 5) + 1.0)])
    fit = powerlaw_fit(torch.from_numpy(evals))
    alpha, xmin, d = ww_fit(evals)
    assert (fit.alpha, fit.xmin, fit.ks) == (alpha, xmin, d)
    assert fit.n == n and fit.n_tail == int((evals >= xmin).sum())


def test_fit_does_not_depend_on_the_tile_size(monkeypatch):
    evals = np.random.default_rng(2).pareto(2.0, 900) + 0.5
    whole = powerlaw_fit(evals)
    monkeypatch.setattr(spectral_module, "FIT_TILE_ELEMENTS", 2000)  # 2 candidates per tile
    assert powerlaw_fit(evals) == whole


def test_fit_of_degenerate_spectra_follows_weightwatcher():
    """Equal eigenvalues: every α_i is infinite and every vectorised D is NaN; the exact
    recomputation gives WeightWatcher's answer (the last candidate, D = 1/2)."""
    evals = np.full(40, 3.0)
    fit = powerlaw_fit(evals)
    with np.errstate(all="ignore"):
        assert (fit.alpha, fit.xmin, fit.ks) == ww_fit(evals)
    assert fit.alpha == math.inf and fit.n_tail == 2
    assert math.isnan(powerlaw_fit(np.array([1e-7, 2.0])).alpha)  # one eigenvalue above the cut


# ---------------------------------------------------------------- against the weightwatcher package


def weightwatcher_details(mats: dict[str, torch.Tensor]):
    """WeightWatcher's own ``analyze()`` on one ``nn.Linear`` per matrix (float64 SVDs inside)."""
    ww = require("weightwatcher", "weightwatcher==0.7.7")
    layers = []
    for w in mats.values():
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        layers.append(lin)
    details = ww.WeightWatcher(model=torch.nn.Sequential(*layers)).analyze(randomize=False, plot=False, mp_fit=False)
    assert len(details) == len(mats)
    return details


def assert_same_as_weightwatcher(mats: dict[str, torch.Tensor], chunk_rows: int = 1 << 30):
    details = weightwatcher_details(mats)
    for (name, w), (_, row) in zip(mats.items(), details.iterrows(), strict=True):
        got = spectral(w, chunk=chunk_rows * w.shape[1])
        assert abs(got.alpha - row["alpha"]) <= 1e-6, name  # the target; observed ≤ 1e-11
        assert got.alpha_xmin == pytest.approx(row["xmin"], rel=1e-9), name
        assert got.alpha_ks == pytest.approx(row["D"], rel=1e-6, abs=1e-12), name
        assert min(got.rows, got.cols) == row["num_evals"], name  # n_evals: those > 1e−5, fitted
        assert got.spectral_norm**2 == pytest.approx(row["lambda_max"], rel=1e-12), name
        assert got.stable_rank == pytest.approx(row["stable_rank"], rel=1e-10), name


def test_against_weightwatcher_package():
    """Optional: the installed weightwatcher's analyze() gives the same α on the same matrices
    (tall, wide, square, Student-t, heavy-tailed; one small-N fit), split into row blocks."""
    require("weightwatcher", "weightwatcher==0.7.7")
    rng = np.random.default_rng(1)
    mats = {
        "t3.tall": torch.from_numpy(rng.standard_t(3, size=(300, 200))).float(),
        "t3.wide": torch.from_numpy(rng.standard_t(3, size=(150, 400))).float(),
        "heavy.tall": heavy_tailed(500, 240, 7).float(),
        "heavy.wide": heavy_tailed(160, 520, 8).float(),
        "gauss.square": torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02,
        "small_n": torch.from_numpy(rng.standard_t(2, size=(64, 14))).float(),  # 14 eigenvalues: small-N fit
    }
    assert_same_as_weightwatcher(mats, chunk_rows=37)


@pytest.mark.slow
def test_against_weightwatcher_on_minilm(minilm):
    """Optional: every encoder matrix of all-MiniLM-L6-v2, α within 1e−6 of WeightWatcher's."""
    require("weightwatcher", "weightwatcher==0.7.7")
    from safetensors import safe_open

    with safe_open(str(minilm), "pt") as f:
        names = [n for n in f.keys() if ".layer." in n and n.endswith("weight")]  # noqa: SIM118 (not iterable)
        mats = {n: f.get_tensor(n).float() for n in names}
    mats = {n: w for n, w in mats.items() if w.dim() == 2}
    assert len(mats) == 36
    assert_same_as_weightwatcher(mats)


# ---------------------------------------------------------------- bounded memory in a real pass

MEMORY_CHILD = """
import json, sys
from pytest_weights import Checker, load_spec, open_checkpoint

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

spec = load_spec("spectral")
ckpt = open_checkpoint(sys.argv[1])
base = hwm()
checker = Checker(device="cpu")
checker.prepare([(ckpt, a) for a in spec.assertions])
assert not checker.errors, checker.errors
print(json.dumps({"base": base, "peak": hwm()}))
"""


def layers_checkpoint(path, layers: int):
    g = torch.Generator().manual_seed(layers)
    tensors = {}
    for i in range(layers):
        tensors[f"model.layers.{i}.mlp.up.weight"] = torch.randn(3072, 768, generator=g)  # tall: Gram 768²
        tensors[f"model.layers.{i}.mlp.down.weight"] = torch.randn(768, 3072, generator=g)  # wide: rows kept
        tensors[f"model.layers.{i}.attn.q.weight"] = torch.randn(1536, 1536, generator=g)  # Gram 1536² = 19 MB
    return save(path, tensors)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_spectral_pass_memory_is_bounded_and_flat(tmp_path):
    """The bundled spec's pass in a child process: peak RSS within 2 × largest tensor + 500 MB,
    and nearly flat in the number of matrices (6 vs 24 matrices of 9.4 MB: Gram matrices are freed)."""
    largest = 1536 * 1536 * 4
    peaks = []
    for layers in (2, 8):
        path = layers_checkpoint(tmp_path / f"m{layers}.safetensors", layers)
        child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path)], capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout)
        assert got["peak"] <= 2 * largest + 500e6
        peaks.append(got["peak"] - got["base"])
    gram = 1536**2 * 8
    assert peaks[0] <= 2 * largest + 4 * gram + 96 * 2**20  # measured 110–145 MB: tensors, Grams, LAPACK copies
    # 18 more matrices: kept Gram matrices alone would add 18 × 18 MiB; measured +30–55 MiB
    assert peaks[1] - peaks[0] <= 80 * 2**20


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
