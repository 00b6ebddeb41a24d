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
import pickletools
import struct
import time
import tokenize
import warnings
import zipfile
import zlib
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


# -- issue 11: inputs a fuzz campaign found raising raw exceptions, or accepted though they lie ------------------


def _safetensors_with_header(path: Path, header: str | bytes, data: bytes) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("entry", ["true", "false", "-2", "2.0", '"2"', "null", "18446744073709551616"])
def test_safetensors_shape_entry_that_is_no_count(tmp_path, entry):
    # [true, 2] passed the old int check (a bool is an int) and read() raised TypeError
    header = f'{{"w": {{"dtype": "F32", "shape": [{entry}, 2], "data_offsets": [0, 8]}}}}'
    e = refused(_safetensors_with_header(tmp_path / "w.safetensors", header, bytes(8)), "shape")
    assert "'w'" in e.message


@pytest.mark.parametrize("offsets", ["[true, 8]", "[0, 8.0]", "[0]", '"0-8"'])
def test_safetensors_offsets_that_are_no_counts(tmp_path, offsets):
    header = f'{{"w": {{"dtype": "F32", "shape": [2], "data_offsets": {offsets}}}}}'
    refused(_safetensors_with_header(tmp_path / "w.safetensors", header, bytes(8)), "data_offsets")


@pytest.mark.parametrize("dtype", ['"F128"', '"f32"', "7", "null", '"F8_E8M0"'])
def test_safetensors_unknown_dtype(tmp_path, dtype):
    header = f'{{"w": {{"dtype": {dtype}, "shape": [2], "data_offsets": [0, 8]}}}}'
    refused(_safetensors_with_header(tmp_path / "w.safetensors", header, bytes(8)), "unknown dtype")


def _deep(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_refused_without_recursion(tmp_path, depth):
    # 100 000 levels made json.loads raise RecursionError; 65 is already beyond any real header
    st = _safetensors_with_header(
        tmp_path / "w.safetensors", f'{{"__metadata__": {{"a": {_deep(depth)}}}, "w": 1}}', bytes(8)
    )
    refused(st, "deeper than 64 levels")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(f'{{"weight_map": {{"w": "a.safetensors"}}, "metadata": {_deep(depth)}}}')
    refused(index, "deeper than 64 levels")
    peft = tmp_path / "adapter"
    peft.mkdir()
    save_file({"w": torch.ones(2)}, peft / "adapter_model.safetensors")
    (peft / "adapter_config.json").write_text(f'{{"r": 4, "extra": {_deep(depth)}}}')
    refused(peft, "deeper than 64 levels", named=peft / "adapter_config.json")


def test_brackets_inside_json_strings_do_not_count_as_nesting(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"note": "[" * 1000 + '"\\"{{'})
    with open_checkpoint(path) as ckpt:
        assert [i.name for i in ckpt.tensors()] == ["w"]


def test_safetensors_duplicate_tensor_name(tmp_path):
    # json.loads keeps the last of two equal keys: the first tensor silently vanished
    entry = '{"dtype": "F32", "shape": [2], "data_offsets": [%d, %d]}'
    header = '{"w": ' + entry % (0, 8) + ', "w": ' + entry % (8, 16) + "}"
    e = refused(_safetensors_with_header(tmp_path / "dup.safetensors", header, bytes(16)), "'w' twice")
    assert "[0, 8]" not in e.message or "then" in e.message


@pytest.mark.parametrize(
    ("b_offsets", "match"),
    [
        ([0, 8], "share bytes"),  # the same bytes as "a"
        ([4, 12], "share bytes"),  # overlapping "a"
        ([12, 20], "belong to no tensor"),  # a gap the format does not allow
    ],
)
def test_safetensors_lying_byte_ranges(tmp_path, b_offsets, match):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": b_offsets},
    }
    data = bytes(max(8, b_offsets[1]))
    refused(_safetensors_with_header(tmp_path / "lying.safetensors", json.dumps(header), data), match)


def test_safetensors_trailing_bytes_after_the_data(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    refused(_safetensors_with_header(tmp_path / "t.safetensors", json.dumps(header), bytes(12)), "4 bytes after")


def test_safetensors_accepts_what_the_library_writes(tmp_path):
    # zero-size tensors share an offset; metadata; every dtype the reader knows
    path = tmp_path / "ok.safetensors"
    sd = {
        "e1": torch.zeros(0),
        "e2": torch.zeros(0, 3),
        "b": torch.ones(3, dtype=torch.bool),
        "h": torch.ones(5).half(),
    }
    save_file(sd, path, metadata={"format": "pt"})
    with open_checkpoint(path) as ckpt:
        assert {i.name for i in ckpt.tensors()} == set(sd)


def test_shard_holding_a_tensor_its_index_does_not_list(tmp_path):
    save_file({"a": torch.ones(2), "extra": torch.ones(3)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    e = refused(index, "'extra'")
    assert "model-00001-of-00002.safetensors" in e.message and "does not list" in e.message


def test_tensor_held_by_two_shards(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"a": torch.zeros(2), "b": torch.ones(2)}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    e = refused(index, "shard 'model-00002-of-00002.safetensors' holds tensor 'a'")
    assert "lists in shard 'model-00001-of-00002.safetensors'" in e.message
    # the same tensor named twice in the index itself
    text = index.read_text().replace('"b":', '"a": "model-00002-of-00002.safetensors", "b":')
    index.write_text(text)
    e = refused(index, "'a' twice")
    assert "model-00002-of-00002.safetensors" in e.message


def _legacy_file(path: Path, main_pickle: bytes, keys: list) -> Path:
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {}}
    parts = [pickle.dumps(MAGIC_NUMBER, 2), pickle.dumps(PROTOCOL_VERSION, 2), pickle.dumps(sys_info, 2)]
    path.write_bytes(b"".join([*parts, main_pickle, pickle.dumps(keys, 2)]))
    return path


def test_legacy_pickle_that_makes_torch_assert(tmp_path):
    # a persistent id that is no tuple: torch.load raised AssertionError, which escaped the reader
    path = _legacy_file(tmp_path / "old.pt", b"\x80\x02K\x05Q.", [])
    with pytest.raises(AssertionError):
        torch.load(path, weights_only=True)
    refused(path, "AssertionError")


def _legacy_ops(raw: bytes) -> list[tuple[str, object, int]]:
    """(opcode name, argument, absolute position) of the object pickle (the 4th) of a legacy torch.save file."""
    pos = 0
    for _ in range(3):
        pos += [p for _, _, p in pickletools.genops(io.BytesIO(raw[pos:]))][-1] + 1
    return [(op.name, arg, pos + p) for op, arg, p in pickletools.genops(io.BytesIO(raw[pos:]))]


def _replace_int(raw: bytes, ops: list, index: int, value: int) -> bytes:
    """``raw`` with the BININT1 at ``ops[index]`` replaced by a LONG1 of ``value``."""
    name, _, pos = ops[index]
    assert name == "BININT1"
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little")
    return raw[:pos] + b"\x8a" + bytes([len(encoded)]) + encoded + raw[pos + 2 :]


def test_legacy_tensor_outside_its_storage_is_refused_before_allocating(tmp_path):
    # torch grows a legacy storage to fit the tensor the pickle describes: here 2**33 elements on a storage of 4
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    ops = _legacy_ops(raw)
    size = next(i for i, (name, arg, _) in enumerate(ops) if name == "TUPLE1") - 1  # the size tuple (4,)
    assert ops[size][:2] == ("BININT1", 4)
    path.write_bytes(_replace_int(raw, ops, size, 2**33))
    refused(path, "reaches element 8589934591 of a storage of 4")


def test_legacy_storage_larger_than_the_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    ops = _legacy_ops(raw)
    cpu = next(i for i, (name, arg, _) in enumerate(ops) if arg == "cpu")
    numel = next(i for i in range(cpu, len(ops)) if ops[i][0] == "BININT1")  # the storage's element count
    assert ops[numel][1] == 4
    path.write_bytes(_replace_int(raw, ops, numel, 2**30))
    refused(path, "does not fit")


def _npz_with_member(path: Path, name: str, content: bytes, method: int = 0) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = method
        zf.writestr(info, content)
    return path


def _npy(header: str, data: bytes) -> bytes:
    h = header.encode("latin-1")
    h += b" " * (-(10 + len(h) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def test_npz_header_that_breaks_numpys_tokenizer(tmp_path):
    bad = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), '''}", bytes(12))
    with pytest.raises(tokenize.TokenError):
        np.lib.format.read_array(io.BytesIO(bad))
    refused(_npz_with_member(tmp_path / "t.npz", "w.npy", bad), "TokenError")


def test_npz_corrupt_deflate_stream(tmp_path):
    # bytes inside a member's deflate stream overwritten: zipfile raises zlib.error
    path = tmp_path / "z.npz"
    np.savez_compressed(path, w=np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32))
    raw, info = path.read_bytes(), zipfile.ZipFile(path).getinfo("w.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for pos in range(start + 200, start + info.compress_size - 100, 97):
        data = bytearray(raw)
        data[pos : pos + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
        try:
            zipfile.ZipFile(path).read("w.npy")
        except zlib.error:
            break
        except zipfile.BadZipFile:
            continue
    else:
        if os.environ.get("CI"):
            pytest.fail("no corruption made zlib report a stream error")
        pytest.skip("this zlib reported no stream error")
    refused(path, "error")


def test_npz_member_compressed_with_a_method_numpy_never_uses(tmp_path):
    path = _npz_with_member(
        tmp_path / "m.npz", "w.npy", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", bytes(12))
    )
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 10 : central + 12] = struct.pack("<H", 99)  # AES: zipfile raises NotImplementedError
    path.write_bytes(bytes(raw))
    with pytest.raises(NotImplementedError):
        zipfile.ZipFile(path).read("w.npy")
    refused(path, "compression method 99")


def test_npz_decompression_bomb_is_refused_before_allocating(tmp_path):
    # a member whose directory claims far more bytes than deflate can make of its compressed size
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }"
    path = _npz_with_member(tmp_path / "bomb.npz", "w.npy", _npy(header, bytes(64)), zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    for record, offset in ((raw.rfind(b"PK\x01\x02"), 24), (0, 22)):  # central directory and local header
        raw[record + offset : record + offset + 4] = struct.pack("<I", 8_000_200)
    path.write_bytes(bytes(raw))
    refused(path, "claims 8000200 bytes")


def test_npz_member_names_twice(tmp_path):
    path = tmp_path / "d.npz"
    content = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", bytes(12))
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("w.npy", content)
        zf.writestr("w.npy", content)
    refused(path, "two archive members named 'w.npy'")


def _dcp(tmp_path: Path) -> Path:
    import torch.distributed.checkpoint as dcp

    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.randn(16, 8), "b": torch.randn(8)}, checkpoint_id=str(d), no_dist=True)
    return d


def _edit_dcp_metadata(d: Path, edit) -> None:
    from pytest_weights.readers.dcp import read_metadata

    meta = read_metadata(d / ".metadata")
    edit(meta)
    (d / ".metadata").write_bytes(pickle.dumps(meta))


def test_dcp_absurd_tensor_size_is_refused_before_allocating(tmp_path):
    # torch.empty(2**80 elements) ran outside any try
    d = _dcp(tmp_path)
    _edit_dcp_metadata(d, lambda m: setattr(m.state_dict_metadata["w"], "size", torch.Size([2**40, 2**40])))
    refused(d, "implausible shape", named=d / ".metadata")


def test_dcp_chunks_that_do_not_tile_the_tensor(tmp_path):
    d = _dcp(tmp_path)
    _edit_dcp_metadata(d, lambda m: setattr(m.state_dict_metadata["w"], "size", torch.Size([32, 8])))
    refused(d, "do not tile", named=d / ".metadata")


def test_dcp_storage_length_that_lies(tmp_path):
    # DCP then failed with CheckpointException, a BaseException that `except Exception` missed
    from torch.distributed.checkpoint.metadata import MetadataIndex

    d = _dcp(tmp_path)

    def shorten(meta) -> None:
        meta.storage_data[MetadataIndex("b", (0,))].length = 40

    _edit_dcp_metadata(d, shorten)
    refused(d, "cannot read tensor 'b'")


@pytest.mark.parametrize(
    ("pickle_bytes", "match"),
    [
        # a PUT index of 2**28: the C unpickler allocates and zeroes a 4 GB memo table
        (b"\x80\x02K\x01r" + struct.pack("<I", 2**28) + b".", "not a Metadata object"),
        # BYTEARRAY8 of 2**33 bytes: even the pure-Python unpickler allocates it before reading
        (b"\x80\x05\x96" + struct.pack("<Q", 2**33) + b".", "BYTEARRAY8"),
    ],
    ids=["memo", "bytearray8"],
)
def test_dcp_metadata_allocation_bombs(tmp_path, pickle_bytes, match):
    d = _dcp(tmp_path)
    (d / ".metadata").write_bytes(pickle_bytes)
    refused(d, match, named=d / ".metadata")


def test_peft_config_with_absurd_numbers(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "adapter_model.safetensors")
    config = tmp_path / "adapter_config.json"
    config.write_text('{"r": 4, "lora_alpha": 1' + "0" * 400 + "}")  # float() of it raised OverflowError
    refused(tmp_path, "'lora_alpha' should be a finite number", named=config)
    config.write_text('{"r": 4, "lora_alpha": NaN}')
    refused(tmp_path, "'lora_alpha' should be a finite number", named=config)
    config.write_text('{"r": 1' + "0" * 30 + ', "lora_alpha": 8}')
    refused(tmp_path, "'r' should be a positive integer", named=config)


def test_gguf_array_count_beyond_the_file(tmp_path):
    # 41 bytes: a metadata array of 2**40 uint8 and no data; gguf.GGUFReader looped forever on it
    pytest.importorskip("gguf")
    path = tmp_path / "hang.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a"
    path.write_bytes(header + struct.pack("<IIQ", 9, 0, 2**40))
    refused(path, "1099511627776 array items cannot fit in the file")


def test_gguf_tensor_data_not_where_ggml_puts_it(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("a", np.ones((4, 32), dtype=np.float32))
    w.add_tensor("b", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    raw = bytearray(path.read_bytes())
    offset = raw.index(b"\x01\x00\x00\x00\x00\x00\x00\x00b") + 9 + 4 + 16 + 4  # tensor "b": name, n_dims, dims, type
    assert struct.unpack_from("<Q", raw, offset)[0] == 512
    raw[offset : offset + 8] = struct.pack("<Q", 0)  # "b" claims the bytes of "a"
    path.write_bytes(bytes(raw))
    refused(path, "tensor 'b': data at offset 0, but ggml's layout puts it at 512")
