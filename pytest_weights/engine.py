"""The one-pass engine: read each requested tensor once, compute all its statistics.

``reduce_tensor`` is the pure core (a tensor in, statistic values out), usable by any
executor; ``compute_pass`` streams a checkpoint through it in storage order, prefetching
the next tensor while the current one is reduced, so memory stays bounded by about two
tensors plus fixed per-thread buffers.

Within a tensor, statistics run in *stages* (a stage needs only earlier stages' values),
one sweep each. Elementwise (``layout = "flat"``) statistics sweep 1-D slices of the tensor
in its storage dtype; on the CPU, :class:`Workers` threads (torch single-threaded in each)
reduce the slices and the main thread merges them in slice order, so results do not depend
on the number of threads. Structural (``"rows"``) statistics sweep 2-D float blocks of rows.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from .cache import StatCache
from .errors import CheckpointError, blame_tensor
from .readers.base import Checkpoint, TensorInfo
from .stats import kernels
from .stats.base import Deps, Statistic, closure, stages

#: Elements per rows block, and per device chunk off the CPU: bounds temporaries.
CHUNK_ELEMENTS = 1 << 24
#: Elements per flat slice on the CPU: a unit of parallel work whose buffers stay in cache.
SLICE_ELEMENTS = 1 << 22

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
        for key in [k for k in self._values if k[0] == checkpoint_id]:
            del self._values[key]


_ALL_THREADS = threading.Lock()


def _one_thread() -> None:
    """Pool initializer: torch ops in this thread run single-threaded."""
    torch.set_num_threads(1)


class Workers:
    """CPU threads reducing flat slices in parallel; ``n`` ≤ 1 reduces inline.

    A context manager: inside it, slices are reduced with torch ops single-threaded (the
    parallelism is across slices), so a slice's result is the same for any ``n``; the
    caller's thread setting is restored on exit.
    """

    def __init__(self, n: int | None = None) -> None:
        self.n = max(1, torch.get_num_threads() if n is None else n)
        self._pool: ThreadPoolExecutor | None = None
        self._saved = torch.get_num_threads()

    def __enter__(self) -> Workers:
        self._saved = torch.get_num_threads()
        # the caller's own ops (merging, finalizing) run single-threaded too: an OpenMP team
        # of its own would spin on the cores the workers need
        torch.set_num_threads(1)
        if self.n > 1:
            self._pool = ThreadPoolExecutor(self.n, "weights-worker", initializer=_one_thread)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        torch.set_num_threads(self._saved)  # the workers' setting is process-wide for new threads

    @contextlib.contextmanager
    def all_threads(self) -> Iterator[None]:
        """Inside: the caller's torch ops use all its threads (for rows statistics, e.g. an
        SVD); one caller at a time, so that tensors in flight do not oversubscribe the cores."""
        with _ALL_THREADS:
            saved = torch.get_num_threads()
            torch.set_num_threads(self._saved)
            try:
                yield
            finally:
                torch.set_num_threads(saved)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn`` over ``items``, results in order, at most 2·n items in flight."""
        if self._pool is None:
            yield from map(fn, items)
            return
        window: deque = deque()
        for item in items:
            window.append(self._pool.submit(fn, item))
            if len(window) >= 2 * self.n:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def slices(tensor: torch.Tensor, device: torch.device, step: int) -> Iterator[torch.Tensor]:
    """The flattened tensor as 1-D slices of ``step`` elements on ``device`` (storage dtype)."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        yield flat.to(device)
        return
    for i in range(0, flat.numel(), step):
        yield flat[i : i + step].to(device, non_blocking=True)


def blocks(tensor: torch.Tensor, device: torch.device, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[torch.Tensor]:
    """The tensor as 2-D float blocks of whole rows on ``device`` (float64 stays float64)."""
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    rows = tensor.shape[0] if tensor.dim() >= 2 else 1
    flat = tensor.reshape(rows, -1)
    cols = max(flat.shape[1], 1)
    step = max(1, chunk_elements // cols)
    for r in range(0, rows, step):
        yield flat[r : r + step].to(device=device, dtype=dtype, non_blocking=True)


def reduce_tensor(
    tensor: torch.Tensor,
    stats: Iterable[Statistic],
    device: torch.device | str = "cpu",
    chunk_elements: int = CHUNK_ELEMENTS,
    known: Mapping[Statistic, Any] | None = None,
    workers: Workers | None = None,
    slice_elements: int = SLICE_ELEMENTS,
) -> dict[Statistic, Any]:
    """Compute ``stats`` (and what they require) on one tensor; returns every value computed.

    ``known`` holds already-computed values (e.g. from a cache) that are not recomputed.
    ``workers`` reduces flat slices in parallel (default: inline).
    """
    device = torch.device(device)
    values: dict[Statistic, Any] = dict(known or {})
    todo = closure(list(stats), known=values)
    if not todo:
        return values
    if device.type != "cpu" and tensor.numel() <= chunk_elements:
        tensor = tensor.to(device, non_blocking=True)  # moved once, swept by every stage
    own = workers is None
    workers = workers or Workers(1)
    step = slice_elements if device.type == "cpu" else chunk_elements
    row_blocks: list[torch.Tensor] | None = None
    for stage in stages(todo):
        swept = [s for s in stage if s.needs_sweep(values)]
        flat = [s for s in swept if s.layout == "flat"]
        rows = [s for s in swept if s.layout != "flat"]
        states: dict[Statistic, Any] = {}
        if flat:
            with workers if own else contextlib.nullcontext():
                parts = workers.map(partial(_reduce_block, flat, values), slices(tensor, device, step))
                states.update(_merge_in_order(flat, parts))
        with workers.all_threads() if rows and not own else contextlib.nullcontext():
            if rows:
                if row_blocks is None and tensor.numel() <= chunk_elements:
                    row_blocks = list(blocks(tensor, device, chunk_elements))  # converted once for all stages
                source = row_blocks if row_blocks is not None else blocks(tensor, device, chunk_elements)
                states.update(_merge_in_order(rows, (_reduce_block(rows, values, b) for b in source)))
            for s in stage:
                values[s] = s.finalize(states.get(s), values)
    return values


def _reduce_block(stats: Sequence[Statistic], deps: Deps, block: torch.Tensor) -> list[Any]:
    try:
        if len(stats) > 1:
            kernels.fuse(block, frozenset().union(*(s.kernels for s in stats)))
        return [s.reduce(block, deps) for s in stats]
    finally:
        kernels.forget()


def _merge_in_order(stats: Sequence[Statistic], parts: Iterable[list[Any]]) -> dict[Statistic, Any]:
    """Each statistic's states over the blocks, merged in block order (deterministic)."""
    merged: list[Any] | None = None
    for part in parts:
        merged = part if merged is None else [s.merge(a, b) for s, a, b in zip(stats, merged, part, strict=True)]
    return dict(zip(stats, merged, strict=True)) if merged is not None else {}


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
) -> PassProgress:
    """Read every requested tensor of ``checkpoint`` once and store its statistics.

    Tensors whose requested statistics are all in ``store`` (or in ``cache``) are not read.
    ``workers``: CPU threads for flat statistics (default: torch's intra-op thread count).
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
    state = PassProgress(checkpoint.label, 0, len(todo), 0, sum(i.nbytes for i, _ in todo), 0.0)
    start = time.perf_counter()
    pool_size = workers if torch.device(device).type == "cpu" else 1
    budget = 2 * max((i.nbytes for i, _ in todo), default=0)  # bytes of large tensors in flight
    large = [k for k, (info, _) in enumerate(todo) if info.nbytes >= INLINE_BYTES]
    next_large = dict(itertools.pairwise(large))

    def record(info: TensorInfo, wanted: list[Statistic], values: Mapping[Statistic, Any]) -> int:
        """Store a tensor's requested values (intermediates such as histograms are dropped)."""
        store.put(cid, info.name, {s: values[s] for s in wanted})
        state.tensors_done += 1
        state.bytes_done += info.nbytes
        state.seconds = time.perf_counter() - start
        if progress:
            progress(state)
        return info.nbytes

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
    if todo and checkpoint.changed():
        raise CheckpointError(checkpoint.path, "changed while it was being read: its statistics are discarded")
    if cache is not None and todo:
        cache.save(cid, {i.name: {s: store.get(cid, i.name)[s] for s in w} for i, w in todo})
    state.seconds = time.perf_counter() - start
    state.finished = True
    if progress:
        progress(state)
    return state
