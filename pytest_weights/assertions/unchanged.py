"""``unchanged``: selected tensors equal their reference ("frozen layers did not move")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..readers.derived import DeltaInfo
from ..stats import Statistic
from ..stats.change import ChangedFraction
from .base import Assertion, Deviation, Outcome, TensorView, fmt, register

#: What to write when the kind is used on the weights instead of ΔW.
NEEDS_DELTA = (
    "'unchanged' compares each tensor with --reference element by element: add 'view: delta' "
    "to the entry (or to defaults)"
)


def percent(fraction: float) -> str:
    """``12.5%``, ``0.0007%``: a fraction as a percentage with 3 significant digits."""
    return "nan" if math.isnan(fraction) else f"{100 * fraction:.3g}%"


@register
@dataclass(frozen=True)
class Unchanged(Assertion):
    """Every selected tensor's *changed fraction* ≤ ``max_changed_fraction`` (default 0: none moved).

    The changed fraction of a tensor is the share of its elements that differ from the
    reference by more than ``atol`` (|W − W_ref| > atol), a NaN or ±Inf on either side
    counting as changed. Needs ``view: delta`` and ``--reference`` (names matched as for
    ΔW: ``module.`` / ``_orig_mod.`` / ``model.`` wrappers stripped when that pairs them).
    "Frozen layers unchanged": select them; "only the LoRA targets changed": ``select:
    {exclude: ["*lora*", …]}``. Counted exactly in one streamed sweep of ΔW (cached). A
    tensor whose shape differs from the reference's is left out of ΔW with a note naming
    both shapes (``pytest-weights check`` prints it). The tolerance is absolute (ΔW holds
    no per-element reference magnitude); for one relative to each element use
    ``pytest-weights diff --rtol``.
    """

    kind = "unchanged"
    reads_values = False  # NaN/Inf are changes here, counted by the kind itself
    max_changed_fraction: float = 0.0
    atol: float = 0.0

    def validate(self) -> str | None:
        if not 0 <= self.max_changed_fraction <= 1:
            return f"max_changed_fraction must be in [0, 1], got {self.max_changed_fraction}"
        if not self.atol >= 0:
            return f"atol must be ≥ 0, got {self.atol}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (ChangedFraction(self.atol),)

    def describe(self) -> str:
        limit = self.max_changed_fraction
        share = "no element" if limit == 0 else f"≤ {percent(limit)} of elements"
        return f"{share} of a tensor differs from the reference (|ΔW| > {fmt(self.atol)}, or NaN/Inf)"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        if not all(isinstance(t.info, DeltaInfo) for t in tensors):
            return Outcome(False, NEEDS_DELTA, (), len(tensors))
        stat = ChangedFraction(self.atol)
        rows, observed = [], {}
        for t in tensors:
            r = t[stat]
            observed[t.name] = r.fraction
            if r.fraction > self.max_changed_fraction or math.isnan(r.fraction):
                counts = f"{r.changed} of {r.numel}" + (f", {r.nonfinite} NaN/Inf" if r.nonfinite else "")
                rows.append(
                    Deviation(
                        t.name,
                        f"{percent(r.fraction)} changed ({counts}; max |ΔW| {fmt(r.absmax)})",
                        f"≤ {percent(self.max_changed_fraction)} changed",
                        f"|ΔW| > {fmt(self.atol)}",
                        r.fraction if r.numel else math.inf,
                    )
                )
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        if rows:
            return Outcome(False, f"{len(rows)} of {n} tensors changed", tuple(rows), n, observed=observed)
        return Outcome(True, f"all {n} tensors unchanged", (), n, observed=observed)
