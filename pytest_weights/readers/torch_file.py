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
``torch.load`` allocates a legacy file's storages (and grows one to fit a tensor) at the
sizes its pickle declares, so those are first read with a stub unpickler that builds and
imports nothing, and must fit in the file. No tensor may be larger than 1024× its file (a
zero stride or a sparse layout could otherwise make a few bytes describe terabytes).

Layout: nested containers are flattened to dotted names, e.g. ``{"model": {"fc.weight": t}}``
→ ``model.fc.weight``, Lightning's ``{"state_dict": {...}}`` → ``state_dict.…`` and list
items by index (``optimizer_states.0.state.3.exp_avg``). Tensors under an optimizer key
(``optimizer``, ``optimizer_states``, ``optim`` …) or inside a ``torch.optim`` state dict
(a dict with ``state`` and ``param_groups``) are in group ``"optimizer"``. Non-tensor leaves
are not tensors to check; numbers, strings and lists of them (``step``, ``epoch``,
``param_groups.0.lr`` …) are kept in :attr:`TorchFile.metadata` under their dotted names.
"""

from __future__ import annotations

import mmap
import pickle
import re
import struct
import tarfile
import types
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import _weights_only_unpickler

from ..errors import CheckpointError
from ._util import BoundedUnpickler, check_expansion, file_identity, is_optimizer_path, read_magic, refuse, short
from .base import Checkpoint, TensorInfo
from .source import RangeFile, RemoteFile, RemotePath, as_path

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
    what = "truncated or corrupt torch.save archive" if is_zip else "corrupt, or not a PyTorch checkpoint"
    if not is_zip:
        with refuse(path, what):
            check_legacy_layout(path)
    with refuse(path, what):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Detected pickle protocol …", deprecations a crafted pickle triggers
                return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as e:  # what the pickle asked for (a global, an opcode) is not allowed
            raise _not_plain(path, e) from None


def _not_plain(path: Path | RemotePath, e: pickle.UnpicklingError) -> CheckpointError:
    return CheckpointError(
        path,
        f"refused: not a plain tensor checkpoint (weights_only): {_weights_only_detail(str(e))}. "
        "pytest-weights only loads tensors and plain containers and never runs code from a pickle; "
        "re-save the weights as a state dict (or as safetensors)",
    )


class _Stub:
    """What a global, a call or a persistent id of a scanned pickle stands for: it records nothing, runs nothing."""

    def __new__(cls, *args: object, **kwargs: object) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass

    def add(self, value: object) -> None:
        pass


class _LayoutError(ValueError):
    """A storage or tensor that a legacy file declares does not fit: refused before torch allocates it."""


class _LegacyScanner(BoundedUnpickler):
    """Reads a legacy torch.save pickle for the storages it declares, without building anything: every global
    is a :class:`_Stub` (nothing is imported), and no length in the pickle allocates (see BoundedUnpickler)."""

    def __init__(self, f: _MapReader) -> None:
        super().__init__(f)
        self.storages: dict[str, tuple[int, int]] = {}  # root key → (numel, element size)

    def find_class(self, module: str, name: str) -> object:
        if module == "torch._utils" and name in _REBUILDS:
            return _check_geometry
        if (module, name) == ("torch", "Size"):
            return _size
        return type(name if name.isidentifier() else "stub", (_Stub,), {"pickle_name": name})

    def persistent_load(self, pid: object) -> _Stub:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")):
            return _Stub()
        _, storage_type, key, _location, numel, view = pid
        if not _is_count(numel):
            raise _LayoutError(f"storage {short(key)} has {short(numel)} elements")
        if not isinstance(key, str):
            raise _LayoutError(f"storage key {short(key)} is not a string")
        numel, _ = self.storages.setdefault(key, (numel, _element_size(storage_type)))
        if view is not None:  # (view key, offset, size) into the root storage
            if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1]) and _is_count(view[2])):
                raise _LayoutError(f"storage view {short(view)} is not (key, offset, size)")
            if view[1] + view[2] > numel:
                raise _LayoutError(f"storage view {short(view)} lies outside its storage of {numel} elements")
            numel = view[2]
        return _StorageStub(numel)


class _StorageStub(_Stub):
    def __init__(self, numel: int) -> None:
        self.numel = numel


#: torch._utils functions that rebuild a tensor from (storage, storage_offset, size, stride, …).
_REBUILDS = frozenset({"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"})


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _size(*args: object) -> object:
    return tuple(args[0]) if args and isinstance(args[0], (tuple, list)) else _Stub()


def _check_geometry(storage: object = None, offset: object = 0, size: object = (), stride: object = (), *rest: object):
    """A tensor must lie inside its storage: torch would otherwise grow the storage to fit (allocating it)."""
    if not isinstance(storage, _StorageStub):
        return _Stub()
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise _LayoutError(f"tensor geometry {short(size)} / {short(stride)} is not two tuples of one length")
    if not (_is_count(offset) and all(map(_is_count, size)) and all(map(_is_count, stride))):
        raise _LayoutError(f"tensor geometry {short(size)} / {short(stride)} + {short(offset)} is not counts")
    if all(size):
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel:
            raise _LayoutError(
                f"a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) reaches element {last} "
                f"of a storage of {storage.numel}"
            )
    return _Stub()


def _element_size(storage_type: object) -> int:
    name = getattr(storage_type, "pickle_name", "")
    try:
        return torch.storage._get_dtype_from_pickle_storage_type(name).itemsize
    except (KeyError, AttributeError):
        return 16  # unknown: torch refuses it anyway; the largest element size bounds the check


class _MapReader:
    """``read``/``readline`` over a memory map for the pure-Python unpickler: a length in the pickle can never
    make it allocate more than the bytes that are there."""

    def __init__(self, m: mmap.mmap) -> None:
        self.m, self.pos = m, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.m) if n < 0 else min(len(self.m), self.pos + n)
        out = self.m[self.pos : end]
        self.pos = end
        return out

    def readline(self) -> bytes:
        end = self.m.find(b"\n", self.pos)
        return self.read(-1 if end < 0 else end + 1 - self.pos)

    def readinto(self, buf: bytearray) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def check_legacy_layout(path: Path) -> None:
    """Refuse a legacy (non-zip) torch.save file whose storages do not fit in it, before torch allocates them.

    The legacy format is pickles (magic number, protocol, system info, the object, the storage keys) followed,
    for each key, by the storage's element count (int64) and its bytes; ``torch.load`` allocates each storage at
    the size the object's pickle declares before reading it. A legacy *tar* archive is refused outright.
    """
    if tarfile.is_tarfile(path):
        raise CheckpointError(path, "refused: a legacy torch.save tar archive (PyTorch < 0.4), not supported")
    try:
        _scan_legacy(path)
    except _LayoutError as e:
        raise CheckpointError(path, f"corrupt legacy torch.save file: {e}") from None
    except CheckpointError:
        raise
    except Exception:  # not parsable here: torch.load gives the reason (it parses the same pickles, more strictly)
        return


def _scan_legacy(path: Path) -> None:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        reader = _MapReader(m)
        for _ in range(3):  # magic number, protocol version, system info
            _LegacyScanner(reader).load()
        scanner = _LegacyScanner(reader)
        scanner.load()
        keys = _LegacyScanner(reader).load()
        if not isinstance(keys, list):
            raise _LayoutError("no list of storage keys")
        pos = reader.pos
        for key in keys:
            if key not in scanner.storages:
                raise _LayoutError(f"storage {short(key)} is not declared")
            numel, size = scanner.storages[key]
            if pos + 8 > len(m) or struct.unpack_from("<q", m, pos)[0] != numel or pos + 8 + numel * size > len(m):
                raise _LayoutError(
                    f"storage {short(key)} of {numel} elements × {size} bytes does not fit at byte {pos} of {len(m)}"
                )
            pos += 8 + numel * size


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
        self.path = as_path(path)
        self.label = label or self.path.name
        self._identity = file_identity(self.path)
        #: Non-tensor leaves (numbers, strings, lists of them) by dotted name, e.g. ``{"step": 100}``.
        self.metadata: dict[str, object] = {}
        self._tensors: dict[str, torch.Tensor] | None = self._load()
        with refuse(self.path, "unreadable tensor metadata"):
            self._infos = [
                TensorInfo(n, tuple(t.shape), t.dtype, str(self.path), self._groups[n])
                for n, t in self._tensors.items()
            ]
            size = self._file_size()
            for info in self._infos:  # a zero stride or a sparse layout can make a tiny file describe a huge tensor
                check_expansion(self.path, info.name, info.nbytes, size)

    def _file_size(self) -> int:
        return self.path.stat().st_size

    def _load(self) -> dict[str, torch.Tensor]:
        obj = load_weights_only(self.path)
        with refuse(self.path, "unreadable checkpoint structure"):
            return self._flatten(obj)

    def _flatten(self, obj: object) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        self._groups: dict[str, str] = {}
        self.metadata = {}
        for parts, leaf, optimizer in _walk(obj, (), False, 0, set()):
            name = ".".join(parts)
            if isinstance(leaf, torch.Tensor):
                name = name or "tensor"  # torch.save(tensor): a bare tensor
                if name in tensors:
                    raise CheckpointError(self.path, f"two tensors flatten to the same name {name!r}")
                if leaf.device.type != self._device:  # e.g. a meta tensor: a shape without data
                    raise CheckpointError(self.path, f"tensor {name!r} holds no data (device {leaf.device.type!r})")
                tensors[name] = leaf
                self._groups[name] = "optimizer" if optimizer else "weights"
            elif name:
                self.metadata[name] = leaf
        return self._in_file_order(tensors)

    #: The device of the tensors :meth:`_load` builds (a range-read file's are ``meta``: shapes, no data).
    _device = "cpu"

    def _in_file_order(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
        t = self.lookup(self._tensors, name)
        with self.reading(name):
            t = t.detach()
            if t.layout != torch.strided:
                t = t.to_dense()
            # a private copy: callers may modify it, and it must not pin the mapping
            return t.clone(memory_format=torch.contiguous_format)

    def close(self) -> None:
        self._tensors = None  # drops the mapping once no read tensor refers to it


def _storage_position(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size()
    except (RuntimeError, NotImplementedError):
        return 0


# -- a torch.save zip archive at a URL, read by byte range ----------------------------------------------------------


class _KeyedUnpickler(_weights_only_unpickler.Unpickler):
    """torch's weights-only unpickler, which also tags each storage it loads with its key in the archive."""

    @property
    def persistent_load(self):  # type: ignore[override]
        return self._keyed_load

    @persistent_load.setter
    def persistent_load(self, load) -> None:  # torch.load sets it to its own loader
        def keyed(saved_id: object) -> object:
            storage = load(saved_id)
            untyped = getattr(storage, "_untyped_storage", storage)
            untyped._pw_key = str(saved_id[2])  # ("storage", type, key, location, numel)
            return storage

        self._keyed_load = keyed


#: What torch.load needs of a ``pickle_module``: the weights-only unpickler, tagging storages with their keys.
_KEYED_PICKLE = types.SimpleNamespace(
    __name__="pytest_weights.keyed_weights_only",
    Unpickler=_KeyedUnpickler,
    load=_weights_only_unpickler.load,
    UnpicklingError=pickle.UnpicklingError,
)


class RemoteTorchFile(TorchFile):
    """A ``torch.save`` zip archive at a URL: its central directory and pickle are fetched by range and loaded with
    torch's weights-only unpickler onto the ``meta`` device (shapes, no data); each tensor's bytes are fetched when
    it is read, by one range request that also holds its zip member's local header (where the data starts)."""

    _device = "meta"
    #: Fetch a member's local header with its tensor's bytes when the tensor starts this close to the member start.
    _HEADER_GAP = 4096

    def __init__(
        self,
        path: RemotePath,
        label: str | None = None,
        source: RemoteFile | None = None,
        members: list[zipfile.ZipInfo] | None = None,
    ) -> None:
        self._source = source or RemoteFile(path)
        if members is None:
            with refuse(path, "truncated or corrupt torch.save archive"), zipfile.ZipFile(RangeFile(self._source)) as z:
                members = z.infolist()
        self._members = {m.filename: m for m in members}
        pickles = [m.filename for m in members if m.filename.endswith("/data.pkl") and m.filename.count("/") == 1]
        self._prefix = pickles[0][: -len("data.pkl")] if pickles else ""
        super().__init__(path, label)

    def _file_size(self) -> int:
        return self._source.size

    def _load(self) -> dict[str, torch.Tensor]:
        with refuse(self.path, "truncated or corrupt torch.save archive"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    obj = torch.load(
                        RangeFile(self._source), map_location="meta", pickle_module=_KEYED_PICKLE, weights_only=False
                    )
            except pickle.UnpicklingError as e:
                raise _not_plain(self.path, e) from None
        with refuse(self.path, "unreadable checkpoint structure"):
            return self._flatten(obj)

    def _in_file_order(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(sorted(tensors.items(), key=lambda kv: self._position(kv[1])))

    def _position(self, t: torch.Tensor) -> int:
        member = self._members.get(f"{self._prefix}data/{getattr(t.untyped_storage(), '_pw_key', '')}")
        return member.header_offset if member is not None else 0

    @property
    def source(self) -> RemoteFile:
        return self._source

    def read(self, name: str) -> torch.Tensor:
        t = self.lookup(self._tensors or {}, name)
        with self.reading(name):
            if t.layout != torch.strided:
                raise CheckpointError(self.path, f"tensor {name!r}: a {t.layout} tensor cannot be read by range")
            if t.numel() == 0:
                return torch.empty(t.shape, dtype=t.dtype)
            storage = t.untyped_storage()
            item = t.element_size()
            span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
            begin, end = t.storage_offset() * item, (t.storage_offset() + span) * item
            if end > storage.nbytes():
                raise CheckpointError(self.path, f"tensor {name!r} reaches past its storage")
            raw = self._storage_bytes(name, storage, begin, end)
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(t.dtype)
            if t.is_contiguous():  # the buffer is the tensor, already a private copy
                return flat.view(t.shape)
            return flat.as_strided(t.shape, t.stride()).clone(memory_format=torch.contiguous_format)

    def _storage_bytes(self, name: str, storage: torch.UntypedStorage, begin: int, end: int) -> bytes:
        """Bytes ``begin..end`` of a storage: found by its key in the central directory, placed by its local header."""
        record = f"{self._prefix}data/{getattr(storage, '_pw_key', '?')}"
        member = self._members.get(record)
        if member is None or member.compress_type != zipfile.ZIP_STORED or member.file_size < storage.nbytes():
            raise CheckpointError(
                self.path, f"tensor {name!r}: no uncompressed member {record!r} of {storage.nbytes()} bytes"
            )
        at = member.header_offset
        # torch's guess of where the data starts (right for archives torch.save wrote), checked on the header
        guess = getattr(storage, "_checkpoint_offset", 0) - at
        if not 30 <= guess <= 30 + 2 * 0xFFFF:
            guess = 30 + len(member.filename.encode()) + len(member.extra)
        window = self._source.read(at, guess + end) if begin <= self._HEADER_GAP else self._source.read(at, 30)
        if len(window) < 30 or window[:4] != _ZIP_MAGIC:
            raise CheckpointError(self.path, f"tensor {name!r}: no local zip header for {record!r} at byte {at}")
        gap = 30 + sum(struct.unpack_from("<HH", window, 26))
        if gap == guess and len(window) == guess + end:
            return window[gap + begin :]
        return self._source.read(at + gap + begin, end - begin)

    def close(self) -> None:
        pass  # meta tensors hold no data and no handle


def torchscript_members(names: list[str]) -> bool:
    """Whether zip member names are those of a ``torch.jit.save`` archive (code and constants, not only data)."""
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)
