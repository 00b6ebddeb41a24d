"""``sibling_consistency``: each tensor's statistic is close to the median of its role."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import Assertion, Deviation, Outcome, ParamError, TensorView, fmt, register, unknown_statistic
from .groups import by_role


@register
@dataclass(frozen=True)
class SiblingConsistency(Assertion):
    """``stat`` of each tensor is within a factor ``max_ratio`` of its role's median.

    Catches one layer scaled, zeroed or re-initialised among its siblings (the same
    tensor at other depths). Roles with fewer than ``min_siblings`` tensors are not
    judged; when no role qualifies the item is skipped (shown as skipped, not passed).
    """

    kind = "sibling_consistency"
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

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        s = SCALARS[self.stat]
        rows, judged = [], 0
        observed = {t.name: s.read(t[s.statistic]) for t in tensors}
        for role, group in sorted(by_role(tensors).items()):
            if len(group) < self.min_siblings:
                continue
            values = {t.name: observed[t.name] for t in group}
            finite = [v for v in values.values() if not math.isnan(v)]
            med = median(finite) if finite else math.nan  # all NaN: every tensor deviates
            judged += len(group)
            for name, v in values.items():
                ratio = v / med if med else (1.0 if v == 0 else math.inf)
                if math.isnan(ratio) or not 1 / self.max_ratio <= ratio <= self.max_ratio:
                    score = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
                    rows.append(
                        Deviation(
                            name,
                            f"{self.stat}={fmt(v)} (×{fmt(ratio)})",
                            f"≈ {fmt(med)} (median of {role})",
                            f"ratio in [1/{fmt(self.max_ratio)}, {fmt(self.max_ratio)}]",
                            score,
                            ratio,
                        )
                    )
        if judged == 0:
            return Outcome(
                True,
                f"nothing to compare: no role has {self.min_siblings} or more tensors",
                (),
                len(tensors),
                skipped=True,
                observed=observed,
            )
        rows.sort(key=lambda d: -d.score)
        what = f"{self.stat} within ×{fmt(self.max_ratio)} of the role median"
        if rows:
            summary = f"{len(rows)} of {judged} tensors: {what} does not hold"
            return Outcome(False, summary, tuple(rows), judged, observed=observed)
        return Outcome(True, f"all {judged} tensors: {what}", (), judged, observed=observed)
