"""The statistics pass on a Dask cluster: workers read the tensors, the client merges nothing big.

Tensors of at most :data:`SLICES_PER_TASK` flat slices go out whole, consecutive ones batched
into tasks (:func:`.tasks.reduce_batch`: the worker reads each and runs
:func:`~pytest_weights.reduce.reduce_tensor`). A larger tensor is
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
from ..reduce import ROWS_THREADS, SLICE_ELEMENTS, fixed_threads
from ..stats.base import Statistic, closure, stages
from .base import Record, Todo, source_of
from .tasks import Source, TaskFailure, fold, reduce_batch, reduce_rows, reduce_slices

#: Flat slices (of :data:`~pytest_weights.reduce.SLICE_ELEMENTS`) per task: 16 × 4 Mi elements
#: (128 MiB of bf16) keeps the per-task overhead (a few ms) well under 1 % of the work.
SLICES_PER_TASK = 16
#: Tensors that are not split go out in batches (consecutive in storage order) of at most
#: :data:`BATCH_BYTES` or :data:`BATCH_TENSORS` tensors, aiming at ``BATCHES_PER_WORKER`` batches
#: per worker but not below :data:`MIN_BATCH_BYTES`, so that the per-task overhead (≈ 5 ms)
#: stays small next to the work (≈ 60 ms per 32 MiB) even in a sweep of many checkpoints.
BATCH_BYTES = 64 * 2**20
MIN_BATCH_BYTES = 32 * 2**20
BATCH_TENSORS = 64
BATCHES_PER_WORKER = 4
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
        ctx = _Context(self, src, str(device), chunk_elements)
        step = SLICE_ELEMENTS if device.type == "cpu" else chunk_elements
        pending = as_completed()
        owner: dict[str, _Job] = {}
        try:
            for job in self._jobs(ctx, todo, known, step, "://" not in location):  # a remote read is per tensor
                self._track(job, job.start(), pending, owner)
                for info, wanted, values in job.outcome() if job.finished else ():  # nothing to sweep
                    record(info, wanted, values)
            for future in pending:
                job = owner.pop(future.key)
                if future.status != "finished":
                    raise _failure(future, job.name, str(checkpoint.path))
                self._track(job, job.done(future), pending, owner)
                if job.finished:
                    for info, wanted, values in job.outcome():
                        record(info, wanted, values)
        except BaseException:
            self.client.cancel([*pending.futures])
            raise

    def _jobs(self, ctx: _Context, todo: Todo, known: Callable, step: int, splittable: bool) -> list[_Job]:
        """Large tensors split by slices; the others batched in storage order (see :data:`BATCH_BYTES`)."""
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        split = {i.name for i, _ in todo if splittable and math.ceil(i.numel / step) > self.slices_per_task}
        whole_bytes = sum(i.nbytes for i, _ in todo if i.name not in split)
        limit = max(MIN_BATCH_BYTES, min(BATCH_BYTES, whole_bytes // (BATCHES_PER_WORKER * workers)))
        jobs: list[_Job] = []
        batch: list[tuple[TensorInfo, list[Statistic], Mapping[Statistic, Any]]] = []
        size = 0
        for info, wanted in todo:
            if info.name in split:
                jobs.append(_Split(ctx, info, wanted, known(info.name), step))
                continue
            batch.append((info, wanted, known(info.name)))
            size += info.nbytes
            if size >= limit or len(batch) >= BATCH_TENSORS:
                jobs.append(_Batch(ctx, batch))
                batch, size = [], 0
        if batch:
            jobs.append(_Batch(ctx, batch))
        return jobs

    def _track(self, job: _Job, futures: list[Future], pending: as_completed, owner: dict[str, _Job]) -> None:
        for f in futures:
            owner[f.key] = job
            pending.add(f)

    def describe(self) -> str:
        try:
            n = len(self.client.scheduler_info().get("workers", {}))
        except Exception:  # the scheduler is gone
            n = 0
        return f"Dask {self.scheduler} ({n} worker{'s' if n != 1 else ''})"

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

    def __init__(self, executor: DaskExecutor, src: Source, device: str, chunk_elements: int) -> None:
        self.executor = executor
        self.client = executor.client
        self.src = src
        self.device = device
        self.chunk_elements = chunk_elements

    def submit(self, fn: Callable, *args: Any, priority: int = 0) -> Future:
        self.executor.tasks += 1
        return self.client.submit(fn, *args, pure=False, priority=priority)


class _Job:
    """Work on tensors: futures to wait for, then their values."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.finished = False
        #: The tensor a failure is blamed on when its task cannot say.
        self.name = ""

    def start(self) -> list[Future]:
        raise NotImplementedError

    def done(self, future: Future) -> list[Future]:
        """``future`` (one of this job's) finished: the next futures to wait for (none when finished)."""
        raise NotImplementedError

    def outcome(self) -> list[tuple[TensorInfo, list[Statistic], Mapping[Statistic, Any]]]:
        """(tensor, wanted statistics, values) of each tensor, once finished."""
        raise NotImplementedError


class _Batch(_Job):
    """Consecutive tensors reduced whole, one after another, by one task."""

    def __init__(self, ctx: _Context, items: list[tuple[TensorInfo, list[Statistic], Mapping[Statistic, Any]]]):
        super().__init__(ctx)
        self.items = items
        self.name = items[0][0].name if len(items) == 1 else f"{items[0][0].name} … {items[-1][0].name}"
        self.values: list[dict[Statistic, Any]] = []

    def start(self) -> list[Future]:
        c = self.ctx
        work = [(info.name, wanted, dict(known)) for info, wanted, known in self.items]
        return [c.submit(reduce_batch, c.src, work, c.device, c.chunk_elements)]

    def done(self, future: Future) -> list[Future]:
        self.values = future.result()
        self.finished = True
        return []

    def outcome(self) -> list[tuple[TensorInfo, list[Statistic], Mapping[Statistic, Any]]]:
        return [(info, wanted, v) for (info, wanted, _), v in zip(self.items, self.values, strict=True)]


class _Split(_Job):
    """A large tensor reduced stage by stage: flat slices in tasks folded in order, rows statistics in one task."""

    def __init__(
        self, ctx: _Context, info: TensorInfo, wanted: list[Statistic], known: Mapping[Statistic, Any], step: int
    ):
        super().__init__(ctx)
        self.info, self.wanted, self.name = info, wanted, info.name
        self.values: dict[Statistic, Any] = dict(known)
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
            rows = c.submit(reduce_rows, c.src, name, self.rows, deps, c.device, c.chunk_elements, priority=priority)
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

    def outcome(self) -> list[tuple[TensorInfo, list[Statistic], Mapping[Statistic, Any]]]:
        return [(self.info, self.wanted, self.values)]

    def _finalize(self, states: Mapping[Statistic, Any], rows: Mapping[Statistic, Any]) -> None:
        """The stage's values, in its order: rows statistics from their task, the others finalized here
        (with the local engine's fixed torch thread count)."""
        with fixed_threads(ROWS_THREADS):
            for s in self.stages[self.k]:
                self.values[s] = rows[s] if s in rows else s.finalize(states.get(s), self.values)
