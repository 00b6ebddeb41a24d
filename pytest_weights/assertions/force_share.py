"""``force_share``: paper D's three-force budget of AdamW, read from each checkpoint's optimizer state.

Run scope. For every checkpoint of the run with optimizer state, and for every selected
tensor that has Adam state, the exact budget of the last step before the checkpoint is
computed in the checkpoint's one pass, from the sums of :class:`~pytest_weights.stats.force.StepBudgetSums`
over the checkpoint's :class:`~pytest_weights.readers.optimizer_view.OptimizerView` (the kind's
target view, :meth:`ForceShare.open_view`), so the statistics cache keeps them like any other. The optimizer state is
``optimizer_file`` next to the weights — ``optimizer.pt`` in a Hugging Face ``checkpoint-N/``
or an ``examples/train_tiny.py`` checkpoint — or, for a ``torch.save`` weights file with
no such file beside it, inside it (a Lightning ``.ckpt``: ``optimizer_states[0]``). Its
entries are matched to tensor names by :func:`pytest_weights.forces.map_optimizer_state`
(``param_names``, the model rebuilt from ``config.json``, the file's order, Hugging Face's
decay/no-decay split; verified by shape) when the view is opened; each tensor's
:class:`~pytest_weights.readers.optimizer_view.OptimizerInfo` carries what the kind judges
besides the sums (status, lr, weight decay, the state's step count). The kind reads nothing itself.

A checkpoint whose optimizer state cannot be read or matched fails the item with a row naming
the file and what was tried; nothing raises out of :meth:`ForceShare.evaluate_run`. Tensors
with no optimizer state yet (an optimizer that has not stepped) are noted, and only fail
``require_fresh_state`` at a step > 0. A run whose only optimizer states are unstepped is skipped.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from ..stats import Statistic
from .base import Assertion, Deviation, Outcome, TensorView, fmt, interval, register
from .series import in_window

if TYPE_CHECKING:
    from ..readers.base import Checkpoint
    from ..readers.optimizer_view import OptimizerInfo


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

    def validate(self) -> str | None:
        name = self.optimizer_file
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return "optimizer_file must be a file name next to the weights (no directory part), e.g. optimizer.pt"
        return None

    def statistics(self) -> tuple[Statistic, ...]:
        from ..stats.force import StepBudgetSums

        return (StepBudgetSums(),)  # over the optimizer view's [W_prev, û] rows

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

    def view_key(self) -> tuple[str, float | None, float | None]:
        """What the view :meth:`open_view` builds depends on (the runner keeps one view per key)."""
        return (self.optimizer_file, self.lr, self.weight_decay)

    def open_view(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint's weights joined with their optimizer state: what this kind reads."""
        from ..readers.optimizer_view import OptimizerView

        return OptimizerView(checkpoint, self.optimizer_file, self.lr, self.weight_decay)

    def evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        try:
            return self._evaluate_run(steps, views)
        except Exception as e:  # a kind never crashes the session: the item fails, naming the error
            return Outcome(False, f"could not be evaluated: {type(e).__name__}: {str(e)[:500]}")

    def _evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        tally = _Tally()
        for step, step_views in zip(steps, views, strict=True):
            if in_window(step, self.from_step, self.to_step):
                for source_views in _by_source(step_views).values():
                    self._judge_source(step, source_views, tally)
        return self._outcome(tally)

    def _judge_source(self, step: int, views: Sequence[TensorView], tally: _Tally) -> None:
        """The tensors of one checkpoint whose state is in one optimizer file."""
        first = _info(views[0])
        if first.status == "unmapped":
            tally.unmapped.append(first.problem)
            row = Deviation(
                first.source, f"step {step}: {first.problem}", "optimizer state matched to parameter names", ""
            )
            tally.rows.append(row)
            return
        tally.methods[first.method] = None
        for v in views:
            self._judge_tensor(step, v, tally)

    def _judge_tensor(self, step: int, view: TensorView, tally: _Tally) -> None:
        info = _info(view)
        if info.status == "adam":
            tally.checked += 1
            self._judge_budget(step, view, tally)
            return
        if info.status == "buffer":
            return  # a buffer (e.g. a causal mask), not a parameter
        fresh = self.require_fresh_state and step > 0
        if info.status == "unstepped":
            if fresh:
                tally.rows.append(self._stale(info.name, step, "no optimizer state: the optimizer never stepped"))
            else:
                tally.waiting.append(info.name)
            return
        why = _WHY[info.status]
        if fresh and info.status in ("not_in_groups", "no_state"):
            tally.rows.append(self._stale(info.name, step, f"{why}: never updated"))
        elif step == 0 or info.status == "no_state":
            tally.waiting.append(info.name)

    def _judge_budget(self, step: int, view: TensorView, tally: _Tally) -> None:
        """Share, freshness and update size of one tensor's budget at ``step``."""
        from ..forces import budget_from_sums
        from ..stats.force import StepBudgetSums

        info = _info(view)
        sums = view[StepBudgetSums()]
        b = budget_from_sums(sums.dot, sums.u_sq, sums.w_sq, info.lr, info.weight_decay)
        seen = tally.observed.setdefault(info.name, {"steps": [], "shares": []})
        seen["steps"].append(step)
        seen["shares"].append(b.shares)
        state_step = int(info.state_step)
        if self.require_fresh_state and state_step != step:
            tally.rows.append(
                self._stale(info.name, step, f"optimizer state last updated at step {state_step}", step - state_step)
            )
            return
        tally.rows += self._share_rows(step, info.name, b.shares)
        if self.max_update is not None:
            rel = b.lr * math.sqrt(sums.u_sq) / max(math.sqrt(b.sq_norm), 1e-30)
            if not rel <= self.max_update:
                tally.rows.append(Deviation(info.name, f"step {step}: η‖û‖/‖W‖ = {fmt(rel)} (lr {fmt(b.lr)})",
                                            f"≤ {fmt(self.max_update)}", "relative update size",
                                            rel / self.max_update))  # fmt: skip

    def _share_rows(self, step: int, name: str, shares: dict[str, float]) -> list[Deviation]:
        share = shares[self.force]
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        if lo <= share <= hi:
            return []
        return [
            Deviation(
                name,
                f"step {step}: {self.force} share {fmt(share)}",
                f"{self.force} share {interval(self.min, self.max)}",
                "align/inj/decay " + "/".join(fmt(v) for v in shares.values()),
                max(lo - share, share - hi),
            )
        ]

    def _outcome(self, tally: _Tally) -> Outcome:
        rows, checked, observed = tally.rows, tally.checked, tally.observed
        notes = tuple(f"optimizer state matched by {m}" for m in tally.methods)
        if tally.waiting:
            notes += (f"{len(set(tally.waiting))} tensor(s) with no optimizer state yet (not stepped)",)
        if tally.unmapped:
            return Outcome(
                False,
                f"{len(tally.unmapped)} checkpoint(s) whose optimizer state could not be read or matched to "
                f"parameter names: {tally.unmapped[0]}",
                tuple(rows),
                checked,
                notes,
                observed,
            )
        if not checked and not rows:
            if tally.waiting:
                return Outcome(
                    True, "no optimizer step taken yet: nothing to judge", (), 0, notes, observed, skipped=True
                )
            return Outcome(
                False,
                f"no selected tensor has optimizer state: {self.kind} needs '{self.optimizer_file}' "
                "next to each checkpoint's weights (or a Lightning .ckpt holding optimizer_states)",
            )
        rows.sort(key=lambda d: -d.score)
        summary = (
            f"{len(rows)} violation(s) in {checked} (checkpoint, tensor) budgets: {self.expected()} does not hold"
            if rows
            else f"all {checked} (checkpoint, tensor) budgets: {self.expected()}"
        )
        return Outcome(not rows, summary, tuple(rows), checked, notes, observed)

    @staticmethod
    def _stale(name: str, step: int, what: str, behind: float | None = None) -> Deviation:
        """A tensor the optimizer did not update by ``step`` (``behind``: steps since it last did)."""
        return Deviation(name, f"step {step}: {what}", "updated at every checkpoint", "state step == checkpoint step",
                         float(step if behind is None else behind))  # fmt: skip


_WHY = {
    "not_in_groups": "not in the optimizer's parameter groups",
    "no_state": "no optimizer state",
    "no_adam": "no Adam state (exp_avg)",
}


@dataclass
class _Tally:
    """What :meth:`ForceShare._evaluate_run` collects over the run."""

    rows: list[Deviation] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    methods: dict[str, None] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    observed: dict[str, dict] = field(default_factory=dict)
    checked: int = 0


def _info(view: TensorView) -> OptimizerInfo:
    """The view's tensor as the optimizer view lists it (a plain tensor: no optimizer state)."""
    from ..readers.optimizer_view import OptimizerInfo

    info = view.info
    return info if isinstance(info, OptimizerInfo) else OptimizerInfo(info.name, info.shape, info.dtype, info.file)


def _by_source(views: Sequence[TensorView]) -> dict[str, list[TensorView]]:
    """The views with optimizer state beside them, by optimizer file (in the order first seen)."""
    out: dict[str, list[TensorView]] = {}
    for v in views:
        info = _info(v)
        if info.status != "none":
            out.setdefault(info.source, []).append(v)
    return out
