"""Checkpoint readers: ``open_checkpoint(path)`` picks the format from the path.

Each format is one module with a ``Checkpoint`` subclass; :data:`.local.FORMATS` lists them
in the order they are tried, each as (name, ``detect(path) -> bool``, ``open(path)``). The base
class (:mod:`.base`) owns what every reader shares: finding a tensor by name
(:meth:`Checkpoint.lookup`, the ``no tensor named …`` error) and turning a failed read into a
one-line ``cannot read tensor …`` error (:meth:`Checkpoint.reading`).

A URL (``s3://``, ``gs://``, ``http(s)://`` …) is opened by :mod:`.remote` over the byte
sources of :mod:`.source` (fsspec, imported only then).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from .base import FLOAT_DTYPES, Checkpoint, TensorInfo
from .dcp import DistributedCheckpoint
from .gguf_file import GGUFFile
from .local import FORMATS, detect_local, is_checkpoint, open_local
from .npz import NpzFile
from .onnx_file import OnnxFile
from .peft import AdapterConfig, PeftAdapter
from .safetensors_file import SafetensorsFile
from .sharded import ShardedCheckpoint
from .source import RemotePath, as_path, is_url, redact
from .torch_file import TorchFile
from .torchscript_file import TorchScriptFile


def detect_format(path: str | Path | RemotePath) -> str | None:
    """The name of the first format in :data:`FORMATS` that recognises ``path``, or None (a URL: "remote")."""
    p = as_path(path)
    if isinstance(p, RemotePath):  # a file, or a model directory; another prefix may be a run (runs.py)
        return "remote" if is_checkpoint(p) else None
    return detect_local(p)


def open_checkpoint(path: str | Path | RemotePath) -> Checkpoint:
    """Open a checkpoint read-only (a path, or a URL such as ``s3://bucket/model.safetensors``);
    raise :class:`CheckpointError` naming the path (a URL without its credentials). A directory
    of a run's checkpoints is refused with a hint to pass one of them."""
    p = as_path(path)
    if isinstance(p, RemotePath):
        from .remote import open_remote

        return open_remote(p)
    try:
        return open_local(p)
    except CheckpointError:
        if p.is_dir():
            from ..runs import discover_run

            run = discover_run(p)
            if run is not None:
                raise CheckpointError(p, run.not_one_checkpoint()) from None
        raise


__all__ = [
    "FLOAT_DTYPES",
    "FORMATS",
    "AdapterConfig",
    "Checkpoint",
    "DistributedCheckpoint",
    "GGUFFile",
    "NpzFile",
    "OnnxFile",
    "PeftAdapter",
    "RemotePath",
    "SafetensorsFile",
    "ShardedCheckpoint",
    "TensorInfo",
    "TorchFile",
    "TorchScriptFile",
    "as_path",
    "detect_format",
    "is_url",
    "open_checkpoint",
    "redact",
]
