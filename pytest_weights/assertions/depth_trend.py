"""``depth_trend``: a statistic grows, shrinks or stays flat with layer depth, per role."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import Assertion, Deviation, Outcome, ParamError, Suggestion, TensorView, fmt, register, unknown_statistic
from .groups import by_role, slope, spearman
from .plot import Line, Lines, Panel
from .proposal import Proposal, lower, span, upper

#: ``init`` asserts a depth trend where Spearman |ρ| reaches this (over ``min_layers`` depths).
TREND_MIN_RHO = 0.8


@register
@dataclass(frozen=True)
class DepthTrend(Assertion):
    """Within each role, Spearman ρ between depth and ``stat`` shows the ``direction``.

    ``grows``: ρ ≥ ``min_rho``; ``shrinks``: ρ ≤ −``min_rho``; ``flat``: |ρ| ≤
    ``max_abs_rho``. Roles with fewer than ``min_layers`` depths are left out (noted); if
    no role qualifies the assertion fails. The least-squares slope is reported too.
    """

    kind = "depth_trend"
    baseline = ("min_rho", "max_abs_rho")
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"max_abs_rho": 1.0, "min_rho": -1.0}  # |ρ| ≤ 1
    stat: str
    direction: Literal["grows", "shrinks", "flat"]
    min_rho: float = 0.8
    max_abs_rho: float = 0.5
    min_layers: int = 3

    def validate(self) -> str | None:
        if self.stat not in SCALARS:
            raise ParamError("stat", unknown_statistic(self.stat))
        if not -1 <= self.min_rho <= 1 or not 0 <= self.max_abs_rho <= 1:
            return "min_rho must be in [-1, 1] and max_abs_rho in [0, 1]"
        if self.min_layers < 2:
            return "min_layers must be ≥ 2"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (SCALARS[self.stat].statistic,)

    def expected(self) -> str:
        if self.direction == "grows":
            return f"ρ ≥ {fmt(self.min_rho)}"
        if self.direction == "shrinks":
            return f"ρ ≤ {fmt(-self.min_rho)}"
        return f"|ρ| ≤ {fmt(self.max_abs_rho)}"

    def describe(self) -> str:
        return f"{self.stat} {self.direction} with depth ({self.expected()})"

    def bounds(self) -> tuple[float | None, float | None]:
        """The interval ρ must lie in."""
        if self.direction == "grows":
            return (self.min_rho, None)
        if self.direction == "shrinks":
            return (None, -self.min_rho)
        return (-self.max_abs_rho, self.max_abs_rho)

    def _fails(self, rho: float) -> bool:
        if math.isnan(rho):
            return True
        if self.direction == "grows":
            return rho < self.min_rho
        if self.direction == "shrinks":
            return rho > -self.min_rho
        return abs(rho) > self.max_abs_rho

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        s = SCALARS[self.stat]
        rows, notes, observed = [], [], {}
        judged = 0
        for role, group in sorted(by_role(tensors).items()):
            by_depth: dict[int, list[float]] = {}
            for t in group:
                if t.depth is not None:
                    by_depth.setdefault(t.depth, []).append(s.read(t[s.statistic]))
            if len(by_depth) < self.min_layers:
                notes.append(f"{role}: {len(by_depth)} depth(s), fewer than {self.min_layers}")
                continue
            judged += 1
            depths = sorted(by_depth)
            values = [float(np.mean(by_depth[d])) for d in depths]
            rho, b = spearman(depths, values), slope(depths, values)
            observed[role] = {"rho": rho, "slope": b, "depths": depths, "values": values}
            if self._fails(rho):
                series = " ".join(fmt(v) for v in values)
                rows.append(
                    Deviation(
                        role,
                        f"ρ={fmt(rho)} slope={fmt(b)}/layer [{series}]",
                        self.expected(),
                        f"{self.stat} {self.direction}",
                        1.0
                        if math.isnan(rho)
                        else abs(
                            rho
                            - (
                                self.min_rho
                                if self.direction == "grows"
                                else -self.min_rho
                                if self.direction == "shrinks"
                                else 0
                            )
                        ),
                        None,
                        rho,
                        self.bounds(),
                        "ρ",
                    )
                )
        if judged == 0:
            return Outcome(
                False,
                f"no role has {self.min_layers} or more layers to judge a depth trend",
                (),
                len(tensors),
                tuple(notes),
            )
        rows.sort(key=lambda d: -d.score)
        what = f"{self.stat} {self.direction} with depth"
        summary = f"{len(rows)} of {judged} roles: {what} does not hold" if rows else f"{what} in all {judged} roles"
        return Outcome(
            not rows, summary, tuple(rows), len(tensors), tuple(notes), observed, statistic="ρ", bounds=self.bounds()
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        observed = self.evaluate(tensors).observed
        if not observed:
            return {}, [f"no role has {self.min_layers} or more layers"]
        rhos = [v["rho"] for v in observed.values()]
        if self.direction == "flat":
            top = max(abs(r) for r in rhos)
            if math.isnan(top):
                return {}, ["ρ is undefined (a constant statistic)"]
            return {"max_abs_rho": upper(top * (1 + margin), top, f"observed ρ {span(rhos)}")}, []
        sign = 1 if self.direction == "grows" else -1
        worst = min(sign * r for r in rhos)
        if not worst > 0:
            return {}, [f"{self.stat} no longer {self.direction} with depth (ρ {span(rhos)}): min_rho not rewritten"]
        return {"min_rho": lower(worst / (1 + margin), worst, f"observed ρ {span(rhos)}")}, []

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        roles = {k: v for k, v in outcome.observed.items() if isinstance(v, Mapping) and v.get("depths")}
        if not roles:
            return ()
        failing = {d.subject for d in outcome.deviations}
        lines = tuple(
            Line(f"{role}: ρ={fmt(ser['rho'])}", ser["depths"], ser["values"], highlight=role in failing)
            for role, ser in roles.items()
        )
        title = f"expected: {self.describe()}; failing roles in colour"
        return (Lines(title, "depth (layer index)", f"{self.stat} (mean over the layer)", lines),)

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        if level != "role":
            return ()
        return tuple(Suggestion(f"std-{d}", {"stat": "std", "direction": d}, rank=30) for d in ("grows", "shrinks"))

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        """A trend goes into a baseline where Spearman |ρ| ≥ :data:`TREND_MIN_RHO` in its direction."""
        rhos = [v["rho"] for v in self.evaluate(tensors).observed.values()]
        sign = -1 if self.direction == "shrinks" else 1
        held = bool(rhos) and all(math.isfinite(r) and sign * r >= TREND_MIN_RHO for r in rhos)
        return held and "min_rho" in proposals
