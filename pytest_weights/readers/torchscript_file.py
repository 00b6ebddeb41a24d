"""Reader for TorchScript archives written by ``torch.jit.save`` (``.jit``, ``.torchscript``, or a ``.pt``).

Safety: the archive is never loaded with ``torch.jit.load`` and none of its code runs.
``data.pkl`` (the module tree) and ``constants.pkl`` are unpickled by a restricted, bounded
unpickler (:class:`~._util.BoundedUnpickler`: no memo table sized by the pickle, no
BYTEARRAY8; at most :data:`_MAX_PICKLE_OPS` opcodes, no sets, no tuples as dict keys, so a
few bytes cannot allocate gigabytes or hash a billion-laugh structure) that resolves only the
handful of globals TorchScript writes: tensor rebuilds
(``torch._utils._rebuild_tensor_v2``), storage types (``torch.FloatStorage`` …),
``collections.OrderedDict`` and the list/type-tag helpers of ``torch.jit._pickle`` — all
replaced by inert local stand-ins. TorchScript classes (``__torch__.*``) become plain
placeholder objects that only record their state; nothing is imported. Any other global
(``os.system``, ``builtins.eval`` …) refuses the file with a :class:`CheckpointError`.
The ``code/`` files are read as text only, to find each class's ``__parameters__`` and
``__buffers__`` declarations, with one linear-time regular expression (no backtracking on
hostile text) and bounded sizes. Values from the pickles are only ever described by
:func:`_short` (bounded), and the module tree is walked within a budget, so shared
references (memo bombs) cannot make either take long.

Names: the module tree is flattened to dotted names as ``module.state_dict()`` gives them
(``encoder.0.reparam_conv.weight``, ``decoder.rnn.weight_ih``): parameters and buffers of
each module, then its submodules. Tensor attributes that are neither (runtime state such
as ``_state``, or ``_flat_weights`` lists) are not in the state dict and are left out;
their names are in :attr:`TorchScriptFile.attributes`. Tensors in ``constants.pkl``
(tensor literals in the module's code) are added as ``constants.N``.

Memory: opening reads only the pickles and the zip directory. ``read(name)`` reads the
byte range of that one tensor from its ``data/<key>`` record (one ``pread`` for stored
records, which is what ``torch.jit.save`` writes) and returns a private copy.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..errors import CheckpointError
from ._util import MAX_NUMEL, BoundedUnpickler, check_expansion, file_identity, first_line, read_magic, short
from .base import Checkpoint, TensorInfo
from .source import pread_into
from .torch_file import SUFFIXES as TORCH_SUFFIXES

#: Suffixes that are always TorchScript; a torch suffix (``.pt`` …) is when its zip says so.
SUFFIXES = frozenset({".jit", ".torchscript"})

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_PICKLE_BYTES = 64 * 1024 * 1024
#: Opcodes per pickle (silero's data.pkl has 2,000; one per ~3 bytes): each may create an object, so this bounds
#: the memory a small pickle can take (about 100 bytes an opcode at worst).
_MAX_PICKLE_OPS = 2_000_000
_MAX_CODE_BYTES = 16 * 1024 * 1024
#: code/ text read in all, over every module file.
_MAX_CODE_TOTAL = 64 * 1024 * 1024
#: Names one ``__parameters__`` or ``__buffers__`` list may declare.
_MAX_DECLARED = 100_000
#: Distinct ``__torch__`` classes a pickle may name.
_MAX_CLASSES = 10_000
_MAX_DEPTH = 64
_MAX_NODES = 200_000
#: Module attributes and nested values looked at while walking the module tree (a module shared by two parents is
#: walked twice, as ``state_dict()`` names it twice; other shared values once).
_MAX_WORK = 1_000_000
#: Largest offset or stride accepted (sizes: ``MAX_NUMEL``); keeps every product within int64.
_MAX_INT = 1 << 62
#: A tensor may have more elements than its storage only through zero strides (``expand``).
_MAX_EXPANDED_NUMEL = 1 << 28
_MAX_NDIM = 64
#: Deflate cannot expand more than about 1032:1; anything claiming more is a zip bomb.
_MAX_DEFLATE_RATIO = 1100

#: c10 ScalarType names as TorchScript writes them (``torch.<Name>Storage``) → torch dtypes.
_SCALAR_NAMES = {
    "Byte": "uint8",
    "Char": "int8",
    "Short": "int16",
    "Int": "int32",
    "Long": "int64",
    "Half": "float16",
    "Float": "float32",
    "Double": "float64",
    "ComplexHalf": "complex32",
    "ComplexFloat": "complex64",
    "ComplexDouble": "complex128",
    "Bool": "bool",
    "BFloat16": "bfloat16",
    "QInt8": "qint8",
    "QUInt8": "quint8",
    "QInt32": "qint32",
    "QUInt4x2": "quint4x2",
    "QUInt2x4": "quint2x4",
    "Float8_e5m2": "float8_e5m2",
    "Float8_e4m3fn": "float8_e4m3fn",
    "Float8_e5m2fnuz": "float8_e5m2fnuz",
    "Float8_e4m3fnuz": "float8_e4m3fnuz",
    "UInt16": "uint16",
    "UInt32": "uint32",
    "UInt64": "uint64",
}
STORAGE_DTYPES: dict[str, torch.dtype] = {
    f"{name}Storage": getattr(torch, attr) for name, attr in _SCALAR_NAMES.items() if hasattr(torch, attr)
}
_QUANTIZED = frozenset(d for d in (torch.qint8, torch.quint8, torch.qint32, torch.quint4x2, torch.quint2x4))
_QSCHEMES = frozenset(
    {"per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric"}
    | {"per_channel_affine_float_qparams"}
)


def is_torchscript_file(path: Path) -> bool:
    """``.jit``/``.torchscript``, or a torch suffix whose zip holds ``code/``, ``data.pkl`` and ``constants.pkl``."""
    if not path.is_file():
        return False
    if path.suffix in SUFFIXES:
        return True
    if path.suffix not in TORCH_SUFFIXES:
        return False
    try:
        if read_magic(path, 4) != _ZIP_MAGIC:
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except Exception:  # unreadable or not a zip: the torch reader reports it
        return False
    prefix = _archive_dir(names)
    return prefix is not None and prefix + "constants.pkl" in names


def _archive_dir(names: list[str]) -> str | None:
    """The ``<archive>/`` prefix of a TorchScript zip (one holding ``data.pkl`` and ``code/``), or None."""
    tops: dict[str, set[str]] = {}
    for n in names:
        top, sep, rest = n.partition("/")
        if not sep:
            continue
        kinds = tops.setdefault(top, set())
        if rest == "data.pkl":
            kinds.add(rest)
        elif rest.startswith("code/"):
            kinds.add("code/")
    for top, kinds in tops.items():
        if kinds == {"data.pkl", "code/"}:
            return top + "/"
    return None


# -- the restricted unpickler --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Storage:
    """A persistent-id storage reference: ``(storage, <dtype>Storage, key, location, numel)``."""

    dtype: torch.dtype
    key: str
    numel: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor not read yet: a view (offset, size, stride, in elements) of a storage record.

    Checked when built (:func:`_rebuild_tensor_v2`); immutable afterwards (frozen, slotted, and
    the unpickler's ``BUILD`` only reaches ``__torch__`` placeholders).
    """

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n

    def span(self) -> tuple[int, int]:
        """First and one-past-last element of the storage this tensor touches."""
        if self.numel == 0:
            return self.offset, self.offset
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride, strict=True))
        return self.offset, last + 1


@dataclass(frozen=True, slots=True)
class _Unsupported:
    """A value this reader does not read (quantized or sparse tensor), with why."""

    reason: str


class _ScriptObject:
    """Stand-in for a TorchScript class instance (``__torch__.…``): records its state, runs nothing."""

    qualname = "__torch__"

    def __new__(cls, *args: object, **kwargs: object) -> _ScriptObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        self.state = state


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for ``torch.<Name>Storage`` in a persistent id."""

    name: str
    dtype: torch.dtype


class _Refused(Exception):
    """A global the restricted unpickler does not allow."""


def _short(value: object, limit: int = 80, depth: int = 0) -> str:
    """A bounded description of a value from a hostile pickle: at most ``limit`` characters, a few items of at most
    two levels of containers (``repr`` of a billion-laugh list, a 10⁶-digit int or a 64 MB string would not end)."""
    try:
        kind = type(value)
        if kind in (str, bytes):
            text = repr(value[:limit])
        elif kind is int and value.bit_length() > 256:
            text = f"<int of {value.bit_length()} bits>"
        elif kind in (bool, int, float, complex) or value is None:
            text = repr(value)
        elif kind in (tuple, list, dict) and value and depth < 2:
            pairs = list(value.items())[:4] if kind is dict else [(v, None) for v in value[:4]]
            shown = ", ".join(
                _short(k, 20, depth + 1) + ("" if kind is not dict else ": " + _short(v, 20, depth + 1))
                for k, v in pairs
            )
            more = ", …" if len(value) > 4 else ""
            text = {tuple: "({})", list: "[{}]", dict: "{{{}}}"}[kind].format(shown + more)
        elif kind in (tuple, list, dict):
            text = f"<{kind.__name__} of {len(value)}>" if value else repr(kind())
        else:
            text = f"<{kind.__name__[:40]}>"
    except Exception:
        text = f"<{type(value).__name__[:40]}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: object, what: str, limit: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -limit <= value <= limit:
        raise ValueError(f"invalid tensor {what} {_short(value)}")
    return value


def _ints(value: object, what: str, limit: int = _MAX_INT) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM:
        raise ValueError(f"invalid tensor {what} {_short(value)}")
    return tuple(_int(v, what, limit) for v in value)


def _rebuild_tensor_v2(
    storage: object, offset: object, size: object, stride: object, *_rest: object, **_kw: object
) -> _TensorRef | _Unsupported:
    if isinstance(storage, _Unsupported):
        return storage
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is {type(storage).__name__[:40]}, not a storage reference")
    offset = _int(offset, "storage offset")
    ref = _TensorRef(storage, offset, _ints(size, "size", MAX_NUMEL), _ints(stride, "stride"))
    if len(ref.size) != len(ref.stride):
        raise ValueError(f"tensor size {list(ref.size)} and stride {list(ref.stride)} differ in length")
    if offset < 0 or any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride):
        raise ValueError(f"negative offset, size or stride: {offset}, {list(ref.size)}, {list(ref.stride)}")
    if storage.dtype in _QUANTIZED:
        return _Unsupported(f"quantized tensor ({storage.dtype})")
    _begin, end = ref.span()
    if end > storage.numel:
        raise ValueError(
            f"tensor of size {list(ref.size)}, stride {list(ref.stride)} at offset {offset} reaches element {end} "
            f"of a storage of {storage.numel}"
        )
    if ref.numel > max(storage.numel, _MAX_EXPANDED_NUMEL):
        raise ValueError(f"absurd tensor size {list(ref.size)} for a storage of {storage.numel} elements")
    return ref


def _rebuild_qtensor(*_args: object, **_kw: object) -> _Unsupported:
    return _Unsupported("quantized tensor")


def _rebuild_sparse_tensor(*_args: object, **_kw: object) -> _Unsupported:
    return _Unsupported("sparse tensor")


def _rebuild_from_type_v2(func: object, _new_type: object, args: object, _state: object) -> object:
    """A tensor subclass: rebuild the plain tensor only (the subclass is never imported)."""
    if func not in (_rebuild_tensor_v2, _rebuild_qtensor, _rebuild_sparse_tensor) or not isinstance(args, tuple):
        raise ValueError("a tensor subclass rebuilt by something other than a tensor rebuild function")
    return func(*args)


def _identity(value: object, *_rest: object) -> object:
    return value


def _device(name: object, *_rest: object) -> str:
    if not isinstance(name, str) or len(name) > 100:
        raise ValueError(f"invalid device {_short(name)}")
    return name


def _complex(real: object = 0.0, imag: object = 0.0) -> complex:
    if not isinstance(real, (int, float)) or not isinstance(imag, (int, float)):
        raise ValueError("complex() of a non-number")
    return complex(real, imag)


def _ordered_dict(*args: object) -> OrderedDict:
    # only ever called empty (a tensor's backward hooks); refuse anything that would iterate foreign objects
    if args not in ((), ((),), ([],)):
        raise ValueError("OrderedDict with arguments")
    return OrderedDict()


class _TensorMarker:
    """Stand-in for ``torch.Tensor`` as the new type of ``_rebuild_from_type_v2``."""


_GLOBALS: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_qtensor,
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorMarker,
    ("torch", "device"): _device,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "complex"): _complex,
    ("__builtin__", "complex"): _complex,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
    ("torch.jit._pickle", "build_tensor_from_id"): lambda _id: _Unsupported("tensor table reference"),
}


def _counted(handler: Callable[[pickle._Unpickler], None]) -> Callable[[pickle._Unpickler], None]:
    """``handler``, counting the opcodes run against :data:`_MAX_PICKLE_OPS`."""

    def run(self: _Unpickler) -> None:
        self.ops += 1
        if self.ops > _MAX_PICKLE_OPS:
            raise pickle.UnpicklingError(f"more than {_MAX_PICKLE_OPS} pickle opcodes")
        handler(self)

    return run


def _check_keys(keys: object) -> None:
    """Dict keys must be scalars: hashing a tuple hashes all of it, and a few bytes of memo references make a
    tuple of 10¹² items (TorchScript's dict keys are str, int, float, bool, complex or Tensor)."""
    for key in keys:
        if isinstance(key, (tuple, frozenset)):
            raise pickle.UnpicklingError(f"a {type(key).__name__} as a dict key (TorchScript's keys are scalars)")


def _no_sets(self: _Unpickler) -> None:
    raise pickle.UnpicklingError("a set (TorchScript never pickles one)")


class _Unpickler(BoundedUnpickler):
    """Resolves only TorchScript's own globals, to inert stand-ins; never imports anything.

    The pure-Python :class:`~._util.BoundedUnpickler`, so that ``BUILD`` (setting an object's
    state) can be limited to the ``__torch__`` placeholders: nothing else, not even the
    stand-ins, can be mutated; opcodes are counted, sets refused, dict keys checked.
    """

    dispatch: ClassVar[dict] = dict(BoundedUnpickler.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._classes: dict[str, type[_ScriptObject]] = {}
        self.ops = 0

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _ScriptObject):
            raise _Refused(f"BUILD (setting the state) of a {type(inst).__name__[:40]}")
        inst.__setstate__(state)

    # The stack holds what was pushed since the last MARK: keys and values, alternating.
    def load_dict(self) -> None:
        _check_keys(self.stack[0::2])
        pickle._Unpickler.load_dict(self)

    def load_setitem(self) -> None:
        _check_keys(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)

    def load_setitems(self) -> None:
        _check_keys(self.stack[0::2])
        pickle._Unpickler.load_setitems(self)

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    for _op in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_op[0]] = _no_sets
    del _op
    dispatch = {code: _counted(handler) for code, handler in dispatch.items()}

    def find_class(self, module: str, name: str) -> object:
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Refused(f"GLOBAL {_short(module)} {_short(name)}")
        found = _GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch":
            if name in STORAGE_DTYPES:
                return _StorageType(name, STORAGE_DTYPES[name])
            if name in _QSCHEMES:
                return name
        torch_class = module == "__torch__" or module.startswith("__torch__.")
        if torch_class and name.isidentifier() and len(module) < 1000 and len(name) < 1000:
            qualname = f"{module}.{name}"
            cls = self._classes.get(qualname)
            if cls is None:
                if len(self._classes) >= _MAX_CLASSES:
                    raise pickle.UnpicklingError(f"more than {_MAX_CLASSES} TorchScript classes")
                cls = self._classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return cls
        raise _Refused(f"GLOBAL {module[:200]}.{name[:200]}")

    def persistent_load(self, pid: object) -> _Storage | _Unsupported:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise ValueError(f"unknown persistent id {_short(pid, 120)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"unknown storage type {_short(storage_type)}")
        if not isinstance(key, str) or not key or len(key) > 1000:
            raise ValueError(f"invalid storage key {_short(key)}")
        if isinstance(numel, bool) or not isinstance(numel, int) or not 0 <= numel <= MAX_NUMEL:
            raise ValueError(f"invalid storage size {_short(numel)}")
        return _Storage(storage_type.dtype, key, numel)


# -- class declarations, read as text from code/ --------------------------------------------

#: A class header, or a ``__parameters__``/``__buffers__`` list on one line. Linear on any text: each alternative
#: starts at a line start and no two quantifiers can share characters (``\s`` would span lines and backtrack
#: quadratically over blank lines or a header without a colon).
_DECLARATION_RE = re.compile(
    r"^(?:class[ \t]+(\w+)|[ \t]+(__parameters__|__buffers__)[ \t]*=[ \t]*\[([^\]\n]*)\])", re.MULTILINE
)
_QUOTED_RE = re.compile(r"\"([^\"\\\n]*)\"|'([^'\\\n]*)'")


def parse_declarations(source: str) -> dict[str, tuple[list[str], list[str]]]:
    """``{class name: (parameters, buffers)}`` from TorchScript's printed code (text only, never run): the first
    list of each kind after a class header. Linear time; ValueError for a list of more than :data:`_MAX_DECLARED`."""
    classes: dict[str, dict[str, list[str] | None]] = {}
    members: dict[str, list[str] | None] | None = None
    for m in _DECLARATION_RE.finditer(source):
        if m.group(1) is not None:
            members = classes[m.group(1)] = {"__parameters__": None, "__buffers__": None}
        elif members is not None and members[m.group(2)] is None:
            listed = m.group(3)
            if listed.count('"') + listed.count("'") > 2 * _MAX_DECLARED:
                raise ValueError(f"a {m.group(2)} list of more than {_MAX_DECLARED} names")
            members[m.group(2)] = [a or b for a, b in _QUOTED_RE.findall(listed)]
    return {name: (m["__parameters__"] or [], m["__buffers__"] or []) for name, m in classes.items()}


# -- the reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """A zip record: where its bytes start in the file when stored, else None (read via zipfile)."""

    info: zipfile.ZipInfo
    data_offset: int | None


class TorchScriptFile(Checkpoint):
    """A ``torch.jit.save`` archive: parameters and buffers by state-dict name, read without running it."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._identity = file_identity(self.path)
        #: Tensor attributes that are neither parameters nor buffers (not in ``state_dict()``), left out.
        self.attributes: list[str] = []
        #: Tensors not read, by name, with the reason (quantized, sparse …).
        self.skipped: dict[str, str] = {}
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._zf: zipfile.ZipFile | None = None
        self._work = 0
        self._seen: set[int] = set()  # containers already walked by _tensors_in (ids of objects the tree holds)
        self._code_bytes = 0
        try:
            self._open_zip()
            refs = self._load()
        except CheckpointError:
            self.close()
            raise
        except (Exception, RecursionError, MemoryError) as e:  # anything else a hostile archive provokes
            self.close()
            raise CheckpointError(self.path, f"malformed TorchScript archive: {first_line(e)}") from None
        self._refs = refs
        order = sorted(refs.items(), key=lambda kv: self._position(kv[0]))
        self._refs = dict(order)
        self._infos = [TensorInfo(n, r.size, r.storage.dtype, str(self.path)) for n, r in order]

    # -- opening ---------------------------------------------------------------------------

    def _open_zip(self) -> None:
        head = read_magic(self.path, 4)
        if head != _ZIP_MAGIC:
            what = "the file is empty" if not head else "not a zip archive"
            raise CheckpointError(self.path, f"not a TorchScript archive (torch.jit.save): {what}")
        try:
            self._zf = zipfile.ZipFile(self.path)
            infos = self._zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise CheckpointError(self.path, f"truncated or corrupt TorchScript zip: {first_line(e)}") from None
        self._records = {i.filename: i for i in infos}
        if len(self._records) != len(infos):  # which copy a reader sees depends on the reader
            seen: set[str] = set()
            twice = next(i.filename for i in infos if i.filename in seen or seen.add(i.filename))
            raise CheckpointError(self.path, f"record {short(twice)} appears twice in the zip directory")
        prefix = _archive_dir(list(self._records))
        if prefix is None:
            if any(n.endswith("/model.json") for n in self._records):
                raise CheckpointError(self.path, "a pre-1.4 TorchScript archive (model.json): not supported")
            raise CheckpointError(
                self.path,
                "not a TorchScript archive (torch.jit.save): it has no <archive>/data.pkl and <archive>/code/",
            )
        self._prefix = prefix
        self._file_size = self.path.stat().st_size
        self._located: dict[str, _Record] = {}

    def _read_record(self, name: str, limit: int) -> bytes:
        info = self._records.get(name)
        if info is None:
            raise CheckpointError(self.path, f"missing record {name!r}")
        if info.file_size > limit:
            raise CheckpointError(self.path, f"record {name!r} is {info.file_size} bytes (more than {limit})")
        self._check_ratio(info)
        try:
            with self._zf.open(info) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
            raise CheckpointError(self.path, f"cannot read record {name!r}: {first_line(e)}") from None
        if len(data) != info.file_size:
            raise CheckpointError(self.path, f"record {name!r}: truncated ({len(data)} of {info.file_size} bytes)")
        return data

    def _check_ratio(self, info: zipfile.ZipInfo) -> None:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 1024:
            raise CheckpointError(
                self.path,
                f"record {info.filename!r} claims {info.file_size} bytes from {info.compress_size} compressed",
            )

    def _unpickle(self, record: str) -> object:
        data = self._read_record(self._prefix + record, _MAX_PICKLE_BYTES)
        unpickler = _Unpickler(data)
        try:
            return unpickler.load()
        except _Refused as e:
            raise CheckpointError(
                self.path,
                f"refused: {record} asks for {e}, which a TorchScript module's state never needs. "
                "pytest-weights never runs code from a checkpoint",
            ) from None
        except (Exception, RecursionError, MemoryError) as e:
            raise CheckpointError(self.path, f"corrupt {record}: {first_line(e)}") from None

    def _load(self) -> dict[str, _TensorRef]:
        byteorder = self._prefix + "byteorder"
        self._byteorder = self._read_record(byteorder, 16).strip() if byteorder in self._records else b"little"
        if self._byteorder not in (b"little", b"big"):
            raise CheckpointError(self.path, f"unknown byteorder {self._byteorder!r:.40}")
        root = self._unpickle("data.pkl")
        if not isinstance(root, _ScriptObject):
            raise CheckpointError(self.path, f"data.pkl holds a {type(root).__name__}, not a TorchScript module")
        refs: dict[str, _TensorRef] = {}
        self._where: dict[str, str] = {}
        self._declarations: dict[str, dict[str, tuple[list[str], list[str]]] | None] = {}
        for name, value in self._walk(root):
            self._keep(refs, name, value, "data/")
        consts = self._unpickle("constants.pkl") if self._prefix + "constants.pkl" in self._records else ()
        if isinstance(consts, (tuple, list)):
            for i, value in enumerate(consts):
                if isinstance(value, (_TensorRef, _Unsupported)):
                    self._keep(refs, f"constants.{i}", value, "constants/")
        return refs

    def _keep(self, refs: dict[str, _TensorRef], name: str, value: object, directory: str) -> None:
        if isinstance(value, _Unsupported):
            self.skipped[name] = value.reason
            return
        if not isinstance(value, _TensorRef):
            raise CheckpointError(self.path, f"{_short(name)} is a {type(value).__name__[:40]}, not a tensor")
        if name in refs:
            raise CheckpointError(self.path, f"two tensors flatten to the same name {_short(name)}")
        self._where[name] = self._locate(directory, value.storage)
        # zero strides can make a tensor far larger than its storage: bounded by the file, like every reader
        check_expansion(self.path, name[:200], value.numel * value.storage.dtype.itemsize, self._file_size)
        refs[name] = value

    def _locate(self, directory: str, storage: _Storage) -> str:
        """Check that ``storage``'s record exists and holds its bytes; its record name ("" when empty)."""
        nbytes = storage.numel * storage.dtype.itemsize
        if nbytes == 0:
            return ""
        name = self._prefix + directory + storage.key
        if name in self._located:
            return name
        info = self._records.get(name)
        if info is None:
            raise CheckpointError(self.path, f"missing record {name!r} (storage of {storage.numel} {storage.dtype})")
        if info.file_size < nbytes:
            raise CheckpointError(
                self.path,
                f"record {name!r} holds {info.file_size} bytes but its storage of {storage.numel} "
                f"{str(storage.dtype).removeprefix('torch.')} needs {nbytes}",
            )
        self._check_ratio(info)
        offset = None
        if info.compress_type == zipfile.ZIP_STORED:
            offset = self._data_offset(info)
        self._located[name] = _Record(info, offset)
        return name

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where a stored record's bytes start: after its local header (validated against the file size)."""
        if not 0 <= info.header_offset <= self._file_size - 30:  # zipfile shifts offsets when bytes were cut
            raise CheckpointError(self.path, f"record {info.filename!r}: bad local header at {info.header_offset}")
        head = self._pread(info.header_offset, 30)
        if len(head) != 30 or head[:4] != _ZIP_MAGIC or info.compress_size != info.file_size:
            raise CheckpointError(self.path, f"record {info.filename!r}: bad local header at {info.header_offset}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > self._file_size:
            raise CheckpointError(
                self.path,
                f"truncated: record {info.filename!r} ends at byte {start + info.file_size} "
                f"but the file has {self._file_size}",
            )
        return start

    def _spend(self, n: int) -> None:
        """Count ``n`` values looked at while walking the module tree against :data:`_MAX_WORK`."""
        self._work += n
        if self._work > _MAX_WORK:
            raise CheckpointError(
                self.path, f"module tree holds more than {_MAX_WORK} values (counting shared references)"
            )

    def _walk(self, root: _ScriptObject) -> Iterator[tuple[str, object]]:
        """(state-dict name, tensor) for every parameter and buffer, module by module, then constants."""
        stack: list[tuple[str, object, int, frozenset[int]]] = [("", root, 0, frozenset())]
        visited = 0
        while stack:
            prefix, obj, depth, ancestors = stack.pop()
            visited += 1
            if visited > _MAX_NODES:
                raise CheckpointError(self.path, f"module tree has more than {_MAX_NODES} modules")
            if depth > _MAX_DEPTH or id(obj) in ancestors:
                raise CheckpointError(self.path, f"module tree nested more than {_MAX_DEPTH} deep, or cyclic")
            state = obj.state
            if not isinstance(state, dict):
                for name, _t in self._tensors_in(state, prefix + "__getstate__"):
                    self.skipped[name] = f"tensor in the custom state of {obj.qualname}"
                continue
            self._spend(len(state) + 1)
            odd = [type(k).__name__[:40] for k in state if not isinstance(k, str)][:1]
            if odd:  # str() of a name is only safe for strings
                raise CheckpointError(self.path, f"{obj.qualname} has an attribute named by a {odd[0]}, not a string")
            declared = self._declared(obj.qualname)
            if declared is None:  # no class declaration found: every tensor attribute
                members = [k for k, v in state.items() if isinstance(v, (_TensorRef, _Unsupported))]
            else:
                members = [k for k in (*declared[0], *declared[1]) if k in state]
            for key in members:
                value = state[key]
                if isinstance(value, (_TensorRef, _Unsupported)):
                    yield prefix + str(key), value
            kept = set(members)
            children = []
            for key, value in state.items():
                if isinstance(value, _ScriptObject):
                    children.append((f"{prefix}{key}.", value, depth + 1, ancestors | {id(obj)}))
                elif key not in kept:
                    self.attributes.extend(n for n, _ in self._tensors_in(value, prefix + key))
            stack.extend(reversed(children))

    def _tensors_in(self, value: object, name: str) -> Iterator[tuple[str, object]]:
        """Tensors inside a non-module value (a list of tensors, a custom class's state), by dotted name: at most 8
        levels deep, each container once (a memo bomb shares one list a billion times), every value looked at
        counted by :meth:`_spend`."""
        stack = [(value, name, 0)]
        while stack:
            value, name, depth = stack.pop()
            self._spend(1)
            if isinstance(value, (_TensorRef, _Unsupported)):
                yield name, value
                continue
            if depth >= 8 or not isinstance(value, (list, tuple, dict)) or id(value) in self._seen:
                continue
            self._seen.add(id(value))
            if isinstance(value, (list, tuple)):
                stack.extend((v, f"{name}.{i}", depth + 1) for i, v in reversed(list(enumerate(value))))
            else:
                self._spend(len(value))
                items = [
                    (v, f"{name}.{k if isinstance(k, str) else _short(k, 40)}", depth + 1) for k, v in value.items()
                ]
                stack.extend(reversed(items))

    def _declared(self, qualname: str) -> tuple[list[str], list[str]] | None:
        module, _, cls = qualname.rpartition(".")
        if module not in self._declarations:
            record = self._prefix + "code/" + module.replace(".", "/") + ".py"
            decls = None
            if record in self._records:
                raw = self._read_record(record, _MAX_CODE_BYTES)
                self._code_bytes += len(raw)
                if self._code_bytes > _MAX_CODE_TOTAL:
                    raise CheckpointError(self.path, f"more than {_MAX_CODE_TOTAL} bytes of code/ text")
                try:
                    decls = parse_declarations(raw.decode("utf-8", errors="replace"))
                except ValueError as e:
                    raise CheckpointError(self.path, f"record {record!r}: {e}") from None
            self._declarations[module] = decls
        decls = self._declarations[module]
        return None if decls is None else decls.get(cls)

    # -- reading ---------------------------------------------------------------------------

    def _position(self, name: str) -> tuple[int, int]:
        rec = self._located.get(self._where[name])
        return (rec.info.header_offset if rec else -1, self._refs[name].offset)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        ref = self.lookup(self._refs, name)
        begin, end = ref.span()
        if end == begin:
            return torch.empty(ref.size, dtype=ref.storage.dtype)
        try:
            return self._read(ref, self._located[self._where[name]], begin, end)
        except CheckpointError:
            raise
        except Exception as e:  # zlib.error, NotImplementedError (a compression method), OSError …
            raise CheckpointError(self.path, f"cannot read tensor {_short(name)}: {first_line(e)}") from None

    def _read(self, ref: _TensorRef, record: _Record, begin: int, end: int) -> torch.Tensor:
        dtype, itemsize = ref.storage.dtype, ref.storage.dtype.itemsize
        buf = torch.empty((end - begin) * itemsize, dtype=torch.uint8)
        if record.data_offset is not None:
            self._pread_into(buf, record.data_offset + begin * itemsize)
        else:
            self._unzip_into(buf, record.info, begin * itemsize)
        unit = itemsize // 2 if dtype.is_complex else itemsize
        if self._byteorder == b"big" and unit > 1:
            buf = buf.view(-1, unit).flip(1).reshape(-1)
        flat = buf.view(dtype)
        t = torch.as_strided(flat, ref.size, ref.stride, 0)
        if t.is_contiguous() and t.numel() == flat.numel():
            return t  # the whole private buffer
        return t.clone(memory_format=torch.contiguous_format)

    def _ensure_fd(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return self._fd

    def _pread(self, offset: int, n: int) -> bytes:
        return os.pread(self._ensure_fd(), n, offset)

    def _pread_into(self, buf: torch.Tensor, offset: int) -> None:
        pread_into(self._ensure_fd(), buf, offset, self.path)

    def _unzip_into(self, buf: torch.Tensor, info: zipfile.ZipInfo, offset: int) -> None:
        with self._lock:
            if self._zf is None:
                self._zf = zipfile.ZipFile(self.path)
            zf = self._zf
        with zf.open(info) as f:
            f.seek(offset)
            data = f.read(buf.numel())
        if len(data) != buf.numel():
            raise CheckpointError(self.path, f"record {info.filename!r} truncated")
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._zf is not None:
                self._zf.close()
                self._zf = None
