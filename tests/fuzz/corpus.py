"""Seed checkpoints of every supported format, written with the formats' own libraries.

Each builder writes one small, valid checkpoint into an empty directory and returns a
:class:`Seed`: what ``open_checkpoint`` is given, and which files a mutation may break.
:data:`SEED_BUILDERS` lists them; add a format by appending ``(name, builder)``.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


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


# -- ONNX --------------------------------------------------------------------------------------------------------------


def _onnx_graph_tensors(rng: np.random.Generator) -> list:
    """Initializers in every storage ONNX has: raw_data and the typed fields, fp32/fp16/bf16/f64, int64 and bool."""
    from onnx import TensorProto, helper, numpy_helper

    w = rng.standard_normal((8, 4)).astype(np.float32)
    h = rng.standard_normal((4, 6)).astype(np.float16)
    b = rng.standard_normal((3, 8)).astype(np.float32)
    return [
        numpy_helper.from_array(w, "enc.weight"),  # FLOAT, raw_data
        helper.make_tensor("enc.bias", TensorProto.FLOAT, [4], rng.standard_normal(4).tolist()),  # float_data
        numpy_helper.from_array(h, "half.weight"),  # FLOAT16, raw_data
        helper.make_tensor("half.typed", TensorProto.FLOAT16, h.shape, h.ravel()),  # int32_data bit patterns
        helper.make_tensor("bf16.weight", TensorProto.BFLOAT16, b.shape, b.ravel().tolist(), raw=False),
        helper.make_tensor("bf16.raw", TensorProto.BFLOAT16, b.shape, b.ravel().tolist()),  # raw_data
        helper.make_tensor("f64.typed", TensorProto.DOUBLE, [5], rng.standard_normal(5).tolist()),  # double_data
        helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1]),  # int64_data
        helper.make_tensor("mask", TensorProto.BOOL, [3], [True, False, True]),
        helper.make_tensor("scalar", TensorProto.FLOAT, [], [2.5]),
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 4], []),
    ]


def _onnx_model(graph: object) -> object:
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytest-weights-fuzz")


def _onnx_plain_model() -> object:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("MatMul", ["x", "enc.weight"], ["y0"]),
        helper.make_node("Add", ["y0", "enc.bias"], ["y1"]),
        helper.make_node("Constant", [], ["const.w"], value=numpy_helper.from_array(rng.standard_normal((4, 2)))),
        helper.make_node("Constant", [], ["const.floats"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["const.int"], value_int=7),
        helper.make_node("MatMul", ["y1", "const.w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        _onnx_graph_tensors(rng),
    )
    return _onnx_model(graph)


def onnx_seed(d: Path) -> Seed:
    import onnx

    onnx.save_model(_onnx_plain_model(), str(d / "model.onnx"))
    return Seed("onnx", d, "model.onnx", ("model.onnx",))


def _onnx_branch(name: str, rng: np.random.Generator, nested: bool) -> object:
    """A silero-style branch: the weights are Constant nodes (named ``If_0_<branch>__Inline_0__…``)."""
    from onnx import TensorProto, helper, numpy_helper

    prefix = f"If_0_{name}__Inline_0__"
    weights = {
        "encoder.0.weight": rng.standard_normal((8, 4, 3)).astype(np.float32),
        "encoder.0.bias": rng.standard_normal(8).astype(np.float32),
        "decoder.rnn.weight_ih": rng.standard_normal((16, 8)).astype(np.float16),
    }
    nodes = [
        helper.make_node("Constant", [], [prefix + k], value=numpy_helper.from_array(v)) for k, v in weights.items()
    ]
    outputs = [helper.make_tensor_value_info(prefix + "encoder.0.bias", TensorProto.FLOAT, [8])]
    if nested:  # a Loop body inside the branch, with a Constant of its own: two levels of subgraphs
        body = helper.make_graph(
            [
                helper.make_node(
                    "Constant", [], ["loop.scale"], value=numpy_helper.from_array(np.full(4, 0.5, np.float32))
                ),
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            ],
            "loop_body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", 9, []),
            ],
            [helper.make_tensor_value_info("cond_out", 9, [])],
        )
        nodes.append(helper.make_node("Loop", ["", "cond"], [], body=body))
    return helper.make_graph(nodes, name, [], outputs)


def onnx_subgraph_seed(d: Path) -> Seed:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    then_g, else_g = _onnx_branch("then_branch", rng, nested=True), _onnx_branch("else_branch", rng, nested=False)
    nodes = [
        helper.make_node("Constant", [], ["sr"], value=numpy_helper.from_array(np.array(16000, np.int64))),
        helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(
        nodes,
        "silero_like",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [8])],
        [numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "top.weight")],
    )
    onnx.save_model(_onnx_model(graph), str(d / "model.onnx"))
    return Seed("onnx-subgraph", d, "model.onnx", ("model.onnx",))


def onnx_external_seed(d: Path) -> Seed:
    import onnx

    onnx.save_model(
        _onnx_plain_model(), str(d / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    return Seed("onnx-external", d, "model.onnx", ("model.onnx", "weights.bin"))


# -- TorchScript -------------------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 4, 3, padding=1)
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) * self.scale[None, :, None]


class _ScriptNet(nn.Module):
    """Nested submodules, an LSTM, buffers (one a strided view at an offset), tied and bf16 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_Block(4), _Block(4))
        self.rnn = nn.LSTM(4, 8)
        self.head = nn.Linear(8, 3)
        self.emb = nn.Embedding(5, 8)
        self.proj = nn.Linear(8, 5, bias=False)
        self.proj.weight = self.emb.weight
        self.low = nn.Linear(3, 3).to(torch.bfloat16)
        base = torch.arange(12.0).reshape(3, 4)
        self.register_buffer("base", base)
        self.register_buffer("view_t", base.t())
        self.state = torch.zeros(2)  # a tensor attribute, not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.encoder(x).permute(2, 0, 1))
        z = self.head(y) + self.proj(y)[..., :3]
        return z + self.low(z.to(torch.bfloat16)).float() + self.view_t[0, :3] + self.state[0]


class _TracedNet(nn.Module):
    """Traced: nested submodules, an LSTM, a buffer, and a tensor constant (in constants.pkl)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.rnn = nn.LSTM(8, 8, num_layers=2)
        self.register_buffer("offset", torch.linspace(-1, 1, 8))
        self.table = torch.linspace(0, 1, 8).reshape(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.features(x + self.table.sum(0)))
        return y + self.offset


def _jit_save(kind: str, path: str) -> None:
    """Script or trace a module and torch.jit.save it (run in a child process with a fixed hash seed)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "script":
            net = _ScriptNet().eval()
            for m in net.modules():  # non-trivial BatchNorm statistics
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.normal_()
                    m.num_batches_tracked.fill_(7)
            module = torch.jit.script(net)
        else:
            module = torch.jit.trace(_TracedNet().eval(), torch.randn(3, 2, 4))
        torch.jit.save(module, path)


def _torchscript(path: Path, kind: str) -> None:
    """``_jit_save`` in a child process: TorchScript prints a module's constants in set order, so the archive's
    code/ text depends on the hash seed; the child's is fixed. Its random serialization id is then zeroed."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from tests.fuzz.corpus import _jit_save; _jit_save(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, kind, str(path)], cwd=root, env=env, check=True, capture_output=True)
    _zero_serialization_id(path)


def _zero_serialization_id(path: Path) -> None:
    """Overwrite the ``.data/serialization_id`` record with zeros, fixing its CRC in every place it is recorded."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next((i for i in zf.infolist() if i.filename.endswith("/.data/serialization_id")), None)
        start_dir = zf.start_dir
    if info is None or info.compress_type != zipfile.ZIP_STORED:
        return
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    new = b"0" * info.file_size
    data[start : start + info.file_size] = new
    crc = struct.pack("<I", zlib.crc32(new))
    if data[info.header_offset + 14 : info.header_offset + 18] != bytes(4):
        data[info.header_offset + 14 : info.header_offset + 18] = crc
    end = start + info.file_size
    if data[end : end + 4] == b"PK\x07\x08":  # a data descriptor
        data[end + 4 : end + 8] = crc
    pos = start_dir
    while data[pos : pos + 4] == b"PK\x01\x02":
        n, e, c = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        if data[pos + 46 : pos + 46 + n].decode("utf-8", "replace") == info.filename:
            data[pos + 16 : pos + 20] = crc
        pos += 46 + n + e + c
    path.write_bytes(bytes(data))


def torchscript_seed(d: Path) -> Seed:
    _torchscript(d / "model.jit", "script")
    return Seed("torchscript", d, "model.jit", ("model.jit",))


def torchscript_traced_seed(d: Path) -> Seed:
    _torchscript(d / "traced.pt", "trace")  # a .pt: TorchScript only because its zip says so
    return Seed("torchscript-traced", d, "traced.pt", ("traced.pt",))


#: (format, builder) in campaign order; a new reader adds its seeds here.
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
    ("onnx", onnx_seed),
    ("onnx-subgraph", onnx_subgraph_seed),
    ("onnx-external", onnx_external_seed),
    ("torchscript", torchscript_seed),
    ("torchscript-traced", torchscript_traced_seed),
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
