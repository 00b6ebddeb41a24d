"""Reader for one ``.safetensors`` file: a validated header and bounded, copy-once reads.

The header is parsed and checked here (not trusted): its length, its JSON, every dtype,
shape and byte range must be consistent with the file's size, so a truncated or lying
file is refused before any tensor is read. A tensor is a private (copy-on-write) memory
map of its bytes: no copy, pages come from the page cache as they are touched, writes (if
any) never reach the file, and the mapping goes away with the tensor, so memory is
bounded by the tensors in use, not by the file. Where mapping is not possible (a
misaligned tensor, a file system without mmap) the bytes are read with ``preadv``.

A file that is truncated *while* one of its tensors is mapped and being read (rewritten in
place by another process) makes the reading process fail with SIGBUS, as with
``safetensors.safe_open`` or ``torch.load(mmap=True)``; the sizes are checked before
each tensor is mapped. Write new checkpoints to new paths (or rename them into place).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import check_shape, file_identity, load_json, refuse, short
from .base import Checkpoint, TensorInfo
from .source import ByteSource, LocalFile, RemoteFile, RemotePath, as_path

#: safetensors dtype codes → torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
}

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
#: Bytes fetched by the first request for a remote header (most headers fit; a longer one takes a second).
HEADER_PROBE = 64 * 1024


def parse_header(path: Path | RemotePath, source: ByteSource | None = None) -> tuple[int, dict[str, dict], bytes]:
    """Read and validate the header; return (data start, entries, raw header bytes).

    The rules are the ``safetensors`` library's own: a UTF-8 JSON object (here also: no key twice, nesting at
    most 64 levels), ``__metadata__`` a string-to-string map, every tensor a known dtype, a shape of non-negative
    integers and ``data_offsets`` spanning exactly its bytes, the tensors' byte ranges back to back from the
    start of the data section to the end of the file (no gap, no overlap, no trailing bytes). A remote file's
    header is fetched with one range request (two when it is longer than :data:`HEADER_PROBE`).
    """
    if source is None:
        source = LocalFile(path) if isinstance(path, Path) else RemoteFile(path)
    try:
        size = source.size
        head = source.read(0, min(size, HEADER_PROBE if isinstance(source, RemoteFile) else 8))
        if len(head) < 8:
            raise CheckpointError(path, f"not a safetensors file: only {size} bytes")
        (n,) = struct.unpack("<Q", head[:8])
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(
                path,
                f"not a safetensors file, or truncated: header length {n} bytes but the file has {size} bytes",
            )
        raw = head[8 : 8 + n]
        if len(raw) < n:
            raw += source.read(8 + len(raw), n - len(raw))
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    if len(raw) != n:
        raise CheckpointError(path, f"truncated while reading: header of {n} bytes, read {len(raw)}")
    header = load_json(path, raw, "safetensors header", constants=False)
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file: header is not a JSON object")
    _check_metadata(path, header.get("__metadata__"))
    start = 8 + n
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in entries.items():
        _check_entry(path, name, entry, size - start)
    _check_layout(path, entries, size - start)
    return start, entries, raw


def _check_metadata(path: Path, metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(path, "invalid header: __metadata__ must map names to strings")


def _check_entry(path: Path, name: str, entry: object, data_size: int) -> None:
    if not isinstance(entry, dict):
        raise CheckpointError(path, f"tensor {name!r}: header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(path, f"tensor {name!r}: unknown dtype {short(dtype)}")
    shape = check_shape(path, name, shape)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CheckpointError(path, f"tensor {name!r}: invalid data_offsets {short(offsets)}")
    begin, end = offsets
    numel = 1
    for s in shape:
        numel *= s
    expected = numel * DTYPES[dtype].itemsize
    if not 0 <= begin <= end or end - begin != expected:
        raise CheckpointError(
            path,
            f"tensor {name!r}: data_offsets {offsets} do not match shape {list(shape)} of {dtype} ({expected} bytes)",
        )
    if end > data_size:
        raise CheckpointError(
            path,
            f"truncated: tensor {name!r} ends at byte {end} of the data section "
            f"but the file holds only {data_size} bytes of data",
        )


def _check_layout(path: Path, entries: dict[str, dict], data_size: int) -> None:
    """The byte ranges must tile the data section exactly: in offset order, each starts where the last ended."""
    cursor, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda kv: (*kv[1]["data_offsets"], kv[0])):
        begin, end = entry["data_offsets"]
        if begin < cursor:
            raise CheckpointError(
                path,
                f"lying header: tensors {previous!r} and {name!r} share bytes {begin}..{min(end, cursor)} "
                "of the data section (overlapping data_offsets)",
            )
        if begin > cursor:
            raise CheckpointError(
                path,
                f"invalid header: bytes {cursor}..{begin} of the data section belong to no tensor "
                f"(gap before {name!r}; safetensors tensors are stored back to back)",
            )
        if end > begin:
            cursor, previous = end, name
    if cursor != data_size:
        raise CheckpointError(
            path,
            f"invalid header: {data_size - cursor} bytes after the last tensor's data "
            "(safetensors data must end the file)",
        )


class SafetensorsFile(Checkpoint):
    """One ``.safetensors`` file (a local path or a URL), opened read-only."""

    def __init__(self, path: str | Path | RemotePath, label: str | None = None) -> None:
        self.path = as_path(path)
        self.label = label or self.path.name
        self._source: ByteSource = LocalFile(self.path) if isinstance(self.path, Path) else RemoteFile(self.path)
        with refuse(self.path, "not a readable safetensors file"):
            self._start, self._entries, raw = parse_header(self.path, self._source)
        self._file_identity = file_identity(self.path)
        self._identity = f"{self._file_identity}:{hashlib.sha256(raw).hexdigest()[:16]}"
        order = sorted(self._entries.items(), key=lambda kv: kv[1]["data_offsets"][0])
        self._infos = [TensorInfo(name, tuple(e["shape"]), DTYPES[e["dtype"]], str(self.path)) for name, e in order]

    @property
    def source(self) -> ByteSource:
        """Where the bytes come from (a :class:`RemoteFile` counts what it fetched)."""
        return self._source

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def changed(self) -> bool:
        if not isinstance(self.path, Path):
            return False  # read by copy: each tensor's bytes come from one response
        try:
            return file_identity(self.path) != self._file_identity
        except CheckpointError:
            return True  # gone or unreadable

    def read(self, name: str) -> torch.Tensor:
        entry = self.lookup(self._entries, name)
        with self.reading(name):
            return self._read(entry)

    def _read(self, entry: dict) -> torch.Tensor:
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        if end == begin:
            return torch.empty(entry["shape"], dtype=dtype)
        return self._source.tensor(self._start + begin, end - begin, dtype).reshape(entry["shape"])

    def close(self) -> None:
        self._source.close()
