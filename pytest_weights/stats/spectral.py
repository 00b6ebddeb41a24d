"""Singular-value statistics of a weight matrix: spectral norm, stable rank, ESD power-law α.

The matrix is the tensor's 2-D view W (rows × the rest). Its eigenvalues λ = σ² come from
the Gram matrix of its smaller side, accumulated in float64 in bounded memory, never from
an SVD of a float64 copy of W:

* tall (rows ≥ cols): G = WᵀW (cols × cols) = Σ BᵀB over row blocks B. Each block is
  converted to float64 a few rows at a time (≤ 4 MiB) and added into the lower triangle of
  G (a symmetric rank-k update in 2 or 4 column panels: ¾ or ⅝ of a product's flops). States
  merge by addition, in block order (deterministic). Memory: cols² · 8 bytes, whatever the
  number of rows (a 128k × 4096 embedding needs 134 MB, not a 2 GB float64 copy);
* wide (rows < cols): G = W·Wᵀ (rows × rows). Rows of W cannot be combined before all of
  them are seen, so the blocks themselves are kept (views of the memory-mapped tensor for
  float32 storage, no copy) and ``finalize`` adds W[:, c]·W[:, c]ᵀ over column panels c,
  each converted to float64 on its own (≤ 4 MiB).

Which side is used depends only on the shape, never on the block split.
``finalize`` takes ``torch.linalg.eigvalsh`` of G (lower triangle) in float64. Both the Gram
products and eigvalsh run on one thread: MKL's results depend on the thread count (gemm's
for most shapes), so this is what makes the result bit-identical for any
``torch.set_num_threads``; LAPACK's tridiagonal reduction gains nothing from a second core
anyway (and stalls when the other core is busy). Hence ``parallel_tensors``: an
engine may reduce several small tensors' spectra side by side. Peak memory per matrix: the Gram
matrix and LAPACK's copy of it (2 · 8·n² bytes, n = min(rows, cols)), plus the tensor; the
Gram matrix is freed when its eigenvalues are known, and glibc is asked to return freed
arena memory (``malloc_trim``) so that peak RSS stays flat over hundreds of matrices.

**Precision.** Products of float32 (or bf16/fp16) entries are exact in float64, so G's only
error is the summation's: |ΔG| ≤ γ_k·|W|ᵀ|W| elementwise (k = the summed side, γ_k ≈ k·2⁻⁵³),
hence ‖ΔG‖₂ ≤ γ_k·‖W‖_F². eigvalsh is backward stable (‖ΔG‖₂ ≲ c·n·2⁻⁵³·λ_max). Every
eigenvalue therefore carries an *absolute* error ≲ (k + c·n)·1.1e−16·‖W‖_F² (in practice
~√k times less); an SVD's σ² carries ≈ 2σ·σ_max·1.1e−16·n. For λ ≥ xmin the relative error
is ≲ (k + n)·1.1e−16·‖W‖_F²/xmin, and the fit moves by |Δα| ≤ 2(α−1)²·max|Δλ/λ| over the tail.
Measured against WeightWatcher 0.7.7 (float64 SVDs): max |Δα| 2e−13 on all-MiniLM-L6-v2
(α ≤ 8.4), 2e−11 on random 1216-wide matrices (α up to 57), same xmin. Singular values far below
1e−7·σ_max lose their relative accuracy (they are under the 1e−5 cut or far below xmin for
any real layer). The exception is a near-tie in the KS distances of two candidate xmins
(within ~1e−13): then the xmin chosen may differ from an SVD's, as it may between two SVD
implementations. ``method="svd"`` gathers the rows and takes ``torch.linalg.svdvals`` in
float64: accurate for the smallest singular values, but it holds a float64 copy of W.

The power-law exponent follows WeightWatcher 0.7.7's default fit (``WWFit``, package
``weightwatcher``, the ``powerlaw`` package's method): eigenvalues λ_i = σ_i² of WᵀW, *not*
normalised by N; keep λ > 1e−5; sort; for every candidate xmin = λ_i except the largest,
α_i = 1 + n_i / Σ_{j≥i} ln(λ_j/λ_i) with n_i = N − i, and the KS distance
D_i = max_{j≥i} |1 − (λ_j/λ_i)^(1−α_i) − (j − i)/n_i| (D_i = 1 when α_i ≤ 1); the fit is the
first i minimising D_i. All candidates are evaluated at once (array ops over candidate ×
eigenvalue tiles, the upper triangle only); the few whose D is within 1e−9 of the minimum
are then recomputed exactly as WeightWatcher does (numpy's pairwise sums, ``**``), so the
α reported is WeightWatcher's to the last bit for the same eigenvalues. With fewer than 20
eigenvalues WeightWatcher switches to its small-N fit (α = 1 + (n − 1)/Σ ln, tails of at
least 8, chosen by D − 0.868/√n), reproduced here too. Matrices with min(rows, cols) < 8
are skipped by WeightWatcher (``min_evals``): α is NaN for them. A conv kernel is taken as
its (out, in·kh·kw) view; WeightWatcher instead analyses one (out, in) slice per kernel
position (and rescales them), so α of conv layers is not comparable with its numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from .base import Deps, Statistic, cacheable
from .kernels import fixed_threads

EVALS_THRESH = 1e-5  # WeightWatcher's EVALS_THRESH
SMALL_N_CUTOFF = 20  # WeightWatcher's SMALL_N_CUTOFF
SMALL_N_MIN_TAIL = 8
MIN_EVALS = 8  # WeightWatcher's DEFAULT_MIN_EVALS

#: float64 elements converted at a time while accumulating a Gram matrix (4 MiB).
PANEL_ELEMENTS = 1 << 19
#: Largest (candidate × eigenvalue) tile of the vectorised KS distances (512 KiB of float64: L2).
FIT_TILE_ELEMENTS = 1 << 16
#: Largest Gram matrix + LAPACK copy (bytes) whose tensor may be reduced alongside others.
PARALLEL_BYTES = 32 << 20
#: Gram matrices at least this large are freed as soon as their eigenvalues are known (4 MiB).
TRIM_ELEMENTS = 1 << 19
#: Candidates whose vectorised D is this close to the minimum are recomputed exactly.
TIE_TOLERANCE = 1e-9


class PowerLawFit(NamedTuple):
    alpha: float
    xmin: float
    ks: float  # D of the chosen fit
    n_tail: int  # eigenvalues ≥ xmin
    n: int  # eigenvalues > 1e−5 that were fitted


@cacheable
class SpectralResult(NamedTuple):
    rows: int
    cols: int
    spectral_norm: float  # σ_max = ‖W‖₂
    frobenius: float  # ‖W‖_F = sqrt(Σσ²)
    stable_rank: float  # ‖W‖_F² / ‖W‖₂²
    alpha: float  # WeightWatcher power-law exponent of the ESD tail
    alpha_xmin: float
    alpha_ks: float
    n_tail: int
    n_evals: int


class _State(NamedTuple):
    gram: torch.Tensor | None  # float64 [cols, cols], lower triangle, once rows ≥ cols
    blocks: tuple[torch.Tensor, ...]  # the row blocks before that (or for method="svd")
    n_rows: int


# ---------------------------------------------------------------- Gram matrices in float64


def _syrk_(gram: torch.Tensor, b: torch.Tensor) -> None:
    """gram += bᵀb on the lower triangle (and the diagonal panels whole), b float64 [k, n]."""
    n = b.shape[1]
    panels = 1 if n < 256 else 2 if n < 2048 else 4
    edges = [n * p // panels for p in range(panels + 1)]
    for i in range(panels):
        ri = slice(edges[i], edges[i + 1])
        for j in range(i + 1):
            rj = slice(edges[j], edges[j + 1])
            gram[ri, rj].addmm_(b[:, ri].T, b[:, rj])


def _gram_of_rows(blocks: Sequence[torch.Tensor], gram: torch.Tensor | None = None) -> torch.Tensor:
    """WᵀW (lower triangle) of the rows in ``blocks``, in order, added into ``gram`` if given."""
    cols = blocks[0].shape[1]
    if gram is None:
        gram = torch.zeros(cols, cols, dtype=torch.float64, device=blocks[0].device)
    step = max(1, PANEL_ELEMENTS // max(cols, 1))
    buf = torch.empty(min(step, max(b.shape[0] for b in blocks)), cols, dtype=torch.float64, device=gram.device)
    with _one_thread(gram.device):
        for block in blocks:
            for r in range(0, block.shape[0], step):
                part = block[r : r + step]
                chunk = buf[: part.shape[0]]
                chunk.copy_(part)
                _syrk_(gram, chunk)
    return gram


def _gram_of_columns(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """W·Wᵀ (lower triangle) of a wide matrix given as row blocks, over column panels."""
    rows = sum(b.shape[0] for b in blocks)
    cols = blocks[0].shape[1]
    gram = torch.zeros(rows, rows, dtype=torch.float64, device=blocks[0].device)
    step = max(1, PANEL_ELEMENTS // max(rows, 1))
    buf = torch.empty(rows, min(step, cols), dtype=torch.float64, device=gram.device)
    with _one_thread(gram.device):
        for c in range(0, cols, step):
            width = min(step, cols - c)
            panel = buf[:, :width]
            r = 0
            for block in blocks:
                panel[r : r + block.shape[0]].copy_(block[:, c : c + width])
                r += block.shape[0]
            _syrk_(gram, panel.T)
    return gram


_MALLOC_TRIM: Callable[[int], int] | bool | None = None


def _release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    Gram matrices under glibc's 32 MB mmap threshold come from the arena of the thread
    that allocates them; a pass reduces tensors in up to 8 threads, and each arena would
    keep its last Gram matrices and LAPACK workspaces: peak RSS would grow with the number
    of matrices instead of staying flat.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _one_thread(device: torch.device) -> contextlib.AbstractContextManager:
    """CPU torch ops inside run on one thread: MKL's gemm and eigvalsh give different bits for
    different thread counts (gemm: for most shapes, e.g. 1536 × 384), and eigvalsh is no faster."""
    return fixed_threads(1) if device.type == "cpu" else contextlib.nullcontext()


def eigenvalues(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending, float64, CPU, clamped at 0) of a symmetric matrix's lower triangle."""
    with _one_thread(gram.device):
        evals = torch.linalg.eigvalsh(gram, UPLO="L")
    return evals.cpu().clamp_(min=0.0)


# ---------------------------------------------------------------- the statistic


@dataclass(frozen=True)
class Spectral(Statistic):
    """Spectral norm, stable rank and WeightWatcher's ESD power-law α of the 2-D view."""

    method: Literal["gram", "svd"] = "gram"

    def parallel_tensors(self, shape: Sequence[int]) -> bool:
        """Whether an engine may reduce this tensor's spectrum side by side with other tensors'
        (one thread each; eigvalsh gains nothing from a second core) rather than alone on all
        threads: yes while its Gram matrix and LAPACK's copy take ≤ 32 MiB (n ≤ 1448; with up to
        8 tensors in flight, ≤ 256 MiB in all)."""
        rows = shape[0] if len(shape) >= 2 else 1
        n = min(rows, math.prod(shape) // max(rows, 1))
        return self.method == "gram" and 16 * n * n <= PARALLEL_BYTES

    def _settle(self, s: _State) -> _State:
        """Fold gathered rows into the Gram matrix once there are at least ``cols`` of them."""
        if self.method != "gram" or not s.blocks or (s.gram is None and s.n_rows < s.blocks[0].shape[1]):
            return s
        return _State(_gram_of_rows(s.blocks, s.gram), (), s.n_rows)

    def reduce(self, block: torch.Tensor, deps: Deps) -> _State:
        return self._settle(_State(None, (block,), block.shape[0]))

    def merge(self, a: _State, b: _State) -> _State:
        n = a.n_rows + b.n_rows
        if a.gram is not None and b.gram is not None:
            return _State(a.gram.add_(b.gram), (), n)
        if b.gram is not None:  # a: rows only (fewer than cols)
            return _State(_gram_of_rows(a.blocks, b.gram), (), n)
        return self._settle(_State(a.gram, a.blocks + b.blocks, n))

    def finalize(self, state: _State | None, deps: Deps) -> SpectralResult:
        if state is None:  # no block at all: a tensor without rows
            return _nan_result(0, 0)
        rows = state.n_rows
        cols = state.gram.shape[0] if state.gram is not None else state.blocks[0].shape[1]
        if rows == 0 or cols == 0:
            return _nan_result(rows, cols)
        spectrum = self.spectrum(state)
        if state.gram is not None and state.gram.numel() >= TRIM_ELEMENTS:
            state.gram.set_()  # the state is consumed: free the Gram matrix now, not with the stage
            _release_freed_memory()
        return _nan_result(rows, cols) if spectrum is None else _result(rows, cols, *spectrum)

    def spectrum(self, state: _State) -> tuple[torch.Tensor, float] | None:
        """The ascending eigenvalues (float64, CPU) of the smaller Gram matrix and ‖W‖_F²;
        None if W has a NaN or an infinity."""
        if self.method == "svd":
            m = torch.cat(state.blocks).to(torch.float64)
            if not torch.isfinite(m).all():
                return None
            with _one_thread(m.device):
                evals = torch.linalg.svdvals(m).square().cpu().flip(0)
            return evals, float(evals.sum())
        gram = state.gram if state.gram is not None else _gram_of_columns(state.blocks)
        if not torch.isfinite(torch.diagonal(gram)).all():  # G_jj = Σ w²: NaN or ∞ with any of its column
            return None
        return eigenvalues(gram), float(torch.diagonal(gram).sum())  # ‖W‖_F² = tr G


def esd(matrix: torch.Tensor, block_rows: int | None = None, method: Literal["gram", "svd"] = "gram") -> torch.Tensor:
    """Eigenvalues of WᵀW (the min(rows, cols) of them, ascending, float64) of a 2-D ``matrix``,
    by the same blockwise path as the statistic (``block_rows`` rows per block; default one block)."""
    stat = Spectral(method)
    step = block_rows or max(1, matrix.shape[0])
    state = None
    for r in range(0, matrix.shape[0], step):
        part = stat.reduce(matrix[r : r + step], {})
        state = part if state is None else stat.merge(state, part)
    if state is None:
        return torch.empty(0, dtype=torch.float64)
    spectrum = stat.spectrum(state)
    if spectrum is None:
        return torch.full((min(matrix.shape),), math.nan, dtype=torch.float64)
    return spectrum[0][-min(matrix.shape) :]


def _result(rows: int, cols: int, evals: torch.Tensor, fro2: float) -> SpectralResult:
    """The result from the ascending eigenvalues of the Gram matrix and ‖W‖_F²."""
    evals = evals[-min(rows, cols) :]
    lam_max = float(evals[-1])
    norm = math.sqrt(lam_max)
    stable = fro2 / lam_max if lam_max > 0 else math.nan
    skip = min(rows, cols) < MIN_EVALS  # WeightWatcher does not fit such matrices
    fit = PowerLawFit(math.nan, math.nan, math.nan, 0, 0) if skip else powerlaw_fit(evals)
    return SpectralResult(rows, cols, norm, math.sqrt(fro2), stable, *fit)


def _nan_result(rows: int, cols: int) -> SpectralResult:
    nan = math.nan
    return SpectralResult(rows, cols, nan, nan, nan, nan, nan, nan, 0, 0)


# ---------------------------------------------------------------- WeightWatcher's power-law fit


def powerlaw_fit(evals: torch.Tensor | np.ndarray, thresh: float = EVALS_THRESH) -> PowerLawFit:
    """WeightWatcher 0.7.7's power-law fit of eigenvalues (see the module doc), in float64."""
    if isinstance(evals, torch.Tensor):
        evals = evals.detach().to("cpu", torch.float64).numpy()
    data = np.sort(np.asarray(evals, dtype=np.float64))
    data = data[data > thresh]
    n_all = data.size
    if n_all < 2:
        return PowerLawFit(math.nan, math.nan, math.nan, 0, n_all)
    if n_all < SMALL_N_CUTOFF:
        return _fit_small_n(data)
    logs = np.log(data)
    with np.errstate(all="ignore"):  # overflow where j < i (masked) or α ≤ 1 (D = 1), like WeightWatcher
        _, ds = _all_candidates(data, logs)
        finite = ds[~np.isnan(ds)]
        cut = finite.min() + TIE_TOLERANCE if finite.size else math.inf
        near = np.flatnonzero(~(ds > cut))  # the minimum's near-ties (and NaNs, which numpy's argmin picks)
        exact = [_ww_candidate(data, logs, int(i)) for i in near]  # WeightWatcher's own arithmetic
    k = int(np.argmin([d for _, d in exact]))  # first minimum, like numpy
    best = int(near[k])
    return PowerLawFit(float(exact[k][0]), float(data[best]), float(exact[k][1]), n_all - best, n_all)


def _all_candidates(data: np.ndarray, logs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """α_i and D_i for every candidate xmin = data[i] (i < N − 1), vectorised over tiles.

    A tile is the candidates i ∈ [s, e) against the eigenvalues j ∈ [s, N) (j < i is
    masked); tiles of ≤ 64K elements keep every temporary in the L2 cache.
    """
    n_all = data.size
    m = n_all - 1
    n = (n_all - np.arange(m)).astype(np.float64)  # tail sizes n_i
    suffix = np.cumsum(logs[::-1])[::-1]  # Σ_{j≥i} ln λ_j
    alphas = 1.0 + n / (suffix[:-1] - n * logs[:-1])
    expo = 1.0 - alphas
    ds = np.ones(m)
    step = max(1, min(m, FIT_TILE_ELEMENTS // n_all))
    offsets = np.arange(n_all, dtype=np.float64)[None, :] - np.arange(step, dtype=np.float64)[:, None]  # j − i
    below = np.tril_indices(step, -1)  # j < i within the tile's leading square
    for s in range(0, m, step):
        e = min(m, s + step)
        x = logs[None, s:] - logs[s:e, None]  # ln(λ_j/λ_i)
        x *= expo[s:e, None]
        np.exp(x, out=x)  # (λ_j/λ_i)^(1−α_i)
        x += offsets[: e - s, : n_all - s] / n[s:e, None]  # + (j − i)/n_i
        np.subtract(1.0, x, out=x)
        np.abs(x, out=x)
        if e - s == step:
            x[below] = 0.0
        else:  # the last, shorter tile
            x[np.tril_indices(e - s, -1)] = 0.0
        ds[s:e] = np.where(alphas[s:e] > 1, x.max(axis=1), 1.0)
    return alphas, ds


def _ww_candidate(data: np.ndarray, logs: np.ndarray, i: int) -> tuple[float, float]:
    """α_i and D_i exactly as WeightWatcher's ``fit_power_law_standard`` computes them."""
    xmin = data[i]
    n = float(data.size - i)
    alpha = 1 + n / (np.sum(logs[i:]) - n * logs[i])
    if not alpha > 1:
        return alpha, 1.0
    d = np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    return alpha, d


def _fit_small_n(data: np.ndarray) -> PowerLawFit:
    """WeightWatcher's ``fit_powerlaw_smallN`` (bias-corrected α, objective D − 0.868/√n)."""
    logs = np.log(data)
    n_all = data.size
    best: tuple[float, int, float, float] | None = None  # (J, i, α, D)
    for i in range(n_all - 1):
        n = n_all - i
        if n < SMALL_N_MIN_TAIL:
            continue
        s = np.sum(logs[i:]) - float(n) * logs[i]
        if s <= 1e-12:
            continue
        alpha = 1.0 + (n - 1.0) / s
        if alpha <= 1.0:
            continue
        d = float(np.max(np.abs(np.arange(n, dtype=np.float64) / n - (1.0 - (data[i:] / data[i]) ** (1.0 - alpha)))))
        j = d - 0.868 / np.sqrt(float(n))
        if best is None or j < best[0]:
            best = (j, i, alpha, d)
    if best is None:  # WeightWatcher's fallback: the whole spectrum as the tail
        n = n_all
        s = np.sum(logs) - float(n) * logs[0]
        if s <= 1e-12:
            return PowerLawFit(1.0, float(data[0]), 1.0, n, n_all)
        alpha = 1.0 + (n - 1.0) / s
        d = float(np.max(np.abs(np.arange(n, dtype=np.float64) / n - (1.0 - (data / data[0]) ** (1.0 - alpha)))))
        best = (0.0, 0, alpha, d)
    _, i, alpha, d = best
    return PowerLawFit(float(alpha), float(data[i]), float(d), n_all - i, n_all)
