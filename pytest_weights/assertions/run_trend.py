"""``run_trend``: a statistic grows or shrinks over a training run (Spearman ρ over steps)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from .base import Outcome, fmt, register
from .groups import slope, spearman
from .plot import Line, Panel
from .series import Series, Trajectory, in_window


@register
@dataclass(frozen=True)
class RunTrend(Trajectory):
    """Over the run (or steps ``from_step``..``to_step``), Spearman ρ(step, stat) ≥ ``min_rho``
    for ``grows``, ≤ −``min_rho`` for ``shrinks``."""

    kind = "run_trend"
    direction: Literal["grows", "shrinks"] = "grows"
    min_rho: float = 0.8
    from_step: int | None = None
    to_step: int | None = None

    def expected(self) -> str:
        sign = "≥" if self.direction == "grows" else "≤"
        value = self.min_rho if self.direction == "grows" else -self.min_rho
        window = ""
        if self.from_step is not None or self.to_step is not None:
            window = f" in steps [{self.from_step or 0}, {'end' if self.to_step is None else self.to_step}]"
        return f"{self.direction} (ρ {sign} {fmt(value)}){window}"

    def judge(self, series: Series) -> tuple[str, float] | None:
        pts = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if self._in_window(s)]
        if len(pts) < 2:
            return (f"{len(pts)} checkpoint(s) in the window", 1.0)
        rho = spearman([p[0] for p in pts], [p[1] for p in pts])
        target = self.min_rho if self.direction == "grows" else -self.min_rho
        ok = rho >= target if self.direction == "grows" else rho <= target
        return None if ok else (f"ρ={fmt(rho)}", abs(rho - target))

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        """Each failing series with its least-squares trend over the judged window."""
        panels = []
        for panel in super().plot_data(outcome):
            (line,) = panel.lines
            pts = [(x, y) for x, y in zip(line.x, line.y, strict=True) if self._in_window(x) and math.isfinite(y)]
            if len(pts) >= 2:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                b = slope(xs, ys)
                a = sum(ys) / len(ys) - b * sum(xs) / len(xs)
                trend = Line("least-squares trend", xs, [a + b * x for x in xs], fit=True)
                panel = dataclasses.replace(panel, lines=(line, trend))
            panels.append(panel)
        return tuple(panels)

    def _in_window(self, step: float) -> bool:
        return in_window(step, self.from_step, self.to_step)
