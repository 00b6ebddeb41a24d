"""Reader for ONNX models (``.onnx``), via the optional ``onnx`` package.

Install with ``pip install 'pytest-weights[onnx]'``. Only the protobuf is parsed: the graph
is never run, no operator (custom or not) is executed, and nothing is imported from the file.

Tensors: the graph's initializers and the tensor values of its ``Constant`` nodes
(converters such as paddle2onnx keep the weights there), including those of subgraphs
(``If``/``Loop``/``Scan`` bodies). An initializer is named as in the graph
(``model.0.conv.weight``, ``onnx::Conv_123``), a ``Constant`` by its output name.
float32/16/64, bfloat16 and float8 are read as they are stored; integer and bool tensors
are listed with their dtype (so statistics leave them out, visibly); strings, 4-bit and
sparse tensors are not tensors here and are listed in :attr:`OnnxFile.skipped`.

Layout: shapes are ONNX's own, nothing is transposed. Note that a ``MatMul`` weight is
``[in, out]`` (the transpose of PyTorch's ``nn.Linear.weight``), while ``Gemm`` with
``transB=1`` (what PyTorch exports for ``nn.Linear``) stores ``[out, in]``.

Memory: opening parses the whole ``ModelProto`` (like ``onnx.load``), so a model's
embedded tensor bytes are held in memory once, for as long as the reader is open (fine
for files up to a few hundred MB; protobuf caps a file at 2 GB anyway). Each ``read``
copies one tensor out. Tensors in external data files (``save_as_external_data``) are
not loaded at open: each ``read`` reads its byte range from the file next to the model,
after checking that it is a regular file inside the model's directory and that the range
lies within it.

Every problem — a truncated or corrupt protobuf, an external path that escapes the
directory or a range past the end of its file, a shape that disagrees with the data, a
negative or absurd dimension (even in an empty tensor) — is a :class:`CheckpointError`
naming the file, quoting names and values from the file briefly. ``tests/fuzz`` mutates
ONNX models at the protobuf level (docs/fuzzing.md).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch

from ..errors import CheckpointError
from ._util import MAX_NUMEL, combine_identities, file_identity, first_line, import_optional, read_magic, short
from .base import Checkpoint, TensorInfo

SUFFIX = ".onnx"

#: ONNX ``TensorProto.DataType`` codes (stable in the ONNX spec) → torch dtypes.
DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,  # FLOAT
    2: torch.uint8,  # UINT8
    3: torch.int8,  # INT8
    4: torch.uint16,  # UINT16
    5: torch.int16,  # INT16
    6: torch.int32,  # INT32
    7: torch.int64,  # INT64
    9: torch.bool,  # BOOL
    10: torch.float16,  # FLOAT16
    11: torch.float64,  # DOUBLE
    12: torch.uint32,  # UINT32
    13: torch.uint64,  # UINT64
    14: torch.complex64,  # COMPLEX64
    15: torch.complex128,  # COMPLEX128
    16: torch.bfloat16,  # BFLOAT16
    17: torch.float8_e4m3fn,  # FLOAT8E4M3FN
    18: torch.float8_e4m3fnuz,  # FLOAT8E4M3FNUZ
    19: torch.float8_e5m2,  # FLOAT8E5M2
    20: torch.float8_e5m2fnuz,  # FLOAT8E5M2FNUZ
}
_TYPE_NAMES = {8: "STRING", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2"}

# Which repeated field holds the values when raw_data is not used (ONNX's TensorProto docs).
_FLOAT_FIELD = {1, 14}
_DOUBLE_FIELD = {11, 15}
_INT64_FIELD = {7}
_UINT64_FIELD = {12, 13}
#: int32_data holds these as values (ints, bools) …
_INT32_VALUES = {2, 3, 4, 5, 6, 9}
#: … and these as bit patterns (16- and 8-bit floats).
_INT32_BITS = {10: np.uint16, 16: np.uint16, 17: np.uint8, 18: np.uint8, 19: np.uint8, 20: np.uint8}

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_NDIM = 64
_MAX_NUMEL = 1 << 48
_MAX_SUBGRAPH_DEPTH = 64
_CONSTANT_DOMAINS = ("", "ai.onnx")


def is_onnx_file(path: Path) -> bool:
    return path.is_file() and path.suffix == SUFFIX


@dataclass(frozen=True)
class _External:
    """Where an external tensor's bytes are: a file inside the model's directory and a range."""

    file: Path
    offset: int
    length: int


@dataclass(frozen=True)
class _Entry:
    """One tensor: its TensorProto (values inline) or its external location."""

    info: TensorInfo
    proto: object  # onnx.TensorProto
    external: _External | None


def _from_little_endian(data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bytes as ONNX stores them (raw_data, external files: little-endian) → a 1-D tensor of ``dtype``."""
    if dtype == torch.bool:
        return data != 0  # any nonzero byte is True, as numpy reads it
    unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
    if sys.byteorder == "big" and unit > 1:
        data = data.view(-1, unit).flip(1).reshape(-1)
    return data.view(dtype)


class OnnxFile(Checkpoint):
    """An ``.onnx`` model: initializers and ``Constant`` values, read without running the graph."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._onnx = import_optional(self.path, "onnx", ".onnx", "onnx")
        #: Tensors that are not read, by name, with the reason (strings, 4-bit, sparse, duplicates …).
        self.skipped: dict[str, str] = {}
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._model = self._load()
        self._entries: dict[str, _Entry] = {}
        try:
            self._scan(self._model.graph)
        except CheckpointError:
            raise
        except (Exception, RecursionError, MemoryError) as e:  # a proto that parsed but is malformed
            raise CheckpointError(self.path, f"malformed ONNX model: {first_line(e)}") from None
        files = [self.path, *sorted({e.external.file for e in self._entries.values() if e.external is not None})]
        self._identity = combine_identities(file_identity(f) for f in files)
        self._infos = [e.info for e in self._entries.values()]

    # -- opening ---------------------------------------------------------------------------

    def _load(self) -> object:
        head = read_magic(self.path, 1)
        if not head:
            raise CheckpointError(self.path, "not an ONNX model: the file is empty")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise CheckpointError(self.path, f"cannot read: {e.strerror or e}") from None
        try:
            # what onnx.load(path, load_external_data=False) does, in every onnx version: parse, load nothing else
            model = self._onnx.ModelProto()
            model.ParseFromString(data)
        except (Exception, RecursionError, MemoryError) as e:  # protobuf's DecodeError, or anything else
            raise CheckpointError(self.path, f"not a valid ONNX model, or truncated: {first_line(e)}") from None
        if not model.HasField("graph") or model.ir_version <= 0 or not len(model.opset_import):
            missing = [
                what
                for what, ok in (
                    ("graph", model.HasField("graph")),
                    ("ir_version", model.ir_version > 0),
                    ("opset_import", len(model.opset_import) > 0),
                )
                if not ok
            ]
            raise CheckpointError(
                self.path, f"not an ONNX model, or truncated: the protobuf has no {' or '.join(missing)}"
            )
        return model

    def _scan(self, graph: object) -> None:
        """Collect initializers and Constant values of ``graph`` and its subgraphs, in graph order."""
        GRAPH, GRAPHS, TENSOR = (
            self._onnx.AttributeProto.GRAPH,
            self._onnx.AttributeProto.GRAPHS,
            self._onnx.AttributeProto.TENSOR,
        )
        stack = [(graph, 0)]
        while stack:
            g, depth = stack.pop()
            if depth > _MAX_SUBGRAPH_DEPTH:
                raise CheckpointError(self.path, f"subgraphs nested more than {_MAX_SUBGRAPH_DEPTH} deep")
            for i, init in enumerate(g.initializer):
                self._add(init.name or f"{g.name or 'graph'}.initializer.{i}", init)
            for sparse in g.sparse_initializer:
                self.skipped[sparse.values.name or "sparse_initializer"] = "sparse initializer (not read)"
            subgraphs = []
            for node in g.node:
                if node.op_type == "Constant" and node.domain in _CONSTANT_DOMAINS:
                    self._add_constant(node, TENSOR)
                for attr in node.attribute:
                    if attr.type == GRAPH:
                        subgraphs.append(attr.g)
                    elif attr.type == GRAPHS:
                        subgraphs.extend(attr.graphs)
            # depth first, in node order
            stack.extend((sg, depth + 1) for sg in reversed(subgraphs))

    def _add_constant(self, node: object, tensor_type: int) -> None:
        name = node.output[0] if len(node.output) and node.output[0] else node.name or "Constant"
        make = self._onnx.TensorProto  # built directly: helper.make_tensor goes through Python lists
        for attr in node.attribute:
            if attr.name == "value" and attr.type == tensor_type:
                self._add(name, attr.t)
            elif attr.name == "value_float":
                self._add(name, make(name=name, data_type=1, float_data=[attr.f]))
            elif attr.name == "value_floats":
                t = make(name=name, data_type=1, dims=[len(attr.floats)])
                t.float_data.extend(attr.floats)
                self._add(name, t)
            elif attr.name == "value_int":
                self._add(name, make(name=name, data_type=7, int64_data=[attr.i]))
            elif attr.name == "value_ints":
                t = make(name=name, data_type=7, dims=[len(attr.ints)])
                t.int64_data.extend(attr.ints)
                self._add(name, t)
            elif attr.name == "sparse_value":
                self.skipped[name] = "sparse Constant (not read)"
            elif attr.name in ("value_string", "value_strings"):
                self.skipped[name] = "string Constant"

    def _add(self, name: str, t: object) -> None:
        if name in self._entries or name in self.skipped:
            self.skipped.setdefault(name + " (duplicate)", "a second tensor with the same name (the first is read)")
            return
        dtype = DTYPES.get(t.data_type)
        if dtype is None:
            kind = _TYPE_NAMES.get(t.data_type, f"unknown data_type {t.data_type}")
            self.skipped[name] = f"{kind} tensor (no torch dtype)"
            return
        if t.HasField("segment"):
            self.skipped[name] = "segmented tensor (not supported)"
            return
        dims = list(t.dims)
        if len(dims) > _MAX_NDIM:
            raise CheckpointError(self.path, f"tensor {short(name)}: {len(dims)} dimensions")
        if any(d < 0 for d in dims):
            raise CheckpointError(self.path, f"tensor {short(name)}: negative dimension in shape {dims}")
        if any(d > MAX_NUMEL for d in dims):  # even in an empty tensor: no real dimension is that large
            raise CheckpointError(self.path, f"tensor {short(name)}: absurd dimension in shape {dims}")
        numel = 1
        for d in dims:
            numel *= d
        if numel > _MAX_NUMEL:
            raise CheckpointError(self.path, f"tensor {short(name)}: absurd shape {dims} ({numel} elements)")
        nbytes = numel * dtype.itemsize
        external = None
        if t.data_location == _EXTERNAL:
            external = self._external(name, t, nbytes)
        else:
            self._check_inline(name, t, dims, numel, nbytes, dtype)
        info = TensorInfo(name, tuple(dims), dtype, str(self.path))
        self._entries[name] = _Entry(info, None if external else t, external)

    def _check_inline(self, name: str, t: object, dims: list[int], numel: int, nbytes: int, dtype: torch.dtype) -> None:
        code = t.data_type
        if t.HasField("raw_data"):
            have = len(t.raw_data)
            if have != nbytes:
                raise CheckpointError(
                    self.path,
                    f"tensor {short(name)}: shape {dims} of {dtype} needs {nbytes} bytes but raw_data holds {have}",
                )
            return
        field, per = self._typed_field(t)
        have = len(field) if field is not None else 0
        if have != numel * per:
            raise CheckpointError(
                self.path,
                f"tensor {short(name)}: shape {dims} has {numel} elements but the tensor holds {have // per} "
                f"(data_type {code})",
            )

    @staticmethod
    def _typed_field(t: object) -> tuple[object | None, int]:
        """The repeated field holding ``t``'s values, and how many entries make one element."""
        code = t.data_type
        if code in _FLOAT_FIELD:
            return t.float_data, 2 if code == 14 else 1
        if code in _DOUBLE_FIELD:
            return t.double_data, 2 if code == 15 else 1
        if code in _INT64_FIELD:
            return t.int64_data, 1
        if code in _UINT64_FIELD:
            return t.uint64_data, 1
        if code in _INT32_VALUES or code in _INT32_BITS:
            return t.int32_data, 1
        return None, 1

    def _external(self, name: str, t: object, nbytes: int) -> _External:
        fields = {e.key: e.value for e in t.external_data}
        location = fields.get("location", "")
        base = self.path.resolve().parent
        target = self._safe_location(name, location, base)
        try:
            offset = int(fields.get("offset", "0") or 0)
            length = int(fields["length"]) if fields.get("length") else nbytes
        except ValueError:
            raise CheckpointError(
                self.path,
                f"tensor {short(name)}: invalid external offset {short(fields.get('offset'))} "
                f"or length {short(fields.get('length'))}",
            ) from None
        if offset < 0 or length < 0:
            raise CheckpointError(
                self.path, f"tensor {short(name)}: negative external offset {short(offset)} or length {short(length)}"
            )
        if length != nbytes:
            raise CheckpointError(
                self.path,
                f"tensor {short(name)}: shape {list(t.dims)} needs {nbytes} bytes but its external data has length "
                f"{short(length)}",
            )
        try:
            st = target.stat()
        except OSError as e:
            raise CheckpointError(
                self.path, f"tensor {short(name)}: external data file {short(location)}: {e.strerror or e}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(
                self.path, f"tensor {short(name)}: external data {short(location)} is not a regular file"
            )
        if offset + length > st.st_size:
            raise CheckpointError(
                self.path,
                f"tensor {short(name)}: external data {short(location)} bytes {short(offset)}..{short(offset + length)}"
                f" are past the end of the file ({st.st_size} bytes)",
            )
        return _External(target, offset, length)

    def _safe_location(self, name: str, location: str, base: Path) -> Path:
        """``location`` as a file inside ``base``; a CheckpointError for anything that could escape it."""
        bad = (
            not location
            or "\0" in location
            or PurePosixPath(location).is_absolute()
            or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive
            or ".." in PurePosixPath(location.replace("\\", "/")).parts
        )
        if not bad:
            target = (base / location).resolve()
            bad = not target.is_relative_to(base)
        if bad:
            raise CheckpointError(
                self.path,
                f"tensor {short(name)}: refused external data location {short(location)}: it must be a relative path "
                "inside the model's directory",
            )
        return target

    # -- reading ---------------------------------------------------------------------------

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        entry = self.lookup(self._entries, name)
        info = entry.info
        if entry.external is not None:
            flat = self._read_external(name, entry.external)
        else:
            proto = entry.proto
            if proto is None:  # closed: parse again
                self._reopen()
                again = self._entries.get(name)
                if again is None or again.info != info or again.proto is None:
                    raise CheckpointError(self.path, f"tensor {short(name)} changed since the model was opened")
                proto = again.proto
            try:
                flat = self._inline(proto, info)
            except CheckpointError:
                raise
            except (Exception, MemoryError) as e:
                raise CheckpointError(self.path, f"cannot read tensor {short(name)}: {first_line(e)}") from None
        return flat.reshape(info.shape)

    def _inline(self, t: object, info: TensorInfo) -> torch.Tensor:
        dtype, code = info.dtype, t.data_type
        if t.HasField("raw_data"):
            raw = t.raw_data
            if len(raw) != info.nbytes:
                raise CheckpointError(self.path, f"tensor {short(info.name)}: raw_data changed size")
            if not raw:
                return torch.empty(0, dtype=dtype)
            return _from_little_endian(torch.frombuffer(bytearray(raw), dtype=torch.uint8), dtype)
        field, _per = self._typed_field(t)
        if code in _INT32_BITS:
            bits = np.asarray(field, dtype=np.int32).astype(_INT32_BITS[code])
            return torch.from_numpy(bits).view(dtype)
        if code == 14:
            return torch.from_numpy(np.asarray(field, dtype=np.float32).view(np.complex64).copy())
        if code == 15:
            return torch.from_numpy(np.asarray(field, dtype=np.float64).view(np.complex128).copy())
        if code == 9:
            return torch.from_numpy(np.asarray(field, dtype=np.int32) != 0)
        np_dtype = {
            torch.float32: np.float32,
            torch.float64: np.float64,
            torch.int64: np.int64,
            torch.uint64: np.uint64,
            torch.uint32: np.uint32,
            torch.int32: np.int32,
            torch.int16: np.int16,
            torch.uint16: np.uint16,
            torch.int8: np.int8,
            torch.uint8: np.uint8,
        }[dtype]
        return torch.from_numpy(np.asarray(field).astype(np_dtype, copy=True).reshape(-1))

    def _read_external(self, name: str, ext: _External) -> torch.Tensor:
        dtype = self._entries[name].info.dtype
        buf = torch.empty(ext.length, dtype=torch.uint8)
        if ext.length:
            view = memoryview(buf.numpy()).cast("B")
            try:
                fd = self._fd(ext.file)
                done = 0
                while done < ext.length:
                    n = os.preadv(fd, [view[done:]], ext.offset + done)
                    if n <= 0:
                        raise CheckpointError(
                            self.path,
                            f"tensor {short(name)}: external data {short(ext.file.name)} truncated at byte "
                            f"{ext.offset + done}",
                        )
                    done += n
            except OSError as e:
                raise CheckpointError(
                    self.path, f"tensor {short(name)}: cannot read external data {ext.file.name!r}: {e.strerror or e}"
                ) from None
        return _from_little_endian(buf, dtype)

    def _fd(self, file: Path) -> int:
        with self._lock:
            fd = self._fds.get(file)
            if fd is None:
                fd = self._fds[file] = os.open(file, os.O_RDONLY)
            return fd

    def _reopen(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            model = self._load()
            self._entries = {}
            self.skipped = {}
            try:
                self._scan(model.graph)
            except CheckpointError:
                raise
            except (Exception, RecursionError, MemoryError) as e:
                raise CheckpointError(self.path, f"malformed ONNX model: {first_line(e)}") from None
            self._model = model

    def close(self) -> None:
        """Drop the parsed model and close external data files (``read`` parses the model again)."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._model = None
            self._entries = {
                n: _Entry(e.info, None, e.external) if e.proto is not None else e for n, e in self._entries.items()
            }
