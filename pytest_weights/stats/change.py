"""How much of a difference tensor (ΔW = W − W_ref, the ``view: delta`` tensors) is a change.

:class:`ChangedFraction` counts the elements of ΔW with |ΔW| > ``atol`` or not finite (a NaN
or ±Inf on either side of the difference): the elements that moved. One streamed sweep in
small tiles (temporaries stay in cache whatever the slice size); counts add across slices,
so the result is exact for any split, and it is cached like any statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .base import Deps, Statistic, cacheable
from .kernels import scratch

#: Elements per tile of the sweep: a few small temporaries per tile.
TILE = 1 << 16


@cacheable
class ChangeResult(NamedTuple):
    """Elements of ΔW beyond the tolerance: ``changed`` of ``numel`` (``nonfinite`` of them NaN/Inf)."""

    numel: int
    changed: int
    nonfinite: int
    absmax: float  # largest finite |ΔW| (0 when none)

    @property
    def fraction(self) -> float:
        return self.changed / self.numel if self.numel else math.nan


@dataclass(frozen=True)
class ChangedFraction(Statistic):
    """Count of elements with |x| > ``atol`` or x not finite (see the module docstring)."""

    atol: float = 0.0
    layout = "flat"

    def reduce(self, block: torch.Tensor, deps: Deps) -> tuple[int, int, int, float]:
        x = block.reshape(-1)
        changed = nonfinite = 0
        top = 0.0
        for i in range(0, x.numel(), TILE):
            t = x[i : i + TILE]
            a = torch.abs(t, out=scratch("change.a", t.numel(), t.dtype, t.device))
            over = torch.gt(a, self.atol, out=scratch("change.over", t.numel(), torch.float32, a.device))
            changed += int(over.sum())  # a float32 0/1 mask: exact (≤ 2¹⁶ per tile), and the fastest to sum
            if not bool(torch.isfinite(a.sum())):  # NaN/Inf here (or a sum overflowing): count them
                finite = torch.isfinite(a)
                bad = a.numel() - int(finite.sum())
                nonfinite += bad
                changed += int(torch.isnan(a).sum())
                a = a[finite]
            if a.numel():
                top = max(top, float(a.max()))
        return x.numel(), changed, nonfinite, top

    def merge(self, a: tuple[int, int, int, float], b: tuple[int, int, int, float]) -> tuple[int, int, int, float]:
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], max(a[3], b[3])

    def finalize(self, state: tuple[int, int, int, float] | None, deps: Deps) -> ChangeResult:
        return ChangeResult(*(state if state is not None else (0, 0, 0, 0.0)))
