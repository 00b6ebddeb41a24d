"""In-memory checkpoints: a ``state_dict`` (possibly nested) or an ``nn.Module``.

Lets a training loop check its live weights with the same engine and specs as files.
Tensors stay where they are (GPU tensors are reduced on their device by the engine).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ._util import OPTIMIZER_KEYS
from .base import Checkpoint, TensorInfo

_counter = itertools.count()


#: Deepest nesting of containers followed (deeper is a cycle, or no state dict).
_MAX_DEPTH = 64


def _flatten(obj: Any, prefix: str, group: str, out: dict[str, tuple[torch.Tensor, str]], depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{prefix!r}: containers nested deeper than {_MAX_DEPTH} levels (a cycle?)")
    if isinstance(obj, torch.Tensor):
        out[prefix] = (obj, group)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            _flatten(v, name, "optimizer" if str(k) in OPTIMIZER_KEYS else group, out, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), group, out, depth + 1)


class StateDictCheckpoint(Checkpoint):
    """A read-only view of in-memory tensors (a snapshot of the dict, not of the values)."""

    def __init__(self, source: Mapping[str, Any] | torch.nn.Module, label: str = "state_dict") -> None:
        if isinstance(source, torch.nn.Module):
            source = source.state_dict()
        if not isinstance(source, Mapping):
            raise CheckpointError(label, f"expected a state_dict or nn.Module, got {type(source).__name__}")
        self.path = Path(label)
        self.label = label
        self._tensors: dict[str, tuple[torch.Tensor, str]] = {}
        try:
            _flatten(source, "", "weights", self._tensors)
        except ValueError as e:
            raise CheckpointError(label, str(e)) from None
        # values may change between checks: every view is its own identity (never cached)
        self._identity = f"memory:{id(source)}:{next(_counter)}"

    def tensors(self) -> list[TensorInfo]:
        return [
            TensorInfo(name, tuple(t.shape), t.dtype, self.label, group) for name, (t, group) in self._tensors.items()
        ]

    def read(self, name: str) -> torch.Tensor:
        return self.lookup(self._tensors, name)[0].detach()

    def where(self) -> str:
        return self.label

    def identity(self) -> str:
        return self._identity
