"""Persistent statistics cache: unchanged checkpoints are not re-read; changes invalidate."""

from __future__ import annotations

import json
import os

import pytest
from conftest import save, transformer_like

from pytest_weights import check
from pytest_weights.cache import StatCache
from pytest_weights.readers.safetensors_file import SafetensorsFile


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = SafetensorsFile.read
    monkeypatch.setattr(SafetensorsFile, "read", lambda self, name: seen.append(name) or real(self, name))
    return seen


def test_rerun_reads_nothing_and_gives_the_same_report(tmp_path, reads):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    first = check(ckpt, cache_dir=tmp_path / "cache")
    assert reads
    reads.clear()
    second = check(ckpt, cache_dir=tmp_path / "cache")
    assert reads == []
    assert [r.observed for r in second.results] == [r.observed for r in first.results]


def test_changed_checkpoint_is_recomputed(tmp_path, reads):
    ckpt = save(tmp_path / "m.safetensors", transformer_like(seed=1))
    check(ckpt, cache_dir=tmp_path / "cache")
    tensors = transformer_like(seed=1)
    tensors["model.layers.0.attn.q.weight"][0, 0] = float("nan")
    save(ckpt, tensors)
    os.utime(ckpt, ns=(1, 1))  # even a changed file with an old mtime: size/header/mtime differ
    reads.clear()
    report = check(ckpt, cache_dir=tmp_path / "cache")
    assert reads and not report.passed


def test_tampered_cache_is_ignored_not_executed(tmp_path, reads):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    check(ckpt, cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("*.json")
    doc = json.loads(cache_file.read_text())
    for stats in doc["tensors"].values():
        for key in stats:
            stats[key] = {"type": "os.system", "fields": ["touch pwned"]}
    cache_file.write_text(json.dumps(doc))
    reads.clear()
    assert check(ckpt, cache_dir=tmp_path / "cache").passed
    assert reads  # recomputed
    assert not (tmp_path / "pwned").exists()
    cache_file.write_text("{not json")
    assert check(ckpt, cache_dir=tmp_path / "cache").passed


def test_plugin_uses_pytest_cache_dir_and_no_cache_option(pytester, tmp_path, reads):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    where = ("-o", f"cache_dir={pytester.path / 'cache'}")
    pytester.runpytest("--checkpoint", str(ckpt), *where).assert_outcomes(passed=5)
    assert reads and list((pytester.path / "cache").rglob("pytest-weights/*.json"))
    reads.clear()
    for record in (pytester.path / "cache").rglob("pytest-weights-outcomes/*.json"):
        record.unlink()  # the outcomes are not replayed (tests/test_cached_rerun.py): the statistics are
    result = pytester.runpytest("--checkpoint", str(ckpt), *where)
    result.assert_outcomes(passed=5)
    assert reads == []
    result.stdout.fnmatch_lines(["*statistic value(s) taken from the cache*"])
    pytester.runpytest("--checkpoint", str(ckpt), "--weights-no-cache", *where).assert_outcomes(passed=5)
    assert reads


def test_only_registered_result_types_are_stored(tmp_path):
    import torch

    from pytest_weights.engine import reduce_tensor
    from pytest_weights.stats import KSNormal, Moments, ValueHistogram

    values = reduce_tensor(torch.randn(100, 100), [KSNormal()])
    cache = StatCache(tmp_path)
    cache.save("id", {"t": values})
    loaded = cache.load("id", {"t": [Moments(), KSNormal(), ValueHistogram()]})["t"]
    assert set(loaded) == {Moments(), KSNormal()}  # the histogram holds tensors: not cached
    assert loaded[Moments()] == values[Moments()] and loaded[KSNormal()] == values[KSNormal()]


def test_xdist_gives_identical_results(pytester, tmp_path):
    tensors = transformer_like()
    tensors["model.layers.1.attn.o.weight"] *= 100
    tensors["model.layers.2.mlp.up.weight"].uniform_(-0.03, 0.03)
    ckpt = save(tmp_path / "bad.safetensors", tensors)

    def failures(*args: str) -> list[str]:
        result = pytester.runpytest_subprocess("--checkpoint", str(ckpt), "--weights-no-cache", *args)
        result.assert_outcomes(passed=2, failed=3)  # scale-vs-model, siblings (×100); not-flat (uniform)
        lines = result.stdout.lines
        return sorted(line for line in lines if ("model.layers." in line and "×" in line) or "-1.1" in line)

    assert failures("-n", "2") == failures("-p", "no:xdist")


def test_partly_cached_statistics_are_completed(tmp_path, reads):
    from pytest_weights.spec import parse_spec

    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    std_only = parse_spec("assertions:\n  - {kind: stat_range, stat: std, min: 0}\n", "a.weights.yaml")
    check(ckpt, std_only, cache_dir=tmp_path / "cache")  # caches Moments only
    ks = parse_spec("assertions:\n  - {kind: gaussian_ks, tol: 0.1, select: {min_ndim: 2}}\n", "k.weights.yaml")
    both = check(ckpt, ks, cache_dir=tmp_path / "cache")  # KS needs the cached Moments' histogram
    assert both.passed
    weibull = parse_spec("assertions:\n  - {kind: weibull, r2_min: 0.5, select: {min_ndim: 2}}\n", "w.weights.yaml")
    reads.clear()
    again = check(ckpt, weibull, cache_dir=tmp_path / "cache")
    assert reads
    reads.clear()
    assert check(ckpt, weibull, cache_dir=tmp_path / "cache").results[0].observed == again.results[0].observed
    assert reads == []  # Weibull results are cacheable too
