"""Remote files read locally, and ``torch.save`` archives at a URL.

:class:`DownloadedCheckpoint` copies a remote file that cannot be read by range to a temporary
file (saying so on stderr) and opens it with a given local reader; it is deleted on close.
:func:`open_torch_url` reads a ``torch.save`` zip archive by range and downloads anything else.
"""

from __future__ import annotations

import dataclasses
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import refuse
from .base import Checkpoint, TensorInfo
from .source import RangeFile, RemoteFile, RemotePath, download, remove
from .torch_file import _ZIP_MAGIC, RemoteTorchFile, TorchFile, torchscript_members
from .torchscript_file import TorchScriptFile


def open_torch_url(path: RemotePath, label: str | None = None) -> Checkpoint:
    """A :class:`TorchFile`; at a URL, a zip archive by range (:class:`RemoteTorchFile`), anything else
    (a legacy pickle, a TorchScript archive) downloaded first and said so."""
    source = RemoteFile(path)
    if source.read(0, min(4, source.size)) != _ZIP_MAGIC:
        return DownloadedCheckpoint(
            path, "a legacy (non-zip) torch.save file cannot be read by range", TorchFile, label
        )
    with refuse(path, "truncated or corrupt torch.save archive"), zipfile.ZipFile(RangeFile(source)) as z:
        members = z.infolist()
    if torchscript_members([m.filename for m in members]):
        return DownloadedCheckpoint(path, "a TorchScript archive is read from a local file", TorchScriptFile, label)
    return RemoteTorchFile(path, label, source, members)


class DownloadedCheckpoint(Checkpoint):
    """A remote file copied to a temporary file and opened with the local reader of its format."""

    def __init__(
        self, path: RemotePath, why: str, opener: Callable[[Path], Checkpoint], label: str | None = None
    ) -> None:
        self.path = path
        self.label = label or path.name
        self._identity = path.identity()
        self.local = download(path, why)
        self._cleanup = weakref.finalize(self, remove, self.local)
        try:
            with self._renamed():
                self.inner = opener(self.local)
        except BaseException:
            self._cleanup()
            raise
        self._infos = [dataclasses.replace(i, file=str(path)) for i in self.inner.tensors()]

    def _renamed(self):
        return _Renamed(self.path, str(self.local))

    @property
    def metadata(self) -> dict:
        return getattr(self.inner, "metadata", {})

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        with self._renamed():
            return self.inner.read(name)

    def identity(self) -> str:
        return self._identity

    def close(self) -> None:
        self.inner.close()
        self._cleanup()


class _Renamed:
    """Re-raise a local reader's CheckpointError about the temporary file as one about the URL."""

    def __init__(self, path: RemotePath, local: str) -> None:
        self.path, self.local = path, local

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, CheckpointError):
            message = exc.message.replace(self.local, str(self.path))
            raise CheckpointError(self.path, message) from None
        return False
