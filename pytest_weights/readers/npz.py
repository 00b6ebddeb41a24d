"""Reader for NumPy ``.npz`` archives (``numpy.savez`` / ``savez_compressed``).

Opened with ``numpy.load(allow_pickle=False)``, which is lazy: opening reads only each
member's ``.npy`` header (shape, dtype), and ``read(name)`` decompresses that one array.
Arrays of Python objects are refused (they can only be loaded by unpickling). Arrays whose
dtype has no torch equivalent (strings, records, dates) are not tensors and are skipped;
their names are in :attr:`NpzFile.skipped`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ._util import file_identity
from .base import Checkpoint, TensorInfo

SUFFIX = ".npz"
_NPY = ".npy"


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
        return np.lib.format.read_array_header_2_0(f)


class NpzFile(Checkpoint):
    """A ``.npz`` archive: each numeric array is a tensor, read on demand."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self._identity = file_identity(self.path)
        if self.path.stat().st_size == 0:
            raise CheckpointError(self.path, "not a .npz archive: the file is empty")
        if not zipfile.is_zipfile(self.path):
            raise CheckpointError(self.path, "not a .npz archive: not a zip file")
        self._npz: np.lib.npyio.NpzFile | None = self._open()
        #: Arrays that are not numeric (strings, records …), so not tensors.
        self.skipped: list[str] = []
        self._infos: list[TensorInfo] = []
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _open(self) -> np.lib.npyio.NpzFile:
        try:
            return np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise CheckpointError(self.path, f"not a readable .npz archive: {e}") from None

    def _scan(self) -> None:
        zf = self._npz.zip
        for info in zf.infolist():  # archive order is storage order
            if not info.filename.endswith(_NPY):
                continue
            name = info.filename[: -len(_NPY)]
            try:
                shape, _fortran, dtype = _read_header(zf, info)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise CheckpointError(self.path, f"array {name!r}: invalid .npy header ({e})") from None
            if dtype.hasobject:
                raise CheckpointError(
                    self.path,
                    f"refused: array {name!r} holds Python objects (dtype {dtype}), which can only be read by "
                    "unpickling; save numeric arrays only",
                )
            tdtype = _torch_dtype(dtype)
            if tdtype is None:
                self.skipped.append(name)
                continue
            numel = 1
            for s in shape:
                numel *= s
            if numel * dtype.itemsize > info.file_size:
                raise CheckpointError(
                    self.path,
                    f"truncated: array {name!r} of shape {list(shape)} {dtype} needs {numel * dtype.itemsize} bytes "
                    f"but its member holds {info.file_size}",
                )
            self._infos.append(TensorInfo(name, tuple(int(s) for s in shape), tdtype, str(self.path)))
        self._names = {i.name for i in self._infos}

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise CheckpointError(self.path, f"no tensor named {name!r}")
        if self._npz is None:  # closed: open again
            self._npz = self._open()
        try:
            arr = self._npz[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(self.path, f"cannot read array {name!r}: {e}") from None
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr = np.require(arr, requirements=["C_CONTIGUOUS", "WRITEABLE"])
        return torch.from_numpy(arr)

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None
