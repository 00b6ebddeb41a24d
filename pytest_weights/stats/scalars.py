"""Named per-tensor scalar statistics usable in specs (``stat: std``).

Each name maps to the reduction that computes it and how to read the scalar from its
result. Add a name here to make it available to every assertion that takes ``stat``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Statistic
from .ks import KSNormal
from .moments import Moments


@dataclass(frozen=True)
class Scalar:
    name: str
    statistic: Statistic
    read: Callable[[Any], float]
    description: str


def _scalar(name: str, stat: Statistic, field: str, description: str) -> Scalar:
    return Scalar(name, stat, lambda r: float(getattr(r, field)), description)


SCALARS: dict[str, Scalar] = {
    s.name: s
    for s in [
        _scalar("mean", Moments(), "mean", "mean of the finite values"),
        _scalar("std", Moments(), "std", "population standard deviation (ddof=0)"),
        _scalar("rms", Moments(), "rms", "root mean square"),
        _scalar("absmax", Moments(), "absmax", "largest absolute finite value"),
        _scalar("min", Moments(), "min", "smallest finite value"),
        _scalar("max", Moments(), "max", "largest finite value"),
        _scalar("kurtosis", Moments(), "kurtosis", "excess kurtosis (Fisher; 0 for a Gaussian)"),
        _scalar("skewness", Moments(), "skewness", "skewness (Fisher–Pearson, biased)"),
        _scalar("ks", KSNormal(), "statistic", "KS distance to the moment-matched normal"),
    ]
}
