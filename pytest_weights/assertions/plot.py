"""What a failure plot shows, as numbers: the panels a kind's ``plot_data()`` returns.

Three generic shapes, rendered by :mod:`pytest_weights.html_report` without knowing the kind:

- :class:`Histogram`: one tensor's values (re-read from its checkpoint) with a fitted
  distribution (``Normal``: the normal of its mean and std; ``Weibull``: |w| with Weibull(k, λ)
  and its probability plot);
- :class:`Points`: one number per subject against a band (failing subjects marked);
- :class:`Lines`: series (x, y) with per-point bands and per-point verdicts — a statistic
  against depth, against the step of a run, or siblings against depth around their median.

Each has ``to_dict()`` (with ``panel``: its shape), as stored in the JSON report's ``plot`` list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .results import NONFINITE, Bounds, Outcome


def _num(x: Any) -> float | None:
    """A JSON-safe float (NaN/±Inf become None)."""
    if x is None or isinstance(x, bool):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _bounds(b: Bounds | None) -> list[float | None]:
    return [None, None] if b is None else [_num(b[0]), _num(b[1])]


@dataclass(frozen=True)
class Histogram:
    """The values of ``tensor`` with a fitted distribution (``params``: ``k``, ``lambda`` for Weibull)."""

    tensor: str
    fit: Literal["Normal", "Weibull"] = "Normal"
    params: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "panel": "histogram",
            "tensor": self.tensor,
            "fit": self.fit,
            "params": {k: _num(v) for k, v in self.params.items()},
        }


@dataclass(frozen=True)
class Points:
    """``label`` of each subject (``values``) against ``band`` (lo, hi); ``failing`` marked."""

    label: str
    values: Mapping[str, float]
    band: Bounds | None = None
    failing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "panel": "points",
            "label": self.label,
            "values": {k: _num(v) for k, v in self.values.items()},
            "band": _bounds(self.band),
            "failing": list(self.failing),
        }


@dataclass(frozen=True)
class Line:
    """One series: ``y`` against ``x``; ``lo``/``hi`` the allowed band at each point (None: open);
    ``bad`` the points that fail; ``highlight`` a failing series (drawn in colour); ``fit`` a
    fitted curve over the series."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    lo: Sequence[float | None] | None = None
    hi: Sequence[float | None] | None = None
    bad: Sequence[bool] = ()
    highlight: bool = False
    #: True for a fitted curve drawn over the series (dashed; e.g. a least-squares trend).
    fit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "x": [_num(v) for v in self.x],
            "y": [_num(v) for v in self.y],
            "lo": [_num(v) for v in self.lo] if self.lo is not None else None,
            "hi": [_num(v) for v in self.hi] if self.hi is not None else None,
            "bad": [bool(b) for b in self.bad],
            "highlight": self.highlight,
            "fit": self.fit,
        }


@dataclass(frozen=True)
class Lines:
    """Series on one axis (``xlabel`` depth or step, ``ylabel`` the statistic)."""

    title: str
    xlabel: str
    ylabel: str
    lines: tuple[Line, ...]
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "panel": "lines",
            "title": self.title,
            "xlabel": self.xlabel,
            "ylabel": self.ylabel,
            "lines": [ln.to_dict() for ln in self.lines],
            "log": self.log,
        }


Panel = Histogram | Points | Lines


def worst_subject(outcome: Outcome) -> str | None:
    """The worst deviating subject whose values say something (NaN/Inf rows only name counts)."""
    rows = outcome.deviations
    if not rows:
        return None
    drawable = [d for d in rows if d.statistic != NONFINITE] or list(rows)
    return drawable[0].subject


def per_tensor_panels(outcome: Outcome) -> tuple[Panel, ...]:
    """The default plot of a per-tensor kind: the worst tensor's histogram, and every checked
    tensor's number against the bounds (when ``observed`` holds one number per tensor)."""
    worst = worst_subject(outcome)
    if worst is None:
        return ()
    panels: list[Panel] = [Histogram(worst.split("|", 1)[0])]  # width_transfer rows: "tensor|quantity"
    numbers = {
        k: float(v) for k, v in outcome.observed.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if len(numbers) >= 2:
        failing = tuple(d.subject for d in outcome.deviations)
        panels.append(Points(outcome.statistic or "value", numbers, outcome.bounds, failing))
    return tuple(panels)


def panels_json(panels: Sequence[Panel]) -> list[dict[str, Any]]:
    """The JSON form of ``panels`` (the report's ``plot`` list)."""
    return [p.to_dict() for p in panels]
