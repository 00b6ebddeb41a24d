"""The statistic protocol: pure, picklable, mergeable reductions over a tensor's elements.

A statistic sees a tensor as *blocks* on the compute device, cut by its ``layout``:

* ``"rows"`` (default): 2-D float blocks of whole rows of the tensor viewed as
  ``(shape[0], -1)`` (float32; float64 stays float64), for statistics that use a matrix's
  structure (row norms, lag-1 correlation, singular values);
* ``"flat"``: 1-D slices of the flattened tensor in its *storage* dtype, cut anywhere, for
  elementwise statistics. The engine reduces these slices in parallel threads on the CPU.

``reduce`` turns one block into a partial state, ``merge`` combines two states
(associative), ``finalize`` turns the merged state into a small, picklable value. A
statistic may ``require`` others: their finalized values are passed to it as ``deps``
(e.g. the KS distance standardises with the moments). A statistic whose ``needs_sweep``
says no is computed from its requirements alone (``reduce`` is not called, ``finalize``
gets ``None``). Because states merge, a tensor can be split across chunks, processes or machines.

A flat statistic declares the :class:`~.kernels.Kernel` s it needs (``tile_kernels``); the
engine sweeps each slice once for the union of the kernels of a stage's statistics
(:class:`~.kernels.BlockKernels`) and passes that object to their ``reduce`` as ``swept``,
so statistics sharing a sweep share its tiles. Called alone, ``reduce`` sweeps for itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import torch

if TYPE_CHECKING:
    from .kernels import Kernel

Deps = Mapping["Statistic", Any]
T = TypeVar("T", bound=type)

#: Result types that may be stored in the persistent cache (as JSON, never pickled).
RESULT_TYPES: dict[str, type] = {}


def cacheable(cls: T) -> T:
    """Class decorator: mark a NamedTuple of numbers/strings as a cacheable result type."""
    RESULT_TYPES[cls.__qualname__] = cls
    return cls


class Statistic(ABC):
    """Base of every statistic. Subclasses are frozen dataclasses: hashable, picklable."""

    #: How the engine cuts the tensor into blocks (see the module docstring).
    layout: ClassVar[Literal["rows", "flat"]] = "rows"

    def needs_sweep(self, deps: Deps) -> bool:
        """Whether ``reduce`` must see the data, given the values of the requirements
        (False: ``finalize`` computes the value from ``deps`` alone, with state None)."""
        return True

    def parallel_tensors(self, shape: tuple[int, ...]) -> bool:
        """Whether the engine may reduce a tensor of ``shape`` side by side with other tensors
        (True: this statistic's memory per tensor is small). A rows statistic that needs memory
        growing with the tensor (a Gram matrix) says no for large shapes: those run one at a time."""
        return True

    def requires(self) -> tuple[Statistic, ...]:
        """Statistics whose finalized values this one needs."""
        return ()

    def tile_kernels(self, dtype: torch.dtype, deps: Deps) -> tuple[Kernel, ...]:
        """The kernels a flat statistic reads in ``reduce`` from its ``swept`` argument, for
        slices of ``dtype`` (none: ``reduce(block, deps)`` is called without it)."""
        return ()

    @abstractmethod
    def reduce(self, block: torch.Tensor, deps: Deps) -> Any:
        """Partial state of one block (2-D float tensor on the compute device)."""

    @abstractmethod
    def merge(self, a: Any, b: Any) -> Any:
        """Combine two partial states (associative; order of blocks must not matter).

        May update and return one of its arguments: a state is consumed by its merge.
        """

    @abstractmethod
    def finalize(self, state: Any, deps: Deps) -> Any:
        """The statistic's value from the merged state; small and picklable."""

    @property
    def key(self) -> str:
        """Stable identity including parameters (used as the cache key)."""
        return repr(self)


def closure(stats: set[Statistic] | list[Statistic], known: Mapping[Statistic, Any] | None = None) -> list[Statistic]:
    """``stats`` plus everything they require, dependencies first (topological order);
    statistics in ``known`` (already computed) are left out and not descended into."""
    order: list[Statistic] = []
    seen: set[Statistic] = set(known or ())

    def visit(s: Statistic) -> None:
        if s in seen:
            return
        seen.add(s)
        for d in s.requires():
            visit(d)
        order.append(s)

    for s in sorted(stats, key=lambda s: s.key):
        visit(s)
    return order


def stages(stats: list[Statistic]) -> list[list[Statistic]]:
    """Group a topologically ordered closure into sweeps: each needs only earlier sweeps."""
    level: dict[Statistic, int] = {}
    for s in stats:  # requirements outside ``stats`` are already known: level −1
        level[s] = 1 + max((level.get(d, -1) for d in s.requires()), default=-1)
    out: list[list[Statistic]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for s in stats:
        out[level[s]].append(s)
    return out


class Derived(Statistic):
    """Base of statistics computed from their requirements alone: no pass over the data."""

    def needs_sweep(self, deps: Deps) -> bool:
        return False

    def reduce(self, block: torch.Tensor, deps: Deps) -> Any:
        raise TypeError(f"{self!r} is computed from its requirements, not from blocks")

    def merge(self, a: Any, b: Any) -> Any:
        raise TypeError(f"{self!r} is computed from its requirements, not from blocks")
