"""The value histogram: every value of a tensor counted on a fine, data-independent grid.

One count over a bit-pattern key per value (:func:`.kernels.keys`, written in the
fused sweep by :class:`.kernels.KeyCounts`, shared with :class:`.moments.Moments`); counts add
across slices, chunks and machines, so the result is the same for any split, thread
count or device.

* float16, bfloat16, float8: the key is the value's own bit pattern, so each bin holds one
  exact value: the histogram *is* the multiset of values (exact KS, exact moments).
* float32: the key is the bit pattern truncated to sign, exponent and 10 mantissa bits, so
  bin [a, b) holds the values whose magnitude lies in [a, b), b − a = 2⁻¹⁰·2^⌊log₂ a⌋:
  2⁻¹¹ to 2⁻¹⁰ of the value, at every scale (no parameter, no overflow). float64 is rounded
  to float32 first, which blurs each edge by half a float32 step
  (:attr:`HistogramResult.slack`).

The map value ↦ bin is monotone, so the bins are disjoint intervals in value order with
exactly known edges: what :mod:`.ks` needs to bound the KS distance rigorously. NaN and ±Inf
fall into the non-finite keys and are left out (counted by :class:`.moments.Moments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import kernels
from .base import Deps, Statistic

#: A block's (or merged blocks') counts: dtype, the occupied keys (sorted), their counts.
_Counts = tuple[torch.dtype, torch.Tensor, torch.Tensor]


class HistogramResult(NamedTuple):
    """Occupied bins in value order: bin j holds ``counts[j]`` values, all in [lo[j], hi[j]].

    ``exact``: every bin is a single value (lo == hi). Tensors are float64/int64 on the CPU.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    counts: torch.Tensor
    n: int  # finite values counted
    exact: bool
    #: Relative uncertainty of the edges: 2⁻²⁴ for float64 data, else 0.
    slack: float = 0.0
    #: Every occupied finite key and the bin it counts into (both zero keys share a bin).
    keys: torch.Tensor | None = None
    bin_of_key: torch.Tensor | None = None


@dataclass(frozen=True)
class ValueHistogram(Statistic):
    """Counts of the finite values on their dtype's grid (see the module docstring)."""

    layout = "flat"

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[kernels.Kernel, ...]:
        return (kernels.KeyCounts(),)

    def reduce(self, block: torch.Tensor, deps: Deps, swept: kernels.BlockKernels | None = None) -> _Counts:
        swept = swept or kernels.sweep(block, self.tile_kernels(block.dtype, deps))
        counts = swept[kernels.KeyCounts()]  # a per-thread buffer: keep the occupied keys only
        occupied = counts.nonzero().squeeze(1)
        return block.dtype, occupied, counts[occupied]

    def merge(self, a: _Counts, b: _Counts) -> _Counts:
        (dtype, ka, ca), (_, kb, cb) = a, b
        if not len(kb) or not len(ka):
            return a if len(ka) else b
        keys, inverse = torch.unique(torch.cat([ka, kb]), sorted=True, return_inverse=True)
        counts = torch.zeros(len(keys), dtype=ca.dtype, device=ca.device).scatter_add_(0, inverse, torch.cat([ca, cb]))
        return dtype, keys, counts

    def finalize(self, state: _Counts | None, deps: Deps) -> HistogramResult:
        if state is None:
            empty = torch.zeros(0, dtype=torch.float64)
            return HistogramResult(empty, empty, torch.zeros(0, dtype=torch.int64), 0, True)
        dtype, occupied, counts = (x.cpu() if isinstance(x, torch.Tensor) else x for x in state)  # sorted keys
        half, finite = 1 << (kernels.key_bits(dtype) - 1), kernels.finite_magnitudes(dtype)
        at = torch.searchsorted(occupied, torch.tensor([finite, half, half + finite])).tolist()
        neg = torch.arange(at[1], at[2]).flip(0)  # v < 0 in value order: largest magnitude first
        pos = torch.cat([neg, torch.arange(at[0])])  # NaN/Inf keys (magnitudes ≥ finite) left out
        k = occupied[pos]
        c, value, m = counts[pos], kernels.key_values(dtype, k), len(neg)
        exact = kernels.exact_dtype(dtype)
        if exact:
            lo = hi = value
        else:  # the next key's value is the far end of a bin in magnitude: below for v < 0
            far = kernels.key_values(dtype, k + 1)
            lo, hi = torch.cat([far[:m], value[m:]]), torch.cat([value[:m], far[m:]])
        bins = torch.arange(len(k))
        if 0 < m < len(k) and k[m - 1] == half and k[m] == 0:  # −0 and +0: adjacent, one bin
            lo, c = lo.clone(), c.clone()
            lo[m], c[m] = lo[m - 1], c[m - 1] + c[m]
            keep = torch.arange(len(k)) != m - 1
            lo, hi, c = lo[keep], hi[keep], c[keep]
            bins = bins - (bins >= m).to(bins.dtype)
        slack = 2.0**-24 if dtype == torch.float64 else 0.0
        return HistogramResult(lo, hi, c, int(c.sum()), exact, slack, k, bins)
