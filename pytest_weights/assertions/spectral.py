"""``spectral``: singular-value health of weight matrices (WeightWatcher's ESD α, norms)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..stats import Statistic
from ..stats.spectral import Spectral, SpectralResult
from .base import Assertion, Deviation, Outcome, TensorView, fmt, interval, register
from .proposal import Proposal, band, finite, lower, upper


@register
@dataclass(frozen=True)
class SpectralKind(Assertion):
    """Power-law α of the eigenvalue tail of WᵀW in [``alpha_min``, ``alpha_max``], and norms.

    α follows WeightWatcher's default fit (xmin chosen by the KS distance; eigenvalues
    σ² unnormalised). WeightWatcher reads 2 ≤ α ≤ 6 as well trained, α > 6 as under-trained
    (close to random), α < 2 as over-fitted / very heavy-tailed. Optional:
    ``max_spectral_norm`` (‖W‖₂ = σ_max, not WeightWatcher's ``spectral_norm`` column,
    which is σ_max²) and ``min_stable_rank`` (‖W‖_F²/‖W‖₂²; a collapsed matrix has ≈ 1).
    α is not defined for matrices with a side < 8 (WeightWatcher skips them): noted, not
    judged. Needs the whole matrix (see :mod:`pytest_weights.stats.spectral`).
    """

    kind = "spectral"
    baseline = ("alpha_min", "alpha_max", "max_spectral_norm", "min_stable_rank")
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"min_stable_rank": 1.0}  # stable rank ≥ 1
    alpha_min: float | None = 2.0
    alpha_max: float | None = 6.0
    max_spectral_norm: float | None = None
    min_stable_rank: float | None = None

    def validate(self) -> str | None:
        if self.alpha_min is not None and self.alpha_max is not None and self.alpha_min > self.alpha_max:
            return f"alpha_min ({self.alpha_min}) is larger than alpha_max ({self.alpha_max})"
        if all(v is None for v in (self.alpha_min, self.alpha_max, self.max_spectral_norm, self.min_stable_rank)):
            return "spectral needs at least one of alpha_min, alpha_max, max_spectral_norm, min_stable_rank"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (Spectral(),)

    def _expected(self) -> str:
        parts = []
        if self.alpha_min is not None or self.alpha_max is not None:
            parts.append(f"α {interval(self.alpha_min, self.alpha_max)}")
        if self.max_spectral_norm is not None:
            parts.append(f"‖W‖₂ ≤ {fmt(self.max_spectral_norm)}")
        if self.min_stable_rank is not None:
            parts.append(f"stable rank ≥ {fmt(self.min_stable_rank)}")
        return ", ".join(parts)

    def describe(self) -> str:
        return "spectral: " + self._expected()

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        rows, observed, small = [], {}, []
        expected = self._expected()
        check_alpha = self.alpha_min is not None or self.alpha_max is not None
        for t in tensors:
            r: SpectralResult = t[Spectral()]
            observed[t.name] = {
                "alpha": r.alpha, "spectral_norm": r.spectral_norm, "stable_rank": r.stable_rank,
                "xmin": r.alpha_xmin, "n_tail": r.n_tail,
            }  # fmt: skip
            bad = []
            if check_alpha:
                if math.isnan(r.alpha) and min(r.rows, r.cols) < 8 and not math.isnan(r.spectral_norm):
                    small.append(t.name)
                elif math.isnan(r.alpha):
                    bad.append(math.inf)
                elif self.alpha_min is not None and r.alpha < self.alpha_min:
                    bad.append((self.alpha_min - r.alpha) / self.alpha_min)
                elif self.alpha_max is not None and r.alpha > self.alpha_max:
                    bad.append((r.alpha - self.alpha_max) / self.alpha_max)
            if self.max_spectral_norm is not None and not r.spectral_norm <= self.max_spectral_norm:
                bad.append(_rel(r.spectral_norm, self.max_spectral_norm))
            if self.min_stable_rank is not None and not r.stable_rank >= self.min_stable_rank:
                bad.append(_rel(self.min_stable_rank, r.stable_rank))
            if bad:
                text = (
                    f"α={fmt(r.alpha)} (tail {r.n_tail} of {r.n_evals}) ‖W‖₂={fmt(r.spectral_norm)} "
                    f"stable rank={fmt(r.stable_rank)}"
                )
                alpha = (self.alpha_min, self.alpha_max)
                rows.append(Deviation(t.name, text, expected, "", max(bad), None, r.alpha, alpha, "α"))
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        notes = (f"α not defined for {len(small)} matrix(es) with a side < 8",) if small else ()
        summary = f"{len(rows)} of {n} tensors deviate: expected {expected}" if rows else f"all {n} tensors: {expected}"
        return Outcome(not rows, summary, tuple(rows), n, notes, observed)

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        observed = self.evaluate(tensors).observed
        out: dict[str, Proposal] = {}
        alpha = {n: v["alpha"] for n, v in observed.items() if math.isfinite(v["alpha"])}
        if alpha:
            got, _ = band("esd_alpha", alpha, margin, "alpha_min", "alpha_max", "α")
            out.update(got)
        norms = finite(v["spectral_norm"] for v in observed.values())
        if norms:
            top = max(norms)
            out["max_spectral_norm"] = upper(top * (1 + margin), top, f"observed max ‖W‖₂ {fmt(top)}")
        ranks = finite(v["stable_rank"] for v in observed.values())
        if ranks:
            lo = min(ranks)
            out["min_stable_rank"] = lower(lo / (1 + margin), lo, f"observed min {fmt(lo)}")
        return out, []


def _rel(big: float, small: float) -> float:
    if math.isnan(big) or math.isnan(small):
        return math.inf
    return (big - small) / max(abs(small), 1e-30)
