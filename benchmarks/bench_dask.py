"""The statistics pass on Dask (issue 14): LocalCluster with 1 vs 2 workers against the local engine.

Generates a safetensors checkpoint (``--mb`` MB of bf16 or fp32 matrices, default 256 MB ≤ 0.5 GB
while others share the machine), then times the bundled default spec's pass (no cache):

* ``local``: the in-process engine (all cores);
* ``dask local:1`` / ``dask local:2``: LocalCluster of 1 / 2 single-threaded worker processes,
  timed after the cluster is up (its start-up is reported separately);
* per-task overhead: a pass over ``--tiny`` tensors of 64 values each, batched (as the executor
  does) and then one task per tensor, whose time is almost all scheduling, serialization and
  bookkeeping.

Wall time and CPU time (user+sys of this process plus the workers') are reported. Results are
checked identical to the local engine's. Run: ``python benchmarks/bench_dask.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from pytest_weights.executors import dask as dask_executor
from pytest_weights.readers import open_checkpoint
from pytest_weights.runner import Checker
from pytest_weights.spec import load_spec


def generate(path: Path, mb: int, dtype: torch.dtype, tensor_mb: int, width: int = 2048) -> None:
    """``mb`` MB of Gaussian ``width``-column matrices of ``tensor_mb`` MB each."""
    g = torch.Generator().manual_seed(0)
    per = tensor_mb * 2**20 // dtype.itemsize // width
    n = max(1, mb * 2**20 // (per * width * dtype.itemsize))
    tensors = {
        f"model.layers.{i}.mlp.weight": (torch.randn(per, width, generator=g) * 0.02).to(dtype) for i in range(n)
    }
    save_file(tensors, str(path))


def tiny(path: Path, n: int) -> None:
    g = torch.Generator().manual_seed(1)
    save_file({f"t.{i}.weight": torch.randn(8, 8, generator=g) for i in range(n)}, str(path))


def same(a: object, b: object) -> bool:
    """Bit-for-bit equality of statistic values (NaN = NaN, tensors elementwise)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_cpu(checker: Checker) -> float:
    """CPU seconds (user+sys) used so far by the cluster's worker processes."""
    if checker.scheduler is None:
        return 0.0
    return sum(checker.executor().client.run(cpu).values())


def timed_pass(path: Path, spec: str, checker: Checker) -> tuple[float, float, dict]:
    """(wall s, CPU s of this process and the workers, values) of one pass."""
    ckpt = open_checkpoint(path)
    assertions = load_spec(spec).assertions
    t0, c0, w0 = time.perf_counter(), cpu(), worker_cpu(checker)
    checker.prepare((ckpt, a) for a in assertions)
    wall, used = time.perf_counter() - t0, cpu() - c0 + worker_cpu(checker) - w0
    assert not checker.errors, checker.errors
    values = {k: dict(v) for k, v in checker.store.items()}
    ckpt.close()
    return wall, used, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the generated checkpoint (MB)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--tensor-mb", type=int, default=16, help="size of each generated matrix (MB)")
    parser.add_argument("--spec", default="default")
    parser.add_argument("--tiny", type=int, default=400, help="tensors in the per-task overhead checkpoint")
    parser.add_argument("--workers", default="1,2", help="LocalCluster sizes to time")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.safetensors", Path(tmp) / "tiny.safetensors"
        generate(big, args.mb, dtype, args.tensor_mb)
        tiny(small, args.tiny)
        size = big.stat().st_size / 1e9
        print(f"checkpoint: {size:.3f} GB {args.dtype}, spec {args.spec!r}; {os.cpu_count()} cores")
        open_checkpoint(big).tensors()  # warm the page cache
        big.read_bytes()
        wall, used, reference = timed_pass(big, args.spec, Checker("cpu"))
        print(f"local engine      : {wall:6.2f} s wall ({size / wall:5.2f} GB/s), CPU {used:5.2f} s")
        twall, tused, tref = timed_pass(small, args.spec, Checker("cpu"))
        print(f"local, {args.tiny} tiny : {twall:6.2f} s wall, CPU {tused:5.2f} s")
        batch_tensors = dask_executor.BATCH_TENSORS
        for n in (int(x) for x in args.workers.split(",")):
            t0 = time.perf_counter()
            checker = Checker("cpu", scheduler=f"local:{n}")
            checker.executor()
            start = time.perf_counter() - t0
            try:
                wall, used, values = timed_pass(big, args.spec, checker)
                identical = same(values, reference)
                print(
                    f"dask local:{n}      : {wall:6.2f} s wall ({size / wall:5.2f} GB/s), CPU {used:5.2f} s, "
                    f"cluster start {start:4.1f} s, tasks {checker.executor().tasks}, identical {identical}"
                )
                for batch in (dask_executor.BATCH_TENSORS, 1):  # batched; then one task per tensor
                    dask_executor.BATCH_TENSORS = batch
                    checker.store = type(checker.store)()
                    before = checker.executor().tasks
                    twall, tused, tvalues = timed_pass(small, args.spec, checker)
                    tasks = max(1, checker.executor().tasks - before)
                    print(
                        f"dask local:{n} tiny : {twall:6.2f} s wall for {tasks:3d} tasks: {1e3 * twall / tasks:6.2f} "
                        f"ms/task wall, {1e3 * tused / tasks:5.2f} ms/task CPU, identical {same(tvalues, tref)}"
                    )
                dask_executor.BATCH_TENSORS = batch_tensors
            finally:
                checker.close()


if __name__ == "__main__":
    main()
