"""Statistics as mergeable reductions (see :mod:`.base`)."""

from .base import Statistic, closure, stages
from .ks import KSNormal, KSResult, StdHistogram
from .moments import Moments, MomentsResult

__all__ = [
    "KSNormal",
    "KSResult",
    "Moments",
    "MomentsResult",
    "Statistic",
    "StdHistogram",
    "closure",
    "stages",
]
