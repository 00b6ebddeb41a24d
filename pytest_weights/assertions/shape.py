"""``shape``, ``outliers``, ``iid``: the shape of the weight distribution (paper A)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..stats import Moments, Statistic
from ..stats.shape import OUTLIER_SIGMAS, SHAPES, OutlierFraction, Shape, ShapeResult, classify_shape
from .base import Assertion, Deviation, Outcome, TensorView, fmt, per_tensor, register
from .proposal import Proposal, finite, upper

ShapeClass = Literal["gaussian", "sharp", "inverted_t", "linear", "degenerate"]


@register
@dataclass(frozen=True)
class ShapeKind(Assertion):
    """Each tensor's distribution shape (paper A) is one of ``allowed``.

    Classes (operational definitions; see :func:`pytest_weights.stats.shape.classify_shape`):
    ``inverted_t`` — a narrow spike within ±0.1σ (mass > 2 × a Gaussian's 0.0797 and > 2 ×
    the next ring's) on a wide base; ``sharp`` — a peaked body (median |w − mean| < 0.52σ;
    Gaussian 0.674σ); ``linear`` — flat-topped (excess kurtosis < −0.8); ``degenerate`` —
    std 0; else ``gaussian``. A few large outliers do not make a Gaussian body ``sharp``:
    use ``outliers`` for them.
    """

    kind = "shape"
    allowed: tuple[ShapeClass, ...] = ("gaussian",)

    def validate(self) -> str | None:
        if not self.allowed:
            return f"allowed must list at least one of: {', '.join(SHAPES)}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(), Shape())

    def describe(self) -> str:
        return "distribution shape in " + "/".join(self.allowed)

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        rows, observed = [], {}
        expected = "shape in " + "/".join(self.allowed)
        for t in tensors:
            m, s = t[Moments()], t[Shape()]
            cls = classify_shape(m, s)
            observed[t.name] = cls
            if cls not in self.allowed:
                text = (
                    f"{cls} (excess kurtosis {fmt(m.kurtosis)}, median |z| {fmt(s.q50)}, "
                    f"mass |z|<0.1 {fmt(s.near_zero)}, ring 0.1–0.2 {fmt(s.shell)})"
                )
                rows.append(Deviation(t.name, text, expected, "", _shape_score(m.kurtosis, s)))
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        summary = f"{len(rows)} of {n} tensors deviate: expected {expected}" if rows else f"all {n} tensors: {expected}"
        return Outcome(not rows, summary, tuple(rows), n, observed=observed)


def _shape_score(kurtosis: float, s: ShapeResult) -> float:
    if math.isnan(s.q50):
        return math.inf
    return abs(math.log(max(s.q50, 1e-30) / 0.6744898)) + abs(s.near_zero - 0.0797) + abs(kurtosis) / 100


@register
@dataclass(frozen=True)
class Outliers(Assertion):
    """The fraction of values with |w − mean| > ``m``·std is ≤ ``max_fraction``.

    Exact counts. For a Gaussian the fraction is 2.7e−3 beyond 3σ, 6.3e−5 beyond 4σ,
    2.0e−9 beyond 6σ; paper A's "truncated Gaussian plus a few outliers" means a small
    but non-zero fraction beyond 6σ in trained weights.
    """

    kind = "outliers"
    baseline = ("max_fraction",)
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"max_fraction": 1.0}
    m: float = 6.0
    max_fraction: float = 1e-3

    def validate(self) -> str | None:
        if not self.m > 0:
            return f"m must be > 0, got {self.m}"
        if not 0 <= self.max_fraction <= 1:
            return f"max_fraction must be in [0, 1], got {self.max_fraction}"
        return None

    def _stat(self) -> Statistic:
        return Shape() if float(self.m) in OUTLIER_SIGMAS else OutlierFraction(float(self.m))

    def _read(self, t: TensorView) -> float:
        v = t[self._stat()]
        return v.outlier_fraction(self.m) if isinstance(v, ShapeResult) else v

    def statistics(self) -> tuple[Statistic, ...]:
        return (self._stat(),)

    def describe(self) -> str:
        return f"fraction beyond {fmt(self.m)}σ ≤ {fmt(self.max_fraction)}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        return per_tensor(
            tensors,
            self._read,
            lambda v: math.inf if math.isnan(v) else (v - self.max_fraction if v > self.max_fraction else None),
            f"fraction |w − mean| > {fmt(self.m)}σ ≤ {fmt(self.max_fraction)}",
            statistic=f"fraction beyond {fmt(self.m)}σ",
            bounds=(None, self.max_fraction),
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        vals = finite(self.evaluate(tensors).observed.values())
        if not vals:
            return {}, ["no finite outlier fraction"]
        top = max(vals)
        return {"max_fraction": upper(top * (1 + margin), top, f"observed max {fmt(top)}", 1e-5)}, []


@register
@dataclass(frozen=True)
class IID(Assertion):
    """The matrix looks like i.i.d. noise (paper A): no row/column structure, no lag-1 correlation.

    ``max_lag1``: |lag-1 autocorrelation along rows| ≤ this. ``max_ratio_deviation``:
    |var(row means)·n_cols/σ² − 1| and |var(column means)·n_rows/σ² − 1| ≤ this (both ≈ 1
    for i.i.d. noise, with sampling spread ≈ √(2/n_rows) resp. √(2/n_cols)). Either may
    be null to skip it. Ratios are not judged on tensors with a single row or column
    (1-D tensors): those are noted.
    """

    kind = "iid"
    baseline = ("max_lag1", "max_ratio_deviation")
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"max_lag1": 1.0}  # |correlation| ≤ 1
    max_lag1: float | None = 0.05
    max_ratio_deviation: float | None = 0.5

    def validate(self) -> str | None:
        if self.max_lag1 is None and self.max_ratio_deviation is None:
            return "iid needs max_lag1, max_ratio_deviation or both"
        for name in ("max_lag1", "max_ratio_deviation"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                return f"{name} must be ≥ 0, got {v}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (Shape(),)

    def _expected(self) -> str:
        parts = []
        if self.max_lag1 is not None:
            parts.append(f"|lag-1 corr| ≤ {fmt(self.max_lag1)}")
        if self.max_ratio_deviation is not None:
            parts.append(f"row/col mean variance ratios within 1 ± {fmt(self.max_ratio_deviation)}")
        return ", ".join(parts)

    def describe(self) -> str:
        return "i.i.d.-like: " + self._expected()

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        rows, observed, flat = [], {}, []
        expected = self._expected()
        for t in tensors:
            s: ShapeResult = t[Shape()]
            observed[t.name] = {
                "lag1_corr": s.lag1_corr,
                "row_mean_var_ratio": s.row_mean_var_ratio,
                "col_mean_var_ratio": s.col_mean_var_ratio,
            }
            bad = []
            if self.max_lag1 is not None and not abs(s.lag1_corr) <= self.max_lag1:
                bad.append(math.inf if math.isnan(s.lag1_corr) else abs(s.lag1_corr) - self.max_lag1)
            if self.max_ratio_deviation is not None:
                if math.isnan(s.row_mean_var_ratio) and s.n > 0 and not math.isnan(s.near_zero):
                    flat.append(t.name)
                else:
                    for r in (s.row_mean_var_ratio, s.col_mean_var_ratio):
                        if not abs(r - 1) <= self.max_ratio_deviation:
                            bad.append(math.inf if math.isnan(r) else abs(r - 1) - self.max_ratio_deviation)
            if bad:
                text = (
                    f"lag1={fmt(s.lag1_corr)} row ratio={fmt(s.row_mean_var_ratio)} "
                    f"col ratio={fmt(s.col_mean_var_ratio)}"
                )
                rows.append(Deviation(t.name, text, expected, "", max(bad)))
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        notes = (f"variance ratios not judged on {len(flat)} tensor(s) with one row or column",) if flat else ()
        summary = f"{len(rows)} of {n} tensors deviate: expected {expected}" if rows else f"all {n} tensors: {expected}"
        return Outcome(not rows, summary, tuple(rows), n, notes, observed)

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        observed = self.evaluate(tensors).observed
        out = {}
        lag = finite(abs(v["lag1_corr"]) for v in observed.values())
        if lag:
            top = max(lag)
            out["max_lag1"] = upper(top * (1 + margin), top, f"observed max |lag-1| {fmt(top)}", 0.01)
        keys = ("row_mean_var_ratio", "col_mean_var_ratio")
        dev = finite(abs(v[k] - 1) for v in observed.values() for k in keys)
        if dev:
            top = max(dev)
            out["max_ratio_deviation"] = upper(top * (1 + margin), top, f"observed max |ratio − 1| {fmt(top)}", 0.05)
        return out, []
