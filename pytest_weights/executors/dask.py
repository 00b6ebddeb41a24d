"""The statistics pass on a Dask cluster: workers read the tensors, the client merges nothing big.

A tensor of at most :data:`SLICES_PER_TASK` flat slices is one task (:func:`.tasks.reduce_whole`:
the worker reads it and runs :func:`~pytest_weights.reduce.reduce_tensor`). A larger one is
reduced stage by stage, as the local engine does: each stage's flat statistics are split into
tasks of ``SLICES_PER_TASK`` consecutive slices, each returning one state per slice, folded
left in slice order by a chain of small tasks (worker to worker, so the fold is exactly the
local engine's); its rows statistics are one task (reduced and finalized on a worker); the
client finalizes the flat statistics and submits the next stage with the values so far
(e.g. the KS sweep after the moments). So no tensor data goes through the client and every
value is bit for bit the local engine's, whatever the number of workers.

``local:N`` starts a ``LocalCluster`` of N worker processes (one thread each), closed with the executor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from distributed import Client, Future, LocalCluster, as_completed

from ..errors import FATAL, CheckpointError, WeightsError, blame_tensor, describe
from ..readers.base import Checkpoint, TensorInfo
from ..reduce import SLICE_ELEMENTS
from ..stats.base import Statistic, closure, stages
from . import Record, Todo, source_of
from .tasks import Source, TaskFailure, fold, reduce_rows, reduce_slices, reduce_whole

#: Flat slices (of :data:`~pytest_weights.reduce.SLICE_ELEMENTS`) per task: 16 × 4 Mi elements
#: (128 MiB of bf16) keeps the per-task overhead (a few ms) well under 1 % of the work.
SLICES_PER_TASK = 16
#: Seconds to wait for a scheduler to answer.
CONNECT_TIMEOUT = 20


def _connect(scheduler: str) -> tuple[Client, LocalCluster | None]:
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.removeprefix("local:"))
        except ValueError:
            n = 0
        if n < 1:
            raise WeightsError(f"scheduler {scheduler!r}: expected local:N with N ≥ 1 worker processes")
        try:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port, never a clash with another cluster's 8787
                silence_logs=logging.CRITICAL,  # a task's failure is reported once, by the item
            )
        except Exception as e:  # e.g. a script without `if __name__ == "__main__":` (workers are spawned)
            raise WeightsError(f"cannot start a Dask LocalCluster of {n} worker processes: {describe(e)}") from None
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT), None
    except (OSError, TimeoutError, ValueError) as e:
        raise WeightsError(f"cannot connect to the Dask scheduler at {scheduler!r}: {describe(e)}") from None


class DaskExecutor:
    """Runs passes on the Dask cluster at ``scheduler`` (an address, or ``local:N``)."""

    def __init__(self, scheduler: str, slices_per_task: int | None = None) -> None:
        self.scheduler = scheduler
        self.slices_per_task = slices_per_task or SLICES_PER_TASK
        self.client, self._cluster = _connect(scheduler)
        #: Tasks submitted, over every pass (for benchmarks).
        self.tasks = 0

    def accepts(self, checkpoint: Checkpoint) -> bool:
        return source_of(checkpoint) is not None

    def run(
        self,
        checkpoint: Checkpoint,
        todo: Todo,
        known: Callable[[str], Mapping[Statistic, Any]],
        device: torch.device,
        chunk_elements: int,
        record: Record,
    ) -> None:
        location = source_of(checkpoint)
        if location is None:
            raise WeightsError(f"{checkpoint.label}: lives in this process only; it cannot be read on a Dask worker")
        src = Source(location, checkpoint.identity())
        ctx = _Context(self, src, str(device), chunk_elements, torch.get_num_threads())
        step = SLICE_ELEMENTS if device.type == "cpu" else chunk_elements
        pending = as_completed()
        owner: dict[str, _Job] = {}
        try:
            for info, wanted in todo:
                n_slices = math.ceil(info.numel / step)
                split = n_slices > self.slices_per_task and "://" not in location  # a remote read is per tensor
                job = (
                    _Split(ctx, info, wanted, known(info.name), step)
                    if split
                    else _Whole(ctx, info, wanted, known(info.name))
                )
                self._track(job, job.start(), pending, owner)
                if job.finished:
                    record(info, wanted, job.values)
            for future in pending:
                job = owner.pop(future.key)
                if future.status != "finished":
                    raise _failure(future, job.info.name, str(checkpoint.path))
                self._track(job, job.done(future), pending, owner)
                if job.finished:
                    record(job.info, job.wanted, job.values)
        except BaseException:
            self.client.cancel([*pending.futures])
            raise

    def _track(self, job: _Job, futures: list[Future], pending: as_completed, owner: dict[str, _Job]) -> None:
        for f in futures:
            owner[f.key] = job
            pending.add(f)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


def _failure(future: Future, name: str, where: str) -> BaseException:
    """A failed task's error, as the local engine reports it (one line naming the file and tensor)."""
    try:
        exc = future.exception()
    except FATAL:
        raise
    except BaseException as e:  # cancelled, or the scheduler is gone
        exc = e
    if isinstance(exc, TaskFailure):
        return CheckpointError(exc.path or where, exc.message)
    if isinstance(exc, BaseException):
        blame_tensor(exc, name)
        return CheckpointError(where, f"on a Dask worker: {describe(exc)}")
    return CheckpointError(where, f"on a Dask worker: task {future.status} (tensor {name!r})")


class _Context:
    """What every task of one pass shares."""

    def __init__(self, executor: DaskExecutor, src: Source, device: str, chunk_elements: int, threads: int) -> None:
        self.executor = executor
        self.client = executor.client
        self.src = src
        self.device = device
        self.chunk_elements = chunk_elements
        #: The client's torch threads: the local engine's for rows statistics of large tensors.
        self.threads = threads

    def submit(self, fn: Callable, *args: Any, priority: int = 0) -> Future:
        self.executor.tasks += 1
        return self.client.submit(fn, *args, pure=False, priority=priority)

    def threads_for(self, info: TensorInfo) -> int:
        from ..engine import INLINE_BYTES

        return 1 if info.nbytes < INLINE_BYTES else self.threads  # small tensors: reduced inline, one thread


class _Job:
    """One tensor's work: futures to wait for, then its values."""

    def __init__(self, ctx: _Context, info: TensorInfo, wanted: list[Statistic], known: Mapping[Statistic, Any]):
        self.ctx = ctx
        self.info = info
        self.wanted = wanted
        self.values: dict[Statistic, Any] = dict(known)
        self.finished = False

    def start(self) -> list[Future]:
        raise NotImplementedError

    def done(self, future: Future) -> list[Future]:
        """``future`` (one of this job's) finished: the next futures to wait for (none when finished)."""
        raise NotImplementedError


class _Whole(_Job):
    """A tensor reduced by one task."""

    def start(self) -> list[Future]:
        c = self.ctx
        args = (
            c.src,
            self.info.name,
            self.wanted,
            dict(self.values),
            c.device,
            c.chunk_elements,
            c.threads_for(self.info),
        )
        return [c.submit(reduce_whole, *args)]

    def done(self, future: Future) -> list[Future]:
        self.values.update(future.result())
        self.finished = True
        return []


class _Split(_Job):
    """A large tensor reduced stage by stage: flat slices in tasks folded in order, rows statistics in one task."""

    def __init__(
        self, ctx: _Context, info: TensorInfo, wanted: list[Statistic], known: Mapping[Statistic, Any], step: int
    ):
        super().__init__(ctx, info, wanted, known)
        self.step = step
        self.stages = stages(closure(list(wanted), known=self.values))
        self.k = -1
        self.waiting: dict[str, str] = {}  # future key → "flat" | "rows"
        self.results: dict[str, Any] = {}
        self.keep: list[Future] = []  # this stage's futures, held until it is merged
        self.flat: list[Statistic] = []
        self.rows: list[Statistic] = []

    def start(self) -> list[Future]:
        return self._next_stage()

    def _next_stage(self) -> list[Future]:
        c = self.ctx
        while True:
            self.k += 1
            if self.k >= len(self.stages):
                self.finished = True
                return []
            swept = [s for s in self.stages[self.k] if s.needs_sweep(self.values)]
            self.flat = [s for s in swept if s.layout == "flat"]
            self.rows = [s for s in swept if s.layout != "flat"]
            if swept:
                break
            self._finalize({}, {})  # e.g. a statistic computed from its requirements alone
        deps = c.client.scatter([dict(self.values)], hash=False)[0] if self.values else {}
        self.keep, self.results, self.waiting = [deps] if self.values else [], {}, {}
        name, priority = self.info.name, self.k + 1  # later stages first: tensors finish, memory frees
        if self.flat:
            merged = None
            n = math.ceil(self.info.numel / self.step)
            for lo in range(0, n, self.ctx.executor.slices_per_task):
                hi = min(n, lo + self.ctx.executor.slices_per_task)
                part = c.submit(
                    reduce_slices, c.src, name, self.flat, deps, lo, hi, self.step, c.device, priority=priority
                )
                merged = c.submit(fold, name, self.flat, merged, part, priority=priority)
                self.keep += [part, merged]
            self.waiting[merged.key] = "flat"
        if self.rows:
            rows = c.submit(
                reduce_rows, c.src, name, self.rows, deps, c.device, c.chunk_elements, c.threads, priority=priority
            )
            self.keep.append(rows)
            self.waiting[rows.key] = "rows"
        return [f for f in self.keep if f.key in self.waiting]

    def done(self, future: Future) -> list[Future]:
        self.results[self.waiting.pop(future.key)] = future.result()
        if self.waiting:
            return []
        flat = self.results.get("flat")
        self._finalize(
            dict(zip(self.flat, flat, strict=True)) if flat is not None else {}, self.results.get("rows", {})
        )
        self.keep = []
        return self._next_stage()

    def _finalize(self, states: Mapping[Statistic, Any], rows: Mapping[Statistic, Any]) -> None:
        """The stage's values, in its order: rows statistics from their task, the others finalized here
        (with the local engine's torch threads: all of them when the stage has rows statistics, else one)."""
        saved = torch.get_num_threads()
        torch.set_num_threads(self.ctx.threads if rows else 1)
        try:
            for s in self.stages[self.k]:
                self.values[s] = rows[s] if s in rows else s.finalize(states.get(s), self.values)
        finally:
            torch.set_num_threads(saved)
