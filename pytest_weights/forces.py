"""The three-force budget of AdamW (paper D): why ‖W‖² — and the Weibull scale λ — rises or relaxes.

One AdamW step (torch's decoupled form) is ``W⁺ = (1 − η·λ_wd)·W − η·û`` with the
bias-corrected Adam direction ``û = m̂ / (√v̂ + ε)``, ``m̂ = m / (1 − β₁ᵗ)``,
``v̂ = v / (1 − β₂ᵗ)`` (``t`` is the optimizer's step count). Expanding ``‖W⁺‖²``::

    Δ‖W‖² = F_align + F_inj − F_decay + O(η·λ_wd)·(F_align, F_decay)
    F_align = −2η⟨W, û⟩        (the update's component along −W: positive when it grows W)
    F_inj   =  η²‖û‖²          (injection: the update's own energy, always ≥ 0)
    F_decay =  2η·λ_wd·‖W‖²    (weight decay, always ≥ 0)

and exactly ``Δ‖W‖² = ((1 − ηλ_wd)² − 1)‖W‖² + (1 − ηλ_wd)·F_align + F_inj``
(:attr:`ForceBudget.exact_delta`). Shares are ``|F| / (|F_align| + F_inj + F_decay)``.

**Exact mode** (:func:`step_budget`, :func:`budget_from_state`, :func:`checkpoint_budgets`)
is per optimizer step. A checkpoint saved right after optimizer step ``s`` holds ``W_s`` and
the state ``(m_s, v_s, t = s)`` that produced it, so the step's direction ``û_s`` is known
and the weights before it follow by inverting the update:
``W_{s−1} = (W_s + η_s·û_s) / (1 − η_s·λ_wd)`` (:func:`previous_weights`). The budget of
step ``s`` is then exact, *provided* the saved ``lr`` is the one used by step ``s`` (save
before the lr scheduler steps, as ``examples/train_tiny.py`` does; its ``optimizer.pt``
also stores ``lr``). Between checkpoints ``k > 1`` steps apart nothing exact can be said
about the ``k − 1`` steps in between: the budget at a checkpoint is that of its last step
(an instantaneous sample of the forces), not the interval's sum. For the interval's sum,
log the per-step budget during training (``train_tiny.py --log-forces`` writes
``forces.jsonl`` with :func:`step_budget` of every step) or use the spline mode. The
Δ‖W‖² check (:func:`sum_check`) needs ``W_{s−1}`` *observed*, i.e. checkpoints one step
apart (``save_every=1`` for a short window) or the per-step log.

**Sparse spline mode** (:func:`spline_f_align`): only weights at sparse checkpoints; fix a
seeded subset of element indices (:func:`sample_indices`), fit a cubic spline ``cs(t)``
through the checkpoints (scipy ``CubicSpline``), and estimate the direction from the
spline's one-step displacement: ``û(t) = −(cs(t+1) − cs(t))/η_{t+1} − λ_wd·cs(t)`` (the
update rule solved for û), ``F_align(t) = −2η_{t+1}⟨cs(t), û(t)⟩`` scaled by
``numel / len(subset)``. (The paper writes ``+2η⟨cs, û⟩``; with û defined as above the
sign that estimates the exact ``F_align = −2η⟨W, û⟩`` is minus.)

**Matching names to optimizer state** (:func:`state_by_name`): ``optimizer.state_dict()``
keys ``state`` by integer ids that torch assigns by enumerating ``param_groups`` in order
and each group's parameters in order (ids 0..N−1 over the concatenated ``params`` lists).
If the optimizer was built from ``model.named_parameters()`` (torch ≥ 2.6), each group
carries ``param_names`` aligned with ``params``, and those are used. Otherwise pass
``param_names``: the names of the parameters in the order they were given to the
optimizer — for ``AdamW(model.parameters())``, ``[n for n, _ in model.named_parameters()]``.

All functions are pure (no I/O) except the ``*_file``/``checkpoint_*`` helpers, and compute
in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ForceBudget",
    "OptimizerHyper",
    "adam_direction",
    "budget_from_state",
    "checkpoint_budgets",
    "finite_difference_f_align",
    "load_optimizer_file",
    "previous_weights",
    "sample_indices",
    "spline_f_align",
    "state_by_name",
    "step_budget",
    "sum_check",
]


@dataclass(frozen=True)
class ForceBudget:
    """The three forces of one AdamW step on one tensor (W = the weights before the step)."""

    f_align: float
    f_inj: float
    f_decay: float
    sq_norm: float  # ‖W‖² before the step
    lr: float
    weight_decay: float

    @property
    def total(self) -> float:
        """|F_align| + F_inj + F_decay: the budget's scale."""
        return abs(self.f_align) + abs(self.f_inj) + abs(self.f_decay)

    @property
    def shares(self) -> dict[str, float]:
        """``|F| / total`` for ``align``, ``inj`` and ``decay`` (all 0 when the total is 0)."""
        t = self.total
        if t == 0:
            return {"align": 0.0, "inj": 0.0, "decay": 0.0}
        return {"align": abs(self.f_align) / t, "inj": abs(self.f_inj) / t, "decay": abs(self.f_decay) / t}

    @property
    def predicted_delta(self) -> float:
        """Paper D's budget: F_align + F_inj − F_decay."""
        return self.f_align + self.f_inj - self.f_decay

    @property
    def exact_delta(self) -> float:
        """Δ‖W‖² of the decoupled update, exactly: ((1−ηλ)²−1)‖W‖² + (1−ηλ)F_align + F_inj."""
        c = 1.0 - self.lr * self.weight_decay
        return (c * c - 1.0) * self.sq_norm + c * self.f_align + self.f_inj

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), **{f"share_{k}": v for k, v in self.shares.items()}}


@dataclass(frozen=True)
class OptimizerHyper:
    """The AdamW hyper-parameters of one param group, as the step used them."""

    lr: float
    weight_decay: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def from_group(cls, group: Mapping[str, Any], lr: float | None = None, weight_decay: float | None = None):
        """From a ``param_groups`` entry; ``lr``/``weight_decay`` override the saved values (e.g. from a spec)."""
        b1, b2 = group.get("betas", (0.9, 0.999))
        return cls(
            float(group["lr"] if lr is None else lr),
            float(group.get("weight_decay", 0.0) if weight_decay is None else weight_decay),
            float(b1),
            float(b2),
            float(group.get("eps", 1e-8)),
        )


def adam_direction(
    exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: float, beta1: float, beta2: float, eps: float
) -> torch.Tensor:
    """û = m̂/(√v̂ + ε) with bias correction for optimizer step count ``step`` (float64), as torch's AdamW."""
    step = float(step)
    m_hat = exp_avg.double() / (1.0 - beta1**step)
    v_hat = exp_avg_sq.double() / (1.0 - beta2**step)
    return m_hat / (v_hat.sqrt() + eps)


def step_budget(
    w_before: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: float,
    lr: float,
    weight_decay: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> ForceBudget:
    """The exact budget of one AdamW step from the weights before it and the state after it.

    ``exp_avg``/``exp_avg_sq``/``step`` are the optimizer state *after* the step (they define
    the direction the step took); ``lr`` is the lr the step used.
    """
    w = w_before.double()
    u = adam_direction(exp_avg, exp_avg_sq, step, beta1, beta2, eps)
    sq = float(w.square().sum())
    return ForceBudget(
        f_align=float(-2.0 * lr * (w * u).sum()),
        f_inj=float(lr * lr * u.square().sum()),
        f_decay=float(2.0 * lr * weight_decay * sq),
        sq_norm=sq,
        lr=float(lr),
        weight_decay=float(weight_decay),
    )


def previous_weights(w_after: torch.Tensor, u: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
    """Invert one decoupled AdamW step: W_{s−1} = (W_s + η·û_s)/(1 − η·λ_wd) (float64)."""
    return (w_after.double() + lr * u.double()) / (1.0 - lr * weight_decay)


def budget_from_state(w_after: torch.Tensor, state: Mapping[str, Any], hyper: OptimizerHyper) -> ForceBudget:
    """The exact budget of the step that produced ``w_after``, from one checkpoint's weights and state.

    ``state`` is the tensor's entry in ``optimizer.state_dict()["state"]`` (``exp_avg``,
    ``exp_avg_sq``, ``step``); the weights before the step are recovered with
    :func:`previous_weights`.
    """
    step = float(state["step"])
    u = adam_direction(state["exp_avg"], state["exp_avg_sq"], step, hyper.beta1, hyper.beta2, hyper.eps)
    w_prev = previous_weights(w_after, u, hyper.lr, hyper.weight_decay)
    sq = float(w_prev.square().sum())
    return ForceBudget(
        f_align=float(-2.0 * hyper.lr * (w_prev * u).sum()),
        f_inj=float(hyper.lr**2 * u.square().sum()),
        f_decay=float(2.0 * hyper.lr * hyper.weight_decay * sq),
        sq_norm=sq,
        lr=hyper.lr,
        weight_decay=hyper.weight_decay,
    )


def state_by_name(
    optimizer_state: Mapping[str, Any], param_names: Sequence[str] | None = None
) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``{parameter name: (its state entry, its param group)}`` from ``optimizer.state_dict()``.

    Names come from each group's ``param_names`` when present, else from ``param_names``
    (all parameters in the order given to the optimizer; see the module docstring).
    Parameters without state (never stepped) are left out.
    """
    groups = optimizer_state["param_groups"]
    states = optimizer_state["state"]
    flat = [(pid, g) for g in groups for pid in g["params"]]
    if all("param_names" in g for g in groups):
        names = [n for g in groups for n in g["param_names"]]
    elif param_names is not None:
        names = list(param_names)
    else:
        raise ValueError("the optimizer state has no param_names: pass param_names in the optimizer's parameter order")
    if len(names) != len(flat):
        raise ValueError(f"{len(names)} names for {len(flat)} optimizer parameters")
    out = {}
    for name, (pid, g) in zip(names, flat, strict=True):
        st = states.get(pid, states.get(str(pid)))
        if st is not None and "exp_avg" in st:
            out[name] = (st, g)
    return out


def load_optimizer_file(path: str | Path) -> dict[str, Any]:
    """Load an ``optimizer.pt`` safely (``weights_only=True``); returns the saved dict."""
    from .readers.torch_file import load_weights_only

    obj = load_weights_only(Path(path))
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def checkpoint_budgets(
    weights: Mapping[str, torch.Tensor] | Callable[[str], torch.Tensor],
    saved: Mapping[str, Any],
    names: Sequence[str] | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    param_names: Sequence[str] | None = None,
) -> dict[str, ForceBudget]:
    """The exact budget of the last step before a checkpoint, per parameter.

    ``weights`` maps (or reads, if callable) a name to the checkpoint's tensor; ``saved`` is
    either ``optimizer.state_dict()`` or a dict holding it under ``"optimizer"`` (the
    ``train_tiny.py`` layout, whose ``lr``/``weight_decay`` keys are used unless given).
    ``names`` restricts the parameters (default: every one with Adam state).
    """
    opt = saved.get("optimizer", saved)
    if lr is None and "lr" in saved and "optimizer" in saved:
        lr = float(saved["lr"])
    read = weights if callable(weights) else weights.__getitem__
    out = {}
    for name, (st, group) in state_by_name(opt, param_names).items():
        if names is not None and name not in names:
            continue
        hyper = OptimizerHyper.from_group(group, lr, weight_decay if weight_decay is not None else None)
        out[name] = budget_from_state(read(name), st, hyper)
    return out


def sum_check(w_before: torch.Tensor, w_after: torch.Tensor, budget: ForceBudget) -> dict[str, float]:
    """Compare the observed Δ‖W‖² of one step with the budget.

    Returns ``observed``, ``predicted`` (F_align + F_inj − F_decay), ``exact`` (with the
    O(ηλ) terms) and the errors of both relative to the budget's scale
    ``|F_align| + F_inj + F_decay`` (``rel_err_predicted``, ``rel_err_exact``).
    """
    obs = float(w_after.double().square().sum() - w_before.double().square().sum())
    scale = budget.total or 1.0
    return {
        "observed": obs,
        "predicted": budget.predicted_delta,
        "exact": budget.exact_delta,
        "rel_err_predicted": abs(obs - budget.predicted_delta) / scale,
        "rel_err_exact": abs(obs - budget.exact_delta) / scale,
    }


# -- sparse spline mode -----------------------------------------------------------------


def sample_indices(numel: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded subset of ``min(n, numel)`` flat element indices (sorted)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(numel, generator=g)[: min(n, numel)].sort().values


def _lr_fn(lr: Callable[[float], float] | tuple[Sequence[float], Sequence[float]]) -> Callable[[float], float]:
    if callable(lr):
        return lr
    xs, ys = (list(map(float, v)) for v in lr)

    def interp(t: float) -> float:
        import numpy as np

        return float(np.interp(t, xs, ys))

    return interp


def spline_f_align(
    steps: Sequence[float],
    values: torch.Tensor,
    lr: Callable[[float], float] | tuple[Sequence[float], Sequence[float]],
    weight_decay: float,
    at: Sequence[float],
    numel: int | None = None,
) -> list[float]:
    """Spline estimate of F_align(t) for the step t → t+1, at each ``t`` in ``at``.

    ``values`` is ``[len(steps), n]``: the sampled elements at each checkpoint. ``lr(s)`` is
    the lr of the step that ends at ``s`` (a callable, or ``(steps, lrs)`` interpolated
    linearly). With ``numel`` the inner product is scaled by ``numel / n`` to estimate the
    whole tensor's F_align.
    """
    import numpy as np
    from scipy.interpolate import CubicSpline

    y = values.double().numpy()
    cs = CubicSpline(np.asarray(steps, dtype=float), y, axis=0)
    eta = _lr_fn(lr)
    scale = 1.0 if numel is None else numel / y.shape[1]
    out = []
    for t in at:
        e = eta(t + 1)
        w, w1 = cs(t), cs(t + 1)
        u = -(w1 - w) / e - weight_decay * w
        out.append(float(-2.0 * e * np.dot(w, u) * scale))
    return out


def finite_difference_f_align(
    steps: Sequence[float],
    values: torch.Tensor,
    lr: Callable[[float], float] | tuple[Sequence[float], Sequence[float]],
    weight_decay: float,
    numel: int | None = None,
) -> list[float]:
    """Two-point baseline: û ≈ −(W_{i+1} − W_i)/(k·η) − λ_wd·W_i between consecutive checkpoints
    k steps apart, F_align ≈ −2η⟨W_i, û⟩ (η at the first step of the interval); one value per interval."""
    eta = _lr_fn(lr)
    y = values.double()
    scale = 1.0 if numel is None else numel / y.shape[1]
    out = []
    for i in range(len(steps) - 1):
        k = float(steps[i + 1] - steps[i])
        e = eta(steps[i] + 1)
        u = -(y[i + 1] - y[i]) / (k * e) - weight_decay * y[i]
        out.append(float(-2.0 * e * (y[i] * u).sum() * scale))
    return out


def accuracy(estimate: Sequence[float], exact: Sequence[float]) -> float:
    """1 − Σ|estimate − exact| / Σ|exact| (1 = perfect; can be negative)."""
    num = sum(abs(a - b) for a, b in zip(estimate, exact, strict=True))
    den = sum(abs(b) for b in exact)
    return 1.0 - num / den if den else (1.0 if num == 0 else -math.inf)
