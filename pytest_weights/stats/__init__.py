"""Statistics as mergeable reductions (see :mod:`.base`)."""

from .base import Derived, Statistic, closure, stages
from .histogram import HistogramResult, ValueHistogram
from .ks import KSNormal, KSResult
from .moments import Moments, MomentsResult

__all__ = [
    "Derived",
    "HistogramResult",
    "KSNormal",
    "KSResult",
    "Moments",
    "MomentsResult",
    "Statistic",
    "ValueHistogram",
    "closure",
    "stages",
]
