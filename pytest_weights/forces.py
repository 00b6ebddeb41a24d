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

**Matching names to optimizer state** (:func:`map_optimizer_state`, :func:`state_by_name`):
``optimizer.state_dict()`` keys ``state`` by integer ids that torch assigns by enumerating
``param_groups`` in order and each group's parameters in order (ids 0..N−1 over the
concatenated ``params`` lists). Names are found, in this order:

1. each group's ``param_names`` (an optimizer built from ``model.named_parameters()``, torch ≥ 2.6);
2. ``param_names`` passed by the caller (all parameters, in the order given to the optimizer);
3. the checkpoint's parameter order (:class:`WeightsLayout`, from :func:`weights_layout`):
   ``named_parameters()`` of the model rebuilt on the ``meta`` device from a Hugging Face
   ``config.json`` next to the weights (:func:`hf_model_layout`; exact, tied weights listed
   once), and for ``torch.save`` files (``pytorch_model.bin``, a Lightning ``.ckpt``'s
   ``state_dict``) the file's own order — as is, without buffers (BatchNorm statistics,
   ``position_ids``, ``inv_freq``, masks: :func:`is_buffer`), without tied duplicates (tensors
   sharing storage), and both. A safetensors file is sorted by name, so its order is never used.
   Each order is tried as one group (``AdamW(model.parameters())``) and, with two groups, split
   into decay/no-decay as Hugging Face's ``Trainer.create_optimizer`` does (group 0: the names
   ``Trainer.get_decay_parameter_names`` returns for the rebuilt model — not in a LayerNorm, no
   ``bias``/``norm`` in the name — group 1: the rest; without a rebuilt model, by name rules
   or ``ndim < 2``). The group with the larger ``weight_decay`` must be the decay group.

A candidate is accepted only if its count equals the optimizer's and every state shape
(``exp_avg``) equals its tensor's shape; all accepted candidates must agree (the rebuilt
model wins when it fits). Only when none fits exactly, the optimizer's parameters may be a
subsequence of the checkpoint's (tensors frozen before the optimizer was built), if the
shapes fit exactly one way. Otherwise :class:`OptimizerMappingError` says what was tried and
why each failed. A state with no entries (never stepped) maps to no names. Limit: equal
shapes cannot tell apart two orders that differ only among same-shape tensors; hence only
orders known to be the parameter order are tried.

All functions are pure (no I/O) except the ``*_file``/``checkpoint_*`` helpers, and compute
in float64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ForceBudget",
    "OptimizerHyper",
    "OptimizerMappingError",
    "StateMap",
    "WeightsLayout",
    "adam_direction",
    "budget_from_state",
    "budget_from_sums",
    "checkpoint_budgets",
    "finite_difference_f_align",
    "hf_model_layout",
    "is_buffer",
    "load_optimizer_file",
    "map_optimizer_state",
    "optimizer_state_of",
    "previous_weights",
    "sample_indices",
    "spline_f_align",
    "state_by_name",
    "step_budget",
    "sum_check",
    "weights_layout",
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
    return budget_from_sums(float((w * u).sum()), float(u.square().sum()), float(w.square().sum()), lr, weight_decay)


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
    dot, u_sq, w_sq = float((w_prev * u).sum()), float(u.square().sum()), float(w_prev.square().sum())
    return budget_from_sums(dot, u_sq, w_sq, hyper.lr, hyper.weight_decay)


def budget_from_sums(dot: float, u_sq: float, w_sq: float, lr: float, weight_decay: float) -> ForceBudget:
    """The budget from Σ W_prev·û, Σ û² and Σ W_prev² (:class:`~pytest_weights.stats.force.StepBudgetSums`,
    computed by the engine over an :class:`~pytest_weights.readers.optimizer_view.OptimizerView`)."""
    return ForceBudget(
        f_align=-2.0 * lr * dot,
        f_inj=lr * lr * u_sq,
        f_decay=2.0 * lr * weight_decay * w_sq,
        sq_norm=w_sq,
        lr=float(lr),
        weight_decay=float(weight_decay),
    )


# -- matching optimizer state to parameter names ------------------------------------------

Shape = tuple[int, ...]

#: Tensors that are buffers, not parameters, by their last name component(s).
_BUFFER_RE = re.compile(
    r"(?:^|\.)(?:running_mean|running_var|num_batches_tracked|position_ids|token_type_ids|inv_freq"
    r"|masked_bias|_float_tensor|mask)$"
)
#: What Hugging Face's ``Trainer.get_decay_parameter_names`` excludes by name (transformers ≥ 4.4x, lowercased).
_NO_DECAY_RE = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


class OptimizerMappingError(ValueError):
    """The optimizer state cannot be matched to parameter names; the message says what was tried."""


@dataclass(frozen=True)
class WeightsLayout:
    """What a checkpoint tells about its model's parameters, for :func:`map_optimizer_state`.

    ``tensors``: the float tensors (name, shape), in the model's parameter order when
    ``ordered`` (a ``torch.save``'d state dict keeps ``state_dict()`` order) — safetensors sorts
    tensors by name, so its order says nothing (``unordered_reason``). ``aliases``: tensors that
    share storage with an earlier one (tied weights, which ``named_parameters()`` lists once).
    ``model_order``/``model_shapes``/``decay_names``: ``named_parameters()`` of the model rebuilt
    from ``config.json`` and Hugging Face's decay set for it (:func:`hf_model_layout`), or None.
    """

    tensors: tuple[tuple[str, Shape], ...]
    ordered: bool
    aliases: frozenset[str] = frozenset()
    model_order: tuple[str, ...] | None = None
    model_shapes: tuple[Shape, ...] | None = None
    decay_names: frozenset[str] | None = None
    source: str = "checkpoint"
    unordered_reason: str = ""
    model_reason: str = ""


@dataclass(frozen=True)
class StateMap:
    """Optimizer state by parameter name: every parameter of the optimizer, with its state and group.

    ``entries[name] = (state, group)``; ``state`` is ``{}`` for a parameter the optimizer has not
    stepped yet. ``method`` says how names were matched; ``left_out`` lists checkpoint tensors
    the mapping found outside the optimizer's groups (frozen before it was built).
    """

    entries: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]
    method: str
    n_params: int
    n_groups: int
    left_out: tuple[str, ...] = ()

    def adam(self) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
        """The entries that have Adam state (``exp_avg``)."""
        return {n: (s, g) for n, (s, g) in self.entries.items() if "exp_avg" in s}


def is_buffer(name: str, shape: Sequence[int]) -> bool:
    """True for a tensor named like a buffer, not a parameter: BatchNorm statistics, ``position_ids``,
    ``inv_freq``, attention masks (a ``bias`` or ``mask`` of ≥ 2 dimensions) …"""
    return bool(_BUFFER_RE.search(name)) or (name.endswith("bias") and len(shape) >= 2)


def _fmt_shape(shape: Shape | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _state_shape(st: Mapping[str, Any] | None) -> Shape | None:
    """The parameter shape an optimizer state entry reveals (``exp_avg``, ``momentum_buffer`` …), or None."""
    if not st:
        return None
    for key in ("exp_avg", "momentum_buffer", "exp_avg_sq", "square_avg", "sum"):
        t = st.get(key)
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            return tuple(t.shape)
    return None


def _align(
    cands: Sequence[tuple[str, Shape]], want: Sequence[tuple[int, Shape | None]], subsequence: bool
) -> tuple[list[str] | None, str]:
    """Names for the optimizer parameters ``want`` ((id, state shape or None), in order) from ``cands``.

    Exact: same count, every known shape equal. With ``subsequence`` the parameters may be a
    subsequence of ``cands`` (tensors left out of the optimizer), accepted only when the shapes
    fit one way. Returns (names, "") or (None, why not).
    """
    n, m = len(cands), len(want)
    if not subsequence or n == m:
        if n != m:
            return None, f"{n} tensors for {m} parameters"
        for (name, shape), (pid, ws) in zip(cands, want, strict=True):
            if ws is not None and tuple(shape) != ws:
                return None, f"shape mismatch at #{pid}: state {_fmt_shape(ws)} vs {name} {_fmt_shape(shape)}"
        return [c[0] for c in cands], ""
    if n < m:
        return None, f"{n} tensors for {m} parameters"

    def fits(i: int, j: int) -> bool:
        return want[j][1] is None or tuple(cands[i][1]) == want[j][1]

    # ways[i][j]: alignments of want[j:] into cands[i:] (capped at 2: unique or not is all that matters)
    ways = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        ways[i][m] = 1
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            w = ways[i + 1][j] + (ways[i + 1][j + 1] if fits(i, j) else 0)
            ways[i][j] = min(w, 2)
    if ways[0][0] == 0:
        return None, f"the {m} parameter shapes are not a subsequence of the {n} tensors"
    if ways[0][0] > 1:
        return None, f"{n - m} tensor(s) not in the optimizer, and the shapes fit several ways"
    names, i, j = [], 0, 0
    while j < m:
        if fits(i, j) and ways[i + 1][j + 1] >= 1:
            names.append(cands[i][0])
            j += 1
        i += 1
    return names, ""


def _groups_info(groups: Sequence[Mapping[str, Any]]) -> str:
    parts = [f"{len(g['params'])} with weight_decay {_fmt_num(g.get('weight_decay', 0.0))}" for g in groups]
    return ", ".join(parts)


def _fmt_num(x: Any) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _decay_rules(layout: WeightsLayout) -> list[tuple[str, Callable[[str, Shape], bool]]]:
    rules: list[tuple[str, Callable[[str, Shape], bool]]] = []
    if layout.decay_names is not None:
        decay = layout.decay_names
        rules.append(("Trainer.get_decay_parameter_names", lambda n, s: n in decay))
    rules += [
        ("bias/norm names not decayed", lambda n, s: not _NO_DECAY_RE.search(n.lower())),
        ("ndim < 2 not decayed", lambda n, s: len(s) >= 2),
        ("bias/norm names and ndim < 2 not decayed", lambda n, s: len(s) >= 2 and not _NO_DECAY_RE.search(n.lower())),
    ]
    return rules


def _orders(layout: WeightsLayout) -> tuple[list[tuple[str, list[tuple[str, Shape]]]], list[str]]:
    """Candidate parameter orders (label, [(name, shape)]) and why others are unavailable."""
    out: list[tuple[str, list[tuple[str, Shape]]]] = []
    notes: list[str] = []
    if layout.model_order is not None and layout.model_shapes is not None:
        in_file = dict(layout.tensors)
        model = list(zip(layout.model_order, layout.model_shapes, strict=True))
        odd = [n for n, shape in model if in_file.get(n) != shape]
        if odd:
            notes.append(f"model from config.json: {len(odd)} parameter(s) not in the file (e.g. {odd[0]})")
        else:
            out.append(("named_parameters() of the model in config.json", model))
    elif layout.model_reason:
        notes.append(f"model from config.json: {layout.model_reason}")
    if layout.ordered:
        base = list(layout.tensors)
        no_buf = [(n, s) for n, s in base if not is_buffer(n, s)]
        variants = [("file order", base), ("file order without buffers", no_buf)]
        if layout.aliases:
            variants += [
                ("file order without tied duplicates", [c for c in base if c[0] not in layout.aliases]),
                ("file order without buffers and tied duplicates", [c for c in no_buf if c[0] not in layout.aliases]),
            ]
        seen: set[tuple[str, ...]] = set()
        for label, cands in variants:
            key = tuple(n for n, _ in cands)
            if key not in seen:
                seen.add(key)
                out.append((label, cands))
    else:
        notes.append(f"file order: {layout.unordered_reason or 'not the parameter order'}")
    return out, notes


def map_optimizer_state(
    optimizer_state: Mapping[str, Any],
    layout: WeightsLayout | None = None,
    param_names: Sequence[str] | None = None,
    source: str = "optimizer state",
) -> StateMap:
    """Match ``optimizer.state_dict()`` entries to parameter names (see the module docstring).

    Tried in order: each group's ``param_names``; the given ``param_names``; with a ``layout``,
    the checkpoint's parameter order as one list (``AdamW(model.parameters())``) or split into
    decay/no-decay groups (Hugging Face ``Trainer``), each verified by every state shape and
    the groups' ``weight_decay``. Raises :class:`OptimizerMappingError` saying what was tried.
    """
    groups = list(optimizer_state["param_groups"])
    states = optimizer_state.get("state", {})
    flat = [(pid, g) for g in groups for pid in g["params"]]

    def state_of(pid: Any) -> Mapping[str, Any]:
        st = states.get(pid, states.get(str(pid)))
        return st if isinstance(st, Mapping) else {}

    head = f"{source}: {len(flat)} parameters in {len(groups)} group(s)"
    if len(groups) > 1:
        head += f" ({_groups_info(groups)})"

    def build(names: Sequence[str], method: str, left_out: Sequence[str] = ()) -> StateMap:
        return StateMap(
            {n: (state_of(pid), g) for n, (pid, g) in zip(names, flat, strict=True)},
            method,
            len(flat),
            len(groups),
            tuple(left_out),
        )

    if groups and all("param_names" in g for g in groups):
        names = [n for g in groups for n in g["param_names"]]
        if len(names) == len(flat):
            return build(names, "param_names")
        raise OptimizerMappingError(f"{head}: {len(names)} param_names for {len(flat)} parameters")
    if param_names is not None:
        names = list(param_names)
        if len(names) != len(flat):
            raise OptimizerMappingError(f"{head}: {len(names)} names given for {len(flat)} parameters")
        return build(names, "names given")
    if not any(state_of(pid) for pid, _ in flat):
        return StateMap({}, "none: the optimizer has not stepped yet", len(flat), len(groups))
    if layout is None:
        raise OptimizerMappingError(
            f"{head}: the optimizer state has no param_names: pass param_names in the optimizer's parameter "
            "order, or the checkpoint's layout"
        )

    want = [(pid, _state_shape(state_of(pid))) for pid, _ in flat]
    orders, notes = _orders(layout)
    tried: dict[str, list[str]] = {"checkpoint order": list(notes), "decay/no-decay split": list(notes)}
    found: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}
    starts = []
    i = 0
    for g in groups:
        starts.append(i)
        i += len(g["params"])

    for subsequence in (False, True):
        for label, cands in orders:
            names, why = _align(cands, want, subsequence)
            if names is not None:
                left = tuple(n for n, _ in cands if n not in set(names)) if subsequence else ()
                found.setdefault(tuple(names), (f"checkpoint order ({label})", left))
            elif not subsequence:
                tried["checkpoint order"].append(f"{label}: {why}")
            if len(groups) != 2:
                continue
            g0, g1 = groups
            w0, w1 = float(g0.get("weight_decay", 0.0)), float(g1.get("weight_decay", 0.0))
            # the decay group is the one with the larger weight_decay; equal: Hugging Face's order (decay first)
            assignments = [(0, 1)] if w0 > w1 else [(1, 0)] if w1 > w0 else [(0, 1), (1, 0)]
            for rule, is_decay in _decay_rules(layout):
                if rule == "Trainer.get_decay_parameter_names" and not label.startswith("named_parameters"):
                    continue
                split = ([c for c in cands if is_decay(*c)], [c for c in cands if not is_decay(*c)])
                for d, nd in assignments:
                    parts = {d: split[0], nd: split[1]}
                    got: list[str] = []
                    whys = []
                    for gi in (0, 1):
                        s, e = starts[gi], starts[gi] + len(groups[gi]["params"])
                        nm, why = _align(parts[gi], want[s:e], subsequence)
                        if nm is None:
                            whys.append(f"group {gi}: {why}")
                        else:
                            got += nm
                    if not whys:
                        left = tuple(n for n, _ in cands if n not in set(got)) if subsequence else ()
                        found.setdefault(tuple(got), (f"decay/no-decay split ({label}, {rule})", left))
                    elif not subsequence:
                        tried["decay/no-decay split"].append(f"{label}, {rule}: {whys[0]}")
        exact = [k for k, v in found.items() if "named_parameters()" in v[0]]
        if len(exact) == 1:  # the rebuilt model is authoritative when it fits
            return build(list(exact[0]), found[exact[0]][0], found[exact[0]][1])
        if len(found) == 1:
            ((names_t, (method, left)),) = found.items()
            return build(list(names_t), method, left)
        if len(found) > 1:
            methods = "; ".join(v[0] for v in found.values())
            raise OptimizerMappingError(
                f"{head}: ambiguous: the shapes fit {len(found)} different name orders ({methods})"
            )
    summary = "; ".join(
        f"{h} ({'; '.join(_dedupe(v)[:4]) or 'not applicable'})"
        for h, v in tried.items()
        if h == "checkpoint order" or len(groups) == 2
    )
    raise OptimizerMappingError(f"{head}; tried param_names (absent); {summary}")


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def state_by_name(
    optimizer_state: Mapping[str, Any],
    param_names: Sequence[str] | None = None,
    layout: WeightsLayout | None = None,
) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``{parameter name: (its state entry, its param group)}`` for the parameters with Adam state.

    Names come from each group's ``param_names``, else ``param_names``, else the checkpoint's
    ``layout`` (:func:`map_optimizer_state`); raises :class:`OptimizerMappingError` (a
    ``ValueError``) when none of them names the parameters.
    """
    return map_optimizer_state(optimizer_state, layout, param_names).adam()


def load_optimizer_file(path: str | Path) -> dict[str, Any]:
    """Load an ``optimizer.pt`` (or a Lightning ``.ckpt``) safely (``weights_only=True``); returns the saved dict."""
    from .readers.torch_file import load_weights_only

    obj = load_weights_only(Path(path))
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def optimizer_state_of(saved: Mapping[str, Any]) -> tuple[Mapping[str, Any], float | None] | None:
    """(``optimizer.state_dict()``, saved lr or None) inside a loaded file, or None when it holds none.

    Knows a bare state dict (Hugging Face ``optimizer.pt``), ``{"optimizer": …, "lr": …}``
    (``examples/train_tiny.py``) and Lightning's ``{"optimizer_states": [...]}`` (the first optimizer).
    """

    def is_state(x: Any) -> bool:
        return isinstance(x, Mapping) and "param_groups" in x and "state" in x

    if is_state(saved):
        return saved, None
    opt = saved.get("optimizer")
    if is_state(opt):
        lr = saved.get("lr")
        return opt, float(lr) if isinstance(lr, (int, float)) else None
    states = saved.get("optimizer_states")
    if isinstance(states, (list, tuple)) and states and is_state(states[0]):
        return states[0], None
    return None


def weights_layout(path: str | Path) -> WeightsLayout:
    """The :class:`WeightsLayout` of a checkpoint: a weights file or a model directory.

    ``torch.save`` files keep the state dict's order (Lightning ``.ckpt``: its ``state_dict``);
    safetensors files are sorted by name, so only the model rebuilt from a ``config.json``
    next to them (:func:`hf_model_layout`) gives the parameter order.
    """
    from .readers import open_checkpoint
    from .readers.torch_file import _walk, is_torch_file, load_weights_only

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    ckpt = open_checkpoint(p)
    try:
        infos = [i for i in ckpt.tensors() if i.group == "weights" and i.is_float]
        files = {Path(i.file) for i in infos}
        label = p.name if not p.is_dir() else f"{p.name}/"
    finally:
        ckpt.close()
    model = hf_model_layout(folder / "config.json")
    extra: dict[str, Any] = (
        {"model_order": model[0], "model_shapes": model[1], "decay_names": model[2]}
        if isinstance(model, tuple)
        else {"model_reason": model}
    )
    if len(files) == 1 and is_torch_file(next(iter(files))):
        obj = load_weights_only(next(iter(files)))
        prefix = ("state_dict",) if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping) else ()
        tensors, aliases, seen = [], set(), set()
        for parts, leaf, optimizer in _walk(obj, (), False, 0, set()):
            if optimizer or not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point():
                continue
            if parts[: len(prefix)] != prefix:
                continue
            name = ".".join(parts) or "tensor"
            try:
                key = (leaf.untyped_storage().data_ptr(), leaf.storage_offset(), tuple(leaf.shape), leaf.stride())
            except (RuntimeError, NotImplementedError):
                key = (id(leaf), 0, (), ())
            if key in seen:
                aliases.add(name)
            seen.add(key)
            tensors.append((name, tuple(leaf.shape)))
        return WeightsLayout(tuple(tensors), True, frozenset(aliases), source=label, **extra)
    tensors = tuple((i.name, tuple(i.shape)) for i in infos)
    why = "safetensors stores tensors sorted by name, not in parameter order"
    if not all(f.suffix == ".safetensors" for f in files):
        why = "the format does not keep the parameter order"
    return WeightsLayout(tensors, False, source=label, unordered_reason=why, **extra)


_MODEL_CACHE: dict[str, tuple[tuple[str, ...], tuple[Shape, ...], frozenset[str]] | str] = {}


def hf_model_layout(config_path: Path) -> tuple[tuple[str, ...], tuple[Shape, ...], frozenset[str]] | str:
    """``named_parameters()`` (names, shapes) of the model a Hugging Face ``config.json`` describes,
    and the names ``Trainer.get_decay_parameter_names`` decays; or why not (a string).

    The model is built on the ``meta`` device (no memory, no weights) from a class of the
    installed transformers named in ``architectures``; custom code (``auto_map``) is never run.
    Cached by the config's text.
    """
    try:
        text = config_path.read_text()
    except OSError:
        return "no config.json"
    if text in _MODEL_CACHE:
        return _MODEL_CACHE[text]
    _MODEL_CACHE[text] = result = _build_hf_model_layout(config_path, text)
    return result


def _build_hf_model_layout(
    config_path: Path, text: str
) -> tuple[tuple[str, ...], tuple[Shape, ...], frozenset[str]] | str:
    import json
    import logging
    import warnings

    try:
        cfg = json.loads(text)
    except ValueError as e:
        return f"unreadable config.json ({e})"
    archs = cfg.get("architectures") if isinstance(cfg, dict) else None
    if not archs:
        return "config.json names no architecture"
    if "auto_map" in cfg:
        return "the model needs custom code (auto_map), which is never run"
    try:
        import transformers
    except ImportError:
        return "transformers is not installed"
    cls = getattr(transformers, str(archs[0]), None)
    if cls is None:
        return f"transformers {transformers.__version__} has no class {archs[0]}"
    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = transformers.AutoConfig.from_pretrained(str(config_path.parent))
            with torch.device("meta"):
                model = cls(config)
    except Exception as e:  # any failure only means this candidate order is unavailable
        return f"cannot build {archs[0]} from config.json ({type(e).__name__}: {str(e)[:120]})"
    finally:
        log.setLevel(level)
    named = list(model.named_parameters())
    try:
        decay = frozenset(transformers.Trainer.get_decay_parameter_names(None, model))
    except Exception:  # older/newer signature: the same rule by hand
        from torch import nn

        decay = frozenset(
            n
            for mod_name, mod in model.named_modules()
            if not isinstance(mod, nn.LayerNorm)
            for pn, _ in mod.named_parameters(recurse=False)
            if not _NO_DECAY_RE.search((n := f"{mod_name}.{pn}" if mod_name else pn).lower())
        )
    return tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named), decay


def checkpoint_budgets(
    weights: Mapping[str, torch.Tensor] | Callable[[str], torch.Tensor],
    saved: Mapping[str, Any],
    names: Sequence[str] | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    param_names: Sequence[str] | None = None,
    layout: WeightsLayout | None = None,
    mapping: StateMap | None = None,
) -> dict[str, ForceBudget]:
    """The exact budget of the last step before a checkpoint, per parameter.

    ``weights`` maps (or reads, if callable) a name to the checkpoint's tensor; ``saved`` is
    ``optimizer.state_dict()``, a dict holding it under ``"optimizer"`` (the ``train_tiny.py``
    layout, whose ``lr`` key is used unless ``lr`` is given) or a Lightning checkpoint.
    ``names`` restricts the parameters (default: every one with Adam state); names are
    matched as :func:`map_optimizer_state` does (or given as ``mapping``).
    """
    found = optimizer_state_of(saved)
    if found is None:
        raise OptimizerMappingError("no optimizer state in the saved dict")
    opt, saved_lr = found
    if lr is None:
        lr = saved_lr
    if mapping is None:
        mapping = map_optimizer_state(opt, layout, param_names)
    read = weights if callable(weights) else weights.__getitem__
    out = {}
    for name, (st, group) in mapping.adam().items():
        if names is not None and name not in names:
            continue
        hyper = OptimizerHyper.from_group(group, lr, weight_decay)
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
