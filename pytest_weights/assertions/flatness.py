"""``flatness``: no matrix is flat-topped (uniform-like) among the model's bell-shaped matrices."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import ClassVar

from ..stats import Moments, Statistic
from .base import Assertion, Deviation, Outcome, TensorView, fmt, register
from .groups import peers_problem, too_few
from .proposal import SLACK, Proposal, finite, lower


@register
@dataclass(frozen=True)
class Flatness(Assertion):
    """Excess kurtosis of each tensor is ≥ ``min_kurtosis`` or within ``max_below_median`` of
    the median over every selected tensor.

    Judged against the model's own matrices, not an absolute bound: a uniform distribution
    has excess kurtosis −1.2, so a matrix left at (or reset to) PyTorch's default
    ``kaiming_uniform`` init among trained, bell-shaped matrices (kurtosis ≳ 0) fails,
    while a model whose matrices are all still near that init (early in training: median
    ≈ −1.15) passes. A tensor fails when its kurtosis is below both ``min_kurtosis`` and
    (median − ``max_below_median``). A NaN kurtosis (constant tensor) is left to the
    ``std`` checks. Fewer than ``min_tensors`` selected: skipped (no model to compare with).
    """

    kind = "flatness"
    problem = "flat"
    baseline = ("min_kurtosis",)
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"min_kurtosis": -2.0}  # excess kurtosis ≥ −2 always
    min_kurtosis: float = -1.0
    max_below_median: float = 1.0
    min_tensors: int = 3

    def validate(self) -> str | None:
        if not -2 < self.min_kurtosis < 0:
            return f"min_kurtosis must be in (−2, 0) (uniform: −1.2; Gaussian: 0), got {self.min_kurtosis}"
        if not self.max_below_median > 0:
            return f"max_below_median must be > 0, got {self.max_below_median}"
        return peers_problem(self.min_tensors)

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def describe(self) -> str:
        return f"kurtosis ≥ {fmt(self.min_kurtosis)} or within {fmt(self.max_below_median)} of the model median"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        skip = too_few(tensors, self.min_tensors)
        if skip is not None:
            return skip
        n = len(tensors)
        values = {t.name: float(t[Moments()].kurtosis) for t in tensors}
        finite = [v for v in values.values() if not math.isnan(v)]
        med = median(finite) if finite else math.nan
        bound = min(self.min_kurtosis, med - self.max_below_median) if finite else self.min_kurtosis
        rows = [
            Deviation(
                name,
                f"kurtosis={fmt(v)}",
                f"≥ {fmt(bound)} (model median {fmt(med)})",
                f"flat below min({fmt(self.min_kurtosis)}, median − {fmt(self.max_below_median)})",
                bound - v,
                None,
                v,
                (bound, None),
                "kurtosis",
            )
            for name, v in values.items()
            if v < bound
        ]
        rows.sort(key=lambda d: -d.score)
        numbers: dict = {"statistic": "kurtosis", "bounds": (bound, None)}
        notes = ()
        if finite and med < self.min_kurtosis / 2:
            notes = (
                f"the model's matrices are flat-topped too (median kurtosis {fmt(med)}, e.g. still near a uniform "
                f"init): bound relaxed to {fmt(bound)}",
            )
        if rows:
            summary = f"{len(rows)} of {n} tensors are flat (uniform-like) among bell-shaped matrices"
            return Outcome(False, summary, tuple(rows), n, notes=notes, observed=values, **numbers)
        return Outcome(True, f"all {n} tensors: {self.describe()}", (), n, notes=notes, observed=values, **numbers)

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        outcome = self.evaluate(tensors)
        if outcome.skipped:
            return {}, [outcome.summary]
        kurt = finite(outcome.observed.values())
        if not kurt:
            return {}, ["no finite kurtosis"]
        lo = min(kurt)
        value = lo - margin * max(abs(lo), SLACK["kurtosis"])
        return {"min_kurtosis": lower(value, lo, f"observed min kurtosis {fmt(lo)}")}, []
