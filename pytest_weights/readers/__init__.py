"""Checkpoint readers: ``open_checkpoint(path)`` picks the format from the path.

Each format is one module with a ``Checkpoint`` subclass; :data:`FORMATS` lists them in
the order they are tried, each as (name, ``detect(path) -> bool``, ``open(path)``). The base
class (:mod:`.base`) owns what every reader shares: finding a tensor by name
(:meth:`Checkpoint.lookup`, the ``no tensor named …`` error) and turning a failed read into a
one-line ``cannot read tensor …`` error (:meth:`Checkpoint.reading`).

A URL (``s3://``, ``gs://``, ``http(s)://`` …) is opened by :mod:`.remote` over the byte
sources of :mod:`.source` (fsspec, imported only then).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from .base import FLOAT_DTYPES, Checkpoint, TensorInfo
from .dcp import DistributedCheckpoint, is_dcp_dir
from .gguf_file import GGUFFile, is_gguf_file
from .npz import NpzFile, is_npz_file
from .onnx_file import OnnxFile, is_onnx_file
from .peft import AdapterConfig, PeftAdapter, is_peft_dir
from .safetensors_file import SafetensorsFile
from .sharded import ShardedCheckpoint, is_index_file, is_model_dir, open_model_dir
from .source import RemotePath, as_path, is_url, redact
from .torch_file import TorchFile, is_torch_file
from .torchscript_file import TorchScriptFile, is_torchscript_file

Opener = Callable[[Path], Checkpoint]


def _is_safetensors_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".safetensors"


FORMATS: list[tuple[str, Callable[[Path], bool], Opener]] = [
    ("safetensors", _is_safetensors_file, SafetensorsFile),
    ("sharded index (*.index.json)", is_index_file, ShardedCheckpoint),
    # before PyTorch: a torch.jit.save archive named .pt goes to the TorchScript reader
    ("TorchScript (.jit/.torchscript, or a torch.jit.save .pt)", is_torchscript_file, TorchScriptFile),
    ("PyTorch (.pt/.pth/.bin/.ckpt)", is_torch_file, TorchFile),
    ("NumPy .npz", is_npz_file, NpzFile),
    ("GGUF", is_gguf_file, GGUFFile),
    ("ONNX (.onnx)", is_onnx_file, OnnxFile),
    ("model directory", is_model_dir, open_model_dir),
    ("PEFT adapter directory", is_peft_dir, PeftAdapter),
    ("distributed checkpoint directory (.metadata + *.distcp)", is_dcp_dir, DistributedCheckpoint),
]


def detect_format(path: str | Path | RemotePath) -> str | None:
    """The name of the first format in :data:`FORMATS` that recognises ``path``, or None (a URL: "remote")."""
    p = as_path(path)
    if isinstance(p, RemotePath):  # a file, or a model directory; another prefix may be a run (runs.py)
        return "remote" if p.is_file() or is_model_dir(p) else None
    for name, detect, _opener in FORMATS:
        if detect(p):
            return name
    return None


def open_checkpoint(path: str | Path | RemotePath) -> Checkpoint:
    """Open a checkpoint read-only (a path, or a URL such as ``s3://bucket/model.safetensors``);
    raise :class:`CheckpointError` naming the path (a URL without its credentials)."""
    p = as_path(path)
    if isinstance(p, RemotePath):
        from .remote import open_remote

        return open_remote(p)
    if not p.exists():
        raise CheckpointError(p, "no such file or directory")
    for _name, detect, opener in FORMATS:
        if detect(p):
            return opener(p)
    raise CheckpointError(p, _not_a_checkpoint(p))


def _not_a_checkpoint(p: Path) -> str:
    known = "; ".join(name for name, _, _ in FORMATS)
    if p.is_dir():
        from ..runs import discover_run

        run = discover_run(p)
        if run is not None:
            return run.not_one_checkpoint()
        try:
            empty = not any(p.iterdir())
        except OSError as e:
            return f"cannot list directory: {e.strerror or e}"
        if empty:
            return "an empty directory, not a checkpoint"
        return f"a directory holding no checkpoint this plugin can read (known formats: {known})"
    if not p.is_file():
        return "not a regular file or directory"
    kind = repr(p.suffix) if p.suffix else "(no suffix)"
    return f"not a checkpoint this plugin can read: unknown file type {kind} (known formats: {known})"


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
