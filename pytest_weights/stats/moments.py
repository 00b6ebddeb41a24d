"""Exact streaming moments (float64 accumulation, Chan/Pébay merge) and finiteness counts."""

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


@dataclass(frozen=True)
class Moments(Statistic):
    """Count, mean, std, rms, min/max, skewness, excess kurtosis, NaN/Inf counts."""

    def reduce(self, block: torch.Tensor, deps: Deps) -> MomentsState:
        # Sums use torch's float32 cascade summation (relative error ~1e-8, measured); the
        # centre c makes x − c exact and the float64 shift below restores the exact mean.
        x = block.reshape(-1)
        numel = x.numel()
        s1 = x.sum()
        nan = inf = 0
        if not torch.isfinite(s1):
            finite = torch.isfinite(x)
            nan = int(torch.isnan(x).sum())
            inf = numel - nan - int(finite.sum())
            x = x[finite]
            s1 = x.sum(dtype=torch.float64)  # may overflow in float32 without the bad values
        n = x.numel()
        if n == 0:
            return EMPTY._replace(nan=nan, inf=inf, numel=numel)
        c = (s1 / n).to(x.dtype)
        t1, t2, t3, t4, lo, hi = kernels.central_sums(x, c).tolist()
        delta = t1 / n  # correct the centre from c to the exact mean
        m2 = t2 - n * delta**2
        m3 = t3 - 3 * delta * t2 + 2 * n * delta**3
        m4 = t4 - 4 * delta * t3 + 6 * delta**2 * t2 - 3 * n * delta**4
        mean = float(c) + delta
        return MomentsState(n, mean, max(m2, 0.0), m3, max(m4, 0.0), lo, hi, nan, inf, numel)

    def merge(self, a: MomentsState, b: MomentsState) -> MomentsState:
        if a.n == 0 or b.n == 0:
            base = b if a.n == 0 else a
            return base._replace(nan=a.nan + b.nan, inf=a.inf + b.inf, numel=a.numel + b.numel)
        na, nb = a.n, b.n
        n = na + nb
        d = b.mean - a.mean
        mean = a.mean + d * nb / n
        m2 = a.m2 + b.m2 + d * d * na * nb / n
        m3 = a.m3 + b.m3 + d**3 * na * nb * (na - nb) / n**2 + 3 * d * (na * b.m2 - nb * a.m2) / n
        m4 = (
            a.m4
            + b.m4
            + d**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6 * d * d * (na * na * b.m2 + nb * nb * a.m2) / n**2
            + 4 * d * (na * b.m3 - nb * a.m3) / n
        )
        return MomentsState(
            n, mean, m2, m3, m4, min(a.min, b.min), max(a.max, b.max),
            a.nan + b.nan, a.inf + b.inf, a.numel + b.numel,
        )  # fmt: skip

    def finalize(self, state: Any, deps: Deps) -> MomentsResult:
        s = state
        if s.n == 0:
            nan = math.nan
            return MomentsResult(0, s.numel, s.nan, s.inf, nan, nan, nan, nan, nan, nan, nan, nan)
        var = s.m2 / s.n
        std = math.sqrt(var)
        if var > 0:
            skew = (s.m3 / s.n) / var**1.5
            kurt = (s.m4 / s.n) / var**2 - 3.0
        else:
            skew = kurt = math.nan
        return MomentsResult(
            n=s.n, numel=s.numel, nan=s.nan, inf=s.inf, mean=s.mean, std=std,
            rms=math.sqrt(s.mean**2 + var), min=s.min, max=s.max,
            absmax=max(abs(s.min), abs(s.max)), skewness=skew, kurtosis=kurt,
        )  # fmt: skip
