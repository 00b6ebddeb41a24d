"""The functions Dask workers run: open a checkpoint where the client did, read, reduce.

Every task opens the checkpoint from its location (the path or URL the client opened) and
checks that it is the same checkpoint (same identity) the client planned with; opened
checkpoints are kept per worker process, so a worker opens each one once. The reductions
are those of :func:`~pytest_weights.reduce.reduce_tensor`, cut at the same places
(:func:`~pytest_weights.reduce.slices`, :func:`~pytest_weights.reduce.blocks`) and merged
in the same order, with the same torch thread counts, so every value is bit for bit the
local engine's. An error becomes a :class:`TaskFailure` (plain text: it pickles).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import FATAL, CheckpointError, WeightsError, blame_tensor, describe
from ..readers import open_checkpoint
from ..readers.base import Checkpoint
from ..reduce import ROWS_THREADS, _merge_in_order, _reduce_block, blocks, fixed_threads, reduce_tensor, slices
from ..stats.base import Statistic

#: Checkpoints a worker process keeps open (least recently used closed first).
MAX_OPEN = 8

_open: OrderedDict[Source, Checkpoint] = OrderedDict()
_open_lock = threading.Lock()


@dataclass(frozen=True)
class Source:
    """Where a worker opens a checkpoint (a URL may hold credentials: never printed), and the
    identity the client planned its pass with."""

    location: str
    identity: str


class TaskFailure(Exception):
    """A task's error as text: the file it names (None: the checkpoint) and the one-line message."""

    def __init__(self, path: str | None, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message


def checkpoint_at(src: Source) -> Checkpoint:
    """The checkpoint at ``src`` opened in this process (once), checked to be the one the client planned with."""
    with _open_lock:
        ckpt = _open.get(src)
        if ckpt is not None:
            _open.move_to_end(src)
            return ckpt
    try:
        ckpt = open_checkpoint(src.location)
    except CheckpointError as e:
        if "no such file" in e.message:  # the client saw it: this worker does not
            hint = "on this Dask worker (workers must see the same path: a shared file system or a URL)"
            raise CheckpointError(e.path, f"{e.message} {hint}") from None
        raise
    if ckpt.identity() != src.identity:
        ckpt.close()
        raise CheckpointError(
            ckpt.path, "changed since it was opened for planning (the dask worker sees other bytes): not read"
        )
    with _open_lock:
        _open[src] = ckpt
        while len(_open) > MAX_OPEN:
            _open.popitem(last=False)[1].close()
    return ckpt


@contextlib.contextmanager
def _failure(name: str) -> Iterator[None]:
    """Any error inside becomes a :class:`TaskFailure` carrying its one-line description."""
    try:
        yield
    except FATAL:
        raise
    except TaskFailure:
        raise
    except CheckpointError as e:
        raise TaskFailure(e.path, e.message) from None
    except WeightsError as e:
        raise TaskFailure(None, describe(e)) from None
    except BaseException as e:
        blame_tensor(e, name)
        raise TaskFailure(None, describe(e)) from None


def reduce_whole(
    src: Source,
    name: str,
    stats: Sequence[Statistic],
    known: Mapping[Statistic, Any],
    device: str,
    chunk_elements: int,
) -> dict[Statistic, Any]:
    """Every stage of one tensor (:func:`reduce_tensor`, which fixes its own torch threads);
    returns the values of ``stats``."""
    with _failure(name):
        tensor = checkpoint_at(src).read(name)
        values = reduce_tensor(tensor, stats, device, chunk_elements, known)
        return {s: values[s] for s in stats}


def reduce_batch(
    src: Source, work: Sequence[tuple[str, Sequence[Statistic], Mapping[Statistic, Any]]], device: str, chunk: int
) -> list[dict[Statistic, Any]]:
    """:func:`reduce_whole` of each (tensor, statistics, known values) of ``work``, in order."""
    return [reduce_whole(src, name, stats, known, device, chunk) for name, stats, known in work]


def reduce_slices(
    src: Source,
    name: str,
    stats: Sequence[Statistic],
    deps: Mapping[Statistic, Any],
    lo: int,
    hi: int,
    step: int,
    device: str,
) -> list[list[Any]]:
    """The states of flat ``stats`` on slices ``lo`` … ``hi − 1`` (``step`` elements each), one list per slice."""
    with _failure(name):
        tensor = checkpoint_at(src).read(name)
        with fixed_threads(1):
            part = itertools.islice(slices(tensor, torch.device(device), step), lo, hi)
            return [_reduce_block(stats, deps, block) for block in part]


def fold(name: str, stats: Sequence[Statistic], merged: list[Any] | None, parts: list[list[Any]]) -> list[Any] | None:
    """``merged`` with each slice's states merged into it, in slice order (the local engine's left fold)."""
    with _failure(name), fixed_threads(1):
        for part in parts:
            merged = part if merged is None else [s.merge(a, b) for s, a, b in zip(stats, merged, part, strict=True)]
        return merged


def reduce_rows(
    src: Source,
    name: str,
    stats: Sequence[Statistic],
    deps: Mapping[Statistic, Any],
    device: str,
    chunk_elements: int,
) -> dict[Statistic, Any]:
    """The finalized values of rows ``stats`` of one stage (blocks of whole rows, merged in order,
    with the local engine's fixed torch thread count)."""
    with _failure(name):
        tensor = checkpoint_at(src).read(name)
        with fixed_threads(ROWS_THREADS):
            states = _merge_in_order(
                stats, (_reduce_block(stats, deps, b) for b in blocks(tensor, torch.device(device), chunk_elements))
            )
            return {s: s.finalize(states.get(s), deps) for s in stats}


def opened() -> list[str]:
    """The locations of the checkpoints this worker process holds open (for tests and diagnostics)."""
    with _open_lock:
        return [src.location for src in _open]
