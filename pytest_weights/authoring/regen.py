"""``regen``: a spec's baseline numbers rewritten in place from a checkpoint.

Like pytest-regressions' ``--force-regen``: by default only the bounds the checkpoint
violates, or every baseline number (``only_failing=False``); ``entries`` limits the rewrite
to the entries that ran (``--weights-regen`` passes those of the session's items, so a
deselected entry is never touched). Numbers come from each kind's proposal under the shared
guard (:mod:`.policy`), so ``regen`` on the checkpoint a spec was generated from changes
nothing and no rewritten bound makes its check unable to fail.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..assertions.base import TensorView, views
from ..errors import SpecError, WeightsError
from ..readers import Checkpoint, open_checkpoint
from ..spec import AssertionSpec, parse_spec
from .policy import DEFAULT_MARGIN, propose
from .yamledit import Change, _apply, _child, _Edit, _Pending, _plan_edits

_MARGIN_MARK = re.compile(r"^#.*pytest-weights init\b.*\bmargin (\d+(?:\.\d+)?)")


class RegenResult(list):
    """The changes made (a list of :class:`Change`, each a readable line); ``notes`` says what
    was left alone and why; ``text`` is the rewritten spec."""

    def __init__(self, changes: Iterable[Change] = (), notes: Iterable[str] = (), text: str = "") -> None:
        super().__init__(changes)
        self.notes: list[str] = list(notes)
        self.text = text


def spec_margin(text: str) -> float | None:
    """The margin recorded in a spec's header by ``init`` (``… margin 0.5 …``), or None."""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        m = _MARGIN_MARK.match(line)
        if m:
            return float(m.group(1))
    return None


def regen_spec(
    spec_path: str | Path,
    checkpoint_path: str | Path,
    margin: float | None = None,
    *,
    only_failing: bool = True,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    reference: str | Path | None = None,
    write: bool = True,
    label: str | None = None,
    entries: Collection[str] | None = None,
    checker: Any = None,
    recheck: bool = True,
) -> RegenResult:
    """Rewrite the baseline numbers of the spec at ``spec_path`` from ``checkpoint_path``.

    Range and tolerance parameters written in the spec (``min``/``max``, ``tol``,
    ``k_min``/``k_max``, ``lambda_*``, ``r2_min``, ``min_rho``/``max_abs_rho``,
    ``max_ratio``, ``max_fraction``, ``max_bc``, ``max_lag1``, ``alpha_*`` …) get the
    observed value widened by ``margin`` (default: the margin recorded by ``init`` in the
    header, else 0.5), with the rules of :func:`init_spec`. ``only_failing`` (default, like
    ``--force-regen``): only bounds the checkpoint violates are rewritten; False: every
    baseline number. A parameter set in ``defaults`` is overridden on the entry (a line
    added under it, or ``, key: value`` in a flow-style entry). Values are replaced where
    they stand: comments, order and formatting are kept; the trailing ``# observed …``
    comments that ``init`` writes are refreshed on the entries that change.

    Returns the changes (``spec.yaml:12: std-band max 0.12 → 0.15``); ``.notes`` lists
    what could not be rewritten (run-scope kinds, NaN, a trend that reversed …) and
    assertions that still fail. The file is written only when something changed (and
    ``write``). ``label`` names the file in messages (default: ``spec_path`` as given).

    ``entries``: the names of the entries to rewrite (default: all); every other entry is
    left byte-identical. ``checker``: a :class:`~pytest_weights.runner.Checker` whose
    statistics (and reference) to use, e.g. the pytest session's (nothing is read again);
    ``checkpoint_path`` may then be an opened :class:`Checkpoint`. A bound the margin would
    widen until its check cannot fail is capped (the change says so).
    """
    from ..spec import read_spec_text

    path = Path(spec_path)
    text = read_spec_text(path)  # the loader's size and encoding limits; a SpecError names the file
    label = str(spec_path) if label is None else label
    spec = parse_spec(text, label)
    if margin is None:
        margin = spec_margin(text)
        margin = DEFAULT_MARGIN if margin is None else margin
    if not margin >= 0:
        raise WeightsError(f"margin must be ≥ 0, got {margin}")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    items = _child(root, "assertions")
    if not isinstance(items, yaml.SequenceNode) or len(items.value) != len(spec.entries):  # pragma: no cover
        raise SpecError(label, None, "cannot match the assertions to the YAML text")
    plan = _Plan(text, _child(root, "defaults"), margin, only_failing)
    plan.notes += [f"{e.path}:{e.line}: {e.name}: invalid entry, not rewritten" for e in spec.entries
                   if not isinstance(e, AssertionSpec)]  # fmt: skip
    chosen = [(e, node) for e, node in zip(spec.entries, items.value, strict=True)
              if isinstance(e, AssertionSpec) and (entries is None or e.name in entries)]  # fmt: skip
    for e, _ in chosen:
        if e.assertion.scope == "run":
            plan.notes.append(f"{e.location}: {e.name}: {e.assertion.kind} judges a training run: not rewritten")
    checker = checker if checker is not None else _checker(device, cache_dir, reference)
    given = isinstance(checkpoint_path, Checkpoint)
    opened = checkpoint_path if given else open_checkpoint(checkpoint_path)
    with contextlib.nullcontext(opened) if given else opened as ckpt:
        pairs = [(e, node) for e, node in chosen if e.assertion.scope == "checkpoint"]
        checker.prepare((ckpt, e) for e, _ in pairs)
        for e, node in pairs:
            plan.entry(checker, ckpt, e, node)
        new_text = _apply(text, plan.edits)
        changes = [c.change(label, plan.edits, new_text) for c in plan.pending]
        result = RegenResult(changes, plan.notes, new_text)
        if changes and recheck:  # a preview (recheck False) only lists the changes
            _check_rewritten(new_text, label, ckpt, checker, result)
    if new_text != text and write:
        path.write_text(new_text, encoding="utf-8")
    return result


def _checker(device: str, cache_dir: str | Path | None, reference: str | Path | None) -> Any:
    from ..cache import StatCache
    from ..runner import Checker

    ref = open_checkpoint(reference) if reference is not None else None
    return Checker(device, cache=StatCache(cache_dir) if cache_dir is not None else None, reference=ref)


@dataclass
class _Plan:
    """The edits planned so far over one spec text, and the notes on what was left alone."""

    text: str
    defaults: Any
    margin: float
    only_failing: bool
    edits: list[_Edit] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def entry(self, checker: Any, ckpt: Checkpoint, e: AssertionSpec, node: Any) -> None:
        """Plan the rewrite of one entry from its kind's proposals (under the shared guard)."""
        where = f"{e.location}: {e.name}"
        try:
            result = checker.evaluate(ckpt, e)
        except WeightsError as err:
            self.notes.append(f"{where}: {err}")
            return
        if self.only_failing and result.passed:
            return
        if e.assertion.needs_reference and checker.reference is None:
            self.notes.append(f"{where}: {e.assertion.kind} compares against a reference: not rewritten")
            return
        target = checker.target(ckpt, e)
        proposals, why = propose(e.assertion, _entry_views(checker, target, e), self.margin)
        self.notes += [f"{where}: {n}" for n in why]
        if not proposals and not why and not result.passed:
            self.notes.append(f"{where}: {e.assertion.kind} has no baseline numbers to rewrite")
        _plan_edits(
            self.text, e, node, self.defaults, proposals, self.only_failing, self.edits, self.pending, self.notes
        )


def _entry_views(checker: Any, target: Checkpoint, e: AssertionSpec) -> list[TensorView]:
    cid = target.identity()
    rid = checker.reference.identity() if checker.reference is not None else ""
    with_ref = e.assertion.needs_reference and checker.reference is not None
    ref = (lambda name: checker.store.get(rid, name)) if with_ref else None
    return views(checker.select(target, e).tensors, e.selection, lambda name: checker.store.get(cid, name), ref)


def _check_rewritten(text: str, label: str, ckpt: Checkpoint, checker: Any, result: RegenResult) -> None:
    """Re-check the rewritten entries from the statistics already computed."""
    spec = parse_spec(text, label)
    if spec.errors:  # pragma: no cover - a value the loader refuses
        raise WeightsError(f"rewritten spec is invalid: {spec.errors[0]}")
    names = {c.entry for c in result}
    for a in spec.assertions:
        if a.name in names:
            r = checker.evaluate(ckpt, a)
            if not r.passed:
                result.notes.append(f"{a.location}: {a.name}: still fails after the rewrite: {r.summary}")
