"""The compiled (numba) CPU tiles against the torch ops they replace, bit for bit; the switch to
them in a large pass (auto mode); the torch fallback (``PYTEST_WEIGHTS_KERNELS=torch``, numba
missing); and a guard that the compiled path is really taken when numba is installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_weights.reduce import Workers, reduce_tensor
from pytest_weights.stats import Moments, ValueHistogram, kernels
from pytest_weights.stats.shape import OutlierFraction, Shape, ShapeMasses, _ZAbove, _ZCounts
from pytest_weights.stats.weibull import LogAbsHistogram, WeibullMLE, _LogAbsCounts

numba = pytest.importorskip("numba")  # the compiled side needs the ``fast`` extra

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SPECIALS = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-40, -3e-45, 1e-8, 70000.0]


@st.composite
def slices(draw, dtypes=DTYPES):
    """A 1-D slice of ``dtype``: Gaussian values at some scale and offset, with zeros, subnormals,
    NaN and ±Inf sprinkled in (or not), crossing tile boundaries."""
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(1, kernels.TILE + 5000))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.02, 1.0, 1e-3, 3.0]))
    shift = draw(st.sampled_from([0.0, 0.0, 0.01, -2.0]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * scale + shift
    specials = draw(st.lists(st.sampled_from(SPECIALS), max_size=6))
    if specials:
        at = torch.randint(0, n, (len(specials),), generator=g)
        x[at] = torch.tensor(specials, dtype=torch.float64)
    return x.to(dtype)


def _sweep(x: torch.Tensor, ks: list[kernels.Kernel], backend: str, monkeypatch) -> kernels.BlockKernels:
    monkeypatch.setenv("PYTEST_WEIGHTS_KERNELS", backend)
    try:
        return kernels.BlockKernels(x, ks)
    finally:
        monkeypatch.delenv("PYTEST_WEIGHTS_KERNELS", raising=False)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple | list):  # NamedTuple results included
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


def _counting_kernels(x: torch.Tensor) -> list[kernels.Kernel]:
    finite = x[torch.isfinite(x)].double()
    mean = float(finite.mean()) if finite.numel() else 0.0
    std = float(finite.std(correction=0)) if finite.numel() > 1 else 1.0
    nonfinite = bool((~torch.isfinite(x)).any())
    masses = ShapeMasses()
    ks: list[kernels.Kernel] = [_LogAbsCounts(LogAbsHistogram())]
    if std > 0:
        ks += [_ZCounts(masses, mean, std, nonfinite), _ZAbove(mean, std, nonfinite, 2.5)]
    if x.dtype == torch.float32:
        ks.append(kernels.KeyCounts())
    return ks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=slices())
def test_counting_kernels_are_bit_identical_to_torch(x, monkeypatch):
    """Value-histogram keys, log|w| slots, |z| masses, outlier counts and |z| histogram: the
    compiled loop computes every value as the torch ops do, so the counts are equal."""
    ks = _counting_kernels(x)
    before = sum(kernels.compiled_calls.values())
    fast, slow = _sweep(x, ks, "numba", monkeypatch), _sweep(x, ks, "torch", monkeypatch)
    for k in ks:
        a, b = fast[k], slow[k]
        if isinstance(k, kernels.KeyCounts):  # a per-thread buffer: the torch sweep overwrote it
            a, b = _sweep(x, [k], "numba", monkeypatch)[k].clone(), kernels.key_counts(x)
        assert _same(a, b), (type(k).__name__, x.dtype)
    if x.dtype != torch.float64:
        assert sum(kernels.compiled_calls.values()) > before  # the compiled side did run


@pytest.mark.parametrize("std", [1e-300, 1e-44, 3e38])
def test_a_spread_that_rounds_to_zero_or_huge_in_float32_counts_alike(std, monkeypatch):
    """std below the smallest float32 divides by 0 (±inf, NaN at the mean), as in torch: no
    ZeroDivisionError from the compiled loop, the same counts."""
    x = torch.tensor([0.0, 1e-45, -1e-45, 1.0, -2.0, float("inf")] * 50_000, dtype=torch.float32)
    for nonfinite in (False, True):
        ks = [_ZCounts(ShapeMasses(), 0.0, std, nonfinite), _ZAbove(0.0, std, nonfinite, 3.0)]
        fast, slow = _sweep(x, ks, "numba", monkeypatch), _sweep(x, ks, "torch", monkeypatch)
        for k in ks:
            assert _same(fast[k], slow[k]), (k, nonfinite)


FLAT = [Moments(), ValueHistogram(), LogAbsHistogram(), Shape(), OutlierFraction(4.0), WeibullMLE()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_statistics_agree_and_do_not_depend_on_threads(dtype, monkeypatch):
    """Through the engine (slices ending inside tiles): every result bit-identical to the torch
    path's; 1 or 2 worker threads give identical results."""
    t = (torch.randn(900, 700, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.05).to(dtype)
    t[3, 5], t[10, 0] = 0.0, float("nan")
    step = kernels.TILE + 7777
    monkeypatch.setenv("PYTEST_WEIGHTS_KERNELS", "numba")
    before = sum(kernels.compiled_calls.values())
    runs = []
    for threads in (1, 2):
        with Workers(threads) as workers:
            runs.append(reduce_tensor(t, FLAT, workers=workers, slice_elements=step))
    assert sum(kernels.compiled_calls.values()) > before or dtype == torch.float64  # float64 stays torch
    for s in FLAT:
        assert _same(runs[0][s], runs[1][s]), s
    monkeypatch.setenv("PYTEST_WEIGHTS_KERNELS", "torch")
    slow = reduce_tensor(t, FLAT, slice_elements=step)
    for s in FLAT:
        assert _same(runs[0][s], slow[s]), s


def test_the_compiled_path_is_taken_when_numba_is_installed(monkeypatch):
    """Fails if the compiled kernels silently stop being used (an import error swallowed, a
    dispatch condition gone wrong): every hot kernel counts its compiled tiles."""
    monkeypatch.setenv("PYTEST_WEIGHTS_KERNELS", "numba")
    t = torch.randn(600, 500, generator=torch.Generator().manual_seed(8)) * 0.02
    before = dict(kernels.compiled_calls)
    reduce_tensor(t, FLAT, slice_elements=kernels.TILE + 11)
    tiles = -(-t.numel() // (kernels.TILE + 11)) + 1  # at least one per slice
    for name in ("key_counts", "logabs", "z_counts", "z_above"):
        assert kernels.compiled_calls[name] - before.get(name, 0) >= tiles - 1, name
    assert kernels.compiled(t) is not None


def test_fallback_env_var_uses_torch_only(monkeypatch):
    monkeypatch.setenv("PYTEST_WEIGHTS_KERNELS", "torch")
    t = torch.randn(400, 400, generator=torch.Generator().manual_seed(9)) * 0.02
    before = sum(kernels.compiled_calls.values())
    values = reduce_tensor(t, FLAT)
    assert sum(kernels.compiled_calls.values()) == before
    assert kernels.compiled(t) is None
    assert values[Moments()].std == pytest.approx(float(t.double().std(correction=0)), rel=1e-6)


def _python(code: str, **env: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_without_numba_the_torch_path_runs():
    """A real interpreter where ``import numba`` fails: the pass runs on torch ops, same counts."""
    out = _python("""
        import sys
        sys.modules["numba"] = None  # import numba raises ImportError
        import torch
        from pytest_weights.reduce import reduce_tensor
        from pytest_weights.stats import ValueHistogram, kernels
        t = torch.randn(300, 300, generator=torch.Generator().manual_seed(1))
        h = reduce_tensor(t, [ValueHistogram()])[ValueHistogram()]
        assert kernels.compiled(t) is None and not kernels.compiled_calls
        print(int(h.counts.sum()), h.counts[:5].tolist())
    """)
    assert out.split()[0] == str(300 * 300)


def test_auto_mode_switches_to_compiled_in_a_large_pass():
    """Unset variable: torch tiles until the process has swept ``BREAK_EVEN`` elements, compiled
    after; the counts of a pass that switches midway equal the all-torch ones."""
    code = """
        import torch
        from pytest_weights.reduce import reduce_tensor
        from pytest_weights.stats import ValueHistogram, kernels
        from pytest_weights.stats.shape import Shape
        from pytest_weights.stats.weibull import LogAbsHistogram
        kernels.BREAK_EVEN = 300_000
        t = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(2)) * 0.02
        stats = [ValueHistogram(), LogAbsHistogram(), Shape()]
        mixed = reduce_tensor(t, stats, slice_elements=200_000)
        assert kernels.compiled_calls["logabs"] > 0 and kernels._compiled_module
        import os
        os.environ["PYTEST_WEIGHTS_KERNELS"] = "torch"
        slow = reduce_tensor(t, stats, slice_elements=200_000)
        assert torch.equal(mixed[ValueHistogram()].counts, slow[ValueHistogram()].counts)
        assert torch.equal(mixed[LogAbsHistogram()].counts, slow[LogAbsHistogram()].counts)
        assert mixed[Shape()] == slow[Shape()]
        print("ok")
    """
    out = _python(code, PYTEST_WEIGHTS_KERNELS="")
    assert out.strip() == "ok"


def test_a_pass_announced_as_large_is_compiled_from_its_first_tile():
    code = """
        import torch
        from pytest_weights.reduce import reduce_tensor
        from pytest_weights.stats import ValueHistogram, kernels
        kernels.expect(10**6)
        reduce_tensor(torch.randn(1000, 100), [ValueHistogram()])
        assert not kernels.compiled_calls  # below BREAK_EVEN: torch
        kernels.expect(kernels.BREAK_EVEN)
        reduce_tensor(torch.randn(1000, 100), [ValueHistogram()])
        print(kernels.compiled_calls["key_counts"])
    """
    assert _python(code, PYTEST_WEIGHTS_KERNELS="").strip() == "1"


def test_small_passes_do_not_load_numba():
    code = """
        import sys, torch
        from pytest_weights.reduce import reduce_tensor
        from pytest_weights.stats.shape import Shape
        reduce_tensor(torch.randn(500, 500), [Shape()])
        print("numba" in sys.modules)
    """
    out = _python(code, PYTEST_WEIGHTS_KERNELS="")
    assert out.strip() == "False"


def test_importing_the_plugin_does_not_import_numba():
    out = _python("""
        import sys
        import pytest_weights, pytest_weights.plugin
        from pytest_weights.stats import kernels, shape, weibull
        print("numba" in sys.modules)
    """)
    assert out.strip() == "False"
