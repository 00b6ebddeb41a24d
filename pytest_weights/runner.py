"""The library entry point: check checkpoints against spec assertions, no pytest needed.

:class:`Checker` plans every statistic that a set of assertions needs, computes them in
one streamed pass per checkpoint, then evaluates each assertion. The pytest plugin and
:func:`check` both use it.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assertions.base import Outcome
from .assertions.base import views as make_views
from .cache import StatCache
from .device import resolve_device
from .engine import PassProgress, Progress, StatStore, compute_pass
from .errors import FATAL, CheckpointError, WeightsError, as_checkpoint_error, describe, format_traceback, is_internal
from .executors import PASSES_IN_FLIGHT, Executor, make_executor, source_of
from .names import NameMatch, match_names
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .readers.derived import DeltaCheckpoint, LoraDelta
from .readers.memory import StateDictCheckpoint
from .readers.peft import PeftAdapter
from .report import AssertionResult, Report, result_source
from .spec import AssertionSpec, Spec, load_spec
from .stats.base import Statistic


@dataclass(frozen=True)
class Selected:
    """Tensors an assertion applies to in one checkpoint, and the matches it left out."""

    tensors: tuple[TensorInfo, ...]
    non_float: tuple[TensorInfo, ...]
    #: Matches with no values at all (a dimension of size 0): no statistic is defined on them.
    empty: tuple[TensorInfo, ...] = ()


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
        scheduler: str | None = None,
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
        #: Dask scheduler address (or ``local:N``) the passes of file checkpoints run on; None: here.
        self.scheduler = scheduler
        self._executor: Executor | BaseException | None = None
        self._lock = threading.RLock()
        #: Checkpoints whose statistics pass failed, with the error: their assertions fail with it.
        self.errors: dict[Checkpoint, BaseException] = {}
        self._derived: dict[int, Checkpoint] = {}
        self._views: dict[tuple[int, Any], Checkpoint] = {}
        self._names: dict[int, NameMatch] = {}

    def target(self, checkpoint: Checkpoint, spec: AssertionSpec) -> Checkpoint:
        """The checkpoint an assertion reads: the weights, ΔW for ``view: delta``, or the view a
        kind declares (``open_view(checkpoint)``, kept per ``view_key()``: e.g. ``force_share``'s
        weights joined with their optimizer state)."""
        view_key = spec.assertion.view_key()
        if view_key is not None:
            key = (id(checkpoint), view_key)
            if key not in self._views:
                self._views[key] = spec.assertion.open_view(checkpoint)
            return self._views[key]
        if spec.view == "weights":
            return checkpoint
        if id(checkpoint) not in self._derived:
            if isinstance(checkpoint, PeftAdapter):
                self._derived[id(checkpoint)] = LoraDelta(checkpoint)
            elif self.reference is not None:
                self._derived[id(checkpoint)] = DeltaCheckpoint(checkpoint, self.reference)
            else:
                raise WeightsError(
                    "'view: delta' needs a reference checkpoint "
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
            out.append((self.reference, self._reference_tensors(checkpoint, spec, tensors)))
        return out

    def _reference_tensors(
        self, checkpoint: Checkpoint, spec: AssertionSpec, tensors: Sequence[TensorInfo]
    ) -> list[TensorInfo]:
        if spec.assertion.match_reference == "role":
            return list(self.select(self.reference, spec).tensors)  # type: ignore[arg-type]
        names = {self.reference_name(checkpoint, i.name) for i in tensors}
        return [i for i in self.reference.tensors() if i.name in names]  # type: ignore[union-attr]

    def reference_name(self, checkpoint: Checkpoint, name: str) -> str:
        """The reference's name for ``checkpoint``'s tensor ``name``: wrapper prefixes (DDP's
        ``module.`` …) stripped when that pairs the names, as for ΔW (:func:`.names.match_names`)."""
        if self.reference is None:
            return name
        if id(checkpoint) not in self._names:
            ours = {i.name: i.shape for i in checkpoint.tensors()}
            self._names[id(checkpoint)] = match_names(ours, {i.name: i.shape for i in self.reference.tensors()})
        return self._names[id(checkpoint)].b_name(name) or name

    def select(self, checkpoint: Checkpoint, spec: AssertionSpec) -> Selected:
        matched = [i for i in checkpoint.tensors() if spec.selection.matches(i)]
        empty = tuple(i for i in matched if i.numel == 0)
        matched = [i for i in matched if i.numel > 0]
        if not spec.assertion.float_only:
            return Selected(tuple(matched), (), empty)
        return Selected(tuple(i for i in matched if i.is_float), tuple(i for i in matched if not i.is_float), empty)

    def prepare(self, work: Iterable[tuple[Checkpoint, AssertionSpec]]) -> None:
        """Compute every statistic the (checkpoint, assertion) pairs need: one pass each.

        Never raises for one checkpoint's sake: a pass that fails is recorded in
        :attr:`errors` (its partial statistics dropped) and the other checkpoints still run.
        """
        plans: dict[Checkpoint, dict[str, set[Statistic]]] = defaultdict(lambda: defaultdict(set))
        for ckpt, spec in work:
            try:
                stats = spec.assertion.required_statistics()
                needed = self._requests(ckpt, spec)
            except FATAL:
                raise
            except BaseException:
                continue  # reported when the assertion is evaluated
            for target, infos in needed:
                for info in infos:
                    plans[target][info.name].update(stats)
        todo = [(ckpt, requests) for ckpt, requests in plans.items() if ckpt not in self.errors]
        spread = [t for t in todo if self.scheduler and source_of(t[0]) is not None]
        if len(spread) > 1:  # on a cluster, several passes at once: each only waits on its tasks
            with ThreadPoolExecutor(PASSES_IN_FLIGHT, "weights-pass") as passes:
                list(passes.map(lambda t: self._pass(*t), spread))
            todo = [t for t in todo if not any(t is u for u in spread)]
        for ckpt, requests in todo:
            self._pass(ckpt, requests)

    def _pass(self, ckpt: Checkpoint, requests: Mapping[str, Iterable[Statistic]]) -> None:
        """One checkpoint's pass; an error is recorded for it, never raised."""
        try:
            done = compute_pass(
                ckpt,
                requests,
                self.store,
                self.device,
                self._progress if self.progress else None,
                cache=self.cache,
                workers=self.workers,
                executor=self.executor if self.scheduler and source_of(ckpt) is not None else None,
            )
        except FATAL:
            raise
        except BaseException as e:
            self.errors[ckpt] = e
            with contextlib.suppress(Exception):  # if the identity itself failed, nothing was stored under it
                self.store.discard(ckpt.identity())
            return
        self.passes.append(done)

    def _progress(self, p: PassProgress) -> None:
        with self._lock:  # passes on a cluster report from several threads
            self.progress(p)  # type: ignore[misc]

    def executor(self) -> Executor | None:
        """The Dask executor of :attr:`scheduler`, connected (or its cluster started) on first use."""
        with self._lock:
            if self._executor is None and self.scheduler:
                try:
                    self._executor = make_executor(self.scheduler)
                except (WeightsError, ImportError) as e:  # every later pass fails the same way, without retrying
                    self._executor = e
        if isinstance(self._executor, BaseException):
            raise WeightsError(describe(self._executor)).with_traceback(None)
        return self._executor

    def runs_on(self) -> str:
        """Where the passes ran: the device, and the Dask cluster if one was used."""
        executor = self._executor
        if executor is None or isinstance(executor, BaseException):
            return str(self.device)
        return f"{self.device}, {executor.describe()}"

    def close(self) -> None:
        """Shut down what :meth:`executor` started (a ``local:N`` cluster, the client)."""
        executor, self._executor = self._executor, None
        if executor is not None and not isinstance(executor, BaseException):
            executor.close()

    def pass_error(self, checkpoint: Checkpoint) -> CheckpointError | None:
        """Why ``checkpoint``'s statistics pass failed, as a :class:`CheckpointError` naming it; None if it did not."""
        exc = self.errors.get(checkpoint)
        if exc is None:
            return None
        if not isinstance(exc, CheckpointError):
            return as_checkpoint_error(getattr(checkpoint, "path", checkpoint.label), exc)
        fresh = CheckpointError(exc.path, exc.message)  # raised afresh each time: the recorded one keeps its traceback
        fresh.__cause__ = exc.__cause__
        return fresh

    def _failed(self, target: Checkpoint, spec: AssertionSpec) -> Checkpoint | None:
        """``target`` if its pass failed, else the reference if ``spec`` compares with it and its pass failed."""
        if target in self.errors:
            return target
        if spec.assertion.needs_reference and self.reference in self.errors:
            return self.reference
        return None

    def evaluate(self, checkpoint: Checkpoint, spec: AssertionSpec) -> AssertionResult:
        """Judge one assertion (its statistics are computed first if missing); an error raises
        (the checkpoint's failed pass as a :class:`CheckpointError`); :meth:`judge` never raises."""
        target = self.target(checkpoint, spec)
        sel = self.select(target, spec)
        notes = _non_float_note(sel.non_float) + _empty_note(sel.empty)
        if isinstance(target, DeltaCheckpoint):
            notes += target.notes()  # renames; tensors left out of ΔW (missing, other shape or kind)
        if not sel.tensors:
            outcome = _empty(spec, "the selection matches no tensor" + (" (float)" if sel.non_float else ""))
        elif spec.assertion.needs_reference and self.reference is None:
            outcome = Outcome(False, f"kind {spec.assertion.kind!r} compares against a reference: pass --reference")
        else:
            self.prepare([(checkpoint, spec)])  # no-op when already computed
            self._raise_failed_pass(target, spec)
            cid = target.identity()
            rid = self.reference.identity() if self.reference is not None else ""
            by_name = spec.assertion.match_reference == "name" and spec.assertion.needs_reference
            views = make_views(
                sel.tensors,
                spec.selection,
                lambda name: self.store.get(cid, name),
                (lambda name: self.store.get(rid, self.reference_name(checkpoint, name))) if by_name else None,
            )
            if spec.assertion.match_reference == "role" and self.reference is not None:
                ref_infos = self._reference_tensors(checkpoint, spec, sel.tensors)
                ref_views = make_views(ref_infos, spec.selection, lambda name: self.store.get(rid, name))
                outcome = spec.assertion.judge(views, ref_views)
            else:
                outcome = spec.assertion.judge(views)
        return make_result(spec, target.label, outcome, notes, result_source(target))

    def evaluate_run(self, run: Sequence[tuple[int, Checkpoint]], spec: AssertionSpec, label: str) -> AssertionResult:
        """Judge a run-scope assertion on the checkpoints of a run, given as (step, checkpoint)."""
        run = sorted(run, key=lambda sc: sc[0])
        self.prepare((ckpt, spec) for _, ckpt in run)
        steps, views = [], []
        for step, ckpt in run:
            target = self.target(ckpt, spec)
            self._raise_failed_pass(target, spec)
            cid = target.identity()
            steps.append(step)
            views.append(
                make_views(
                    self.select(target, spec).tensors, spec.selection, lambda name, c=cid: self.store.get(c, name)
                )
            )
        if not any(views):
            outcome = _empty(spec, "the selection matches no tensor")
        else:
            outcome = spec.assertion.judge_run(steps, views)
        return make_result(spec, label, outcome)

    def _raise_failed_pass(self, target: Checkpoint, spec: AssertionSpec) -> None:
        """Raise the recorded pass error of ``target`` (or of the reference it is compared with)."""
        failed = self._failed(target, spec)
        if failed is not None:
            raise self.pass_error(failed)  # type: ignore[misc]

    def judge(self, checkpoint: Checkpoint, spec: AssertionSpec) -> AssertionResult:
        """Like :meth:`evaluate`, but never raises: any error (a failed pass, an assertion that
        cannot judge these values) becomes a failed result whose summary is the cause."""
        try:
            return self.evaluate(checkpoint, spec)
        except FATAL:
            raise
        except BaseException as e:
            return error_result(spec, checkpoint.label, e)

    def judge_run(self, run: Sequence[tuple[int, Checkpoint]], spec: AssertionSpec, label: str) -> AssertionResult:
        """Like :meth:`evaluate_run`, but an error becomes a failed result (see :meth:`judge`)."""
        try:
            return self.evaluate_run(run, spec, label)
        except FATAL:
            raise
        except BaseException as e:
            return error_result(spec, label, e)


def _empty(spec: AssertionSpec, failure: str) -> Outcome:
    """The outcome of a selection matching no tensor: a failure, or a skip with ``if_empty: skip``."""
    if spec.if_empty != "skip":
        return Outcome(False, failure)
    what = "float tensor" if spec.assertion.float_only else "tensor"
    return Outcome(
        True, f"nothing to check here: no {what} matches {spec.selection.describe()} (if_empty: skip)", skipped=True
    )


def open_or_raise(path: str | Path) -> Checkpoint:
    """:func:`open_checkpoint`, any failure (a reader's unexpected error too) raised as a :class:`CheckpointError`."""
    try:
        return open_checkpoint(path)
    except (CheckpointError, *FATAL):
        raise
    except BaseException as e:
        raise as_checkpoint_error(path, e) from e


def make_result(
    spec: AssertionSpec, label: str, outcome: Outcome, notes: tuple[str, ...] = (), source: dict | None = None
) -> AssertionResult:
    """The :class:`AssertionResult` of ``spec`` judged on ``label`` (a checkpoint or a run);
    ``source``: the files behind the label (:func:`~.report.result_source`)."""
    return AssertionResult(
        name=spec.name,
        kind=spec.assertion.kind,
        description=spec.assertion.describe(),
        location=(spec.path, spec.line),
        checkpoint=label,
        passed=outcome.passed,
        summary=outcome.summary,
        deviations=outcome.deviations,
        checked=outcome.checked,
        skipped=outcome.skipped,
        notes=outcome.notes + notes,
        selection=spec.selection.describe(),
        observed=dict(outcome.observed),
        statistic=outcome.statistic,
        bounds=outcome.bounds,
        plot=spec.assertion.failure_plot(outcome),
        source=source,
    )


def error_result(spec: AssertionSpec, label: str, exc: BaseException) -> AssertionResult:
    """A failed result saying why ``spec`` could not be judged on ``label`` (the error's cause)."""
    cause = describe(exc)
    try:
        description = spec.assertion.describe()
    except Exception:  # the kind cannot even describe itself: its name will do
        description = spec.assertion.kind
    return AssertionResult(
        name=spec.name,
        kind=spec.assertion.kind,
        description=description,
        location=(spec.path, spec.line),
        checkpoint=label,
        passed=False,
        summary=cause,
        selection=spec.selection.describe(),
        error=cause,
        traceback=format_traceback(exc) if is_internal(exc) else "",
    )


def _left_out_note(infos: Sequence[TensorInfo], what: str, show: Callable[[TensorInfo], str]) -> tuple[str, ...]:
    """``N <what>: a, b, … and M more`` naming the first five tensors left out, or nothing."""
    if not infos:
        return ()
    names = ", ".join(f"{i.name} {show(i)}" for i in infos[:5])
    more = f" and {len(infos) - 5} more" if len(infos) > 5 else ""
    return (f"{len(infos)} {what}: {names}{more}",)


def _empty_note(infos: Sequence[TensorInfo]) -> tuple[str, ...]:
    return _left_out_note(infos, "empty tensor(s) (0 values) left out", lambda i: str(tuple(i.shape)))


def _non_float_note(infos: Sequence[TensorInfo]) -> tuple[str, ...]:
    return _left_out_note(infos, "non-float tensor(s) left out of float statistics", lambda i: f"({i.dtype_name})")


def check(
    checkpoint: str | Path | Checkpoint | Mapping[str, Any] | torch.nn.Module,
    spec: str | Path | Spec = "default",
    device: str = "auto",
    cache_dir: str | Path | None = None,
    reference: str | Path | Checkpoint | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Report:
    """Check one checkpoint against a spec (a path, a bundled name, or a loaded :class:`Spec`).

    ``checkpoint`` is a path, an opened :class:`Checkpoint`, or in-memory weights (a
    ``state_dict`` or an ``nn.Module``, e.g. from a training loop).

    ``reference``: the checkpoint that ``view: delta`` assertions subtract (ΔW = W − W_ref)
    and that reference-comparing kinds compare against.
    ``workers``: CPU threads for the pass (default: torch's intra-op thread count).
    ``scheduler``: run the pass on a Dask cluster: a scheduler address (``tcp://host:8786``), or
    ``local:N`` for a ``LocalCluster`` of N processes started and shut down here (needs the
    ``distributed`` extra; in-memory checkpoints still run here).
    ``cache_dir``: keep computed statistics there, so re-checking an unchanged checkpoint
    reads nothing.

    Raises :class:`CheckpointError` when the checkpoint (or the reference) cannot be opened or
    read, :class:`SpecError` for an invalid spec, :class:`WeightsError` for a usage problem;
    an assertion that cannot judge the values it got is a failed result whose ``error`` says why.

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
        ckpt = open_or_raise(checkpoint)
    ref = open_or_raise(reference) if isinstance(reference, (str, Path)) else reference
    cache = StatCache(cache_dir) if cache_dir is not None else None
    checker = Checker(device, cache=cache, reference=ref, workers=workers, scheduler=scheduler)
    try:
        checker.prepare((ckpt, a) for a in loaded.assertions)
        for c in (ckpt, ref):
            unreadable = checker.pass_error(c) if c is not None else None
            if unreadable is not None:
                raise unreadable
        return Report(tuple(_judge(checker, ckpt, a) for a in loaded.assertions))
    finally:
        checker.close()


def _judge(checker: Checker, ckpt: Checkpoint, spec: AssertionSpec) -> AssertionResult:
    """:meth:`Checker.evaluate` for :func:`check`: a :class:`WeightsError` (a usage problem, e.g.
    ``view: delta`` without a reference) raises; any other error becomes a failed result."""
    try:
        return checker.evaluate(ckpt, spec)
    except (WeightsError, *FATAL):
        raise
    except BaseException as e:
        return error_result(spec, ckpt.label, e)
