"""The statistics pass on a Dask cluster (issue 14): the same values as the local engine, bit for bit.

A real ``dask scheduler`` and two ``dask worker`` processes on localhost (module fixture), and
``LocalCluster`` (``local:2``); every comparison is against the local engine on the same files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import save, transformer_like

pytest.importorskip("distributed")
from distributed import get_task_stream

from pytest_weights import check
from pytest_weights.cache import StatCache
from pytest_weights.executors import dask as dask_executor
from pytest_weights.executors.tasks import opened
from pytest_weights.readers import open_checkpoint
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.runner import Checker
from pytest_weights.spec import load_spec

SHARDS = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")

#: Multi-stage (exact KS: moments and histogram, then a sweep), rows (spectral, iid) and flat statistics.
SPEC = """\
version: 1
defaults:
  select: {include: ["*.weight"], min_ndim: 2, min_numel: 4096}
assertions:
  - {name: ks-exact, kind: gaussian_ks, tol: 0.5, exact: true}
  - {name: shape, kind: shape, allowed: [gaussian, sharp, inverted_t, linear, degenerate]}
  - {name: outliers, kind: outliers, m: 6, max_fraction: 0.5}
  - {name: iid, kind: iid, max_lag1: 0.5, max_ratio_deviation: null}
  - {name: spectral, kind: spectral, alpha_min: null, alpha_max: null, min_stable_rank: 1.0,
     select: {include: ["*attn*.weight", "*mlp*.weight"], ndim: 2, min_numel: 4096}}
"""


# ---------------------------------------------------------------------------- fixtures


def _python_m(module: str, *args: str, log: Path) -> subprocess.Popen:
    out = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``dask scheduler`` (random port) with two single-threaded ``dask worker`` processes."""
    from distributed import Client

    d = tmp_path_factory.mktemp("dask")
    info = d / "scheduler.json"
    common = ("--no-dashboard", "--host", "127.0.0.1")
    procs = [
        _python_m(
            "distributed.cli.dask_scheduler", "--port", "0", "--scheduler-file", str(info), *common, log=d / "s.log"
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file() or not info.read_text().strip():
            assert procs[0].poll() is None and time.monotonic() < deadline, (d / "s.log").read_text()
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for i in range(2):
            args = (address, "--nthreads", "1", "--name", f"w{i}", "--local-directory", str(d), *common)
            procs.append(_python_m("distributed.cli.dask_worker", *args, log=d / f"w{i}.log"))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        with contextlib.suppress(Exception), Client(address, timeout=10) as client:
            client.shutdown()  # the scheduler and its workers close
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """One flat slice per task, so a tensor of a few slices is split across tasks and workers."""
    monkeypatch.setattr(dask_executor, "SLICES_PER_TASK", 1)


def sharded(root: Path) -> Path:
    """A three-shard safetensors checkpoint (index + shards) whose middle shard holds tensors of 2–3 slices."""
    g = torch.Generator().manual_seed(7)
    tensors = transformer_like(layers=4, width=64)
    names = sorted(tensors)
    first = {k: tensors[k] for k in names[: len(names) // 2]}
    last = {k: tensors[k] for k in names[len(names) // 2 :]}
    middle = {
        # 5 M bf16 values: 2 slices of 4 Mi (the last partial)
        "model.layers.9.big.weight": (torch.randn(5000, 1000, generator=g) * 0.02).to(torch.bfloat16),
        # 4.3 M float32 values with heavy tails (a real KS sweep): 2 slices
        "model.layers.8.big.weight": torch.distributions.StudentT(5.0).sample((4300, 1000)) * 0.01,
        "model.layers.8.big.bias": torch.zeros(1000),
    }
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard, part in zip(SHARDS, (first, middle, last), strict=True):
        save(root / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sharded(tmp_path_factory.mktemp("sharded") / "model")


def same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of statistic values: floats exactly (NaN = NaN), tensors elementwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
        )
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "dist.weights.yaml"
    path.write_text(SPEC)
    return path


def run_json(pytester: pytest.Pytester, *args: str) -> dict:
    """``--weights-json`` of a real pytest run (the pass's results; no cache)."""
    out = pytester.path / f"results-{time.monotonic_ns()}.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "--weights-no-cache", "--weights-json", str(out), *args)
    text = result.stdout.str()
    assert "INTERNALERROR" not in text
    assert result.ret in (0, 1), text
    assert ("--weights-scheduler" in args) == (" on cpu, Dask " in text), text  # the summary says where it ran
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- values


def test_sharded_checkpoint_values_bit_for_bit_on_real_cluster(
    scheduler: str, sharded_dir: Path, tmp_path: Path, small_tasks: None
) -> None:
    """Every statistic of every spec, on a 3-shard checkpoint whose large tensors are split into
    slice tasks (KS's second sweep a second round), equals the local engine's exactly; both workers read."""
    spec = load_spec(spec_file(tmp_path))
    specs = [*spec.assertions, *load_spec("default").assertions]
    stores = []
    for sched in (None, scheduler):
        ckpt = open_checkpoint(sharded_dir)
        checker = Checker("cpu", scheduler=sched)
        try:
            with contextlib.ExitStack() as stack:
                if sched is not None:
                    stream = stack.enter_context(get_task_stream(client=checker.executor().client))
                checker.prepare((ckpt, a) for a in specs)
            assert not checker.errors, checker.errors
            stores.append(dict(checker.store.items()))
            if sched is not None:
                ran = [t["key"].split("-")[0] for t in stream.data]
                assert set(ran) == {"reduce_batch", "reduce_slices", "fold", "reduce_rows"}, ran  # large tensors split
                assert ran.count("reduce_slices") > 2 * 2  # 2 tensors × 2 slices, then the exact KS sweep's round
                locations = checker.executor().client.run(opened)
                index = str((sharded_dir / "model.safetensors.index.json").resolve())
                assert len(locations) == 2 and all(index in v for v in locations.values())  # both workers read
        finally:
            checker.close()
            ckpt.close()
    local, remote = stores
    assert local.keys() == remote.keys() and len(local) > 20
    for key in local:
        assert local[key].keys() == remote[key].keys(), key
        for stat, value in local[key].items():
            assert same(value, remote[key][stat]), (key, stat, value, remote[key][stat])


def test_plugin_json_identical_sharded(
    pytester: pytest.Pytester, scheduler: str, sharded_dir: Path, small_tasks: None
) -> None:
    spec = spec_file(pytester.path)
    args = ("--checkpoint", str(sharded_dir), "--weights-spec", "default", "--weights-spec", str(spec))
    local = run_json(pytester, *args)
    remote = run_json(pytester, *args, "--weights-scheduler", scheduler)
    assert local == remote
    assert local["summary"]["passed"] >= 10


def test_run_directory_on_local_cluster_identical(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A run directory's checkpoints spread over a LocalCluster (local:2): the same JSON as the local engine."""
    run = tmp_path / "run"
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        save(run / f"step_{step}.safetensors", transformer_like(layers=3, width=64, seed=seed))
    args = ("--checkpoint", str(run), "--weights-spec", "default", "--weights-spec", str(spec_file(pytester.path)))
    local = run_json(pytester, *args)
    remote = run_json(pytester, *args, "--weights-scheduler", "local:2")
    assert local == remote
    assert {r["checkpoint"] for r in local["results"]} >= {"step_100.safetensors", "step_300.safetensors"}


def test_zoo_model_identical(pytester: pytest.Pytester, scheduler: str, zoo: dict[str, Path]) -> None:
    """A real published model (YOLOv8n, ONNX initializers), read by the workers: the same JSON."""
    pytest.importorskip("onnx")  # imported once, before the in-process runs (its extension cannot load twice)
    args = ("--checkpoint", str(zoo["yolov8n-onnx"]), "--weights-spec", "default", "--weights-spec", "gaussian")
    local = run_json(pytester, *args)
    remote = run_json(pytester, *args, "--weights-scheduler", scheduler)
    assert local == remote
    assert local["summary"]["passed"] > 0


def test_check_with_scheduler(scheduler: str, tmp_path: Path) -> None:
    """``check(..., scheduler=...)`` gives the local report; an in-memory state dict still runs here."""
    path = save(tmp_path / "m.safetensors", transformer_like(layers=2, seed=5))
    assert check(path, "default", device="cpu", scheduler=scheduler) == check(path, "default", device="cpu")
    weights = transformer_like(layers=2, seed=5)
    assert check(weights, "default", device="cpu", scheduler=scheduler) == check(weights, "default", device="cpu")
    checker = Checker("cpu", scheduler=scheduler)
    checker.prepare((StateDictCheckpoint(weights), a) for a in load_spec("default").assertions)
    assert checker._executor is None  # never connected: nothing to send to the cluster
    checker.close()


def test_progress_as_tasks_complete(scheduler: str, tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", transformer_like(layers=3, seed=4))
    seen: list[tuple[int, int, bool]] = []
    checker = Checker(
        "cpu", progress=lambda p: seen.append((p.tensors_done, p.bytes_done, p.finished)), scheduler=scheduler
    )
    try:
        with open_checkpoint(path) as ckpt:
            checker.prepare((ckpt, a) for a in load_spec("default").assertions)
    finally:
        checker.close()
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and len(seen) > 5 and seen[-1][2] and seen[-1][0] == checker.passes[0].tensors_total


def test_cache_stays_on_the_client(scheduler: str, tmp_path: Path) -> None:
    """Cached statistics are loaded on the client: a re-run reads nothing and never connects."""
    path = save(tmp_path / "m.safetensors", transformer_like(layers=2, seed=3))
    specs = load_spec("default").assertions
    stores = []
    for _ in range(2):
        checker = Checker("cpu", cache=StatCache(tmp_path / "cache"), scheduler=scheduler)
        with open_checkpoint(path) as ckpt:
            checker.prepare((ckpt, a) for a in specs)
        stores.append(dict(checker.store.items()))
        connected = checker._executor is not None
        checker.close()
    assert connected is False and checker.cache.hits > 0
    assert same(stores[0], stores[1])


# ---------------------------------------------------------------------------- failures


TRUNCATE_CONFTEST = """
import os
import pytest
from pytest_weights.plugin import SESSION_KEY

@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    weights = session.config.stash[SESSION_KEY]
    weights.checkpoint(weights.checkpoint_paths[0])  # opened and planned on the client ...
    shard = weights.checkpoint_paths[0] / "model-00002-of-00003.safetensors"  # a model directory
    os.truncate(shard, shard.stat().st_size // 2)  # ... then truncated before the workers read it
"""


def test_worker_read_failure_is_one_line(pytester: pytest.Pytester, scheduler: str, tmp_path: Path) -> None:
    model = sharded(tmp_path / "model")
    pytester.makeconftest(TRUNCATE_CONFTEST)
    out = pytester.path / "r.json"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--weights-no-cache", "--checkpoint", str(model), "--weights-spec", "default",
        "--weights-scheduler", scheduler, "--weights-json", str(out),
    )  # fmt: skip
    text = result.stdout.str()
    assert result.ret == 1 and "INTERNALERROR" not in text and "Traceback" not in text
    failed = [r for r in json.loads(out.read_text())["results"] if not r["passed"]]
    assert failed
    for r in failed:
        assert "\n" not in r["summary"] and "model-00002-of-00003.safetensors" in r["summary"], r["summary"]


def test_unreachable_scheduler_from_environment(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """$DASK_SCHEDULER_ADDRESS is the default; an unreachable one fails the items in one line; 'off' runs here."""
    save(pytester.path / "m.safetensors", transformer_like(layers=2))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT", 1)
    args = ("-p", "no:cacheprovider", "--weights-no-cache", "--checkpoint", "m.safetensors")
    result = pytester.runpytest(*args)
    text = result.stdout.str()
    assert result.ret == 1 and "INTERNALERROR" not in text
    assert "cannot connect to the Dask scheduler at 'tcp://127.0.0.1:1'" in text
    result = pytester.runpytest(*args, "--weights-scheduler", "off")
    assert result.ret == 0, result.stdout.str()
    result = pytester.runpytest(*args, "--weights-scheduler", "local:0")
    assert result.ret == 1 and "expected local:N with N ≥ 1" in result.stdout.str()


def test_dask_imported_only_with_a_scheduler() -> None:
    code = (
        "import sys, pytest_weights.plugin.session, pytest_weights.runner, pytest_weights.engine;"
        "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "DASK_SCHEDULER_ADDRESS": "tcp://x:1"})


def test_path_the_workers_cannot_see(scheduler: str, tmp_path: Path) -> None:
    """A checkpoint the client opened but the workers cannot see: one line saying so, naming the file."""
    path = save(tmp_path / "m.safetensors", transformer_like(layers=2, seed=6))
    checker = Checker("cpu", scheduler=scheduler)
    try:
        with open_checkpoint(path) as ckpt:
            path.rename(tmp_path / "elsewhere.safetensors")  # the client holds it open; a worker opens by path
            result = checker.judge(ckpt, load_spec("default").assertions[0])
    finally:
        checker.close()
    assert not result.passed and "\n" not in result.summary
    assert result.summary.startswith(f"{path}: no such file or directory on this Dask worker"), result.summary


def test_cli_check_scheduler(scheduler: str, tmp_path: Path) -> None:
    """``pytest-weights check --scheduler ADDRESS``: the same JSON verdict as without."""
    path = save(tmp_path / "m.safetensors", transformer_like(layers=2, seed=8))
    docs = []
    for extra in ((), ("--scheduler", scheduler)):
        out = tmp_path / f"v{len(docs)}.json"
        cmd = [sys.executable, "-m", "pytest_weights.cli", "check", "--no-cache", "--json", str(out), str(path), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        docs.append(json.loads(out.read_text()))
    assert docs[0] == docs[1]
