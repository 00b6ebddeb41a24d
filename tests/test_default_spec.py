"""The bundled default spec across architectures: the calibration zoo (real published weights of
BERT-style, conv, conv+LSTM, 1×1-head, detector and OCR models in every format), faults injected
into copies of them, and healthy models early in training (PyTorch's default init) gated live.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from pytest_weights import WeightsGate, check, open_checkpoint
from pytest_weights.gate import WeightsGateWarning
from pytest_weights.readers.memory import StateDictCheckpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ZOO_KEYS = [
    "minilm",
    "mtcnn-pnet",
    "mtcnn-rnet",
    "mtcnn-onet",
    "silero",
    "silero-onnx",
    "silero-onnx-half",
    "silero-jit",
    "lpips-alex",
    "lpips-vgg",
    "lpips-squeeze",
    "yolov8n-onnx",
    "ppocr-det",
    "ppocr-rec",
    "ppocr-cls",
]
EMBEDDING = ("embed", ".wte.", ".wpe.", "emb.weight")


def load_all(path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, through the plugin's own reader (copies: faults edit them)."""
    with open_checkpoint(path) as ckpt:
        return {i.name: ckpt.read(i.name).clone() for i in ckpt.tensors()}


def matrices(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The tensors the default spec's matrix checks select: float, ≥ 2-D, ≥ 4096 values."""
    return [n for n, t in tensors.items() if t.is_floating_point() and t.dim() >= 2 and t.numel() >= 4096]


def scale(t: torch.Tensor) -> float:
    """std·√fan_in in float64 (PyTorch layout), computed here independently of the plugin."""
    x = t.double()
    return float(x.std(unbiased=False)) * math.sqrt(t[0].numel())


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_default_spec_passes_every_zoo_model(zoo, key):
    report = check(zoo[key], "default", device="cpu")
    bad = [f"{r.name}: {r.summary}: {[d.subject for d in r.deviations[:3]]}" for r in report.failures]
    assert not bad, bad
    for r in report.results:
        if r.skipped:  # skipped only for lack of anything to judge, and saying why
            assert "nothing" in r.summary, r.summary


def test_a_model_with_only_small_tensors_is_skipped_with_reasons(zoo):
    report = check(zoo["lpips-vgg"], "default", device="cpu")
    by_name = {r.name: r for r in report.results}
    assert by_name["finite"].passed and not by_name["finite"].skipped  # every float tensor is checked
    for name in ("not-constant", "scale-vs-model", "not-flat", "consistent-with-siblings"):
        assert by_name[name].skipped, name
        assert "nothing to check" in by_name[name].summary or "nothing to compare" in by_name[name].summary


# ----------------------------------------------------------------------------- fault matrix


def _uniform(t: torch.Tensor, half_width: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1) * half_width).to(t.dtype)


def inject(fault: str, t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``t`` with one fault: what a broken export, a bad merge or a reset layer leaves behind."""
    out = t.clone()
    flat = out.view(-1)
    k = int(torch.randint(0, flat.numel(), (1,), generator=torch.Generator().manual_seed(seed)))
    if fault == "nan":
        flat[k] = math.nan
    elif fault == "inf":
        flat[k] = math.inf
    elif fault == "zeroed":
        out.zero_()
    elif fault == "constant":
        out.fill_(float(t.double().abs().mean()))
    elif fault == "x100":
        out = (t.double() * 100).to(t.dtype)
    elif fault == "x0.01":
        out = (t.double() * 0.01).to(t.dtype)
    elif fault == "uniform-init":  # nn.Linear/Conv reset_parameters: kaiming_uniform(a=√5) = U(±1/√fan_in)
        out = _uniform(t, 1 / math.sqrt(t[0].numel()), seed)
    elif fault == "uniform-same-std":  # a uniform matrix of the same scale: only its shape gives it away
        out = _uniform(t, math.sqrt(3) * float(t.double().std()), seed)
    else:
        raise ValueError(fault)
    return out


FAULTS = ["nan", "inf", "zeroed", "constant", "x100", "x0.01", "uniform-init", "uniform-same-std"]
FAULT_MODELS = [k for k in ZOO_KEYS if not k.startswith("lpips") and k != "mtcnn-pnet"]  # ≥ 3 matrices


def targets(fault: str, tensors: dict[str, torch.Tensor]) -> list[str]:
    """The matrices a fault goes into: the hardest one for it, and a seeded random one."""
    names = [n for n in matrices(tensors) if not any(e in n for e in EMBEDDING)]
    by_scale = sorted(names, key=lambda n: scale(tensors[n]))
    hardest = {"x100": by_scale[0], "x0.01": by_scale[-1]}.get(fault, max(names, key=lambda n: tensors[n].numel()))
    rand = names[int(torch.randint(0, len(names), (1,), generator=torch.Generator().manual_seed(len(names))))]
    return list(dict.fromkeys([hardest, rand]))


@pytest.fixture(scope="module")
def zoo_tensors(zoo):
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(key: str) -> dict[str, torch.Tensor]:
        if key not in cache:
            cache[key] = load_all(zoo[key])
        return cache[key]

    return get


@pytest.mark.parametrize("key", FAULT_MODELS)
def test_every_fault_in_one_matrix_fails_naming_that_tensor(zoo_tensors, key):
    tensors = zoo_tensors(key)
    assert len(matrices(tensors)) >= 3
    missed = []
    for fault in FAULTS:
        for target in targets(fault, tensors):
            broken = {**tensors, target: inject(fault, tensors[target])}
            report = check(StateDictCheckpoint(broken, label=f"{key}+{fault}"), "default", device="cpu")
            named = {d.subject for r in report.failures for d in r.deviations}
            if report.passed or named != {target}:
                missed.append((fault, target, sorted(named)[:3], [r.name for r in report.failures]))
    assert not missed, missed


# ------------------------------------------------------------------ early in training, gated live


class DefaultInitMLP(nn.Module):
    """PyTorch's default init everywhere (kaiming_uniform: excess kurtosis −1.2 per matrix)."""

    def __init__(self, width: int = 96, depth: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(32, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for layer in self.layers:
            h = h + torch.relu(layer(h))
        return self.out(h)


class DefaultInitTransformer(nn.Module):
    """nn.Embedding (N(0, 1)) + nn.TransformerEncoder (xavier/kaiming uniform) + a head: default init."""

    def __init__(self, vocab: int = 64, width: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=128, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)))


def _batches(model: nn.Module, steps: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        if isinstance(model, DefaultInitTransformer):
            ids = torch.randint(0, 64, (8, 16), generator=g)
            yield ids, (ids + 1) % 64
        else:
            x = torch.randn(32, 32, generator=g)
            yield x, torch.roll(x, 1, dims=1)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(model, DefaultInitTransformer):
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return nn.functional.mse_loss(out, y)


@pytest.mark.parametrize("model_cls", [DefaultInitMLP, DefaultInitTransformer])
def test_gate_passes_healthy_default_init_models_from_step_0(model_cls):
    model = model_cls()
    gate = WeightsGate("default", device="cpu", on_failure="raise")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gate.check(model, step=0)
    for step, (x, y) in enumerate(_batches(model, 60), start=1):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
        if step in (1, 5, 20, 60):
            report = gate.check(model, step=step)  # raises WeightsGateError on any failure
            flat = next(r for r in report.results if r.name == "not-flat")
            assert flat.passed and not flat.skipped
    # the same model with one matrix scaled ×100 early in training is still caught by name
    with torch.no_grad():
        target = next(n for n, p in model.named_parameters() if p.dim() == 2 and p.numel() >= 4096 and "embed" not in n)
        dict(model.named_parameters())[target].mul_(100)
    with pytest.warns(WeightsGateWarning, match="weights gate failed at step 61"):
        report = WeightsGate("default", device="cpu", on_failure="warn").check(model, step=61)
    assert not report.passed
    assert {d.subject for r in report.failures for d in r.deviations} == {target}


def test_lightning_gate_lets_a_default_init_mlp_train(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from pytest_weights.integrations.lightning import WeightsGateCallback

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = DefaultInitMLP()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return _loss(self.net, x, y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.roll(x, 1, dims=1)), batch_size=16)
    gate = WeightsGateCallback("default", every_n_steps=20, device="cpu")
    trainer = L.Trainer(
        max_steps=60,
        callbacks=[gate],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Lit(), data)
    assert trainer.global_step == 60 and gate.failed_step is None
    assert sorted(gate.reports) == [20, 40, 60] and all(r.passed for r in gate.reports.values())


def test_hf_trainer_gate_lets_a_default_init_model_train(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pytest_weights.integrations.huggingface import WeightsGateCallback

    transformers.utils.logging.set_verbosity_error()

    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = DefaultInitMLP()

        def forward(self, x, labels):
            return {"loss": _loss(self.net, x, labels)}

    class Data(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": torch.roll(self.x[i], 1)}

    gate = WeightsGateCallback("default", device="cpu", on_failure="stop")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=40,
        save_strategy="steps",
        save_steps=10,
        save_only_model=True,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        optim="adamw_torch",
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(model=WithLoss(), args=args, train_dataset=Data(), callbacks=[gate])
    trainer.train()
    assert trainer.state.global_step == 40 and gate.failed_step is None
    assert sorted(gate.reports) == [10, 20, 30, 40] and all(r.passed for r in gate.reports.values())
