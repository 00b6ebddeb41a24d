"""Benchmark the bundled specs' statistics pass against the I/O limit and a naive baseline.

Run from the repository root::

    python benchmarks/bench_default_spec.py                        # 2 GB fp32, 3 repeats
    python benchmarks/bench_default_spec.py --size-gb 2 --dtype fp32 bf16 --json out.json
    python benchmarks/bench_default_spec.py --size-gb 0.5 --repeat 1 --profile cprofile

For each dtype it generates (or reuses) a transformer-like checkpoint in ``--data-dir``
(gitignored ``benchmarks/_data``): an embedding, ``--layers`` blocks of q/k/v/o and MLP
up/down matrices plus LayerNorm vectors, Gaussian values with std 0.02, written in storage
order. Then, on the same file with a warm page cache, it measures medians over
``--repeat`` runs, every run in a fresh subprocess so each one's peak RSS (``VmHWM``) is
its own:

* process start-up: ``import torch, scipy, pytest_weights`` in a fresh interpreter;
* raw read: plain ``readinto`` of the whole file, and every tensor through the package's
  ``SafetensorsFile.read`` with every page touched (the I/O limit of the statistics pass);
* the statistics pass of each ``--spec`` (default: ``default``): ``Checker(device="cpu").prepare(...)``
  over the ``load_spec(name)`` assertions (throughput, CPU seconds, ratio to raw read, peak RSS
  against the bound 2 × largest tensor + 500 MB);
* a naive baseline: load with ``safetensors``, then per matrix numpy mean/std, scipy
  skew/kurtosis, ``isfinite``, and ``scipy.stats.kstest(x, "norm", args=(mean, std))``;
  on a prefix subset of tensors unless ``--naive-full`` (throughput scaled, and said so);
* a cached re-run, when ``pytest_weights.cache`` exists: a cold statistics pass then a re-run
  with the same fresh ``StatCache`` (library, pass time), and ``pytest --checkpoint FILE``
  twice in a fresh directory (its ``.pytest_cache``; HOME/XDG_CACHE_HOME isolated), wall time.

Sizes use decimal units: 1 MB = 10⁶ bytes, 1 GB = 10⁹ bytes; throughput is checkpoint
bytes per second of the timed section (start-up excluded, reported separately).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MB = 1e6
DTYPES = {"fp32": ("F32", 4), "bf16": ("BF16", 2)}
VOCAB = 32000
STD = 0.02
TARGETS = {"throughput_mb_s": 1000.0, "speedup": 100.0, "rss_margin_mb": 500.0, "cached_fraction": 0.05}


# --------------------------------------------------------------------------- checkpoint


def layout(size_bytes: float, dtype: str, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes in storage order, sized so the file is close to ``size_bytes``.

    Parameters ≈ vocab·d + layers·(12·d² + 4·d) + 2·d; d is rounded to a multiple of 64.
    """
    itemsize = DTYPES[dtype][1]
    params = size_bytes / itemsize
    a, b = 12 * layers, VOCAB + 4 * layers + 2
    d = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    d = max(64, round(d / 64) * 64)
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB, d))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (d,)),
            (p + "input_layernorm.bias", (d,)),
            (p + "self_attn.q_proj.weight", (d, d)),
            (p + "self_attn.k_proj.weight", (d, d)),
            (p + "self_attn.v_proj.weight", (d, d)),
            (p + "self_attn.o_proj.weight", (d, d)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "post_attention_layernorm.bias", (d,)),
            (p + "mlp.up_proj.weight", (4 * d, d)),
            (p + "mlp.down_proj.weight", (d, 4 * d)),
        ]
    out += [("model.norm.weight", (d,)), ("model.norm.bias", (d,))]
    return out


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def checkpoint_path(data_dir: Path, size_gb: float, dtype: str, layers: int) -> Path:
    return data_dir / f"transformer-{size_gb:g}gb-{dtype}-{layers}l-std{STD:g}.safetensors"


def generate(path: Path, size_gb: float, dtype: str, layers: int, seed: int = 0) -> None:
    """Write the checkpoint tensor by tensor (bounded memory), atomically via a temp file."""
    import torch

    code, itemsize = DTYPES[dtype]
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    tensors = layout(size_gb * 1e9, dtype, layers)
    header: dict[str, object] = {"__metadata__": {"format": "pt", "generator": "bench_default_spec.py"}}
    offset = 0
    for name, shape in tensors:
        nbytes = numel(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    t0 = time.perf_counter()
    with tmp.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, shape in tensors:
            if len(shape) == 1:  # LayerNorm: weight ones, bias zeros (as initialised)
                t = torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
            else:
                t = torch.randn(shape, generator=gen).mul_(STD)
            t = t.to(tdtype).contiguous()
            f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
            del t
    os.replace(tmp, path)
    print(f"  generated {path} ({path.stat().st_size / MB:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)


def describe_checkpoint(path: Path) -> dict:
    """Size, tensor count and largest tensor, from the safetensors header."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    sizes = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()}
    largest = max(sizes, key=sizes.__getitem__)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "tensors": len(sizes),
        "largest_tensor": largest,
        "largest_tensor_bytes": sizes[largest],
    }


def warm_page_cache(path: Path) -> float:
    """Read the file once so every measurement starts from a warm page cache."""
    buf = bytearray(64 << 20)
    t0 = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- workers (run in a subprocess)


def _vm(key: str) -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MB
    return math.nan


def _cpu() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


#: The sources that decide what the statistics pass does (other modules do not change the numbers).
PASS_SOURCES = (
    "pytest_weights/engine.py",
    "pytest_weights/runner.py",
    "pytest_weights/cache.py",
    "pytest_weights/device.py",
    "pytest_weights/spec.py",
    "pytest_weights/selection.py",
    "pytest_weights/stats",
    "pytest_weights/readers",
    "pytest_weights/assertions",
    "specs/default.weights.yaml",
)


def code_fingerprint() -> str:
    """Hash of the statistics pass's sources: tells which engine version a measurement ran on."""
    import hashlib

    h = hashlib.sha256()
    files = []
    for rel in PASS_SOURCES:
        path = REPO / rel
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    for f in files:
        h.update(str(f.relative_to(REPO)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def git_state() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO).stdout.rstrip("\n")
        except OSError:
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", *PASS_SOURCES).splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty, "fingerprint": code_fingerprint()}


def worker_startup(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    import scipy.stats  # noqa: F401
    import torch  # noqa: F401

    import pytest_weights  # noqa: F401

    return {"import_s": time.perf_counter() - t0, "rss_mb": _vm("VmRSS"), "peak_rss_mb": _vm("VmHWM")}


def worker_raw(args: argparse.Namespace) -> dict:
    import torch

    from pytest_weights.readers.safetensors_file import SafetensorsFile

    path = Path(args.file)
    buf = bytearray(64 << 20)
    t0 = time.perf_counter()
    total = 0
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    plain_s = time.perf_counter() - t0
    del buf
    ckpt = SafetensorsFile(path)
    infos = ckpt.tensors()
    t0 = time.perf_counter()
    nbytes = 0
    for info in infos:  # storage order, as the engine reads; a mapped tensor is only read when touched
        t = ckpt.read(info.name)
        flat = t.reshape(-1).view(torch.uint8)
        float(flat[::4096].sum())  # one byte per page: maps every page (the I/O, without the statistics)
        nbytes += t.numel() * t.element_size()
        del t, flat
    reader_s = time.perf_counter() - t0
    ckpt.close()
    return {
        "plain_s": plain_s,
        "plain_bytes": total,
        "reader_s": reader_s,
        "reader_bytes": nbytes,
        "peak_rss_mb": _vm("VmHWM"),
    }


def worker_stats(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    import torch

    from pytest_weights import Checker, load_spec, open_checkpoint

    import_s = time.perf_counter() - t0
    spec = load_spec(args.spec_one)
    ckpt = open_checkpoint(args.file)
    rss_before = _vm("VmRSS")
    checker = Checker(device="cpu", workers=args.workers or None)
    work = [(ckpt, a) for a in spec.assertions]
    profile_text = None
    cpu0 = _cpu()
    if args.profile == "cprofile":
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(checker.prepare, work)
        pass_s = time.perf_counter() - t0
        out = io.StringIO()
        st = pstats.Stats(prof, stream=out)
        st.sort_stats("tottime").print_stats(args.profile_top)
        profile_text = _trim_pstats(out.getvalue())
    elif args.profile == "kernels":
        t0 = time.perf_counter()
        with _kernel_timers() as timers:
            checker.prepare(work)
        pass_s = time.perf_counter() - t0
        total = _cpu() - cpu0
        rows = [f"{'CPU s (all threads)':>20}  {'share':>6}  part of the pass"]
        for name, secs in sorted(timers.items(), key=lambda kv: -kv[1]):
            rows.append(f"{secs:20.3f}  {secs / total:6.1%}  {name}")
        rest = total - sum(timers.values())
        rows.append(f"{rest:20.3f}  {rest / total:6.1%}  everything else (page faults, scheduling, Python)")
        profile_text = "\n".join(rows)
    elif args.profile == "torch":
        from torch.profiler import ProfilerActivity, profile

        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            checker.prepare(work)
        pass_s = time.perf_counter() - t0
        profile_text = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_top)
    else:
        t0 = time.perf_counter()
        checker.prepare(work)
        pass_s = time.perf_counter() - t0
    cpu_s = _cpu() - cpu0
    t0 = time.perf_counter()
    results = [checker.evaluate(ckpt, a) for a in spec.assertions]
    evaluate_s = time.perf_counter() - t0
    nbytes = sum(p.bytes_total for p in checker.passes)
    return {
        "import_s": import_s,
        "pass_s": pass_s,
        "cpu_s": cpu_s,
        "evaluate_s": evaluate_s,
        "bytes_read": nbytes,
        "tensors_read": sum(p.tensors_total for p in checker.passes),
        "passed": all(r.passed for r in results),
        "failed": [r.name for r in results if not r.passed],
        "rss_before_mb": rss_before,
        "peak_rss_mb": _vm("VmHWM"),
        "threads": torch.get_num_threads(),
        "code": code_fingerprint(),
        "profile": profile_text,
    }


@contextlib.contextmanager
def _kernel_timers():
    """Thread CPU seconds spent in each kernel and finalize step of the pass, from every thread
    (cProfile sees only the calling thread, not the workers)."""
    import threading

    from pytest_weights.stats import KSNormal, Moments, ValueHistogram, kernels, ks, shape, weibull

    spent: dict[str, float] = {}
    lock = threading.Lock()
    local = threading.local()  # this thread's open timers: time goes to the innermost one
    patched: list[tuple[object, str, object]] = []

    def timed(owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*a, **k):
            stack = local.__dict__.setdefault("stack", [])
            now = time.thread_time()
            if stack:  # pause the enclosing timer
                outer, since = stack[-1]
                with lock:
                    spent[outer] = spent.get(outer, 0.0) + now - since
            stack.append((label, now))
            try:
                return original(*a, **k)
            finally:
                _, since = stack.pop()
                now = time.thread_time()
                with lock:
                    spent[label] = spent.get(label, 0.0) + now - since
                if stack:
                    stack[-1] = (stack[-1][0], now)

        patched.append((owner, attr, original))
        setattr(owner, attr, wrapper)

    # the fused sweep: each kernel's tiles and its finish (e.g. the keys' count), then the rest
    for cls in _kernel_classes(kernels.Kernel):
        timed(cls, "tile", f"sweep: {cls.__name__} tiles")
        if "finish" in vars(cls):
            timed(cls, "finish", f"sweep: {cls.__name__} finish")
    timed(kernels, "power_sums", "power sums on their own (offset or NaN slices)")
    timed(shape.RowStructure, "reduce", "rows: lag-1, row and column sums (Shape)")
    timed(ValueHistogram, "reduce", "histogram: occupied keys of a slice")
    timed(ValueHistogram, "merge", "histogram merge")
    timed(ValueHistogram, "finalize", "histogram finalize (occupied bins in value order)")
    timed(ks, "bounds", "KS bounds from the histogram")
    timed(KSNormal, "reduce", "KS gather sweep (wide bounds only)")
    timed(KSNormal, "finalize", "KS finalize (exact refinement)")
    timed(Moments, "merge", "moments merge")
    timed(weibull.WeibullFit, "finalize", "Weibull fit")
    timed(shape.Shape, "finalize", "Shape finalize (quantiles)")
    try:
        yield spent
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def _kernel_classes(base: type) -> list[type]:
    """Every imported subclass of ``base`` (the kernels of the fused sweep)."""
    out, todo = [], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


def worker_cached(args: argparse.Namespace) -> dict:
    """One statistics pass through the library with a persistent ``StatCache`` in ``--cache-dir``."""
    from pytest_weights import Checker, load_spec, open_checkpoint
    from pytest_weights.cache import StatCache

    spec = load_spec(args.spec_one)
    ckpt = open_checkpoint(args.file)
    cache = StatCache(args.cache_dir)
    checker = Checker(device="cpu", cache=cache)
    t0 = time.perf_counter()
    checker.prepare([(ckpt, a) for a in spec.assertions])
    pass_s = time.perf_counter() - t0
    return {
        "pass_s": pass_s,
        "hits": cache.hits,
        "stored": cache.stored,
        "bytes_read": sum(p.bytes_done for p in checker.passes),
        "peak_rss_mb": _vm("VmHWM"),
    }


def _trim_pstats(text: str) -> str:
    """pstats output from the column header on, with long paths shortened."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    keep = [line.rstrip() for line in lines[start:] if line.strip()]
    prefixes = sorted({str(REPO) + "/", *(p + "/" for p in sys.path if p)}, key=len, reverse=True)
    out = []
    for line in keep:
        for p in prefixes:
            line = line.replace(p, "")
        out.append(line)
    return "\n".join(out)


def worker_naive(args: argparse.Namespace) -> dict:
    """What a user would write by hand: load, then numpy/scipy statistics per tensor."""
    t0 = time.perf_counter()
    import numpy as np
    import scipy.stats
    from safetensors import safe_open

    import_s = time.perf_counter() - t0
    path = Path(args.file)
    desc = describe_checkpoint(path)
    bf16 = args.dtype == "bf16"  # numpy has no bfloat16: load with torch and convert, as a user would
    framework = "pt" if bf16 else "numpy"
    limit = args.naive_subset_mb * MB if args.naive_subset_mb > 0 else math.inf
    cpu0 = _cpu()
    t0 = time.perf_counter()
    if limit >= desc["bytes"]:
        if bf16:
            from safetensors.torch import load_file
        else:
            from safetensors.numpy import load_file
        tensors = load_file(path)
        names = list(tensors)
    else:  # the first tensors in storage order until ≥ limit bytes
        tensors, nbytes = {}, 0
        with safe_open(path, framework=framework) as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                tensors[name] = f.get_tensor(name)
                nbytes += tensors[name].nbytes
                if nbytes >= limit:
                    break
        names = list(tensors)
    load_s = time.perf_counter() - t0
    nbytes = sum(t.nbytes for t in tensors.values())
    t0 = time.perf_counter()
    out = {}
    for name in names:
        x = tensors[name]
        if bf16:
            x = x.float().numpy()
        finite = bool(np.isfinite(x).all())
        if x.ndim < 2 or x.size < 4096:  # the default spec's matrix selection
            out[name] = {"finite": finite}
            continue
        v = x.ravel()
        mean, std = float(v.mean()), float(v.std())
        out[name] = {
            "finite": finite,
            "mean": mean,
            "std": std,
            "skew": float(scipy.stats.skew(v)),
            "kurtosis": float(scipy.stats.kurtosis(v)),
            "ks": float(scipy.stats.kstest(v, "norm", args=(mean, std)).statistic),
        }
    compute_s = time.perf_counter() - t0
    cpu_s = _cpu() - cpu0
    return {
        "import_s": import_s,
        "load_s": load_s,
        "compute_s": compute_s,
        "total_s": load_s + compute_s,
        "cpu_s": cpu_s,
        "bytes": nbytes,
        "tensors": len(names),
        "subset": nbytes < desc["bytes"] - 1024 * 1024,
        "peak_rss_mb": _vm("VmHWM"),
        "max_ks": max((r.get("ks", 0.0) for r in out.values()), default=math.nan),
    }


WORKERS = {
    "startup": worker_startup,
    "raw": worker_raw,
    "stats": worker_stats,
    "naive": worker_naive,
    "cached": worker_cached,
}


# --------------------------------------------------------------------------- driver


def run_worker(kind: str, file: Path | None, args: argparse.Namespace, **extra: object) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--dtype", args.dtype_one]
    cmd += ["--spec-one", getattr(args, "spec_one", None) or args.spec[0]]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if file is not None:
        cmd += ["--file", str(file)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["loadavg_before"] = load  # other work on the machine skews wall times: look here first
    return result


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure_cached(path: Path, args: argparse.Namespace) -> dict:
    """Cold run then re-run with a fresh cache, twice over: through the library and through pytest.

    Library: ``Checker(device="cpu", cache=StatCache(dir))`` in two fresh processes (pass time
    only). pytest: ``pytest --checkpoint FILE`` twice in a fresh directory (its cache lives in
    ``.pytest_cache`` there; HOME/XDG_CACHE_HOME isolated too), whole-process wall time.
    """
    import importlib.util

    if importlib.util.find_spec("pytest_weights.cache") is None:
        return {"skipped": "pytest_weights.cache does not exist yet: no cached re-run measured"}
    out: dict = {}
    lib: dict[str, list[dict]] = {"cold": [], "rerun": []}
    wall: dict[str, list[float]] = {"cold": [], "rerun": []}
    rcs, tails = [], []
    cmd = [sys.executable, "-m", "pytest", "--checkpoint", str(path), "-q", "-p", "no:xdist"]
    cmd += ["--weights-device", "cpu", *shlex.split(args.cache_args)]
    for _ in range(args.cache_repeat):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
            try:
                for phase in ("cold", "rerun"):
                    lib[phase].append(run_worker("cached", path, args, cache_dir=Path(tmp) / "lib-cache"))
            except RuntimeError as e:  # e.g. the Checker/StatCache API changed
                out["library_error"] = str(e)[-2000:]
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
            env = dict(os.environ, HOME=tmp, XDG_CACHE_HOME=str(Path(tmp) / ".cache"))
            # pytest's rootdir (hence its cache dir) comes from the spec's path, not the cwd: pin it.
            isolated = [*cmd, "-o", f"cache_dir={Path(tmp) / '.pytest_cache'}"]
            for phase in ("cold", "rerun"):
                t0 = time.perf_counter()
                proc = subprocess.run(isolated, capture_output=True, text=True, cwd=tmp, env=env)
                wall[phase].append(time.perf_counter() - t0)
                rcs.append(proc.returncode)
                tails.append(proc.stdout.strip().splitlines()[-2:])
                if proc.returncode != 0:
                    print(f"  warning: {shlex.join(isolated)} exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    if lib["rerun"]:
        out["library"] = {
            "cold_pass_s": median(lib["cold"], "pass_s"),
            "rerun_pass_s": median(lib["rerun"], "pass_s"),
            "rerun_bytes_read": lib["rerun"][0]["bytes_read"],
            "rerun_hits": lib["rerun"][0]["hits"],
            "runs": lib,
        }
    out["pytest"] = {
        "command": shlex.join(["pytest", *cmd[3:4], "FILE", *cmd[5:], "-o", "cache_dir=FRESH_DIR"]),
        "cold_s": statistics.median(wall["cold"]),
        "rerun_s": statistics.median(wall["rerun"]),
        "runs": wall,
        "returncodes": rcs,
        "output_tails": tails,
    }
    return out


def measure_pass(path: Path, ckpt: dict, raw: dict, args: argparse.Namespace) -> dict:
    """``--repeat`` statistics passes of ``args.spec_one`` in fresh processes: medians, peak RSS."""
    size = ckpt["bytes"]
    stats_runs = [run_worker("stats", path, args) for _ in range(args.repeat)]
    pass_s = median(stats_runs, "pass_s")
    bound = (2 * ckpt["largest_tensor_bytes"]) / MB + TARGETS["rss_margin_mb"]
    best_s = min(r["pass_s"] for r in stats_runs)
    return {
        "spec": args.spec_one,
        "pass_s": pass_s,
        "best_pass_s": best_s,
        "best_mb_s": size / MB / best_s,
        "cpu_s": median(stats_runs, "cpu_s"),
        "loadavg": [round(r["loadavg_before"], 2) for r in stats_runs],
        "evaluate_s": median(stats_runs, "evaluate_s"),
        "wall_s": median(stats_runs, "wall_s"),
        "mb_s": size / MB / pass_s,
        "bytes_read": stats_runs[0]["bytes_read"],
        "tensors_read": stats_runs[0]["tensors_read"],
        "ratio_to_reader": (size / MB / pass_s) / raw["reader_mb_s"],
        "ratio_to_plain": (size / MB / pass_s) / raw["plain_mb_s"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in stats_runs),
        "rss_before_pass_mb": median(stats_runs, "rss_before_mb"),
        "rss_bound_mb": bound,
        "passed": all(r["passed"] for r in stats_runs),
        "failed": stats_runs[0]["failed"],
        "threads": stats_runs[0]["threads"],
        "code": sorted({r["code"] for r in stats_runs}),
        "runs": [{k: v for k, v in r.items() if k != "profile"} for r in stats_runs],
    }


def bench_dtype(dtype: str, args: argparse.Namespace) -> dict:
    args.dtype_one = dtype
    path = checkpoint_path(Path(args.data_dir), args.size_gb, dtype, args.layers)
    if path.exists():
        print(f"[{dtype}] reusing {path}", flush=True)
    else:
        print(f"[{dtype}] generating {args.size_gb:g} GB checkpoint…", flush=True)
        generate(path, args.size_gb, dtype, args.layers)
    ckpt = describe_checkpoint(path)
    ckpt["warm_read_s"] = warm_page_cache(path)
    out: dict = {"dtype": dtype, "checkpoint": ckpt}
    size = ckpt["bytes"]

    print(f"[{dtype}] start-up ×{args.repeat}", flush=True)
    startup = [run_worker("startup", None, args) for _ in range(args.repeat)]
    out["startup"] = {
        "wall_s": median(startup, "wall_s"),
        "import_s": median(startup, "import_s"),
        "rss_mb": median(startup, "rss_mb"),
        "runs": startup,
    }

    print(f"[{dtype}] raw read ×{args.repeat}", flush=True)
    raw = [run_worker("raw", path, args) for _ in range(args.repeat)]
    out["raw"] = {
        "plain_mb_s": statistics.median(r["plain_bytes"] / MB / r["plain_s"] for r in raw),
        "reader_mb_s": statistics.median(r["reader_bytes"] / MB / r["reader_s"] for r in raw),
        "reader_s": median(raw, "reader_s"),
        "plain_s": median(raw, "plain_s"),
        "runs": raw,
    }

    out["specs"] = {}
    for spec in args.spec:
        args.spec_one = spec
        print(f"[{dtype}] statistics pass, spec {spec} ×{args.repeat}", flush=True)
        out["specs"][spec] = measure_pass(path, ckpt, out["raw"], args)
    args.spec_one = args.spec[0]
    out["stats"] = out["specs"][args.spec[0]]

    if args.skip_naive:
        out["naive"] = {"skipped": "--skip-naive"}
    else:
        subset = 0 if args.naive_full else args.naive_subset_mb
        n_naive = args.naive_repeat or args.repeat
        print(f"[{dtype}] naive baseline ×{n_naive}" + (f" on a ≥ {subset:g} MB subset" if subset else ""), flush=True)
        naive = [run_worker("naive", path, args, naive_subset_mb=subset) for _ in range(n_naive)]
        mb_s = statistics.median(r["bytes"] / MB / r["total_s"] for r in naive)
        out["naive"] = {
            "mb_s": mb_s,
            "subset": naive[0]["subset"],
            "subset_bytes": naive[0]["bytes"],
            "subset_tensors": naive[0]["tensors"],
            "load_s": median(naive, "load_s"),
            "compute_s": median(naive, "compute_s"),
            "total_s": median(naive, "total_s"),
            "cpu_s": median(naive, "cpu_s"),
            "cpu_mb_per_cpu_s": statistics.median(r["bytes"] / MB / r["cpu_s"] for r in naive),
            "estimated_full_s": size / MB / mb_s,
            "speedup": out["stats"]["mb_s"] / mb_s,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in naive),
            "max_ks": naive[0]["max_ks"],
            "runs": naive,
        }

    if args.skip_cache:
        out["cached"] = {"skipped": "--skip-cache"}
    else:
        print(f"[{dtype}] cached re-run", flush=True)
        out["cached"] = measure_cached(path, args)

    if args.profile:
        out["profiles"] = {}
        for spec in args.spec:
            args.spec_one = spec
            print(f"[{dtype}] profile ({args.profile}), spec {spec}", flush=True)
            prof = run_worker("stats", path, args, profile=args.profile, profile_top=args.profile_top)
            out["profiles"][spec] = {"kind": args.profile, "pass_s": prof["pass_s"], "text": prof["profile"]}
        args.spec_one = args.spec[0]
        out["profile"] = out["profiles"][args.spec[0]]
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = math.nan
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 1024**2
    except (OSError, StopIteration):
        pass
    versions = {}
    for mod in ("torch", "numpy", "scipy", "safetensors"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "loadavg": _loadavg(),
        "mem_gib": round(mem, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def fmt_mb(x: float) -> str:
    return f"{x:,.0f}"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def table(results: list[dict]) -> str:
    """The markdown results table: one column per dtype."""
    head = "| | " + " | ".join(r["dtype"] for r in results) + " |"
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn) -> None:
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("n/a")
        rows.append((label, cells))

    row("checkpoint size (MB)", lambda r: fmt_mb(r["checkpoint"]["bytes"] / MB))
    row("tensors", lambda r: str(r["checkpoint"]["tensors"]))
    row(
        "largest tensor (MB)",
        lambda r: f"{fmt_mb(r['checkpoint']['largest_tensor_bytes'] / MB)} (`{r['checkpoint']['largest_tensor']}`)",
    )
    row(
        "process start-up: import torch, scipy, pytest_weights (s / RSS MB)",
        lambda r: f"{r['startup']['wall_s']:.2f} s / {fmt_mb(r['startup']['rss_mb'])}",
    )
    row("plain file read, warm cache (MB/s)", lambda r: fmt_mb(r["raw"]["plain_mb_s"]))
    row(
        "`SafetensorsFile.read` every tensor, every page touched (MB/s) = I/O limit",
        lambda r: fmt_mb(r["raw"]["reader_mb_s"]),
    )
    row(
        "statistics pass, default spec: median (best) s",
        lambda r: f"{r['stats']['pass_s']:.2f} ({r['stats']['best_pass_s']:.2f})",
    )
    row(
        "statistics pass throughput: median (best) MB/s",
        lambda r: f"{fmt_mb(r['stats']['mb_s'])} ({fmt_mb(r['stats']['best_mb_s'])})",
    )
    row("… CPU seconds of the pass (all threads)", lambda r: f"{r['stats']['cpu_s']:.1f}")
    row("… ratio to `SafetensorsFile.read`", lambda r: f"{r['stats']['ratio_to_reader']:.3f}")
    row("evaluate assertions after the pass (s)", lambda r: f"{r['stats']['evaluate_s']:.3f}")
    row(
        "default spec verdict",
        lambda r: "all pass" if r["stats"]["passed"] else "fails: " + ", ".join(r["stats"]["failed"]),
    )
    row(
        "peak RSS of the pass (MB) vs bound 2×largest + 500",
        lambda r: f"{fmt_mb(r['stats']['peak_rss_mb'])} / {fmt_mb(r['stats']['rss_bound_mb'])}",
    )
    row("naive numpy/scipy baseline (MB/s)", lambda r: _naive_cell(r["naive"]))
    row(
        "CPU seconds per GB: naive (statistics pass)",
        lambda r: f"{1000 / r['naive']['cpu_mb_per_cpu_s']:.0f} ({_cpu_per_gb(r):.1f})",
    )
    row("naive peak RSS (MB)", lambda r: fmt_mb(r["naive"]["peak_rss_mb"]))
    row("speedup over naive (wall, median)", lambda r: f"{r['naive']['speedup']:.1f}×")
    row(
        "load average before each pass run (2 cores)",
        lambda r: ", ".join(f"{x:.1f}" for x in r["stats"]["loadavg"]),
    )
    row(
        "cached re-run (library pass; whole `pytest --checkpoint` process)",
        lambda r: _cached_cell(r["cached"], r["startup"]["wall_s"]),
    )
    lines = [head, "|---|" + "---|" * len(results)]
    lines += ["| " + label + " | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def spec_table(results: list[dict]) -> str:
    """One row per (dtype, spec): the statistics pass of each spec measured."""
    lines = [
        "| dtype | spec | tensors read | pass: median (best) s | MB/s: median (best) | CPU s (user+sys) "
        "| peak RSS / bound (MB) | verdict | load before each run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for spec, st in r["specs"].items():
            verdict_ = "all pass" if st["passed"] else "fails: " + ", ".join(st["failed"])
            lines.append(
                f"| {r['dtype']} | `{spec}` | {st['tensors_read']} | {st['pass_s']:.2f} ({st['best_pass_s']:.2f}) "
                f"| {fmt_mb(st['mb_s'])} ({fmt_mb(st['best_mb_s'])}) | {st['cpu_s']:.2f} "
                f"| {fmt_mb(st['peak_rss_mb'])} / {fmt_mb(st['rss_bound_mb'])} | {verdict_} "
                f"| {', '.join(f'{x:.1f}' for x in st['loadavg'])} |"
            )
    return "\n".join(lines)


def _cpu_per_gb(r: dict) -> float:
    return r["stats"]["cpu_s"] / (r["checkpoint"]["bytes"] / 1e9)


def _naive_cell(n: dict) -> str:
    if "skipped" in n:
        return "skipped"
    s = f"{n['mb_s']:,.1f}"
    if n["subset"]:
        part = f"{n['subset_tensors']} tensors, {n['subset_bytes'] / MB:,.0f} MB"
        s += f" (measured on the first {part}, scaled; full ≈ {n['estimated_full_s']:,.0f} s)"
    return s


def _cached_cell(c: dict, startup_s: float) -> str:
    if "skipped" in c:
        return "skipped: " + c["skipped"]
    parts = []
    if "library" in c:
        lib = c["library"]
        frac = lib["rerun_pass_s"] / lib["cold_pass_s"]
        parts.append(f"pass {lib['rerun_pass_s']:.3f} s vs cold {lib['cold_pass_s']:.1f} s = {frac:.1%}")
    py = c["pytest"]
    frac = py["rerun_s"] / py["cold_s"]
    parts.append(f"`pytest` wall {py['rerun_s']:.1f} s vs cold {py['cold_s']:.1f} s = {frac:.0%}")
    return "; ".join(parts)


def targets(results: list[dict]) -> str:
    lines = []
    for r in results:
        d = r["dtype"]
        mbs = r["stats"]["mb_s"]
        rss, bound = r["stats"]["peak_rss_mb"], r["stats"]["rss_bound_mb"]
        met = verdict(mbs >= 1000) if d == "fp32" else "(the target is for fp32)"
        lines.append(f"- {d}: statistics pass ≥ 1 GB/s: {mbs:,.0f} MB/s → {met}")
        n = r.get("naive", {})
        if "speedup" in n:
            lines.append(f"- {d}: ≥ 100× faster than naive: {n['speedup']:.0f}× → {verdict(n['speedup'] >= 100)}")
        lines.append(f"- {d}: peak RSS ≤ 2×largest + 500 MB: {rss:,.0f} ≤ {bound:,.0f} MB → {verdict(rss <= bound)}")
        c = r.get("cached", {})
        if "skipped" in c:
            lines.append(f"- {d}: cached re-run ≤ 5% of cold: not measured ({c['skipped']})")
        else:
            if "library" in c:
                frac = c["library"]["rerun_pass_s"] / c["library"]["cold_pass_s"]
                lines.append(
                    f"- {d}: cached re-run ≤ 5% of cold (statistics pass): {frac:.1%} → {verdict(frac <= 0.05)}"
                )
            frac = c["pytest"]["rerun_s"] / c["pytest"]["cold_s"]
            lines.append(
                f"- {d}: cached re-run ≤ 5% of cold (whole pytest process, start-up included): "
                f"{frac:.1%} → {verdict(frac <= 0.05)}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size in GB (10⁹ bytes); default 2")
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32"], help="one or more of fp32, bf16")
    p.add_argument("--layers", type=int, default=24, help="transformer blocks; default 24")
    p.add_argument("--data-dir", default=str(HERE / "_data"), help="where checkpoints are generated and reused")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported); default 3")
    p.add_argument(
        "--spec",
        nargs="+",
        default=["default"],
        help="bundled spec names (or spec files) whose statistics pass is measured; default: default. "
        "The first one is the main table's; every one gets a row in the per-spec table",
    )
    p.add_argument(
        "--naive-subset-mb",
        type=float,
        default=256,
        help="run the naive baseline on the first tensors totalling ≥ this many MB and scale; default 256",
    )
    p.add_argument("--naive-full", action="store_true", help="run the naive baseline on the whole checkpoint")
    p.add_argument("--naive-repeat", type=int, default=0, help="runs of the naive baseline (default: --repeat)")
    p.add_argument("--skip-naive", action="store_true", help="skip the naive baseline")
    p.add_argument("--skip-cache", action="store_true", help="skip the cached re-run")
    p.add_argument("--cache-args", default="", help="extra pytest arguments for the cached re-run (e.g. a cache flag)")
    p.add_argument("--cache-repeat", type=int, default=1, help="cold + re-run pairs for the cache; default 1")
    p.add_argument("--workers", type=int, default=0, help="CPU threads of the pass (default: the engine's own)")
    p.add_argument(
        "--profile",
        choices=["kernels", "cprofile", "torch"],
        help="also profile one statistics pass: CPU seconds per kernel over all threads (kernels), "
        "the calling thread only (cprofile), or torch ops (torch)",
    )
    p.add_argument("--profile-top", type=int, default=25, help="profile entries shown; default 25")
    p.add_argument("--json", help="write every measurement to this JSON file")
    # internal: one measurement in a fresh process
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--spec-one", default="default", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        args.dtype = args.dtype[0]
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    info = machine()
    code = git_state()
    print(
        f"machine: {info['cpu']}, {info['nproc']} cores, {info['mem_gib']} GiB RAM, load {info['loadavg']}; "
        f"python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, scipy {info['scipy']}",
        flush=True,
    )
    print(f"code: {code['commit']} (package sources {code['fingerprint']}, modified: {code['dirty'] or 'none'})")
    results: list[dict] = []

    def save() -> None:
        if args.json:
            doc = {
                "machine": info,
                "code": code,
                "args": {k: v for k, v in vars(args).items() if k != "dtype_one"},
                "results": results,
            }
            Path(args.json).write_text(json.dumps(doc, indent=2))

    for d in args.dtype:
        results.append(bench_dtype(d, args))
        save()  # partial results survive an interrupted run
    code["fingerprint_end"] = code_fingerprint()
    info["loadavg_end"] = _loadavg()
    save()
    print()
    print(table(results))
    print()
    print(spec_table(results))
    print()
    print("Targets:")
    print(targets(results))
    changed = {c for r in results for sp in r["specs"].values() for c in sp["code"]} | {code["fingerprint_end"]}
    if changed != {code["fingerprint"]}:
        print(f"\nwarning: the pass's sources changed during the run ({sorted(changed)}): results mix versions")
    for r in results:
        for spec, prof in r.get("profiles", {}).items():
            head = f"{r['dtype']}, spec {spec}, {prof['kind']}, {prof['pass_s']:.2f} s"
            print(f"\nProfile of one statistics pass ({head}):")
            print(prof["text"])
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
