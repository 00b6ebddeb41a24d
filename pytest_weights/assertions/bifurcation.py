"""``bifurcation``: when a tensor's distribution turns bimodal, or a role's layers split apart."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .base import Deviation, Outcome, TensorView, fmt, register
from .series import Series, Trajectory, show


@register
@dataclass(frozen=True)
class Bifurcation(Trajectory):
    """Paper C's bifurcations over a run, found at the first step where they happen.

    ``mode: bimodal`` — per tensor, the first step where Sarle's bimodality coefficient
    (``stat``, default ``bimodality``) exceeds ``threshold`` (5/9, the uniform's value).
    ``mode: split`` — per role, the first step where the layers' values of ``stat`` spread
    apart: (max − min) / |median| across the role's tensors exceeds ``threshold``.
    Passes when no bifurcation happens, or when ``not_before`` is set and none happens
    before that step. Every bifurcation found is reported with its step.
    """

    kind = "bifurcation"
    stat: str = "bimodality"
    mode: Literal["bimodal", "split"] = "bimodal"
    threshold: float = 5 / 9
    not_before: int | None = None

    def expected(self) -> str:
        what = f"{self.stat} > {fmt(self.threshold)}" if self.mode == "bimodal" else "layers split apart"
        when = f" before step {self.not_before}" if self.not_before is not None else ""
        return f"no bifurcation ({what}){when}"

    def judge(self, series: Series) -> tuple[str, float] | None:
        first = next((s for s, v in zip(series.steps, series.values, strict=True) if v > self.threshold), None)
        if first is None or (self.not_before is not None and first >= self.not_before):
            return None
        return (f"bifurcates at step {first}", 1.0 + (self.not_before or first) - first)

    def evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        if self.mode == "bimodal":
            return super().evaluate_run(steps, views)
        # split: the spread of a role's per-tensor series, as one series per role
        per_tensor = dataclasses.replace(self, per="tensor").series(steps, views)
        roles: dict[str, list[Series]] = {}
        by_name = {t.name: t.role for t in views[-1]}
        for ser in per_tensor:
            roles.setdefault(by_name[ser.subject], []).append(ser)
        rows, observed = [], {}
        for role, members in sorted(roles.items()):
            if len(members) < 2:
                continue
            spread = []
            for i in range(len(steps)):
                vals = [m.values[i] for m in members]
                med = statistics.median(vals)
                spread.append((max(vals) - min(vals)) / abs(med) if med else math.inf)
            ser = Series(role, tuple(steps), tuple(spread))
            observed[role] = {"steps": list(steps), "spread": spread}
            problem = self.judge(ser)
            if problem:
                rows.append(Deviation(role, problem[0], self.expected(), show(ser.steps, ser.values), problem[1]))
        if not observed:
            return Outcome(False, "no role has 2 or more tensors present in every checkpoint")
        rows.sort(key=lambda d: -d.score)
        n = len(observed)
        summary = f"{len(rows)} of {n} roles bifurcate" if rows else f"no bifurcation in {n} roles"
        return Outcome(not rows, summary, tuple(rows), n, observed=observed)
