"""The one cache-through (engine.compute_pass with a cache): cached values in, the missing ones
computed in the same pass, the computed ones saved; used by the plugin, the CLI and init."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save, transformer_like

from pytest_weights.cache import StatCache
from pytest_weights.cli import main
from pytest_weights.engine import StatStore, compute_pass
from pytest_weights.readers import open_checkpoint
from pytest_weights.stats import KSNormal, Moments

TENSORS = transformer_like(layers=2)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("through") / "m.safetensors", TENSORS)


def inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main(["inspect", *argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def test_a_partly_cached_chain_is_completed_in_one_pass_and_saved(ckpt: Path, tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "cache")
    names = {n: [Moments()] for n, t in TENSORS.items() if t.is_floating_point()}
    with open_checkpoint(ckpt) as c:
        first = compute_pass(c, names, StatStore(), cache=cache)
        assert first.tensors_done == len(names) and cache.stored == len(names)
        # KS needs the moments (cached) and a histogram (not): only the missing part is computed
        store = StatStore()
        more = compute_pass(c, {n: [Moments(), KSNormal()] for n in names}, store, cache=cache)
        assert more.tensors_done == len(names) and cache.hits == len(names)
        again = compute_pass(c, {n: [Moments(), KSNormal()] for n in names}, StatStore(), cache=cache)
        assert again.tensors_done == 0  # everything from the cache now
        cid = c.identity()
    fresh = StatStore()
    with open_checkpoint(ckpt) as c:
        compute_pass(c, {n: [Moments(), KSNormal()] for n in names}, fresh)
    for n in names:
        got, want = store.get(cid, n), fresh.get(cid, n)
        assert got[KSNormal()] == pytest.approx(want[KSNormal()], rel=1e-9, abs=1e-12)
        std = float(TENSORS[n].double().numpy().std())
        assert got[Moments()].std == pytest.approx(std, rel=1e-6)


def test_inspect_with_a_cache_that_cannot_be_written_still_answers(capsys, ckpt: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    got = inspect(capsys, str(ckpt), "--cache-dir", str(blocker / "cache"), "--stats", "std")
    assert got == inspect(capsys, str(ckpt), "--no-cache", "--stats", "std")
    assert blocker.read_text().startswith("a file")  # nothing written over it


def test_inspect_fills_and_reads_the_cache(capsys, ckpt: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    first = inspect(capsys, str(ckpt), "--cache-dir", str(cache), "--stats", "std")
    assert len(list(cache.glob("*.json"))) == 1
    mtime = next(cache.glob("*.json")).stat().st_mtime_ns
    assert inspect(capsys, str(ckpt), "--cache-dir", str(cache), "--stats", "std") == first
    assert next(cache.glob("*.json")).stat().st_mtime_ns == mtime  # all cached: nothing saved again
    stds = {r["name"]: r["std"] for r in first if r["std"] is not None}
    for name, value in stds.items():
        assert value == pytest.approx(float(np.std(TENSORS[name].double().numpy())), rel=1e-6)
