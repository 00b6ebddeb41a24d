"""``gaussian_ks``: values are Gaussian within a Kolmogorov–Smirnov distance tolerance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..stats import KSNormal, Statistic
from .base import Assertion, Deviation, Outcome, Suggestion, TensorView, fmt, register
from .proposal import KS_TOL_FLOOR, Proposal, finite, upper

#: A role whose KS distance exceeds this (a constant matrix has D = 1) gets no KS baseline from ``init``.
MAX_BASELINE_KS = 0.5


@register
@dataclass(frozen=True)
class GaussianKS(Assertion):
    """KS distance D between the tensor's values and N(mean, std²) of the tensor is ≤ ``tol``.

    A distance, never a p-value (with 10⁶ values every p-value is 0). For reference
    (paper A): a true Gaussian sample of n values has D ≈ 0.87/√n against a known normal,
    ≈ 0.63/√n against its own fitted normal as here (Lilliefors; 0.0006 at n = 10⁶);
    Student-t(5) gives D ≈ 0.038; a uniform distribution D ≈ 0.058. A constant tensor has D = 1.

    From the value histogram without another pass (see :mod:`pytest_weights.stats.ks`): exact
    for 16- and 8-bit tensors; for float32 the observed value is a lower bound L with
    D ≤ L + 2.4e−4 for centred weights (the bound is made exact by a second sweep when wider
    than 1e−3). ``exact: true`` always computes D exactly (one more sweep per tensor). A
    tensor passes only when the upper bound of D is within ``tol``.
    """

    kind = "gaussian_ks"
    baseline = ("tol",)
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"tol": 1.0}  # D ≤ 1 always
    tol: float = 0.05
    exact: bool = False

    def validate(self) -> str | None:
        if not 0 < self.tol <= 1:
            return f"tol must be in (0, 1], got {self.tol}"
        return None

    @property
    def statistic(self) -> KSNormal:
        return KSNormal(max_error=0.0) if self.exact else KSNormal()

    def statistics(self) -> tuple[Statistic, ...]:
        return (self.statistic,)

    def describe(self) -> str:
        return f"KS distance to the fitted normal ≤ {fmt(self.tol)}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        # D ∈ [statistic, statistic + error_bound]: a tensor passes only if the upper end is
        # within tolerance (bounds are tight for centred weights, exact after refinement)
        expected = f"KS D ≤ {fmt(self.tol)}"
        rows, observed = [], {}
        for t in tensors:
            r = t[self.statistic]
            observed[t.name] = r.statistic
            if r.statistic + r.error_bound > self.tol:
                shown = fmt(r.statistic) if r.exact else f"{fmt(r.statistic)} … {fmt(r.statistic + r.error_bound)}"
                score = r.statistic - self.tol
                tol = f"tol={fmt(self.tol)}"
                rows.append(Deviation(t.name, shown, expected, tol, score, None, r.statistic, (None, self.tol), "KS D"))
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        summary = f"{len(rows)} of {n} tensors deviate: expected {expected}" if rows else f"all {n} tensors: {expected}"
        notes = ()
        if any(d.observed.count("…") for d in rows):
            notes = (
                "a range is D's bounds (no exact value: too many distinct values; raise max_exact via exact: true)",
            )
        return Outcome(
            not rows, summary, tuple(rows), n, notes=notes, observed=observed, statistic="KS D", bounds=(None, self.tol)
        )

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        vals = finite(self.evaluate(tensors).observed.values())
        if not vals:
            return {}, ["no finite KS distance"]
        top = max(vals)
        return {"tol": upper(top * (1 + margin), top, f"observed max D {fmt(top)}", KS_TOL_FLOOR)}, []

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        return (Suggestion("gaussian", rank=10),) if level == "role" else ()

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        # a role with a constant or far-from-normal matrix gets no KS baseline
        return "tol" in proposals and proposals["tol"].observed <= MAX_BASELINE_KS
