"""The reader interface: a lazy, read-only view of the tensors in one checkpoint."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from ..errors import CheckpointError
from ._util import refuse, short

T = TypeVar("T")

FLOAT_DTYPES = frozenset(
    {
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
    }
)


@dataclass(frozen=True)
class TensorInfo:
    """What is known about a tensor before reading it: name, shape, dtype, source file."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str
    #: "weights" for model parameters and buffers; "optimizer" for optimizer state
    #: (e.g. Adam's exp_avg), which default selections leave out.
    group: str = "weights"

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


class Checkpoint(ABC):
    """A checkpoint opened read-only; tensors are listed from metadata and read on demand.

    Like ``safetensors.safe_open``: cheap to open, ``read(name)`` loads one tensor.
    """

    #: What the user passed (a file or directory).
    path: Path
    #: A short label for reports, e.g. ``model.safetensors``.
    label: str

    @abstractmethod
    def tensors(self) -> list[TensorInfo]:
        """Every tensor, in storage order (the order reading is cheapest in)."""

    @abstractmethod
    def read(self, name: str) -> torch.Tensor:
        """Load one tensor on the CPU (it may share memory with a read-only mapping)."""

    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the checkpoint's bytes may have changed."""

    # -- what every reader shares: finding a tensor by name, and its errors ---------------------------------------
    def where(self) -> str | Path:
        """What errors name: the path (an in-memory checkpoint names its label)."""
        return self.path

    def lookup(self, table: Mapping[str, T], name: str) -> T:
        """``table[name]``, or the one-line ``no tensor named …`` :class:`CheckpointError`."""
        try:
            return table[name]
        except KeyError:
            raise self.missing(name) from None

    def missing(self, name: str) -> CheckpointError:
        """The error for a name this checkpoint does not hold."""
        return CheckpointError(self.where(), f"no tensor named {short(name)}")

    @contextlib.contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Around reading one tensor: any failure becomes ``cannot read tensor …: <Type>: <message>``."""
        with refuse(self.where(), f"cannot read tensor {short(name)}"):
            yield

    def changed(self) -> bool:
        """True when the files behind a memory-mapped read changed since they were opened
        (their statistics may mix old and new bytes). Readers that copy return False."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles; the default has none."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
