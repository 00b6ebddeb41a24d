"""Result objects and their text form (the pytest failure message and ``str(report)``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import formatting
from .assertions.base import Bounds, Deviation

#: Where a spec entry is: (file, line); the line is None when unknown.
Location = tuple[str, int | None]

MAX_ROWS = 15


@dataclass(frozen=True)
class AssertionResult:
    """The verdict of one assertion on one checkpoint, like a scipy.stats result object:
    the verdict with its statistic and context (what, where, against what)."""

    name: str
    kind: str
    description: str
    #: The spec entry as (file, line) (a ``"file:line"`` string given here is split once).
    location: Location
    checkpoint: str
    passed: bool
    summary: str
    deviations: tuple[Deviation, ...] = ()
    checked: int = 0
    skipped: bool = False
    notes: tuple[str, ...] = ()
    selection: str = ""
    observed: dict = field(default_factory=dict, repr=False, compare=False)
    #: Why the assertion could not be judged (an error while reading or evaluating), else None.
    error: str | None = None
    #: The Python traceback of an unexpected ``error`` (for bug reports), else ''.
    traceback: str = field(default="", repr=False, compare=False)
    #: What was judged per subject (``std``, ``KS D``, ``ρ`` …) and the interval it must lie in.
    statistic: str = ""
    bounds: Bounds | None = None
    #: The failure plot's panels (:mod:`pytest_weights.assertions.plot`), from the kind's ``plot_data``.
    plot: tuple = field(default=(), repr=False, compare=False)
    #: What ``checkpoint`` names: ``{"view": "weights" | "delta" | "lora", "paths": [...]}``, the
    #: checkpoint files behind the label (W; W and W_ref; the adapter), or None (a run).
    source: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.location, str):  # the text form "file:line" of older callers
            file, sep, line = self.location.rpartition(":")
            where = (file, int(line)) if sep and line.isdigit() else (self.location, None)
            object.__setattr__(self, "location", where)

    @property
    def where(self) -> str:
        """The spec location as text: ``file:line``."""
        file, line = self.location
        return f"{file}:{line}" if line is not None else file

    def format(self, max_rows: int = MAX_ROWS) -> str:
        """Multi-line failure text: location, what was asserted, a table worst first;
        one line ``file:line: name on checkpoint: cause`` for an error."""
        if self.error is not None:
            return f"{self.where}: {self.name} on {self.checkpoint}: {self.error}"
        head = f"{self.where}: {self.name} [{self.kind}] on {self.checkpoint}"
        lines = [head, f"  asserted: {self.description}", f"  found:    {self.summary}"]
        if self.selection:
            lines.append(f"  selected: {self.selection}")
        if self.deviations:
            lines.append("")
            lines.extend("  " + row for row in table(self.deviations, max_rows))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready record (the ``--weights-json`` schema, version 1; see docs/reports.md):
        the text fields, and the numbers they are made from (``statistic``, ``bounds``, each
        deviation's ``value``/``bounds``/``step``, ``plot``)."""
        from .assertions.plot import panels_json

        file, line = self.location
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "spec": {"file": file, "line": line},
            "checkpoint": self.checkpoint,
            "passed": self.passed,
            "skipped": self.skipped,
            "summary": self.summary,
            "checked": self.checked,
            "selection": self.selection,
            "deviations": [_jsonable(d.to_dict()) for d in self.deviations],
            "notes": list(self.notes),
            "observed": _jsonable(self.observed),
            "error": self.error,
            "statistic": self.statistic or None,
            "bounds": _jsonable(list(self.bounds)) if self.bounds is not None else None,
            "plot": panels_json(self.plot),
            "source": self.source,
        }


def result_source(checkpoint: Any) -> dict:
    """What a result's checkpoint label names, as data: the view and the files behind it."""
    from .readers.derived import DeltaCheckpoint, LoraDelta

    if isinstance(checkpoint, DeltaCheckpoint):
        return {"view": "delta", "paths": [str(checkpoint.target.path), str(checkpoint.reference.path)]}
    if isinstance(checkpoint, LoraDelta):
        return {"view": "lora", "paths": [str(checkpoint.adapter.path)]}
    return {"view": "weights", "paths": [str(checkpoint.path)]}


def _jsonable(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, ±inf) become None; tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def table(rows: Sequence[Deviation], max_rows: int = MAX_ROWS) -> list[str]:
    """Aligned table of deviations, worst first, capped with ``… and N more``."""
    shown = [(d.subject, d.observed, d.expected, d.tolerance) for d in rows[:max_rows]]
    out = formatting.table(("tensor", "observed", "expected", "tolerance"), shown)
    if len(rows) > max_rows:
        out.append(f"… and {len(rows) - max_rows} more")
    return out


@dataclass(frozen=True)
class Report:
    """All results of checking one or more checkpoints against a spec."""

    results: tuple[AssertionResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[AssertionResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def __str__(self) -> str:
        lines = []
        for r in self.results:
            mark = "SKIP" if r.skipped else "PASS" if r.passed else "FAIL"
            lines.append(f"{mark} {r.name} [{r.kind}] {r.checkpoint}: {r.summary}")
        for r in self.failures:
            lines += ["", r.format()]
        return "\n".join(lines)
