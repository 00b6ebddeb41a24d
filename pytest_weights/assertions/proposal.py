"""The widening policy of baseline proposals (``init``, ``--weights-regen``), in one place.

A kind's :meth:`~.base.Assertion.propose` turns observed values into new bounds with the
helpers here: :func:`widen` a band by a margin, :func:`upper`/:func:`lower` a single bound,
every number rounded outwards to :data:`DIGITS` significant digits and never past the
observed value it must admit. :func:`guard` is the shared rule that no regenerated bound
makes its check unable to fail: a bound widened onto the value where it cannot fail (a KS
``tol`` of 1, a ``max_abs_rho`` of 1 …) is capped short of it, and the note says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from ..stats.scalars import SCALARS
from .results import fmt

#: Significant digits of generated numbers (lower bounds rounded down, upper bounds up).
DIGITS = 3
#: A KS tolerance is never tighter than this (a Gaussian of 4096 values has D ≈ 0.01).
KS_TOL_FLOOR = 0.02
#: Weibull k is a shape exponent: its band is widened additively, by margin × this.
WEIBULL_K_SLACK = 0.1
#: Statistics that are never negative: bands widen multiplicatively, [min/(1+m), max·(1+m)].
NONNEGATIVE = frozenset({name for name, scalar in SCALARS.items() if scalar.nonnegative} | {"ratio"})
#: Smallest widening, in the statistic's units, for values near 0 (where a relative margin vanishes).
SLACK = {
    "kurtosis": 0.5,
    "skewness": 0.1,
    "lag1_corr": 0.02,
    "zero_fraction": 1e-5,
    "outlier_fraction_3sigma": 1e-3,
    "near_zero_mass": 0.01,
    "mean_over_std": 0.02,
}


def round_bound(x: float, up: bool, keep: float, digits: int = DIGITS) -> float:
    """``x`` to ``digits`` significant digits, rounded up (upper bounds) or down (lower bounds),
    never past ``keep`` (the observed value the bound must admit)."""
    if x == 0 or not math.isfinite(x):
        return x
    # Float noise first (0.1 × 1.5 = 0.15000000000000002 gives 0.15, not 0.151), unless that
    # would exclude the observed value.
    for text in (f"{x:.12g}", repr(float(x))):
        d = Decimal(text)
        exp = d.adjusted() - (digits - 1)
        out = float(d.quantize(Decimal(1).scaleb(exp), rounding=ROUND_CEILING if up else ROUND_FLOOR))
        if (out >= keep) if up else (out <= keep):
            return out
    return out  # pragma: no cover - the exact decimal of x ≥ keep always qualifies


def number_text(x: float) -> str:
    """A number as YAML text that PyYAML reads as a float (``0.0287``, ``1.5e-05``, ``2.0``)."""
    if x == 0:
        return "0.0"
    if 1e-3 <= abs(x) < 1e5:
        text = f"{x:.{DIGITS + 4}g}"
        return text if ("." in text or "e" in text) else text + ".0"
    mantissa, exp = f"{x:.{DIGITS - 1}e}".split("e")
    mantissa = mantissa.rstrip("0")
    mantissa = mantissa + "0" if mantissa.endswith(".") else mantissa
    return f"{mantissa}e{exp}"


def widen(stat: str, lo: float, hi: float, margin: float) -> tuple[float, float]:
    """The band [lo, hi] of observed values of ``stat`` widened by ``margin`` (rounded outwards).

    Scales (std, λ, norms, fractions): [lo/(1+m), hi·(1+m)]; ``weibull_k``: ± m·0.1;
    ``weibull_r2``: lower 1 − (1 − lo)(1+m); ``ks``: upper at least 0.02; signed statistics
    (mean, skewness, kurtosis …): lo − m·max(|lo|, slack), hi + m·max(|hi|, slack).
    """
    m, slack = margin, SLACK.get(stat, 0.0)
    if stat == "weibull_k":
        a, b = lo - m * WEIBULL_K_SLACK, hi + m * WEIBULL_K_SLACK
    elif stat == "weibull_r2":
        a, b = max(0.0, 1 - (1 - lo) * (1 + m)), 1.0
    elif stat in NONNEGATIVE and lo >= 0:
        a = lo / (1 + m)
        b = max(hi * (1 + m), hi + m * slack)
        if stat == "ks":
            b = min(1.0, max(b, KS_TOL_FLOOR))
    else:
        a = lo - m * max(abs(lo), slack)
        b = hi + m * max(abs(hi), slack)
    return round_bound(a, up=False, keep=lo), round_bound(b, up=True, keep=hi)


@dataclass(frozen=True)
class Proposal:
    """A new value of one baseline parameter, derived from observed values."""

    value: float
    #: The observed extreme the bound is judged against (a bound is violated when it excludes it).
    observed: float
    #: "lower" (min, k_min, min_rho …) or "upper" (max, tol, max_ratio …).
    bound: str
    #: What was observed, for a comment (``observed 0.043 … 0.096``); may be empty.
    comment: str = ""
    #: Set by :func:`guard` when the margin was capped: why (said in the output and the YAML comment).
    capped: str = ""

    @property
    def text(self) -> str:
        return number_text(self.value)

    def violated_by(self, current: float) -> bool:
        """Whether a bound at ``current`` excludes the observed extreme."""
        return self.observed < current if self.bound == "lower" else self.observed > current


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values``."""
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def span(values: Iterable[float]) -> str:
    """``0.043 … 0.096`` (or one value when all are equal)."""
    vals = sorted(values)
    return fmt(vals[0]) if vals[0] == vals[-1] else f"{fmt(vals[0])} … {fmt(vals[-1])}"


def band(
    stat: str, values: Mapping[str, Any], margin: float, lo_key: str, hi_key: str, label: str
) -> tuple[dict[str, Proposal], list[str]]:
    """``lo_key``/``hi_key`` proposals: the observed band of ``values`` widened (:func:`widen`)."""
    vals = finite(values.values())
    notes = []
    if len(vals) < len(values):
        bad = [n for n, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v))]
        notes.append(f"{label} is not finite for {len(bad)} tensor(s) ({bad[0]}): no band holds for those")
    if not vals:
        return {}, notes
    lo, hi = min(vals), max(vals)
    a, b = widen(stat, lo, hi, margin)
    out = {lo_key: Proposal(a, lo, "lower", f"observed {label} {span(vals)}"), hi_key: Proposal(b, hi, "upper")}
    return out, notes


def upper(value: float, observed: float, comment: str, floor: float = 0.0) -> Proposal:
    """An upper bound at ``value`` (at least ``floor``), rounded up, admitting ``observed``."""
    return Proposal(round_bound(max(value, floor), up=True, keep=observed), observed, "upper", comment)


def lower(value: float, observed: float, comment: str) -> Proposal:
    """A lower bound at ``value``, rounded down, admitting ``observed``."""
    return Proposal(round_bound(value, up=False, keep=observed), observed, "lower", comment)


def guard(
    proposals: Mapping[str, Proposal], cannot_fail_at: Mapping[str, float]
) -> tuple[dict[str, Proposal], list[str]]:
    """Never make a check that cannot fail: each bound in ``cannot_fail_at`` (parameter → the
    value from which that bound always holds) is kept strictly short of it. A bound widened
    onto the limit is capped between the observed value and the limit (the proposal's
    ``capped`` says so, for the output and the YAML comment); when the observed value itself
    is at the limit, the parameter is left out. Returns the proposals kept and notes on those
    left out."""
    out: dict[str, Proposal] = {}
    notes: list[str] = []
    for key, p in proposals.items():
        limit = cannot_fail_at.get(key)
        up = p.bound == "upper"
        if limit is None or (p.value < limit if up else p.value > limit):
            out[key] = p
            continue
        if not (p.observed < limit if up else p.observed > limit):
            notes.append(
                f"{key}: observed {fmt(p.observed)} is at {fmt(limit)}, where the check cannot fail: not rewritten"
            )
            continue
        value = round_bound((p.observed + limit) / 2, up=up, keep=p.observed)
        if not (value < limit if up else value > limit):
            value = p.observed
        side = "≥" if up else "≤"
        why = (
            f"margin capped: {key} {number_text(value)}, not {number_text(p.value)}"
            f" ({key} {side} {fmt(limit)} cannot fail)"
        )
        out[key] = dataclasses.replace(p, value=value, capped=why)
    return out, notes
