"""Local checkpoints: :data:`FORMATS`, the formats tried in order, and :func:`open_local`.

Each format is one module with a ``Checkpoint`` subclass; :data:`FORMATS` lists them in the
order they are tried, each as (name, ``detect(path) -> bool``, ``open(path)``). This module
knows nothing of URLs or runs (the package's :func:`~pytest_weights.readers.open_checkpoint`
adds both), so every reader, and :mod:`.remote`, can depend on it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from .base import Checkpoint
from .dcp import DistributedCheckpoint, is_dcp_dir
from .gguf_file import GGUFFile, is_gguf_file
from .npz import NpzFile, is_npz_file
from .onnx_file import OnnxFile, is_onnx_file
from .peft import PeftAdapter, is_peft_dir
from .safetensors_file import SafetensorsFile
from .sharded import ShardedCheckpoint, is_index_file, is_model_dir, open_model_dir
from .source import RemotePath
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


def detect_local(p: Path) -> str | None:
    """The name of the first format in :data:`FORMATS` that recognises the local path ``p``, or None."""
    for name, detect, _opener in FORMATS:
        if detect(p):
            return name
    return None


def is_checkpoint(p: Path | RemotePath) -> bool:
    """Whether ``p`` is itself one checkpoint (a URL: an object, or a model directory prefix)."""
    if isinstance(p, RemotePath):
        return p.is_file() or is_model_dir(p)
    return detect_local(p) is not None


def open_local(p: Path) -> Checkpoint:
    """Open a local checkpoint read-only; :class:`CheckpointError` naming ``p`` when it is none."""
    if not p.exists():
        raise CheckpointError(p, "no such file or directory")
    for _name, detect, opener in FORMATS:
        if detect(p):
            return opener(p)
    raise CheckpointError(p, not_a_checkpoint(p))


def not_a_checkpoint(p: Path) -> str:
    known = "; ".join(name for name, _, _ in FORMATS)
    if p.is_dir():
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
