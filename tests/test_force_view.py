"""The force budget through the engine: ``OptimizerView`` + ``StepBudgetSums`` (issue 12, item 5).

A real MLP is trained with a real ``torch.optim.AdamW`` (two parameter groups, weight decay on
the matrices only) and saved as a run of ``checkpoint-N/`` directories (``pytorch_model.bin`` +
``optimizer.pt`` holding ``{"optimizer": state_dict, "lr": lr}``, as ``examples/train_tiny.py``
does). The budget the ``force_share`` kind judges — computed in the engine's one pass over the
optimizer view — is checked against :func:`pytest_weights.forces.budget_from_state` applied to
the live optimizer's own state for each parameter object (the independent reference, float64,
rel 1e-12); the sums are checked against numpy float64.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_weights import forces as F
from pytest_weights.cache import StatCache
from pytest_weights.errors import CheckpointError
from pytest_weights.readers import Checkpoint, open_checkpoint
from pytest_weights.readers.optimizer_view import OptimizerInfo, OptimizerView
from pytest_weights.reduce import reduce_tensor
from pytest_weights.runner import Checker
from pytest_weights.spec import parse_spec
from pytest_weights.stats.force import BudgetSums, StepBudgetSums

LR, WD = 3e-3, 0.1
STEPS = (1, 2, 5)
SPEC = """
version: 1
assertions:
  - name: budget
    kind: force_share
    select: {include: ["*"], min_ndim: 2}
    require_fresh_state: true
    max_update: 0.5
"""


def train(root: Path) -> dict[int, dict[str, tuple[torch.Tensor, dict, F.OptimizerHyper]]]:
    """Save checkpoints at STEPS; return, per step, name → (weights, live state, hyper) of every parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 48), nn.GELU(), nn.Linear(48, 4))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    names = {id(p): n for n, p in model.named_parameters()}
    live = {}
    for s in range(1, max(STEPS) + 1):
        opt.zero_grad()
        model(torch.randn(32, 16)).square().mean().backward()
        opt.step()
        if s in STEPS:
            d = root / f"checkpoint-{s}"
            d.mkdir(parents=True)
            torch.save(model.state_dict(), d / "pytorch_model.bin")
            torch.save({"optimizer": opt.state_dict(), "lr": LR}, d / "optimizer.pt")
            live[s] = {
                names[id(p)]: (
                    p.detach().clone(),
                    {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()},
                    F.OptimizerHyper.from_group(g),
                )
                for g in opt.param_groups
                for p in g["params"]
            }
    return live


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return root, train(root)


def checkpoints(root: Path) -> list[tuple[int, object]]:
    return [(s, open_checkpoint(root / f"checkpoint-{s}")) for s in STEPS]


def judged(root: Path, cache: StatCache | None = None):
    (spec,) = parse_spec(SPEC).assertions
    checker = Checker("cpu", cache=cache)
    ckpts = checkpoints(root)
    result = checker.evaluate_run(ckpts, spec, "run")
    return checker, spec, ckpts, result


def test_budget_through_the_view_equals_budget_from_state(run):
    root, live = run
    checker, spec, ckpts, result = judged(root)
    assert result.passed, result.summary
    assert result.checked == 3 * len(STEPS)  # the three matrices at each step
    for step, ckpt in ckpts:
        view = checker.target(ckpt, spec)
        assert isinstance(view, OptimizerView)
        for info in checker.select(view, spec).tensors:
            assert isinstance(info, OptimizerInfo) and info.status == "adam" and info.state_step == step
            sums = checker.store.get(view.identity(), info.name)[StepBudgetSums()]
            got = F.budget_from_sums(sums.dot, sums.u_sq, sums.w_sq, info.lr, info.weight_decay)
            w, state, hyper = live[step][info.name]
            want = F.budget_from_state(w, state, hyper)
            assert (info.lr, info.weight_decay) == (hyper.lr, hyper.weight_decay) == (LR, WD)
            for field in ("f_align", "f_inj", "f_decay", "sq_norm"):
                assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12, abs=0), field
            i = result.observed[info.name]["steps"].index(step)
            assert result.observed[info.name]["shares"][i] == pytest.approx(want.shares, rel=1e-12)


def test_sums_equal_numpy_float64(run):
    """Σ W_prev·û, Σ û², Σ W_prev² against numpy float64 from the live state (closed form of the inverse step)."""
    root, live = run
    view = OptimizerView(open_checkpoint(root / "checkpoint-5"))
    name = "2.weight"
    w, state, hyper = live[5][name]
    t = float(state["step"])
    m = state["exp_avg"].double().numpy() / (1 - hyper.beta1**t)
    v = state["exp_avg_sq"].double().numpy() / (1 - hyper.beta2**t)
    u = m / (np.sqrt(v) + hyper.eps)
    w_prev = (w.double().numpy() + LR * u) / (1 - LR * WD)
    got = reduce_tensor(view.read(name), [StepBudgetSums()])[StepBudgetSums()]
    assert got.n == w.numel()
    for value, ref in ((got.dot, (w_prev * u).sum()), (got.u_sq, (u * u).sum()), (got.w_sq, (w_prev**2).sum())):
        assert value == pytest.approx(float(ref), rel=1e-12)


def test_second_run_with_the_same_cache_reads_no_tensor(run, tmp_path):
    root, _ = run
    first, _, _, r1 = judged(root, StatCache(tmp_path / "cache"))
    assert sum(p.tensors_total for p in first.passes) > 0
    again, _, _, r2 = judged(root, StatCache(tmp_path / "cache"))
    assert again.passes and all(p.tensors_total == 0 and p.bytes_total == 0 for p in again.passes)
    assert (r2.passed, r2.summary, r2.checked, r2.observed) == (r1.passed, r1.summary, r1.checked, r1.observed)


def test_an_lr_override_is_part_of_the_identity(run):
    root, _ = run
    ckpt = open_checkpoint(root / "checkpoint-1")
    assert OptimizerView(ckpt).identity() == OptimizerView(ckpt).identity()
    assert OptimizerView(ckpt).identity() != OptimizerView(ckpt, lr=1e-4).identity()
    assert OptimizerView(ckpt).identity() != ckpt.identity()


def test_tensors_without_adam_state_read_as_weights_and_zero(run):
    root, _ = run
    view = OptimizerView(open_checkpoint(root / "checkpoint-1"))
    ckpt = open_checkpoint(root / "checkpoint-1")
    assert {i.status for i in view.tensors()} == {"adam"}  # every parameter stepped
    plain = OptimizerView(ckpt, optimizer_file="missing.pt")  # a torch.save file without optimizer inside
    (info, *_) = plain.tensors()
    assert info.status == "none"
    rows = plain.read(info.name)
    assert rows.shape == (info.numel, 2) and torch.equal(rows[:, 0], ckpt.read(info.name).reshape(-1).double())
    assert not rows[:, 1].any()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_corrupt_optimizer_file_is_refused_in_one_line_naming_it(run, tmp_path):
    root, _ = run
    d = tmp_path / "checkpoint-1"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes((root / "checkpoint-1" / "pytorch_model.bin").read_bytes())
    (d / "optimizer.pt").write_bytes(b"PK\x03\x04 not really a zip")
    before = {p.name: digest(p) for p in d.iterdir()}
    with pytest.raises(CheckpointError) as e:
        OptimizerView(open_checkpoint(d), strict=True)
    msg = str(e.value)
    assert (
        "\n" not in msg
        and msg.startswith(str(d / "optimizer.pt"))
        and "optimizer.pt: optimizer state unusable: cannot read: " in msg
    )
    view = OptimizerView(open_checkpoint(d))  # the kind's default: recorded on each tensor, never raised
    assert {(i.status, i.source) for i in view.tensors()} == {("unmapped", "checkpoint-1/optimizer.pt")}
    assert all(i.problem.startswith("checkpoint-1/optimizer.pt: cannot read: ") for i in view.tensors())
    (spec,) = parse_spec(SPEC).assertions
    result = Checker("cpu").evaluate_run([(1, open_checkpoint(d))], spec, "run")
    assert not result.passed and result.summary.startswith("1 checkpoint(s) whose optimizer state could not be read")
    (row,) = result.deviations
    assert row.subject == "checkpoint-1/optimizer.pt"
    assert {p.name: digest(p) for p in d.iterdir()} == before  # nothing was modified


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    chunk=st.integers(2, 64),
    seed=st.integers(0, 2**16),
)
def test_sums_do_not_depend_on_the_block_split(n, chunk, seed):
    """Merged over row blocks of any size, the sums equal numpy float64's over the whole tensor."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 2, generator=g, dtype=torch.float64) * 10 ** torch.randint(-3, 3, (n, 1), generator=g)
    got = reduce_tensor(rows, [StepBudgetSums()], chunk_elements=chunk)[StepBudgetSums()]
    a = rows.numpy()
    want = BudgetSums(float((a[:, 0] * a[:, 1]).sum()), float((a[:, 1] ** 2).sum()), float((a[:, 0] ** 2).sum()), n)
    assert got.n == want.n
    for value, ref, scale in ((got.dot, want.dot, math.sqrt(want.u_sq * want.w_sq)), (got.u_sq, want.u_sq, want.u_sq),
                              (got.w_sq, want.w_sq, want.w_sq)):  # fmt: skip
        assert abs(value - ref) <= 1e-12 * scale


class Counting(Checkpoint):
    """A checkpoint that counts the reads of each tensor (delegating to a real reader)."""

    def __init__(self, inner: Checkpoint) -> None:
        self.inner, self.path, self.label = inner, inner.path, inner.label
        self.reads: dict[str, int] = {}

    def tensors(self):
        return self.inner.tensors()

    def read(self, name: str) -> torch.Tensor:
        self.reads[name] = self.reads.get(name, 0) + 1
        return self.inner.read(name)

    def identity(self) -> str:
        return self.inner.identity()


def test_each_selected_weight_is_read_once_per_checkpoint(run):
    """One pass per checkpoint: the budget and the NaN policy's moments share the view's single read."""
    root, _ = run
    (spec,) = parse_spec(SPEC).assertions
    ckpts = [(s, Counting(open_checkpoint(root / f"checkpoint-{s}"))) for s in STEPS]
    result = Checker("cpu").evaluate_run(ckpts, spec, "run")
    assert result.passed, result.summary
    for _, c in ckpts:
        assert c.reads == {"0.weight": 1, "2.weight": 1, "4.weight": 1}
