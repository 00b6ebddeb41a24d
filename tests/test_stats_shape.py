"""Shape statistics (paper A) and Sarle's bimodality coefficient (paper C) against numpy/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import parse_spec
from pytest_weights.stats import Moments
from pytest_weights.stats.scalars import SCALARS
from pytest_weights.stats.shape import (
    BC_UNIFORM,
    GAUSSIAN_NEAR_ZERO,
    GAUSSIAN_SHELL,
    OutlierFraction,
    Shape,
    bimodality_coefficient,
    classify_shape,
)

BIN_RATIO = math.exp(math.log(1e4 / 1e-4) / 16384)  # one log-spaced |z| bin


def shape(t: torch.Tensor, chunk: int = 1 << 24):
    v = reduce_tensor(t, [Shape()], chunk_elements=chunk)
    return v[Moments()], v[Shape()]


def reference(t: torch.Tensor) -> dict[str, float]:
    """Everything from numpy in float64, written independently of the statistic."""
    x = t.double().numpy()
    x2 = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)
    mean, std = x.mean(), x.std()
    az = np.abs((x.ravel() - mean) / std)
    d = x2 - mean
    rows, cols = x2.shape
    out = {
        "near_zero": np.mean(az < 0.1),
        "near_eps": np.mean(az < 0.01),
        "shell": np.mean((az >= 0.1) & (az < 0.2)),
        "outlier_3": np.mean(az > 3),
        "outlier_4": np.mean(az > 4),
        "outlier_6": np.mean(az > 6),
        "q50": np.quantile(az, 0.5, method="inverted_cdf"),
        "q99": np.quantile(az, 0.99, method="inverted_cdf"),
        "q999": np.quantile(az, 0.999, method="inverted_cdf"),
        "mean_over_std": abs(mean) / std,
        "lag1_corr": (d[:, :-1] * d[:, 1:]).sum() / (rows * (cols - 1) * std**2) if cols > 1 else math.nan,
        "row_mean_var_ratio": x2.mean(axis=1).var(ddof=1) * cols / std**2 if rows > 1 else math.nan,
        "col_mean_var_ratio": x2.mean(axis=0).var(ddof=1) * rows / std**2 if rows > 1 and cols > 1 else math.nan,
    }
    if rows < 2 or cols < 2:
        out["row_mean_var_ratio"] = out["col_mean_var_ratio"] = math.nan
    return out


def assert_matches_reference(t: torch.Tensor, s) -> None:
    ref = reference(t)
    n = t.numel()
    for key in ("near_zero", "near_eps", "shell", "outlier_3", "outlier_4", "outlier_6"):
        # float32 z vs float64 z: a value within rounding of a threshold may flip
        assert getattr(s, key) == pytest.approx(ref[key], abs=2.5 / n), key
    for key in ("q50", "q99", "q999"):  # the quantile's bin is exact: error ≤ one bin ratio
        assert getattr(s, key) == pytest.approx(ref[key], rel=(BIN_RATIO - 1) * 1.01, abs=1e-6), key
    assert s.mean_over_std == pytest.approx(ref["mean_over_std"], rel=1e-6, abs=1e-7)  # |mean| err ~1e-9·std
    for key in ("lag1_corr", "row_mean_var_ratio", "col_mean_var_ratio"):
        if math.isnan(ref[key]):
            assert math.isnan(getattr(s, key)), key
        else:
            assert getattr(s, key) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key


CASES = {
    "gaussian": lambda g: torch.randn(500, 300, generator=g) * 0.02 + 0.001,
    "laplace": lambda g: torch.distributions.Laplace(0.0, 1.0).sample((400, 250)),
    "uniform": lambda g: torch.rand(300, 301, generator=g),
    "spike": lambda g: torch.where(torch.rand(300, 200, generator=g) < 0.3, 0.0, torch.randn(300, 200, generator=g)),
    "row-offsets": lambda g: torch.randn(200, 100, generator=g) + torch.randn(200, 1, generator=g),
    "col-offsets": lambda g: torch.randn(100, 200, generator=g) + torch.randn(1, 200, generator=g),
    "smooth-rows": lambda g: torch.cumsum(torch.randn(100, 400, generator=g), dim=1),
    "one-row": lambda g: torch.randn(5000, generator=g),
    "conv": lambda g: torch.randn(32, 16, 3, 3, generator=g),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_reference(case):
    t = CASES[case](torch.Generator().manual_seed(0))
    _, s = shape(t)
    assert_matches_reference(t, s)
    assert s.n == t.numel()
    assert s.q99_q50 == pytest.approx(s.q99 / s.q50)
    assert s.p999_p50 == pytest.approx(s.q999 / s.q50)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 60), st.integers(2, 120), st.integers(1, 50), st.integers(0, 10_000))
def test_merges_across_row_blocks(rows, cols, chunk_rows, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, cols, generator=g) + torch.randn(rows, 1, generator=g) * 0.3
    # float64: Moments merge exactly, so only the summation order differs
    _, whole = shape(t.double())
    _, split = shape(t.double(), chunk=chunk_rows * cols)
    for a, b, name in zip(whole, split, whole._fields, strict=True):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12, nan_ok=True), name
    # float32: the mean/std of Moments move by ~1e−8 between splits; counts may flip at a threshold
    _, whole = shape(t)
    _, split = shape(t, chunk=chunk_rows * cols)
    for a, b, name in zip(whole, split, whole._fields, strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1.01 / t.numel(), nan_ok=True), name


def test_gaussian_reference_values():
    t = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(1))
    m, s = shape(t)
    assert s.near_zero == pytest.approx(GAUSSIAN_NEAR_ZERO, abs=0.002)
    assert s.shell == pytest.approx(GAUSSIAN_SHELL, abs=0.002)
    assert s.outlier_3 == pytest.approx(2 * stats.norm.sf(3), rel=0.05)
    assert s.outlier_4 == pytest.approx(2 * stats.norm.sf(4), rel=0.3)
    assert s.q50 == pytest.approx(stats.norm.ppf(0.75), rel=0.005)
    assert s.q99_q50 == pytest.approx(stats.norm.ppf(0.995) / stats.norm.ppf(0.75), rel=0.01)
    assert s.p999_p50 == pytest.approx(stats.norm.ppf(0.9995) / stats.norm.ppf(0.75), rel=0.02)
    assert abs(s.lag1_corr) < 0.005  # sd 1e-3
    assert s.row_mean_var_ratio == pytest.approx(1, abs=0.3)  # sd √(2/999) ≈ 0.045
    assert s.col_mean_var_ratio == pytest.approx(1, abs=0.3)
    assert classify_shape(m, s) == "gaussian"


def test_structure_is_detected():
    g = torch.Generator().manual_seed(2)
    _, rows = shape(CASES["row-offsets"](g))
    _, cols = shape(CASES["col-offsets"](g))
    _, smooth = shape(CASES["smooth-rows"](g))
    assert rows.row_mean_var_ratio > 20 and cols.col_mean_var_ratio > 20
    assert rows.col_mean_var_ratio == pytest.approx(1, abs=0.5)
    assert smooth.lag1_corr > 0.9


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("gaussian", "gaussian"),
        ("laplace", "sharp"),
        ("student-t3", "sharp"),
        ("uniform", "linear"),
        ("truncated-gaussian", "linear"),
        ("spike", "inverted_t"),
        ("gaussian+outliers", "gaussian"),
        ("triangular", "gaussian"),
        ("constant", "degenerate"),
    ],
)
def test_shape_classes(case, expected):
    g = torch.Generator().manual_seed(3)
    n = 400_000
    make = {
        "gaussian": lambda: torch.randn(n, generator=g),
        "laplace": lambda: torch.distributions.Laplace(0.0, 1.0).sample((n,)),
        "student-t3": lambda: torch.distributions.StudentT(3.0).sample((n,)),
        "uniform": lambda: torch.rand(n, generator=g),
        "truncated-gaussian": lambda: torch.from_numpy(stats.truncnorm.rvs(-1, 1, size=n, random_state=3)).float(),
        "spike": lambda: torch.where(
            torch.rand(n, generator=g) < 0.25, torch.randn(n, generator=g) * 0.01, torch.randn(n, generator=g)
        ),
        "gaussian+outliers": lambda: torch.cat([torch.randn(n, generator=g), torch.full((40,), 60.0)]),
        "triangular": lambda: torch.rand(n, generator=g) + torch.rand(n, generator=g),
        "constant": lambda: torch.full((n,), 0.25),
    }[case]
    m, s = shape(make())
    assert classify_shape(m, s) == expected
    if case == "gaussian+outliers":
        assert m.kurtosis > 100  # the reason kurtosis is not the sharpness criterion


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.125, 0.5, 4.0, 1024.0]), st.booleans())
def test_scale_sign_and_row_permutation_invariance(seed, scale, negate):
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(64, 48, generator=g) + torch.randn(64, 1, generator=g) * 0.2).double()
    _, base = shape(t)
    u = t * scale * (-1 if negate else 1)  # power-of-2 scale: exact in float64
    u = u[torch.randperm(64, generator=g)]
    _, other = shape(u)
    for a, b, name in zip(base, other, base._fields, strict=True):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), name


def test_non_finite_values_are_left_out():
    g = torch.Generator().manual_seed(4)
    t = torch.randn(100, 100, generator=g)
    bad = t.clone()
    bad[3, 7], bad[50, 0] = math.nan, math.inf
    _, s = shape(bad)
    finite = t.clone().reshape(-1)
    keep = torch.ones_like(finite, dtype=torch.bool)
    keep[3 * 100 + 7] = keep[50 * 100] = False
    ref = reference(finite[keep])
    assert s.n == 9998
    assert s.near_zero == pytest.approx(ref["near_zero"], abs=1e-4)
    assert s.q50 == pytest.approx(ref["q50"], rel=1e-3)
    assert not math.isnan(s.lag1_corr) and not math.isnan(s.row_mean_var_ratio)
    m, c = shape(torch.zeros(10, 10))
    assert math.isnan(c.near_zero) and classify_shape(m, c) == "degenerate"


@pytest.mark.parametrize("m", [2.5, 3.0, 4.0, 5.0])
def test_outlier_fraction_any_threshold(m):
    t = torch.distributions.StudentT(4.0).sample((100_000,))
    v = reduce_tensor(t, [OutlierFraction(m), Shape()])
    x = t.double().numpy()
    ref = np.mean(np.abs((x - x.mean()) / x.std()) > m)
    assert v[OutlierFraction(m)] == pytest.approx(ref, abs=2e-5)
    if m in (3.0, 4.0):
        assert v[OutlierFraction(m)] == v[Shape()].outlier_fraction(m)


# ---------------------------------------------------------------- bimodality


def bc_scipy(x: np.ndarray) -> float:
    n = x.size
    g1 = stats.skew(x, bias=False)
    g2 = stats.kurtosis(x, fisher=True, bias=False)
    return (g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 2000), st.integers(0, 10_000), st.sampled_from(["normal", "exp", "bimodal"]))
def test_bimodality_matches_scipy_bias_corrected(n, seed, kind):
    rng = np.random.default_rng(seed)
    x = {"normal": rng.normal(size=n), "exp": rng.exponential(size=n), "bimodal": rng.choice([-1.0, 1.0], n)}[kind]
    x = x + rng.normal(size=n) * 1e-3
    m = reduce_tensor(torch.from_numpy(x), [Moments()])[Moments()]
    assert bimodality_coefficient(m) == pytest.approx(bc_scipy(x), rel=1e-7)


def test_bimodality_reference_points():
    rng = np.random.default_rng(5)
    n = 1_000_000

    def bc(x):
        return bimodality_coefficient(reduce_tensor(torch.from_numpy(x), [Moments()])[Moments()])

    assert bc(rng.normal(size=n)) == pytest.approx(1 / 3, abs=0.005)
    assert bc(rng.uniform(size=n)) == pytest.approx(BC_UNIFORM, abs=0.005)
    two = np.concatenate([rng.normal(-3, 0.5, n // 2), rng.normal(3, 0.5, n // 2)])
    assert bc(two) > 0.9
    assert math.isnan(bc(np.ones(10))) and math.isnan(bc(np.array([1.0, 2.0, 3.0])))
    assert SCALARS["bimodality"].read(reduce_tensor(torch.from_numpy(two), [Moments()])[Moments()]) > 0.9


# ---------------------------------------------------------------- assertion kinds


def run(tmp_path, tensors, text):
    return check(save(tmp_path / "s.safetensors", tensors), parse_spec(text, "t.weights.yaml"), device="cpu")


def test_shape_outliers_iid_bimodality_kinds(tmp_path):
    g = torch.Generator().manual_seed(6)
    good = torch.randn(300, 200, generator=g) * 0.02
    outl = good.clone()
    outl[:3] = 1.0  # 600 values ≈ 50σ
    tensors = {
        "good.weight": good,
        "uniform.weight": torch.rand(300, 200, generator=g) - 0.5,
        "spiky.weight": torch.where(torch.rand(300, 200, generator=g) < 0.3, 0.0, good),
        "outl.weight": outl,
        "rows.weight": good + torch.randn(300, 1, generator=g) * 0.02,
        "two.weight": torch.where(torch.rand(300, 200, generator=g) < 0.5, -1.0, 1.0) + good,
    }
    text = """assertions:
  - {kind: shape, allowed: [gaussian]}
  - {kind: outliers, m: 6, max_fraction: 0.001}
  - {kind: iid, max_lag1: 0.05, max_ratio_deviation: 0.5}
  - {kind: bimodality}
  - {kind: stat_range, stat: near_zero_mass, max: 0.15}
"""
    shape_r, outl_r, iid_r, bc_r, nz_r = run(tmp_path, tensors, text).results

    def failing(r):
        return {d.subject for d in r.deviations}

    assert shape_r.observed["uniform.weight"] == "linear" and shape_r.observed["spiky.weight"] == "inverted_t"
    # 1 % of values at 50σ inflate the std five-fold: the body then looks peaked (sharp)
    assert shape_r.observed["outl.weight"] == "sharp"
    assert failing(shape_r) == {"uniform.weight", "spiky.weight", "two.weight", "outl.weight"}
    assert failing(outl_r) == {"outl.weight"}
    assert "rows.weight" in failing(iid_r) and "good.weight" not in failing(iid_r)
    assert "two.weight" in failing(bc_r)  # ±1 spikes: BC ≈ 1 (uniform sits right at 5/9)
    assert not failing(bc_r) & {"good.weight", "rows.weight", "spiky.weight"}
    assert "spiky.weight" in failing(nz_r) and "good.weight" not in failing(nz_r)


def test_iid_notes_one_dimensional_tensors(tmp_path):
    r = run(tmp_path, {"b": torch.randn(5000)}, "assertions:\n  - {kind: iid}\n").results[0]
    assert r.passed and "not judged" in r.notes[0]


def test_scalars_are_registered():
    for name in (
        "near_zero_mass", "outlier_fraction_3sigma", "q99_q50", "p999_p50", "mean_over_std",
        "lag1_corr", "row_mean_var_ratio", "col_mean_var_ratio", "bimodality",
    ):  # fmt: skip
        assert name in SCALARS
    t = torch.randn(100, 100)
    v = reduce_tensor(t, [SCALARS["q99_q50"].statistic])
    assert SCALARS["q99_q50"].read(v[SCALARS["q99_q50"].statistic]) > 3


@pytest.mark.slow
def test_bundled_gaussian_spec_passes_on_minilm(minilm, tmp_path):
    names = [
        "encoder.layer.5.output.dense.weight",  # most mass beyond 6σ (9.8e-4)
        "encoder.layer.3.attention.output.dense.weight",  # most peaked body (median |z| 0.541)
        "encoder.layer.0.intermediate.dense.weight",  # largest |mean|/std (0.032)
        "embeddings.position_embeddings.weight",  # largest |lag-1 corr| (0.026)
        "pooler.dense.weight",  # largest bimodality coefficient (0.335)
        "encoder.layer.0.output.dense.weight",  # excess kurtosis 1582 from a few outliers
    ]
    report = check(minilm_subset(minilm, tmp_path, names), "gaussian", device="cpu")
    assert report.passed, str(report)


def minilm_subset(minilm, tmp_path, names):
    """The MiniLM tensors nearest each threshold of a bundled spec (the whole model passes too,
    but checking all of it takes most of this file's time budget)."""
    from safetensors import safe_open

    with safe_open(str(minilm), "pt") as f:
        return save(tmp_path / "minilm-subset.safetensors", {n: f.get_tensor(n) for n in names})


@pytest.mark.parametrize("shape_", [(3, 2 * 131072 + 5), (300_001,), (40, 9000)])
def test_rows_longer_than_a_tile_and_slices_inside_rows(shape_):
    """Rows longer than a tile are swept tile by tile along the row (the pair across two tiles
    counted once); elementwise parts see slices cut inside rows: both as numpy says."""
    g = torch.Generator().manual_seed(8)
    t = torch.cumsum(torch.randn(shape_, generator=g), dim=-1) * 0.01 + 0.5  # correlated, offset
    v = reduce_tensor(t, [Shape()], slice_elements=100_003)
    assert_matches_reference(t, v[Shape()])
    assert_matches_reference(t.double(), reduce_tensor(t.double(), [Shape()])[Shape()])
