"""The hot-loop kernels against numpy float64 (tiled power sums, keys and their values), and the
fused sweep: one tile loop per slice and stage for every statistic's kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_weights import check, load_spec
from pytest_weights.reduce import Workers, reduce_tensor
from pytest_weights.stats import Moments, ValueHistogram, kernels
from pytest_weights.stats.shape import OutlierFraction, Shape
from pytest_weights.stats.weibull import LogAbsHistogram, WeibullMLE


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3 * kernels.TILE), shift=st.floats(-1, 1))
def test_power_sums_match_float64(seed, n, shift):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02 + shift * 0.01
    got = kernels.power_sums(x).tolist()
    d = x.double().numpy()
    for k, (value, want) in enumerate(zip(got[:4], [d.sum(), (d**2).sum(), (d**3).sum(), (d**4).sum()], strict=True)):
        scale = (np.abs(d) ** (k + 1)).sum()  # relative to Σ|x|^k: a signed sum may cancel
        assert abs(value - want) <= 1e-6 * scale + 1e-30, k
    assert got[4:] == [d.min(), d.max()]


def test_power_sums_about_a_centre_and_in_float64():
    x = 1.0 + 0.01 * torch.randn(100_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = x.numpy() - 1.0
    got = kernels.power_sums(x, 1.0).tolist()
    assert got[1] == pytest.approx((d**2).sum(), rel=1e-12)
    assert got[3] == pytest.approx((d**4).sum(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_exact_keys_decode_to_the_values(dtype):
    x = (torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 2).to(dtype)
    assert torch.equal(kernels.key_values(dtype, kernels.keys(x).long()), x.to(torch.float64))


def test_float32_keys_decode_to_the_truncated_value():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(3)) * 1e-3
    low = kernels.key_values(torch.float32, kernels.keys(x).long())
    step = 2.0 ** (np.floor(np.log2(np.abs(x.double().numpy()))) - kernels.F32_MANTISSA_BITS)
    assert (np.abs(x.double().numpy()) - np.abs(low.numpy()) >= 0).all()  # truncated towards 0
    assert (np.abs(x.double().numpy()) - np.abs(low.numpy()) < step).all()  # by less than one step
    assert (np.sign(low.numpy()) == np.sign(x.numpy())).all()


def test_fused_sweep_equals_the_separate_kernels():
    x = torch.randn(700_000, generator=torch.Generator().manual_seed(4))
    swept = kernels.BlockKernels(x, [kernels.PowerSums(), kernels.KeyCounts(), kernels.PowerSums()])
    assert torch.equal(swept[kernels.PowerSums()], kernels.power_sums(x))
    assert torch.equal(swept[kernels.KeyCounts()], kernels.key_counts(x))


def _tiles(n: int) -> int:
    return -(-n // kernels.TILE)


FLAT = [Moments(), ValueHistogram(), LogAbsHistogram(), Shape(), OutlierFraction(5.0), WeibullMLE()]


@pytest.mark.parametrize("threads", [1, 2])
def test_each_slice_is_swept_once_per_stage_for_all_its_statistics(threads):
    """Fusion cannot silently stop: every slice is read by one tile loop per stage, which runs
    the kernels of every statistic of the stage (Moments, value and log|w| histograms in the
    first; the |z| masses, outlier count and ln|w| histogram in the second)."""
    t = torch.randn(1000, 1100, generator=torch.Generator().manual_seed(5)) * 0.02
    step = 3 * kernels.TILE + 1000  # slices that end inside a tile
    slices = -(-t.numel() // step)
    with kernels.record_sweeps() as log, Workers(threads) as workers:
        values = reduce_tensor(t, FLAT, workers=workers, slice_elements=step)
    kinds = [frozenset(type(k).__name__ for k in ks) for _, ks in log]
    first = frozenset({"PowerSums", "KeyCounts", "_LogAbsCounts"})
    second = frozenset({"_ZCounts", "_ZAbove", "_LnCounts"})
    assert sorted(kinds, key=sorted) == sorted([first] * slices + [second] * slices, key=sorted)
    sizes = [min(step, t.numel() - i) for i in range(0, t.numel(), step)]
    assert sorted(n for n, _ in log) == sorted(2 * [_tiles(n) for n in sizes])
    alone = {s: reduce_tensor(t, [s], slice_elements=step)[s] for s in FLAT}  # each statistic on its own
    for s in FLAT:
        assert _same(values[s], alone[s]), s


def test_a_bundled_specs_statistics_share_one_sweep_per_stage(tmp_path):
    """The ``gaussian`` spec through the whole pass (real file, real checker): one sweep per
    slice per stage, not one per statistic."""
    t = torch.randn(600, 900, generator=torch.Generator().manual_seed(6)) * 0.02
    path = save(tmp_path / "m.safetensors", {"a.weight": t, "b.weight": t * 2})
    spec = load_spec("gaussian")
    with kernels.record_sweeps() as log:
        report = check(path, spec, device="cpu", workers=2)
    assert report.passed, str(report)
    per_tensor = _tiles(t.numel())  # one slice each
    assert sorted(n for n, _ in log) == [per_tensor] * 4  # 2 tensors × 2 stages (moments; |z| masses)
    assert {type(k).__name__ for _, ks in log for k in ks} == {"PowerSums", "KeyCounts", "_ZCounts"}


def _same(a, b) -> bool:
    """Equal results, tensors and NaNs included (bit-identical: fusion changes no arithmetic)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_slices_are_widened_before_any_arithmetic(dtype):
    """Flat statistics see 16-bit slices in their storage dtype: every kernel computes on the
    exactly widened float32 values, as on a float32 copy of the tensor."""
    t = (torch.randn(700, 300, generator=torch.Generator().manual_seed(9)) * 0.05).to(dtype)
    stats = [Shape(), OutlierFraction(2.5), LogAbsHistogram(), WeibullMLE()]
    narrow = reduce_tensor(t, stats, slice_elements=50_000)
    wide = reduce_tensor(t.float(), stats, slice_elements=50_000)
    assert torch.equal(narrow[LogAbsHistogram()].counts, wide[LogAbsHistogram()].counts)
    assert narrow[LogAbsHistogram()][1:] == wide[LogAbsHistogram()][1:]
    n = t.numel()
    for name, a, b in zip(narrow[Shape()]._fields, narrow[Shape()], wide[Shape()], strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=2.5 / n), name  # mean/std: exact vs float32 sums
    assert narrow[OutlierFraction(2.5)] == pytest.approx(wide[OutlierFraction(2.5)], abs=2.5 / n)
    assert narrow[WeibullMLE()].k == pytest.approx(wide[WeibullMLE()].k, rel=1e-6)
