"""NaN and ±Inf counts for the NaN/Inf policy, at no cost when another sweep already tells.

Every kind that reads values fails a tensor holding NaN/Inf, naming the counts. The moments
count them; a kind that needs no moments (the Weibull fits read the log|w| histogram, which
counts non-finite values as one total) would pay a whole power-sums sweep just for that.
:class:`NonFinite` instead reads the histogram's total and sweeps the tensor for the NaN/Inf
split only when that total is not zero (a broken tensor), so healthy tensors cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .base import Deps, Statistic, cacheable
from .weibull import LogAbsHistogram


@cacheable
class NonFiniteResult(NamedTuple):
    numel: int
    nan: int
    inf: int


@dataclass(frozen=True)
class NonFinite(Statistic):
    """NaN and ±Inf counts, from the log|w| histogram (swept only when it found non-finite values)."""

    layout = "flat"

    def requires(self) -> tuple[Statistic, ...]:
        return (LogAbsHistogram(),)

    def needs_sweep(self, deps: Deps) -> bool:
        return deps[LogAbsHistogram()].nonfinite > 0

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[int, int, int]:
        return block.numel(), int(torch.isnan(block).sum()), int(torch.isinf(block).sum())

    def merge(self, a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
        return a[0] + b[0], a[1] + b[1], a[2] + b[2]

    def finalize(self, state: tuple[int, int, int] | None, deps: Deps) -> NonFiniteResult:
        if state is None:  # the histogram saw no NaN/Inf
            h = deps[LogAbsHistogram()]
            return NonFiniteResult(h.finite + h.nonfinite, 0, 0)
        return NonFiniteResult(*state)
