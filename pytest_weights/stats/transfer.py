"""Statistics for comparing models of different widths (paper B, mean-field RC ansatz).

Weights are first standardised so the parametrisation's scale drops out:
``rms`` divides by the tensor's RMS; ``fan_in`` multiplies by √fan_in (the number of
columns of the ``(shape[0], -1)`` view, i.e. ``in_features`` of a Linear weight).

- :class:`StdEntryHistogram`: histogram of standardised entries on a fixed grid
  (mergeable). Two-sample KS and Wasserstein-1 between two such histograms are exact up
  to the grid: KS error ≤ the largest bin mass, W1 error ≤ one bin width (2·span/bins,
  0.0039 by default) plus the mass outside ±span.
- :class:`RowColNorms`: RMS of each row and of each column of the standardised matrix
  (row RMS ≈ 1 for i.i.d. entries); small vectors compared exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from . import kernels
from .base import Deps, Statistic, cacheable
from .kernels import scratch
from .moments import Moments


def _scale(standardise: str, m, cols: int) -> float:
    if standardise == "rms":
        return 1.0 / m.rms if m.rms > 0 else 0.0
    return math.sqrt(cols)


@cacheable
class EntryHistogram(NamedTuple):
    counts: list  # [bins + 2]: underflow, bins…, overflow
    span: float


@cacheable
class NormProfile(NamedTuple):
    rows: list  # RMS of each row of the standardised matrix, in row order
    cols: list  # RMS of each column


@dataclass(frozen=True)
class StdEntryHistogram(Statistic):
    """Histogram of standardised entries over [−span, span] (``standardise``: rms | fan_in)."""

    standardise: Literal["rms", "fan_in"] = "rms"
    bins: int = 4096
    span: float = 8.0

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def reduce(self, block: torch.Tensor, deps: Deps) -> torch.Tensor:
        """Counts tile by tile, in reused buffers (no temporaries of the block's size)."""
        m = deps[Moments()]
        s = _scale(self.standardise, m, block.shape[1])
        flat = block.reshape(-1)
        counts = torch.zeros(self.bins + 2, dtype=torch.int64, device=block.device)
        step = kernels.TILE if block.device.type == "cpu" else max(flat.numel(), 1)
        for i in range(0, flat.numel(), step):
            x = flat[i : i + step]
            if m.nan or m.inf:
                x = x[torch.isfinite(x)]
            u = torch.mul(x, s * self.bins / (2 * self.span), out=scratch("entries.u", x.numel(), x.dtype, x.device))
            u.add_(self.bins / 2 + 1).clamp_(0, self.bins + 1)
            j = scratch("entries.j", x.numel(), torch.int32, x.device).copy_(u)
            counts += torch.bincount(j, minlength=self.bins + 2)
        return counts.cpu()

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def finalize(self, state: torch.Tensor, deps: Deps) -> EntryHistogram:
        return EntryHistogram(state.tolist(), self.span)


@dataclass(frozen=True)
class RowColNorms(Statistic):
    """RMS of every row and column of the standardised ``(shape[0], -1)`` matrix."""

    standardise: Literal["rms", "fan_in"] = "rms"

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Squared sums of rows and columns, a group of rows of about a tile at a time (reused buffers)."""
        m = deps[Moments()]
        rows, cols = block.shape
        row_sq = torch.zeros(rows, dtype=torch.float64, device=block.device)
        col_sq = torch.zeros(cols, dtype=torch.float64, device=block.device)
        step = max(1, kernels.TILE // max(cols, 1)) if block.device.type == "cpu" else max(rows, 1)
        for r in range(0, rows, step):
            part = block[r : r + step]
            sq = torch.square(part, out=scratch("norms.sq", part.numel(), part.dtype, part.device).view(part.shape))
            if m.nan or m.inf:
                sq.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            row_sq[r : r + step] = sq.sum(1, dtype=torch.float64)
            col_sq += sq.sum(0, dtype=torch.float64)
        return row_sq.cpu(), col_sq.cpu(), rows

    def merge(self, a, b):
        return torch.cat([a[0], b[0]]), a[1] + b[1], a[2] + b[2]

    def finalize(self, state, deps: Deps) -> NormProfile:
        rows_sq, cols_sq, n_rows = state
        n_cols = len(cols_sq)
        s = _scale(self.standardise, deps[Moments()], n_cols)
        rows = (rows_sq / max(n_cols, 1)).sqrt() * s
        cols = (cols_sq / max(n_rows, 1)).sqrt() * s
        return NormProfile(rows.tolist(), cols.tolist())


# ------------------------------------------------------------------ two-sample distances


def hist_distances(a: EntryHistogram, b: EntryHistogram) -> tuple[float, float]:
    """(KS, W1) between two entry histograms on the same grid (see module doc for bounds)."""
    ca, cb = np.asarray(a.counts, float), np.asarray(b.counts, float)
    fa, fb = np.cumsum(ca) / max(ca.sum(), 1), np.cumsum(cb) / max(cb.sum(), 1)
    width = 2 * a.span / (len(ca) - 2)
    diff = np.abs(fa - fb)
    return float(diff.max()), float(diff[:-1].sum() * width)


def sample_distances(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float]:
    """Exact two-sample KS statistic and Wasserstein-1 distance of two small samples."""
    xs, ys = np.sort(np.asarray(x, float)), np.sort(np.asarray(y, float))
    grid = np.concatenate([xs, ys])
    grid.sort()
    fx = np.searchsorted(xs, grid, side="right") / len(xs)
    fy = np.searchsorted(ys, grid, side="right") / len(ys)
    ks = float(np.abs(fx - fy).max())
    w1 = float((np.abs(fx - fy)[:-1] * np.diff(grid)).sum())
    return ks, w1
