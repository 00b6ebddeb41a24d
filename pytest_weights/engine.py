"""The one-pass engine: read each requested tensor once, compute all its statistics.

``reduce_tensor`` is the pure core (a tensor in, statistic values out), usable by any
executor; ``compute_pass`` streams a checkpoint through it in storage order, prefetching
the next tensor while the current one is reduced, so memory stays bounded by about two
tensors plus one chunk of temporaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from .cache import StatCache
from .readers.base import Checkpoint
from .stats.base import Statistic, closure, stages

#: Elements per block handed to statistics: bounds temporaries to a few × 64 MB.
CHUNK_ELEMENTS = 1 << 24

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
) -> dict[Statistic, Any]:
    """Compute ``stats`` (and what they require) on one tensor; returns every value computed.

    ``known`` holds already-computed values (e.g. from a cache) that are not recomputed.
    """
    device = torch.device(device)
    values: dict[Statistic, Any] = dict(known or {})
    todo = closure(list(stats), known=values)
    if not todo:
        return values
    single = tensor.numel() <= chunk_elements
    cached = list(blocks(tensor, device, chunk_elements)) if single else None
    for stage in stages(todo):
        states: dict[Statistic, Any] = {}
        for block in cached if cached is not None else blocks(tensor, device, chunk_elements):
            for s in stage:
                part = s.reduce(block, values)
                states[s] = part if s not in states else s.merge(states[s], part)
        for s in stage:
            values[s] = s.finalize(states[s], values)
    return values


def compute_pass(
    checkpoint: Checkpoint,
    requests: Mapping[str, Iterable[Statistic]],
    store: StatStore,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    cache: StatCache | None = None,
) -> PassProgress:
    """Read every requested tensor of ``checkpoint`` once and store its statistics.

    Tensors whose requested statistics are all in ``store`` (or in ``cache``) are not read.
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
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-prefetch") as pool:
        pending = pool.submit(checkpoint.read, todo[0][0].name) if todo else None
        for k, (info, wanted) in enumerate(todo):
            tensor = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(checkpoint.read, todo[k + 1][0].name) if k + 1 < len(todo) else None
            known = store.get(cid, info.name)
            store.put(cid, info.name, reduce_tensor(tensor, wanted, device, chunk_elements, known))
            del tensor
            state.tensors_done += 1
            state.bytes_done += info.nbytes
            state.seconds = time.perf_counter() - start
            if progress:
                progress(state)
    if cache is not None and todo:
        cache.save(cid, {i.name: {s: store.get(cid, i.name)[s] for s in w} for i, w in todo})
    state.seconds = time.perf_counter() - start
    state.finished = True
    if progress:
        progress(state)
    return state
