"""``bimodality``: Sarle's bimodality coefficient stays below the uniform's 5/9 (paper C)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..stats import Moments, Statistic
from ..stats.shape import BC_UNIFORM, bimodality_coefficient
from .base import Assertion, Outcome, TensorView, fmt, per_tensor, register
from .proposal import Proposal, finite, upper


@register
@dataclass(frozen=True)
class Bimodality(Assertion):
    """Sarle's BC = (G1² + 1)/(G2 + 3(n−1)²/((n−2)(n−3))) of each tensor is ≤ ``max_bc``.

    G1, G2: bias-corrected sample skewness and excess kurtosis. A Gaussian has BC ≈ 1/3, a
    uniform 5/9 (the customary threshold, the default), two separated spikes → 1. Paper C
    reads a distribution turning bimodal during training as a bifurcation. NaN (fewer than
    4 values, or std 0) fails.
    """

    kind = "bimodality"
    baseline = ("max_bc",)
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"max_bc": 1.0}  # BC ≤ 1
    max_bc: float = BC_UNIFORM

    def validate(self) -> str | None:
        if not 0 < self.max_bc <= 1:
            return f"max_bc must be in (0, 1], got {self.max_bc}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def describe(self) -> str:
        return f"bimodality coefficient ≤ {fmt(self.max_bc)}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        return per_tensor(
            tensors,
            lambda t: bimodality_coefficient(t[Moments()]),
            lambda v: math.inf if math.isnan(v) else (v - self.max_bc if v > self.max_bc else None),
            f"BC ≤ {fmt(self.max_bc)}",
            statistic="BC",
            bounds=(None, self.max_bc),
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        vals = finite(self.evaluate(tensors).observed.values())
        if not vals:
            return {}, ["no finite bimodality coefficient"]
        top = max(vals)
        return {"max_bc": upper(top * (1 + margin), top, f"observed max {fmt(top)}")}, []
