"""What is true of a real pretrained model (all-MiniLM-L6-v2), and the default spec on it."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy import stats

from pytest_weights import check, load_spec
from pytest_weights.spec import parse_spec

pytestmark = pytest.mark.slow


def test_default_spec_passes_on_minilm(minilm):
    report = check(minilm, "default", device="cpu")
    assert report.passed, str(report)
    assert len(report.results) == len(load_spec("default").assertions)


def test_what_is_known_of_minilm(minilm):
    spec = parse_spec(
        """
assertions:
  - name: matrices-finite
    kind: finite
    select: {min_ndim: 2}
  - name: encoder-gaussian
    kind: gaussian_ks
    tol: 0.05
    select: {include: ["encoder.*"], min_ndim: 2}
  - name: query-std-falls
    kind: depth_trend
    stat: std
    direction: shrinks
    min_rho: 0.8
    select: {include: ["*.attention.self.query.weight", "*.attention.self.key.weight"]}
""",
        "minilm.weights.yaml",
    )
    report = check(minilm, spec, device="cpu")
    assert report.passed, str(report)
    trend = report.results[2].observed
    assert set(trend) == {
        "encoder.layer.*.attention.self.query.weight",
        "encoder.layer.*.attention.self.key.weight",
    }
    # independent check of the trend with scipy on the raw weights
    weights = load_file(str(minilm))
    for role, seen in trend.items():
        stds = [weights[role.replace("*", str(i))].astype(np.float64).std() for i in range(6)]
        assert seen["rho"] == pytest.approx(stats.spearmanr(range(6), stds).statistic, abs=1e-12)
        assert seen["values"] == pytest.approx(stds, rel=1e-6)


def test_minilm_ks_distances_match_scipy(minilm):
    weights = load_file(str(minilm))
    for exact in (False, True):  # the histogram bounds, and the exact value
        entry = f"{{kind: gaussian_ks, tol: 1.0, exact: {str(exact).lower()}, select: {{min_ndim: 2}}}}"
        spec = parse_spec(f"assertions:\n  - {entry}\n")
        got = check(minilm, spec, device="cpu").results[0].observed
        assert len(got) == len([k for k, v in weights.items() if v.ndim == 2 and v.dtype.kind == "f"])
        for name, d in got.items():
            x = weights[name].astype(np.float64).ravel()
            ref = stats.kstest(x, "norm", args=(x.mean(), x.std()), method="asymp").statistic
            if exact:
                assert d == pytest.approx(ref, abs=1e-7), name
            else:  # D − L: sampling noise inside bins; the bound itself is ≤ 2.4e−4 for centred weights
                assert -1e-7 <= ref - d <= 2.4e-4, name
