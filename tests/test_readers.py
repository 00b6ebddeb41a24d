"""Every checkpoint format, written with its own library and read back through open_checkpoint."""

from __future__ import annotations

import json
import os
import struct
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pytest_weights.errors import CheckpointError
from pytest_weights.readers import (
    DistributedCheckpoint,
    GGUFFile,
    NpzFile,
    PeftAdapter,
    SafetensorsFile,
    ShardedCheckpoint,
    TorchFile,
    open_checkpoint,
)
from pytest_weights.runs import Run, RunEntry, discover_run, step_of


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {
        "embed.weight": torch.randn(10, 8, generator=g),
        "layers.0.attn.q_proj.weight": torch.randn(8, 8, generator=g),
        "layers.0.attn.q_proj.bias": torch.randn(8, generator=g),
        "layers.0.norm.weight": torch.ones(8),
        "layers.0.mlp.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "layers.0.mlp.half": torch.randn(4, 4, generator=g).to(torch.float16),
        "position_ids": torch.arange(12),
    }


def _assert_reads_exactly(ckpt, expected: dict[str, torch.Tensor]) -> None:
    infos = {i.name: i for i in ckpt.tensors()}
    assert set(infos) == set(expected)
    for name, want in expected.items():
        info = infos[name]
        assert info.shape == tuple(want.shape), name
        assert info.dtype == want.dtype, name
        got = ckpt.read(name)
        assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape), name
        assert torch.equal(got, want), name


# -- safetensors ------------------------------------------------------------------------------


def test_safetensors_file(tmp_path):
    sd = _model_state()
    save_file(sd, tmp_path / "model.safetensors")
    with open_checkpoint(tmp_path / "model.safetensors") as ckpt:
        assert isinstance(ckpt, SafetensorsFile)
        _assert_reads_exactly(ckpt, sd)
        assert {i.group for i in ckpt.tensors()} == {"weights"}


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_round_trip_through_safetensors(tmp_path, dtype):
    x = (torch.randn(16, 32, generator=_gen(1)) * 4).to(dtype)
    save_file({"w": x, "scale": torch.tensor([0.5])}, tmp_path / "fp8.safetensors")
    with open_checkpoint(tmp_path / "fp8.safetensors") as ckpt:
        info = {i.name: i for i in ckpt.tensors()}["w"]
        assert info.dtype == dtype and info.is_float and info.shape == (16, 32)
        got = ckpt.read("w")
    assert got.dtype == dtype
    # torch.equal has no float8 kernel: compare the bits
    assert torch.equal(got.view(torch.uint8), x.view(torch.uint8))
    assert torch.equal(got.float(), x.float())


def _write_sharded(directory, sd, n_shards=2, stem="model", suffix=".safetensors", index_name=None):
    names = sorted(sd)
    weight_map = {}
    shards = []
    for k in range(n_shards):
        shard = f"{stem}-{k + 1:05d}-of-{n_shards:05d}{suffix}"
        part = {n: sd[n] for n in names[k::n_shards]}
        if suffix == ".safetensors":
            save_file(part, directory / shard)
        else:
            torch.save(part, directory / shard)
        weight_map.update(dict.fromkeys(part, shard))
        shards.append(shard)
    index = directory / (index_name or f"{stem}{suffix}.index.json")
    index.write_text(json.dumps({"metadata": {"total_size": 123}, "weight_map": weight_map}))
    return index, shards


def test_sharded_safetensors_index(tmp_path):
    sd = _model_state()
    index, shards = _write_sharded(tmp_path, sd, n_shards=3)
    with open_checkpoint(index) as ckpt:
        assert isinstance(ckpt, ShardedCheckpoint)
        _assert_reads_exactly(ckpt, sd)
        assert ckpt.metadata == {"total_size": 123}
        # storage order: shard by shard, each in its own offset order
        expected = [i.name for s in shards for i in SafetensorsFile(tmp_path / s).tensors()]
        assert [i.name for i in ckpt.tensors()] == expected
        assert {i.file for i in ckpt.tensors()} == {str(tmp_path / s) for s in shards}
        before = ckpt.identity()
    # identity combines the shards: rewriting one shard changes it
    save_file({n: sd[n] + 1 if sd[n].is_floating_point() else sd[n] for n in sorted(sd)[1::3]}, tmp_path / shards[1])
    with open_checkpoint(index) as ckpt:
        assert ckpt.identity() != before


def test_model_directory_single_and_sharded(tmp_path):
    sd = _model_state()
    single = tmp_path / "single"
    single.mkdir()
    save_file(sd, single / "model.safetensors")
    with open_checkpoint(single) as ckpt:
        assert ckpt.label == "single/model.safetensors"
        _assert_reads_exactly(ckpt, sd)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    _write_sharded(sharded, sd)
    with open_checkpoint(sharded) as ckpt:
        assert isinstance(ckpt, ShardedCheckpoint)
        assert ckpt.label == "sharded/model.safetensors.index.json"
        _assert_reads_exactly(ckpt, sd)


def test_model_directory_pytorch_bin_single_and_sharded(tmp_path):
    sd = _model_state()
    single = tmp_path / "single"
    single.mkdir()
    torch.save(sd, single / "pytorch_model.bin")
    with open_checkpoint(single) as ckpt:
        assert isinstance(ckpt, TorchFile)
        _assert_reads_exactly(ckpt, sd)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    _write_sharded(sharded, sd, stem="pytorch_model", suffix=".bin")
    assert (sharded / "pytorch_model.bin.index.json").is_file()
    with open_checkpoint(sharded) as ckpt:
        assert isinstance(ckpt, ShardedCheckpoint)
        _assert_reads_exactly(ckpt, sd)


def test_index_listing_a_tensor_its_shard_lacks(tmp_path):
    index, _ = _write_sharded(tmp_path, _model_state())
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"ghost\.weight") as err:
        open_checkpoint(index)
    assert err.value.path == str(index)


# -- PyTorch ----------------------------------------------------------------------------------


def _adam_state(model: torch.nn.Module) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4, generator=_gen(3))).sum().backward()
    opt.step()
    return opt.state_dict()


def test_torch_state_dict(tmp_path):
    sd = _model_state()
    torch.save(sd, tmp_path / "weights.pth")
    with open_checkpoint(tmp_path / "weights.pth") as ckpt:
        assert isinstance(ckpt, TorchFile)
        _assert_reads_exactly(ckpt, sd)
        assert {i.group for i in ckpt.tensors()} == {"weights"}
        # storage order is the order torch.save wrote the storages in
        assert [i.name for i in ckpt.tensors()] == list(sd)
        # read() hands out a private copy
        ckpt.read("embed.weight").zero_()
        assert torch.equal(ckpt.read("embed.weight"), sd["embed.weight"])


def test_torch_nested_model_optimizer_step(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optim = _adam_state(model)
    torch.save({"model": model.state_dict(), "optimizer": optim, "step": 100, "note": "hi"}, tmp_path / "train.pt")
    with open_checkpoint(tmp_path / "train.pt") as ckpt:
        groups = {i.name: i.group for i in ckpt.tensors()}
        expected = {f"model.{k}": v for k, v in model.state_dict().items()}
        for pid, state in optim["state"].items():
            expected.update({f"optimizer.state.{pid}.{k}": v for k, v in state.items()})
        _assert_reads_exactly(ckpt, expected)
        assert groups["model.0.weight"] == "weights"
        assert groups["optimizer.state.0.exp_avg"] == "optimizer"
        assert groups["optimizer.state.3.exp_avg_sq"] == "optimizer"
        assert ckpt.metadata["step"] == 100
        assert ckpt.metadata["note"] == "hi"
        assert ckpt.metadata["optimizer.param_groups.0.lr"] == 1e-3


def test_torch_bare_optimizer_state_dict_is_optimizer_group(tmp_path):
    optim = _adam_state(torch.nn.Linear(4, 2))
    torch.save(optim, tmp_path / "optim.pt")
    with open_checkpoint(tmp_path / "optim.pt") as ckpt:
        assert {i.name for i in ckpt.tensors()} == {
            f"state.{p}.{k}" for p in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq")
        }
        assert {i.group for i in ckpt.tensors()} == {"optimizer"}


def test_torch_lightning_layout(tmp_path):
    model = torch.nn.Linear(4, 2)
    optim = _adam_state(model)
    ckpt_obj = {
        "epoch": 3,
        "global_step": 900,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [optim],
        "lr_schedulers": [],
        "hyper_parameters": {"hidden": 4, "lr": 1e-3},
    }
    torch.save(ckpt_obj, tmp_path / "epoch=3-step=900.ckpt")
    with open_checkpoint(tmp_path / "epoch=3-step=900.ckpt") as ckpt:
        infos = {i.name: i for i in ckpt.tensors()}
        assert infos["state_dict.net.weight"].group == "weights"
        assert infos["optimizer_states.0.state.0.exp_avg"].group == "optimizer"
        assert torch.equal(ckpt.read("state_dict.net.bias"), model.bias.detach())
        assert ckpt.metadata["global_step"] == 900
        assert ckpt.metadata["epoch"] == 3
        assert ckpt.metadata["hyper_parameters.hidden"] == 4


def test_torch_legacy_non_zip_format(tmp_path):
    sd = _model_state()
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with open_checkpoint(tmp_path / "old.pt") as ckpt:
        _assert_reads_exactly(ckpt, sd)


def test_torch_bare_tensor_and_shared_storage(tmp_path):
    t = torch.randn(5, 3, generator=_gen(4))
    torch.save(t, tmp_path / "t.pt")
    with open_checkpoint(tmp_path / "t.pt") as ckpt:
        _assert_reads_exactly(ckpt, {"tensor": t})
    # tied weights and a non-contiguous view of one storage
    base = torch.randn(6, 4, generator=_gen(5))
    torch.save({"a": base, "tied": base, "col": base[:, 1]}, tmp_path / "tied.pt")
    with open_checkpoint(tmp_path / "tied.pt") as ckpt:
        _assert_reads_exactly(ckpt, {"a": base, "tied": base, "col": base[:, 1]})
        assert ckpt.read("col").is_contiguous()


def test_torch_read_after_close(tmp_path):
    sd = _model_state()
    torch.save(sd, tmp_path / "w.pt")
    ckpt = open_checkpoint(tmp_path / "w.pt")
    ckpt.close()
    assert torch.equal(ckpt.read("embed.weight"), sd["embed.weight"])


# -- Distributed Checkpoint -------------------------------------------------------------------


def _dcp_save(state, path) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(path), no_dist=True)


def test_distributed_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optim = _adam_state(model)
    extra = _model_state()
    state = {"model": {**model.state_dict(), **extra}, "optimizer": optim, "step": 7}
    _dcp_save(state, tmp_path / "dcp")
    assert (tmp_path / "dcp" / ".metadata").is_file()
    with open_checkpoint(tmp_path / "dcp") as ckpt:
        assert isinstance(ckpt, DistributedCheckpoint)
        expected = {f"model.{k}": v for k, v in state["model"].items()}
        for pid, s in optim["state"].items():
            expected.update({f"optimizer.state.{pid}.{k}": v for k, v in s.items()})
        _assert_reads_exactly(ckpt, expected)
        groups = {i.name: i.group for i in ckpt.tensors()}
        assert groups["model.0.weight"] == "weights"
        assert groups["optimizer.state.1.exp_avg"] == "optimizer"
        assert ckpt.metadata.get("step") == 7
        assert ckpt.label == "dcp"


# -- PEFT -------------------------------------------------------------------------------------


def _lora_state(r=4) -> dict[str, torch.Tensor]:
    g = _gen(6)
    sd = {}
    for layer in range(2):
        for mod in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            sd[f"{prefix}.lora_A.weight"] = torch.randn(r, 16, generator=g)
            sd[f"{prefix}.lora_B.weight"] = torch.zeros(16, r)
    return sd


@pytest.mark.parametrize("weights_file", ["adapter_model.safetensors", "adapter_model.bin"])
def test_peft_adapter(tmp_path, weights_file):
    sd = _lora_state()
    if weights_file.endswith(".safetensors"):
        save_file(sd, tmp_path / weights_file)
    else:
        torch.save(sd, tmp_path / weights_file)
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "some/model",
        "lora_dropout": 0.05,
    }
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with open_checkpoint(tmp_path) as ckpt:
        assert isinstance(ckpt, PeftAdapter)
        _assert_reads_exactly(ckpt, sd)
        cfg = ckpt.adapter_config
        assert (cfg.peft_type, cfg.r, cfg.lora_alpha) == ("LORA", 4, 8.0)
        assert cfg.target_modules == ("q_proj", "v_proj")
        assert cfg.scaling == 2.0
        assert cfg.raw["lora_dropout"] == 0.05
        assert ckpt.label == f"{tmp_path.name}/{weights_file}"


def test_peft_config_string_targets_and_bad_rank(tmp_path):
    save_file(_lora_state(), tmp_path / "adapter_model.safetensors")
    cfg_path = tmp_path / "adapter_config.json"
    cfg_path.write_text(json.dumps({"r": 4, "lora_alpha": 4, "target_modules": "all-linear", "use_rslora": True}))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.adapter_config.target_modules == "all-linear"
        assert ckpt.adapter_config.scaling == 2.0
    cfg_path.write_text(json.dumps({"r": "four"}))
    with pytest.raises(CheckpointError, match="'r' should be") as err:
        open_checkpoint(tmp_path)
    assert err.value.path == str(cfg_path)


# -- NumPy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz(tmp_path, save):
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((6, 5)).astype(np.float32),
        "h": rng.standard_normal(7).astype(np.float16),
        "d": rng.standard_normal((2, 2)),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "big_endian": np.arange(5, dtype=">f4"),
        "ids": np.arange(9, dtype=np.int64),
        "mask": np.array([True, False]),
        "labels": np.array(["a", "b"]),  # not numeric: skipped
    }
    save(tmp_path / "w.npz", **arrays)
    with open_checkpoint(tmp_path / "w.npz") as ckpt:
        assert isinstance(ckpt, NpzFile)
        expected = {
            k: torch.from_numpy(np.ascontiguousarray(v.astype(v.dtype.newbyteorder("="))))
            for k, v in arrays.items()
            if k != "labels"
        }
        _assert_reads_exactly(ckpt, expected)
        assert [i.name for i in ckpt.tensors()] == [k for k in arrays if k != "labels"]
        assert ckpt.skipped == ["labels"]


# -- GGUF -------------------------------------------------------------------------------------


def _write_gguf(path, tensors: dict[str, tuple[np.ndarray, object]]) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    for name, (data, raw_dtype) in tensors.items():
        if raw_dtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_plain_types_exact(tmp_path):
    gguf = pytest.importorskip("gguf")
    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((4, 64)).astype(np.float32)
    f16 = rng.standard_normal((3, 32)).astype(np.float16)
    bf16 = torch.randn(2, 3, 32, generator=_gen(7)).to(torch.bfloat16)
    i32 = np.arange(6, dtype=np.int32).reshape(2, 3)
    bf16_bytes = bf16.view(torch.int16).numpy().view(np.uint8).reshape(2, 3, 64)
    _write_gguf(
        tmp_path / "m.gguf",
        {"f32": (f32, None), "f16": (f16, None), "bf16": (bf16_bytes, Q.BF16), "i32": (i32, None)},
    )
    with open_checkpoint(tmp_path / "m.gguf") as ckpt:
        assert isinstance(ckpt, GGUFFile)
        _assert_reads_exactly(
            ckpt,
            {"f32": torch.from_numpy(f32), "f16": torch.from_numpy(f16), "bf16": bf16, "i32": torch.from_numpy(i32)},
        )
        assert ckpt.tensor_types == {"f32": "F32", "f16": "F16", "bf16": "BF16", "i32": "I32"}
        assert [i.name for i in ckpt.tensors()] == ["f32", "f16", "bf16", "i32"]


@pytest.mark.parametrize(("qname", "levels"), [("Q8_0", 127), ("Q4_0", 8), ("Q4_1", 15), ("Q5_0", 16)])
def test_gguf_quantized_within_tolerance(tmp_path, qname, levels):
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[qname]
    original = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    _write_gguf(tmp_path / "q.gguf", {"w": (gguf.quants.quantize(original, qtype), qtype)})
    with open_checkpoint(tmp_path / "q.gguf") as ckpt:
        (info,) = ckpt.tensors()
        assert (info.shape, info.dtype) == ((8, 64), torch.float32)
        got = ckpt.read("w")
    assert got.shape == (8, 64) and got.dtype == torch.float32
    # each 32-value block is rounded to `levels` steps of its own scale: error ≤ one step
    blocks = np.abs(original).reshape(8, 2, 32).max(axis=2, keepdims=True)
    tol = torch.from_numpy(np.broadcast_to(blocks / levels * 1.01 + 1e-6, (8, 2, 32)).reshape(8, 64).copy())
    assert torch.all((got - torch.from_numpy(original)).abs() <= tol)


@pytest.mark.parametrize(("qname", "d_offsets"), [("Q4_K", (0, 2)), ("Q6_K", (208,))])
def test_gguf_k_quants_dequantized(tmp_path, qname, d_offsets):
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[qname]
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    # gguf cannot quantize K-quants in Python: write random blocks with sane fp16 scales
    raw = np.random.default_rng(2).integers(0, 256, size=(3, 2 * block_bytes), dtype=np.uint8)
    blocks = raw.reshape(3, 2, block_bytes)
    for off in d_offsets:
        blocks[:, :, off : off + 2] = np.array([0.01], dtype=np.float16).view(np.uint8)
    _write_gguf(tmp_path / "k.gguf", {"w": (raw, qtype)})
    with open_checkpoint(tmp_path / "k.gguf") as ckpt:
        assert ckpt.tensors()[0].shape == (3, 512)
        got = ckpt.read("w")
    want = gguf.quants.dequantize(raw, qtype)
    assert got.shape == (3, 512) and torch.isfinite(got).all()
    assert torch.equal(got, torch.from_numpy(want))


def test_gguf_without_the_package(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(20))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf → ImportError
    with pytest.raises(CheckpointError, match=r"pip install 'pytest-weights\[gguf\]'") as err:
        open_checkpoint(tmp_path / "m.gguf")
    assert err.value.path == str(tmp_path / "m.gguf")


# -- runs and non-checkpoints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("checkpoint-500", 500),
        ("step_1000.safetensors", 1000),
        ("step-1000", 1000),
        ("step1000.pt", 1000),
        ("global_step200", 200),
        ("epoch=3-step=900.ckpt", 900),
        ("ckpt_300.pt", 300),
        ("iter_0000400", 400),
        ("model_700.pth", 700),
        ("00000800", 800),
        ("last.ckpt", None),
        ("model.safetensors", None),
        ("runs", None),
        ("epoch=3.ckpt", None),
    ],
)
def test_step_of(name, step):
    assert step_of(name) == step


def test_discover_run_orders_by_step_numerically(tmp_path):
    sd = {"w": torch.zeros(2)}
    for step in (1000, 500, 20000):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        save_file(sd, d / "model.safetensors")
    (tmp_path / "trainer_state.json").write_text("{}")
    (tmp_path / "runs").mkdir()
    run = discover_run(tmp_path)
    assert isinstance(run, Run)
    assert run.path == tmp_path
    assert run.entries == tuple(RunEntry(s, tmp_path / f"checkpoint-{s}") for s in (500, 1000, 20000))
    assert run.latest == RunEntry(20000, tmp_path / "checkpoint-20000")
    assert run.steps == (500, 1000, 20000)
    with open_checkpoint(run.latest.path) as ckpt:
        assert [i.name for i in ckpt.tensors()] == ["w"]
    # the run directory itself is not a checkpoint, and says what to pass instead
    with pytest.raises(CheckpointError, match=r"3 checkpoints from one run \(steps 500, 1000, 20000\)"):
        open_checkpoint(tmp_path)


def test_discover_run_files_of_mixed_layouts(tmp_path):
    for name in ("epoch=0-step=90.ckpt", "epoch=1-step=180.ckpt", "last.ckpt", "notes.txt", "step_9.txt"):
        (tmp_path / name).write_bytes(b"")
    run = discover_run(tmp_path)
    assert [(e.step, e.path.name) for e in run.entries] == [
        (90, "epoch=0-step=90.ckpt"),
        (180, "epoch=1-step=180.ckpt"),
    ]


def test_not_a_run(tmp_path):
    assert discover_run(tmp_path) is None  # empty
    save_file({"w": torch.zeros(1)}, tmp_path / "model.safetensors")
    (tmp_path / "step_100").mkdir()
    assert discover_run(tmp_path) is None  # itself a checkpoint
    assert discover_run(tmp_path / "model.safetensors") is None  # a file
    assert discover_run(tmp_path / "missing") is None


def test_open_checkpoint_refuses_non_checkpoints(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint") as err:
        open_checkpoint(tmp_path / "notes.txt")
    assert err.value.path == str(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty directory") as err:
        open_checkpoint(tmp_path / "empty")
    assert err.value.path == str(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint") as err:
        open_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nope.safetensors")


def test_safetensors_large_tensors_are_mapped_and_misaligned_ones_read(tmp_path):
    big = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))  # 2 MiB: mapped
    path = tmp_path / "m.safetensors"
    save_file({"big": big, "small": big[:2].clone()}, path)
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.read("big"), big) and torch.equal(ckpt.read("small"), big[:2])
    # the same bytes behind a header one byte longer: float32 data no longer 4-byte aligned
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].rstrip(b" ") + b" " * (n - len(raw[8 : 8 + n].rstrip(b" ")) + 1)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", n + 1) + header + raw[8 + n :])
    with open_checkpoint(odd) as ckpt:
        assert torch.equal(ckpt.read("big"), big)  # falls back to a plain read


def test_reading_from_two_threads_opens_one_file_descriptor(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "m.safetensors"
    save_file({f"t{i}": torch.randn(512, 600 if i % 2 else 4) for i in range(40)}, path)  # mapped and read
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        ckpt = open_checkpoint(path)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(ckpt.read, [i.name for i in ckpt.tensors()]))
        ckpt.close()
    assert len(os.listdir("/proc/self/fd")) == fds


def test_every_reader_names_a_missing_tensor_in_one_line_from_the_base(tmp_path):
    """The name lookup and its error live in the reader base: the same message whatever the format."""
    from pytest_weights.readers.memory import StateDictCheckpoint

    sd = _model_state()
    save_file(sd, tmp_path / "m.safetensors")
    torch.save(sd, tmp_path / "m.pt")
    np.savez(tmp_path / "m.npz", **{k: v.float().numpy() for k, v in sd.items()})
    (tmp_path / "sharded").mkdir()
    index, _ = _write_sharded(tmp_path / "sharded", sd)
    paths = [tmp_path / "m.safetensors", tmp_path / "m.pt", tmp_path / "m.npz", index]
    for ckpt in [*(open_checkpoint(p) for p in paths), StateDictCheckpoint(sd)]:
        with pytest.raises(CheckpointError) as info:
            ckpt.read("no.such.tensor")
        assert str(info.value) == f"{ckpt.where()}: no tensor named 'no.such.tensor'"
        assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
        ckpt.close()
    assert StateDictCheckpoint(sd).where() == StateDictCheckpoint(sd).label
