"""``python -m tests.fuzz --cases 5000 [--seed S] [--formats ...] [--jobs N]``: a fuzz campaign.

Cases run in worker processes fed one case at a time; a worker that dies (segfault, SIGBUS,
out-of-memory kill) counts a *crash* for its case, one that does not answer within
``--timeout`` seconds is killed and counts a *hang*; both are replaced and the campaign goes
on (the case is rebuilt here, unread, to print its mutation and keep it with ``--keep``).
Prints a table per format and the cases that broke an invariant (with the seed and case
number that reproduce them: ``--formats F --only-case N``); exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import multiprocessing as mp
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

from .corpus import FORMATS, build_corpus
from .harness import GOOD, OUTCOMES, Outcome, replay, worker


class _Pool:
    """Workers that each run one case at a time; dead or stuck ones are replaced."""

    def __init__(self, jobs: int, args: tuple) -> None:
        self.ctx = mp.get_context("spawn")
        self.args = args
        self.slots: list[dict] = [self._start() for _ in range(jobs)]

    def _start(self) -> dict:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker, args=(child, *self.args), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None, "since": 0.0}

    def _replace(self, i: int) -> None:
        slot = self.slots[i]
        slot["proc"].kill()
        slot["proc"].join()
        slot["conn"].close()
        self.slots[i] = self._start()

    def run(self, tasks: list[tuple[str, int]], timeout: float, on_result) -> None:
        pending = collections.deque(tasks)
        while pending or any(s["task"] for s in self.slots):
            for slot in self.slots:
                if slot["task"] is None and pending:
                    slot["task"], slot["since"] = pending.popleft(), time.monotonic()
                    slot["conn"].send(slot["task"])
            busy = [s for s in self.slots if s["task"]]
            ready = wait([s["conn"] for s in busy] + [s["proc"].sentinel for s in busy], timeout=0.5)
            for i, slot in enumerate(self.slots):
                if slot["task"] is None:
                    continue
                fmt, case = slot["task"]
                if slot["conn"] in ready:
                    try:
                        on_result(slot["conn"].recv())
                        slot["task"] = None
                        continue
                    except (EOFError, OSError):
                        pass
                if slot["conn"] in ready or slot["proc"].sentinel in ready:
                    slot["proc"].join(1)
                    code = slot["proc"].exitcode
                    on_result(Outcome(fmt, case, "crash", f"worker died (exit code {code})", "?"))
                    self._replace(i)
                elif time.monotonic() - slot["since"] > timeout:
                    on_result(Outcome(fmt, case, "hang", f"no answer in {timeout:.0f}s", "?"))
                    self._replace(i)

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError):
                slot["conn"].send(None)
            slot["proc"].join(5)
            if slot["proc"].is_alive():
                slot["proc"].kill()


def _table(results: list[Outcome], seed: int, seconds: float) -> str:
    shown = [k for k in OUTCOMES if k in GOOD or any(r.kind == k for r in results)]
    header = ["format", "cases", *shown, "max s"]

    def row(name: str, mine: list[Outcome]) -> list[str]:
        slowest = max((r.seconds for r in mine), default=0.0)
        return [name, str(len(mine)), *(str(sum(r.kind == k for r in mine)) for k in shown), f"{slowest:.2f}"]

    rows = [row(fmt, [r for r in results if r.format == fmt]) for fmt in dict.fromkeys(r.format for r in results)]
    rows.append(row("total", results))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    top = "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(header, widths, strict=True)))
    return "\n".join([f"seed {seed}, {len(results)} cases in {seconds:.0f}s", top, "-" * len(top), *lines])


def _causes(results: list[Outcome]) -> str:
    """Which library exceptions the refusals wrapped, per format (our own checks refuse the rest)."""
    lines = []
    for fmt in dict.fromkeys(r.format for r in results):
        counts = collections.Counter(
            r.cause or "(own check)" for r in results if r.format == fmt and r.kind == "refused"
        )
        lines.append(f"  {fmt}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return "refusals by cause:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000, help="mutated checkpoints in all (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=FORMATS, metavar="FORMAT")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    parser.add_argument("--keep", type=Path, help="copy the cases that broke an invariant here")
    parser.add_argument("--only-case", type=int, help="run just this case number (to reproduce one)")
    parser.add_argument("--causes", action="store_true", help="also count the exceptions refusals wrapped")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pw-fuzz-") as tmp:
        seeds = build_corpus(Path(tmp) / "corpus", args.formats)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        workdir = Path(tmp) / "cases"
        workdir.mkdir()
        if args.only_case is not None:
            cases = [(fmt, args.only_case) for fmt in args.formats]
        else:
            cases = [(args.formats[i % len(args.formats)], i) for i in range(args.cases)]
        results: list[Outcome] = []

        def record(outcome: Outcome) -> None:
            if outcome.mutation == "?":  # the worker hung or died: rebuild the case here to say what it was
                mutation = replay(seeds, outcome.format, args.seed, outcome.case, workdir, args.keep)
                outcome = dataclasses.replace(outcome, mutation=mutation)
            results.append(outcome)
            if outcome.kind not in GOOD:
                print(f"[{outcome.kind}] {outcome.format} case {outcome.case}: {outcome.detail}", flush=True)
                print(f"    mutation: {outcome.mutation}", flush=True)
            if len(results) % 500 == 0:
                print(f"... {len(results)}/{len(cases)} cases, {time.perf_counter() - start:.0f}s", flush=True)

        pool = _Pool(args.jobs, (seeds, args.seed, str(workdir), str(args.keep) if args.keep else None))
        try:
            pool.run(cases, args.timeout, record)
        finally:
            pool.close()
    results.sort(key=lambda r: (args.formats.index(r.format), r.case))
    print(_table(results, args.seed, time.perf_counter() - start))
    if args.causes:
        print(_causes(results))
    bad = [r for r in results if r.kind not in GOOD]
    if bad:
        print(f"{len(bad)} cases broke an invariant; reproduce one with --seed {args.seed} --formats F --only-case N")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
