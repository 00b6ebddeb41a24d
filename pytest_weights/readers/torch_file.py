"""Reader for PyTorch checkpoints saved with ``torch.save`` (``.pt``, ``.pth``, ``.bin``, ``.ckpt``).

Safety: the file is always loaded with ``torch.load(weights_only=True)``, whose unpickler
only rebuilds tensors and plain containers (dict, list, tuple, numbers, strings). A file
whose pickle asks for anything else (a class, a function such as ``open``) is refused with
a :class:`CheckpointError`; nothing in it is executed.

Memory: files in the zip format ``torch.save`` has written since PyTorch 1.6 are loaded
with ``mmap=True``, so opening maps the file and reads only the pickle; tensor bytes are
paged in when a tensor is read. **Limit:** the legacy non-zip format
(``_use_new_zipfile_serialization=False``, PyTorch < 1.6) cannot be memory-mapped or
streamed by ``torch.load``: opening such a file reads every tensor into memory at once.

Layout: nested containers are flattened to dotted names, e.g. ``{"model": {"fc.weight": t}}``
→ ``model.fc.weight``, Lightning's ``{"state_dict": {...}}`` → ``state_dict.…`` and list
items by index (``optimizer_states.0.state.3.exp_avg``). Tensors under an optimizer key
(``optimizer``, ``optimizer_states``, ``optim`` …) or inside a ``torch.optim`` state dict
(a dict with ``state`` and ``param_groups``) are in group ``"optimizer"``. Non-tensor leaves
are not tensors to check; numbers, strings and lists of them (``step``, ``epoch``,
``param_groups.0.lr`` …) are kept in :attr:`TorchFile.metadata` under their dotted names.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import file_identity, is_optimizer_path, read_magic
from .base import Checkpoint, TensorInfo

SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # the legacy format starts with a pickled magic number
_MAX_DEPTH = 64
_SCALARS = (bool, int, float, str, type(None))


def is_torch_file(path: Path) -> bool:
    return path.is_file() and path.suffix in SUFFIXES


def _weights_only_detail(message: str) -> str:
    """The useful line of torch's long weights_only error, e.g. ``Unsupported global: GLOBAL builtins.open``."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", message)
    if m:
        return m.group(1).strip()
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first[:200]


def load_weights_only(path: Path) -> object:
    """``torch.load(weights_only=True)`` with mmap when possible; every failure is a CheckpointError."""
    head = read_magic(path, 4)
    if not head:
        raise CheckpointError(path, "not a PyTorch checkpoint: the file is empty")
    is_zip = head == _ZIP_MAGIC
    if not is_zip and not head.startswith(_PICKLE_PROTO):
        raise CheckpointError(path, "not a PyTorch checkpoint: neither a torch.save zip archive nor a legacy pickle")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path,
            f"refused: not a plain tensor checkpoint (weights_only): {_weights_only_detail(str(e))}. "
            "pytest-weights only loads tensors and plain containers and never runs code from a pickle; "
            "re-save the weights as a state dict (or as safetensors)",
        ) from None
    except (EOFError, RuntimeError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as e:
        what = "truncated or corrupt torch.save archive" if is_zip else "corrupt, or not a PyTorch checkpoint"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"{what}: {msg[:300]}") from None


def _walk(
    obj: object, parts: tuple[str, ...], optimizer: bool, depth: int, seen: set[int]
) -> Iterator[tuple[tuple[str, ...], object, bool]]:
    """Yield (key path, leaf, in optimizer state) for tensors and scalar leaves, depth first in key order."""
    if isinstance(obj, (torch.Tensor, *_SCALARS)):
        yield parts, obj, optimizer
        return
    if depth > _MAX_DEPTH or id(obj) in seen:
        return
    if isinstance(obj, Mapping):
        seen.add(id(obj))
        in_optim = optimizer or ("state" in obj and "param_groups" in obj)
        for key, value in obj.items():
            part = str(key)
            yield from _walk(value, (*parts, part), in_optim or is_optimizer_path((part,)), depth + 1, seen)
    elif isinstance(obj, (list, tuple)):
        if all(isinstance(v, _SCALARS) for v in obj):
            yield parts, tuple(obj), optimizer
            return
        seen.add(id(obj))
        for i, value in enumerate(obj):
            yield from _walk(value, (*parts, str(i)), optimizer, depth + 1, seen)
    # anything else (torch.Size, dtypes …) is neither a tensor nor metadata worth keeping


class TorchFile(Checkpoint):
    """A ``torch.save`` file, loaded with ``weights_only=True`` (memory-mapped when zip)."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._identity = file_identity(self.path)
        #: Non-tensor leaves (numbers, strings, lists of them) by dotted name, e.g. ``{"step": 100}``.
        self.metadata: dict[str, object] = {}
        self._tensors: dict[str, torch.Tensor] | None = self._load()
        self._infos = [
            TensorInfo(n, tuple(t.shape), t.dtype, str(self.path), self._groups[n]) for n, t in self._tensors.items()
        ]

    def _load(self) -> dict[str, torch.Tensor]:
        obj = load_weights_only(self.path)
        tensors: dict[str, torch.Tensor] = {}
        self._groups: dict[str, str] = {}
        self.metadata = {}
        for parts, leaf, optimizer in _walk(obj, (), False, 0, set()):
            name = ".".join(parts)
            if isinstance(leaf, torch.Tensor):
                name = name or "tensor"  # torch.save(tensor): a bare tensor
                if name in tensors:
                    raise CheckpointError(self.path, f"two tensors flatten to the same name {name!r}")
                tensors[name] = leaf
                self._groups[name] = "optimizer" if optimizer else "weights"
            elif name:
                self.metadata[name] = leaf
        if read_magic(self.path, 4) == _ZIP_MAGIC:
            # mmap'd: every storage lives in one mapping of the file, so pointer order is file order
            tensors = dict(sorted(tensors.items(), key=lambda kv: _storage_position(kv[1])))
        return tensors

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        if self._tensors is None:  # closed: map the file again
            self._tensors = self._load()
        try:
            t = self._tensors[name]
        except KeyError:
            raise CheckpointError(self.path, f"no tensor named {name!r}") from None
        try:
            t = t.detach()
            if t.layout != torch.strided:
                t = t.to_dense()
            # a private copy: callers may modify it, and it must not pin the mapping
            return t.clone(memory_format=torch.contiguous_format)
        except (RuntimeError, OSError) as e:
            raise CheckpointError(self.path, f"cannot read tensor {name!r}: {e}") from None

    def close(self) -> None:
        self._tensors = None  # drops the mapping once no read tensor refers to it


def _storage_position(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size()
    except (RuntimeError, NotImplementedError):
        return 0
