"""``width_transfer``: a model follows its reference's weight distribution across widths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ..errors import excerpt
from ..stats import Statistic
from ..stats.transfer import RowColNorms, StdEntryHistogram, hist_distances, sample_distances
from .base import Assertion, Deviation, Outcome, TensorView, fmt, register
from .groups import by_role

QUANTITIES = ("entries", "row_norms", "col_norms")


@register
@dataclass(frozen=True)
class WidthTransfer(Assertion):
    """Each matrix matches its reference counterpart in distribution (paper B, RC ansatz).

    Tensors are matched by role and relative depth (layer i of L ↔ the nearest of
    j/(L_ref − 1)), so models of different widths and depths compare. After
    standardisation (``rms`` or ``fan_in``), for each quantity in ``compare`` (entries,
    row_norms, col_norms) the two-sample KS distance must be ≤ ``max_ks`` and, if set,
    the Wasserstein-1 distance ≤ ``max_w1``. Row and column norms (RMS of each row or
    column) are compared after centring and scaling them to unit spread: for i.i.d.
    entries their spread shrinks like 1/√width, so only the shape of their distribution
    is comparable across widths. Entries are compared on a 4096-bin grid over
    ±8 (KS error ≤ one bin's mass, W1 error ≤ 0.004); row and column norms exactly.
    Needs ``--reference`` (e.g. the narrow model).
    """

    kind = "width_transfer"
    needs_reference: ClassVar[bool] = True
    match_reference: ClassVar[str] = "role"
    standardise: Literal["rms", "fan_in"] = "rms"
    max_ks: float = 0.05
    max_w1: float | None = None
    compare: tuple[str, ...] = QUANTITIES

    def validate(self) -> str | None:
        bad = [c for c in self.compare if c not in QUANTITIES]
        if bad or not self.compare:
            what = f"unknown {excerpt(bad)}" if bad else "nothing to compare"
            return f"compare: {what}; choose from {', '.join(QUANTITIES)}"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        return (StdEntryHistogram(self.standardise), RowColNorms(self.standardise))

    def describe(self) -> str:
        w1 = f", W1 ≤ {fmt(self.max_w1)}" if self.max_w1 is not None else ""
        what = "/".join(self.compare)
        return f"{what} follow the reference ({self.standardise}-standardised): KS ≤ {fmt(self.max_ks)}{w1}"

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:  # pragma: no cover - needs the reference
        return Outcome(False, "width_transfer compares against a reference: pass --reference")

    def evaluate_reference(self, tensors: Sequence[TensorView], reference: Sequence[TensorView]) -> Outcome:
        pairs, unmatched = match(tensors, reference)
        rows, observed = [], {}
        for t, r in pairs:
            for q in self.compare:
                ks, w1 = self._distance(q, t, r)
                observed[f"{t.name}|{q}"] = {"reference": r.name, "ks": ks, "w1": w1}
                bad_w1 = self.max_w1 is not None and w1 > self.max_w1
                if ks > self.max_ks or bad_w1:
                    rows.append(
                        Deviation(
                            f"{t.name} ~ {r.name} [{q}]",
                            f"KS={fmt(ks)} W1={fmt(w1)}",
                            f"KS ≤ {fmt(self.max_ks)}" + (f", W1 ≤ {fmt(self.max_w1)}" if self.max_w1 else ""),
                            self.standardise,
                            ks - self.max_ks,
                        )
                    )
        notes = (f"no reference counterpart for: {', '.join(unmatched[:5])}",) if unmatched else ()
        if not pairs:
            return Outcome(False, "no tensor has a counterpart (same role) in the reference", (), len(tensors), notes)
        rows.sort(key=lambda d: -d.score)
        n = len(pairs) * len(self.compare)
        summary = f"{len(rows)} of {n} comparisons deviate" if rows else f"all {n} comparisons within tolerance"
        return Outcome(not rows, summary, tuple(rows), len(pairs), notes, observed)

    def _distance(self, quantity: str, t: TensorView, r: TensorView) -> tuple[float, float]:
        if quantity == "entries":
            h = StdEntryHistogram(self.standardise)
            return hist_distances(t[h], r[h])
        norms_t, norms_r = t[RowColNorms(self.standardise)], r[RowColNorms(self.standardise)]
        which = "rows" if quantity == "row_norms" else "cols"
        return sample_distances(_centred(getattr(norms_t, which)), _centred(getattr(norms_r, which)))


def _centred(x: Sequence[float]) -> np.ndarray:
    """Row (column) RMS values centred and scaled to unit std: their spread around 1 shrinks
    like 1/√width for i.i.d. entries, so only the shape of their distribution compares."""
    a = np.asarray(x, float)
    sd = a.std()
    z = (a - a.mean()) / sd if sd > 0 else a - a.mean()
    return np.round(z, 9)  # float noise must not reorder equal values (KS is discrete on small samples)


def match(tensors: Sequence[TensorView], reference: Sequence[TensorView]) -> tuple[list, list[str]]:
    """Pair each tensor with the reference tensor of its role at the nearest relative depth."""
    ref_roles = by_role(reference)
    pairs, unmatched = [], []
    for role, group in by_role(tensors).items():
        candidates = ref_roles.get(role)
        if not candidates:
            unmatched += [t.name for t in group]
            continue
        depths = sorted({t.depth for t in group if t.depth is not None})
        ref_depths = sorted({r.depth for r in candidates if r.depth is not None})
        for t in group:
            if t.depth is None or not ref_depths:
                pairs.append((t, candidates[0]))
                continue
            rel = depths.index(t.depth) / max(len(depths) - 1, 1)
            j = min(range(len(ref_depths)), key=lambda k: abs(k / max(len(ref_depths) - 1, 1) - rel))
            pairs.append((t, next(r for r in candidates if r.depth == ref_depths[j])))
    return pairs, unmatched
