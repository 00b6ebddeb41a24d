"""Reader for NumPy ``.npz`` archives (``numpy.savez`` / ``savez_compressed``).

Read with :mod:`zipfile` and ``numpy.lib.format`` (never unpickling): opening reads only each
member's ``.npy`` header (shape, dtype), and ``read(name)`` decompresses that one array.
Arrays of Python objects are refused (they can only be loaded by unpickling). Arrays whose
dtype has no torch equivalent (strings, records, dates) are not tensors and are skipped;
their names are in :attr:`NpzFile.skipped`.

The archive is checked before anything is allocated: member names are unique, members are
stored or deflated (what NumPy writes), each array's bytes fit in its member's declared size,
and that size is one deflate could produce from the member's compressed bytes (at most
~1032:1), so a lying directory or a decompression bomb is refused, not allocated.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ._util import check_shape, file_identity, refuse, short
from .base import Checkpoint, TensorInfo

SUFFIX = ".npz"
_NPY = ".npy"
#: Deflate's best ratio is about 1032:1 (258-byte matches coded in 2 bits); beyond it a member's size lies.
_DEFLATE_RATIO = 1033
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def is_npz_file(path: Path) -> bool:
    return path.is_file() and path.suffix == SUFFIX


def _torch_dtype(dtype: np.dtype) -> torch.dtype | None:
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        return None
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype
    except TypeError:  # e.g. float128
        return None


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], bool, np.dtype]:
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)  # 2.0 and 3.0 differ only in the header's text encoding


class NpzFile(Checkpoint):
    """A ``.npz`` archive: each numeric array is a tensor, read on demand."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._identity = file_identity(self.path)
        self._size = self.path.stat().st_size
        if self._size == 0:
            raise CheckpointError(self.path, "not a .npz archive: the file is empty")
        if not zipfile.is_zipfile(self.path):
            raise CheckpointError(self.path, "not a .npz archive: not a zip file")
        self._zip: zipfile.ZipFile | None = self._open()
        #: Arrays that are not numeric (strings, records …), so not tensors.
        self.skipped: list[str] = []
        self._infos: list[TensorInfo] = []
        self._members: dict[str, zipfile.ZipInfo] = {}
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _open(self) -> zipfile.ZipFile:
        with refuse(self.path, "not a readable .npz archive"):
            return zipfile.ZipFile(self.path)

    def _scan(self) -> None:
        seen: set[str] = set()
        for info in self._zip.infolist():  # archive order is storage order
            if info.filename in seen:
                raise CheckpointError(self.path, f"two archive members named {short(info.filename)}")
            seen.add(info.filename)
            if not info.filename.endswith(_NPY):
                continue
            name = info.filename[: -len(_NPY)]
            self._check_member(name, info)
            with refuse(self.path, f"array {name!r}: invalid .npy header"):
                shape, _fortran, dtype = _read_header(self._zip, info)
            self._add(name, info, check_shape(self.path, name, shape), dtype)
        self._names = {i.name for i in self._infos}

    def _check_member(self, name: str, info: zipfile.ZipInfo) -> None:
        """The member's sizes are ones NumPy could have written and fit in the file."""
        method = _METHODS.get(info.compress_type)
        if method is None:
            raise CheckpointError(self.path, f"array {name!r}: compression method {info.compress_type} (not NumPy's)")
        if info.header_offset + info.compress_size > self._size:
            raise CheckpointError(
                self.path, f"truncated: array {name!r} needs bytes up to {info.header_offset + info.compress_size}"
            )
        limit = info.compress_size if method == "stored" else info.compress_size * _DEFLATE_RATIO + 64
        if info.file_size > limit:
            raise CheckpointError(
                self.path,
                f"lying archive: array {name!r} claims {info.file_size} bytes from {info.compress_size} {method} bytes",
            )

    def _add(self, name: str, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.hasobject:
            raise CheckpointError(
                self.path,
                f"refused: array {name!r} holds Python objects (dtype {dtype}), which can only be read by "
                "unpickling; save numeric arrays only",
            )
        tdtype = _torch_dtype(dtype)
        if tdtype is None:
            self.skipped.append(name)
            return
        numel = 1
        for s in shape:
            numel *= s
        if numel * dtype.itemsize > info.file_size:
            raise CheckpointError(
                self.path,
                f"truncated: array {name!r} of shape {list(shape)} {dtype} needs {numel * dtype.itemsize} bytes "
                f"but its member holds {info.file_size}",
            )
        self._members[name] = info
        self._infos.append(TensorInfo(name, shape, tdtype, str(self.path)))

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise self.missing(name)
        if self._zip is None:  # closed: open again
            self._zip = self._open()
        with refuse(self.path, f"cannot read array {name!r}"), self._zip.open(self._members[name]) as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
            if not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            arr = np.require(arr, requirements=["C_CONTIGUOUS", "WRITEABLE"])
            return torch.from_numpy(arr)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
