"""Helpers for assertions over groups of tensors: roles, ranks, Spearman ρ, slopes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .base import Outcome, TensorView


def peers_problem(min_tensors: int) -> str | None:
    """Why ``min_tensors`` cannot work for a comparison with the median of the selection."""
    return "min_tensors must be ≥ 3 (a median of two cannot single one out)" if min_tensors < 3 else None


def too_few(tensors: Sequence[TensorView], min_tensors: int) -> Outcome | None:
    """A skipped outcome when fewer than ``min_tensors`` are selected (no model median to compare with)."""
    n = len(tensors)
    if n >= min_tensors:
        return None
    return Outcome(True, f"nothing to compare: {n} tensor(s) selected, {min_tensors} needed", (), n, skipped=True)


def by_role(tensors: Sequence[TensorView]) -> dict[str, list[TensorView]]:
    """Tensors grouped by role (name with the layer index replaced by ``*``)."""
    groups: dict[str, list[TensorView]] = defaultdict(list)
    for t in tensors:
        groups[t.role].append(t)
    return dict(groups)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation ρ (NaN when either side is constant)."""
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y against x."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    xc = xa - xa.mean()
    den = (xc * xc).sum()
    return float((xc * (ya - ya.mean())).sum() / den) if den > 0 else float("nan")
