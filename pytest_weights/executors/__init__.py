"""Where a statistics pass runs: in this process (the default), or on a Dask cluster.

:func:`~pytest_weights.engine.compute_pass` plans a checkpoint's pass (what to read, what
the cache already holds) and hands the tensors to read to an :class:`Executor`, or streams
them itself when there is none (or the executor declines the checkpoint). An executor
calls ``record`` once per tensor with its statistic values, as tensors complete.

``make_executor("local:4")`` starts a Dask ``LocalCluster`` of 4 worker processes;
``make_executor("tcp://host:8786")`` connects to a running scheduler. Dask is imported
only here, only when a scheduler is set.
"""

from __future__ import annotations

from .base import PASSES_IN_FLIGHT, SCHEDULER_ENV, Executor, Record, Todo, scheduler_setting, source_of


def make_executor(scheduler: str) -> Executor:
    """The executor for a scheduler address: ``local:N`` (a LocalCluster of N processes) or a Dask address."""
    try:
        from .dask import DaskExecutor  # imports dask.distributed
    except ImportError as e:
        from ..errors import WeightsError

        raise WeightsError(
            f"--weights-scheduler/scheduler= {scheduler!r} needs Dask: pip install 'pytest-weights[distributed]' ({e})"
        ) from None

    return DaskExecutor(scheduler)


__all__ = [
    "PASSES_IN_FLIGHT",
    "SCHEDULER_ENV",
    "Executor",
    "Record",
    "Todo",
    "make_executor",
    "scheduler_setting",
    "source_of",
]
