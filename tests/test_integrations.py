"""The training-framework callbacks with the real frameworks: a Hugging Face ``Trainer`` on a
tiny GPT-2 built from its config (no hub download) and a Lightning ``Trainer`` on a tiny
module, each trained with AdamW on the CPU, with a fault injected by another callback.

transformers and lightning are imported inside the fixtures (slow imports), so collecting
the suite does not pay for them.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_weights.gate import WeightsGateError
from pytest_weights.spec import Spec, parse_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: models are built from configs
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GATE_LOGGER = "pytest_weights.gate"
pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a .validation_step. but have no"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated"),
]


def run_spec(include: str, *entries: str) -> Spec:
    """A run spec on the tensors ``include`` matches: ``entries``, then std drift (judged at every
    check) and std saturation (deferred to the end of training)."""
    drift = "{name: std-drift, kind: drift, stat: std, max_rel: 0.5}"
    saturates = "{name: std-saturates, kind: saturates, stat: std, tol: 1.0e-12}"
    items = "".join(f"  - {e}\n" for e in (*entries, drift, saturates))
    text = f'version: 1\ndefaults: {{select: {{include: ["{include}"]}}}}\nassertions:\n{items}'
    return parse_spec(text, "run.weights.yaml")


# ------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def hf():
    """transformers, its progress bars off, and the callback module."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    from pytest_weights.integrations import huggingface

    return transformers, huggingface


class CountingTokens(torch.utils.data.Dataset):
    """Sequences t, t+1, t+2, … mod 64: learnable next-token prediction."""

    def __init__(self, n: int = 128, length: int = 16) -> None:
        start = torch.randint(0, 64, (n, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (start + torch.arange(length)) % 64

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def hf_trainer(hf, out: Path, callbacks: list, max_steps: int):
    transformers, _ = hf
    config = transformers.GPT2Config(
        n_embd=32, n_layer=4, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)  # from the config: random init, no download
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=4,
        save_only_model=True,
        per_device_train_batch_size=8,
        learning_rate=5e-4,
        optim="adamw_torch",
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=CountingTokens(), callbacks=callbacks)


def hf_fault(hf, step: int, kind: str):
    """A callback that damages the MLP input matrix of a block at the end of ``step``."""
    transformers, _ = hf

    class Fault(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == step:
                with torch.no_grad():
                    if kind == "scale":
                        model.transformer.h[2].mlp.c_fc.weight.mul_(1000)
                    else:
                        model.transformer.h[1].mlp.c_fc.weight[3, 5] = math.nan

    return Fault()


@pytest.mark.parametrize("on_failure", ["stop", "warn"])
def test_hf_trainer_stops_at_the_first_save_after_the_fault(hf, tmp_path, caplog, on_failure):
    _, integration = hf
    gate = integration.WeightsGateCallback("default", device="cpu", on_failure=on_failure)
    trainer = hf_trainer(hf, tmp_path / "out", [hf_fault(hf, 6, "scale"), gate], max_steps=12)
    with caplog.at_level(logging.INFO, logger=GATE_LOGGER):
        trainer.train()
    # saves at 4 (healthy) and 8 (the first after the ×1000 at step 6)
    assert gate.reports[4].passed and not gate.reports[8].passed
    assert gate.failed_step == 8
    if on_failure == "stop":
        assert trainer.state.global_step == 8 and sorted(gate.reports) == [4, 8]
    else:
        assert trainer.state.global_step == 12 and sorted(gate.reports) == [4, 8, 12]
    scale, failure = gate.reports[8].failures
    assert (scale.name, failure.name) == ("scale-vs-model", "consistent-with-siblings")
    assert scale.deviations[0].subject == "transformer.h.2.mlp.c_fc.weight"
    assert failure.deviations[0].subject == "transformer.h.2.mlp.c_fc.weight"
    assert failure.checkpoint == "checkpoint-8/model.safetensors"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "weights gate failed at step 8" in logged
    assert "transformer.h.2.mlp.c_fc.weight  std=" in logged  # the report's table
    if on_failure == "stop":
        assert "stopping training at step 8" in logged


def test_hf_trainer_raise_names_the_nan_tensor(hf, tmp_path):
    _, integration = hf
    gate = integration.WeightsGateCallback("default", device="cpu", on_failure="raise")
    trainer = hf_trainer(hf, tmp_path / "out", [hf_fault(hf, 4, "nan"), gate], max_steps=12)
    with pytest.raises(WeightsGateError) as exc:
        trainer.train()
    assert exc.value.step == 4 and trainer.state.global_step == 4
    headline = str(exc.value).splitlines()[0]
    # finite counts the NaN; every check reading values fails the tensor too (statistics undefined)
    assert headline.startswith("weights gate failed at step 4: 5 of 5 assertion(s) failed: finite")
    assert "finite (transformer.h.1.mlp.c_fc.weight)" in headline
    for r in exc.value.report.failures:
        assert r.deviations[0].subject == "transformer.h.1.mlp.c_fc.weight"


def test_hf_callback_checks_the_run_so_far_and_options(hf, tmp_path):
    _, integration = hf
    gate = integration.WeightsGateCallback(run_spec("*.mlp.c_fc.weight"), device="cpu")
    trainer = hf_trainer(hf, tmp_path / "out", [gate], max_steps=12)
    trainer.train()  # drift judged at every save; saturates deferred to the end of training
    assert trainer.state.global_step == 12
    assert gate.gate.steps == (4, 8, 12)
    drift = next(r for r in gate.reports[12].results if r.name == "std-drift")
    assert drift.passed and drift.checked == 4 and drift.checkpoint == "run (steps 4–12)"
    assert gate.failed_step == 12  # on_train_end: std still moves, so it has not saturated
    assert gate.gate.last_report is not None
    assert [r.name for r in gate.gate.last_report.failures] == ["std-saturates"]
    with pytest.raises(ValueError, match="on_failure"):
        integration.WeightsGateCallback(on_failure="return")


# ------------------------------------------------------------------ Lightning


@pytest.fixture(scope="module")
def pl():
    """lightning.pytorch and the callback module."""
    import lightning.pytorch

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from pytest_weights.integrations import lightning as integration

    return lightning.pytorch, integration


def lit_module(pl):
    L, _ = pl

    class TinyResidual(L.LightningModule):
        """``layers.N.weight``: four sibling 64×64 matrices (the default spec's matrices)."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(4))
            for layer in self.layers:
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

        def forward(self, x):
            for layer in self.layers:
                x = x + torch.tanh(layer(x))
            return x

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self(x) - y) ** 2).mean()

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", ((self(x) - y) ** 2).mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return TinyResidual()


def lit_data(n: int = 128):
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, torch.roll(x, 1, dims=1))
    return torch.utils.data.DataLoader(data, batch_size=16)  # 8 steps per epoch


def lit_trainer(pl, callbacks: list, **kwargs):
    L, _ = pl
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kwargs,
    }
    return L.Trainer(callbacks=callbacks, **options)


def lit_fault(pl, step: int, kind: str):
    L, _ = pl

    class Fault(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == step:
                with torch.no_grad():
                    if kind == "scale":
                        pl_module.layers[2].weight.mul_(100)
                    else:
                        pl_module.layers[1].weight[0, 0] = math.nan

    return Fault()


def test_lightning_stops_at_the_first_check_after_the_fault(pl, caplog):
    _, integration = pl
    gate = integration.WeightsGateCallback("default", every_n_steps=5, device="cpu")
    trainer = lit_trainer(pl, [lit_fault(pl, 12, "scale"), gate], max_steps=40)
    with caplog.at_level(logging.INFO, logger=GATE_LOGGER):
        trainer.fit(lit_module(pl), lit_data())
    assert trainer.global_step == 15 and gate.failed_step == 15  # mid-epoch: epochs are 8 steps
    assert sorted(gate.reports) == [5, 10, 15]
    assert gate.reports[10].passed
    assert {d.subject for r in gate.reports[15].failures for d in r.deviations} == {"layers.2.weight"}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "weights gate failed at step 15" in logged and "layers.2.weight  std=" in logged
    assert "stopping training at step 15" in logged


def test_lightning_checks_checkpoints_in_memory_and_raise_keeps_a_bad_one_off_disk(pl, tmp_path):
    L, integration = pl
    saver = L.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    gate = integration.WeightsGateCallback("default", on_failure="raise", device="cpu")
    trainer = lit_trainer(pl, [lit_fault(pl, 6, "nan"), gate, saver], max_steps=40, enable_checkpointing=True)
    with pytest.raises(WeightsGateError) as exc:
        trainer.fit(lit_module(pl), lit_data())
    assert exc.value.step == 8 and trainer.global_step == 8
    assert "finite (" in str(exc.value).splitlines()[0]
    finite = exc.value.report.failures[0]
    # the NaN has spread through training by step 8: every layer is named, the gate does not crash
    assert {"layers.1.weight", "layers.2.weight"} <= {d.subject for d in finite.deviations}
    assert finite.checkpoint == "step 8"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=4.ckpt"]  # step 8 was never written


def test_lightning_validation_end_and_deferred_kinds_at_train_end(pl, caplog):
    _, integration = pl
    spec = run_spec("layers.*.weight", "{name: finite, kind: finite}")
    gate = integration.WeightsGateCallback(spec, on_validation=True, on_checkpoint=False, device="cpu")
    trainer = lit_trainer(pl, [gate], max_epochs=3)
    with caplog.at_level(logging.INFO, logger=GATE_LOGGER):
        trainer.fit(lit_module(pl), lit_data(), lit_data(32))
    assert trainer.global_step == 24
    assert sorted(gate.reports) == [8, 16, 24]  # each validation end, not the sanity check
    assert all(r.passed for r in gate.reports.values())
    drift = next(r for r in gate.reports[24].results if r.name == "std-drift")
    assert drift.observed["layers.0.weight"]["steps"] == [8, 16, 24]
    assert gate.failed_step == 24  # saturates, judged at on_train_end, fails (std still moves)
    assert "std-saturates" in caplog.text
    with pytest.raises(ValueError, match="every_n_steps"):
        integration.WeightsGateCallback(every_n_steps=0)


# ------------------------------------------------------------------ missing extras


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("huggingface", ["transformers"], "huggingface"),
        ("lightning", ["lightning", "lightning.pytorch", "pytorch_lightning"], "lightning"),
    ],
)
def test_missing_framework_names_the_extra(monkeypatch, module, blocked, extra):
    name = f"pytest_weights.integrations.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for b in blocked:
        monkeypatch.setitem(sys.modules, b, None)  # import of b raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'pytest-weights\[{extra}\]'"):
        importlib.import_module(name)


# ------------------------------------------------------------------ the shared core


def core_with(on_failure: str, **attrs):
    """A GateCallbackCore on the bundled finite check, its class attributes set as an adapter would."""
    from pytest_weights.integrations.core import GateCallbackCore

    adapter = type("Adapter", (GateCallbackCore,), {"stop_flag": "x.should_stop", **attrs})
    return adapter(parse_spec("assertions:\n  - kind: finite\n"), device="cpu", on_failure=on_failure)


@pytest.mark.parametrize(
    ("on_failure", "level", "words"),
    [("stop", logging.ERROR, "stopping training at step"), ("warn", logging.WARNING, "goes on")],
)
def test_core_checks_keeps_reports_and_logs_a_failure(caplog, on_failure, level, words):
    core = core_with(on_failure)
    good = core.check({"w": torch.ones(4, 4)}, step=1)
    bad = core.check({"w": torch.tensor([[1.0, math.nan]])}, step=3)
    assert good.passed and not bad.passed and set(core.reports) == {1, 3}
    with caplog.at_level(logging.INFO, logger=GATE_LOGGER):
        core.fail(3, bad)
        core.fail(4, bad)
    assert core.failed_step == 3 and core.stops is (on_failure == "stop")
    assert [r.levelno for r in caplog.records if words in r.getMessage()] == [level, level]
    assert on_failure != "stop" or "stopping training at step 3 (x.should_stop)" in caplog.text


def test_core_raise_here_and_elsewhere(caplog):
    core = core_with("raise")
    bad = core.check({"w": torch.tensor([math.inf])}, step=2)
    good = core.check({"w": torch.ones(2)}, step=5)
    with pytest.raises(WeightsGateError):
        core.fail(2, bad)
    with caplog.at_level(logging.INFO, logger=GATE_LOGGER):
        core.fail(5, None)  # found on another process (Hugging Face: only process zero checks)
        core.fail(5, good)  # this process's replica passed, another's failed
    assert caplog.text.count("a failure on another process stops training at step 5") == 2
    everywhere = core_with("raise", raise_everywhere=True)  # Lightning: every process leaves together
    with pytest.raises(WeightsGateError):
        everywhere.fail(5, good)
    assert core.failed_step == 2 and everywhere.failed_step == 5


def test_core_on_failure_is_checked():
    with pytest.raises(ValueError, match="on_failure must be one of 'stop', 'raise', 'warn'"):
        core_with("ignore")
