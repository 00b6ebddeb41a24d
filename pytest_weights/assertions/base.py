"""Assertion kinds: the registry, typed parameters, and result objects.

An assertion kind is a frozen dataclass registered with :func:`register`; its fields are
the spec parameters (types and defaults come from the annotations, so parsing, errors and
docs follow from the class). ``statistics()`` says what it needs per tensor;
``evaluate()`` turns the computed values into an :class:`Outcome`. A kind is the one place
that knows about itself: besides its parameters and verdict, ``propose()`` derives its
baseline numbers for ``init``/``--weights-regen`` (guarded by :func:`.proposal.guard`: no
regenerated bound may make the check unable to fail), ``suggest()`` the entries ``init``
writes with it, ``plot_data()`` what its failure plot shows (numbers: :mod:`.plot`),
``judged_at_end`` whether a gate judges it only at the end of a training run, and
``problem`` what its failures mean to ``pytest-weights check``'s verdict. Results carry
numbers (:class:`Deviation` ``value``/``bounds``/``statistic``/``step``); text is their rendering.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import excerpt
from ..keys import ParamError as ParamError
from ..keys import _convert, _typename
from ..keys import suggest as suggest
from ..readers.base import TensorInfo
from ..stats.base import Statistic
from .results import NONFINITE as NONFINITE
from .results import Bounds as Bounds
from .results import Deviation as Deviation
from .results import Outcome as Outcome
from .results import fmt as fmt
from .results import interval as interval

if typing.TYPE_CHECKING:
    from ..selection import Selection
    from .plot import Panel
    from .proposal import Proposal

REGISTRY: dict[str, type[Assertion]] = {}


def register(cls: type[Assertion]) -> type[Assertion]:
    """Class decorator: make an assertion kind available to specs under ``cls.kind``."""
    if cls.kind in REGISTRY:
        raise ValueError(f"assertion kind {cls.kind!r} registered twice")
    REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class TensorView:
    """One selected tensor with its place in the model and its computed statistics."""

    info: TensorInfo
    role: str
    depth: int | None
    values: Mapping[Statistic, Any]
    #: The same tensor's statistics in the reference checkpoint (kinds with ``needs_reference``).
    reference: Mapping[Statistic, Any] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def __getitem__(self, stat: Statistic) -> Any:
        return self.values[stat]

    @classmethod
    def of(
        cls,
        info: TensorInfo,
        selection: Selection,
        values: Mapping[Statistic, Any],
        reference: Mapping[Statistic, Any] | None = None,
    ) -> TensorView:
        """The view of ``info`` as ``selection`` places it (role, depth): the one way views are made."""
        return cls(info, selection.role(info.name), selection.depth(info.name), values, reference)


def views(
    infos: typing.Iterable[TensorInfo],
    selection: Selection,
    values: typing.Callable[[str], Mapping[Statistic, Any]],
    reference: typing.Callable[[str], Mapping[Statistic, Any] | None] | None = None,
) -> list[TensorView]:
    """:meth:`TensorView.of` for each tensor: ``values(name)`` its statistics, ``reference(name)``
    the reference's (or None)."""
    return [TensorView.of(i, selection, values(i.name), reference(i.name) if reference else None) for i in infos]


@dataclass(frozen=True)
class Suggestion:
    """An entry a kind offers for a baseline spec written by ``init`` (see :meth:`Assertion.suggest`)."""

    #: The entry's name: at the "role" and "embedding" levels a suffix (``<role>-<name>``).
    name: str
    #: The fixed parameters (not baseline numbers), e.g. ``{"stat": "std"}``.
    params: Mapping[str, Any] = field(default_factory=dict)
    #: The proposed parameters written (None: every one proposed).
    keep: tuple[str, ...] | None = None
    #: Order within its block of the spec.
    rank: int = 50
    #: A comment on the entry's name line.
    comment: str = ""


class Assertion(ABC):
    """Base of all assertion kinds (subclasses are frozen dataclasses)."""

    kind: ClassVar[str]
    #: "checkpoint": judged on one checkpoint; "run": judged on a run's series (see ``series.py``).
    scope: ClassVar[str] = "checkpoint"
    #: False for kinds that inspect non-float tensors too (e.g. ``finite`` ignores them anyway).
    float_only: ClassVar[bool] = True
    #: True for kinds comparing each tensor with the reference checkpoint's (``TensorView.reference``).
    needs_reference: ClassVar[bool] = False
    #: How reference tensors are matched: "name" (same name, ``TensorView.reference``) or
    #: "role" (all selected reference tensors go to :meth:`evaluate_reference`).
    match_reference: ClassVar[str] = "name"
    #: True for kinds whose statistics read the values: a tensor holding NaN or ±Inf fails them
    #: (its statistics are undefined), whatever the finite values say. ``finite`` reports the
    #: counts itself and sets False.
    reads_values: ClassVar[bool] = True
    #: Run-scope kinds describing the *end* of a run (``saturates``): a gate judges them only at
    #: its end (``WeightsGate.finish`` / ``check(..., final=True)``); mid-run they are expected to fail.
    judged_at_end: ClassVar[bool] = False
    #: Baseline parameter → the value at which that bound can no longer fail (``tol: 1.0`` for a
    #: KS distance, which is ≤ 1): a regenerated bound never reaches it (:func:`.proposal.guard`).
    cannot_fail_at: ClassVar[Mapping[str, float]] = {}
    #: The parameters :meth:`propose` derives (listed in docs/kinds.md).
    baseline: ClassVar[tuple[str, ...]] = ()
    #: What a failure of this kind means to ``pytest-weights check``'s verdict: "flat" (a matrix
    #: uniform-like among bell-shaped ones), "scale" (a ratio to a median: ``Deviation.ratio``),
    #: or "" (its own summary). NaN/Inf and constant tensors are read from the rows' numbers.
    problem: ClassVar[str] = ""
    #: For ``problem = "scale"``: what the ratio is to, e.g. "its siblings' std".
    ratio_to: ClassVar[str] = ""
    #: For ``problem = "scale"``: which kind's ratio a tensor failed by several is named by
    #: (lower first: the sharper comparison, e.g. siblings before the whole model).
    ratio_rank: ClassVar[int] = 50
    #: False for kinds that only count non-finite values (``finite``): the tensors they check are
    #: not counted as matrices whose values were judged (``check``'s coverage line).
    judges_values: ClassVar[bool] = True

    def required_statistics(self) -> tuple[Statistic, ...]:
        """:meth:`statistics`, plus what counts NaN/Inf for kinds that read values: the moments,
        or, when the kind needs the log|w| histogram and no moments, :class:`~..stats.finite.NonFinite`
        (which reads the histogram's count and sweeps only a tensor that has NaN/Inf)."""
        from ..stats import Moments
        from ..stats.base import closure
        from ..stats.finite import NonFinite
        from ..stats.weibull import LogAbsHistogram

        own = self.statistics()
        if not self.reads_values or Moments() in own:
            return own
        needed = closure(list(own))
        if LogAbsHistogram() in needed and Moments() not in needed:
            return (*own, NonFinite())
        return (*own, Moments())

    def judge(self, tensors: Sequence[TensorView], reference: Sequence[TensorView] | None = None) -> Outcome:
        """:meth:`evaluate` (or :meth:`evaluate_reference` when ``reference`` is given) under the
        NaN policy: tensors with NaN/Inf fail, named with their counts; the rest are evaluated."""

        def run(views: Sequence[TensorView]) -> Outcome:
            return self.evaluate(views) if reference is None else self.evaluate_reference(views, reference)

        bad = nonfinite_rows(tensors) if self.reads_values else {}
        if not bad:
            return run(tensors)
        rest = [t for t in tensors if t.name not in bad]
        return with_nonfinite(run(rest) if rest else None, bad, len(tensors))

    def judge_run(self, steps: Sequence[int], views: Sequence[Sequence[TensorView]]) -> Outcome:
        """``evaluate_run`` (run-scope kinds) under the NaN policy: a tensor with NaN/Inf at any
        step fails, named with the step; the rest of the run is evaluated."""
        bad: dict[str, Deviation] = {}
        if self.reads_values:
            for step, step_views in zip(steps, views, strict=True):
                for name, row in nonfinite_rows(step_views).items():
                    bad.setdefault(name, dataclasses.replace(row, observed=f"step {step}: {row.observed}", step=step))
        run = getattr(self, "evaluate_run")  # noqa: B009 - defined by run-scope kinds only
        if not bad:
            return run(steps, views)
        rest = [[t for t in step_views if t.name not in bad] for step_views in views]
        total = len({t.name for step_views in views for t in step_views})
        return with_nonfinite(run(steps, rest) if any(rest) else None, bad, total)

    @abstractmethod
    def statistics(self) -> tuple[Statistic, ...]:
        """Statistics needed for every selected tensor."""

    @abstractmethod
    def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
        """Judge the selected tensors (never empty: the caller fails empty selections)."""

    def evaluate_reference(self, tensors: Sequence[TensorView], reference: Sequence[TensorView]) -> Outcome:
        """Judge against the reference's selected tensors (kinds with ``match_reference = "role"``)."""
        return self.evaluate(tensors)

    def describe(self) -> str:
        """One line saying what is asserted, e.g. ``KS distance ≤ 0.05``."""
        return self.kind

    def validate(self) -> str | None:
        """Return an error message if parameters are inconsistent, else None."""
        return None

    # -- the checkpoint it reads ------------------------------------------------------------

    def view_key(self) -> typing.Hashable | None:
        """None: the kind reads the checkpoint (or ΔW with ``view: delta``). Otherwise it reads
        :meth:`open_view`'s view of it, which the runner builds once per checkpoint and key."""
        return None

    def open_view(self, checkpoint: typing.Any) -> typing.Any:
        """The reader view this kind reads instead of ``checkpoint`` (when :meth:`view_key` is set)."""
        raise NotImplementedError

    # -- baseline proposals (init, --weights-regen) -------------------------------------

    def propose(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        """New values of this kind's baseline parameters from the observed ``tensors`` (each
        admitting the observed values, widened by ``margin``), and notes on what cannot be derived.
        Kinds without baseline numbers propose nothing."""
        if self.scope == "run":
            return {}, [f"{self.kind} judges a training run: its numbers are not regenerated from one checkpoint"]
        return {}, []

    def proposals(self, tensors: Sequence[TensorView], margin: float) -> tuple[dict[str, Proposal], list[str]]:
        """:meth:`propose` under the shared guard: no proposed bound makes the check unable to fail
        (a bound widened onto :attr:`cannot_fail_at` is capped short of it, and the note says so)."""
        from .proposal import guard

        if not tensors:
            return {}, ["the selection matches no tensor"]
        proposed, notes = self.propose(tensors, margin)
        kept, capped = guard(proposed, self.cannot_fail_at)
        return kept, [*notes, *capped]

    # -- generated specs (init) -----------------------------------------------------------

    @classmethod
    def suggest(cls, level: str, count: int) -> tuple[Suggestion, ...]:
        """The entries of this kind ``init`` tries for a baseline spec, at ``level``: "floats"
        (every float tensor, ``count`` of them), "matrices" (every matrix checked for its
        distribution, across roles), "role" (one role's matrices) or "embedding" (an embedding
        role). Each is written when :meth:`init_accepts` holds on the profiled tensors."""
        return ()

    def init_tensors(self, tensors: Sequence[TensorView]) -> Sequence[TensorView]:
        """The tensors a generated entry covers (a kind may leave some out, e.g. constant roles
        from a ratio check: ``init`` then excludes their roles in the entry's ``select``)."""
        return tensors

    def init_accepts(self, tensors: Sequence[TensorView], proposals: Mapping[str, Proposal]) -> bool:
        """Whether a generated entry is written, given its proposals (default: any was made)."""
        return bool(proposals)

    # -- failure plots ------------------------------------------------------------------

    def plot_data(self, outcome: Outcome) -> tuple[Panel, ...]:
        """What this kind's failure plot shows, as numbers (rendered by ``html_report``).

        Default, for per-tensor kinds: the worst deviating tensor's values with the normal of
        its mean and std, and every checked tensor's value against the bounds."""
        from .plot import per_tensor_panels

        return per_tensor_panels(outcome)

    def failure_plot(self, outcome: Outcome) -> tuple[Panel, ...]:
        """:meth:`plot_data` of a failed outcome (nothing for a pass or a skip); a plot that
        cannot be made is left out, never an error of the check."""
        if outcome.passed or outcome.skipped:
            return ()
        try:
            return tuple(self.plot_data(outcome))
        except Exception:  # a picture must never fail the check
            return ()


#: The tolerance text of a row failed by the NaN policy (nothing about its values can be drawn).
UNDEFINED = "statistics undefined"


def nonfinite_rows(tensors: Sequence[TensorView]) -> dict[str, Deviation]:
    """A failure row for each tensor whose moments (or :class:`NonFinite`) count NaN or ±Inf values."""
    from ..stats import Moments
    from ..stats.finite import NonFinite

    rows = {}
    for t in tensors:
        m = t.values.get(Moments()) or t.values.get(NonFinite())
        if m is not None and (m.nan or m.inf):
            counts = f"{m.nan} NaN, {m.inf} Inf of {m.numel} values"
            bad = float(m.nan + m.inf)
            rows[t.name] = Deviation(t.name, counts, "finite values", UNDEFINED, math.inf, None, bad, (0, 0), NONFINITE)
    return rows


def with_nonfinite(inner: Outcome | None, bad: Mapping[str, Deviation], total: int) -> Outcome:
    """``inner`` (the finite tensors' outcome) failed by the tensors holding NaN/Inf."""
    head = f"{len(bad)} of {total} tensors hold NaN/Inf (statistics undefined)"
    if inner is None:
        return Outcome(False, head, tuple(bad.values()), total)
    return dataclasses.replace(
        inner,
        passed=False,
        summary=f"{head}; the others: {inner.summary}",
        deviations=(*bad.values(), *inner.deviations),
        checked=total,
        skipped=False,
    )


# ---------------------------------------------------------------- parameter parsing


def unknown_statistic(stat: str) -> str:
    """The message for a ``stat:`` that names no statistic (with a did-you-mean)."""
    from ..stats.scalars import SCALARS

    return f"unknown statistic {excerpt(stat)}{suggest(stat, SCALARS)}; known: {', '.join(SCALARS)}"


def params(cls: type[Assertion]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


def build(cls: type[Assertion], raw: Mapping[str, Any]) -> Assertion:
    """Instantiate ``cls`` from spec parameters, checking names, types and required keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in params(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ParamError(
                key,
                f"unknown parameter {excerpt(key)} for kind {cls.kind!r}{suggest(key, fields)}; parameters: {known}",
            )
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(name, raw[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamError(None, f"kind {cls.kind!r} needs parameter {name!r} ({_typename(hints[name])})")
    obj = cls(**values)
    problem = obj.validate()
    if problem:
        raise ParamError(None, problem)
    return obj


# ---------------------------------------------------------------- formatting helpers


def per_tensor(
    tensors: Sequence[TensorView],
    observe: typing.Callable[[TensorView], float],
    failure: typing.Callable[[float], float | None],
    expected: str,
    tolerance: str = "",
    summary: str = "",
    *,
    statistic: str = "",
    bounds: Bounds | None = None,
) -> Outcome:
    """Judge each tensor alone: ``failure(value)`` returns a badness score or None if fine.
    ``statistic`` names the value and ``bounds`` its allowed interval (carried by every row)."""
    rows = []
    observed = {}
    for t in tensors:
        v = observe(t)
        observed[t.name] = v
        score = failure(v)
        if score is not None:
            rows.append(Deviation(t.name, fmt(v), expected, tolerance, score, None, v, bounds, statistic))
    rows.sort(key=lambda d: -d.score)
    n = len(tensors)
    text = summary or expected
    text = f"{len(rows)} of {n} tensors deviate: expected {text}" if rows else f"all {n} tensors: {text}"
    return Outcome(not rows, text, tuple(rows), n, observed=observed, statistic=statistic, bounds=bounds)
