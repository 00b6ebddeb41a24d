"""Singular-value statistics of a weight matrix: spectral norm, stable rank, ESD power-law α.

The matrix is the tensor's 2-D view (rows × the rest). Singular values need the whole
matrix, so this statistic is *not* a fixed-size reduction; it keeps whichever is
smaller of the two exact forms whose merge is still exact:

* the Gram matrix G = WᵀW (float64, cols × cols), which adds over row blocks
  (G = Σ BᵀB), once at least ``cols`` rows have been seen — memory cols², whatever the
  number of rows (a 128k × 4096 embedding needs 134 MB, not 2 GB);
* the rows themselves while fewer than ``cols`` have been seen (a wide matrix is kept
  whole: memory rows × cols of the block dtype).

``finalize`` takes the eigenvalues λ = σ² with ``torch.linalg.eigvalsh`` in float64 on the
compute device: of G for a matrix with rows ≥ cols, of W·Wᵀ (rows × rows) for a wide one.
Which path is taken depends only on the shape, never on the block split. Through a Gram
matrix an eigenvalue carries an absolute error of about 1e−16·λ_max·dim, so singular
values far below 1e−7·σ_max lose relative accuracy; the norms and the tail fit do not
depend on them (α matches WeightWatcher, which takes a float64 SVD, to ~1e−13 on
all-MiniLM-L6-v2). ``method="svd"`` gathers the rows whatever the shape and takes
``torch.linalg.svdvals`` in float64 instead: accurate for the smallest singular values,
but it holds the whole matrix and is ~10× slower on CPU.

The power-law exponent follows WeightWatcher 0.7.7's default fit (``WWFit``, package
``weightwatcher``): eigenvalues λ_i = σ_i² of WᵀW, *not* normalised by N; keep λ > 1e−5;
sort; for every candidate xmin = λ_i except the largest, α_i = 1 + n_i / Σ_{j≥i} ln(λ_j/λ_i)
with n_i = N − i, and the KS distance D_i = max_{j≥i} |1 − (λ_j/λ_i)^(1−α_i) − (j − i)/n_i|
(D_i = 1 when α_i ≤ 1); the fit is the first i minimising D_i. With fewer than 20
eigenvalues WeightWatcher switches to its small-N fit (α = 1 + (n − 1)/Σ ln, tails of at
least 8, chosen by D − 0.868/√n), reproduced here too. Matrices with min(rows, cols) < 8
are skipped by WeightWatcher (``min_evals``): α is NaN for them. A conv kernel is taken as
its (out, in·kh·kw) view; WeightWatcher instead analyses one (out, in) slice per kernel
position (and rescales them), so α of conv layers is not comparable with its numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from .base import Deps, Statistic, cacheable

EVALS_THRESH = 1e-5  # WeightWatcher's EVALS_THRESH
SMALL_N_CUTOFF = 20  # WeightWatcher's SMALL_N_CUTOFF
SMALL_N_MIN_TAIL = 8
MIN_EVALS = 8  # WeightWatcher's DEFAULT_MIN_EVALS


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
    gram: torch.Tensor | None  # float64 [cols, cols] once rows ≥ cols
    rows: torch.Tensor | None  # the gathered rows (block dtype) before that
    n_rows: int


def _to_gram(s: _State) -> _State:
    if s.gram is not None or s.rows is None:
        return s
    r = s.rows.to(torch.float64)
    return _State(r.T @ r, None, s.n_rows)


@dataclass(frozen=True)
class Spectral(Statistic):
    """Spectral norm, stable rank and WeightWatcher's ESD power-law α of the 2-D view."""

    method: Literal["gram", "svd"] = "gram"

    def _gram_now(self, s: _State) -> bool:
        return self.method == "gram" and s.rows is not None and s.n_rows >= s.rows.shape[1]

    def reduce(self, block: torch.Tensor, deps: Deps) -> _State:
        state = _State(None, block, block.shape[0])
        return _to_gram(state) if self._gram_now(state) else state

    def merge(self, a: _State, b: _State) -> _State:
        if a.gram is None and b.gram is None:
            s = _State(None, torch.cat([a.rows, b.rows]), a.n_rows + b.n_rows)
            return _to_gram(s) if self._gram_now(s) else s
        a, b = _to_gram(a), _to_gram(b)
        return _State(a.gram + b.gram, None, a.n_rows + b.n_rows)

    def finalize(self, state: _State, deps: Deps) -> SpectralResult:
        cols = state.gram.shape[0] if state.gram is not None else state.rows.shape[1]
        rows = state.n_rows
        if state.gram is not None:
            if not torch.isfinite(state.gram).all():
                return _nan_result(rows, cols)
            evals = torch.linalg.eigvalsh(state.gram).clamp_(min=0.0)
        else:
            m = state.rows.to(torch.float64)
            if not torch.isfinite(m).all():
                return _nan_result(rows, cols)
            if self.method == "svd":
                evals = torch.linalg.svdvals(m).square()
            else:
                evals = torch.linalg.eigvalsh(m @ m.T).clamp_(min=0.0)
        evals = torch.sort(evals.cpu()).values[-min(rows, cols) :]
        lam_max = float(evals[-1])
        fro2 = float(evals.sum())
        norm = math.sqrt(lam_max)
        stable = fro2 / lam_max if lam_max > 0 else math.nan
        skip = min(rows, cols) < MIN_EVALS  # WeightWatcher does not fit such matrices
        fit = PowerLawFit(math.nan, math.nan, math.nan, 0, 0) if skip else powerlaw_fit(evals)
        return SpectralResult(rows, cols, norm, math.sqrt(fro2), stable, *fit)


def _nan_result(rows: int, cols: int) -> SpectralResult:
    nan = math.nan
    return SpectralResult(rows, cols, nan, nan, nan, nan, nan, nan, 0, 0)


def powerlaw_fit(evals: torch.Tensor, thresh: float = EVALS_THRESH) -> PowerLawFit:
    """WeightWatcher's power-law fit of eigenvalues (see the module doc); float64 on CPU."""
    data = torch.sort(evals.to(torch.float64).cpu()).values
    data = data[data > thresh]
    n_all = data.numel()
    if n_all < 2:
        return PowerLawFit(math.nan, math.nan, math.nan, 0, n_all)
    if n_all < SMALL_N_CUTOFF:
        return _fit_small_n(data)
    logs = torch.log(data)
    suffix = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # Σ_{j≥i} ln λ_j
    i = torch.arange(n_all - 1)
    n = (n_all - i).to(torch.float64)
    alphas = 1 + n / (suffix[:-1] - n * logs[:-1])
    ds = torch.ones(n_all - 1, dtype=torch.float64)
    j = torch.arange(n_all)
    step = max(1, (1 << 22) // n_all)  # bound the (candidates × eigenvalues) temporaries
    for start in range(0, n_all - 1, step):
        ii = i[start : start + step]
        a = alphas[ii].unsqueeze(1)
        rel = j.unsqueeze(0) - ii.unsqueeze(1)  # j − i
        ok = rel >= 0
        theo = 1 - torch.exp((1 - a) * (logs.unsqueeze(0) - logs[ii].unsqueeze(1)))
        emp = rel.to(torch.float64) / n[ii].unsqueeze(1)
        dev = torch.where(ok, (theo - emp).abs(), torch.zeros((), dtype=torch.float64))
        d = dev.max(dim=1).values
        ds[ii] = torch.where(a.squeeze(1) > 1, d, ds[ii])
    best = int(torch.argmin(ds))  # first minimum, like numpy
    return PowerLawFit(float(alphas[best]), float(data[best]), float(ds[best]), n_all - best, n_all)


def _fit_small_n(data: torch.Tensor) -> PowerLawFit:
    """WeightWatcher's ``fit_powerlaw_smallN`` (bias-corrected α, objective D − 0.868/√n)."""
    logs = torch.log(data).tolist()
    x = data.tolist()
    n_all = len(x)
    best, best_j, best_alpha, best_d = None, 0, math.nan, 1.0
    for i in range(n_all - 1):
        n = n_all - i
        if n < SMALL_N_MIN_TAIL:
            continue
        s = sum(logs[i:]) - n * logs[i]
        if s <= 1e-12:
            continue
        alpha = 1.0 + (n - 1.0) / s
        if alpha <= 1.0:
            continue
        d = max(abs(k / n - (1.0 - (x[i + k] / x[i]) ** (1.0 - alpha))) for k in range(n))
        j = d - 0.868 / math.sqrt(n)
        if best is None or j < best:
            best, best_j, best_alpha, best_d = j, i, alpha, d
    if best is None:  # WeightWatcher's fallback: the whole spectrum as the tail
        n = n_all
        s = sum(logs) - n * logs[0]
        if s <= 1e-12:
            return PowerLawFit(1.0, x[0], 1.0, n, n_all)
        best_alpha = 1.0 + (n - 1.0) / s
        best_d = max(abs(k / n - (1.0 - (x[k] / x[0]) ** (1.0 - best_alpha))) for k in range(n))
        best_j = 0
    return PowerLawFit(best_alpha, x[best_j], best_d, n_all - best_j, n_all)
