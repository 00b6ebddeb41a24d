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
from .shape import Shape, bimodality_coefficient
from .spectral import Spectral
from .weibull import LogAbsHistogram, WeibullFit


@dataclass(frozen=True)
class Scalar:
    """A named per-tensor number: the reduction computing it and how to read it from the result."""

    name: str
    statistic: Statistic
    read: Callable[[Any], float]
    description: str
    #: Never negative (a scale, a fraction, a ratio): ratios between tensors are meaningful.
    nonnegative: bool = False


#: Statistics that can be negative (ratios to a median are undefined for them).
SIGNED = frozenset({"mean", "min", "max", "kurtosis", "skewness", "lag1_corr"})


def _scalar(name: str, stat: Statistic, field: str, description: str) -> Scalar:
    return Scalar(name, stat, lambda r: float(getattr(r, field)), description, name not in SIGNED)


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
        # Weibull fit of |w| (paper D), the library's default protocol: mid-80 probability plot
        _scalar("weibull_k", WeibullFit(), "k", "Weibull shape k of |w| (mid-80 probability plot)"),
        _scalar("weibull_lambda", WeibullFit(), "lam", "Weibull scale λ of |w| (mid-80 probability plot)"),
        _scalar("weibull_r2", WeibullFit(), "r2", "R² of the mid-80 Weibull probability-plot line"),
        _scalar("weibull_ks", WeibullFit(), "ks", "KS of the mid-80 Weibull fit (npm-weibull definition)"),
        _scalar("zero_fraction", LogAbsHistogram(), "zero_fraction", "fraction of exact zeros among finite values"),
        # shape and i.i.d. structure (paper A); z = (w − mean)/std
        _scalar("near_zero_mass", Shape(), "near_zero", "fraction with |w − mean| < 0.1·std (Gaussian 0.0797)"),
        _scalar("outlier_fraction_3sigma", Shape(), "outlier_3", "fraction with |w − mean| > 3·std (Gaussian 0.0027)"),
        _scalar("q99_q50", Shape(), "q99_q50", "Q99/Q50 of |w − mean| (Gaussian 3.82)"),
        _scalar("p999_p50", Shape(), "p999_p50", "P99.9/P50 of |w − mean| (Gaussian 4.88)"),
        _scalar("mean_over_std", Shape(), "mean_over_std", "|mean| / std"),
        _scalar("lag1_corr", Shape(), "lag1_corr", "lag-1 autocorrelation along rows (≈ 0 for i.i.d.)"),
        _scalar("row_mean_var_ratio", Shape(), "row_mean_var_ratio", "var(row means)·n_cols/std² (≈ 1 for i.i.d.)"),
        _scalar("col_mean_var_ratio", Shape(), "col_mean_var_ratio", "var(column means)·n_rows/std² (≈ 1 for i.i.d.)"),
        # bimodality (paper C)
        Scalar(
            "bimodality", Moments(), bimodality_coefficient, "Sarle's bimodality coefficient (> 5/9: bimodal)", True
        ),
        # singular values (WeightWatcher conventions; needs the whole matrix)
        _scalar("spectral_norm", Spectral(), "spectral_norm", "largest singular value ‖W‖₂"),
        _scalar("stable_rank", Spectral(), "stable_rank", "‖W‖_F² / ‖W‖₂²"),
        _scalar("esd_alpha", Spectral(), "alpha", "WeightWatcher power-law α of the eigenvalues of WᵀW"),
    ]
}
