"""Seed checkpoints of every supported format, written with the formats' own libraries.

Each builder writes one small, valid checkpoint into an empty directory and returns a
:class:`Seed`: what ``open_checkpoint`` is given, and which files a mutation may break.
:data:`SEED_BUILDERS` lists them; add a format by appending ``(name, builder)``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Seed:
    """A valid checkpoint in ``directory``: ``entry`` is opened, ``targets`` may be mutated (both relative)."""

    format: str
    directory: Path
    entry: str
    targets: tuple[str, ...]


SeedBuilder = Callable[[Path], Seed]


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(12, 8, generator=g),
        "layers.0.attn.q.weight": torch.randn(8, 8, generator=g),
        "layers.0.attn.q.bias": torch.randn(8, generator=g),
        "layers.0.mlp.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "layers.0.mlp.half": torch.randn(4, 4, generator=g).to(torch.float16),
        "layers.0.norm.weight": torch.ones(8, dtype=torch.float64),
        "position_ids": torch.arange(6),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }


def safetensors_seed(d: Path) -> Seed:
    from safetensors.torch import save_file

    sd = {**_state(), "fp8": torch.randn(4, 8, generator=torch.Generator().manual_seed(5)).to(torch.float8_e4m3fn)}
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    return Seed("safetensors", d, "model.safetensors", ("model.safetensors",))


def sharded_seed(d: Path) -> Seed:
    from safetensors.torch import save_file

    sd = _state(1)
    names = sorted(sd)
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {}
    for k, shard in enumerate(shards):
        part = {n: sd[n] for n in names[k::2]}
        save_file(part, d / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = "model.safetensors.index.json"
    (d / index).write_text(json.dumps({"metadata": {"total_size": 1234}, "weight_map": weight_map}, indent=2))
    return Seed("sharded", d, ".", (index, *shards))


def _train_state() -> dict:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    return {"model": {**model.state_dict(), **_state(2)}, "optimizer": opt.state_dict(), "step": 100, "note": "x"}


def torch_zip_seed(d: Path) -> Seed:
    torch.manual_seed(0)
    state = _train_state()
    state["tied"] = state["model"]["embed.weight"]
    state["view"] = state["model"]["embed.weight"][:, 1]
    torch.save(state, d / "train.pt")
    return Seed("torch-zip", d, "train.pt", ("train.pt",))


def torch_legacy_seed(d: Path) -> Seed:
    torch.manual_seed(0)
    torch.save(_train_state(), d / "old.pth", _use_new_zipfile_serialization=False)
    _stable_storage_keys(d / "old.pth")
    return Seed("torch-legacy", d, "old.pth", ("old.pth",))


def _stable_storage_keys(path: Path) -> None:
    """The legacy format names storages by memory address and writes them in the order of those names: rename
    them 0…0, 0…1 … (same lengths, in order of first use) and write them in that order, so the seed's bytes, and
    every mutation of it, are the same in every run."""
    import mmap

    from pytest_weights.readers.torch_file import _LegacyScanner, _MapReader

    raw = path.read_bytes()
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        reader = _MapReader(m)
        for _ in range(3):  # magic number, protocol, system info
            _LegacyScanner(reader).load()
        scanner = _LegacyScanner(reader)
        scanner.load()  # the object: scanner.storages in order of first use
        object_end = reader.pos
        keys = _LegacyScanner(reader).load()
        pos, records = reader.pos, {}
        for key in keys:
            numel, size = scanner.storages[key]
            records[key] = raw[pos : pos + 8 + numel * size]
            pos += 8 + numel * size
    names = {key: f"{i:0{len(key)}d}" for i, key in enumerate(scanner.storages)}
    head = raw[:object_end]
    for key, name in names.items():
        head = head.replace(key.encode(), name.encode())
    order = sorted(keys, key=lambda k: names[k])
    path.write_bytes(head + pickle.dumps([names[k] for k in order], 2) + b"".join(records[k] for k in order))
    torch.load(path, weights_only=True)  # still a valid checkpoint


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal((6, 5)).astype(np.float32),
        "h": rng.standard_normal(7).astype(np.float16),
        "d": rng.standard_normal((2, 3)),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "big_endian": np.arange(5, dtype=">f4"),
        "ids": np.arange(9, dtype=np.int64),
        "labels": np.array(["a", "b"]),
    }


def npz_seed(d: Path) -> Seed:
    np.savez(d / "arrays.npz", **_arrays())
    return Seed("npz", d, "arrays.npz", ("arrays.npz",))


def npz_compressed_seed(d: Path) -> Seed:
    np.savez_compressed(d / "arrays.npz", **_arrays())
    return Seed("npz-compressed", d, "arrays.npz", ("arrays.npz",))


def gguf_seed(d: Path) -> Seed:
    import gguf

    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(d / "model.gguf"), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_token_list(["<s>", "</s>", "a", "b"])
    w.add_token_scores([0.0, 0.0, -1.0, -2.0])
    w.add_tensor("f32", rng.standard_normal((4, 32)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 32)).astype(np.float16))
    w.add_tensor("i32", np.arange(6, dtype=np.int32).reshape(2, 3))
    for qtype in (Q.Q8_0, Q.Q4_0):
        q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), qtype)
        w.add_tensor(qtype.name.lower(), q, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Seed("gguf", d, "model.gguf", ("model.gguf",))


def dcp_seed(d: Path) -> Seed:
    import torch.distributed.checkpoint as dcp

    from pytest_weights.readers.dcp import read_metadata

    torch.manual_seed(0)
    state = _train_state()
    state.pop("note")
    out = d / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(out), no_dist=True)
    meta = read_metadata(out / ".metadata")
    meta.storage_meta = None  # holds a random save id and the path: drop it so the seed is reproducible
    (out / ".metadata").write_bytes(pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL))
    files = sorted(p.name for p in out.glob("*.distcp"))
    return Seed("dcp", d, "dcp", tuple(f"dcp/{f}" for f in (".metadata", *files)))


def peft_seed(d: Path) -> Seed:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    sd = {}
    for layer in range(2):
        for mod in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            sd[f"{prefix}.lora_A.weight"] = torch.randn(4, 16, generator=g)
            sd[f"{prefix}.lora_B.weight"] = torch.randn(16, 4, generator=g) * 0.01
    save_file(sd, d / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "some/model",
        "lora_dropout": 0.05,
        "use_rslora": False,
    }
    (d / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return Seed("peft", d, ".", ("adapter_config.json", "adapter_model.safetensors"))


#: (format, builder) in campaign order. The ONNX and TorchScript readers add theirs here.
SEED_BUILDERS: list[tuple[str, SeedBuilder]] = [
    ("safetensors", safetensors_seed),
    ("sharded", sharded_seed),
    ("torch-zip", torch_zip_seed),
    ("torch-legacy", torch_legacy_seed),
    ("npz", npz_seed),
    ("npz-compressed", npz_compressed_seed),
    ("gguf", gguf_seed),
    ("dcp", dcp_seed),
    ("peft", peft_seed),
]

FORMATS = [name for name, _ in SEED_BUILDERS]


def build_corpus(directory: Path, formats: list[str] | None = None) -> dict[str, Seed]:
    """Write one seed per format under ``directory/<format>/``."""
    builders = dict(SEED_BUILDERS)
    unknown = set(formats or ()) - set(builders)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; known: {', '.join(builders)}")
    seeds = {}
    for name in formats or list(builders):
        d = directory / name
        d.mkdir(parents=True, exist_ok=True)
        seeds[name] = builders[name](d)
    return seeds
