"""Kolmogorov–Smirnov distance to the normal with the tensor's own mean and std.

From the value histogram (:mod:`.histogram`), without sorting and without another pass.
Bin j holds C_j values, all in [lo_j, hi_j]; bins are disjoint and in value order, so with
B_j = Σ_{i<j} C_i (values before the bin) and Φ the fitted normal's CDF:

* at each bin edge the empirical CDF is known exactly, so
  L = max_j max(|B_j/n − Φ(lo_j)|, |(B_j + C_j)/n − Φ(hi_j)|) ≤ D;
* inside a bin F_n ∈ [B_j/n, (B_j + C_j)/n] and Φ ∈ [Φ(lo_j), Φ(hi_j)], so
  D ≤ U = max(L, max_j max((B_j + C_j)/n − Φ(lo_j), Φ(hi_j) − B_j/n)).

The result is D ∈ [L, U]: ``statistic`` = L and ``error_bound`` = U − L. For float16,
bfloat16 and float8 tensors every bin is one value, so L = U = D exactly. For float32 the
bins are 2⁻¹¹–2⁻¹⁰ wide relative to the value x, so U − L ≤ max φ(z)·(|x|/σ)·2⁻¹⁰: about
2.4e−4 for centred weights (|x|/σ ≈ |z|); in practice D − L is the within-bin sampling noise,
~√C_j / n (≈ 1e−5 at n = 10⁶). A tensor far from 0 against its spread (a LayerNorm gain ≈ 1
± 0.01, say) has coarse bins in z; when U − L exceeds ``max_error`` (default 1e−3; 0 = always)
one more sweep gathers the distinct values (with their counts) of the bins where D could
exceed L and evaluates D there exactly (float64), as ``scipy.stats.kstest`` does after a
full sort. Only if those bins hold more than ``max_exact`` distinct values do the bounds
stand (``exact`` False); :class:`~pytest_weights.assertions.gaussian_ks.GaussianKS` then
passes a tensor only when the upper bound is within tolerance.

A tensor with zero spread (or fewer than two finite values) has D = 1 by definition here:
it is as far from a Gaussian as can be.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import kernels
from .base import Deps, Statistic, cacheable
from .histogram import HistogramResult, ValueHistogram
from .moments import Moments, MomentsResult


@cacheable
class KSResult(NamedTuple):
    """KS distance D = sup|F_n − Φ((x − mean)/std)|, like ``scipy.stats.kstest``'s statistic.

    ``statistic`` ≤ D ≤ ``statistic + error_bound``; ``exact`` when the bound is 0.
    """

    statistic: float
    n: int
    exact: bool
    error_bound: float


#: The smallest float32 step (subnormal): float64 values round to float32 within half of it
#: plus half a relative step (``HistogramResult.slack``).
_F32_STEP = 2.0**-149


class _Bounds(NamedTuple):
    lower: float  # L
    upper: float  # U
    before: torch.Tensor  # B_j (int64)
    candidates: torch.Tensor  # bool: bins where D could exceed L


def bounds(m: MomentsResult, h: HistogramResult) -> _Bounds:
    """L ≤ D ≤ U from the histogram (see the module docstring), float64."""
    n = h.n
    before = torch.cumsum(h.counts, 0) - h.counts
    f_lo = before.to(torch.float64) / n
    f_hi = (before + h.counts).to(torch.float64) / n

    def cdf(x: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr((x - m.mean) / m.std)

    p_lo = cdf(h.lo)
    p_hi = p_lo if h.exact else cdf(h.hi)  # exact: single-value bins, lo == hi
    at_edges = torch.maximum((f_lo - p_lo).abs(), (f_hi - p_hi).abs())
    if h.slack:  # edges known to within slack·|edge| (+ a float32 subnormal step): widen the bins, shrink L
        w_lo = cdf(h.lo - h.slack * h.lo.abs() - _F32_STEP)
        w_hi = cdf(h.hi + h.slack * h.hi.abs() + _F32_STEP)
        at_edges = at_edges - torch.maximum(p_lo - w_lo, w_hi - p_hi)
        p_lo, p_hi = w_lo, w_hi
    lower = max(float(at_edges.max()), 0.0)
    inside = torch.maximum(f_hi - p_lo, p_hi - f_lo)
    upper = max(lower, float(inside.max()))
    return _Bounds(lower, upper, before, inside > lower)


@dataclass(frozen=True)
class KSNormal(Statistic):
    """KS distance D of the tensor's values to N(mean, std²): bounds from the histogram,
    made exact by a second sweep when they are wider than ``max_error`` (module docstring)."""

    #: Bounds wider than this are narrowed to the exact value by one more sweep over the
    #: tensor (0: always exact). Centred weights stay below ~2.4e−4 without it.
    max_error: float = 1e-3
    #: At most this many distinct values are gathered for the exact value, else the bounds stand.
    max_exact: int = 1 << 22

    layout = "flat"

    def needs_sweep(self, deps: Deps) -> bool:
        return _plan(self, deps).lut is not None

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(), ValueHistogram())

    def reduce(self, block: torch.Tensor, deps: Deps) -> _Gathered:
        """The distinct values of the candidate bins, with their bins and counts."""
        lut = _plan(self, deps).lut
        if lut is None:
            return _Gathered.empty()
        lut = lut.to(block.device)
        b = lut[kernels.keys(block).clamp(max=len(lut) - 1)]  # non-finite keys: past the end
        keep = b >= 0
        values, inverse, counts = torch.unique(
            block.reshape(-1)[keep].to(torch.float64), return_inverse=True, return_counts=True
        )
        bins = torch.zeros_like(counts).scatter_(0, inverse, b[keep])  # a value lies in one bin
        return _Gathered(values.cpu(), bins.cpu(), counts.cpu()).capped(self.max_exact)

    def merge(self, a: _Gathered, b: _Gathered) -> _Gathered:
        if a.overflow or b.overflow:
            return _Gathered.empty(overflow=True)
        return _Gathered(*(torch.cat([x, y]) for x, y in zip(a[:3], b[:3], strict=True))).capped(self.max_exact)

    def finalize(self, state: _Gathered | None, deps: Deps) -> KSResult:
        m, h = deps[Moments()], deps[ValueHistogram()]
        bd = _plan(self, deps).bounds
        with _plans_lock:
            _plans.pop((id(h), self), None)  # the sweep, if any, is over
        if bd is None:
            return KSResult(1.0, m.n, True, 0.0)
        if state is None or state.overflow or not len(state.values) or bd.upper == bd.lower:
            return KSResult(bd.lower, h.n, bd.upper == bd.lower, bd.upper - bd.lower)
        values, inverse = torch.unique(state.values, return_inverse=True)  # sorted; bins stay grouped
        counts = torch.zeros(len(values), dtype=torch.int64).scatter_add_(0, inverse, state.counts)
        bins = torch.zeros(len(values), dtype=torch.int64).scatter_(0, inverse, state.bins)
        before = torch.cumsum(counts, 0) - counts  # gathered values before each one
        within = before - before[torch.searchsorted(bins, bins)]  # … in its own bin
        rank_lt = bd.before[bins] + within  # values < v in the whole tensor
        cdf = torch.special.ndtr((values - m.mean) / m.std)
        n = h.n
        d_plus = ((rank_lt + counts).to(torch.float64) / n - cdf).max()
        d_minus = (cdf - rank_lt.to(torch.float64) / n).max()
        return KSResult(max(bd.lower, float(d_plus), float(d_minus)), n, True, 0.0)


class _Gathered(NamedTuple):
    """Distinct values gathered from candidate bins (float64), their bins and counts."""

    values: torch.Tensor
    bins: torch.Tensor
    counts: torch.Tensor
    overflow: bool = False  # more distinct values than ``max_exact``: only the bounds stand

    @staticmethod
    def empty(overflow: bool = False) -> _Gathered:
        nothing = torch.zeros(0, dtype=torch.int64)
        return _Gathered(nothing.to(torch.float64), nothing, nothing, overflow)

    def capped(self, limit: int) -> _Gathered:
        return _Gathered.empty(overflow=True) if len(self.values) > limit else self


class _Plan(NamedTuple):
    bounds: _Bounds | None  # None: D = 1 by definition (no spread)
    lut: torch.Tensor | None  # key → candidate bin, or −1; None: no second sweep


_plans: dict[tuple[int, KSNormal], tuple[HistogramResult, _Plan]] = {}
_plans_lock = threading.Lock()


def _plan(ks: KSNormal, deps: Deps) -> _Plan:
    """The bounds of a tensor and, when they are too wide, which keys' values to gather
    (computed once per histogram, shared by the engine's check, the sweep and finalize)."""
    h = deps[ValueHistogram()]
    with _plans_lock:
        cached = _plans.get((id(h), ks))
    if cached is not None and cached[0] is h:
        return cached[1]
    m = deps[Moments()]
    plan = _Plan(None, None)
    if h.n >= 2 and m.std > 0:
        bd = bounds(m, h)
        wide = bd.upper - bd.lower > ks.max_error and bool(bd.candidates.any())
        plan = _Plan(bd, _key_to_candidate_bin(h, bd.candidates) if wide else None)
    with _plans_lock:
        if len(_plans) >= 64:  # tensors in flight: the oldest plans are done with
            del _plans[next(iter(_plans))]
        _plans[(id(h), ks)] = (h, plan)  # holds h: its id is not reused while cached
    return plan


def _key_to_candidate_bin(h: HistogramResult, candidates: torch.Tensor) -> torch.Tensor:
    lut = torch.full((int(h.keys.max()) + 2,), -1, dtype=torch.int64)  # keys past the end: lut[-1]
    lut[h.keys] = torch.where(candidates[h.bin_of_key], h.bin_of_key, -1)
    return lut
