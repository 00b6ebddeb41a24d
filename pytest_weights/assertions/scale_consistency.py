"""``scale_consistency``: each matrix's scale, relative to its fan-in, is close to the model's median."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import ClassVar

from ..stats import Moments, Statistic
from .base import Assertion, Deviation, Outcome, TensorView, fmt, register
from .groups import peers_problem, too_few
from .proposal import Proposal, lower, upper


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output unit in PyTorch's layout: ``in`` of a Linear (out, in), ``in·k…`` of a conv."""
    n = 1
    for s in shape[1:]:
        n *= s
    return max(n, 1)


def scale(t: TensorView) -> float:
    """std·√fan_in: about 1/√3 for PyTorch's default init, ≈ gain for a trained layer, at any width."""
    return t[Moments()].std * math.sqrt(fan_in(t.info.shape))


@register
@dataclass(frozen=True)
class ScaleConsistency(Assertion):
    """std·√fan_in of each tensor lies within [``min_ratio``, ``max_ratio``] × the median over
    every selected tensor (all roles together).

    Architecture-neutral: initialisation and training keep a layer's output scale, i.e.
    std·√fan_in, within a small factor of the model's other layers whatever their width,
    kind (linear, conv, LSTM) or name, so a matrix scaled ×100 or ×0.01, zeroed or
    constant stands out even when it has no same-role siblings. ``fan_in`` is the product
    of the dimensions after the first (PyTorch's layout; ONNX MatMul weights are stored
    (in, out), which shifts their ratio by √(out/in)). On the calibration zoo (README,
    "The default spec") healthy matrices stay within ×0.062–×3.3 of their model's median;
    the band is asymmetric because small-scale layers (poolers, projections before a
    normalisation, heads) are common and large-scale ones are not. Fewer than
    ``min_tensors`` selected tensors: nothing to compare, the item is skipped.
    """

    kind = "scale_consistency"
    problem = "scale"
    ratio_to = "the model's median scale (std·√fan_in)"
    ratio_rank = 10
    baseline = ("min_ratio", "max_ratio")
    cannot_fail_at: ClassVar[Mapping[str, float]] = {"min_ratio": 0.0}  # ratios are > 0
    min_ratio: float = 0.045
    max_ratio: float = 5.0
    min_tensors: int = 3

    def validate(self) -> str | None:
        if not 0 < self.min_ratio < 1 < self.max_ratio:
            return f"need 0 < min_ratio < 1 < max_ratio, got {self.min_ratio} and {self.max_ratio}"
        return peers_problem(self.min_tensors)

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(),)

    def describe(self) -> str:
        return f"std·√fan_in within ×{fmt(self.min_ratio)}–×{fmt(self.max_ratio)} of the model median"

    def ratios(self, tensors: Sequence[TensorView]) -> tuple[dict[str, float], float, dict[str, float]]:
        """Each tensor's std·√fan_in, their median and each ratio to it (NaN without a positive
        median): the one place the ratio is computed (verdict and proposal)."""
        values = {t.name: scale(t) for t in tensors}
        finite = [v for v in values.values() if math.isfinite(v)]
        med = median(finite) if finite else math.nan
        return values, med, {n: v / med if med > 0 else math.nan for n, v in values.items()}

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        skip = too_few(tensors, self.min_tensors)
        if skip is not None:
            return skip
        values, med, ratios = self.ratios(tensors)
        rows = []
        for name, v in values.items():
            ratio = ratios[name]
            if not self.min_ratio <= ratio <= self.max_ratio:  # NaN fails too
                score = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
                rows.append(
                    Deviation(
                        name,
                        f"std·√fan_in={fmt(v)} (×{fmt(ratio)})",
                        f"≈ {fmt(med)} (median of {len(values)} matrices)",
                        f"ratio in [{fmt(self.min_ratio)}, {fmt(self.max_ratio)}]",
                        score,
                        ratio,
                        v,
                        (med * self.min_ratio, med * self.max_ratio),
                        "std·√fan_in",
                    )
                )
        rows.sort(key=lambda d: -d.score)
        n = len(tensors)
        what = self.describe()
        numbers: dict = {"statistic": "std·√fan_in", "bounds": (med * self.min_ratio, med * self.max_ratio)}
        if rows:
            summary = f"{len(rows)} of {n} tensors deviate: expected {what}"
            return Outcome(False, summary, tuple(rows), n, observed=values, **numbers)
        return Outcome(True, f"all {n} tensors: {what}", (), n, observed=values, **numbers)

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        skip = too_few(tensors, self.min_tensors)
        if skip is not None:
            return {}, [skip.summary]
        values, med, ratios = self.ratios(tensors)
        held = [ratios[n] for n, v in values.items() if math.isfinite(v)]
        if not (med > 0 and min(held) > 0):
            return {}, ["a matrix with std 0 (or no finite scale): no ratio bound holds"]
        lo, hi = min(held), max(held)
        return {
            "min_ratio": lower(lo / (1 + margin), lo, f"observed min ratio {fmt(lo)}"),
            "max_ratio": upper(max(hi * (1 + margin), 1.01), hi, f"observed max ratio {fmt(hi)}"),
        }, []
