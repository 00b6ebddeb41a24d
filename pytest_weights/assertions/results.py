"""What an assertion found, as numbers: :class:`Outcome` and its :class:`Deviation` rows.

The lowest layer of :mod:`pytest_weights.assertions`: kinds, plots (:mod:`.plot`) and
proposals (:mod:`.proposal`) import it; it imports none of them. Text (``fmt``,
``interval``) is only the rendering of these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Bounds = tuple[float | None, float | None]
#: The ``statistic`` of a row failed by the NaN policy (its values are not finite).
NONFINITE = "nonfinite"


@dataclass(frozen=True)
class Deviation:
    """One row of a failure table: what deviates, by how much, against what.

    The numbers are ``value`` (observed), ``bounds`` (the allowed interval of ``value``, a
    side None when open), ``statistic`` (what ``value`` is), ``ratio`` and ``step``; the text
    columns are their rendering by the kind, for the tables.
    """

    subject: str  # a tensor name, or a role for group assertions
    observed: str
    expected: str
    tolerance: str = ""
    score: float = math.inf  # larger = worse; rows are shown worst first
    #: For comparisons with a median (siblings, the model): the tensor's value over that median.
    ratio: float | None = None
    #: The observed number (None when the row has no single number, e.g. a class).
    value: float | None = None
    #: The interval ``value`` must lie in: (lo, hi), None for an open side.
    bounds: Bounds | None = None
    #: What ``value`` is (``std``, ``KS D``, ``ratio`` …); :data:`NONFINITE` for the NaN policy's rows.
    statistic: str = ""
    #: For runs: the step the row's value is at.
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON row: the text columns (version 1) and the numbers."""
        return {
            "tensor": self.subject,
            "observed": self.observed,
            "expected": self.expected,
            "tolerance": self.tolerance,
            "value": self.value,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "statistic": self.statistic or None,
            "ratio": self.ratio,
            "step": self.step,
            "score": self.score,
        }


@dataclass(frozen=True)
class Outcome:
    """What an assertion found: passed, one-line summary, the deviating rows, notes."""

    passed: bool
    summary: str
    deviations: tuple[Deviation, ...] = ()
    checked: int = 0
    notes: tuple[str, ...] = ()
    observed: Mapping[str, Any] = field(default_factory=dict)
    #: Nothing to judge (e.g. no role has siblings): reported as a pytest skip, not a pass.
    skipped: bool = False
    #: What was judged per subject (``std``, ``KS D`` …) and the interval it must lie in.
    statistic: str = ""
    bounds: Bounds | None = None
    #: Numbers the kind keeps for its own :meth:`Assertion.plot_data` (not serialised).
    detail: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def fmt(x: float) -> str:
    """Compact number: 4 significant digits, scientific when small or large."""
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4g}"


def interval(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in [{fmt(lo)}, {fmt(hi)}]"
    if lo is not None:
        return f"≥ {fmt(lo)}"
    if hi is not None:
        return f"≤ {fmt(hi)}"
    return "any"
