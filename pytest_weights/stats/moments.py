"""Exact streaming moments (float64 accumulation, Chan/Pébay merge), min/max, NaN/Inf counts.

float32/float64 slices: min/max and power sums about 0 in the fused sweep
(:class:`.kernels.PowerSums`; NaN propagates through min/max, so the exact NaN/Inf counts
are taken only for slices that hold one), kept when the mean is small against the spread (no
cancellation: the common case for weights), else summed again about the slice's mean
(:func:`.kernels.power_sums`), corrected exactly in float64. 16- and 8-bit slices: from
the count of every distinct value (the slice's value histogram, shared with
:class:`.histogram.ValueHistogram`), summed in float64 — exact, and no float conversion pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from . import kernels
from .base import Deps, Statistic, cacheable


class MomentsState(NamedTuple):
    n: int
    mean: float
    m2: float
    m3: float
    m4: float
    min: float
    max: float
    nan: int
    inf: int
    numel: int


@cacheable
class MomentsResult(NamedTuple):
    """Moments of the finite elements; ``std`` is the population std (ddof=0)."""

    n: int
    numel: int
    nan: int
    inf: int
    mean: float
    std: float
    rms: float
    min: float
    max: float
    absmax: float
    skewness: float
    kurtosis: float  # excess kurtosis (0 for a Gaussian)


EMPTY = MomentsState(0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf, 0, 0, 0)

#: Sums about 0 are used when mean² ≤ this fraction of the mean square (cancellation ≤ 1 %).
_RAW_OK = 0.01
#: float32 power sums are used when the largest magnitude lies here (x⁴ stays a normal
#: float32 for the values that matter); otherwise the slice is summed in float64.
_F32_SAFE = (2.0**-28, 2.0**28)


def central(n: int, c: float, t1: float, t2: float, t3: float, t4: float) -> tuple[float, float, float, float]:
    """(mean, M2, M3, M4) from the power sums t_k = Σ(x − c)^k of n values (float64)."""
    delta = t1 / n  # correct the centre from c to the exact mean
    d2 = delta * delta  # products, not **: overflow gives inf instead of raising
    m2 = t2 - n * d2
    m3 = t3 - 3 * delta * t2 + 2 * n * d2 * delta
    m4 = t4 - 4 * delta * t3 + 6 * d2 * t2 - 3 * n * d2 * d2
    return c + delta, max(m2, 0.0), m3, max(m4, 0.0)


@dataclass(frozen=True)
class Moments(Statistic):
    """Count, mean, std, rms, min/max, skewness, excess kurtosis, NaN/Inf counts."""

    layout = "flat"

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[kernels.Kernel, ...]:
        return (kernels.KeyCounts(),) if kernels.exact_dtype(dtype) else (kernels.PowerSums(),)

    def reduce(self, block: torch.Tensor, deps: Deps, swept: kernels.BlockKernels | None = None) -> MomentsState:
        x = block.reshape(-1)
        numel = x.numel()
        swept = swept or kernels.sweep(x, self.tile_kernels(x.dtype, deps))
        if kernels.exact_dtype(x.dtype):
            return _from_counts(swept[kernels.KeyCounts()], x.dtype, numel)
        nan = inf = 0
        t1, t2, t3, t4, lo, hi = swept[kernels.PowerSums()].tolist() if numel else (0.0,) * 4 + (math.nan,) * 2
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN/Inf here (or empty): count, drop
            finite = torch.isfinite(x)
            nan = int(torch.isnan(x).sum())
            inf = numel - nan - int(finite.sum())
            x = x[finite]
            if x.numel() == 0:
                return EMPTY._replace(nan=nan, inf=inf, numel=numel)
            t1, t2, t3, t4, lo, hi = kernels.power_sums(x).tolist()
        n = x.numel()
        if x.dtype == torch.float32 and not _F32_SAFE[0] <= max(-lo, hi) <= _F32_SAFE[1]:
            x = x.to(torch.float64)  # x⁴ would overflow or underflow in float32
            t1, t2, t3, t4, _, _ = kernels.power_sums(x).tolist()
        c = 0.0
        if not (math.isfinite(t2) and t1 * t1 <= _RAW_OK * n * t2):
            c = float(torch.tensor(t1 / n, dtype=x.dtype))  # representable: x − c is exact near c
            t1, t2, t3, t4, _, _ = kernels.power_sums(x, c).tolist()
        mean, m2, m3, m4 = central(n, c, t1, t2, t3, t4)
        return MomentsState(n, mean, m2, m3, m4, lo, hi, nan, inf, numel)

    def merge(self, a: MomentsState, b: MomentsState) -> MomentsState:
        if a.n == 0 or b.n == 0:
            base = b if a.n == 0 else a
            return base._replace(nan=a.nan + b.nan, inf=a.inf + b.inf, numel=a.numel + b.numel)
        na, nb = a.n, b.n
        n = na + nb
        d = b.mean - a.mean
        mean = a.mean + d * nb / n
        m2 = a.m2 + b.m2 + d * d * na * nb / n
        d2 = d * d  # products, not **: overflow gives inf instead of raising
        m3 = a.m3 + b.m3 + d2 * d * na * nb * (na - nb) / (n * n) + 3 * d * (na * b.m2 - nb * a.m2) / n
        m4 = (
            a.m4
            + b.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6 * d2 * (na * na * b.m2 + nb * nb * a.m2) / (n * n)
            + 4 * d * (na * b.m3 - nb * a.m3) / n
        )
        return MomentsState(
            n, mean, m2, m3, m4, min(a.min, b.min), max(a.max, b.max),
            a.nan + b.nan, a.inf + b.inf, a.numel + b.numel,
        )  # fmt: skip

    def finalize(self, state: Any, deps: Deps) -> MomentsResult:
        s = state if state is not None else EMPTY
        if s.n == 0:
            nan = math.nan
            return MomentsResult(0, s.numel, s.nan, s.inf, nan, nan, nan, nan, nan, nan, nan, nan)
        var = s.m2 / s.n
        std = math.sqrt(var)
        if var > 0:
            skew = (s.m3 / s.n) / (var * std)
            kurt = (s.m4 / s.n) / (var * var) - 3.0
        else:
            skew = kurt = math.nan
        return MomentsResult(
            n=s.n, numel=s.numel, nan=s.nan, inf=s.inf, mean=s.mean, std=std,
            rms=math.sqrt(s.mean * s.mean + var), min=s.min, max=s.max,
            absmax=max(abs(s.min), abs(s.max)), skewness=skew, kurtosis=kurt,
        )  # fmt: skip


def _from_counts(counts: torch.Tensor, dtype: torch.dtype, numel: int) -> MomentsState:
    """Moments of a 16- or 8-bit slice from the count of each of its distinct values."""
    occupied = counts.nonzero().squeeze(1)
    values = kernels.key_values(dtype, occupied.cpu()).to(counts.device)
    w = counts[occupied]
    finite = torch.isfinite(values)
    nan = int(w[torch.isnan(values)].sum())
    inf = int(w[torch.isinf(values)].sum())
    v, w = values[finite], w[finite].to(torch.float64)
    n = int(w.sum())
    if n == 0:
        return EMPTY._replace(nan=nan, inf=inf, numel=numel)
    mean = float(torch.dot(w, v)) / n
    d = v - mean
    wd2 = w * d * d
    sums = torch.stack([torch.dot(w, d), wd2.sum(), torch.dot(wd2, d), torch.dot(wd2 * d, d)])
    mean, m2, m3, m4 = central(n, mean, *sums.tolist())
    lo, hi = torch.aminmax(v)
    return MomentsState(n, mean, m2, m3, m4, float(lo), float(hi), nan, inf, numel)
