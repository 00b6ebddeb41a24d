"""``force_share``: paper D's three-force budget of AdamW, read from each checkpoint's optimizer state.

Run scope. For every checkpoint of the run with optimizer state, and for every selected
tensor that has Adam state, the exact budget of the last step before the checkpoint is
computed (:func:`pytest_weights.forces.checkpoint_budgets`). The optimizer state is
``optimizer_file`` next to the weights — ``optimizer.pt`` in a Hugging Face ``checkpoint-N/``
or an ``examples/train_tiny.py`` checkpoint — or, for a ``torch.save`` weights file with
no such file beside it, inside it (a Lightning ``.ckpt``: ``optimizer_states[0]``). Its
entries are matched to tensor names by :func:`pytest_weights.forces.map_optimizer_state`
(``param_names``, the model rebuilt from ``config.json``, the file's order, Hugging Face's
decay/no-decay split; verified by shape). The kind reads tensors itself through the files
named by the selected tensors' ``TensorInfo.file``: the engine's per-tensor reductions cannot
combine a weight with its optimizer state.

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

    def validate(self) -> str | None:
        name = self.optimizer_file
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return "optimizer_file must be a file name next to the weights (no directory part), e.g. optimizer.pt"
        return None

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
        try:
            return self._evaluate_run(steps, views)
        except Exception as e:  # a kind never crashes the session: the item fails, naming the error
            return Outcome(False, f"could not be evaluated: {type(e).__name__}: {str(e)[:500]}")

    def _sources(self, step_views: Sequence[TensorView]) -> dict[tuple[Path, Path], list[str]]:
        """Selected names by (optimizer file, weights checkpoint): ``optimizer_file`` next to the
        weights (its directory is the checkpoint), else the weights file itself when it is a
        ``torch.save`` file that may hold the optimizer (Lightning ``.ckpt``)."""
        from ..readers import detect_format
        from ..readers.torch_file import is_torch_file

        out: dict[tuple[Path, Path], list[str]] = {}
        for v in step_views:
            file = Path(v.info.file)
            opt = file.parent / self.optimizer_file
            if opt.is_file():
                key = (opt, file.parent if detect_format(file.parent) is not None else file)
            elif is_torch_file(file):
                key = (file, file)
            else:
                continue
            out.setdefault(key, []).append(v.name)
        return out

    def _evaluate_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        from ..errors import WeightsError
        from ..forces import (
            OptimizerMappingError,
            adam_direction,
            checkpoint_budgets,
            is_buffer,
            load_optimizer_file,
            map_optimizer_state,
            optimizer_state_of,
            weights_layout,
        )
        from ..readers import open_checkpoint

        rows: list[Deviation] = []
        unmapped: list[str] = []
        methods: dict[str, None] = {}
        waiting: list[str] = []
        observed: dict[str, dict] = {}
        checked = 0
        layouts: dict[Path, object] = {}
        for step, step_views in zip(steps, views, strict=True):
            if (self.from_step is not None and step < self.from_step) or (
                self.to_step is not None and step > self.to_step
            ):
                continue
            shapes = {v.name: tuple(v.info.shape) for v in step_views}
            for (opt_path, target), names in self._sources(step_views).items():
                label = f"{opt_path.parent.name}/{opt_path.name}"
                try:
                    found = optimizer_state_of(load_optimizer_file(opt_path))
                    if found is None:
                        if opt_path == target:
                            continue  # a plain weights file: no optimizer inside
                        raise OptimizerMappingError("no optimizer state in the file")
                    opt, saved_lr = found
                    if target not in layouts:
                        layouts[target] = weights_layout(target)
                    smap = map_optimizer_state(opt, layouts[target], source=label)  # type: ignore[arg-type]
                except (WeightsError, ValueError, KeyError, TypeError, IndexError, OSError) as e:
                    msg = str(e) if isinstance(e, OptimizerMappingError) else f"{label}: cannot read: {e}"
                    unmapped.append(msg)
                    rows.append(
                        Deviation(label, f"step {step}: {msg}", "optimizer state matched to parameter names", "")
                    )
                    continue
                methods[smap.method] = None
                if not smap.entries:  # never stepped
                    for name in names:
                        if self.require_fresh_state and step > 0:
                            rows.append(self._stale(name, step, "no optimizer state: the optimizer never stepped"))
                        else:
                            waiting.append(name)
                    continue
                ckpt = open_checkpoint(target)
                try:
                    budgets = checkpoint_budgets(ckpt.read, {"optimizer": opt}, names, self.lr if self.lr is not None
                                                 else saved_lr, self.weight_decay, mapping=smap)  # fmt: skip
                finally:
                    ckpt.close()
                for name in names:
                    entry = smap.entries.get(name)
                    if entry is None and is_buffer(name, shapes[name]):
                        continue  # a buffer (e.g. a causal mask), not a parameter
                    if entry is None or "exp_avg" not in entry[0]:
                        why = (
                            "not in the optimizer's parameter groups"
                            if entry is None
                            else "no optimizer state"
                            if not entry[0]
                            else "no Adam state (exp_avg)"
                        )
                        if self.require_fresh_state and step > 0 and (entry is None or not entry[0]):
                            rows.append(self._stale(name, step, f"{why}: never updated"))
                        elif step == 0 or (entry is not None and not entry[0]):
                            waiting.append(name)
                        continue
                    checked += 1
                    st, g = entry
                    b = budgets[name]
                    share = b.shares[self.force]
                    observed.setdefault(name, {"steps": [], "shares": []})
                    observed[name]["steps"].append(step)
                    observed[name]["shares"].append(b.shares)
                    state_step = int(float(st["step"]))
                    if self.require_fresh_state and state_step != step:
                        rows.append(
                            self._stale(
                                name, step, f"optimizer state last updated at step {state_step}", step - state_step
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
        notes = tuple(f"optimizer state matched by {m}" for m in methods)
        if waiting:
            notes += (f"{len(set(waiting))} tensor(s) with no optimizer state yet (not stepped)",)
        if unmapped:
            return Outcome(
                False,
                f"{len(unmapped)} checkpoint(s) whose optimizer state could not be read or matched to "
                f"parameter names: {unmapped[0]}",
                tuple(rows),
                checked,
                notes,
                observed,
            )
        if not checked and not rows:
            if waiting:
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
