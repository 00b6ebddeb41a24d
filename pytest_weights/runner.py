"""The library entry point: check checkpoints against spec assertions, no pytest needed.

:class:`Checker` plans every statistic that a set of assertions needs, computes them in
one streamed pass per checkpoint, then evaluates each assertion. The pytest plugin and
:func:`check` both use it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assertions.base import Outcome, TensorView
from .cache import StatCache
from .device import resolve_device
from .engine import PassProgress, Progress, StatStore, compute_pass
from .errors import WeightsError
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .readers.derived import DeltaCheckpoint, LoraDelta
from .readers.memory import StateDictCheckpoint
from .readers.peft import PeftAdapter
from .report import AssertionResult, Report
from .spec import AssertionSpec, Spec, load_spec
from .stats.base import Statistic


@dataclass(frozen=True)
class Selected:
    """Tensors an assertion applies to in one checkpoint, and the matches it left out."""

    tensors: tuple[TensorInfo, ...]
    non_float: tuple[TensorInfo, ...]


class Checker:
    """Evaluate assertions on checkpoints, reading each tensor at most once."""

    def __init__(
        self,
        device: str | torch.device = "auto",
        progress: Progress | None = None,
        store: StatStore | None = None,
        cache: StatCache | None = None,
        reference: Checkpoint | None = None,
        workers: int | None = None,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.progress = progress
        self.store = store or StatStore()
        self.cache = cache
        #: The checkpoint ``view: delta`` and reference-comparing kinds compare against.
        self.reference = reference
        self.passes: list[PassProgress] = []
        #: CPU threads for a pass (None: torch's intra-op thread count).
        self.workers = workers
        self._derived: dict[int, Checkpoint] = {}

    def target(self, checkpoint: Checkpoint, spec: AssertionSpec) -> Checkpoint:
        """The checkpoint an assertion reads: the weights, or ΔW for ``view: delta``."""
        if spec.view == "weights":
            return checkpoint
        if id(checkpoint) not in self._derived:
            if isinstance(checkpoint, PeftAdapter):
                self._derived[id(checkpoint)] = LoraDelta(checkpoint)
            elif self.reference is not None:
                self._derived[id(checkpoint)] = DeltaCheckpoint(checkpoint, self.reference)
            else:
                raise WeightsError(
                    f"{spec.location}: {spec.name}: 'view: delta' needs a reference checkpoint "
                    "(--reference PATH, or check(..., reference=PATH)) or a PEFT adapter"
                )
        return self._derived[id(checkpoint)]

    def _requests(self, checkpoint: Checkpoint, spec: AssertionSpec) -> list[tuple[Checkpoint, list[TensorInfo]]]:
        """(checkpoint, tensors) whose statistics ``spec`` needs: its target, and the reference
        for kinds that compare against it."""
        target = self.target(checkpoint, spec)
        tensors = list(self.select(target, spec).tensors)
        out = [(target, tensors)]
        if spec.assertion.needs_reference and self.reference is not None:
            out.append((self.reference, self._reference_tensors(spec, tensors)))
        return out

    def _reference_tensors(self, spec: AssertionSpec, tensors: Sequence[TensorInfo]) -> list[TensorInfo]:
        if spec.assertion.match_reference == "role":
            return list(self.select(self.reference, spec).tensors)  # type: ignore[arg-type]
        names = {i.name for i in tensors}
        return [i for i in self.reference.tensors() if i.name in names]  # type: ignore[union-attr]

    def select(self, checkpoint: Checkpoint, spec: AssertionSpec) -> Selected:
        matched = [i for i in checkpoint.tensors() if spec.selection.matches(i)]
        if not spec.assertion.float_only:
            return Selected(tuple(matched), ())
        return Selected(tuple(i for i in matched if i.is_float), tuple(i for i in matched if not i.is_float))

    def prepare(self, work: Iterable[tuple[Checkpoint, AssertionSpec]]) -> None:
        """Compute every statistic the (checkpoint, assertion) pairs need: one pass each."""
        plans: dict[Checkpoint, dict[str, set[Statistic]]] = defaultdict(lambda: defaultdict(set))
        for ckpt, spec in work:
            stats = spec.assertion.statistics()
            try:
                needed = self._requests(ckpt, spec)
            except WeightsError:
                continue  # reported when the assertion is evaluated
            for target, infos in needed:
                for info in infos:
                    plans[target][info.name].update(stats)
        for ckpt, requests in plans.items():
            done = compute_pass(
                ckpt, requests, self.store, self.device, self.progress, cache=self.cache, workers=self.workers
            )
            self.passes.append(done)

    def evaluate(self, checkpoint: Checkpoint, spec: AssertionSpec) -> AssertionResult:
        """Judge one assertion (its statistics are computed first if missing)."""
        target = self.target(checkpoint, spec)
        sel = self.select(target, spec)
        notes = _non_float_note(sel.non_float)
        if isinstance(target, DeltaCheckpoint) and target.unmatched:
            notes += (f"{len(target.unmatched)} tensor(s) not in the reference left out of ΔW",)
        if not sel.tensors:
            outcome = Outcome(False, "the selection matches no tensor" + (" (float)" if sel.non_float else ""))
        elif spec.assertion.needs_reference and self.reference is None:
            outcome = Outcome(False, f"kind {spec.assertion.kind!r} compares against a reference: pass --reference")
        else:
            self.prepare([(checkpoint, spec)])  # no-op when already computed
            cid = target.identity()
            rid = self.reference.identity() if self.reference is not None else ""
            views = [
                TensorView(
                    i,
                    spec.selection.role(i.name),
                    spec.selection.depth(i.name),
                    self.store.get(cid, i.name),
                    self.store.get(rid, i.name)
                    if spec.assertion.match_reference == "name" and spec.assertion.needs_reference
                    else None,
                )
                for i in sel.tensors
            ]
            if spec.assertion.match_reference == "role" and self.reference is not None:
                ref_views = [
                    TensorView(
                        i, spec.selection.role(i.name), spec.selection.depth(i.name), self.store.get(rid, i.name)
                    )
                    for i in self._reference_tensors(spec, sel.tensors)
                ]
                outcome = spec.assertion.evaluate_reference(views, ref_views)
            else:
                outcome = spec.assertion.evaluate(views)
        return make_result(spec, target.label, outcome, notes)

    def evaluate_run(self, run: Sequence[tuple[int, Checkpoint]], spec: AssertionSpec, label: str) -> AssertionResult:
        """Judge a run-scope assertion on the checkpoints of a run, given as (step, checkpoint)."""
        run = sorted(run, key=lambda sc: sc[0])
        self.prepare((ckpt, spec) for _, ckpt in run)
        steps, views = [], []
        for step, ckpt in run:
            target = self.target(ckpt, spec)
            cid = target.identity()
            steps.append(step)
            views.append(
                [
                    TensorView(
                        i, spec.selection.role(i.name), spec.selection.depth(i.name), self.store.get(cid, i.name)
                    )
                    for i in self.select(target, spec).tensors
                ]
            )
        if not any(views):
            outcome = Outcome(False, "the selection matches no tensor")
        else:
            outcome = spec.assertion.evaluate_run(steps, views)  # type: ignore[attr-defined]
        return make_result(spec, label, outcome)


def make_result(spec: AssertionSpec, label: str, outcome: Outcome, notes: tuple[str, ...] = ()) -> AssertionResult:
    """The :class:`AssertionResult` of ``spec`` judged on ``label`` (a checkpoint or a run)."""
    return AssertionResult(
        name=spec.name,
        kind=spec.assertion.kind,
        description=spec.assertion.describe(),
        location=spec.location,
        checkpoint=label,
        passed=outcome.passed,
        summary=outcome.summary,
        deviations=outcome.deviations,
        checked=outcome.checked,
        skipped=outcome.skipped,
        notes=outcome.notes + notes,
        selection=spec.selection.describe(),
        observed=dict(outcome.observed),
    )


def _non_float_note(infos: Sequence[TensorInfo]) -> tuple[str, ...]:
    if not infos:
        return ()
    names = ", ".join(f"{i.name} ({i.dtype_name})" for i in infos[:5])
    more = f" and {len(infos) - 5} more" if len(infos) > 5 else ""
    return (f"{len(infos)} non-float tensor(s) left out of float statistics: {names}{more}",)


def check(
    checkpoint: str | Path | Checkpoint | Mapping[str, Any] | torch.nn.Module,
    spec: str | Path | Spec = "default",
    device: str = "auto",
    cache_dir: str | Path | None = None,
    reference: str | Path | Checkpoint | None = None,
    workers: int | None = None,
) -> Report:
    """Check one checkpoint against a spec (a path, a bundled name, or a loaded :class:`Spec`).

    ``checkpoint`` is a path, an opened :class:`Checkpoint`, or in-memory weights (a
    ``state_dict`` or an ``nn.Module``, e.g. from a training loop).

    ``reference``: the checkpoint that ``view: delta`` assertions subtract (ΔW = W − W_ref)
    and that reference-comparing kinds compare against.
    ``workers``: CPU threads for the pass (default: torch's intra-op thread count).
    ``cache_dir``: keep computed statistics there, so re-checking an unchanged checkpoint
    reads nothing.

    >>> report = check("model.safetensors")          # the bundled default spec
    >>> report.passed, [r.name for r in report.failures]
    """
    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    if loaded.errors:
        raise loaded.errors[0]
    if isinstance(checkpoint, Checkpoint):
        ckpt = checkpoint
    elif isinstance(checkpoint, (Mapping, torch.nn.Module)):
        ckpt = StateDictCheckpoint(checkpoint)
    else:
        ckpt = open_checkpoint(checkpoint)
    ref = open_checkpoint(reference) if isinstance(reference, (str, Path)) else reference
    cache = StatCache(cache_dir) if cache_dir is not None else None
    checker = Checker(device, cache=cache, reference=ref, workers=workers)
    checker.prepare((ckpt, a) for a in loaded.assertions)
    return Report(tuple(checker.evaluate(ckpt, a) for a in loaded.assertions))
