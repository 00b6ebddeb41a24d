"""Checkpoint readers: ``open_checkpoint(path)`` picks the format from the path.

Each format is one module with a ``Checkpoint`` subclass; :data:`FORMATS` lists them in
the order they are tried, each as (name, ``detect(path) -> bool``, ``open(path)``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from .base import FLOAT_DTYPES, Checkpoint, TensorInfo
from .safetensors_file import SafetensorsFile

Opener = Callable[[Path], Checkpoint]


def _is_safetensors_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".safetensors"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "model.safetensors").is_file()


def _open_model_dir(path: Path) -> Checkpoint:
    return SafetensorsFile(path / "model.safetensors", label=f"{path.name}/model.safetensors")


FORMATS: list[tuple[str, Callable[[Path], bool], Opener]] = [
    ("safetensors", _is_safetensors_file, SafetensorsFile),
    ("model directory", _is_model_dir, _open_model_dir),
]


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint read-only; raise :class:`CheckpointError` naming the path."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "no such file or directory")
    for _name, detect, opener in FORMATS:
        if detect(p):
            return opener(p)
    known = ", ".join(name for name, _, _ in FORMATS)
    raise CheckpointError(p, f"not a checkpoint this plugin can read (known formats: {known})")


__all__ = ["FLOAT_DTYPES", "FORMATS", "Checkpoint", "TensorInfo", "open_checkpoint"]
