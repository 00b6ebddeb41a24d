"""The torch.compile-fused kernels agree with the eager ones (and with numpy float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from pytest_weights.engine import reduce_tensor
from pytest_weights.stats import KSNormal, Moments, kernels

pytestmark = pytest.mark.slow  # the first call compiles (seconds to a minute)


@pytest.fixture
def compiled():
    kernels.use_compiled(True)
    yield
    kernels.use_compiled(False)


def test_compiled_moments_and_ks_match_eager_and_references(compiled):
    g = torch.Generator().manual_seed(0)
    exact = KSNormal(max_error=0)
    for t in (torch.randn(300, 257, generator=g) * 0.02 + 0.001, torch.rand(5000, generator=g), torch.randn(7, 3)):
        fused = reduce_tensor(t, [exact])
        kernels.use_compiled(False)
        eager = reduce_tensor(t, [exact])
        kernels.use_compiled(True)
        x = t.double().numpy().ravel()
        spread = eager[Moments()].std
        for key in ("mean", "std", "min", "max"):  # within 1e-7 of the spread (a mean near 0 has no relative error)
            assert getattr(fused[Moments()], key) == pytest.approx(getattr(eager[Moments()], key), abs=1e-7 * spread)
        assert fused[Moments()].std == pytest.approx(x.std(), rel=1e-8)
        assert fused[Moments()].kurtosis == pytest.approx(stats.kurtosis(x), abs=1e-7)
        ref = stats.kstest(x, "norm", args=(x.mean(), x.std()), method="asymp").statistic
        assert fused[exact].statistic == pytest.approx(ref, abs=1e-7)
        assert np.isfinite(fused[exact].statistic)
