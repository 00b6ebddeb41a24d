"""The one-screen verdict of ``pytest-weights check``: what is wrong, in plain English.

Pure functions over :class:`~pytest_weights.report.AssertionResult` s: each failing tensor is
put in one *problem* (the first that applies: NaN/Inf, all-zero or constant, scaled off the
model, flat), stated as a fact with the tensors it concerns, and paired with a *guess* at
the cause from :data:`GUESSES`, labelled as such. Failures that fit no problem (other kinds,
errors) are stated as the assertion's own summary. A coverage line says what was checked
and what was left out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .assertions import REGISTRY
from .assertions.base import NONFINITE, Deviation
from .report import AssertionResult

#: Likely causes by problem, shown as "— likely <guess> (guess)".
GUESSES = {
    "nonfinite": "a numerical blow-up or a bad export",
    "constant": "zeroed or not loaded",
    "scale": "a scaling bug, a wrong init scale or a bad merge",
    "flat": "a layer reset to its init or never trained",
}
#: A scale ratio at least this far from 1 (×10 or ×1/10) gets the scaling guess.
GUESS_SCALE = 10.0
#: Tensors named in a headline; the rest are counted.
NAMED = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a checkpoint: a fact about some tensors and a guess at its cause."""

    kind: str  # a key of GUESSES, or "other"
    fact: str
    tensors: tuple[str, ...] = ()
    guess: str | None = None

    def text(self) -> str:
        return f"{self.fact} — likely {self.guess} (guess)" if self.guess else self.fact


@dataclass(frozen=True)
class Verdict:
    """The verdict on one checkpoint: healthy, or its problems (most serious first)."""

    label: str
    results: tuple[AssertionResult, ...]
    problems: tuple[Problem, ...] = ()
    cover: Coverage | None = None
    #: What else the reader should know (e.g. how ΔW names were matched to the reference).
    notes: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[AssertionResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def headline(self) -> str:
        """``label: healthy: …`` or ``label: <fact> — likely <guess> (guess)`` (one line per problem)."""
        if self.healthy:
            c = self.cover
            return f"{self.label}: {healthy_text(self.results, c.matrices if c else 0, c.float_tensors if c else 0)}"
        if len(self.problems) == 1:
            return f"{self.label}: {self.problems[0].text()}"
        lines = [f"{self.label}: {len(self.problems)} problems"]
        return "\n".join([*lines, *(f"  {p.text()}" for p in self.problems)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.label,
            "healthy": self.healthy,
            "problems": [
                {"kind": p.kind, "fact": p.fact, "guess": p.guess, "tensors": list(p.tensors)} for p in self.problems
            ],
            "headline": self.headline(),
            "coverage": self.cover.line() if self.cover else None,
            "notes": list(self.notes),
        }


def healthy_text(results: Sequence[AssertionResult], matrices: int = 0, float_tensors: int = 0) -> str:
    """``healthy: 5 checks passed on 39 matrices`` (+ what was skipped)."""
    passed = [r for r in results if r.passed and not r.skipped]
    skipped = [r for r in results if r.skipped]
    what = _count(matrices, "matrix", "matrices") if matrices else _count(float_tensors, "float tensor")
    text = f"healthy: {_count(len(passed), 'check')} passed on {what}"
    if skipped:
        text += f"; {len(skipped)} skipped: {', '.join(r.name for r in skipped)}"
    return text


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _names(names: Sequence[str], detail: Mapping[str, str] | None = None) -> str:
    shown = [f"{n} ({detail[n]})" if detail and n in detail else n for n in names[:NAMED]]
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(shown) + more


def _problem(r: AssertionResult) -> str:
    """What the result's kind says its failures mean (``problem``), "" for an unknown kind."""
    cls = REGISTRY.get(r.kind)
    return cls.problem if cls is not None else ""


def _below_std_floor(d: Deviation) -> bool:
    """A row whose std is below a lower bound: the "not constant" check."""
    lo = d.bounds[0] if d.bounds is not None else None
    return d.statistic == "std" and lo is not None and d.value is not None and d.value < lo


def problems(results: Sequence[AssertionResult]) -> tuple[Problem, ...]:
    """The problems the failing results show, most serious first; each tensor in one problem only."""
    failed = [r for r in results if not r.passed]
    found: list[Problem] = []
    seen: set[str] = set()
    for build in (_nonfinite, _constant, _scale, _flat):
        p = build(failed, seen)
        if p is not None:
            found.append(p)
            seen.update(p.tensors)
    found += _others(failed, seen)
    return tuple(found)


def _nonfinite(failed: Sequence[AssertionResult], seen: set[str]) -> Problem | None:
    rows: dict[str, str] = {}
    total = 0
    for r in failed:
        for d in r.deviations:
            if d.statistic == NONFINITE:
                rows.setdefault(d.subject, d.observed.removesuffix(" values"))
                total = max(total, r.checked) if r.statistic == NONFINITE else total
    names = [n for n in rows if n not in seen]
    if not names:
        return None
    of = f" of {total} float tensors" if total else ""
    verb = "holds" if len(names) == 1 else "hold"
    fact = f"{len(names)}{of} {verb} NaN/Inf: {_names(names, rows)}"
    return Problem("nonfinite", fact, tuple(names), GUESSES["nonfinite"])


def _constant(failed: Sequence[AssertionResult], seen: set[str]) -> Problem | None:
    names: list[str] = []
    total = 0
    for r in failed:
        for d in r.deviations:
            if d.subject in seen or d.subject in names or d.statistic == NONFINITE:
                continue
            if _below_std_floor(d) or d.ratio == 0:
                names.append(d.subject)
                total = max(total, r.checked)
    if not names:
        return None
    verb = "is" if len(names) == 1 else "are"
    fact = f"{len(names)} of {total} matrices {verb} all-zero or constant (std ≈ 0): {_names(names)}"
    return Problem("constant", fact, tuple(names), GUESSES["constant"])


def _scale(failed: Sequence[AssertionResult], seen: set[str]) -> Problem | None:
    """Tensors off their siblings' std (preferred: the sharper comparison) or the model's scale."""
    ratios: dict[str, tuple[float, str]] = {}
    totals: dict[str, int] = {}
    scaled = [r for r in failed if _problem(r) == "scale"]
    scaled.sort(key=lambda r: REGISTRY[r.kind].ratio_rank)  # the sharper comparison first
    for r in scaled:
        against = REGISTRY[r.kind].ratio_to
        for d in r.deviations:
            ratio = d.ratio
            if ratio is not None and d.subject not in seen and d.subject not in ratios:
                ratios[d.subject] = (ratio, against)
                totals[against] = max(totals.get(against, 0), r.checked)
    if not ratios:
        return None
    names = list(ratios)
    far = all(not math.isnan(v) and (v >= GUESS_SCALE or v <= 1 / GUESS_SCALE) for v, _ in ratios.values())
    guess = GUESSES["scale"] if far else None
    if len(names) == 1:
        ratio, against = ratios[names[0]]
        fact = f"1 of {totals[against]} matrices is ≈×{_ratio(ratio)} {against}: {names[0]}"
    else:
        detail = {n: f"≈×{_ratio(v)} {a}" for n, (v, a) in ratios.items()}
        fact = f"{len(names)} matrices are scaled off the model: {_names(names, detail)}"
    return Problem("scale", fact, tuple(names), guess)


def _ratio(v: float) -> str:
    """Two significant digits, whole numbers from 10 on: ``0.012``, ``7.3``, ``99``, ``191``."""
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def _flat(failed: Sequence[AssertionResult], seen: set[str]) -> Problem | None:
    rows: dict[str, str] = {}
    total = 0
    for r in failed:
        if _problem(r) != "flat":
            continue
        for d in r.deviations:
            if d.statistic != NONFINITE and d.subject not in seen:
                rows.setdefault(d.subject, d.observed)
                total = max(total, r.checked)
    if not rows:
        return None
    names = list(rows)
    verb = "is" if len(names) == 1 else "are"
    fact = f"{len(names)} of {total} matrices {verb} flat (uniform-like) among bell-shaped ones: {_names(names, rows)}"
    return Problem("flat", fact, tuple(names), GUESSES["flat"])


def _others(failed: Sequence[AssertionResult], seen: Collection[str]) -> list[Problem]:
    """Failures not explained by the problems above: an error, or another kind's summary."""
    out = []
    for r in failed:
        if r.error is not None:
            out.append(Problem("other", f"{r.name} could not be checked: {r.error}"))
            continue
        rest = [d.subject for d in r.deviations if d.subject not in seen]
        if rest or not r.deviations:
            tail = f": {_names(rest)}" if rest else ""
            out.append(Problem("other", f"{r.name} failed ({r.summary}){tail}", tuple(rest)))
    return out


# ---------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class Checked:
    """One assertion's selection on a checkpoint: its kind, its ``min_numel``, the tensors it checked."""

    kind: str
    min_numel: int
    tensors: Collection[str]


@dataclass(frozen=True)
class Coverage:
    """What a check covered: counts of tensors checked and of those left out, by reason."""

    float_tensors: int
    matrices: int
    non_float: tuple[tuple[str, str], ...] = ()
    small: int = 0
    small_limit: int = 0
    empty: int = 0
    unselected: int = 0
    optimizer: int = 0

    def line(self) -> str:
        """``checked 39 matrices and 103 float tensors; left out: 1 non-float (position_ids int64), …``."""
        head = f"checked {_count(self.matrices, 'matrix', 'matrices')} and " if self.matrices else "checked "
        head += _count(self.float_tensors, "float tensor")
        out = []
        if self.non_float:
            out.append(f"{len(self.non_float)} non-float ({_names([f'{n} {d}' for n, d in self.non_float])})")
        if self.small:
            out.append(f"{_count(self.small, 'small matrix', 'small matrices')} (< {self.small_limit} values)")
        if self.empty:
            out.append(f"{self.empty} empty (0 values)")
        if self.unselected:
            out.append(f"{self.unselected} float not selected by any check")
        if self.optimizer:
            out.append(f"{self.optimizer} optimizer-state")
        return f"{head}; left out: {', '.join(out)}" if out else f"{head}; nothing left out"


def coverage(tensors: Sequence[Any], checked: Sequence[Checked]) -> Coverage:
    """The :class:`Coverage` of ``checked`` over a checkpoint's ``tensors`` (TensorInfo-like).

    *Matrices* are the tensors of ≥ 2 dimensions checked by a kind that judges values (not ``finite``);
    *small* ones are the other float tensors of ≥ 2 dimensions with fewer values than the
    largest ``min_numel`` of those kinds.
    """
    any_check = set().union(*(c.tensors for c in checked)) if checked else set()
    value_checks = [c for c in checked if c.kind not in REGISTRY or REGISTRY[c.kind].judges_values]
    deep = set().union(*(c.tensors for c in value_checks)) if value_checks else set()
    limit = max((c.min_numel for c in value_checks), default=1)
    weights = [t for t in tensors if t.group == "weights"]
    floats = [t for t in weights if t.is_float]
    matrices = [t for t in floats if len(t.shape) >= 2 and t.name in deep]
    rest = [t for t in floats if t.name not in deep]
    small = [t for t in rest if len(t.shape) >= 2 and 0 < _numel(t) < limit] if limit > 1 else []
    empty = [t for t in floats if _numel(t) == 0]
    return Coverage(
        float_tensors=sum(t.name in any_check for t in floats),
        matrices=len(matrices),
        non_float=tuple((t.name, t.dtype_name) for t in weights if not t.is_float),
        small=len(small),
        small_limit=limit,
        empty=len(empty),
        unselected=sum(t.name not in any_check and _numel(t) > 0 for t in floats),
        optimizer=sum(t.group != "weights" and t.name not in any_check for t in tensors),
    )


def _numel(t: Any) -> int:
    n = 1
    for s in t.shape:
        n *= s
    return n


def verdict(
    label: str, results: Sequence[AssertionResult], cover: Coverage | None = None, notes: Sequence[str] = ()
) -> Verdict:
    """The :class:`Verdict` on one checkpoint from its results (and what they covered)."""
    return Verdict(label, tuple(results), problems(results), cover, tuple(notes))


def render(v: Verdict, max_rows: int = 8) -> str:
    """The screen for one checkpoint: headline, the failing items, the coverage line, notes."""
    lines = [v.headline()]
    for r in v.failures:
        lines += ["", r.format(max_rows)]
    tail = ([v.cover.line()] if v.cover else []) + [f"note: {n}" for n in v.notes]
    if tail and v.failures:
        lines.append("")
    lines += [f"  {t}" for t in tail]
    return "\n".join(lines)
