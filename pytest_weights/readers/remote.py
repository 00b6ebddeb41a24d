"""Checkpoints at a URL (``s3://``, ``gs://``, ``http(s)://`` … through fsspec): which reader, and the fallback.

Formats laid out for range reads are read in place: safetensors (the header, then each selected tensor's byte
range, once), ``*.index.json`` and its shards, Hugging Face model directories, and ``torch.save`` zip archives
(the central directory and the pickle, then each tensor's bytes). A format that needs the whole file (a legacy
torch pickle, TorchScript, NumPy ``.npz``, GGUF, ONNX) is downloaded to a temporary file first, with a line on
stderr saying so; it is deleted when the checkpoint is closed.
"""

from __future__ import annotations

import dataclasses
import weakref

import torch

from ..errors import CheckpointError
from .base import Checkpoint, TensorInfo
from .safetensors_file import SafetensorsFile
from .sharded import INDEX_SUFFIX, ShardedCheckpoint, is_model_dir, open_model_dir
from .source import RemotePath, download, remove
from .torch_file import SUFFIXES as TORCH_SUFFIXES
from .torch_file import open_torch_file


def open_remote(path: RemotePath) -> Checkpoint:
    """Open the checkpoint at a URL; CheckpointError (naming the redacted URL) when it cannot be."""
    if path.is_file():
        if path.suffix == ".safetensors":
            return SafetensorsFile(path)
        if path.name.endswith(INDEX_SUFFIX):
            return ShardedCheckpoint(path)
        if path.suffix in TORCH_SUFFIXES:
            return open_torch_file(path)
        return DownloadedCheckpoint(path, "this format is read from a local file")
    if path.is_dir():
        if is_model_dir(path):
            return open_model_dir(path)
        from ..runs import discover_run

        run = discover_run(path)
        if run is not None:
            raise CheckpointError(path, run.not_one_checkpoint())
        raise CheckpointError(
            path,
            "not a checkpoint this plugin can read by URL: a directory URL must be a Hugging Face model directory "
            "(model.safetensors, model.safetensors.index.json, pytorch_model.bin, or pytorch_model.bin.index.json)",
        )
    raise CheckpointError(path, "not found (no such file or object, HTTP 404)")


class DownloadedCheckpoint(Checkpoint):
    """A remote file copied to a temporary file and opened with the local reader of its format."""

    def __init__(self, path: RemotePath, why: str, label: str | None = None) -> None:
        from . import open_checkpoint

        self.path = path
        self.label = label or path.name
        self._identity = path.identity()
        self.local = download(path, why)
        self._cleanup = weakref.finalize(self, remove, self.local)
        try:
            with self._renamed():
                self.inner = open_checkpoint(self.local)
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
