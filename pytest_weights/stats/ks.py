"""Kolmogorov–Smirnov distance to the normal with the tensor's own mean and std.

Exact without sorting the tensor. Sweep 1 histograms the standardised values
z = (x − mean)/std on a fine grid (:class:`StdHistogram`, ~64·√n bins). Between grid edges the
empirical CDF and Φ are both monotone, so each bin bounds the distance reachable inside
it; edges give a lower bound D_lo. Sweep 2 (:class:`KSNormal`) gathers only the values in
bins whose upper bound exceeds D_lo (typically a few thousand) and evaluates the exact
statistic there in float64, with ranks from the histogram's cumulative counts. When more
than ``max_exact`` values would be gathered (a huge spike of identical values, say), the
result is the upper bound with ``exact=False`` and its ``error_bound`` ≤ one bin's mass.

A tensor with zero spread (or fewer than two finite values) has D = 1 by definition here:
it is as far from a Gaussian as can be.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import kernels
from .base import Deps, Statistic, cacheable
from .moments import Moments


class HistogramResult(NamedTuple):
    counts: torch.Tensor  # int64, [bins + 2]: underflow, bins…, overflow
    n: int
    lower: float  # D at the grid edges: a lower bound of the exact D
    candidates: torch.Tensor  # bool, [bins + 2]: bins where D could exceed ``lower``
    n_candidates: int  # values in candidate bins


@cacheable
class KSResult(NamedTuple):
    """KS distance D = sup|F_n − Φ((x − mean)/std)|, like ``scipy.stats.kstest``'s statistic."""

    statistic: float
    n: int
    exact: bool
    error_bound: float  # 0 when exact


@functools.lru_cache(maxsize=16)
def _edge_cdf(bins: int, span: float) -> torch.Tensor:
    """Φ at the grid edges (float64, read-only: shared between tensors of similar size)."""
    return torch.special.ndtr(StdHistogram(bins, span).edges(bins))


def _finite(block: torch.Tensor, m) -> torch.Tensor:
    x = block.reshape(-1)
    return x[torch.isfinite(x)] if (m.nan or m.inf) else x


@dataclass(frozen=True)
class StdHistogram(Statistic):
    """Histogram of standardised values on equal bins over [−span, span].

    ``bins=0`` (default) picks the number from the count n: the next power of two of
    64·√n, within [2¹⁴, 2²²]. A bin then holds at most 0.4·2·span/bins of Φ's mass, well
    below the distance of a Gaussian sample (≈ 0.63/√n), so few bins are candidates.
    """

    bins: int = 0
    span: float = 8.0

    def nbins(self, n: int) -> int:
        if self.bins:
            return self.bins
        want = 64 * math.sqrt(max(n, 1))
        return int(min(max(2 ** math.ceil(math.log2(want)), 1 << 14), 1 << 22))

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def bin_index(self, x: torch.Tensor, m) -> torch.Tensor:
        """Bin of each value: 0 underflow, 1..bins, bins+1 overflow (int32, monotone in x).

        One fused affine map u = x·a + b with a = scale/std, b = (span − mean/std)·scale + 1,
        then clamp and truncate (u ≥ 0, so truncation is floor).
        """
        bins = self.nbins(m.n)
        scale = bins / (2 * self.span)
        a = torch.tensor(scale / m.std, dtype=x.dtype, device=x.device)
        b = torch.tensor((self.span - m.mean / m.std) * scale + 1, dtype=x.dtype, device=x.device)
        return kernels.bin_index(x, a, b, bins + 1)

    def reduce(self, block: torch.Tensor, deps: Deps) -> torch.Tensor:
        m = deps[Moments()]
        bins = self.nbins(m.n)
        if not m.std > 0:
            return torch.zeros(bins + 2, dtype=torch.int64)
        idx = self.bin_index(_finite(block, m), m)
        return torch.bincount(idx, minlength=bins + 2).cpu()

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def edges(self, bins: int) -> torch.Tensor:
        """Bin edges in z, float64, with ±inf outside the grid: [bins + 3]."""
        inner = torch.linspace(-self.span, self.span, bins + 1, dtype=torch.float64)
        inf = torch.tensor([math.inf], dtype=torch.float64)
        return torch.cat([-inf, inner, inf])

    def finalize(self, state: torch.Tensor, deps: Deps) -> HistogramResult:
        counts = state
        n = int(counts.sum())
        if n == 0:
            return HistogramResult(counts, 0, 1.0, torch.zeros_like(counts, dtype=torch.bool), 0)
        cdf_edges = _edge_cdf(len(counts) - 2, self.span)  # Φ at each edge
        before = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])  # #values < edge
        f_edge = before.to(torch.float64) / n
        lower = float((f_edge - cdf_edges).abs().max())
        # Inside bin j (edges a<b): F_n ≤ before[j+1]/n and Φ ≥ Φ(a); F_n ≥ before[j]/n, Φ ≤ Φ(b).
        upper = torch.maximum(f_edge[1:] - cdf_edges[:-1], cdf_edges[1:] - f_edge[:-1])
        candidates = (upper > lower) & (counts > 0)
        return HistogramResult(counts, n, lower, candidates, int(counts[candidates].sum()))


@dataclass(frozen=True)
class KSNormal(Statistic):
    """KS distance D of the tensor's values to N(mean, std²) (exact; see module doc)."""

    bins: int = 0
    span: float = 8.0
    max_exact: int = 1 << 22

    @property
    def histogram(self) -> StdHistogram:
        return StdHistogram(self.bins, self.span)

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(), self.histogram)

    def _gather(self, deps: Deps) -> bool:
        h = deps[self.histogram]
        return h.n > 1 and 0 < h.n_candidates <= self.max_exact

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._gather(deps):
            empty = torch.empty(0)
            return empty.to(torch.float64), empty.to(torch.int64)
        m, h = deps[Moments()], deps[self.histogram]
        x = _finite(block, m)
        idx = self.histogram.bin_index(x, m)
        keep = h.candidates.to(x.device)[idx]
        return x[keep].to(torch.float64).cpu(), idx[keep].to(torch.int64).cpu()

    def merge(self, a, b):
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    def finalize(self, state, deps: Deps) -> KSResult:
        m, h = deps[Moments()], deps[self.histogram]
        if h.n < 2 or not m.std > 0:
            return KSResult(1.0, m.n, True, 0.0)
        if not self._gather(deps):
            upper = _upper_bound(h, self.histogram)
            return KSResult(upper, h.n, upper == h.lower, upper - h.lower)
        values, idx = state
        z = (values - m.mean) / m.std
        order = torch.argsort(z, stable=True)
        z, idx = z[order], idx[order]
        before = torch.cat([torch.zeros(1, dtype=torch.int64), h.counts.cumsum(0)])
        first = torch.searchsorted(idx, idx, right=False)  # first position of each bin
        rank0 = before[idx] + (torch.arange(len(idx)) - first)  # values strictly before
        cdf = torch.special.ndtr(z)
        n = h.n
        d_plus = ((rank0 + 1).to(torch.float64) / n - cdf).max()
        d_minus = (cdf - rank0.to(torch.float64) / n).max()
        return KSResult(max(h.lower, float(d_plus), float(d_minus)), n, True, 0.0)


def _upper_bound(h: HistogramResult, hist: StdHistogram) -> float:
    cdf_edges = _edge_cdf(len(h.counts) - 2, hist.span)
    before = torch.cat([torch.zeros(1, dtype=torch.int64), h.counts.cumsum(0)])
    f = before.to(torch.float64) / h.n
    upper = torch.maximum(f[1:] - cdf_edges[:-1], cdf_edges[1:] - f[:-1])
    return max(h.lower, float(upper[h.counts > 0].max()))
