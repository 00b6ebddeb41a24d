"""``stat_range``: a per-tensor statistic lies within [min, max]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import (
    Assertion,
    Outcome,
    ParamError,
    Suggestion,
    TensorView,
    interval,
    per_tensor,
    register,
    unknown_statistic,
)
from .proposal import Proposal, band


@register
@dataclass(frozen=True)
class StatRange(Assertion):
    """Each tensor's ``stat`` (see the statistics table) is ≥ ``min`` and ≤ ``max``.

    A NaN statistic (e.g. the kurtosis of a constant tensor) is out of every range.
    """

    kind = "stat_range"
    baseline = ("min", "max")
    stat: str
    min: float | None = None
    max: float | None = None

    def validate(self) -> str | None:
        if self.stat not in SCALARS:
            raise ParamError("stat", unknown_statistic(self.stat))
        if self.min is None and self.max is None:
            return "stat_range needs 'min', 'max' or both"
        if self.min is not None and self.max is not None and self.min > self.max:
            return f"min ({self.min}) is larger than max ({self.max})"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (SCALARS[self.stat].statistic,)

    def describe(self) -> str:
        return f"{self.stat} {interval(self.min, self.max)}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        s = SCALARS[self.stat]
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        scale = max(abs(lo) if math.isfinite(lo) else 0, abs(hi) if math.isfinite(hi) else 0, 1e-30)

        def failure(v: float) -> float | None:
            if math.isnan(v):
                return math.inf
            if lo <= v <= hi:
                return None
            return max(lo - v, v - hi) / scale

        return per_tensor(
            tensors,
            lambda t: s.read(t[s.statistic]),
            failure,
            f"{self.stat} {interval(self.min, self.max)}",
            statistic=self.stat,
            bounds=(self.min, self.max),
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        return band(self.stat, self.evaluate(tensors).observed, margin, "min", "max", self.stat)

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        return (Suggestion("std", {"stat": "std"}, rank=0),) if level in ("role", "embedding") else ()
