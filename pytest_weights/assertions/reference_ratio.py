"""``reference_ratio``: a statistic compared with the same tensor in the reference checkpoint."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import Statistic
from ..stats.scalars import SCALARS
from .base import Assertion, Outcome, ParamError, TensorView, interval, per_tensor, register, unknown_statistic
from .proposal import Proposal, band


@register
@dataclass(frozen=True)
class ReferenceRatio(Assertion):
    """stat(W) / stat(W_ref) lies in [``min_ratio``, ``max_ratio``] for every tensor.

    Paper A: fine-tuning *widens* weights, std(W_ft) ≥ std(W_pt): ``stat: std, min_ratio: 1``.
    Needs ``--reference``; tensors are matched by name.
    """

    kind = "reference_ratio"
    baseline = ("min_ratio", "max_ratio")
    needs_reference = True
    stat: str = "std"
    min_ratio: float | None = None
    max_ratio: float | None = None

    def validate(self) -> str | None:
        if self.stat not in SCALARS:
            raise ParamError("stat", unknown_statistic(self.stat))
        if self.min_ratio is None and self.max_ratio is None:
            return "reference_ratio needs 'min_ratio', 'max_ratio' or both"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (SCALARS[self.stat].statistic,)

    def describe(self) -> str:
        return f"{self.stat}(W) / {self.stat}(W_ref) {interval(self.min_ratio, self.max_ratio)}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        s = SCALARS[self.stat]
        lo = -math.inf if self.min_ratio is None else self.min_ratio
        hi = math.inf if self.max_ratio is None else self.max_ratio

        def ratio(t: TensorView) -> float:
            ref = s.read(t.reference[s.statistic]) if t.reference else math.nan
            return s.read(t[s.statistic]) / ref if ref else math.nan

        return per_tensor(
            tensors,
            ratio,
            lambda r: None if lo <= r <= hi else (math.inf if math.isnan(r) else max(lo - r, r - hi)),
            f"{self.stat} ratio to the reference {interval(self.min_ratio, self.max_ratio)}",
            tolerance=f"ratio {interval(self.min_ratio, self.max_ratio)}",
            statistic=f"{self.stat} ratio",
            bounds=(self.min_ratio, self.max_ratio),
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        observed = self.evaluate(tensors).observed  # stat(W) / stat(W_ref) per tensor
        return band("ratio", observed, margin, "min_ratio", "max_ratio", f"{self.stat} ratio")
