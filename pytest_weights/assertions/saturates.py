"""``saturates``: a statistic has stopped moving at the end of the run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import fmt, register
from .series import Series, Trajectory, relative


@register
@dataclass(frozen=True)
class Saturates(Trajectory):
    """Over the last ``last`` checkpoints the statistic changes by at most ``tol`` relative
    to its final value: max |v_i − v_end| / |v_end| ≤ tol. ("Weibull λ saturates".)"""

    kind = "saturates"
    judged_at_end = True
    last: int = 3
    tol: float = 0.02

    def validate(self) -> str | None:
        return super().validate() or (None if self.last >= 2 else "last must be ≥ 2")

    def expected(self) -> str:
        return f"saturates: change over the last {self.last} checkpoints ≤ {fmt(self.tol)} (relative)"

    def band(self, series: Series) -> tuple[list[float | None], list[float | None]]:
        n, end = len(series.values), series.values[-1]
        tail = min(self.last, n)
        lo: list[float | None] = [None] * n
        hi: list[float | None] = [None] * n
        if math.isfinite(end):
            lo[n - tail :] = [end - self.tol * abs(end)] * tail
            hi[n - tail :] = [end + self.tol * abs(end)] * tail
        return lo, hi

    def judge(self, series: Series) -> tuple[str, float] | None:
        tail = series.values[-self.last :]
        change = max(relative(v, tail[-1]) for v in tail)
        return None if change <= self.tol else (f"relative change {fmt(change)}", change - self.tol)
