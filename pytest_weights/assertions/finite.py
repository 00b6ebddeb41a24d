"""``finite``: no NaN or Inf in any selected tensor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..stats import Moments, Statistic
from .base import NONFINITE, Assertion, Deviation, Outcome, Suggestion, TensorView, register
from .proposal import Proposal


@register
@dataclass(frozen=True)
class Finite(Assertion):
    """Every value is finite: no NaN, no ±Inf. Reports the counts per tensor."""

    kind = "finite"
    reads_values = False  # it reports the NaN/Inf counts itself
    judges_values = False

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
                        None,
                        float(bad),
                        (0, 0),
                        NONFINITE,
                    )
                )
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        summary = f"{len(rows)} of {n} tensors hold NaN or Inf" if rows else f"all {n} tensors finite"
        return Outcome(not rows, summary, tuple(rows), n, observed=observed, statistic=NONFINITE, bounds=(0, 0))

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        if level != "floats":
            return ()
        return (Suggestion("finite", rank=0, comment=f"every float tensor ({count})"),)

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        return True  # nothing to propose: finiteness always belongs in a baseline
