"""Two-parameter Weibull fit of the magnitudes |w| (paper D, library ``npm-weibull-py``).

Probability-plot protocols (``mid_80`` default, ``mid_90``, ``full_range``) reproduce
``npm_weibull.weibull_fit(extract_to_histogram(w), trim)`` (v0.4.0) step by step:

* :class:`LogAbsHistogram` counts log10|w| on 1024 equal bins over [−12, 2] (edges built
  exactly like ``np.linspace``; a value v falls in bin i when edge_i ≤ v < edge_i+1, the last
  bin also holding v = 2, like ``np.histogram``). Bins are decided on the exact log10|w|
  (|w| compared with 10**edge rounded up to the block's dtype). The library takes numpy's
  float32 log10, which is not correctly rounded (≈ half its results are 1 ulp off, and
  they depend on the CPU's SIMD path): values within ~1e−7 of a bin edge (≈ 1e−5 of them)
  can land one bin apart; the effect on k and λ is ≲ 1e−6 relative. Exact zeros, values
  below 1e−12 or above 100 and non-finite values are left out of the fit and counted
  apart. Counts add across blocks, so the histogram is exact whatever the split.
* :class:`WeibullFit` then, as the library: empirical CDF at the middle of each bin,
  F_mid = (cum_before + cum_after)/2 / total; x = bin centre in log10 (geometric centre in
  |w|), converted to ln; y = ln(−ln(1 − F_mid + 1e−12)); keep bins with counts > 0 and
  margin ≤ F_mid ≤ 1 − margin (margin 0.1 for mid_80, 0.05 for mid_90; full_range keeps
  0 < F_mid < 1); least squares of y on x weighted by the bin counts (the library scales
  rows by √count); k = slope, λ = exp(−intercept/k); R² is the count-weighted R² of that
  line; KS = max over *all* bins of |F(bin right edge) − F_fit(bin centre)| (the library's
  definition, not the textbook KS). Needs ≥ 100 counted values and ≥ 5 bins in the fit
  window, else every field is NaN and ``ok`` is False.

``mle`` is maximum likelihood with location 0 (what ``scipy.stats.weibull_min.fit(x,
floc=0)`` computes), over the positive finite |w| (exact zeros are excluded: their
log-likelihood is not finite). The score equation 1/k + mean(ln x) − Σx^k ln x / Σx^k = 0
has no fixed-size sufficient statistics, so :class:`WeibullMLE` keeps the exact
Σ ln x plus a fine histogram of ln x: 32000 bins over [ln max|w| − 32, ln max|w|]
(width 0.001). The k-dependent sums use bin midpoints (values more than e³² below the
maximum, in the underflow bin, add < e⁻³²ᵏ relative to them and are left out of those
sums). The position of values inside their bins is lost, which moves k and λ by
O(h²) plus a sampling term: measured 1e−8 to 3e−6 relative to the exact float64 MLE on
all-MiniLM-L6-v2 matrices, while scipy's optimiser itself stops ~1e−5 from it. KS of the MLE fit is taken at the fine
bin edges (a lower bound within one fine bin's mass of the exact sup); R² is NaN (no
probability-plot line is fitted).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from . import kernels
from .base import Deps, Derived, Statistic, cacheable
from .kernels import BlockKernels, Kernel, scratch
from .moments import Moments

Protocol = Literal["mid_80", "mid_90", "full_range", "mle"]
PROTOCOLS: tuple[str, ...] = ("mid_80", "mid_90", "full_range", "mle")
_TRIM_PCT = {"mid_80": 80, "mid_90": 90, "full_range": 100}


class LogAbsHistogramResult(NamedTuple):
    counts: torch.Tensor  # int64 [bins]: values with lo ≤ log10|w| ≤ hi
    n: int  # values in the bins (what the library's fit counts)
    zeros: int  # exact zeros
    below: int  # 0 < |w| < 10**lo
    above: int  # |w| > 10**hi (finite)
    nonfinite: int
    finite: int  # all finite values (zeros included)

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.finite if self.finite else math.nan


def linspace_like_numpy(lo: float, hi: float, num: int) -> torch.Tensor:
    """``np.linspace(lo, hi, num)`` bit for bit (float64): i·step + lo, last set to hi."""
    step = (hi - lo) / (num - 1)
    y = torch.arange(num, dtype=torch.float64) * step + lo
    y[-1] = hi
    return y


@dataclass(frozen=True)
class LogAbsHistogram(Statistic):
    """Counts of log10|w| on ``bins`` equal bins over [lo, hi] (the npm-weibull binning)."""

    bins: int = 1024
    lo: float = -12.0
    hi: float = 2.0

    def edges(self) -> torch.Tensor:
        return linspace_like_numpy(self.lo, self.hi, self.bins + 1)

    def bounds(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """[−inf, 10**edge_0 … 10**edge_bins, +inf] in ``dtype``, each rounded *up* to ``dtype``.

        For x of that dtype, x ≥ bound ⟺ x ≥ 10**edge exactly (to float64 accuracy), so
        bins are decided on the exact log10|w|, not on a rounded logarithm.
        """
        t64 = torch.pow(10.0, self.edges())
        t = t64.to(dtype)
        t = torch.where(t.to(torch.float64) < t64, torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)), t)
        inf = torch.tensor([math.inf], dtype=dtype)
        return torch.cat([-inf, t, inf]).to(device)

    layout = "flat"

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[Kernel, ...]:
        return (_LogAbsCounts(self),)

    def reduce(self, block: torch.Tensor, deps: Deps, swept: BlockKernels | None = None) -> tuple[torch.Tensor, int]:
        """Counts of the block (from the fused sweep: tile-sized temporaries in reused buffers)."""
        swept = swept or kernels.sweep(block, self.tile_kernels(block.dtype, deps))
        return swept[_LogAbsCounts(self)]

    def merge(self, a: tuple[torch.Tensor, int], b: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, state: tuple[torch.Tensor, int], deps: Deps) -> LogAbsHistogramResult:
        full, zeros = state
        counts = full[1 : self.bins + 1].clone()
        below = int(full[0]) - zeros
        above, nonfinite = int(full[self.bins + 1]), int(full[self.bins + 2])
        n = int(counts.sum())
        return LogAbsHistogramResult(counts, n, zeros, below, above, nonfinite, n + zeros + below + above)


@functools.lru_cache(maxsize=32)
def _bounds(h: LogAbsHistogram, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return h.bounds(dtype, device)


#: float32 magnitudes are looked up by their bit pattern's top 18 bits (exponent and 10 mantissa
#: bits, the value-histogram key): each key a range of |w| 2⁻¹¹–2⁻¹⁰ wide relative to it.
_KEY_SHIFT = 13
_FINITE_MAX = 0x7F7FFFFF  # bits of the largest finite float32


@functools.lru_cache(maxsize=8)
def _key_tables(h: LogAbsHistogram, device: torch.device) -> kernels.EdgeTables:
    """Look-up tables of float32 |w| by key: a value with bits u and key u >> 13 (clamped to the
    table) counts into slot code[row] + (u > edge[row]) of
    [zero, below (not zero), bins…, above, non-finite].

    Bin j holds bounds[j] ≤ |w| < bounds[j + 1] (the bounds of :meth:`LogAbsHistogram.bounds`,
    exact for float32; the last bin closed). Non-negative floats order like their bit patterns,
    so a key's range lies in one bin, or holds one bound (a key is ≤ 2⁻¹⁰ relative wide, a bin
    ≥ 3 %): then ``edge`` is that bound's bits − 1 and values from it on count one bin up. The
    table spans the keys of the bounds only (~48 K rows for 14 decades: it stays in cache);
    row 0 holds everything below (zero: u = 0, or not), the last row everything above (finite:
    u ≤ the largest float32, or not).
    """
    bits = h.bounds(torch.float32, torch.device("cpu"))[1:-1].view(torch.int32).to(torch.int64)
    bits[-1] += 1  # |w| == 10**hi is in the last bin (np.histogram), beyond it is above
    tables = kernels.edge_tables(bits, 1, (0, 0), (h.bins + 2, _FINITE_MAX), _KEY_SHIFT)
    return tables._replace(code=tables.code.to(device), edge=tables.edge.to(device))


@dataclass(frozen=True)
class _LogAbsCounts(Kernel):
    """The counts of :class:`LogAbsHistogram` tile by tile: [j = −1 (below, zeros), bins…,
    above, non-finite] and the exact zeros, accumulated on the block's device.

    float32 (and narrower, widened exactly): two table look-ups by the bit pattern of |w|
    (:func:`_key_tables`), no logarithm; on the CPU one compiled loop when numba is in use
    (:func:`.kernels.compiled`, the same counts). float64: the rounded log10 places each value, and the
    few within 1 % of a bin edge are decided exactly against the bounds.
    """

    hist: LogAbsHistogram

    def start(self, x: torch.Tensor) -> list[Any]:
        slots = self.hist.bins + (4 if x.dtype != torch.float64 else 3)
        return [torch.zeros(slots, dtype=torch.int64, device=x.device), 0]

    def tile(self, acc: list[Any], t: torch.Tensor, at: int, sweep: BlockKernels) -> list[Any]:
        if t.dtype == torch.float64:
            return self._tile_log(acc, t)
        k, dev = t.numel(), t.device
        tables = _key_tables(self.hist, dev)
        f32 = t if t.dtype == torch.float32 else scratch("logabs.w", k, torch.float32, dev).copy_(t)
        fast = kernels.compiled(t)
        if fast is not None:  # one loop: look-ups and counts
            fast.table_counts(
                f32.view(torch.int32).numpy(), tables.first, tables.code.numpy(), tables.edge.numpy(),
                _KEY_SHIFT, acc[0].numpy(),
            )  # fmt: skip
            kernels.compiled_calls["logabs"] += 1
            return acc
        u = torch.bitwise_and(f32.view(torch.int32), 0x7FFFFFFF, out=scratch("logabs.u", k, torch.int32, dev))
        slot = kernels.table_slots(u, tables, "logabs")
        acc[0] += torch.bincount(slot, minlength=self.hist.bins + 4)
        return acc

    def _tile_log(self, acc: list[Any], t: torch.Tensor) -> list[Any]:
        h, k, dev = self.hist, t.numel(), t.device
        bins = h.bins
        a = torch.abs(t, out=scratch("logabs.a", k, t.dtype, dev))
        finite = bool(torch.isfinite(a.sum()))  # NaN/Inf present (or a sum overflowing): count them apart
        # Bin from the rounded log10 (its error is < 1e−3 bin), then decide exactly, against
        # the bounds, the few values lying within 1 % of a bin edge. j = −1 below, bins above.
        f = torch.log10(a, out=scratch("logabs.f", k, a.dtype, dev)).sub_(h.lo).mul_(bins / (h.hi - h.lo))
        if not finite:
            f.nan_to_num_(nan=-1.0)
        f.clamp_(-1.0, float(bins))
        g = torch.floor(f, out=scratch("logabs.g", k, a.dtype, dev))
        near = torch.sub(f, g, out=f).sub_(0.5).abs_().gt_(0.49)
        j = scratch("logabs.j", k, torch.int64, dev).copy_(g)
        idx = near.nonzero().squeeze(1)
        if idx.numel():
            e = _bounds(h, a.dtype, dev)
            ak, jk = a[idx], j[idx]
            jk = jk - (ak < e[jk + 1]).to(torch.int64) + (ak >= e[jk + 2]).to(torch.int64)
            jk = torch.where(ak == e[bins + 1], bins - 1, jk)  # np.histogram: the last bin is closed
            j[idx] = jk
        if not finite:
            j = torch.where(torch.isfinite(a), j, bins + 1)
        acc[0] += torch.bincount(j.add_(1), minlength=bins + 3)
        acc[1] += int(torch.eq(a, 0, out=f).sum())  # f is free again: a float 0/1 mask sums fastest
        return acc

    def finish(self, acc: list[Any], x: torch.Tensor) -> tuple[torch.Tensor, int]:
        counts, zeros = acc[0].cpu(), acc[1]
        bins = self.hist.bins
        if len(counts) > bins + 3:  # keyed: [zero, below, bins…, above, non-finite]
            zeros = int(counts[0])
            counts = counts[1:].clone()
            counts[0] += zeros  # below: zeros included, as in the float64 path
        return counts, zeros


@cacheable
class WeibullResult(NamedTuple):
    """Weibull(k, λ) of |w|: shape k, scale λ, R² of the plot line, KS; NaN when not ``ok``."""

    k: float
    lam: float
    r2: float
    ks: float
    n_used: int  # bins in the fit window (probability plot) or values (mle)
    n: int  # values the fit saw
    zeros: int  # exact zeros (excluded)
    ok: bool


def _failed(n: int, zeros: int) -> WeibullResult:
    return WeibullResult(math.nan, math.nan, math.nan, math.nan, 0, n, zeros, False)


def fit_probability_plot(counts: torch.Tensor, edges: torch.Tensor, protocol: str) -> tuple[float, ...] | None:
    """The library's weighted probability-plot fit on a log10 histogram: (k, λ, R², KS, bins used)."""
    hist = counts.to(torch.float64)
    total = float(hist.sum())
    if total < 100:
        return None
    cum = torch.cumsum(hist, 0)
    cdf_upper = cum / total
    cdf_lower = (cum - hist) / total
    f_mid = (cdf_upper + cdf_lower) / 2.0
    bc_log10 = (edges[:-1] + edges[1:]) / 2.0
    bc_log = bc_log10 * math.log(10.0)
    pct = _TRIM_PCT[protocol]
    if pct >= 100:
        mask = (hist > 0) & (f_mid > 0) & (f_mid < 1)
    else:
        margin = (1 - pct / 100.0) / 2.0  # same float expression as the library
        mask = (f_mid >= margin) & (f_mid <= 1 - margin) & (hist > 0)
    used = int(mask.sum())
    if used < 5:
        return None
    x = bc_log[mask]
    y = torch.log(-torch.log(1 - f_mid[mask] + 1e-12))
    w = hist[mask]
    sw = w.sum()
    xm, ym = (w * x).sum() / sw, (w * y).sum() / sw
    sxx = (w * (x - xm) ** 2).sum()
    if not sxx > 0:
        return None
    k = float((w * (x - xm) * (y - ym)).sum() / sxx)
    b = float(ym) - k * float(xm)
    if not (math.isfinite(k) and k > 0):
        return None
    lam = math.exp(-b / k)
    if not (math.isfinite(lam) and lam > 0):
        return None
    y_pred = k * x + b
    ss_res = float((w * (y - y_pred) ** 2).sum())
    ss_tot = float((w * (y - ym) ** 2).sum())
    r2 = 1.0 - ss_res / max(ss_tot, 1e-12)
    f_fit = 1.0 - torch.exp(-((10.0**bc_log10 / lam) ** k))
    ks = float((cdf_upper - f_fit).abs().max())
    return k, lam, r2, ks, used


@dataclass(frozen=True)
class WeibullMLE(Statistic):
    """Weibull MLE of |w| (location 0): reduces to the exact Σ ln|w| and a fine histogram of
    ln|w| below ln max|w|, fits in ``finalize`` (see the module doc)."""

    bins: int = 32000  # bin width 0.001; ≤ 32768 entries keeps merges single-threaded and cheap
    span: float = 32.0

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def top(self, deps: Deps) -> float:
        return math.log(deps[Moments()].absmax)

    layout = "flat"

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[Kernel, ...]:
        m = deps[Moments()]
        if not (m.absmax > 0 and math.isfinite(m.absmax)):
            return ()
        return (_LnCounts(self, self.top(deps), bool(m.nan or m.inf)),)

    def reduce(self, block: torch.Tensor, deps: Deps, swept: BlockKernels | None = None):
        wanted = self.tile_kernels(block.dtype, deps)
        if not wanted:  # nothing to fit: only the zeros are counted
            return torch.zeros(self.bins + 1, dtype=torch.int64), 0.0, int((block == 0).sum())
        swept = swept or kernels.sweep(block, wanted)
        return swept[wanted[0]]

    def merge(self, a, b):
        return a[0] + b[0], a[1] + b[1], a[2] + b[2]

    def finalize(self, state, deps: Deps) -> WeibullResult:
        counts, sum_ln, zeros = state
        n = int(counts.sum())
        absmax = deps[Moments()].absmax
        if not (absmax > 0 and math.isfinite(absmax)):
            return _failed(n, zeros)
        fit = fit_mle_histogram(counts, sum_ln, self.top(deps), self.span)
        if fit is None:
            return _failed(n, zeros)
        k, lam, r2, ks, used = fit
        return WeibullResult(k, lam, r2, ks, used, n, zeros, True)


@dataclass(frozen=True)
class _LnCounts(Kernel):
    """:class:`WeibullMLE`'s state tile by tile: the fine ln|w| histogram, Σ ln|w| and the zeros."""

    mle: WeibullMLE
    top: float
    nonfinite: bool  # the tensor holds NaN/Inf: drop them (and zeros) before the logarithm

    def start(self, x: torch.Tensor) -> list[Any]:
        return [torch.zeros(self.mle.bins + 1, dtype=torch.int64, device=x.device), 0.0, 0]

    def tile(self, acc: list[Any], t: torch.Tensor, at: int, sweep: BlockKernels) -> list[Any]:
        bins, span, k, dev = self.mle.bins, self.mle.span, t.numel(), t.device
        a = kernels.abs_tile(t, "ln.a")
        zeros = int(torch.eq(a, 0, out=scratch("ln.zero", k, torch.bool, dev)).sum())
        if zeros or self.nonfinite:
            a = a[torch.isfinite(a) & (a > 0)]
        ln = torch.log(a, out=scratch("ln.f", a.numel(), a.dtype, dev))  # float32 or 64: unbiased rounding
        acc[1] += float(ln.sum(dtype=torch.float64))
        f = ln.sub_(self.top - span).mul_(bins / span).clamp_(-1.0, bins - 1.0).floor_()
        j = scratch("ln.j", f.numel(), torch.int64, dev).copy_(f)
        acc[0] += torch.bincount(j.add_(1), minlength=bins + 1)
        acc[2] += zeros
        return acc

    def finish(self, acc: list[Any], x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        return acc[0].cpu(), acc[1], acc[2]


def fit_mle_histogram(counts: torch.Tensor, sum_ln: float, top: float, span: float) -> tuple[float, ...] | None:
    """Weibull MLE (location 0) from an ln-histogram over [top − span, top] and the exact Σ ln x."""
    counts = counts.to(torch.float64)
    n = float(counts.sum())
    bins = counts.numel() - 1
    if n < 2:
        return None
    h = span / bins
    mid = top - span + (torch.arange(bins, dtype=torch.float64) + 0.5) * h
    c = counts[1:]
    keep = c > 0
    c, mid = c[keep], mid[keep]
    if c.numel() < 2:
        return None  # all values within one fine bin: k is unbounded
    mean_ln = sum_ln / n
    t = mid - top  # ≤ 0: no overflow in exp(k t)

    def score(k: float) -> tuple[float, float]:
        """g(k) = 1/k + mean ln x − E_k[ln x] and g'(k) = −1/k² − Var_k[ln x] (tilted by x^k)."""
        w = c * torch.exp(k * t)
        sw = w.sum()
        m1 = float((w * t).sum() / sw)
        m2 = float((w * t * t).sum() / sw)
        return 1.0 / k + (mean_ln - top) - m1, -1.0 / k**2 - max(m2 - m1 * m1, 0.0)

    # g decreases strictly in k: bracket the root, then Newton steps kept inside the bracket.
    lo_k, hi_k = 0.5, 2.0
    while score(lo_k)[0] < 0 and lo_k > 1e-6:
        lo_k /= 2
    while score(hi_k)[0] > 0 and hi_k < 1e6:
        hi_k *= 2
    if not (score(lo_k)[0] >= 0 >= score(hi_k)[0]):
        return None
    k = math.sqrt(lo_k * hi_k)
    for _ in range(100):
        g, dg = score(k)
        if g > 0:
            lo_k = k
        else:
            hi_k = k
        step = k - g / dg if dg < 0 else math.nan
        k_new = step if lo_k < step < hi_k else 0.5 * (lo_k + hi_k)
        if abs(k_new - k) <= 1e-14 * k or hi_k - lo_k <= 1e-14 * hi_k:
            k = k_new
            break
        k = k_new
    s0 = float((c * torch.exp(k * t)).sum())
    lam = math.exp(top + math.log(s0 / n) / k)
    # KS at the fine bin edges (upper edge of each bin, including the underflow bin's)
    edges = top - span + torch.arange(bins + 1, dtype=torch.float64) * h
    f_emp = torch.cumsum(counts, 0) / n
    f_fit = 1.0 - torch.exp(-torch.exp(k * (edges - math.log(lam))))
    ks = float((f_emp - f_fit).abs().max())
    return k, lam, math.nan, ks, int(n)


@dataclass(frozen=True)
class WeibullFit(Derived):
    """Weibull(k, λ) of |w| by ``protocol``: mid_80 (paper default), mid_90, full_range, mle."""

    protocol: Protocol = "mid_80"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    def requires(self) -> tuple[Statistic, ...]:
        return (WeibullMLE(),) if self.protocol == "mle" else (LogAbsHistogram(),)

    def finalize(self, state: None, deps: Deps) -> WeibullResult:
        if self.protocol == "mle":
            return deps[WeibullMLE()]
        h = deps[LogAbsHistogram()]
        n, zeros = h.n, h.zeros
        fit = fit_probability_plot(h.counts, LogAbsHistogram().edges(), self.protocol)
        if fit is None:
            return _failed(n, zeros)
        k, lam, r2, ks, used = fit
        return WeibullResult(k, lam, r2, ks, used, n, zeros, True)


# ---------------------------------------------------------------- classes (paper D)

TRANSMISSION = (1.18, 1.21)
TRANSMISSION_R2 = 0.95
MILD_SELECTION_MIN = 0.95
CLASSES: tuple[str, ...] = ("transmission", "mild_selection", "strong_selection", "other")


def weibull_class(k: float, r2: float) -> str:
    """Paper D's regime of a fitted shape k.

    transmission: 1.18 ≤ k ≤ 1.21 and R² ≥ 0.95 (R² NaN, as for ``mle``, is not checked);
    mild_selection: 0.95 ≤ k < 1.18; strong_selection: k < 0.95; other: everything else
    (k > 1.21, k in the transmission band with R² < 0.95, or a failed fit). The library's
    ``classify_k`` differs on the last group: it calls all of it mild_selection.
    """
    if math.isnan(k):
        return "other"
    if TRANSMISSION[0] <= k <= TRANSMISSION[1]:
        return "transmission" if math.isnan(r2) or r2 >= TRANSMISSION_R2 else "other"
    if MILD_SELECTION_MIN <= k < TRANSMISSION[0]:
        return "mild_selection"
    if k < MILD_SELECTION_MIN:
        return "strong_selection"
    return "other"
