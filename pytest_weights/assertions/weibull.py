"""``weibull``: the Weibull fit of |w| (shape k, scale λ) lies in bounds or in allowed classes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..stats import Statistic
from ..stats.weibull import CLASSES, WeibullFit, WeibullResult, weibull_class
from .base import Assertion, Deviation, Outcome, Suggestion, TensorView, fmt, interval, register
from .plot import Histogram, Panel, Points, worst_subject
from .proposal import Proposal, band, finite, widen

WeibullClass = Literal["transmission", "mild_selection", "strong_selection", "other"]


def _violation(v: float, lo: float | None, hi: float | None) -> float | None:
    """Relative distance of ``v`` outside [lo, hi], or None when inside."""
    if lo is not None and v < lo:
        return (lo - v) / max(abs(lo), 1e-30)
    if hi is not None and v > hi:
        return (v - hi) / max(abs(hi), 1e-30)
    return None


@register
@dataclass(frozen=True)
class Weibull(Assertion):
    """Weibull(k, λ) fitted to |w| (paper D) is within bounds and in an allowed class.

    ``protocol``: ``mid_80`` (default; the paper's least squares on the Weibull probability
    plot over 0.1 ≤ F ≤ 0.9, from a 1024-bin log10|w| histogram, as ``npm-weibull-py``),
    ``mid_90``, ``full_range`` or ``mle`` (maximum likelihood, location 0; no R²). The
    protocol matters: on half-normal data mid_80 gives k ≈ 1.205, MLE k ≈ 1.26.

    ``classes`` (paper D): transmission 1.18 ≤ k ≤ 1.21 with R² ≥ 0.95; mild_selection
    0.95 ≤ k < 1.18; strong_selection k < 0.95; other (k > 1.21, or low R² in the
    transmission band). A failed fit (fewer than 100 values in range, or < 5 bins in the
    window) always fails.
    """

    kind = "weibull"
    baseline = ("k_min", "k_max", "lambda_min", "lambda_max", "r2_min")
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"r2_min": 0.0}
    protocol: Literal["mid_80", "mid_90", "full_range", "mle"] = "mid_80"
    k_min: float | None = None
    k_max: float | None = None
    lambda_min: float | None = None
    lambda_max: float | None = None
    r2_min: float | None = None
    classes: tuple[WeibullClass, ...] | None = None

    def validate(self) -> str | None:
        for lo, hi, name in ((self.k_min, self.k_max, "k"), (self.lambda_min, self.lambda_max, "lambda")):
            if lo is not None and hi is not None and lo > hi:
                return f"{name}_min ({lo}) is larger than {name}_max ({hi})"
        if self.r2_min is not None:
            if self.protocol == "mle":
                return "r2_min needs a probability-plot protocol (mid_80, mid_90, full_range): mle fits no line"
            if not 0 <= self.r2_min <= 1:
                return f"r2_min must be in [0, 1], got {self.r2_min}"
        if self.classes is not None and not self.classes:
            return f"classes must list at least one of: {', '.join(CLASSES)}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (WeibullFit(self.protocol),)

    def _conditions(self) -> list[str]:
        out = []
        if self.k_min is not None or self.k_max is not None:
            out.append(f"k {interval(self.k_min, self.k_max)}")
        if self.lambda_min is not None or self.lambda_max is not None:
            out.append(f"λ {interval(self.lambda_min, self.lambda_max)}")
        if self.r2_min is not None:
            out.append(f"R² ≥ {fmt(self.r2_min)}")
        if self.classes is not None:
            out.append("class in " + "/".join(self.classes))
        return out

    def describe(self) -> str:
        conditions = self._conditions() or ["a successful fit"]
        return f"Weibull fit of |w| ({self.protocol}): " + ", ".join(conditions)

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        stat = WeibullFit(self.protocol)
        expected = ", ".join(self._conditions()) or "a successful fit"
        rows, observed = [], {}
        for t in tensors:
            r: WeibullResult = t[stat]
            cls = weibull_class(r.k, r.r2)
            observed[t.name] = {"k": r.k, "lambda": r.lam, "r2": r.r2, "ks": r.ks, "class": cls}
            text = f"k={fmt(r.k)} λ={fmt(r.lam)} R²={fmt(r.r2)} class={cls}"
            if not r.ok:
                rows.append(Deviation(t.name, f"fit failed ({r.n} values in range, {r.zeros} zeros)", expected))
                continue
            bad = [
                s
                for s in (
                    _violation(r.k, self.k_min, self.k_max),
                    _violation(r.lam, self.lambda_min, self.lambda_max),
                    _violation(r.r2, self.r2_min, None) if self.r2_min is not None else None,
                )
                if s is not None
            ]
            if self.classes is not None and cls not in self.classes:
                bad.append(_class_distance(r.k, self.classes))
            if bad:
                tol = f"protocol={self.protocol}"
                rows.append(Deviation(t.name, text, expected, tol, max(bad), None, r.k, (self.k_min, self.k_max), "k"))
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        summary = f"{len(rows)} of {n} tensors deviate: expected {expected}" if rows else f"all {n} tensors: {expected}"
        return Outcome(
            not rows, summary, tuple(rows), n, observed=observed, statistic="k", bounds=(self.k_min, self.k_max)
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        observed = self.evaluate(tensors).observed
        fits = {n: v for n, v in observed.items() if math.isfinite(v["k"])}
        notes = [f"Weibull fit failed for {len(observed) - len(fits)} tensor(s)"] if len(fits) < len(observed) else []
        if not fits:
            return {}, notes
        out: dict[str, Proposal] = {}
        for stat, key, label in (("weibull_k", "k", "k"), ("weibull_lambda", "lambda", "λ")):
            got, _ = band(stat, {n: v[key] for n, v in fits.items()}, margin, f"{key}_min", f"{key}_max", label)
            out.update(got)
        r2 = finite(v["r2"] for v in fits.values())
        if r2:
            lo = min(r2)
            out["r2_min"] = Proposal(widen("weibull_r2", lo, lo, margin)[0], lo, "lower", f"observed R² ≥ {fmt(lo)}")
        return out, notes

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        worst = worst_subject(outcome)
        if worst is None:
            return ()
        fit = outcome.observed.get(worst) or {}
        params = {"k": fit.get("k", math.nan), "lambda": fit.get("lambda", math.nan)}
        ks = {n: v["k"] for n, v in outcome.observed.items() if isinstance(v, Mapping)}
        failing = tuple(d.subject for d in outcome.deviations)
        return (
            Histogram(worst, "Weibull", params),
            Points("Weibull k", ks, (self.k_min, self.k_max), failing),
        )

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        return (Suggestion("weibull", keep=("k_min", "k_max"), rank=20),) if level == "role" else ()

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        stat = WeibullFit(self.protocol)
        return {"k_min", "k_max"} <= proposals.keys() and all(t[stat].ok for t in tensors)


_BANDS = {
    "transmission": (1.18, 1.21),
    "mild_selection": (0.95, 1.18),
    "strong_selection": (0.0, 0.95),
    "other": (1.21, math.inf),
}


def _class_distance(k: float, classes: Sequence[str]) -> float:
    """How far k is from the nearest allowed band, relative (0 when only R² is at fault)."""
    best = math.inf
    for c in classes:
        lo, hi = _BANDS[c]
        best = min(best, 0.0 if lo <= k <= hi else min(abs(k - lo), abs(k - hi)) / max(k, 1e-30))
    return best
