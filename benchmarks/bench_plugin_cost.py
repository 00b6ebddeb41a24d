"""What the installed plugin costs a pytest run that has nothing to do with checkpoints.

pytest loads every ``pytest11`` entry point in the environment, so each run of any project
pays for importing ``pytest_weights.plugin``. This measures it: a one-test project, run
with ``pytest -q`` as is (the plugin loaded) and with ``-p no:weights`` (not loaded),
interleaved, and reports medians of the wall time and the peak RSS of each run::

    python benchmarks/bench_plugin_cost.py                     # 9 runs of each
    python benchmarks/bench_plugin_cost.py --runs 15 --json out.json
    python benchmarks/bench_plugin_cost.py --pythonpath /tmp/old   # another copy of the package (e.g. before a change)

Each run is a fresh interpreter; its peak RSS is the child's own ``ru_maxrss`` (``os.wait4``).
One warm-up run of each kind is not counted. Targets: ≤ 0.15 s and ≤ 15 MB over the run without
the plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.15
TARGET_MB = 15.0
KINDS = {"plugin": [], "no plugin": ["-p", "no:weights"]}


def make_project(root: Path) -> Path:
    """A project with one ordinary test."""
    (root / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    return root


def run_once(cwd: Path, extra: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of one ``pytest -q`` in a fresh interpreter."""
    cmd = [sys.executable, "-m", "pytest", "-q", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # ru_maxrss: KiB on Linux


def measure(cwd: Path, runs: int, env: dict[str, str]) -> dict[str, list[tuple[float, float, float]]]:
    """``runs`` interleaved runs of each kind (after one warm-up of each)."""
    for extra in KINDS.values():
        run_once(cwd, extra, env)
    out: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    for _ in range(runs):
        for kind, extra in KINDS.items():
            out[kind].append(run_once(cwd, extra, env))
    return out


def import_seconds(cwd: Path, runs: int, env: dict[str, str]) -> list[float]:
    """Seconds to import ``pytest_weights.plugin`` once pytest is imported (fresh interpreters)."""
    code = "import time, pytest\nt = time.perf_counter()\nimport pytest_weights.plugin\nprint(time.perf_counter() - t)"
    cmd = [sys.executable, "-c", code]
    return [float(subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True).stdout) for _ in range(runs)]


def imported_heavy(cwd: Path, env: dict[str, str]) -> list[str]:
    """Heavy modules present after ``pytest --co -q`` with the plugin (should be none)."""
    conftest = cwd / "conftest.py"
    conftest.write_text(
        "import sys\n\ndef pytest_sessionfinish(session):\n"
        "    open('modules.txt', 'w').write('\\n'.join(sorted(sys.modules)))\n"
    )
    try:
        cmd = [sys.executable, "-m", "pytest", "--co", "-q"]
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
        modules = set((cwd / "modules.txt").read_text().split())
    finally:
        conftest.unlink()
        (cwd / "modules.txt").unlink(missing_ok=True)
    return sorted(m for m in ("torch", "numpy", "scipy", "yaml", "safetensors") if m in modules)


def package_origin(cwd: Path, env: dict[str, str]) -> str:
    """Where the measured ``pytest_weights`` comes from, and pytest's version."""
    code = "import pytest_weights, pytest; print(pytest_weights.__file__, 'pytest', pytest.__version__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    return run.stdout.strip()


def table(results: dict[str, list[tuple[float, float, float]]], imports: list[float]) -> tuple[str, dict[str, float]]:
    """The markdown table of medians, and the extra cost of the plugin."""
    med = {k: [statistics.median(col) for col in zip(*v, strict=True)] for k, v in results.items()}
    extra = {name: med["plugin"][i] - med["no plugin"][i] for i, name in enumerate(("seconds", "mb", "cpu_seconds"))}
    rows = [
        "| `pytest -q`, one-test project | wall time, median (min–max) s | CPU time, median s | peak RSS, median MB |",
        "|---|---|---|---|",
    ]
    for kind, values in results.items():
        secs = [v[0] for v in values]
        wall, rss, cpu = med[kind]
        rows.append(f"| {kind} | {wall:.2f} ({min(secs):.2f}–{max(secs):.2f}) | {cpu:.2f} | {rss:.1f} |")
    ok_s = "met" if extra["seconds"] <= TARGET_SECONDS else "NOT met"
    ok_mb = "met" if extra["mb"] <= TARGET_MB else "NOT met"
    rows.append(
        f"| **extra for the plugin** | **{extra['seconds']:+.3f}** (target ≤ {TARGET_SECONDS}: {ok_s}) "
        f"| **{extra['cpu_seconds']:+.3f}** | **{extra['mb']:+.1f}** (target ≤ {TARGET_MB:.0f}: {ok_mb}) |"
    )
    extra["import_seconds"] = statistics.median(imports)
    rows.append(f"| `import pytest_weights.plugin` after pytest, median s | {extra['import_seconds']:.3f} | | |")
    return "\n".join(rows), extra


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="runs of each kind, interleaved (default 9, at least 7)")
    ap.add_argument("--pythonpath", default=None, help="put DIR first on PYTHONPATH (another copy of the package)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers to this file")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="bench-plugin-cost-") as tmp:
        cwd = make_project(Path(tmp))
        origin = package_origin(cwd, env)
        heavy = imported_heavy(cwd, env)
        load = os.getloadavg()[0]
        results = measure(cwd, max(7, args.runs), env)
        imports = import_seconds(cwd, max(7, args.runs), env)
    text, extra = table(results, imports)
    after = os.getloadavg()[0]
    print(f"package: {origin}; python {platform.python_version()}; load average before {load:.2f}, after {after:.2f}")
    print(f"heavy modules imported by `pytest --co -q` with the plugin: {', '.join(heavy) or 'none'}\n")
    print(text)
    if args.json:
        doc = {
            "runs": results,
            "imports": imports,
            "extra": extra,
            "heavy_modules": heavy,
            "package": origin,
            "load": load,
        }
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
