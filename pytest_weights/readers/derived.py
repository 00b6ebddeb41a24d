"""Derived checkpoints: tensors computed from others, read lazily like any checkpoint.

- :class:`DeltaCheckpoint`: ΔW = W − W_ref for every tensor present in both (paper A's
  *transformation weights*), names matched through :func:`~pytest_weights.names.match_names`
  (``module.``, ``_orig_mod.``, ``model.`` wrappers stripped when that pairs them). A tensor
  whose shape (or float/non-float kind) differs from the reference's is left out with a note
  naming both shapes; the rest of ΔW still works. Non-float tensors present in both stay in
  the listing with their dtype, so they are reported like any non-float tensor.
- :class:`LoraDelta`: ΔW = scaling · B·A for each LoRA module of a PEFT adapter
  (scaling = lora_alpha / r, or / √r with rsLoRA), no base model needed.

Both compute in float32 (float64 stays float64) and are read once per tensor like files. A
NaN or ±Inf on either side makes that element of ΔW non-finite, so the NaN policy of
value-reading kinds (:meth:`~pytest_weights.assertions.base.Assertion.judge`) applies to ΔW.
Their tensors are :class:`DeltaInfo`: kinds that only make sense on a difference
(``unchanged``) recognise them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..names import NameMatch, match_names
from .base import Checkpoint, TensorInfo
from .peft import PeftAdapter

#: Names listed in full in a note; the rest are counted.
NOTE_NAMES = 5


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


@dataclass(frozen=True)
class DeltaInfo(TensorInfo):
    """A tensor of a ΔW view: the difference of a tensor and its reference counterpart."""

    #: The counterpart's name in the reference ('' for a LoRA product).
    reference: str = ""


def _names(items: list[str]) -> str:
    more = f" and {len(items) - NOTE_NAMES} more" if len(items) > NOTE_NAMES else ""
    return ", ".join(items[:NOTE_NAMES]) + more


class DeltaCheckpoint(Checkpoint):
    """W − W_ref for the tensors of ``target`` that ``reference`` also holds (same shape)."""

    def __init__(self, target: Checkpoint, reference: Checkpoint) -> None:
        self.target, self.reference = target, reference
        self.path = Path(target.path)
        self.label = f"Δ({target.label} − {reference.label})"
        infos = target.tensors()
        ref = {i.name: i for i in reference.tensors()}
        #: How names paired (renames reported in :meth:`notes`).
        self.names: NameMatch = match_names({i.name: i.shape for i in infos}, {n: i.shape for n, i in ref.items()})
        self._infos: list[DeltaInfo] = []
        #: Tensors of ``target`` the reference does not hold: left out of ΔW.
        self.unmatched: list[str] = []
        #: Tensors left out because their shape or kind (float / non-float) differs: (name, why).
        self.mismatched: list[tuple[str, str]] = []
        for info in infos:
            ref_name = self.names.b_name(info.name)
            if ref_name is None:
                self.unmatched.append(info.name)
                continue
            delta = self._delta_info(info, ref[ref_name])
            if delta is not None:
                self._infos.append(delta)
        self._by_name = {i.name: i for i in self._infos}

    def _delta_info(self, info: TensorInfo, other: TensorInfo) -> DeltaInfo | None:
        """ΔW's entry for a matched pair, or None (recorded in :attr:`mismatched`) when they differ in kind."""
        if tuple(info.shape) != tuple(other.shape):
            self.mismatched.append((info.name, f"shape {list(info.shape)} here, {list(other.shape)} in the reference"))
            return None
        if info.is_float != other.is_float:
            self.mismatched.append((info.name, f"{info.dtype_name} here, {other.dtype_name} in the reference"))
            return None
        if info.is_float:
            dtype = _compute_dtype(info.dtype, other.dtype)
        else:  # listed with its dtype, so that it is reported as non-float; never in float statistics
            dtype = info.dtype if info.dtype == other.dtype else torch.int64
        return DeltaInfo(info.name, info.shape, dtype, info.file, info.group, other.name)

    def notes(self) -> tuple[str, ...]:
        """What a ΔW result should say about how it was built: renames, tensors left out and why."""
        out = [f"ΔW names: {n}" for n in self.names.notes("the checkpoint", "the reference")]
        if self.unmatched:
            out.append(f"{len(self.unmatched)} tensor(s) not in the reference left out of ΔW: {_names(self.unmatched)}")
        out += [f"{name} left out of ΔW: {why}" for name, why in self.mismatched]
        return tuple(out)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        info = self.lookup(self._by_name, name)
        a, b = self.target.read(name), self.reference.read(info.reference)
        if not info.is_float:
            if a.dtype == torch.bool and b.dtype == torch.bool:
                return a ^ b
            return (a.to(torch.int64) - b.to(torch.int64)).to(info.dtype)
        return a.to(info.dtype) - b.to(info.dtype)

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
            shape = (b.shape[0], a.shape[1])
            self._infos.append(DeltaInfo(out, shape, _compute_dtype(a.dtype, b.dtype), a.file))

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        b_name, a_name = self.lookup(self._pairs, name)
        a, b = self.adapter.read(a_name), self.adapter.read(b_name)
        dtype = _compute_dtype(a.dtype, b.dtype)
        return (b.to(dtype) @ a.to(dtype)) * self.scaling

    def identity(self) -> str:
        return f"lora-delta({self.adapter.identity()})"
