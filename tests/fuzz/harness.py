"""One fuzz case: copy a seed, mutate one of its files, open and read it, judge the outcome.

The invariants, for every mutated checkpoint: opening it, listing its tensors and reading
every one either succeeds (each tensor has the shape and dtype its TensorInfo promised) or
raises a one-line :class:`CheckpointError` naming a file of the checkpoint; nothing else is
raised; no payload ran (the marker file is absent and no file appeared); the input files are
unchanged (sha256); the case took less than :data:`SLOW` seconds and its peak memory grew by
less than :data:`MEMORY_LIMIT`; and a refusal did not come from a failed allocation (the size
must be refused before allocating).
"""

from __future__ import annotations

import hashlib
import random
import resource
import shutil
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from pytest_weights.errors import CheckpointError

from .corpus import Seed
from .mutate import mutate

#: Outcomes that satisfy the invariants; every other one is a bug.
GOOD = ("ok", "refused")
#: Outcomes, in report order.
OUTCOMES = ("ok", "refused", "other", "hang", "crash", "executed", "changed", "slow", "memory", "alloc", "invalid")
SLOW = 5.0  # CPU seconds per case (process time: a busy machine does not make a case slow)
MEMORY_LIMIT = 256 * 1024 * 1024  # bytes of peak RSS growth per case
MARKER = "PWNED"


@dataclass(frozen=True)
class Outcome:
    """What one case did: its kind (one of :data:`OUTCOMES`), a detail line, and how to reproduce it."""

    format: str
    case: int
    kind: str
    detail: str
    mutation: str
    seconds: float = 0.0
    cause: str = ""  # the library exception a refusal wrapped (its type name), if any


def case_rng(seed: int, fmt: str, case: int) -> random.Random:
    """The generator of one case: the same (seed, format, case) always gives the same mutation."""
    return random.Random(f"{seed}:{fmt}:{case}")


def make_case(seed: Seed, workdir: Path, rng: random.Random) -> tuple[Path, Path, str]:
    """Copy the seed into ``workdir`` and mutate one of its files; return (what to open, marker, mutation)."""
    shutil.copytree(seed.directory, workdir, dirs_exist_ok=True)
    marker = workdir / MARKER
    target = rng.choice(seed.targets)
    path = workdir / target
    data, what = mutate(target, path.read_bytes(), rng, marker)
    path.write_bytes(data)
    return workdir / seed.entry, marker, what


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _exercise(entry: Path) -> str:
    """Open, list and read everything; return "" if every tensor matched its info, else what did not."""
    import torch

    from pytest_weights.readers import open_checkpoint

    with open_checkpoint(entry) as ckpt:
        infos = ckpt.tensors()
        names = [i.name for i in infos]
        if len(set(names)) != len(names):
            return "a tensor name listed twice"
        for info in infos:
            t = ckpt.read(info.name)
            if not isinstance(t, torch.Tensor):
                return f"read({info.name!r}) returned {type(t).__name__}"
            if tuple(t.shape) != info.shape or t.dtype != info.dtype:
                return f"{info.name!r}: read {tuple(t.shape)} {t.dtype}, listed {info.shape} {info.dtype}"
    return ""


def _judge_refusal(e: CheckpointError, workdir: Path) -> tuple[str, str]:
    """("refused" or what is wrong with the error, its detail)."""
    root = workdir.resolve()
    named = Path(e.path).resolve()
    if named != root and root not in named.parents:
        return "invalid", f"names {e.path}, not a file of the checkpoint: {e}"
    if "\n" in str(e) or "Traceback" in str(e) or not e.message.strip():
        return "invalid", f"not a one-line message: {str(e)[:300]!r}"
    cause = e.__context__
    if isinstance(cause, MemoryError) or "can't allocate memory" in e.message or "not enough memory" in e.message:
        return "alloc", f"refused only after trying to allocate: {e.message[:300]}"
    return "refused", e.message[:300]


def _wrapped(e: CheckpointError) -> str:
    """The type name of the library exception a refusal quotes (``<what>: <Type>: …``), or "" for a reader's own
    check."""
    from pytest_weights.readers._util import _root_failure

    if e.__context__ is None:
        return ""
    name = type(_root_failure(e.__context__)).__name__
    return name if f": {name}" in e.message else ""


def check(entry: Path, workdir: Path, marker: Path) -> tuple[str, str, str]:
    """Run the invariants on one mutated checkpoint: (outcome kind, detail, wrapped cause type)."""
    before = _fingerprint(workdir)
    peak = _peak_rss()
    start = time.process_time()
    kind, detail, cause = "ok", "", ""
    try:
        problem = _exercise(entry)
        if problem:
            kind, detail = "invalid", problem
    except CheckpointError as e:
        kind, detail = _judge_refusal(e, workdir)
        cause = _wrapped(e)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb))
        kind, detail = "other", f"{type(e).__name__}: {str(e)[:200]} [{where}]"
    seconds = time.process_time() - start
    after = _fingerprint(workdir)
    if marker.exists() or set(after) - set(before):
        kind, detail = "executed", f"payload ran: new files {sorted(set(after) - set(before))}"
    elif after != before:
        kind, detail = "changed", f"input modified: {sorted(k for k in before if before[k] != after.get(k))}"
    elif seconds > SLOW:
        kind, detail = "slow", f"{seconds:.1f}s; {detail}"
    elif _peak_rss() - peak > MEMORY_LIMIT:
        kind, detail = "memory", f"peak RSS grew {(_peak_rss() - peak) >> 20} MiB; {detail}"
    return kind, detail, cause


def run_case(
    seeds: dict[str, Seed], fmt: str, seed: int, case: int, workdir: Path, keep: Path | None = None
) -> Outcome:
    """Build, check and clean up one case (kept under ``keep`` if it broke an invariant)."""
    rng = case_rng(seed, fmt, case)
    case_dir = workdir / f"{fmt}-{case}"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    try:
        entry, marker, mutation = make_case(seeds[fmt], case_dir, rng)
    except Exception as e:  # a bug in the fuzzer, not in a reader
        return Outcome(fmt, case, "other", f"mutation failed: {type(e).__name__}: {e}", "")
    start = time.perf_counter()
    kind, detail, cause = check(entry, case_dir, marker)
    outcome = Outcome(fmt, case, kind, detail, mutation, time.perf_counter() - start, cause)
    if kind not in GOOD and keep is not None:
        shutil.copytree(case_dir, keep / case_dir.name, dirs_exist_ok=True)
    shutil.rmtree(case_dir, ignore_errors=True)
    return outcome


def replay(seeds: dict[str, Seed], fmt: str, seed: int, case: int, workdir: Path, keep: Path | None = None) -> str:
    """Rebuild one case without reading it: its mutation (for a case whose worker hung or died), kept under
    ``keep`` if given."""
    case_dir = workdir / f"{fmt}-{case}-replay"
    try:
        _entry, _marker, mutation = make_case(seeds[fmt], case_dir, case_rng(seed, fmt, case))
        if keep is not None:
            shutil.copytree(case_dir, keep / f"{fmt}-{case}", dirs_exist_ok=True)
    except Exception as e:
        mutation = f"(cannot rebuild: {type(e).__name__}: {e})"
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
    return mutation


def warm_up(seeds: dict[str, Seed]) -> None:
    """Read every seed once, so that imports (torch.distributed.checkpoint, gguf …) do not count as case time."""
    for seed in seeds.values():
        _exercise(seed.directory / seed.entry)


def worker(conn: Connection, seeds: dict[str, Seed], seed: int, workdir: str, keep: str | None) -> None:
    """A campaign worker process: runs the (format, case) pairs it receives until it receives None."""
    import torch

    torch.set_num_threads(1)
    warm_up(seeds)
    while True:
        task = conn.recv()
        if task is None:
            return
        fmt, case = task
        conn.send(run_case(seeds, fmt, seed, case, Path(workdir), Path(keep) if keep else None))
