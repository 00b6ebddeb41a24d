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
and be long enough for the byte ranges the metadata gives it; every tensor's shape must be
plausible, its chunks must lie inside it, tile it and each have stored bytes enough for its
elements, all checked before a tensor is allocated (into zeros). Storage transforms
(compression) are not supported.

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
import math
import pickle
import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import (
    BoundedUnpickler,
    check_shape,
    combine_identities,
    file_identity,
    is_optimizer_path,
    is_plain_filename,
    refuse,
    short,
)
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


class _MetadataUnpickler(BoundedUnpickler):
    """Unpickles DCP's ``.metadata`` and nothing else: no callable outside the allowlist (and no allocation
    beyond what the file holds: see :class:`BoundedUnpickler`)."""

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
    with refuse(path, "corrupt DCP metadata"):  # a corrupt pickle can fail in many ways
        try:
            meta = _MetadataUnpickler(io.BytesIO(raw)).load()
        except pickle.UnpicklingError as e:
            reason = " ".join(str(e).split())[:200]
            raise CheckpointError(
                path, f"refused: not plain DCP metadata ({reason}); pytest-weights never runs code from a pickle"
            ) from None
    if not isinstance(meta, Metadata) or not isinstance(getattr(meta, "state_dict_metadata", None), dict):
        raise CheckpointError(path, "corrupt DCP metadata: not a Metadata object")
    if not isinstance(getattr(meta, "storage_data", None), dict):
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
        with refuse(meta_path, "invalid DCP metadata"):
            self._storage = self._check_storage(meta_path)
            files = {rel for rel, _, _ in self._storage.values()}
            self._identity = combine_identities(
                [file_identity(meta_path), *(f"{f}={file_identity(self.path / f)}" for f in sorted(files))]
            )
            #: Small non-tensor values (``step`` …) by flattened name.
            self.metadata: dict[str, object] = {}
            self._infos = self._check_tensors(meta_path)
        self._by_name = {i.name: i for i in self._infos}

    def _check_storage(self, meta_path: Path) -> dict[object, tuple[str, int, int]]:
        """Every storage entry: a plain file name in the directory, and a byte range inside that file."""
        storage: dict[object, tuple[str, int, int]] = {}
        sizes: dict[str, int] = {}
        for index, info in self._meta.storage_data.items():
            fqn = getattr(index, "fqn", None)
            if not isinstance(fqn, str):
                raise CheckpointError(meta_path, f"storage entry {short(index)} names no tensor")
            rel = getattr(info, "relative_path", None)
            offset, length = getattr(info, "offset", None), getattr(info, "length", None)
            if not isinstance(rel, str) or not is_plain_filename(rel):
                raise CheckpointError(
                    meta_path, f"data file {short(rel)} is not a file name in the checkpoint directory"
                )
            if not _is_count(offset) or not _is_count(length):
                raise CheckpointError(
                    meta_path, f"{fqn!r}: invalid byte range {short(offset)}+{short(length)} in {rel}"
                )
            if getattr(info, "transform_descriptors", None):
                raise CheckpointError(
                    meta_path,
                    f"{fqn!r}: stored with transforms {short(info.transform_descriptors)} (e.g. compression), "
                    "which this reader does not support",
                )
            if rel not in sizes:
                f = self.path / rel
                if not f.is_file():
                    raise CheckpointError(meta_path, f"data file {rel!r} named in the metadata is missing")
                sizes[rel] = f.stat().st_size
            if offset + length > sizes[rel]:
                raise CheckpointError(
                    self.path / rel,
                    f"truncated: {fqn!r} needs bytes {offset}..{offset + length} but the file has {sizes[rel]}",
                )
            storage[index] = (rel, offset, length)
        return storage

    def _check_tensors(self, meta_path: Path) -> list[TensorInfo]:
        """A TensorInfo per tensor whose chunks tile its shape and are stored; bytes items decoded on the way."""
        from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

        planner_data = getattr(self._meta, "planner_data", None)
        planner_data = planner_data if isinstance(planner_data, dict) else {}
        position: dict[str, tuple[str, int]] = {}
        for index, (rel, offset, _length) in self._storage.items():
            if index.fqn not in position or (rel, offset) < position[index.fqn]:
                position[index.fqn] = (rel, offset)
        infos = []
        for fqn, md in self._meta.state_dict_metadata.items():
            if not isinstance(fqn, str):
                raise CheckpointError(meta_path, f"state dict key {short(fqn)} is not a string")
            parts = planner_data.get(fqn)
            parts = tuple(str(p) for p in parts) if isinstance(parts, (tuple, list)) else tuple(fqn.split("."))
            if isinstance(md, TensorStorageMetadata):
                shape, dtype = self._check_tensor(meta_path, fqn, md)
                group = "optimizer" if is_optimizer_path(parts) else "weights"
                infos.append(TensorInfo(fqn, shape, dtype, str(self.path), group))
            elif isinstance(md, BytesStorageMetadata):
                self._read_bytes_item(fqn)
            else:
                raise CheckpointError(meta_path, f"{fqn!r}: unknown storage metadata {type(md).__name__}")
        infos.sort(key=lambda i: position.get(i.name, ("", 0)))
        return infos

    def _check_tensor(self, meta_path: Path, fqn: str, md: object) -> tuple[tuple[int, ...], torch.dtype]:
        from torch.distributed.checkpoint.metadata import MetadataIndex

        dtype = getattr(getattr(md, "properties", None), "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(meta_path, f"tensor {fqn!r}: invalid dtype {short(dtype)}")
        shape = check_shape(meta_path, fqn, getattr(md, "size", None))
        chunks = getattr(md, "chunks", None)
        if not isinstance(chunks, list):
            raise CheckpointError(meta_path, f"tensor {fqn!r}: invalid chunk list {short(chunks)}")
        boxes, covered = [], 0
        for chunk in chunks:
            offsets = check_shape(meta_path, fqn, getattr(chunk, "offsets", None))
            sizes = check_shape(meta_path, fqn, getattr(chunk, "sizes", None))
            if len(offsets) != len(shape) or len(sizes) != len(shape):
                raise CheckpointError(
                    meta_path, f"tensor {fqn!r} of shape {list(shape)}: a chunk with another number of dimensions"
                )
            if any(o + n > s for o, n, s in zip(offsets, sizes, shape, strict=True)):
                raise CheckpointError(
                    meta_path,
                    f"tensor {fqn!r} of shape {list(shape)}: chunk at {list(offsets)} of {list(sizes)} lies outside it",
                )
            stored = self._storage.get(MetadataIndex(fqn, offsets))
            numel = math.prod(sizes)
            if stored is None:
                raise CheckpointError(meta_path, f"tensor {fqn!r}: no stored data for its chunk at {list(offsets)}")
            if numel * dtype.itemsize > stored[2]:
                raise CheckpointError(
                    meta_path,
                    f"tensor {fqn!r}: chunk at {list(offsets)} needs {numel * dtype.itemsize} bytes "
                    f"but {stored[2]} are stored",
                )
            boxes.append((offsets, sizes))
            covered += numel
        if covered != math.prod(shape) or _overlapping(boxes):
            raise CheckpointError(meta_path, f"tensor {fqn!r} of shape {list(shape)}: its chunks do not tile it")
        return shape, dtype

    def _read_bytes_item(self, fqn: str) -> None:
        from torch.distributed.checkpoint.metadata import MetadataIndex

        stored = self._storage.get(MetadataIndex(fqn))
        if stored is None or stored[2] > MAX_BYTES_ITEM:
            return
        rel, offset, length = stored
        try:
            with (self.path / rel).open("rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol …" from a damaged extra
                f.seek(offset)
                value = torch.load(io.BytesIO(f.read(length)), map_location="cpu", weights_only=True)
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

        info = self.lookup(self._by_name, name)
        # DCP wraps reader failures in CheckpointException, a BaseException: refuse() unwraps it
        with self.reading(name), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized, assuming ... single process"
            out = torch.zeros(info.shape, dtype=info.dtype)  # zeros, not empty: nothing stale if a chunk lies
            dcp.load({name: out}, storage_reader=_reader_class()(str(self.path), self._meta), no_dist=True)
        return out


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: Most chunk pairs of one tensor compared for overlap (beyond it, the covered-volume check alone holds: a
#: tensor is read into zeros, so a chunk that lies can give wrong values but never stale memory).
_MAX_COMPARISONS = 50_000


def _overlapping(boxes: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> bool:
    """True if two non-empty chunks (offsets, sizes) share an element: a sweep along the most split dimension,
    so chunks cut along one dimension cost O(k log k)."""
    boxes = [b for b in boxes if all(b[1])]
    if len(boxes) < 2:
        return False
    ndim = len(boxes[0][0])
    if ndim == 0:
        return True  # two non-empty chunks of a scalar
    dim = max(range(ndim), key=lambda d: len({offsets[d] for offsets, _ in boxes}))
    active: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    budget = _MAX_COMPARISONS
    for offsets, sizes in sorted(boxes, key=lambda b: b[0][dim]):
        active = [(o, s) for o, s in active if o[dim] + s[dim] > offsets[dim]]
        budget -= len(active)
        if budget < 0:
            return False
        for o, s in active:
            if all(a < b + m and b < a + n for a, n, b, m in zip(offsets, sizes, o, s, strict=True)):
                return True
        active.append((offsets, sizes))
    return False
