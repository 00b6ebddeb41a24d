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

from .base import Deps, Statistic, cacheable
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
        x = block[torch.isfinite(block)]
        s = _scale(self.standardise, deps[Moments()], block.shape[1])
        u = (x * (s * self.bins / (2 * self.span)) + (self.bins / 2 + 1)).clamp_(0, self.bins + 1)
        return torch.bincount(u.to(torch.int32), minlength=self.bins + 2).cpu()

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
        sq = torch.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0).square()
        return sq.sum(1, dtype=torch.float64).cpu(), sq.sum(0, dtype=torch.float64).cpu(), block.shape[0]

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
