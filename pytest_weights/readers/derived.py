"""Derived checkpoints: tensors computed from others, read lazily like any checkpoint.

- :class:`DeltaCheckpoint`: ΔW = W − W_ref for every tensor present in both (paper A's
  *transformation weights*); shapes must agree.
- :class:`LoraDelta`: ΔW = scaling · B·A for each LoRA module of a PEFT adapter
  (scaling = lora_alpha / r, or / √r with rsLoRA), no base model needed.

Both compute in float32 (float64 stays float64) and are read once per tensor like files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .base import Checkpoint, TensorInfo
from .peft import PeftAdapter


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


class DeltaCheckpoint(Checkpoint):
    """W − W_ref for the float tensors of ``target`` that ``reference`` also holds."""

    def __init__(self, target: Checkpoint, reference: Checkpoint) -> None:
        self.target, self.reference = target, reference
        self.path = Path(target.path)
        self.label = f"Δ({target.label} − {reference.label})"
        ref = {i.name: i for i in reference.tensors()}
        self._infos: list[TensorInfo] = []
        self.unmatched: list[str] = []
        for info in target.tensors():
            other = ref.get(info.name)
            if other is None or not info.is_float or not other.is_float:
                self.unmatched.append(info.name)
                continue
            if info.shape != other.shape:
                raise CheckpointError(
                    target.path,
                    f"tensor {info.name!r} has shape {list(info.shape)} here but {list(other.shape)} "
                    f"in the reference {reference.path}: ΔW needs equal shapes",
                )
            self._infos.append(
                TensorInfo(info.name, info.shape, _compute_dtype(info.dtype, other.dtype), info.file, info.group)
            )
        self._names = {i.name for i in self._infos}

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise CheckpointError(self.path, f"no tensor named {name!r}")
        a, b = self.target.read(name), self.reference.read(name)
        dtype = _compute_dtype(a.dtype, b.dtype)
        return a.to(dtype) - b.to(dtype)

    def identity(self) -> str:
        return f"delta({self.target.identity()}|{self.reference.identity()})"


class LoraDelta(Checkpoint):
    """ΔW = scaling · B @ A per LoRA module of a PEFT adapter, named ``<module>.weight``."""

    def __init__(self, adapter: PeftAdapter) -> None:
        self.adapter = adapter
        self.path = adapter.path
        self.label = f"ΔW({adapter.label})"
        scaling = adapter.adapter_config.scaling
        if scaling is None:
            raise CheckpointError(adapter.path, "adapter_config.json lacks r / lora_alpha: cannot scale B·A")
        self.scaling = scaling
        infos = {i.name: i for i in adapter.tensors()}
        self._pairs: dict[str, tuple[str, str]] = {}
        self._infos: list[TensorInfo] = []
        #: lora_A tensors whose factors are not matrices (convolution LoRA …): no ΔW = B·A for them.
        self.skipped: list[str] = []
        for name, a in infos.items():
            if ".lora_A." not in name:
                continue
            b_name = name.replace(".lora_A.", ".lora_B.")
            b = infos.get(b_name)
            if b is None:
                raise CheckpointError(adapter.path, f"{name!r} has no matching {b_name!r}")
            if len(a.shape) != 2 or len(b.shape) != 2:
                self.skipped.append(name)  # e.g. a convolution's LoRA: ΔW is not B·A
                continue
            if a.shape[0] != b.shape[1]:
                raise CheckpointError(
                    adapter.path,
                    f"{name!r} {list(a.shape)} and {b_name!r} {list(b.shape)} have different ranks "
                    "(A is rank × in, B is out × rank)",
                )
            module = name.split(".lora_A.")[0]
            out = f"{module}.weight"
            self._pairs[out] = (b_name, name)
            self._infos.append(TensorInfo(out, (b.shape[0], a.shape[1]), _compute_dtype(a.dtype, b.dtype), a.file))

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        try:
            b_name, a_name = self._pairs[name]
        except KeyError:
            raise CheckpointError(self.path, f"no tensor named {name!r}") from None
        a, b = self.adapter.read(a_name), self.adapter.read(b_name)
        dtype = _compute_dtype(a.dtype, b.dtype)
        return (b.to(dtype) @ a.to(dtype)) * self.scaling

    def identity(self) -> str:
        return f"lora-delta({self.adapter.identity()})"
