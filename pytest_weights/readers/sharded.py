"""Sharded checkpoints (a Hugging Face ``*.index.json`` and its shards) and HF model directories.

An index is JSON with a ``weight_map`` from tensor name to shard file name, e.g.
``model.safetensors.index.json`` → ``model-00001-of-00002.safetensors``. Each shard is opened
with its own reader (:class:`SafetensorsFile`, or :class:`TorchFile` for
``pytorch_model-*.bin``), so reads stay per tensor and bounded; every shard named in the
index must exist (checked on open), and every tensor the index lists must be in its shard.

A model directory is one holding ``model.safetensors``, ``model.safetensors.index.json``,
``pytorch_model.bin`` or ``pytorch_model.bin.index.json`` (tried in that order).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ._util import combine_identities, file_identity, is_plain_filename, load_json, short
from .base import Checkpoint, TensorInfo
from .safetensors_file import SafetensorsFile
from .source import RemoteFile, RemotePath, as_path
from .torch_file import SUFFIXES as TORCH_SUFFIXES
from .torch_file import TorchFile

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024

#: Files that make a directory a Hugging Face model directory, in order of preference.
MODEL_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def is_index_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(INDEX_SUFFIX)


def _open_shard(path: Path | RemotePath, label: str) -> Checkpoint:
    if path.suffix == ".safetensors":
        return SafetensorsFile(path, label=label)
    if path.suffix in TORCH_SUFFIXES:
        if isinstance(path, RemotePath):
            from .downloaded import open_torch_url

            return open_torch_url(path, label=label)
        return TorchFile(path, label)
    raise CheckpointError(path, "unknown shard format (expected .safetensors or a torch.save file such as .bin)")


def _read_index(path: Path | RemotePath) -> tuple[bytes, dict[str, str], dict]:
    try:
        size = path.stat().st_size if isinstance(path, Path) else path.size()
        if size > MAX_INDEX_BYTES:
            raise CheckpointError(path, f"index file is implausibly large ({size} bytes)")
        raw = path.read_bytes() if isinstance(path, Path) else RemoteFile(path).read(0, size)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    data = load_json(path, raw, "not a checkpoint index: the index")
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise CheckpointError(path, 'not a checkpoint index: no "weight_map" object')
    weight_map = data["weight_map"]
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not is_plain_filename(shard):
            raise CheckpointError(
                path, f"tensor {short(name)}: shard {short(shard)} is not a file name in the index's directory"
            )
    metadata = data.get("metadata")
    return raw, weight_map, metadata if isinstance(metadata, dict) else {}


class ShardedCheckpoint(Checkpoint):
    """The shards listed by one ``*.index.json``, seen as one checkpoint."""

    def __init__(self, path: str | Path | RemotePath, label: str | None = None) -> None:
        self.path = as_path(path)
        self.label = label or self.path.name
        self._index_identity = file_identity(self.path)
        _raw, weight_map, metadata = _read_index(self.path)
        #: The index's ``metadata`` object (e.g. ``{"total_size": …}``).
        self.metadata: dict = metadata
        shard_names = sorted(set(weight_map.values()))
        for shard in shard_names:
            if not (self.path.parent / shard).is_file():
                raise CheckpointError(self.path, f"shard {shard!r} listed in the index is missing")
        self._shards: dict[str, Checkpoint] = {}
        try:
            for shard in shard_names:
                prefix = f"{self.label.rsplit('/', 1)[0]}/" if "/" in self.label else ""
                self._shards[shard] = _open_shard(self.path.parent / shard, f"{prefix}{shard}")
        except BaseException:
            self.close()
            raise
        try:
            self._infos, self._where = self._match(weight_map)
        except BaseException:
            self.close()
            raise

    def _match(self, weight_map: dict[str, str]) -> tuple[list[TensorInfo], dict[str, Checkpoint]]:
        """Each shard's tensors, checked against the index: every tensor of a shard is listed for that
        shard, and every listed tensor is in its shard (a lying index or shard is refused)."""
        where: dict[str, Checkpoint] = {}
        infos: list[TensorInfo] = []
        for shard, ckpt in self._shards.items():  # (shard, offset) order
            for info in ckpt.tensors():
                listed = weight_map.get(info.name)
                if listed != shard:
                    raise CheckpointError(
                        self.path,
                        f"shard {shard!r} holds tensor {info.name!r}, which the index "
                        + ("does not list" if listed is None else f"lists in shard {listed!r}"),
                    )
                where[info.name] = ckpt
                infos.append(info)
        for name, shard in weight_map.items():
            if name not in where:
                raise CheckpointError(
                    self.path, f"tensor {name!r} is listed in the index for shard {shard!r} but that shard lacks it"
                )
        return infos, where

    @property
    def shards(self) -> list[Checkpoint]:
        return list(self._shards.values())

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        return self.lookup(self._where, name).read(name)

    def identity(self) -> str:
        return combine_identities(
            [self._index_identity, *(f"{name}={c.identity()}" for name, c in self._shards.items())]
        )

    def changed(self) -> bool:
        return any(shard.changed() for shard in self._shards.values())

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in MODEL_FILES)


def open_model_dir(path: Path | RemotePath) -> Checkpoint:
    """Open the weights of a Hugging Face model directory (single file or sharded; a local path or a URL)."""
    path = as_path(path)
    for name in MODEL_FILES:
        f = path / name
        if not f.is_file():
            continue
        label = f"{path.name}/{name}"
        if name.endswith(INDEX_SUFFIX):
            return ShardedCheckpoint(f, label=label)
        return _open_shard(f, label)
    raise CheckpointError(path, f"not a model directory: none of {', '.join(MODEL_FILES)}")
