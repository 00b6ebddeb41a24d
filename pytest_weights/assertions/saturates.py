"""``saturates``: a statistic has stopped moving at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass

from .base import fmt, register
from .series import Series, Trajectory, relative


@register
@dataclass(frozen=True)
class Saturates(Trajectory):
    """Over the last ``last`` checkpoints the statistic changes by at most ``tol`` relative
    to its final value: max |v_i − v_end| / |v_end| ≤ tol. ("Weibull λ saturates".)"""

    kind = "saturates"
    last: int = 3
    tol: float = 0.02

    def validate(self) -> str | None:
        return super().validate() or (None if self.last >= 2 else "last must be ≥ 2")

    def expected(self) -> str:
        return f"saturates: change over the last {self.last} checkpoints ≤ {fmt(self.tol)} (relative)"

    def judge(self, series: Series) -> tuple[str, float] | None:
        tail = series.values[-self.last :]
        change = max(relative(v, tail[-1]) for v in tail)
        return None if change <= self.tol else (f"relative change {fmt(change)}", change - self.tol)
