"""Train a tiny transformer on the CPU and save a run of step checkpoints (for paper D's checks).

Usage (``--help`` describes every option; one progress line per checkpoint goes to stderr)::

    python examples/train_tiny.py runs/low-wd --weight-decay 0.01
    python examples/train_tiny.py runs/high-wd --weight-decay 2.0 --save-every 10
    python examples/train_tiny.py OUT [--weight-decay 0.1] [--steps 300] [--save-every 25] [--lr 1e-2] [--seed 0]

or, from Python, ``train_run(out_dir, weight_decay, steps, save_every, lr, seed)``.

Model: a 2-layer pre-norm decoder (d_model 64, 4 heads, MLP 256, context 32, no biases in the
linear layers), normal(0, 0.02) init for every matrix, trained on a procedurally generated
"tiny Markov language" (32 tokens, second order: each pair of previous tokens has 3 likely
successors, seeded) by next-token prediction, batch 8 × 32 tokens; 300 steps take ≈ 3–6 s on
one CPU thread. AdamW (β = 0.9, 0.95, ε = 1e-8), linear warm-up over 5 % of the steps, then cosine
decay to 10 % of the peak lr. Weight decay applies to every parameter with ndim ≥ 2 (the
embedding, the learned positions ``pos``, all matrices, the head); the LayerNorm gains are not decayed.

Parameter names (the depth is the ``layers.N.`` index)::

    embed.weight                 [32, 64]
    layers.N.attn.{q,k,v,o}.weight  [64, 64]
    layers.N.mlp.up.weight       [256, 64]
    layers.N.mlp.down.weight     [64, 256]
    layers.N.ln1.weight, layers.N.ln2.weight, ln_f.weight   [64]
    head.weight                  [32, 64]

Layout of ``OUT`` (a run: :func:`pytest_weights.runs.discover_run` orders it by step)::

    OUT/checkpoint-0/model.safetensors        the init (no optimizer.pt: no step taken yet)
    OUT/checkpoint-<step>/model.safetensors   the weights after optimizer step <step>
    OUT/checkpoint-<step>/optimizer.pt        torch.save({"optimizer": opt.state_dict(), "step": step,
                                              "lr": lr used by step <step>, "weight_decay": wd})

The optimizer was built from ``model.named_parameters()`` in two groups (decay, no decay),
so ``opt.state_dict()["param_groups"][i]`` carries ``param_names`` next to ``params`` (the
state indices). The checkpoint is saved after ``opt.step()`` and *before* the lr scheduler
steps, so each group's ``lr`` is the lr that produced these weights. With ``--log-forces``
the exact per-step three-force budget of every decayed matrix is written to
``OUT/forces.jsonl`` (one JSON line per step; see :mod:`pytest_weights.forces`).

Measured (seed 0, lr 1e-2, 300 steps, median Weibull λ of attn.o/mlp matrices, init 0.0177):
weight decay 0.01 keeps rising, to 0.0654 at step 300; weight decay 2.0 peaks at step 30
(0.0270, with ``--save-every 10``; with the default ``--save-every 25`` the highest checkpoint
is step 25, 0.0265) and relaxes by 37 % to 0.0170 (README "Training runs";
tests/test_training_runs.py checks the shape of both trajectories).

Options for fault injection (training-health tests): ``lr_spike_at=S`` multiplies the lr
by 300 at steps S..S+2; ``freeze_layer=N`` stops updating ``layers.N.*`` (requires_grad
off after the first step, so the layer's state stays in the optimizer but never moves).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

VOCAB, D_MODEL, HEADS, D_MLP, CONTEXT, LAYERS = 32, 64, 4, 256, 32, 2
BATCH = 8


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL, bias=False)
        self.ln2 = nn.LayerNorm(D_MODEL, bias=False)
        self.attn = nn.ModuleDict({n: nn.Linear(D_MODEL, D_MODEL, bias=False) for n in "qkvo"})
        self.mlp = nn.ModuleDict(
            {"up": nn.Linear(D_MODEL, D_MLP, bias=False), "down": nn.Linear(D_MLP, D_MODEL, bias=False)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (self.attn[n](h).view(b, t, HEADS, d // HEADS).transpose(1, 2) for n in "qkv")
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn["o"](a)
        return x + self.mlp["down"](F.gelu(self.mlp["up"](self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Parameter(torch.zeros(CONTEXT, D_MODEL))
        self.layers = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(D_MODEL, bias=False)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)
        for p in self.parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.pos[: idx.shape[1]]
        for block in self.layers:
            x = block(x)
        return self.head(self.ln_f(x))


def markov_batches(seed: int, n_batches: int):
    """``n_batches`` (input, target) batches from a seeded second-order Markov chain over VOCAB tokens.

    Each pair of previous tokens has 3 likely successors (random logits), so there is a lot to
    learn (1024 contexts) and the loss keeps falling over a few hundred steps. All sequences
    are generated up front (vectorised over the batch dimension).
    """
    g = torch.Generator().manual_seed(1000 + seed)
    logits = torch.full((VOCAB * VOCAB, VOCAB), -5.0)
    for i in range(VOCAB * VOCAB):
        logits[i, torch.randperm(VOCAB, generator=g)[:3]] = torch.randn(3, generator=g) + 2.0
    trans = logits.softmax(-1)
    n = n_batches * BATCH
    seq = torch.empty(n, CONTEXT + 1, dtype=torch.long)
    seq[:, :2] = torch.randint(VOCAB, (n, 2), generator=g)
    for t in range(1, CONTEXT):
        seq[:, t + 1] = torch.multinomial(trans[seq[:, t - 1] * VOCAB + seq[:, t]], 1, generator=g).squeeze(1)
    for b in range(n_batches):
        chunk = seq[b * BATCH : (b + 1) * BATCH]
        yield chunk[:, :-1], chunk[:, 1:]


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over 5 % of the steps, cosine decay to 10 % of ``lr`` at ``steps`` (step is 1-based)."""
    warm = max(1, steps // 20)
    if step <= warm:
        return lr * step / warm
    frac = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _save(out: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer | None, lr: float, wd: float) -> None:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(d / "model.safetensors"))
    if opt is not None:
        torch.save({"optimizer": opt.state_dict(), "step": step, "lr": lr, "weight_decay": wd}, d / "optimizer.pt")


def train_run(
    out_dir: str | Path,
    weight_decay: float,
    steps: int = 300,
    save_every: int = 25,
    lr: float = 1e-2,
    seed: int = 0,
    lr_spike_at: int | None = None,
    freeze_layer: int | None = None,
    log_forces: bool = False,
    progress: Callable[[int, int, float, bool], None] | None = None,
) -> Path:
    """Train :class:`TinyLM` for ``steps`` AdamW steps and save checkpoints every ``save_every`` steps
    (and at step 0 and the last step) under ``out_dir``; returns ``out_dir`` as a Path.

    ``progress(step, steps, loss, saved)`` is called after every step (``saved``: a checkpoint was written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TinyLM()
    named = list(model.named_parameters())
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    data = markov_batches(seed, steps)
    _save(out, 0, model, None, 0.0, weight_decay)
    log = (out / "forces.jsonl").open("w") if log_forces else None
    if log_forces:
        from pytest_weights.forces import step_budget
    losses = []
    for step in range(1, steps + 1):
        eta = lr_at(step, steps, lr)
        if lr_spike_at is not None and lr_spike_at <= step < lr_spike_at + 3:
            eta *= 300.0
        for group in opt.param_groups:
            group["lr"] = eta
        x, y = next(data)
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = {n: p.detach().clone() for n, p in decay} if log is not None else None
        opt.step()
        if freeze_layer is not None and step == 1:
            for n, p in named:
                if n.startswith(f"layers.{freeze_layer}."):
                    p.requires_grad_(False)
        losses.append(loss.item())
        if log is not None:
            rec = {"step": step, "lr": eta, "loss": losses[-1], "tensors": {}}
            for n, p in decay:
                st = opt.state[p]
                b = step_budget(
                    before[n], st["exp_avg"], st["exp_avg_sq"], float(st["step"]), eta, weight_decay, 0.9, 0.95, 1e-8
                )
                after = p.detach().double().square().sum().item()
                rec["tensors"][n] = {**b.as_dict(), "delta_sq_norm": after - before[n].double().square().sum().item()}
            log.write(json.dumps(rec) + "\n")
        saved = step % save_every == 0 or step == steps
        if saved:
            _save(out, step, model, opt, eta, weight_decay)
        if progress is not None:
            progress(step, steps, losses[-1], saved)
    if log is not None:
        log.close()
    (out / "train_log.json").write_text(json.dumps({"losses": losses[:: max(1, steps // 100)], "final": losses[-1]}))
    return out


def _progress(step: int, steps: int, loss: float, saved: bool) -> None:
    """One line on stderr per saved checkpoint (and the first step): ``step N/M  loss L``."""
    if saved or step == 1:
        note = f"  saved checkpoint-{step}" if saved else ""
        print(f"step {step}/{steps}  loss {loss:.3f}{note}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python examples/train_tiny.py runs/high-wd --weight-decay 2.0 --save-every 10",
    )
    ap.add_argument("out", metavar="OUT", help="run directory to write (checkpoint-<step>/ subdirectories)")
    ap.add_argument(
        "--weight-decay",
        type=float,
        default=0.1,
        metavar="WD",
        help="AdamW weight decay of every matrix (default 0.1; paper D's regimes: 0.01 low, 2.0 high)",
    )
    ap.add_argument("--steps", type=int, default=300, metavar="N", help="optimizer steps (default 300)")
    ap.add_argument(
        "--save-every",
        type=int,
        default=25,
        metavar="N",
        help="save a checkpoint every N steps, plus step 0 and the last step (default 25)",
    )
    ap.add_argument("--lr", type=float, default=1e-2, help="peak learning rate of the cosine schedule (default 1e-2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the init and of the Markov language (default 0)")
    ap.add_argument(
        "--lr-spike-at",
        type=int,
        default=None,
        metavar="S",
        help="fault injection: multiply the lr by 300 at steps S..S+2",
    )
    ap.add_argument(
        "--freeze-layer",
        type=int,
        default=None,
        metavar="N",
        help="fault injection: stop updating layers.N.* after the first step",
    )
    ap.add_argument(
        "--log-forces",
        action="store_true",
        help="write AdamW's exact per-step three-force budget of every decayed matrix to OUT/forces.jsonl",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    out = train_run(
        a.out,
        a.weight_decay,
        a.steps,
        a.save_every,
        a.lr,
        a.seed,
        a.lr_spike_at,
        a.freeze_layer,
        a.log_forces,
        progress=None if a.quiet else _progress,
    )
    print(out)


if __name__ == "__main__":
    main()
