"""``StepBudgetSums``: the three sums behind one AdamW step's force budget (:mod:`pytest_weights.forces`).

A rows statistic over the two-column tensors of an
:class:`~pytest_weights.readers.optimizer_view.OptimizerView` — one row per element,
``[W_prev, û]`` (the weights before the checkpoint's last step and that step's Adam
direction, float64). Pure and parameter-free: Σ W_prev·û, Σ û² and Σ W_prev², summed in
float64 and merged by addition in block order, so the budget of a tensor goes through the
one-pass engine and the statistics cache like any other statistic. The kind turns the sums
into a :class:`~pytest_weights.forces.ForceBudget` with the step's lr and weight decay
(:func:`pytest_weights.forces.budget_from_sums`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .base import Deps, Statistic, cacheable


@cacheable
class BudgetSums(NamedTuple):
    """Σ W_prev·û, Σ û², Σ W_prev² of one tensor (float64), and its element count."""

    dot: float
    u_sq: float
    w_sq: float
    n: int


@dataclass(frozen=True)
class StepBudgetSums(Statistic):
    """Σ W_prev·û, Σ û², Σ W_prev² over the rows ``[W_prev, û]`` of an optimizer view's tensor."""

    def reduce(self, block: torch.Tensor, deps: Deps) -> BudgetSums:
        if block.shape[-1] != 2:
            raise ValueError(
                f"step_budget_sums reads [W_prev, û] rows (2 columns), got a block of shape {tuple(block.shape)}"
            )
        b = block.double()
        w, u = b[:, 0], b[:, 1]
        return BudgetSums(float((w * u).sum()), float(u.square().sum()), float(w.square().sum()), int(b.shape[0]))

    def merge(self, a: BudgetSums, b: BudgetSums) -> BudgetSums:
        return BudgetSums(a.dot + b.dot, a.u_sq + b.u_sq, a.w_sq + b.w_sq, a.n + b.n)

    def finalize(self, state: BudgetSums | None, deps: Deps) -> BudgetSums:
        return state if state is not None else BudgetSums(0.0, 0.0, 0.0, 0)
