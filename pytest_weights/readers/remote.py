"""Checkpoints at a URL (``s3://``, ``gs://``, ``http(s)://`` … through fsspec): which reader, and the fallback.

Formats laid out for range reads are read in place: safetensors (the header, then each selected tensor's byte
range, once), ``*.index.json`` and its shards, Hugging Face model directories, and ``torch.save`` zip archives
(the central directory and the pickle, then each tensor's bytes). A format that needs the whole file (a legacy
torch pickle, TorchScript, NumPy ``.npz``, GGUF, ONNX) is downloaded to a temporary file first, with a line on
stderr saying so; it is deleted when the checkpoint is closed.
"""

from __future__ import annotations

from ..errors import CheckpointError
from .base import Checkpoint
from .downloaded import DownloadedCheckpoint, open_torch_url
from .local import open_local
from .safetensors_file import SafetensorsFile
from .sharded import INDEX_SUFFIX, ShardedCheckpoint, is_model_dir, open_model_dir
from .source import RemotePath
from .torch_file import SUFFIXES as TORCH_SUFFIXES


def open_remote(path: RemotePath) -> Checkpoint:
    """Open the checkpoint at a URL; CheckpointError (naming the redacted URL) when it cannot be."""
    if path.is_file():
        if path.suffix == ".safetensors":
            return SafetensorsFile(path)
        if path.name.endswith(INDEX_SUFFIX):
            return ShardedCheckpoint(path)
        if path.suffix in TORCH_SUFFIXES:
            return open_torch_url(path)
        return DownloadedCheckpoint(path, "this format is read from a local file", open_local)
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
