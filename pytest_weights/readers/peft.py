"""Reader for PEFT adapters (LoRA …): a directory with ``adapter_config.json`` and
``adapter_model.safetensors`` (or ``adapter_model.bin``).

The tensors are the adapter's own (e.g. ``base_model.model.….q_proj.lora_A.weight``),
read by the safetensors or PyTorch reader. ``adapter_config.json`` is parsed into
:attr:`PeftAdapter.adapter_config` (rank ``r``, ``lora_alpha``, ``target_modules`` …).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from ..errors import CheckpointError
from ._util import combine_identities, file_identity, load_json, short
from .base import Checkpoint, TensorInfo
from .safetensors_file import SafetensorsFile
from .torch_file import TorchFile

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_RANK = 1 << 31


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond any float
        return False


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of ``adapter_config.json`` the checks use; everything else is in ``raw``."""

    peft_type: str | None = None
    r: int | None = None
    lora_alpha: float | None = None
    #: A list of module names, or a single string (a regex, or ``"all-linear"``), as PEFT allows.
    target_modules: tuple[str, ...] | str | None = None
    use_rslora: bool = False
    base_model_name_or_path: str | None = None
    raw: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def scaling(self) -> float | None:
        """LoRA's multiplier of ``B @ A``: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA)."""
        if self.r is None or self.lora_alpha is None or self.r <= 0:
            return None
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def parse_adapter_config(path: Path) -> AdapterConfig:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(path, f"implausibly large adapter config ({size} bytes)")
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    data = load_json(path, raw, "adapter config")
    if not isinstance(data, dict):
        raise CheckpointError(path, "not a PEFT adapter config: not a JSON object")

    def get(key: str, types: type | tuple[type, ...], what: str) -> object:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, types):
            raise CheckpointError(path, f"{key!r} should be {what}, not {short(value)}")
        return value

    r = get("r", int, "a positive integer")
    if r is not None and not 0 < r < MAX_RANK:
        raise CheckpointError(path, f"'r' should be a positive integer (a rank below {MAX_RANK}), not {short(r)}")
    alpha = get("lora_alpha", (int, float), "a number")
    if alpha is not None and not _finite(alpha):
        raise CheckpointError(path, f"'lora_alpha' should be a finite number, not {short(alpha)}")
    targets = data.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        targets = tuple(targets)
    elif targets is not None and not isinstance(targets, str):
        raise CheckpointError(path, f"'target_modules' should be a list of names or a string, not {short(targets)}")
    use_rslora = data.get("use_rslora", False)
    return AdapterConfig(
        peft_type=get("peft_type", str, "a string"),
        r=r,
        lora_alpha=float(alpha) if alpha is not None else None,
        target_modules=targets,
        use_rslora=use_rslora is True,
        base_model_name_or_path=get("base_model_name_or_path", str, "a string"),
        raw=MappingProxyType(data),
    )


def is_peft_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


class PeftAdapter(Checkpoint):
    """A PEFT adapter directory: its weights, plus the parsed :class:`AdapterConfig`."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        config_path = self.path / CONFIG_FILE
        weights = next((self.path / f for f in WEIGHT_FILES if (self.path / f).is_file()), None)
        if weights is None:
            raise CheckpointError(self.path, f"not a PEFT adapter: none of {', '.join(WEIGHT_FILES)}")
        self.label = label or f"{self.path.name}/{weights.name}"
        self.adapter_config = parse_adapter_config(config_path)
        self._config_identity = file_identity(config_path)
        self._inner: Checkpoint = (
            SafetensorsFile(weights, label=self.label)
            if weights.suffix == ".safetensors"
            else TorchFile(weights, label=self.label)
        )

    def tensors(self) -> list[TensorInfo]:
        return self._inner.tensors()

    def read(self, name: str) -> torch.Tensor:
        return self._inner.read(name)

    def identity(self) -> str:
        return combine_identities([self._config_identity, self._inner.identity()])

    def close(self) -> None:
        self._inner.close()
