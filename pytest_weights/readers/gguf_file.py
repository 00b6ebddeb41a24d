"""Reader for GGUF files (llama.cpp); types and dequantization from the optional ``gguf`` package.

Install with ``pip install 'pytest-weights[gguf]'``. The header is parsed and validated here
(not by ``gguf.GGUFReader``, whose loops trust the counts in the file): every count and length
must fit in the file before it is used, keys and names must be UTF-8 and unique, and the
tensors must be laid out as ggml itself requires (in header order, each at the aligned end of
the previous one, inside the file). The file is memory-mapped read-only; ``read(name)`` copies
or dequantizes one tensor.

Types: F32, F16, BF16, F64 and the integer types are read as they are stored. Quantized
types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q8_K, the IQ types …) are dequantized with
``gguf.quants.dequantize`` and reported as ``torch.float32`` (the dtype of what ``read``
returns); the stored type is in :attr:`GGUFFile.tensor_types`. A type that the installed
``gguf`` cannot dequantize gives a :class:`CheckpointError` when read.

Shape convention: GGUF stores dimensions fastest-varying first (ggml's ``ne``), the reverse
of PyTorch/NumPy. Shapes here are in **PyTorch order** (``ne`` reversed), so a tensor
written from a PyTorch ``(out_features, in_features)`` weight — as llama.cpp's converters
and ``GGUFWriter.add_tensor(name, array)`` do — reads back as ``(out_features, in_features)``.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ._util import check_shape, file_identity, import_optional, read_magic, refuse, short
from .base import Checkpoint, TensorInfo

SUFFIX = ".gguf"
_MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_NESTING = 8

#: GGUF types stored as plain arrays → torch dtype.
PLAIN_TYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
}
_NUMPY_TYPES = {"F64": "f8", "F32": "f4", "F16": "f2", "BF16": "i2", "I64": "i8", "I32": "i4", "I16": "i2", "I8": "i1"}

#: Metadata value types (GGUFValueType) → struct format; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


def is_gguf_file(path: Path) -> bool:
    return path.is_file() and path.suffix == SUFFIX


@dataclass(frozen=True)
class _Tensor:
    name: str
    dims: tuple[int, ...]  # ggml order (ne), fastest-varying first
    type: int
    offset: int  # from the start of the data section


class _Header:
    """A bounded walk over a GGUF header: every length is checked against the bytes left before use."""

    def __init__(self, path: Path, buf: mmap.mmap | bytes) -> None:
        self.path, self.buf, self.pos = path, buf, 4
        (version,) = struct.unpack_from("<I", buf, 4) if len(buf) >= 8 else (0,)
        self.order = "<" if version & 0xFFFF else ">"  # a zero low half: written on a big-endian machine
        self.version = self.take("I")
        if self.version not in VERSIONS:
            raise CheckpointError(path, f"GGUF version {self.version} is not supported (versions {VERSIONS})")

    def take(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise CheckpointError(self.path, f"truncated GGUF header at byte {self.pos}")
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def count(self, min_item_bytes: int, what: str) -> int:
        """A uint64 count of items of at least ``min_item_bytes`` each: refused if they cannot fit in the file."""
        n = self.take("Q")
        if n * min_item_bytes > len(self.buf) - self.pos:
            raise CheckpointError(self.path, f"invalid GGUF header: {n} {what} cannot fit in the file")
        return n

    def text(self, what: str) -> str:
        n = self.count(1, f"bytes of {what}")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(self.path, f"invalid GGUF header: {what} {short(raw)} is not UTF-8") from None

    def skip_value(self, vtype: int, depth: int = 0) -> None:
        if vtype in _SCALARS:
            self.take(_SCALARS[vtype])
        elif vtype == _STRING:
            n = self.count(1, "string bytes")  # (not `self.pos += self.count(…)`: count() moves pos first)
            self.pos += n
        elif vtype == _ARRAY:
            if depth >= _MAX_ARRAY_NESTING:
                raise CheckpointError(self.path, f"invalid GGUF header: arrays nested deeper than {depth}")
            itype = self.take("I")
            if itype in _SCALARS:
                size = struct.calcsize(_SCALARS[itype])
                n = self.count(size, "array items")
                self.pos += n * size
            else:
                for _ in range(self.count(8 if itype == _STRING else 12, "array items")):
                    self.skip_value(itype, depth + 1)
        else:
            raise CheckpointError(self.path, f"invalid GGUF header: unknown value type {vtype} at byte {self.pos}")

    def parse(self) -> tuple[int, list[_Tensor], int]:
        """(absolute start of the data section, tensors in header order, alignment)."""
        n_tensors = self.take("Q")
        n_kv = self.count(13, "metadata entries")  # key length, type, one byte of value
        if n_tensors * 24 > len(self.buf) - self.pos:
            raise CheckpointError(self.path, f"invalid GGUF header: {n_tensors} tensors cannot fit in the file")
        alignment, keys = DEFAULT_ALIGNMENT, set()
        for _ in range(n_kv):
            key = self.text("metadata key")
            if key in keys:
                raise CheckpointError(self.path, f"invalid GGUF header: metadata key {key!r} twice")
            keys.add(key)
            vtype = self.take("I")
            if key == "general.alignment":
                if vtype != _UINT32:
                    raise CheckpointError(self.path, "invalid GGUF header: general.alignment is not a uint32")
                alignment = self.take("I")
                if alignment == 0 or alignment & (alignment - 1):
                    raise CheckpointError(self.path, f"invalid GGUF header: alignment {alignment} is not a power of 2")
            else:
                self.skip_value(vtype)
        tensors = [self.tensor() for _ in range(n_tensors)]
        return self.pos + (-self.pos % alignment), tensors, alignment

    def tensor(self) -> _Tensor:
        name = self.text("tensor name")
        n_dims = self.take("I")
        if n_dims > MAX_DIMS:
            raise CheckpointError(self.path, f"tensor {name!r}: {n_dims} dimensions (GGUF allows {MAX_DIMS})")
        dims = tuple(self.take("Q") for _ in range(n_dims))
        return _Tensor(name, check_shape(self.path, name, list(dims)), self.take("I"), self.take("Q"))


class GGUFFile(Checkpoint):
    """A ``.gguf`` file: plain tensors as stored, quantized ones dequantized to float32."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._gguf = import_optional(self.path, "gguf", ".gguf", "gguf")
        head = read_magic(self.path, 4)
        if head != _MAGIC:
            what = "the file is empty" if not head else f"it starts with {head!r}, not {_MAGIC!r}"
            raise CheckpointError(self.path, f"not a GGUF file: {what}")
        self._identity = file_identity(self.path)
        self._map: mmap.mmap | None = self._open()
        try:
            with refuse(self.path, "not a valid GGUF file"):
                header = _Header(self.path, self._map)
                self._big_endian = header.order == ">"
                self._data_start, tensors, alignment = header.parse()
                self._layout(tensors, alignment)
        except BaseException:
            self.close()
            raise

    def _open(self) -> mmap.mmap:
        with refuse(self.path, "cannot map the file"), self.path.open("rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def _layout(self, tensors: list[_Tensor], alignment: int) -> None:
        """Check types and ggml's layout (back to back in header order, aligned, inside the file); list tensors."""
        Q = self._gguf.GGMLQuantizationType
        #: Stored GGML type of each tensor, e.g. ``{"blk.0.attn_q.weight": "Q4_K"}``.
        self.tensor_types: dict[str, str] = {}
        self._by_name: dict[str, tuple[_Tensor, int]] = {}
        infos, expected = [], 0
        for t in tensors:
            if t.type not in Q._value2member_map_ or Q(t.type) not in self._gguf.GGML_QUANT_SIZES:
                raise CheckpointError(self.path, f"tensor {t.name!r}: unknown GGML type {t.type}")
            qtype = Q(t.type)
            block, type_size = self._gguf.GGML_QUANT_SIZES[qtype]
            if t.dims and t.dims[0] % block:
                raise CheckpointError(
                    self.path, f"tensor {t.name!r}: {t.dims[0]} values per row are not whole {qtype.name} blocks"
                )
            numel = 1
            for d in t.dims:
                numel *= d
            nbytes = numel // block * type_size
            if t.offset != expected:
                raise CheckpointError(
                    self.path, f"tensor {t.name!r}: data at offset {t.offset}, but ggml's layout puts it at {expected}"
                )
            end = self._data_start + t.offset + nbytes
            if end > len(self._map):
                raise CheckpointError(
                    self.path, f"truncated: tensor {t.name!r} ends at byte {end} but the file has {len(self._map)}"
                )
            if t.name in self._by_name:
                raise CheckpointError(self.path, f"two tensors named {t.name!r}")
            expected += nbytes + (-nbytes % alignment)
            self._by_name[t.name] = (t, nbytes)
            self.tensor_types[t.name] = qtype.name
            shape = tuple(reversed(t.dims))
            infos.append(TensorInfo(t.name, shape, PLAIN_TYPES.get(qtype.name, torch.float32), str(self.path)))
        self._infos = infos

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        t, nbytes = self.lookup(self._by_name, name)
        if self._map is None:  # closed: map again
            self._map = self._open()
            if len(self._map) < self._data_start + t.offset + nbytes:
                raise CheckpointError(self.path, "truncated since it was opened")
        qtype = self._gguf.GGMLQuantizationType(t.type)
        shape = tuple(reversed(t.dims))
        raw = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=self._data_start + t.offset)
        try:
            with refuse(self.path, f"cannot read tensor {name!r} ({qtype.name})"):
                return self._decode(raw, qtype, shape)
        except CheckpointError as e:
            if isinstance(e.__context__, NotImplementedError):
                raise CheckpointError(
                    self.path, f"tensor {name!r}: the installed gguf package cannot dequantize {qtype.name}"
                ) from None
            raise

    def _decode(self, raw: np.ndarray, qtype: object, shape: tuple[int, ...]) -> torch.Tensor:
        if qtype.name in PLAIN_TYPES:
            arr = raw.view((">" if self._big_endian else "<") + _NUMPY_TYPES[qtype.name]).reshape(shape)
            arr = arr.astype(arr.dtype.newbyteorder("="), copy=True)
            out = torch.from_numpy(arr)
            return out.view(torch.bfloat16) if qtype.name == "BF16" else out
        byte_shape = self._gguf.quants.quant_shape_to_byte_shape(shape, qtype)
        with np.errstate(all="ignore"):  # garbage scales give inf/NaN: the checks report them, numpy need not
            values = self._gguf.quants.dequantize(raw.reshape(byte_shape), qtype)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(shape))

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still exported: the mapping goes with it
                self._map.close()
            self._map = None
