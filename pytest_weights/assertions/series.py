"""Shared machinery for run-scope kinds: a statistic as a time series over checkpoints.

A run-scope kind (``scope = "run"``) sees every checkpoint of a training run, ordered by
step. :class:`Trajectory` turns the selected tensors into series of one statistic, per
tensor, per role (median over the role's tensors) or pooled (median over all), and each
concrete kind judges one series at a time (:meth:`Trajectory.judge`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import Assertion, Deviation, Outcome, ParamError, TensorView, fmt, unknown_statistic
from .plot import Line, Lines, Panel

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled to the finite values' range; ``?`` for NaN/±Inf."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "?" * len(values)
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):  # constant, or a range past float64
        return "".join(SPARK[3] if math.isfinite(v) else "?" for v in values)
    return "".join(SPARK[min(7, int((v - lo) / span * 8))] if math.isfinite(v) else "?" for v in values)


def show(steps: Sequence[int], values: Sequence[float], limit: int = 6) -> str:
    """Compact series: a sparkline and a few step=value pairs (first, last, and evenly between)."""
    n = len(values)
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)}) if n > limit else range(n)
    pairs = " ".join(f"{steps[i]}:{fmt(values[i])}" for i in picks)
    return f"{sparkline(values)} {pairs}"


@dataclass(frozen=True)
class Series:
    subject: str  # tensor name, role, or "pooled"
    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Trajectory(Assertion):
    """Base of run-scope kinds: ``stat`` over the run, ``per`` tensor / role / pooled."""

    scope: ClassVar[str] = "run"
    stat: str
    per: Literal["tensor", "role", "pooled"] = "tensor"

    def validate(self) -> str | None:
        if self.stat not in SCALARS:
            raise ParamError("stat", unknown_statistic(self.stat))
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (SCALARS[self.stat].statistic,)

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        return Outcome(False, f"{self.kind} judges a run: pass a run directory (--checkpoint RUN_DIR)")

    # -- run evaluation ---------------------------------------------------------------

    def series(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> list[Series]:
        s = SCALARS[self.stat]
        per_step = [{t.name: (t, s.read(t[s.statistic])) for t in step_views} for step_views in views]
        names = [n for n in per_step[-1] if all(n in d for d in per_step)]
        if self.per == "tensor":
            return [Series(n, tuple(steps), tuple(d[n][1] for d in per_step)) for n in names]
        groups: dict[str, list[str]] = {}
        for n in names:
            key = per_step[-1][n][0].role if self.per == "role" else "pooled"
            groups.setdefault(key, []).append(n)
        return [
            Series(key, tuple(steps), tuple(statistics.median(d[n][1] for n in members) for d in per_step))
            for key, members in sorted(groups.items())
        ]

    def evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        if len(steps) < 2:
            return Outcome(False, f"a run of {len(steps)} checkpoint(s): {self.kind} needs at least 2")
        all_series = self.series(steps, views)
        if not all_series:
            return Outcome(False, "no selected tensor is present in every checkpoint of the run")
        rows, observed = [], {}
        for ser in all_series:
            lo, hi = self.band(ser)
            failing = [not _within(v, a, b) for v, a, b in zip(ser.values, lo, hi, strict=True)]
            observed[ser.subject] = {
                "steps": list(ser.steps), "values": list(ser.values), "min": lo, "max": hi, "failing": failing,
            }  # fmt: skip
            problem = self.judge(ser)
            if problem is not None:
                observed_text, score = problem
                at = failing.index(True) if any(failing) else None
                numbers = (ser.values[at], (lo[at], hi[at]), self.stat, ser.steps[at]) if at is not None else ()
                text = show(ser.steps, ser.values)
                rows.append(Deviation(ser.subject, observed_text, self.expected(), text, score, None, *numbers))
        rows.sort(key=lambda d: -d.score)
        what = f"{self.stat} {self.expected()}"
        n = len(all_series)
        summary = f"{len(rows)} of {n} series: {what} does not hold" if rows else f"all {n} series: {what}"
        return Outcome(not rows, summary, tuple(rows), n, observed=observed, statistic=self.stat)

    def band(self, series: Series) -> tuple[list[float | None], list[float | None]]:
        """The allowed (lo, hi) at each step (None: that side open, or the step not judged): a
        step outside it is a failing step (``observed[subject]`` records ``min``, ``max`` and
        ``failing`` per step). Kinds judging the shape of the whole series (a trend) leave every
        step open."""
        return [None] * len(series.values), [None] * len(series.values)

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        panels = []
        failing = [d for d in outcome.deviations if isinstance(outcome.observed.get(d.subject), Mapping)]
        for k, d in enumerate(failing[:3]):
            ser = outcome.observed[d.subject]
            line = Line(self.stat, ser["steps"], ser["values"], ser["min"], ser["max"], ser["failing"], highlight=True)
            more = f"\n({len(failing) - 3} more failing series not drawn)" if k == 2 and len(failing) > 3 else ""
            panels.append(Lines(f"{d.subject}\n{self.expected()}{more}", "step", self.stat, (line,)))
        return tuple(panels)

    def expected(self) -> str:
        return self.kind

    def describe(self) -> str:
        return f"{self.stat} ({self.per}) over the run: {self.expected()}"

    def judge(self, series: Series) -> tuple[str, float] | None:
        """None if the series is fine, else (what was observed, badness)."""
        raise NotImplementedError


def in_window(step: float, from_step: int | None, to_step: int | None) -> bool:
    """Whether ``step`` lies in the window [``from_step``, ``to_step``] (None: open on that side)."""
    return (from_step is None or step >= from_step) and (to_step is None or step <= to_step)


def _within(v: float, lo: float | None, hi: float | None) -> bool:
    if lo is None and hi is None:
        return True
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def relative(a: float, b: float) -> float:
    """|a − b| / |b| (inf when b = 0 and a ≠ 0)."""
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return abs(a - b) / abs(b)
