"""The one-pass engine: stream a checkpoint, read each requested tensor once.

``compute_pass`` streams a checkpoint through :func:`~pytest_weights.reduce.reduce_tensor`
in storage order, prefetching the next tensor while the current one is reduced, so memory
stays bounded by about two tensors plus fixed per-thread buffers.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from .cache import StatCache
from .errors import CheckpointError, blame_tensor
from .executors import Executor
from .readers.base import Checkpoint, TensorInfo
from .reduce import CHUNK_ELEMENTS, SLICE_ELEMENTS, Workers, _one_thread, reduce_tensor
from .stats import kernels
from .stats.base import Statistic

__all__ = ["CHUNK_ELEMENTS", "SLICE_ELEMENTS", "PassProgress", "StatStore", "Workers", "compute_pass", "reduce_tensor"]

Progress = Callable[["PassProgress"], None]


@dataclass
class PassProgress:
    checkpoint: str
    tensors_done: int
    tensors_total: int
    bytes_done: int
    bytes_total: int
    seconds: float
    finished: bool = False


class StatStore:
    """Statistic values keyed by (checkpoint identity, tensor name) → {statistic: value}."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], dict[Statistic, Any]] = {}

    def get(self, checkpoint_id: str, tensor: str) -> dict[Statistic, Any]:
        return self._values.setdefault((checkpoint_id, tensor), {})

    def missing(self, checkpoint_id: str, tensor: str, stats: Iterable[Statistic]) -> list[Statistic]:
        have = self._values.get((checkpoint_id, tensor), {})
        return [s for s in stats if s not in have]

    def put(self, checkpoint_id: str, tensor: str, values: Mapping[Statistic, Any]) -> None:
        self.get(checkpoint_id, tensor).update(values)

    def items(self) -> Iterator[tuple[tuple[str, str], dict[Statistic, Any]]]:
        return iter(self._values.items())

    def discard(self, checkpoint_id: str) -> None:
        """Forget every value of a checkpoint (e.g. the partial statistics of a failed pass)."""
        for key in [k for k in list(self._values) if k[0] == checkpoint_id]:  # others may be added meanwhile
            del self._values[key]


#: Most tensors :func:`compute_pass` reduces at once (while one finalizes, others' slices keep
#: the workers busy); together they hold at most twice the largest tensor's bytes.
MAX_IN_FLIGHT = 8
#: Tensors smaller than this are read and reduced in the calling thread, one after another.
INLINE_BYTES = 1 << 20


@contextlib.contextmanager
def _blame(name: str) -> Iterator[None]:
    """An error raised inside is marked as coming from tensor ``name`` (named in the failure line)."""
    try:
        yield
    except BaseException as e:
        blame_tensor(e, name)
        raise


def _reduce_read(read: Future, stats: list[Statistic], device, chunk_elements: int, known, workers: Workers):
    tensor = read.result()
    return reduce_tensor(tensor, stats, device, chunk_elements, known, workers)


def compute_pass(
    checkpoint: Checkpoint,
    requests: Mapping[str, Iterable[Statistic]],
    store: StatStore,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    cache: StatCache | None = None,
    workers: int | None = None,
    executor: Executor | Callable[[], Executor | None] | None = None,
) -> PassProgress:
    """Read every requested tensor of ``checkpoint`` once and store its statistics.

    Tensors whose requested statistics are all in ``store`` (or in ``cache``) are not read.
    ``cache``: the one cache-through of the package (the plugin, the CLI and ``init`` all pass
    theirs here): cached values are loaded first (a tensor with only part of a dependency chain
    cached is completed from it), what the pass computes is saved after it (a directory that
    cannot be written keeps nothing).
    ``workers``: CPU threads for flat statistics (default: torch's intra-op thread count).
    ``executor``: where tensors are read and reduced (e.g. a Dask cluster, :mod:`.executors`;
    or a function returning it, called only when a tensor is to be read) when it accepts the
    checkpoint; by default (and for in-memory checkpoints) in this process.
    An error reading or reducing a tensor propagates, marked with the tensor's name
    (:func:`~pytest_weights.errors.blame_tensor`); nothing is cached then.
    """
    cid = checkpoint.identity()
    wanted_by = {name: list(stats) for name, stats in requests.items()}
    if cache is not None:
        missing = {n: store.missing(cid, n, w) for n, w in wanted_by.items()}
        for name, values in cache.load(cid, {n: m for n, m in missing.items() if m}).items():
            store.put(cid, name, values)
    todo = []
    for info in checkpoint.tensors():  # storage order
        wanted = wanted_by.get(info.name, [])
        if wanted and store.missing(cid, info.name, wanted):
            todo.append((info, wanted))
    kernels.expect(sum(i.numel for i, _ in todo))  # a long pass: compiled kernels from its first tile
    state = PassProgress(checkpoint.label, 0, len(todo), 0, sum(i.nbytes for i, _ in todo), 0.0)
    start = time.perf_counter()

    def record(info: TensorInfo, wanted: list[Statistic], values: Mapping[Statistic, Any]) -> int:
        """Store a tensor's requested values (intermediates such as histograms are dropped)."""
        store.put(cid, info.name, {s: values[s] for s in wanted})
        state.tensors_done += 1
        state.bytes_done += info.nbytes
        state.seconds = time.perf_counter() - start
        if progress:
            progress(state)
        return info.nbytes

    if executor is not None and todo and not hasattr(executor, "run"):
        executor = executor()  # started only when something is to be read
    if executor is not None and todo and executor.accepts(checkpoint):
        known = lambda name: dict(store.get(cid, name))  # noqa: E731
        executor.run(checkpoint, todo, known, torch.device(device), chunk_elements, record)
    else:
        _stream(checkpoint, todo, store, cid, torch.device(device), chunk_elements, workers, record)
    if todo and checkpoint.changed():
        raise CheckpointError(checkpoint.path, "changed while it was being read: its statistics are discarded")
    if cache is not None and todo:
        with contextlib.suppress(OSError):  # a cache directory that cannot be written keeps nothing
            cache.save(cid, {i.name: {s: store.get(cid, i.name)[s] for s in w} for i, w in todo})
    state.seconds = time.perf_counter() - start
    state.finished = True
    if progress:
        progress(state)
    return state


def _stream(
    checkpoint: Checkpoint,
    todo: list[tuple[TensorInfo, list[Statistic]]],
    store: StatStore,
    cid: str,
    device: torch.device,
    chunk_elements: int,
    workers: int | None,
    record: Callable[[TensorInfo, list[Statistic], Mapping[Statistic, Any]], int],
) -> None:
    """The local pass: tensors read in storage order (the next large one prefetched), reduced here."""
    pool_size = workers if device.type == "cpu" else 1
    budget = 2 * max((i.nbytes for i, _ in todo), default=0)  # bytes of large tensors in flight
    large = [k for k, (info, _) in enumerate(todo) if info.nbytes >= INLINE_BYTES]
    next_large = dict(itertools.pairwise(large))
    with (
        Workers(pool_size) as threads,
        ThreadPoolExecutor(1, "weights-prefetch") as reader,
        ThreadPoolExecutor(MAX_IN_FLIGHT, "weights-tensor", initializer=_one_thread) as tensors,
    ):
        ahead = {k: reader.submit(checkpoint.read, todo[k][0].name) for k in large[:1]}
        running: deque = deque()
        in_flight = 0
        for k, (info, wanted) in enumerate(todo):
            known = dict(store.get(cid, info.name))
            if info.nbytes < INLINE_BYTES:  # small: a hand-off to another thread costs more than it
                with _blame(info.name):
                    tensor = checkpoint.read(info.name)
                    record(info, wanted, reduce_tensor(tensor, wanted, device, chunk_elements, known))
                continue
            while running and (len(running) >= MAX_IN_FLIGHT or in_flight + info.nbytes > budget):
                done, done_wanted, future = running.popleft()
                with _blame(done.name):
                    in_flight -= record(done, done_wanted, future.result())
            read = ahead.pop(k)
            if k in next_large:  # map the next large tensor while this one is reduced
                ahead[next_large[k]] = reader.submit(checkpoint.read, todo[next_large[k]][0].name)
            job = partial(_reduce_read, read, wanted, device, chunk_elements, known, threads)
            running.append((info, wanted, tensors.submit(job)))
            in_flight += info.nbytes
        for done, done_wanted, future in running:
            with _blame(done.name):
                record(done, done_wanted, future.result())
