"""``sibling_consistency``: each tensor's statistic is close to the median of its role."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import Assertion, Deviation, Outcome, ParamError, Suggestion, TensorView, fmt, register, unknown_statistic
from .groups import by_role
from .plot import Histogram, Line, Lines, Panel, worst_subject
from .proposal import Proposal, round_bound


@register
@dataclass(frozen=True)
class SiblingConsistency(Assertion):
    """``stat`` of each tensor is within a factor ``max_ratio`` of its role's median.

    Catches one layer scaled, zeroed or re-initialised among its siblings (the same
    tensor at other depths). Roles with fewer than ``min_siblings`` tensors are not
    judged; when no role qualifies the item is skipped (shown as skipped, not passed).
    """

    kind = "sibling_consistency"
    problem = "scale"
    ratio_to = "its siblings' std"
    ratio_rank = 0
    baseline = ("max_ratio",)
    stat: str = "std"
    max_ratio: float = 5.0
    min_siblings: int = 3

    def validate(self) -> str | None:
        if self.stat not in SCALARS:
            raise ParamError("stat", unknown_statistic(self.stat))
        if not SCALARS[self.stat].nonnegative:
            usable = ", ".join(n for n, s in SCALARS.items() if s.nonnegative)
            return (
                f"sibling_consistency compares ratios, so stat must be non-negative; {self.stat!r} can be "
                f"negative (usable: {usable})"
            )
        if not self.max_ratio > 1:
            return f"max_ratio must be > 1, got {self.max_ratio}"
        if self.min_siblings < 3:
            return "min_siblings must be ≥ 3 (a median of two cannot single one out)"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (SCALARS[self.stat].statistic,)

    def describe(self) -> str:
        return f"{self.stat} within ×{fmt(self.max_ratio)} of the role median"

    def siblings(self, tensors: Sequence[TensorView]) -> list[Siblings]:
        """The judged roles (≥ ``min_siblings`` tensors): each tensor's value and ratio to the
        role median — the one place the sibling ratio is computed (verdict, proposal, plot)."""
        s = SCALARS[self.stat]
        out = []
        for role, group in sorted(by_role(tensors).items()):
            if len(group) < self.min_siblings:
                continue
            values = {t.name: s.read(t[s.statistic]) for t in group}
            finite = [v for v in values.values() if not math.isnan(v)]
            med = median(finite) if finite else math.nan  # all NaN: every tensor deviates
            ratios = {n: v / med if med else (1.0 if v == 0 else math.inf) for n, v in values.items()}
            depths = {t.name: t.depth for t in group}
            out.append(Siblings(role, med, values, ratios, depths))
        return out

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        s = SCALARS[self.stat]
        observed = {t.name: s.read(t[s.statistic]) for t in tensors}
        roles = self.siblings(tensors)
        judged = sum(len(r.values) for r in roles)
        if judged == 0:
            return Outcome(
                True,
                f"nothing to compare: no role has {self.min_siblings} or more tensors",
                (),
                len(tensors),
                skipped=True,
                observed=observed,
            )
        rows = []
        for r in roles:
            band = (r.median / self.max_ratio, r.median * self.max_ratio)
            for name, ratio in r.ratios.items():
                if math.isnan(ratio) or not 1 / self.max_ratio <= ratio <= self.max_ratio:
                    v = r.values[name]
                    score = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
                    rows.append(
                        Deviation(
                            name,
                            f"{self.stat}={fmt(v)} (×{fmt(ratio)})",
                            f"≈ {fmt(r.median)} (median of {r.role})",
                            f"ratio in [1/{fmt(self.max_ratio)}, {fmt(self.max_ratio)}]",
                            score,
                            ratio,
                            v,
                            band,
                            self.stat,
                        )
                    )
        rows.sort(key=lambda d: -d.score)
        what = f"{self.stat} within ×{fmt(self.max_ratio)} of the role median"
        detail = {"siblings": roles}
        if rows:
            summary = f"{len(rows)} of {judged} tensors: {what} does not hold"
            return Outcome(False, summary, tuple(rows), judged, observed=observed, statistic=self.stat, detail=detail)
        return Outcome(
            True, f"all {judged} tensors: {what}", (), judged, observed=observed, statistic=self.stat, detail=detail
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        roles = self.siblings(tensors)
        if not roles:
            return {}, [f"no role has {self.min_siblings} or more tensors"]
        worst, where = 1.0, ""
        for r in roles:
            if not any(math.isfinite(v) for v in r.values.values()):
                continue
            for name, v in r.values.items():
                if not (v > 0 and r.median > 0 and math.isfinite(v)):
                    why = f"{name}: {self.stat}={fmt(v)}, role median {fmt(r.median)}: no ratio bound holds"
                    return {}, [why]
                ratio = max(r.ratios[name], 1 / r.ratios[name])
                if ratio > worst:
                    worst, where = ratio, name
        value = round_bound(worst * (1 + margin), up=True, keep=worst)
        if value <= 1:
            value = 1.01
        comment = f"observed max ratio {fmt(worst)}" + (f" ({where})" if where else "")
        return {"max_ratio": Proposal(value, worst, "upper", comment)}, []

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        failing = {d.subject for d in outcome.deviations}
        roles = [r for r in outcome.detail.get("siblings", ()) if failing & r.values.keys()]
        panels: list[Panel] = []
        for r in roles[:2]:
            names = list(r.values)
            x = [r.depths[n] if r.depths[n] is not None else i for i, n in enumerate(names)]
            lo, hi = r.median / self.max_ratio, r.median * self.max_ratio
            line = Line(
                f"median ×/÷ {fmt(self.max_ratio)}",
                x,
                [r.values[n] for n in names],
                [lo] * len(names),
                [hi] * len(names),
                [n in failing for n in names],
            )
            positive = all(v > 0 for v in r.values.values() if math.isfinite(v)) and r.median > 0
            panels.append(Lines(r.role, "depth (layer index)", self.stat, (line,), log=positive))
        worst = worst_subject(outcome)
        if worst is not None:
            panels.append(Histogram(worst))
        return tuple(panels)

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        return (Suggestion("consistent-with-siblings", {"stat": "std"}, rank=10),) if level == "matrices" else ()

    def init_tensors(self, tensors: Sequence[TensorView]) -> Sequence[TensorView]:
        """Ratios need a positive statistic: roles holding a constant matrix are left out."""
        s = SCALARS[self.stat]
        flat = {t.role for t in tensors if not s.read(t[s.statistic]) > 0}
        return [t for t in tensors if t.role not in flat]

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        return "max_ratio" in proposals


@dataclass(frozen=True)
class Siblings:
    """One judged role: its median, and each tensor's value, ratio to the median and depth."""

    role: str
    median: float
    values: dict[str, float]
    ratios: dict[str, float]
    depths: dict[str, int | None]
