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

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from .base import Deps, Derived, Statistic, cacheable
from .moments import Moments

Protocol = Literal["mid_80", "mid_90", "full_range", "mle"]
PROTOCOLS: tuple[str, ...] = ("mid_80", "mid_90", "full_range", "mle")
_TRIM_PCT = {"mid_80": 80, "mid_90": 90, "full_range": 100}
#: Elements :class:`LogAbsHistogram` bins at once (its temporaries stay a few MB).
TILE = 1 << 18


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

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[torch.Tensor, int]:
        """Counts of the block, tile by tile: about ten temporaries of a tile's size, not of the
        block's (a 4M-element slice would need ~150 MB per thread); counts add exactly."""
        flat = block.reshape(-1)
        if flat.numel() <= TILE:
            return self._reduce_tile(flat)
        counts, zeros = self._reduce_tile(flat[:TILE])
        for i in range(TILE, flat.numel(), TILE):
            c, z = self._reduce_tile(flat[i : i + TILE])
            counts += c
            zeros += z
        return counts, zeros

    def _reduce_tile(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        a = x.abs()
        bins = self.bins
        # Bin from the rounded log10 (its error is < 1e−3 bin), then decide exactly, against
        # the bounds, the few values lying within 1 % of a bin edge. j = −1 below, bins above.
        f = (torch.log10(a) - self.lo) * (bins / (self.hi - self.lo))
        f = f.nan_to_num_(nan=-1.0).clamp_(-1.0, float(bins))
        j = f.floor()
        near = ((f - j) - 0.5).abs_() > 0.49
        j = j.to(torch.int64)
        k = near.nonzero().squeeze(1)
        if k.numel():
            e = self.bounds(a.dtype, a.device)
            ak, jk = a[k], j[k]
            jk = jk - (ak < e[jk + 1]).to(torch.int64) + (ak >= e[jk + 2]).to(torch.int64)
            jk = torch.where(ak == e[bins + 1], bins - 1, jk)  # np.histogram: the last bin is closed
            j[k] = jk
        total = a.sum()
        if not torch.isfinite(total):  # NaN/Inf present (or a sum overflowing): count them apart
            j = torch.where(torch.isfinite(a), j, bins + 1)
        counts = torch.bincount(j.add_(1), minlength=bins + 3).cpu()
        zeros = int((a == 0).sum())
        return counts, zeros

    def merge(self, a: tuple[torch.Tensor, int], b: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, state: tuple[torch.Tensor, int], deps: Deps) -> LogAbsHistogramResult:
        full, zeros = state
        counts = full[1 : self.bins + 1].clone()
        below = int(full[0]) - zeros
        above, nonfinite = int(full[self.bins + 1]), int(full[self.bins + 2])
        n = int(counts.sum())
        return LogAbsHistogramResult(counts, n, zeros, below, above, nonfinite, n + zeros + below + above)


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

    def reduce(self, block: torch.Tensor, deps: Deps):
        m = deps[Moments()]
        a = block.reshape(-1).abs()
        zeros = int((a == 0).sum())
        if not (m.absmax > 0 and math.isfinite(m.absmax)):
            return torch.zeros(self.bins + 1, dtype=torch.int64), 0.0, zeros
        if zeros or m.nan or m.inf:
            a = a[torch.isfinite(a) & (a > 0)]
        ln = torch.log(a)  # the block's dtype: its rounding is unbiased, ~1e−8 relative on the mean
        lo = self.top(deps) - self.span
        f = ((ln - lo) * (self.bins / self.span)).clamp_(-1.0, self.bins - 1.0)
        counts = torch.bincount(f.floor_().to(torch.int64).add_(1), minlength=self.bins + 1).cpu()
        return counts, float(ln.sum(dtype=torch.float64)), zeros

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
