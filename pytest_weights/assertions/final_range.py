"""``final_range``: the value at the last checkpoint of the run lies in a band."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import fmt, interval, register
from .series import Series, Trajectory


@register
@dataclass(frozen=True)
class FinalRange(Trajectory):
    """The statistic at the last checkpoint is ≥ ``min`` and ≤ ``max``."""

    kind = "final_range"
    judged_at_end = True
    min: float | None = None
    max: float | None = None

    def validate(self) -> str | None:
        return super().validate() or (
            "final_range needs 'min', 'max' or both" if self.min is None and self.max is None else None
        )

    def expected(self) -> str:
        return f"final value {interval(self.min, self.max)}"

    def band(self, series: Series) -> tuple[list[float | None], list[float | None]]:
        n = len(series.values)
        return [None] * (n - 1) + [self.min], [None] * (n - 1) + [self.max]

    def judge(self, series: Series) -> tuple[str, float] | None:
        v = series.values[-1]
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        if lo <= v <= hi:
            return None
        return (f"final {fmt(v)} at step {series.steps[-1]}", math.inf if math.isnan(v) else max(lo - v, v - hi))
