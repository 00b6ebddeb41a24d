"""The bundled ``training-health`` spec on real runs of three trainers, through the plugin.

Runs are trained once per session on the CPU (seconds each):

- ``bert``: the Hugging Face ``Trainer`` on a tiny ``BertForSequenceClassification``
  (2 layers, hidden 32), 40 steps, ``checkpoint-{10,20,30,40}/`` with ``model.safetensors`` +
  ``optimizer.pt`` (AdamW in decay/no-decay groups, no ``param_names``);
- ``gpt2``: the same ``Trainer`` on a tiny ``GPT2LMHeadModel`` (``h.N``, lm_head tied to wte);
- ``lightning``: a Lightning ``Trainer`` on an MLP with BatchNorm (``AdamW(self.parameters())``),
  ``ModelCheckpoint(every_n_train_steps=10, save_top_k=-1)`` → ``epoch=E-step=N.ckpt``;
- ``tiny``: ``examples/train_tiny.py`` (120 steps, weight decay 0.1).

Faults: one matrix ×100 in the last checkpoint (every trainer); a matrix frozen mid-run
(``requires_grad=False`` after step 10 in the HF run: stale optimizer state); a matrix left
out of the Lightning optimizer (no state at all).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo  # (optimizers import it lazily: do it before any in-process pytester run)
from safetensors.torch import load_file, save_file
from torch import nn

from pytest_weights import forces as F
from pytest_weights.runs import step_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated"),
    pytest.mark.filterwarnings("ignore:The '.*dataloader' does not have many workers"),
]


# ------------------------------------------------------------------ trainers


class Classify(torch.utils.data.Dataset):
    """Random token sequences, label = first token > 50 (learnable)."""

    def __init__(self, n: int = 256, length: int = 16) -> None:
        self.x = torch.randint(1, 100, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.x[i]
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": (x[0] > 50).long()}


class Counting(torch.utils.data.Dataset):
    """Sequences t, t+1, … mod 64: next-token prediction."""

    def __init__(self, n: int = 256, length: int = 16) -> None:
        start = torch.randint(0, 64, (n, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (start + torch.arange(length)) % 64

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def hf_run(out: Path, arch: str, freeze: str | None = None) -> dict[str, torch.Tensor]:
    """Train with the real ``transformers.Trainer``; returns ``{name: exp_avg}`` of the live optimizer at the end."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    if arch == "bert":
        cfg = transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
            max_position_embeddings=32,
        )  # fmt: skip
        model, data, lr = transformers.BertForSequenceClassification(cfg), Classify(), 1e-3
    else:
        cfg = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
        )
        model, data, lr = transformers.GPT2LMHeadModel(cfg), Counting(), 5e-4

    class Freeze(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if freeze is not None and state.global_step == 10:
                model.get_parameter(freeze).requires_grad_(False)

    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=40, save_steps=10, per_device_train_batch_size=16, learning_rate=lr,
        weight_decay=0.01, report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[Freeze()])
    trainer.train()
    opt = trainer.optimizer
    return {n: opt.state[p]["exp_avg"].clone() for n, p in model.named_parameters() if p in opt.state}


def lightning_run(out: Path, leave_out: str | None = None) -> dict[str, torch.Tensor]:
    """Lightning ``Trainer`` + ``ModelCheckpoint``; returns ``{state_dict.name: exp_avg}`` of the live optimizer."""
    import lightning.pytorch as L

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = nn.Sequential(
                nn.Linear(32, 128), nn.BatchNorm1d(128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 32)
            )

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.model(x) - y) ** 2).mean()

        def configure_optimizers(self):
            params = [p for n, p in self.named_parameters() if n != leave_out]
            return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(512, 32, generator=g), torch.randn(32, 32, generator=g) / 6
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.tanh(x @ w)), batch_size=32)
    saver = L.callbacks.ModelCheckpoint(dirpath=str(out), every_n_train_steps=10, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=40, callbacks=[saver], accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    module = MLP()
    trainer.fit(module, loader)
    opt = trainer.optimizers[0]
    return {f"state_dict.{n}": opt.state[p]["exp_avg"].clone() for n, p in module.named_parameters() if p in opt.state}


class Runs:
    """Runs trained on first use (each xdist worker trains only what its tests need), then shared."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def __getitem__(self, name: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if name not in self.done:
            out = self.root / name
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                self.done[name] = (out, self._train(name, out))
            finally:
                torch.set_num_threads(threads)
        return self.done[name]

    @staticmethod
    def _train(name: str, out: Path) -> dict[str, torch.Tensor]:
        if name == "tiny":
            sys.path.insert(0, str(EXAMPLES))
            try:
                from train_tiny import train_run
            finally:
                sys.path.remove(str(EXAMPLES))
            train_run(out, 0.1, steps=120, save_every=20, lr=1e-2)
            return {}
        return {
            "bert": lambda: hf_run(out, "bert"),
            "gpt2": lambda: hf_run(out, "gpt2"),
            "lightning": lambda: lightning_run(out),
            "bert-frozen": lambda: hf_run(out, "bert", freeze="bert.encoder.layer.1.intermediate.dense.weight"),
            "lightning-left-out": lambda: lightning_run(out, leave_out="model.3.weight"),
        }[name]()


def warm_up_transformers(folder: Path) -> None:
    """Import, outside pytester, every transformers module the plugin imports lazily to rebuild a model
    from config.json (the Trainer, the BERT and GPT-2 modules). An in-process pytester run drops the
    modules first imported inside it from sys.modules; a later import would then load second copies
    next to classes still cached from the first, which breaks the Trainer's saving of tied weights."""
    transformers = pytest.importorskip("transformers")
    configs = {
        "bert": transformers.BertConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10,
            architectures=["BertForSequenceClassification"],
        ),
        "gpt2": transformers.GPT2Config(
            n_embd=8, n_layer=1, n_head=2, vocab_size=10, n_positions=8, architectures=["GPT2LMHeadModel"]
        ),
    }  # fmt: skip
    for name, cfg in configs.items():
        cfg.save_pretrained(folder / name)
        assert isinstance(F.hf_model_layout(folder / name / "config.json"), tuple)
    assert transformers.Trainer and transformers.TrainingArguments and transformers.TrainerCallback


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    """Healthy and faulty runs of the three trainers: name → (run dir, live optimizer exp_avg at the end)."""
    root = tmp_path_factory.mktemp("health")
    warm_up_transformers(root / "configs")
    return Runs(root)


def health(pytester: pytest.Pytester, run_dir: Path, *args: str) -> pytest.RunResult:
    result = pytester.runpytest("--checkpoint", str(run_dir), "--weights-spec", "training-health",
                                "-p", "no:cacheprovider", *args)  # fmt: skip
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-4000:]
    return result


def section(out: str, item: str) -> str:
    """The failure report of one item."""
    return out.split(f"_ {item} [")[1].split("\n___")[0].split("short test summary")[0]


# ------------------------------------------------------------------ the optimizer layouts


HF_SPLIT = "decay/no-decay split (named_parameters() of the model in config.json, Trainer.get_decay_parameter_names)"


@pytest.mark.slow
@pytest.mark.parametrize(("run", "method"), [
    ("bert", HF_SPLIT),
    ("gpt2", HF_SPLIT),
    ("lightning", "checkpoint order (file order without buffers)"),
    ("lightning-left-out", "checkpoint order (file order without buffers)"),
])  # fmt: skip
def test_trainer_checkpoints_map_to_the_live_optimizer(runs, run, method):
    """The last checkpoint's state, mapped to names from the files alone, equals the trainer's optimizer
    state for each named parameter at the end of training (the independent reference)."""
    run_dir, live = runs[run]
    last = max((p for p in run_dir.iterdir() if not p.name.startswith(".")), key=lambda p: step_of(p.name) or -1)
    opt_file = last / "optimizer.pt" if last.is_dir() else last
    sd, _ = F.optimizer_state_of(F.load_optimizer_file(opt_file))
    assert not any("param_names" in g for g in sd["param_groups"])  # the layout trainers write
    smap = F.map_optimizer_state(sd, F.weights_layout(last))
    assert smap.method == method
    got = smap.adam()
    assert set(got) == set(live) and len(live) >= 7
    for name, exp_avg in live.items():
        assert torch.equal(got[name][0]["exp_avg"], exp_avg), name
    if run == "bert":
        assert [len(g["params"]) for g in sd["param_groups"]] == [17, 24]  # decay, no-decay
        assert got["bert.encoder.layer.0.attention.self.query.weight"][1]["weight_decay"] == 0.01
        assert got["bert.encoder.layer.0.attention.self.query.bias"][1]["weight_decay"] == 0.0
    if run == "lightning-left-out":
        assert smap.left_out == ("state_dict.model.3.weight",)


# ------------------------------------------------------------------ healthy runs pass


@pytest.mark.slow
@pytest.mark.parametrize(("run", "items"), [("bert", 8), ("gpt2", 8), ("lightning", 8), ("tiny", 11)])
def test_training_health_passes_on_healthy_runs(pytester, runs, run, items):
    result = health(pytester, runs[run][0])
    assert result.ret == 0, result.stdout.str()[-4000:]
    result.assert_outcomes(passed=items)  # finite per checkpoint + 4 run-scope items


# ------------------------------------------------------------------ faults fail, naming the tensor


def blow_up(src: Path, dst: Path, name: str) -> Path:
    """A copy of run ``src`` whose last checkpoint has tensor ``name`` ×100."""
    shutil.copytree(src, dst)
    last = max((p for p in dst.iterdir() if step_of(p.name) is not None), key=lambda p: step_of(p.name))
    if last.suffix == ".ckpt":
        obj = torch.load(last, weights_only=True)
        obj["state_dict"][name.removeprefix("state_dict.")] *= 100
        torch.save(obj, last)
    else:
        f = last / "model.safetensors"
        tensors = load_file(f)
        tensors[name] = tensors[name] * 100
        save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


@pytest.mark.slow
@pytest.mark.parametrize(("run", "tensor"), [
    ("bert", "bert.encoder.layer.1.attention.self.value.weight"),
    ("gpt2", "transformer.h.0.mlp.c_fc.weight"),
    ("lightning", "state_dict.model.3.weight"),
    ("tiny", "layers.1.mlp.up.weight"),
])  # fmt: skip
def test_blown_up_matrix_fails_naming_it(pytester, runs, tmp_path, run, tensor):
    run_dir = blow_up(runs[run][0], tmp_path / run, tensor)
    result = health(pytester, run_dir)
    assert result.ret == 1
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED *::lambda-no-blow-up*"])
    report = section(out, "lambda-no-blow-up")
    assert tensor in report
    assert report.count("weibull_lambda") >= 1 and "1 of" in report  # only the damaged tensor drifts


@pytest.mark.slow
def test_frozen_matrix_fails_every_layer_updates(pytester, runs):
    result = health(pytester, runs["bert-frozen"][0])
    out = result.stdout.str()
    assert result.ret == 1
    result.assert_outcomes(passed=7, failed=1)
    report = section(out, "every-layer-updates")
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    for step in (20, 30, 40):
        assert f"step {step}: optimizer state last updated at step 10" in report
    assert report.count("optimizer state last updated") == 3 and name in report


@pytest.mark.slow
def test_matrix_left_out_of_the_optimizer_fails_every_layer_updates(pytester, runs):
    result = health(pytester, runs["lightning-left-out"][0])
    out = result.stdout.str()
    result.assert_outcomes(passed=7, failed=1)
    report = section(out, "every-layer-updates")
    assert "state_dict.model.3.weight" in report
    assert "step 40: not in the optimizer's parameter groups: never updated" in report
    assert "state_dict.model.0.weight" not in report and "state_dict.model.5.weight" not in report


# ------------------------------------------------------------------ unreadable or unmatched state fails cleanly


def tiny_model_run(root: Path, bad: str) -> Path:
    """Two checkpoints of an MLP trained with ``AdamW(model.parameters())``; ``bad`` spoils the optimizer state."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for s in (0, 1, 2) if bad == "unstepped" else (1, 2):
        if s > 0:
            opt.zero_grad()
            model(torch.randn(8, 32)).square().mean().backward()
            opt.step()
        d = root / f"checkpoint-{s}"
        d.mkdir(parents=True)
        if bad == "safetensors":  # sorted by name, no config.json: the order is unknowable
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
        else:
            torch.save(model.state_dict(), d / "pytorch_model.bin")
        if bad == "corrupt":
            (d / "optimizer.pt").write_bytes(b"PK\x03\x04 not really a zip")
        else:
            torch.save(opt.state_dict(), d / "optimizer.pt")
    return root


@pytest.mark.parametrize(("bad", "message"), [
    ("corrupt", "checkpoint-1/optimizer.pt: cannot read: "),
    ("safetensors", "checkpoint-1/optimizer.pt: 4 parameters in 1 group(s); tried param_names (absent); "
                    "checkpoint order (model from config.json: no config.json; "
                    "file order: safetensors stores tensors sorted by name, not in parameter order)"),
])  # fmt: skip
def test_unusable_optimizer_state_fails_the_item_naming_the_file(pytester, tmp_path, bad, message):
    result = health(pytester, tiny_model_run(tmp_path / "run", bad))
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED *::every-layer-updates*"])
    assert message in " ".join(out.split())


def test_torch_files_in_model_parameters_order_pass(pytester, tmp_path):
    """The same run saved with torch.save: the file order is the parameter order, and it maps."""
    result = health(pytester, tiny_model_run(tmp_path / "run", "none"))
    assert result.ret == 0, result.stdout.str()[-3000:]


def test_unstepped_optimizer_at_step_0_is_no_state_yet(pytester, tmp_path):
    """checkpoint-0 holds the optimizer before its first step (empty state): noted, not failed."""
    run = tiny_model_run(tmp_path / "run", "unstepped")
    result = health(pytester, run, "--weights-json", str(tmp_path / "r.json"))
    assert result.ret == 0, result.stdout.str()[-3000:]
    (item,) = [r for r in json.loads((tmp_path / "r.json").read_text())["results"] if r["kind"] == "force_share"]
    assert item["passed"] and item["checked"] == 4  # steps 1 and 2, two matrices each
    assert "2 tensor(s) with no optimizer state yet (not stepped)" in item["notes"]
    for s in (1, 2):
        shutil.rmtree(run / f"checkpoint-{s}")
    result = health(pytester, run, "-rA")  # only step 0: nothing to judge
    result.stdout.fnmatch_lines(["SKIPPED *no optimizer step taken yet*"])
