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
one more sweep gathers the values of the bins where D could exceed L and evaluates D there
exactly (float64), as ``scipy.stats.kstest`` does after a full sort.

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
    if h.slack:  # edges known to within slack·|edge|: widen the bins, shrink L by Φ's slack
        w_lo, w_hi = cdf(h.lo - h.slack * h.lo.abs()), cdf(h.hi + h.slack * h.hi.abs())
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
    #: At most this many values are gathered for the exact value, else the bounds stand.
    max_exact: int = 1 << 22

    layout = "flat"

    def needs_sweep(self, deps: Deps) -> bool:
        return _plan(self, deps).lut is not None

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(), ValueHistogram())

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[torch.Tensor, torch.Tensor]:
        lut = _plan(self, deps).lut
        if lut is None:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty.to(torch.int64)
        lut = lut.to(block.device)
        b = lut[kernels.keys(block).clamp(max=len(lut) - 1)]  # non-finite keys: past the end
        keep = b >= 0
        return block[keep].to(torch.float64).cpu(), b[keep].cpu()

    def merge(self, a, b):
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    def finalize(self, state, deps: Deps) -> KSResult:
        m, h = deps[Moments()], deps[ValueHistogram()]
        bd = _plan(self, deps).bounds
        with _plans_lock:
            _plans.pop((id(h), self), None)  # the sweep, if any, is over
        if bd is None:
            return KSResult(1.0, m.n, True, 0.0)
        if state is None or not len(state[0]) or bd.upper == bd.lower:
            return KSResult(bd.lower, h.n, bd.upper == bd.lower, bd.upper - bd.lower)
        values, bins = state
        order = torch.argsort(values, stable=True)  # bins are in value order: stays grouped by bin
        values, bins = values[order], bins[order]
        start = torch.searchsorted(bins, bins)  # first position of each value's bin
        first = torch.searchsorted(values, values)  # first position of each value's ties
        last = torch.searchsorted(values, values, right=True)
        base = bd.before[bins]
        cdf = torch.special.ndtr((values - m.mean) / m.std)
        n = h.n
        d_plus = ((base + last - start).to(torch.float64) / n - cdf).max()
        d_minus = (cdf - (base + first - start).to(torch.float64) / n).max()
        return KSResult(max(bd.lower, float(d_plus), float(d_minus)), n, True, 0.0)


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
        wanted = int(h.counts[bd.candidates].sum())
        wide = bd.upper - bd.lower > ks.max_error and 0 < wanted <= ks.max_exact
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
