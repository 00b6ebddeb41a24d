"""The ``pytest-weights:`` lines of the terminal summary: what the statistics pass read.

A :class:`PassSummary` is what one process's pass did: plain data, so that pytest-xdist
workers send theirs to the controller (``config.workeroutput``), which merges them and
prints one block. Standard library only: the plugin imports this in every pytest run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

#: Checkpoints of a run listed one by one up to this many steps, then abbreviated.
MAX_LISTED_STEPS = 8


@dataclass(frozen=True)
class PassRecord:
    """One checkpoint's pass: tensors and bytes read, seconds taken (``worker``: xdist id, or '')."""

    checkpoint: str
    tensors: int
    bytes: int
    seconds: float
    worker: str = ""

    def line(self) -> str:
        return f"{self.checkpoint}: read {self.tensors:,} tensors ({_mb(self.bytes)}) in {_rate(self)}"


@dataclass
class PassSummary:
    """What the statistics pass of one process did, and what it noticed (one line each)."""

    devices: list[str] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    cache_hits: int = 0
    notes: list[str] = field(default_factory=list)
    #: (checkpoint, what was left out of float statistics): one line for all checkpoints that share it.
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A plain dict (sent from an xdist worker to the controller)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PassSummary:
        passes = [PassRecord(**p) for p in data.get("passes", ())]
        left_out = [(str(c), str(t)) for c, t in data.get("left_out", ())]
        devices, notes = list(data.get("devices", ())), list(data.get("notes", ()))
        return cls(devices, passes, int(data.get("cache_hits", 0)), notes, left_out)

    @classmethod
    def merge(cls, parts: Iterable[PassSummary]) -> PassSummary:
        """One summary of several processes' (notes and devices without repeats)."""
        out = cls()
        for part in parts:
            out.devices += [d for d in part.devices if d not in out.devices]
            out.passes += part.passes
            out.cache_hits += part.cache_hits
            out.notes += [n for n in part.notes if n not in out.notes]
            out.left_out += [x for x in part.left_out if x not in out.left_out]
        return out

    def note_lines(self) -> list[str]:
        """Problems, then what was left out of float statistics (once for checkpoints that share it)."""
        by_text: dict[str, list[str]] = {}
        for checkpoint, text in self.left_out:
            by_text.setdefault(text, []).append(checkpoint)
        lines = list(self.notes)
        for text, names in by_text.items():
            who = names[0] if len(names) == 1 else f"{len(names)} checkpoints ({names[0]} … {names[-1]})"
            lines.append(f"{who}: {text}")
        return lines

    def lines(self, verbose: bool = False) -> list[str]:
        """Cache hits, then what was read: one line (per checkpoint too with ``verbose``)."""
        lines = []
        if self.cache_hits:
            lines.append(f"{self.cache_hits} statistic value(s) taken from the cache (--weights-no-cache to recompute)")
        lines += self.read_lines(verbose)
        return lines

    def read_lines(self, verbose: bool = False) -> list[str]:
        passes = [p for p in self.passes if p.tensors]
        if not passes:
            return []
        device = ", ".join(self.devices) or "cpu"
        workers = sorted({p.worker for p in passes if p.worker})
        if len(passes) == 1 and not workers:
            return [f"{passes[0].line()} on {device}"]
        total = PassRecord(
            "", sum(p.tensors for p in passes), sum(p.bytes for p in passes), sum(p.seconds for p in passes)
        )
        checkpoints = len({p.checkpoint for p in passes})
        what = plural(checkpoints, "checkpoint")
        if workers:
            what += f" on {plural(len(workers), 'xdist worker')} ({plural(len(passes), 'pass', 'passes')}, times added)"
        lines = [f"read {what}: {total.tensors:,} tensors ({_mb(total.bytes)}) in {_rate(total)} on {device}"]
        if verbose:
            lines += [f"  {f'[{p.worker}] ' if p.worker else ''}{p.line()}" for p in passes]
        return lines


def run_line(name: str, steps: Sequence[int], latest: bool) -> str:
    """The summary line of one run directory (``steps`` ascending)."""
    if latest:
        return (
            f"{name}: checked step {steps[-1]} (latest); trajectory over {plural(len(steps), 'checkpoint')}, "
            f"steps {steps[0]}…{steps[-1]}"
        )
    return f"{name}: {len(steps)} checkpoint(s), steps {list_steps(steps)}"


def list_steps(steps: Sequence[int]) -> str:
    """``0, 10, 20``; beyond :data:`MAX_LISTED_STEPS` steps, ``0, 10, 20, …, 300 (every 10)`` or the like."""
    if len(steps) <= MAX_LISTED_STEPS:
        return ", ".join(map(str, steps))
    gaps = {b - a for a, b in itertools.pairwise(steps)}
    every = f" (every {gaps.pop()})" if len(gaps) == 1 else ""
    return f"{steps[0]}, {steps[1]}, {steps[2]}, …, {steps[-1]}{every}"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def _rate(p: PassRecord) -> str:
    rate = p.bytes / p.seconds / 1e6 if p.seconds > 0 else 0.0
    return f"{p.seconds:.2f} s ({rate:,.0f} MB/s)"
