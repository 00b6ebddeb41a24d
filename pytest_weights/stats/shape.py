"""Shape of a weight distribution (paper A) and Sarle's bimodality coefficient (paper C).

:class:`Shape` standardises with the tensor's own mean and population std (from
:class:`~.moments.Moments`), z = (w − mean)/std, and computes in the sweep after the
moments' (:class:`ShapeMasses`: the masses, outlier counts and |z| histogram, in the fused
tiles of :mod:`.kernels`, sharing |z| with :class:`OutlierFraction`; :class:`RowStructure`:
the structure terms, on groups of whole rows of about a tile, in reused buffers):

* exact masses: |z| < 0.1 (``near_zero``; a Gaussian has 0.0797), |z| < ``eps``
  (``near_eps``), 0.1 ≤ |z| < 0.2 (``shell``, the next ring, 0.0788 for a Gaussian), and the
  outlier fractions |z| > 3, 4, 6 (Gaussian: 2.7e−3, 6.3e−5, 2.0e−9);
* quantiles of |z| (Q50, Q99, P99.9 and their ratios) from a histogram on 16384
  log-spaced bins over |z| ∈ [1e−4, 1e4] (float32 |z| placed by its bit pattern against the
  exact bin edges, :func:`_z_tables`; float64 by its rounded logarithm). A quantile is the empirical one
  (``numpy.quantile(..., method="inverted_cdf")``: the smallest value whose empirical CDF
  reaches q), interpolated geometrically inside its bin; it lies in the right bin, so its
  relative error is at most one bin ratio − 1 = 1.13e−3 (a ratio of two: 2.3e−3). A
  quantile below 1e−4 reads 0 (so a ratio over it is inf: a spike at the mean), above
  1e4 reads 1e4;
* i.i.d. structure on the 2-D view (rows × the rest), from d = w − mean:
  ``lag1_corr`` = Σ d[i,j]·d[i,j+1] / (pairs · std²), the lag-1 autocorrelation along
  rows; ``row_mean_var_ratio`` = var(row means)·n_cols/std² and ``col_mean_var_ratio`` =
  var(column means)·n_rows/std², variances with ddof=1, so both are ≈ 1 for i.i.d. noise
  (and > 1 when rows or columns have their own offsets). Rows are whole in every block, so
  row terms add; column sums add across blocks. NaN for a 1-D tensor or a single row/column.

Non-finite values are left out of the masses and quantiles and count as d = 0 in the
structure terms. A tensor with std 0 (or no finite value) gives NaN everywhere.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from . import kernels
from .base import Deps, Derived, Statistic, cacheable
from .kernels import BlockKernels, Kernel, scratch
from .moments import Moments, MomentsResult

#: Shape of a Gaussian, for reference: P(|z| < 0.1) and P(0.1 ≤ |z| < 0.2).
GAUSSIAN_NEAR_ZERO = 0.0796557
GAUSSIAN_SHELL = 0.0788637


@cacheable
class ShapeResult(NamedTuple):
    n: int
    near_zero: float  # fraction with |z| < 0.1
    near_eps: float  # fraction with |z| < eps
    shell: float  # fraction with 0.1 ≤ |z| < 0.2
    outlier_3: float  # fraction with |z| > 3
    outlier_4: float
    outlier_6: float
    q50: float  # quantiles of |z| = |w − mean|/std
    q99: float
    q999: float
    q99_q50: float
    p999_p50: float
    mean_over_std: float  # |mean|/std
    lag1_corr: float
    row_mean_var_ratio: float
    col_mean_var_ratio: float

    def outlier_fraction(self, m: float) -> float:
        return {3.0: self.outlier_3, 4.0: self.outlier_4, 6.0: self.outlier_6}[float(m)]


class _Masses(NamedTuple):
    counts: torch.Tensor  # int64 [7]: near_zero, near_eps, shell, >3, >4, >6, n
    hist: torch.Tensor  # int64 [bins + 2]: underflow, bins…, overflow


class _Structure(NamedTuple):
    lag_sum: float
    pairs: int
    row_sq: float  # Σ over rows of (row mean of d)²  (d = w − mean)
    row_sum: float  # Σ over rows of row mean of d
    rows: int
    col_sums: torch.Tensor  # float64 [cols]: Σ over rows of d


OUTLIER_SIGMAS = (3.0, 4.0, 6.0)


def _abs_z(t: torch.Tensor, sweep: BlockKernels, mean: float, std: float, nonfinite: bool) -> torch.Tensor:
    """|z| = |t − mean|/std of the current tile (finite values only), computed once per tile for
    every kernel of the sweep (float32; float64 for float64 data)."""

    def compute() -> torch.Tensor:
        d = scratch("shape.az", t.numel(), kernels.work_dtype(t.dtype), t.device)
        d = torch.sub(t, mean, out=d) if t.dtype == d.dtype else d.copy_(t).sub_(mean)
        az = d.div_(std).abs_()
        return az[torch.isfinite(az)] if nonfinite else az

    return sweep.shared(("abs_z", mean, std, nonfinite), compute)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """A float32 tile as it is, a narrower one widened exactly into scratch."""
    return t if t.dtype == torch.float32 else scratch("shape.w", t.numel(), torch.float32, t.device).copy_(t)


class _Scratch(threading.local):
    """Per-thread int64[7] counters for the compiled |z| kernels."""

    def __init__(self) -> None:
        self.buf = np.zeros(7, np.int64)

    def counts(self) -> np.ndarray:
        self.buf[:] = 0
        return self.buf

    def taken(self) -> list[int]:
        return self.buf.tolist()


_SCR = _Scratch()
_NO_AZ = np.zeros(0, np.float32)


@functools.lru_cache(maxsize=8)
def _z_tables(masses: ShapeMasses) -> kernels.EdgeTables:
    """Slots of float32 |z| by bit pattern: 0 below zmin, 1 + bin, bins + 1 from zmax on; bin j
    holds exp(lo + j·w) ≤ |z| < exp(lo + (j + 1)·w) exactly (bounds rounded up to float32)."""
    lo, hi = masses.log_range()
    b64 = torch.exp(lo + torch.arange(masses.bins + 1, dtype=torch.float64) * ((hi - lo) / masses.bins))
    b32 = b64.to(torch.float32)
    b32 = torch.where(b32.to(torch.float64) < b64, torch.nextafter(b32, torch.tensor(math.inf)), b32)
    bits = b32.view(torch.int32).to(torch.int64)
    top = masses.bins + 1
    return kernels.edge_tables(bits, 0, (0, kernels.INT32_MAX), (top, kernels.INT32_MAX))


@dataclass(frozen=True)
class _ZCounts(Kernel):
    """:class:`ShapeMasses` tile by tile: the masses and outlier counts, and the |z| histogram."""

    masses: ShapeMasses
    mean: float
    std: float
    nonfinite: bool

    def start(self, x: torch.Tensor) -> _Masses:
        bins = self.masses.bins
        return _Masses(torch.zeros(7, dtype=torch.int64, device=x.device), torch.zeros(bins + 2, dtype=torch.int64))

    def tile(self, acc: _Masses, t: torch.Tensor, at: int, sweep: BlockKernels) -> _Masses:
        eps, bins = self.masses.eps, self.masses.bins
        if kernels.work_dtype(t.dtype) == torch.float32 and (fast := kernels.compiled(t)) is not None:
            x, mean, std, tables = _f32(t).numpy(), np.float32(self.mean), np.float32(self.std), _z_tables(self.masses)
            lt, gt = np.array([0.1, eps, 0.2], np.float32), np.array(OUTLIER_SIGMAS, np.float32)
            az = scratch("shape.az32", t.numel(), torch.float32, t.device).numpy()
            fast.z_masses(x, mean, std, self.nonfinite, lt, gt, _SCR.counts(), az)
            code, edge = tables.code.numpy(), tables.edge.numpy()
            fast.z_hist(az, self.nonfinite, tables.first, code, edge, tables.shift, acc.hist.numpy())
            c = _SCR.taken()
            acc.counts[:6] += torch.tensor([c[0], c[1], c[2] - c[0], c[3], c[4], c[5]])
            acc.counts[6] += int(c[6])
            kernels.compiled_calls["z_counts"] += 1
            return acc
        az = _abs_z(t, sweep, self.mean, self.std, self.nonfinite)
        k, dev = az.numel(), az.device
        flag = scratch("shape.flag", k, az.dtype, dev)  # a float 0/1 mask: compares and sums fastest
        below = [kernels.count(torch.lt(az, x, out=flag)) for x in (0.1, eps, 0.2)]
        above = [kernels.count(torch.gt(az, x, out=flag)) for x in OUTLIER_SIGMAS]
        shell = below[2] - below[0]  # 0.1 ≤ |z| < 0.2 (|z| is never NaN here)
        acc.counts[:6] += torch.stack([below[0], below[1], shell, *above]).to(torch.int64)
        acc.counts[6] += k
        if az.dtype == torch.float32:  # the slot of each |z| by its bit pattern: exact bin edges
            slot = kernels.table_slots(az.view(torch.int32), _z_tables(self.masses), "shape")
            acc.hist.add_(torch.bincount(slot, minlength=bins + 2).cpu())
            return acc
        lo, hi = self.masses.log_range()
        scale = bins / (hi - lo)
        # slot = 1 + bin: ln|z| − (lo − 1 bin), scaled, clamped to [0, bins + 1] and truncated
        # (= floored: it is ≥ 0). |z| = 0 → −inf → slot 0 (underflow)
        f = torch.log(az, out=flag).sub_(lo - 1.0 / scale).mul_(scale).clamp_(0.0, bins + 1.0)
        j = scratch("shape.j", k, torch.int32, dev).copy_(f)
        acc.hist.add_(torch.bincount(j, minlength=bins + 2).cpu())
        return acc

    def finish(self, acc: _Masses, x: torch.Tensor) -> _Masses:
        return _Masses(acc.counts.cpu(), acc.hist)


@dataclass(frozen=True)
class ShapeMasses(Statistic):
    """The elementwise part of :class:`Shape`: masses, outlier counts and the |z| histogram."""

    eps: float = 0.01
    bins: int = 16384
    zmin: float = 1e-4
    zmax: float = 1e4

    layout = "flat"

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def log_range(self) -> tuple[float, float]:
        return math.log(self.zmin), math.log(self.zmax)

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[Kernel, ...]:
        m = deps[Moments()]
        return (_ZCounts(self, m.mean, m.std, bool(m.nan or m.inf)),) if m.std > 0 else ()

    def reduce(self, block: torch.Tensor, deps: Deps, swept: BlockKernels | None = None) -> _Masses | None:
        wanted = self.tile_kernels(block.dtype, deps)
        if not wanted:
            return None
        return (swept or kernels.sweep(block, wanted))[wanted[0]]

    def merge(self, a: _Masses | None, b: _Masses | None) -> _Masses | None:
        if a is None or b is None:
            return a if b is None else b
        return _Masses(a.counts + b.counts, a.hist + b.hist)

    def finalize(self, state: _Masses | None, deps: Deps) -> _Masses | None:
        return state


@dataclass(frozen=True)
class RowStructure(Statistic):
    """The structural part of :class:`Shape`, on whole rows of d = w − mean: the lag-1 sum
    along rows, the row means and the column sums (float64), in row groups of about a tile."""

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def reduce(self, block: torch.Tensor, deps: Deps) -> _Structure | None:
        m = deps[Moments()]
        if not m.std > 0:
            return None
        rows, cols = block.shape
        clean = bool(m.nan or m.inf)
        sums = [0.0, 0.0, 0.0]  # lag, Σ row mean², Σ row mean
        col_sums = torch.zeros(cols, dtype=torch.float64, device=block.device)
        tile = kernels.TILE if block.device.type == "cpu" else max(block.numel(), 1)
        if cols <= tile:
            step = max(1, tile // max(cols, 1))
            for r in range(0, rows, step):
                self._rows(block[r : r + step], m.mean, clean, sums, col_sums)
        else:  # rows longer than a tile: tile by tile along each row
            for r in range(rows):
                self._long_row(block[r], m.mean, clean, tile, sums, col_sums)
        return _Structure(sums[0], rows * (cols - 1), sums[1], sums[2], rows, col_sums.cpu())

    @staticmethod
    def _centred(part: torch.Tensor, mean: float, clean: bool) -> torch.Tensor:
        """d = part − mean in a reused buffer (non-finite values count as d = 0)."""
        d = scratch("rows.d", part.numel(), part.dtype, part.device).view(part.shape)
        torch.sub(part, mean, out=d)
        return d.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0) if clean else d

    def _rows(self, part: torch.Tensor, mean: float, clean: bool, sums: list[float], col_sums: torch.Tensor) -> None:
        """Whole rows at once (a group of about a tile)."""
        d = self._centred(part, mean, clean)
        cols = d.shape[1]
        if cols > 1:
            flat = d.reshape(-1)
            prod = torch.mul(flat[:-1], flat[1:], out=scratch("rows.p", flat.numel() - 1, d.dtype, d.device))
            prod[cols - 1 :: cols].zero_()  # pairs across a row boundary are not pairs
            sums[0] += float(prod.sum())  # cascade sum within a group (~1e−8 relative), float64 across
        row_means = d.sum(dim=1).to(torch.float64) / cols
        sums[1] += float((row_means * row_means).sum())
        sums[2] += float(row_means.sum())
        col_sums += d.sum(dim=0)

    def _long_row(
        self, row: torch.Tensor, mean: float, clean: bool, tile: int, sums: list[float], col_sums: torch.Tensor
    ) -> None:
        """One row in tiles; the pair across two tiles is added on its own."""
        total, last = 0.0, None
        for c in range(0, row.numel(), tile):
            d = self._centred(row[c : c + tile], mean, clean)
            prod = torch.mul(d[:-1], d[1:], out=scratch("rows.p", d.numel() - 1, d.dtype, d.device))
            sums[0] += float(prod.sum()) + (last * float(d[0]) if last is not None else 0.0)
            last = float(d[-1])
            total += float(d.sum())
            col_sums[c : c + d.numel()] += d
        row_mean = total / row.numel()
        sums[1] += row_mean * row_mean
        sums[2] += row_mean

    def merge(self, a: _Structure | None, b: _Structure | None) -> _Structure | None:
        if a is None or b is None:
            return a if b is None else b
        return _Structure(
            a.lag_sum + b.lag_sum, a.pairs + b.pairs, a.row_sq + b.row_sq, a.row_sum + b.row_sum,
            a.rows + b.rows, a.col_sums + b.col_sums,
        )  # fmt: skip

    def finalize(self, state: _Structure | None, deps: Deps) -> _Structure | None:
        return state


@dataclass(frozen=True)
class Shape(Derived):
    """Masses near zero, outlier fractions, |z| quantile ratios, i.i.d. structure (see module)."""

    eps: float = 0.01
    bins: int = 16384  # small enough for single-threaded, allocation-cheap merges
    zmin: float = 1e-4
    zmax: float = 1e4

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(), ShapeMasses(self.eps, self.bins, self.zmin, self.zmax), RowStructure())

    def _log_range(self) -> tuple[float, float]:
        return math.log(self.zmin), math.log(self.zmax)

    def quantile(self, hist: torch.Tensor, n: int, q: float) -> float:
        """Empirical q-quantile of |z| (inverted CDF), interpolated geometrically in its bin."""
        rank = max(1, math.ceil(q * n - 1e-9))  # the rank-th smallest value (1-based)
        cum = torch.cumsum(hist, 0)
        b = int(torch.searchsorted(cum, torch.tensor([rank]), right=False)[0])
        if b == 0:
            return 0.0
        if b > self.bins:
            return self.zmax
        before = int(cum[b - 1])
        inside = (rank - before - 0.5) / int(hist[b])
        lo, hi = self._log_range()
        width = (hi - lo) / self.bins
        return math.exp(lo + (b - 1 + inside) * width)

    def finalize(self, state: None, deps: Deps) -> ShapeResult:
        m = deps[Moments()]
        masses = deps[ShapeMasses(self.eps, self.bins, self.zmin, self.zmax)]
        structure = deps[RowStructure()]
        if masses is None or structure is None or m.n == 0:
            return ShapeResult(m.n, *([math.nan] * 15))
        c = masses.counts.tolist()
        n = c[6]
        frac = [x / n for x in c[:6]]
        q50, q99, q999 = (self.quantile(masses.hist, n, q) for q in (0.5, 0.99, 0.999))
        var = m.std**2
        lag1 = structure.lag_sum / (structure.pairs * var) if structure.pairs else math.nan
        rows, cols = structure.rows, structure.col_sums.numel()
        if rows > 1 and cols > 1:
            rm = structure.row_sum / rows
            row_var = (structure.row_sq - rows * rm * rm) / (rows - 1)
            col_means = structure.col_sums / rows
            col_var = float(col_means.var(correction=1))
            row_ratio, col_ratio = row_var * cols / var, col_var * rows / var
        else:
            row_ratio = col_ratio = math.nan
        return ShapeResult(
            n, *frac, q50, q99, q999, _ratio(q99, q50), _ratio(q999, q50), abs(m.mean) / m.std,
            lag1, row_ratio, col_ratio,
        )  # fmt: skip


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else math.nan


# ---------------------------------------------------------------- shape classes (paper A)

SHAPES: tuple[str, ...] = ("gaussian", "sharp", "inverted_t", "linear", "degenerate")
#: Operational thresholds (ours; the paper names the patterns without numbers).
SPIKE_MASS = 2 * GAUSSIAN_NEAR_ZERO  # mass within ±0.1σ above twice a Gaussian's…
SPIKE_CONCENTRATION = 2.0  # …and above twice the next ring's (0.1σ–0.2σ): a narrow spike
GAUSSIAN_Q50 = 0.6744898  # median of |z| for a Gaussian
SHARP_Q50 = 0.52  # median |z| below this: a peaked body (t(4) 0.524, Laplace 0.490, t(3) 0.442)
LINEAR_KURTOSIS = -0.8  # excess kurtosis below this: flat (uniform −1.2; triangular −0.6 stays gaussian)


def classify_shape(m: MomentsResult, s: ShapeResult) -> str:
    """``degenerate`` / ``inverted_t`` / ``sharp`` / ``linear`` / ``gaussian`` (in this order).

    * degenerate: std 0 or no finite value.
    * inverted_t: a narrow spike on a wide base — mass within ±0.1σ > 2 × a Gaussian's
      (0.159) *and* > 2 × the mass in the next ring 0.1σ–0.2σ (Gaussian ratio 1.01,
      Laplace 1.15: smooth peaks fail this; a pile of near-zero values on a broad body
      passes it).
    * sharp: a peaked body — the median of |w − mean| is below 0.52σ (Gaussian 0.674σ,
      Student-t(4) 0.524σ, Laplace 0.490σ), or mass within ±0.1σ > 2 × a Gaussian's
      without the narrow spike. Deliberately *not* excess kurtosis: on real weights it is
      driven by a few outliers (all-MiniLM-L6-v2's MLP output matrices have excess
      kurtosis 13–1582 from ~1e−4 of values beyond 6σ, on a body whose median |z| is
      0.56–0.61), which the ``outliers`` check is for.
    * linear: excess kurtosis < −0.8 (flat-topped: uniform −1.2, a Gaussian truncated at
      ±1σ −1.06; a triangular density, −0.6, stays gaussian). Outliers raise kurtosis, so
      this cannot be faked by them.
    * gaussian: everything else.
    """
    if not (m.std > 0) or math.isnan(s.near_zero):
        return "degenerate"
    if s.near_zero > SPIKE_MASS and s.near_zero > SPIKE_CONCENTRATION * s.shell:
        return "inverted_t"
    if s.q50 < SHARP_Q50 or s.near_zero > SPIKE_MASS:
        return "sharp"
    if m.kurtosis < LINEAR_KURTOSIS:
        return "linear"
    return "gaussian"


# ---------------------------------------------------------------- bimodality (paper C)

BC_UNIFORM = 5 / 9  # Sarle's bimodality coefficient of a uniform distribution: the threshold


def bimodality_coefficient(m: MomentsResult) -> float:
    """Sarle's BC = (G1² + 1) / (G2 + 3(n−1)²/((n−2)(n−3))), NaN for n < 4 or std 0.

    G1 and G2 are the bias-corrected sample skewness and excess kurtosis (SAS's convention,
    Pfister et al. 2013, for which the denominator's term is written): from the moment
    ratios g1 = m3/m2^1.5 and g2 = m4/m2² − 3 of :class:`Moments`,
    G1 = g1·√(n(n−1))/(n−2) and G2 = ((n+1)·g2 + 6)·(n−1)/((n−2)(n−3)). The denominator
    then equals (n²−1)/((n−2)(n−3)) · m4/m2². BC of a Gaussian → 1/3, of a uniform → 5/9,
    of two well-separated equal spikes → 1; above 5/9 suggests bimodality.
    """
    n = m.n
    if n < 4 or not m.std > 0 or math.isnan(m.kurtosis):
        return math.nan
    g1, g2 = m.skewness, m.kurtosis
    big1 = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    big2 = ((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (big1 * big1 + 1) / (big2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


# ---------------------------------------------------------------- any outlier threshold


@dataclass(frozen=True)
class _ZAbove(Kernel):
    """Count of finite values with |z| > m (the same |z| tiles as :class:`ShapeMasses`)."""

    mean: float
    std: float
    nonfinite: bool
    m: float

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=torch.int64, device=x.device)

    def tile(self, acc: torch.Tensor, t: torch.Tensor, at: int, sweep: BlockKernels) -> torch.Tensor:
        if kernels.work_dtype(t.dtype) == torch.float32 and (fast := kernels.compiled(t)) is not None:
            x, mean, std = _f32(t).numpy(), np.float32(self.mean), np.float32(self.std)
            none, gt = np.full(3, -np.inf, np.float32), np.full(3, self.m, np.float32)
            fast.z_masses(x, mean, std, self.nonfinite, none, gt, _SCR.counts(), _NO_AZ)
            kernels.compiled_calls["z_above"] += 1
            return acc.add_(_SCR.taken()[3])
        az = _abs_z(t, sweep, self.mean, self.std, self.nonfinite)
        flag = torch.gt(az, self.m, out=scratch("shape.above", az.numel(), az.dtype, az.device))
        return acc.add_(kernels.count(flag).to(torch.int64))

    def finish(self, acc: torch.Tensor, x: torch.Tensor) -> int:
        return int(acc)


@dataclass(frozen=True)
class OutlierFraction(Statistic):
    """Exact fraction of finite values with |w − mean| > m·std (NaN when std is 0)."""

    m: float = 3.0

    layout = "flat"

    def requires(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[Kernel, ...]:
        mo = deps[Moments()]
        return (_ZAbove(mo.mean, mo.std, bool(mo.nan or mo.inf), float(self.m)),) if mo.std > 0 else ()

    def reduce(self, block: torch.Tensor, deps: Deps, swept: BlockKernels | None = None) -> int:
        wanted = self.tile_kernels(block.dtype, deps)
        if not wanted:
            return 0
        return (swept or kernels.sweep(block, wanted))[wanted[0]]  # the same arithmetic as :class:`Shape`

    def merge(self, a: int, b: int) -> int:
        return a + b

    def finalize(self, state: int, deps: Deps) -> float:
        mo = deps[Moments()]
        if not mo.std > 0:
            return math.nan
        return state / mo.n  # finite values only
