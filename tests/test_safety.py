"""Hostile and broken files: refused with a CheckpointError naming the file, quickly, without side effects.

Every case uses a real file. A refusal must not run code from the file (a crafted pickle
would create ``marker``), must name the file, and must come in well under a second.
Reading a valid checkpoint of any format must leave its bytes and mtime unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pytest_weights.errors import CheckpointError
from pytest_weights.readers import open_checkpoint

FAST = 1.0  # seconds


class Evil:
    """Unpickling this calls open(marker, "w"): creating the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def refused(path: Path, match: str | None = None, *, named: Path | None = None) -> CheckpointError:
    """Open ``path``, list and read every tensor; assert a fast CheckpointError naming the file."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        ckpt = open_checkpoint(path)
        try:
            for info in ckpt.tensors():
                ckpt.read(info.name)
        finally:
            ckpt.close()
    elapsed = time.perf_counter() - start
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    e = err.value
    assert e.path == str(named or path)
    assert str(named or path) in str(e)
    if match is not None:
        assert match in e.message, e.message
    assert "Traceback" not in str(e)
    return e


# -- code execution ---------------------------------------------------------------------------


def test_pickle_payload_in_torch_zip_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(3), "payload": Evil(marker)}, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    e = refused(path, "refused: not a plain tensor checkpoint (weights_only)")
    assert "io.open" in e.message  # what the pickle asked for
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".ckpt", ".pth"])
def test_pickle_payload_in_legacy_torch_file_is_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"payload": Evil(marker)}, path, _use_new_zipfile_serialization=False)
    refused(path, "refused: not a plain tensor checkpoint (weights_only)")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_raw_pickle_payload_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil(marker), protocol=protocol))
    refused(path, "refused")
    assert not marker.exists()


def test_pickle_payload_in_sharded_bin_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": Evil(marker)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    refused(tmp_path, "refused", named=tmp_path / "pytorch_model-00002-of-00002.bin")
    assert not marker.exists()


def test_pickle_payload_in_dcp_metadata_is_refused(tmp_path):
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "pwned"
    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(2)}, checkpoint_id=str(d), no_dist=True)
    (d / ".metadata").write_bytes(pickle.dumps(Evil(marker)))
    refused(d, "refused", named=d / ".metadata")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"ctorch.distributed.checkpoint.filesystem\nos.system\n(S'touch MARKER'\ntR.",
        b"ctorch\nload\n(S'MARKER'\ntR.",
        b"cbuiltins\nopen\n(S'MARKER'\nS'w'\ntR.",
    ],
)
def test_dcp_metadata_allowlist_holds(tmp_path, payload):
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "pwned"
    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(2)}, checkpoint_id=str(d), no_dist=True)
    (d / ".metadata").write_bytes(payload.replace(b"MARKER", str(marker).encode()))
    refused(d, "refused global", named=d / ".metadata")
    assert not marker.exists()


def test_dcp_data_file_cannot_point_outside(tmp_path):
    import torch.distributed.checkpoint as dcp

    from pytest_weights.readers.dcp import read_metadata

    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(2)}, checkpoint_id=str(d), no_dist=True)
    meta = read_metadata(d / ".metadata")
    for info in meta.storage_data.values():
        info.relative_path = "../outside.distcp"
    (tmp_path / "outside.distcp").write_bytes((next(d.glob("*.distcp"))).read_bytes())
    (d / ".metadata").write_bytes(pickle.dumps(meta))
    refused(d, "is not a file name in the checkpoint directory", named=d / ".metadata")


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.ones(3), payload=np.array([Evil(marker)], dtype=object))
    refused(path, "refused: array 'payload' holds Python objects")
    assert not marker.exists()


def test_index_cannot_point_outside_its_directory(tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"w": torch.ones(2)}, outside)
    d = tmp_path / "model"
    d.mkdir()
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    refused(index, "is not a file name in the index's directory")


# -- broken safetensors -----------------------------------------------------------------------


def _safetensors_bytes() -> bytes:
    path_bytes = io.BytesIO()
    from safetensors.torch import save

    path_bytes.write(save({"a": torch.randn(64, 64), "b": torch.randn(32)}))
    return path_bytes.getvalue()


def test_truncated_safetensors(tmp_path):
    data = _safetensors_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    refused(path, "truncated")


def test_safetensors_offsets_past_the_end(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(64))
    refused(path, "truncated")


def test_safetensors_absurd_header_length(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}" + bytes(32))
    refused(path, "header length")


@pytest.mark.parametrize("through", ["index", "directory"])
def test_shard_listed_in_index_but_missing(tmp_path, through):
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    e = refused(index if through == "index" else tmp_path, "model-00002-of-00002.safetensors", named=index)
    assert "missing" in e.message


# -- garbage and empty files ------------------------------------------------------------------

FILE_SUFFIXES = [".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz", ".gguf", ".safetensors.index.json"]


def _needs_gguf(suffix: str) -> None:
    if suffix == ".gguf":
        pytest.importorskip("gguf")


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_random_bytes(tmp_path, suffix):
    _needs_gguf(suffix)
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    refused(path)


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_empty_file(tmp_path, suffix):
    _needs_gguf(suffix)
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    refused(path)


@pytest.mark.parametrize("magic", [b"PK\x03\x04", b"\x80\x02", b"GGUF"])
def test_random_bytes_behind_a_valid_magic(tmp_path, magic):
    suffix = ".gguf" if magic == b"GGUF" else ".pt"
    _needs_gguf(suffix)
    path = tmp_path / f"magic{suffix}"
    path.write_bytes(magic + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    refused(path)


def test_truncated_torch_zip(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.randn(256, 256)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(path, "truncated or corrupt")


def test_truncated_npz(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, w=np.ones((128, 128)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(path)


def test_truncated_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "cut.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("w", np.ones((64, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    refused(path)


def test_truncated_dcp_data_file(tmp_path):
    import torch.distributed.checkpoint as dcp

    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.randn(128, 128)}, checkpoint_id=str(d), no_dist=True)
    (data_file,) = d.glob("*.distcp")
    data_file.write_bytes(data_file.read_bytes()[:100])
    refused(d, "truncated", named=data_file)


def test_directory_that_is_no_checkpoint(tmp_path):
    (tmp_path / "README.md").write_text("# not weights")
    refused(tmp_path, "no checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "empty directory")
    refused(tmp_path / "README.md", "not a checkpoint")


# -- reading never writes ---------------------------------------------------------------------


def _write_format(fmt: str, root: Path) -> Path:
    sd = {"a.weight": torch.randn(16, 8), "a.bias": torch.randn(16), "b": torch.arange(5)}
    if fmt == "safetensors":
        save_file(sd, root / "m.safetensors")
        return root / "m.safetensors"
    if fmt == "sharded":
        save_file({"a.weight": sd["a.weight"]}, root / "model-00001-of-00002.safetensors")
        save_file({"a.bias": sd["a.bias"]}, root / "model-00002-of-00002.safetensors")
        weight_map = {"a.weight": "model-00001-of-00002.safetensors", "a.bias": "model-00002-of-00002.safetensors"}
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        return root
    if fmt == "torch":
        torch.save(
            {"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}}, root / "m.pt"
        )
        return root / "m.pt"
    if fmt == "torch-legacy":
        torch.save(sd, root / "m.pt", _use_new_zipfile_serialization=False)
        return root / "m.pt"
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({"model": sd, "step": 3}, checkpoint_id=str(root / "dcp"), no_dist=True)
        return root / "dcp"
    if fmt == "peft":
        save_file(sd, root / "adapter_model.safetensors")
        (root / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
        return root
    if fmt == "npz":
        np.savez_compressed(root / "m.npz", **{k: v.numpy() for k, v in sd.items()})
        return root / "m.npz"
    if fmt == "gguf":
        gguf = pytest.importorskip("gguf")
        w = gguf.GGUFWriter(str(root / "m.gguf"), "llama")
        w.add_tensor("f32", sd["a.weight"].numpy())
        q = gguf.quants.quantize(np.ones((2, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("q8", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return root / "m.gguf"
    raise AssertionError(fmt)


def _fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), os.stat(p).st_mtime_ns) for p in files}


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "torch", "torch-legacy", "dcp", "peft", "npz", "gguf"])
def test_reading_every_tensor_changes_nothing(tmp_path, fmt):
    path = _write_format(fmt, tmp_path)
    before = _fingerprint(tmp_path)
    start = time.perf_counter()
    with open_checkpoint(path) as ckpt:
        infos = ckpt.tensors()
        assert infos
        identity = ckpt.identity()
        for info in infos:
            t = ckpt.read(info.name)
            assert tuple(t.shape) == info.shape and t.dtype == info.dtype
            t.add_(1) if t.is_floating_point() else None  # writing to what read() returned must not reach the file
    assert time.perf_counter() - start < FAST
    assert _fingerprint(tmp_path) == before
    with open_checkpoint(path) as again:
        assert again.identity() == identity


def test_memory_mapped_tensors_are_private_copies(tmp_path):
    # tensors of ≥ 1 MiB are mapped copy-on-write: writing to one never reaches the file
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.randn(1024, 1024), "b": torch.randn(8)}, path)
    before = _fingerprint(path)
    with open_checkpoint(path) as ckpt:
        w = ckpt.read("w")
        assert not w.is_shared() and w.untyped_storage().nbytes() == 4 * 1024 * 1024
        w.mul_(0.0).add_(7.0)
        assert float(ckpt.read("w")[0, 0]) != 7.0  # a fresh read sees the file, not the write
        del w
    assert _fingerprint(path) == before
