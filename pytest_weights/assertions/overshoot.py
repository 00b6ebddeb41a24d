"""``overshoot``: an interior peak followed by relaxation (or a bound on it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import fmt, register
from .series import Series, Trajectory


@register
@dataclass(frozen=True)
class Overshoot(Trajectory):
    """The series peaks before its end and relaxes from the peak by at least
    ``min_relaxation`` (relative: (peak − final)/peak), and, if ``max_relaxation`` is set,
    by at most that. ``max_relaxation`` alone with ``min_relaxation: 0`` asserts "never
    overshoots by more than r". Paper D: λ under larger weight decay peaks and relaxes
    (−3.3 %, −9.8 %, −22 % in its Pythia runs); under small weight decay it keeps rising.
    """

    kind = "overshoot"
    min_relaxation: float = 0.0
    max_relaxation: float | None = None

    def expected(self) -> str:
        hi = f", ≤ {fmt(self.max_relaxation)}" if self.max_relaxation is not None else ""
        return f"relaxes from its peak by ≥ {fmt(self.min_relaxation)}{hi}"

    def band(self, series: Series) -> tuple[list[float | None], list[float | None]]:
        """The final value's allowed range: [peak − max_relaxation·|peak|, peak − min_relaxation·|peak|]."""
        n, values = len(series.values), series.values
        lo: list[float | None] = [None] * n
        hi: list[float | None] = [None] * n
        peak = max(values)
        if math.isfinite(peak):
            hi[-1] = peak - self.min_relaxation * abs(peak)
            if self.max_relaxation is not None:
                lo[-1] = peak - self.max_relaxation * abs(peak)
        return lo, hi

    def judge(self, series: Series) -> tuple[str, float] | None:
        values = series.values
        peak_i = max(range(len(values)), key=values.__getitem__)
        peak, final = values[peak_i], values[-1]
        relax = (peak - final) / abs(peak) if peak else 0.0
        where = f"peak {fmt(peak)} at step {series.steps[peak_i]}, final {fmt(final)}: relaxation {fmt(relax)}"
        if relax < self.min_relaxation:
            return (where, self.min_relaxation - relax)
        if self.max_relaxation is not None and relax > self.max_relaxation:
            return (where, relax - self.max_relaxation)
        return None
