"""The executor protocol and what every executor shares (no Dask here; see :mod:`.dask`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from ..readers.base import Checkpoint, TensorInfo
    from ..stats.base import Statistic

#: The tensors a pass must read: (tensor, statistics wanted), in storage order.
Todo = Sequence[tuple["TensorInfo", list["Statistic"]]]
#: Called once per tensor with every value computed for it (the engine keeps the wanted ones).
Record = Callable[["TensorInfo", list["Statistic"], Mapping["Statistic", Any]], Any]

#: The environment variable naming the default scheduler (Dask's own).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Passes (checkpoints) a client keeps on a cluster at once, e.g. the checkpoints of a run or a
#: sweep: each pass waits on its own tasks, so small checkpoints do not leave workers idle.
PASSES_IN_FLIGHT = 4


class Executor(Protocol):
    """Runs the reads and reductions of a pass somewhere else than this thread."""

    def accepts(self, checkpoint: Checkpoint) -> bool:
        """Whether this executor can read ``checkpoint`` (e.g. not one that lives in this process's memory)."""

    def run(
        self,
        checkpoint: Checkpoint,
        todo: Todo,
        known: Callable[[str], Mapping[Statistic, Any]],
        device: torch.device,
        chunk_elements: int,
        record: Record,
    ) -> None:
        """Compute every tensor of ``todo``; ``known(name)``: values already computed for it.
        Raises (marked with the tensor's name) on the first tensor that fails."""

    def describe(self) -> str:
        """Where it runs, for the summary (e.g. ``Dask local:2 (2 workers)``)."""

    def close(self) -> None:
        """Release the executor's resources (a cluster it started)."""


def source_of(checkpoint: Checkpoint) -> str | None:
    """Where another process opens ``checkpoint``: the URL or absolute path it was opened from
    (a URL may hold credentials: never print it).

    None for a checkpoint that lives only in this process (a state dict, a ΔW view) or that
    no reader of :func:`~pytest_weights.readers.open_checkpoint` made.
    """
    from ..readers.derived import DeltaCheckpoint, LoraDelta
    from ..readers.memory import StateDictCheckpoint

    if isinstance(checkpoint, (StateDictCheckpoint, DeltaCheckpoint, LoraDelta)):
        return None
    if not type(checkpoint).__module__.startswith("pytest_weights.readers."):
        return None
    path = getattr(checkpoint, "path", None)
    url = getattr(path, "url", None)  # a RemotePath: its str() is the redacted URL
    if isinstance(url, str):
        return url
    return str(Path(path).resolve()) if isinstance(path, (str, Path)) else None


def scheduler_setting(value: str | None) -> str | None:
    """The scheduler a setting names (None or empty: ``$DASK_SCHEDULER_ADDRESS``); None for none or ``off``."""
    import os

    value = value or os.environ.get(SCHEDULER_ENV)
    return None if not value or value.strip().lower() == "off" else value.strip()
