"""Matching ``optimizer.state_dict()`` to parameter names (pytest_weights.forces.map_optimizer_state).

Every case steps a real ``torch.optim.AdamW`` on a real module, saves what a trainer saves,
and checks each mapped name against the optimizer's own state for that parameter object
(``opt.state[p]``), the independent reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pytest_weights import forces as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, n: int = 2) -> None:
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()


def assert_matches(smap: F.StateMap, model: nn.Module, opt: torch.optim.Optimizer, prefix: str = "") -> None:
    """Every parameter with state is mapped to its own state (exp_avg equal), and nothing else is."""
    expected = {prefix + n: opt.state[p] for n, p in model.named_parameters() if p in opt.state}
    got = smap.adam()
    assert set(got) == set(expected)
    for name, st in expected.items():
        assert torch.equal(got[name][0]["exp_avg"], st["exp_avg"]), name


def save_pt(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


class ConvNet(nn.Module):
    """BatchNorm buffers (running_mean/var, an int num_batches_tracked) between parameters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)  # same shapes as fc: only the order tells them apart

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc(self.bn(self.conv(x)).mean((2, 3))))


class TiedLM(nn.Module):
    """``lm_head.weight`` is the embedding matrix (tied), as in GPT-2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(16, 8)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 16, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.proj(self.norm(self.embed(x))))


def test_param_names_are_used_when_present():
    model = ConvNet()
    opt = torch.optim.AdamW(model.named_parameters(), lr=0.01)
    step(model, opt, torch.randn(4, 3, 6, 6))
    sd = opt.state_dict()
    assert "param_names" in sd["param_groups"][0]  # torch ≥ 2.6
    smap = F.map_optimizer_state(sd)
    assert smap.method == "param_names"
    assert_matches(smap, model, opt)


def test_model_parameters_with_batchnorm_buffers(tmp_path):
    model = ConvNet()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    step(model, opt, torch.randn(4, 3, 6, 6))
    layout = F.weights_layout(save_pt(tmp_path / "model.pt", model.state_dict()))
    assert layout.ordered
    assert [n for n, _ in layout.tensors] == [n for n, t in model.state_dict().items() if t.is_floating_point()]
    smap = F.map_optimizer_state(opt.state_dict(), layout)
    assert smap.method == "checkpoint order (file order without buffers)"
    assert_matches(smap, model, opt)
    with pytest.raises(ValueError, match="param_names"):  # no layout, no names: nothing to go on
        F.state_by_name(opt.state_dict())


def test_tied_weights_are_listed_once(tmp_path):
    model = TiedLM()
    assert "lm_head.weight" not in dict(model.named_parameters())  # torch dedups the shared parameter
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    step(model, opt, torch.randint(0, 16, (4, 5)))
    sd = model.state_dict()
    assert "lm_head.weight" in sd  # ... but the state dict has both names, sharing storage
    layout = F.weights_layout(save_pt(tmp_path / "model.pt", sd))
    assert layout.aliases == {"lm_head.weight"}
    smap = F.map_optimizer_state(opt.state_dict(), layout)
    assert smap.method == "checkpoint order (file order without tied duplicates)"
    assert_matches(smap, model, opt)


def test_hf_decay_split_from_file_order(tmp_path):
    """Hugging Face Trainer's groups (decay first, then no-decay, each in named_parameters() order)
    on a real BERT saved with torch.save: the split is found by name rules and verified by shape."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg)
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": 0.01},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    ids = torch.randint(0, 50, (2, 6))
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=ids).last_hidden_state.square().mean().backward()
        opt.step()
    layout = F.weights_layout(save_pt(tmp_path / "pytorch_model.bin", model.state_dict()))
    smap = F.map_optimizer_state(opt.state_dict(), layout)
    assert smap.method.startswith("decay/no-decay split (file order")
    assert_matches(smap, model, opt)
    for name, (_, group) in smap.entries.items():
        assert group["weight_decay"] == (0.01 if name in decay else 0.0)


def test_hf_gpt2_safetensors_with_config(tmp_path):
    """GPT-2 (``h.N``, lm_head tied to wte) saved by save_pretrained: safetensors is sorted by name,
    so the order comes from the model rebuilt from config.json."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=32, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    named = list(model.named_parameters())
    assert "lm_head.weight" not in dict(named)
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if n in decay], "weight_decay": 0.1},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    ids = torch.randint(0, 32, (2, 8))
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.save_pretrained(tmp_path / "ck")
    save_pt(tmp_path / "ck" / "optimizer.pt", opt.state_dict())
    layout = F.weights_layout(tmp_path / "ck")
    assert not layout.ordered and layout.model_order == tuple(n for n, _ in named)
    assert layout.decay_names == decay
    smap = F.map_optimizer_state(F.load_optimizer_file(tmp_path / "ck" / "optimizer.pt"), layout)
    assert smap.method.startswith("decay/no-decay split (named_parameters() of the model in config.json")
    assert_matches(smap, model, opt)
    assert any(n.startswith("transformer.h.1.") for n in smap.entries)


def test_safetensors_without_order_fails_saying_what_was_tried(tmp_path):
    model = ConvNet()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    step(model, opt, torch.randn(4, 3, 6, 6))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    layout = F.weights_layout(tmp_path / "model.safetensors")
    with pytest.raises(F.OptimizerMappingError) as exc:
        F.map_optimizer_state(opt.state_dict(), layout, source="step-2/optimizer.pt")
    msg = str(exc.value)
    assert msg.startswith("step-2/optimizer.pt: 8 parameters in 1 group(s); tried param_names (absent)")
    assert "safetensors stores tensors sorted by name" in msg and "no config.json" in msg


def test_state_of_another_model_fails_with_the_first_shape_mismatch(tmp_path):
    model, other = ConvNet(), TiedLM()
    opt = torch.optim.AdamW(other.parameters(), lr=0.01)
    step(other, opt, torch.randint(0, 16, (4, 5)))
    layout = F.weights_layout(save_pt(tmp_path / "model.pt", model.state_dict()))
    with pytest.raises(F.OptimizerMappingError) as exc:
        F.map_optimizer_state(opt.state_dict(), layout, source="optimizer.pt")
    msg = str(exc.value)
    assert "optimizer.pt: 5 parameters in 1 group(s); tried param_names (absent); checkpoint order (" in msg
    # ConvNet: 10 float tensors, 8 without the BatchNorm statistics; TiedLM has 5 parameters
    assert "file order: 10 tensors for 5 parameters" in msg and "file order without buffers: 8 tensors" in msg


def test_shape_mismatch_names_the_index_and_both_shapes(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8))
    swapped = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    opt = torch.optim.AdamW(swapped.parameters(), lr=0.01)
    step(swapped, opt, torch.randn(2, 4))
    layout = F.weights_layout(save_pt(tmp_path / "m.pt", model.state_dict()))
    with pytest.raises(F.OptimizerMappingError, match=r"shape mismatch at #2: state \(3, 8\) vs 1.weight \(8, 8\)"):
        F.map_optimizer_state(opt.state_dict(), layout)


def test_equal_weight_decay_and_shapes_is_ambiguous(tmp_path):
    """Two groups with the same weight_decay and interchangeable shapes: either could be 'decay'."""
    model = nn.Module()
    model.a = nn.Parameter(torch.randn(3))
    model.b = nn.Module()
    model.b.bias = nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([{"params": [model.a]}, {"params": [model.b.bias]}], lr=0.01, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        (model.a.square().sum() + model.b.bias.sum()).backward()
        opt.step()
    layout = F.weights_layout(save_pt(tmp_path / "m.pt", model.state_dict()))
    with pytest.raises(F.OptimizerMappingError, match="ambiguous: the shapes fit 2 different name orders"):
        F.map_optimizer_state(opt.state_dict(), layout)


def test_parameter_left_out_of_the_optimizer():
    """Optimizer params a subsequence of the checkpoint's: accepted when the shapes fit one way."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Linear(8, 8, bias=False), nn.Linear(8, 2, bias=False))
    x = torch.randn(2, 4)
    opt = torch.optim.AdamW([model[0].weight, model[2].weight], lr=0.01)
    step(model, opt, x)
    layout = F.WeightsLayout(tuple((n, tuple(t.shape)) for n, t in model.state_dict().items()), ordered=True)
    smap = F.map_optimizer_state(opt.state_dict(), layout)
    assert smap.left_out == ("1.weight",) and set(smap.entries) == {"0.weight", "2.weight"}
    assert torch.equal(smap.entries["2.weight"][0]["exp_avg"], opt.state[model[2].weight]["exp_avg"])
    # left out among equal shapes: which one is unknowable
    same = nn.Sequential(*(nn.Linear(8, 8, bias=False) for _ in range(3)))
    opt = torch.optim.AdamW([same[0].weight, same[2].weight], lr=0.01)
    step(same, opt, torch.randn(2, 8))
    layout = F.WeightsLayout(tuple((n, tuple(t.shape)) for n, t in same.state_dict().items()), ordered=True)
    with pytest.raises(F.OptimizerMappingError, match=r"checkpoint order .*file order: 3 tensors for 2 parameters"):
        F.map_optimizer_state(opt.state_dict(), layout)


def test_unstepped_and_partly_stepped_state(tmp_path):
    model = ConvNet()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    layout = F.weights_layout(save_pt(tmp_path / "model.pt", model.state_dict()))
    smap = F.map_optimizer_state(opt.state_dict(), layout)  # step 0: nothing stepped, nothing to name
    assert smap.entries == {} and smap.n_params == 8 and "not stepped" in smap.method
    assert F.state_by_name(opt.state_dict(), layout=layout) == {}
    # fc2 gets no gradient: AdamW keeps no state for it; the others still map, fc2 maps to {}
    opt.zero_grad()
    model.fc(model.bn(model.conv(torch.randn(4, 3, 6, 6))).mean((2, 3))).sum().backward()
    opt.step()
    smap = F.map_optimizer_state(opt.state_dict(), layout)
    assert smap.entries["fc2.weight"][0] == {} and "fc2.weight" not in smap.adam()
    assert_matches(smap, model, opt)


def test_lightning_checkpoint_layout(tmp_path):
    """A Lightning ``.ckpt``: ``state_dict`` (names as the reader flattens them) + ``optimizer_states``."""
    model = ConvNet()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    step(model, opt, torch.randn(4, 3, 6, 6))
    ckpt = {
        "epoch": 0,
        "global_step": 2,
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "callbacks": {"ModelCheckpoint{}": {"kth_value": torch.tensor(float("inf"))}},
    }
    path = save_pt(tmp_path / "epoch=0-step=2.ckpt", ckpt)
    saved = F.load_optimizer_file(path)
    sd, lr = F.optimizer_state_of(saved)
    assert lr is None
    layout = F.weights_layout(path)
    assert all(n.startswith("state_dict.") for n, _ in layout.tensors)  # callbacks' tensors are not weights
    smap = F.map_optimizer_state(sd, layout)
    assert_matches(smap, model, opt, prefix="state_dict.")
    budgets = F.checkpoint_budgets(lambda n: dict(model.state_dict())[n.removeprefix("state_dict.")], saved,
                                   layout=layout)  # fmt: skip
    assert set(budgets) == set(smap.adam())
