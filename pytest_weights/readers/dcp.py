"""Reader for PyTorch Distributed Checkpoint directories (``.metadata`` + ``*.distcp``).

Written by ``torch.distributed.checkpoint.save`` (one or many ranks); read here in a single
process, without ``init_process_group``, one tensor at a time: each ``read(name)`` calls
``torch.distributed.checkpoint.load({name: torch.empty(shape, dtype)}, no_dist=True)``,
which reads only the chunks of that tensor (from every rank's file) into the tensor.

Safety: DCP's own ``FileSystemReader.read_metadata`` unpickles ``.metadata`` with plain
``pickle.load``, which would run any code a crafted file asks for. This reader unpickles it
with an allowlist instead (DCP's metadata dataclasses, ``torch.Size``, dtypes, paths) and
refuses anything else; tensor data is read by DCP with ``torch.load(weights_only=True)``.
Every data file named in the metadata must be a plain file name in the directory, exist,
and be long enough for the byte ranges the metadata gives it.

Names are DCP's flattened names: nested state dicts become dotted names
(``{"model": {"fc.weight": t}}`` → ``model.fc.weight``). Tensors under an optimizer key
(``optim``, ``optimizer`` …) are in group ``"optimizer"``. Small non-tensor values (``step``)
are decoded with ``torch.load(weights_only=True)`` into :attr:`DistributedCheckpoint.metadata`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import io
import pickle
import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import combine_identities, file_identity, is_optimizer_path, is_plain_filename
from .base import Checkpoint, TensorInfo

METADATA_FILE = ".metadata"
DATA_SUFFIX = ".distcp"
MAX_METADATA_BYTES = 512 * 1024 * 1024
MAX_BYTES_ITEM = 1024 * 1024  # non-tensor values decoded into ``metadata``

#: Modules whose dataclasses and enums may appear in ``.metadata`` (the ``_shard`` ones: older PyTorch).
_DCP_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed._shard.sharded_tensor.metadata",
    "torch.distributed._shard.metadata",
)
_PATH_CLASSES = frozenset({"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"})


def is_dcp_dir(path: Path) -> bool:
    return path.is_dir() and (path / METADATA_FILE).is_file() and any(path.glob(f"*{DATA_SUFFIX}"))


def _dcp_available() -> bool:
    try:
        import torch.distributed.checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` and nothing else: no callable outside the allowlist."""

    def find_class(self, module: str, name: str) -> object:
        if module in _DCP_MODULES:
            try:
                obj = getattr(importlib.import_module(module), name, None)
            except ImportError:
                obj = None
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
                return obj
        elif module == "torch":
            obj = getattr(torch, name, None)
            if name == "Size" or isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
                return obj
        elif module == "torch.serialization" and name == "_get_layout":
            return torch.serialization._get_layout
        elif module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        elif module in ("pathlib", "pathlib._local") and name in _PATH_CLASSES:  # checkpoint_id; _local: 3.13+
            import pathlib

            return getattr(pathlib, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def read_metadata(path: Path):  # -> torch.distributed.checkpoint.metadata.Metadata
    """Safely unpickle and check a DCP ``.metadata`` file."""
    from torch.distributed.checkpoint.metadata import Metadata

    try:
        size = path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise CheckpointError(path, f"implausibly large DCP metadata ({size} bytes)")
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    try:
        meta = _MetadataUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path, f"refused: not plain DCP metadata ({e}); pytest-weights never runs code from a pickle"
        ) from None
    except Exception as e:  # a corrupt pickle can fail in many ways
        raise CheckpointError(path, f"corrupt DCP metadata: {type(e).__name__}: {e}") from None
    if not isinstance(meta, Metadata) or not isinstance(meta.state_dict_metadata, dict):
        raise CheckpointError(path, "corrupt DCP metadata: not a Metadata object")
    if not isinstance(meta.storage_data, dict):
        raise CheckpointError(path, "DCP metadata has no storage_data (not written by FileSystemWriter?)")
    return meta


@functools.cache
def _reader_class() -> type:
    from torch.distributed.checkpoint import FileSystemReader

    class SafeMetadataReader(FileSystemReader):
        """FileSystemReader whose metadata is the one already read safely (never ``pickle.load``)."""

        def __init__(self, path: str, metadata: object) -> None:
            super().__init__(path)
            self._safe_metadata = metadata

        def read_metadata(self, *args: object, **kwargs: object):
            return self._safe_metadata

    return SafeMetadataReader


class DistributedCheckpoint(Checkpoint):
    """A ``torch.distributed.checkpoint`` directory, read in one process."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        if not _dcp_available():
            raise CheckpointError(
                self.path, "this PyTorch build has no torch.distributed: cannot read a DCP checkpoint"
            )
        meta_path = self.path / METADATA_FILE
        self._meta = read_metadata(meta_path)
        files = self._check_storage(meta_path)
        self._identity = combine_identities(
            [file_identity(meta_path), *(f"{f}={file_identity(self.path / f)}" for f in sorted(files))]
        )
        from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

        planner_data = self._meta.planner_data if isinstance(self._meta.planner_data, dict) else {}
        position: dict[str, tuple[str, int]] = {}
        for index, info in self._meta.storage_data.items():
            pos = (info.relative_path, info.offset)
            if index.fqn not in position or pos < position[index.fqn]:
                position[index.fqn] = pos
        #: Small non-tensor values (``step`` …) by flattened name.
        self.metadata: dict[str, object] = {}
        infos = []
        for fqn, md in self._meta.state_dict_metadata.items():
            parts = planner_data.get(fqn)
            parts = tuple(str(p) for p in parts) if isinstance(parts, (tuple, list)) else tuple(fqn.split("."))
            if isinstance(md, TensorStorageMetadata):
                group = "optimizer" if is_optimizer_path(parts) else "weights"
                infos.append(
                    TensorInfo(fqn, tuple(int(s) for s in md.size), md.properties.dtype, str(self.path), group)
                )
            elif isinstance(md, BytesStorageMetadata):
                self._read_bytes_item(fqn)
        infos.sort(key=lambda i: position.get(i.name, ("", 0)))
        self._infos = infos
        self._by_name = {i.name: i for i in infos}

    def _check_storage(self, meta_path: Path) -> set[str]:
        sizes: dict[str, int] = {}
        for index, info in self._meta.storage_data.items():
            rel = getattr(info, "relative_path", None)
            offset, length = getattr(info, "offset", None), getattr(info, "length", None)
            if not isinstance(rel, str) or not is_plain_filename(rel):
                raise CheckpointError(meta_path, f"data file {rel!r} is not a file name in the checkpoint directory")
            if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
                raise CheckpointError(meta_path, f"{index.fqn!r}: invalid byte range {offset!r}+{length!r} in {rel}")
            if rel not in sizes:
                f = self.path / rel
                if not f.is_file():
                    raise CheckpointError(meta_path, f"data file {rel!r} named in the metadata is missing")
                sizes[rel] = f.stat().st_size
            if offset + length > sizes[rel]:
                raise CheckpointError(
                    self.path / rel,
                    f"truncated: {index.fqn!r} needs bytes {offset}..{offset + length} but the file has {sizes[rel]}",
                )
        return set(sizes)

    def _read_bytes_item(self, fqn: str) -> None:
        from torch.distributed.checkpoint.metadata import MetadataIndex

        info = self._meta.storage_data.get(MetadataIndex(fqn))
        if info is None or info.length > MAX_BYTES_ITEM or getattr(info, "transform_descriptors", None):
            return
        try:
            with (self.path / info.relative_path).open("rb") as f:
                f.seek(info.offset)
                raw = f.read(info.length)
            value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception:  # an undecodable extra is not a reason to refuse the weights
            return
        if isinstance(value, (bool, int, float, str)):
            self.metadata[fqn] = value

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        import torch.distributed.checkpoint as dcp

        try:
            info = self._by_name[name]
        except KeyError:
            raise CheckpointError(self.path, f"no tensor named {name!r}") from None
        out = torch.empty(info.shape, dtype=info.dtype)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized, assuming ... single process"
                dcp.load({name: out}, storage_reader=_reader_class()(str(self.path), self._meta), no_dist=True)
        except Exception as e:  # DCP wraps reader failures in CheckpointException and others
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(self.path, f"cannot read tensor {name!r}: {msg[:300]}") from None
        return out
