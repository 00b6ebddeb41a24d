"""``finite``: no NaN or Inf in any selected tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import Moments, Statistic
from .base import Assertion, Deviation, Outcome, TensorView, register


@register
@dataclass(frozen=True)
class Finite(Assertion):
    """Every value is finite: no NaN, no ±Inf. Reports the counts per tensor."""

    kind = "finite"
    reads_values = False  # it reports the NaN/Inf counts itself

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def describe(self) -> str:
        return "no NaN or Inf"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        rows = []
        observed = {}
        for t in tensors:
            m = t[Moments()]
            observed[t.name] = {"nan": m.nan, "inf": m.inf, "numel": m.numel}
            if m.nan or m.inf:
                bad = m.nan + m.inf
                rows.append(
                    Deviation(
                        t.name,
                        f"{m.nan} NaN, {m.inf} Inf of {m.numel}",
                        "0 non-finite",
                        "",
                        bad / max(m.numel, 1),
                    )
                )
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        if rows:
            return Outcome(False, f"{len(rows)} of {n} tensors hold NaN or Inf", tuple(rows), n, observed=observed)
        return Outcome(True, f"all {n} tensors finite", (), n, observed=observed)
