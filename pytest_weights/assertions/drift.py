"""``drift``: a statistic stays within a relative band around its first value."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import fmt, register
from .series import Series, Trajectory, relative


@register
@dataclass(frozen=True)
class Drift(Trajectory):
    """Every value is within ``max_rel`` of the first checkpoint's: |v_t − v_0| / |v_0| ≤ max_rel.

    Paper D's classes of Weibull k drift from init: < 1% invariant, 1–30% mild, > 30% strong.
    """

    kind = "drift"
    max_rel: float = 0.01

    def expected(self) -> str:
        return f"drift from the first checkpoint ≤ {fmt(self.max_rel)} (relative)"

    def band(self, series: Series) -> tuple[list[float | None], list[float | None]]:
        v0 = series.values[0]
        r = self.max_rel * abs(v0)
        n = len(series.values)
        return ([v0 - r] * n, [v0 + r] * n) if math.isfinite(v0) else ([None] * n, [None] * n)

    def judge(self, series: Series) -> tuple[str, float] | None:
        drifts = [relative(v, series.values[0]) for v in series.values]
        worst = max(range(len(drifts)), key=drifts.__getitem__)
        if drifts[worst] <= self.max_rel:
            return None
        return (f"drift {fmt(drifts[worst])} at step {series.steps[worst]}", drifts[worst] - self.max_rel)
