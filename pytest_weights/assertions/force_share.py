"""``force_share``: paper D's three-force budget of AdamW, read from each checkpoint's optimizer state.

Run scope. For every checkpoint of the run that has an optimizer file next to its weights
(``optimizer.pt`` in the checkpoint directory, the ``examples/train_tiny.py`` layout: a dict
with ``optimizer`` = ``opt.state_dict()`` and optionally ``lr``/``weight_decay``), and for every
selected tensor that has Adam state, the exact budget of the last step before the checkpoint
is computed (:func:`pytest_weights.forces.checkpoint_budgets`). The kind reads tensors itself
(weights and optimizer state) through the files named by the selected tensors' ``TensorInfo.file``:
the engine's per-tensor reductions cannot combine a weight with its optimizer state.

Checks, each reported with the step and the tensor:

- the share of ``force`` (``align``, ``inj`` or ``decay``) is within [``min``, ``max``] at
  checkpoints in [``from_step``, ``to_step``];
- the tensor is still being updated: its optimizer state's step count equals the checkpoint's
  step (a frozen parameter keeps a stale count; ``require_fresh_state``);
- the update is not a blow-up: η‖û‖/‖W‖ ≤ ``max_update`` when set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from ..stats import Moments, Statistic
from .base import Assertion, Deviation, Outcome, TensorView, fmt, interval, register


@register
@dataclass(frozen=True)
class ForceShare(Assertion):
    """Per checkpoint and tensor: share of ``force`` in [min, max]; state fresh; update ≤ max_update."""

    kind = "force_share"
    scope: ClassVar[str] = "run"
    force: Literal["align", "inj", "decay"] = "align"
    min: float | None = None
    max: float | None = None
    from_step: int | None = None
    to_step: int | None = None
    require_fresh_state: bool = True
    max_update: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer_file: str = "optimizer.pt"

    def statistics(self) -> tuple[Statistic, ...]:
        return (Moments(),)  # unused: the kind reads its tensors itself

    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        return Outcome(False, f"{self.kind} judges a run: pass a run directory (--checkpoint RUN_DIR)")

    def expected(self) -> str:
        parts = []
        if self.min is not None or self.max is not None:
            parts.append(f"{self.force} share {interval(self.min, self.max)}")
        if self.require_fresh_state:
            parts.append("updated at every checkpoint")
        if self.max_update is not None:
            parts.append(f"η‖û‖/‖W‖ ≤ {fmt(self.max_update)}")
        return ", ".join(parts) or "a force budget"

    def describe(self) -> str:
        return f"AdamW force budget over the run: {self.expected()}"

    def evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        from ..forces import adam_direction, checkpoint_budgets, load_optimizer_file, state_by_name
        from ..readers import open_checkpoint

        rows: list[Deviation] = []
        observed: dict[str, dict] = {}
        checked = 0
        for step, step_views in zip(steps, views, strict=True):
            if (self.from_step is not None and step < self.from_step) or (
                self.to_step is not None and step > self.to_step
            ):
                continue
            by_file: dict[str, list[str]] = {}
            for v in step_views:
                by_file.setdefault(v.info.file, []).append(v.name)
            for file, names in by_file.items():
                opt_path = Path(file).parent / self.optimizer_file
                if not opt_path.is_file():
                    continue
                saved = load_optimizer_file(opt_path)
                ckpt = open_checkpoint(file)
                try:
                    budgets = checkpoint_budgets(ckpt.read, saved, names, self.lr, self.weight_decay)
                    states = state_by_name(saved.get("optimizer", saved))
                    for name in names:
                        if name not in budgets:
                            continue
                        checked += 1
                        b = budgets[name]
                        share = b.shares[self.force]
                        observed.setdefault(name, {"steps": [], "shares": []})
                        observed[name]["steps"].append(step)
                        observed[name]["shares"].append(b.shares)
                        st = states[name][0]
                        state_step = int(float(st["step"]))
                        if self.require_fresh_state and state_step != step:
                            rows.append(
                                Deviation(
                                    name,
                                    f"step {step}: optimizer state last updated at step {state_step}",
                                    "updated at every checkpoint",
                                    "state step == checkpoint step",
                                    float(step - state_step),
                                )
                            )
                            continue
                        lo = -math.inf if self.min is None else self.min
                        hi = math.inf if self.max is None else self.max
                        if not lo <= share <= hi:
                            rows.append(
                                Deviation(
                                    name,
                                    f"step {step}: {self.force} share {fmt(share)}",
                                    f"{self.force} share {interval(self.min, self.max)}",
                                    "align/inj/decay " + "/".join(fmt(v) for v in b.shares.values()),
                                    max(lo - share, share - hi),
                                )
                            )
                        if self.max_update is not None:
                            g = states[name][1]
                            b1, b2 = g.get("betas", (0.9, 0.999))
                            u = adam_direction(st["exp_avg"], st["exp_avg_sq"], float(st["step"]), b1, b2, g["eps"])
                            rel = b.lr * float(u.norm()) / max(math.sqrt(b.sq_norm), 1e-30)
                            if not rel <= self.max_update:
                                rows.append(
                                    Deviation(
                                        name,
                                        f"step {step}: η‖û‖/‖W‖ = {fmt(rel)} (lr {fmt(b.lr)})",
                                        f"≤ {fmt(self.max_update)}",
                                        "relative update size",
                                        rel / self.max_update,
                                    )
                                )
                finally:
                    ckpt.close()
        if not checked:
            return Outcome(
                False,
                f"no selected tensor has optimizer state: {self.kind} needs '{self.optimizer_file}' "
                "next to each checkpoint's weights",
            )
        rows.sort(key=lambda d: -d.score)
        summary = (
            f"{len(rows)} violation(s) in {checked} (checkpoint, tensor) budgets: {self.expected()} does not hold"
            if rows
            else f"all {checked} (checkpoint, tensor) budgets: {self.expected()}"
        )
        return Outcome(not rows, summary, tuple(rows), checked, observed=observed)
