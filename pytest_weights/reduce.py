"""Reducing one tensor: all its statistics, stage by stage, one sweep per stage.

``reduce_tensor`` is the pure core (a tensor in, statistic values out), usable by any
executor. Within a tensor, statistics run in *stages* (a stage needs only earlier stages'
values), one sweep each. Elementwise (``layout = "flat"``) statistics sweep 1-D slices of
the tensor in its storage dtype; on the CPU, :class:`Workers` threads (torch
single-threaded in each) reduce the slices and the main thread merges them in slice order,
so results do not depend on the number of threads. Each slice is swept once for all the
kernels its stage's statistics declare (:class:`~.stats.kernels.BlockKernels`, one pass over
cache-sized tiles). Structural (``"rows"``) statistics sweep 2-D float blocks of rows.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import torch

from .stats import kernels
from .stats.base import Deps, Statistic, closure, stages
from .stats.kernels import fixed_threads

#: Elements per rows block, and per device chunk off the CPU: bounds temporaries.
CHUNK_ELEMENTS = 1 << 24
#: Elements per flat slice on the CPU: a unit of parallel work whose buffers stay in cache.
SLICE_ELEMENTS = 1 << 22
#: Torch threads of rows statistics and of finalizing (an SVD, a Gram matrix, eigenvalues): fixed,
#: because a multi-threaded matmul or LAPACK call changes its last bits with the thread count.
#: The engine's parallelism for them is across tensors (several tensors in flight), not within one.
ROWS_THREADS = 1
#: Held while a rows statistic that needs much memory for its tensor (e.g. a large Gram matrix:
#: ``Statistic.parallel_tensors`` says no) runs, so that tensors in flight do not each hold one.
_ROWS_ALONE = threading.Lock()


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
        alone = any(not s.parallel_tensors(tuple(tensor.shape)) for s in rows)
        with fixed_threads(ROWS_THREADS), _ROWS_ALONE if alone else contextlib.nullcontext():
            if rows:
                if row_blocks is None and tensor.numel() <= chunk_elements:
                    row_blocks = list(blocks(tensor, device, chunk_elements))  # converted once for all stages
                source = row_blocks if row_blocks is not None else blocks(tensor, device, chunk_elements)
                states.update(_merge_in_order(rows, (_reduce_block(rows, values, b) for b in source)))
            for s in stage:
                values[s] = s.finalize(states.get(s), values)
    return values


def _reduce_block(stats: Sequence[Statistic], deps: Deps, block: torch.Tensor) -> list[Any]:
    """Each statistic's state of one block. The kernels of the flat statistics run together,
    in one sweep over the block's tiles (:class:`~.stats.kernels.BlockKernels`), whose results
    each statistic reads in its ``reduce``; rows statistics get the block alone."""
    wanted = [s.tile_kernels(block.dtype, deps) if s.layout == "flat" else () for s in stats]
    if not any(wanted):
        return [s.reduce(block, deps) for s in stats]
    swept = kernels.BlockKernels(block, (k for ks in wanted for k in ks))
    return [s.reduce(block, deps, swept) if ks else s.reduce(block, deps) for s, ks in zip(stats, wanted, strict=True)]


def _merge_in_order(stats: Sequence[Statistic], parts: Iterable[list[Any]]) -> dict[Statistic, Any]:
    """Each statistic's states over the blocks, merged in block order (deterministic)."""
    merged: list[Any] | None = None
    for part in parts:
        merged = part if merged is None else [s.merge(a, b) for s, a, b in zip(stats, merged, part, strict=True)]
    return dict(zip(stats, merged, strict=True)) if merged is not None else {}
