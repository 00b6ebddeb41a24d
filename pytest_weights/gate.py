"""Gate a training run on weight health: check each checkpoint (or the live model) as it is made.

>>> gate = WeightsGate("default")                  # a bundled spec name, a spec file or a Spec
>>> for step in range(steps):
...     train_step()
...     if step % 100 == 0:
...         gate.check(model, step=step)           # raises WeightsGateError on the first failure

Per-checkpoint assertions are judged on the checkpoint given to :meth:`WeightsGate.check`
(a path, or in-memory weights: an ``nn.Module`` or a ``state_dict``). Run-scope assertions
(``run_trend``, ``drift``, ``overshoot``, ``saturates``, ``final_range``) are judged on the
run so far: at every check the gate computes, in the same single pass, the statistics those
assertions need and keeps only these values (a few numbers per selected tensor, never the
weights), labelled with the step. A run of fewer than two checkpoints is not judged yet
(reported as skipped). Kinds that describe the *end* of a run (those whose class sets
``judged_at_end``: ``saturates``, ``final_range``; see ``defer``) are judged only by :meth:`WeightsGate.finish`
or ``check(..., final=True)``: mid-run, "λ has saturated" is expected to fail.

A failure is logged (Python :mod:`logging`, the whole report at ERROR) and then, by
``on_failure``: ``"raise"`` raises :class:`WeightsGateError` (the default), ``"warn"``
issues a :class:`WeightsGateWarning`, ``"return"`` only returns the :class:`Report`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from .assertions.base import Outcome
from .cache import StatCache
from .device import resolve_device
from .engine import StatStore
from .errors import CheckpointError, WeightsError
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .readers.memory import StateDictCheckpoint
from .report import AssertionResult, Report
from .runner import Checker, make_result
from .runs import discover_run
from .spec import AssertionSpec, Spec, load_spec
from .stats.base import Statistic

OnFailure = Literal["raise", "warn", "return"]
ON_FAILURE = ("raise", "warn", "return")


class _EndOfRunKinds(Collection[str]):
    """The registered kinds that say they are judged at the end of a run (``judged_at_end``),
    read from the registry when used, so a kind registered later is included."""

    def _kinds(self) -> list[str]:
        from .assertions import REGISTRY

        return sorted(kind for kind, cls in REGISTRY.items() if cls.judged_at_end)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds()

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds())

    def __len__(self) -> int:
        return len(self._kinds())

    def __repr__(self) -> str:
        return repr(tuple(self._kinds()))


#: Run-scope kinds that describe the end of a run: judged by :meth:`WeightsGate.finish` only.
DEFER_KINDS: Collection[str] = _EndOfRunKinds()
#: Checkpoints a run needs before run-scope assertions are judged.
MIN_RUN = 2

_gate_ids = itertools.count()


class WeightsGateError(WeightsError):
    """A gate check failed: ``report`` holds every result, ``step`` the step checked."""

    def __init__(self, report: Report, step: int | None = None) -> None:
        self.report = report
        self.step = step
        super().__init__(failure_message(report, step))


class WeightsGateWarning(UserWarning):
    """Issued instead of raising with ``on_failure="warn"``."""


def failure_message(report: Report, step: int | None = None) -> str:
    """A headline naming the step, the failed assertions and their worst tensors, then the tables."""
    fails = report.failures
    where = f" at step {step}" if step is not None else ""
    parts = []
    for r in fails:
        worst = ", ".join(d.subject for d in r.deviations[:3])
        more = f" +{len(r.deviations) - 3} more" if len(r.deviations) > 3 else ""
        parts.append(f"{r.name} ({worst}{more})" if worst else r.name)
    head = f"weights gate failed{where}: {len(fails)} of {len(report.results)} assertion(s) failed: {'; '.join(parts)}"
    return "\n\n".join([head, *(r.format() for r in fails)])


class _Snapshot(Checkpoint):
    """The statistics one run-scope assertion needs from one checkpoint, without its weights.

    :meth:`Checker.evaluate_run` sees it as a checkpoint whose statistics are all in the
    store already (so nothing is ever read from it).
    """

    def __init__(self, label: str, infos: Sequence[TensorInfo], values: Mapping[str, Mapping[Statistic, Any]]):
        self.path = Path(label)
        self.label = label
        self.infos = tuple(infos)
        self.values = {name: dict(v) for name, v in values.items()}
        self._identity = f"gate-snapshot:{next(_gate_ids)}"

    def tensors(self) -> list[TensorInfo]:
        return list(self.infos)

    def read(self, name: str) -> torch.Tensor:
        raise CheckpointError(self.label, f"the gate kept statistics, not weights: {name!r} cannot be re-read")

    def identity(self) -> str:
        return self._identity


class WeightsGate:
    """Check checkpoints or live models against a spec during training; stop on the first failure.

    ``spec``: a bundled spec name, a spec file or a loaded :class:`Spec` (an invalid entry
    raises :class:`SpecError` here, before training starts). ``device``: where statistics
    run (``auto`` = CUDA when available). ``cache_dir``: statistics of checkpoint *files*
    are kept there between processes. ``reference``: what ``view: delta`` subtracts.
    ``defer``: run-scope kinds (or assertion names) judged only by :meth:`finish` or
    ``check(..., final=True)``. ``logger``: a :class:`logging.Logger` or a logger name.
    """

    def __init__(
        self,
        spec: str | Path | Spec = "default",
        device: str = "auto",
        on_failure: OnFailure = "raise",
        cache_dir: str | Path | None = None,
        logger: logging.Logger | str | None = None,
        reference: str | Path | Checkpoint | None = None,
        defer: Collection[str] = DEFER_KINDS,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got {on_failure!r}")
        self.spec = spec if isinstance(spec, Spec) else load_spec(spec)
        if self.spec.errors:
            raise self.spec.errors[0]
        self.device = resolve_device(device)  # an unknown or missing device fails here, not mid-run
        self.on_failure: OnFailure = on_failure
        self.cache = StatCache(cache_dir) if cache_dir is not None else None
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or __name__)
        self.reference = open_checkpoint(reference) if isinstance(reference, (str, Path)) else reference
        self.defer = frozenset(defer)
        self.per_checkpoint = tuple(a for a in self.spec.assertions if a.assertion.scope != "run")
        self.run_scope = tuple(a for a in self.spec.assertions if a.assertion.scope == "run")
        #: step → {run-scope assertion name → statistics snapshot}
        self._history: dict[int, dict[str, _Snapshot]] = {}
        #: statistics of checkpoint files, by file identity (a re-check re-reads nothing)
        self._file_store = StatStore()
        #: the last report and, after a failure, the step it failed at
        self.last_report: Report | None = None
        self.failed_step: int | None = None

    # ------------------------------------------------------------------ public API

    @property
    def steps(self) -> tuple[int, ...]:
        """The steps remembered for run-scope assertions, in order."""
        return tuple(sorted(self._history))

    def reset(self) -> None:
        """Forget the run (e.g. before a new training run with the same gate)."""
        self._history.clear()
        self._file_store = StatStore()
        self.last_report = None
        self.failed_step = None

    def check(
        self,
        checkpoint_or_model: str | Path | Checkpoint | Mapping[str, Any] | torch.nn.Module,
        step: int | None = None,
        final: bool = False,
    ) -> Report:
        """Judge one checkpoint, and the run so far with it as its newest step.

        ``step`` defaults to one more than the last step seen (0 first); checking a step
        again replaces what was remembered for it. ``final=True`` also judges the deferred
        end-of-run kinds. Returns the :class:`Report` (or raises/warns per ``on_failure``).
        """
        if step is None:
            step = max(self._history) + 1 if self._history else 0
        ckpt, owned = self._open(checkpoint_or_model, step)
        try:
            checker = self._checker(ckpt)
            results = []
            for spec in self.per_checkpoint:
                results.append(self._evaluate(checker, ckpt, spec))
            errors = self._remember(checker, ckpt, step)
            for spec in self.run_scope:
                if spec.name in errors:
                    results.append(_error_result(spec, f"step {step}", errors[spec.name]))
                else:
                    results.append(self._evaluate_run(spec, final))
        finally:
            if owned:
                ckpt.close()
        return self._verdict(Report(tuple(results)), step)

    def finish(self) -> Report:
        """Judge every run-scope assertion (deferred ones included) on the run remembered so far."""
        results = tuple(self._evaluate_run(spec, final=True) for spec in self.run_scope)
        return self._verdict(Report(results), max(self._history) if self._history else None)

    def check_run_dir(self, path: str | Path, latest_only: bool = True, final: bool = False) -> Report:
        """Judge a directory of step checkpoints (``checkpoint-500/``, ``step_1000.pt`` …).

        Per-checkpoint assertions run on the newest checkpoint (every checkpoint when
        ``latest_only`` is False); run-scope assertions on all of them, ordered by step.
        Independent of the run remembered by :meth:`check`. Statistics of each file are
        kept by the gate (and in ``cache_dir``), so calling it again after every new
        checkpoint reads only the new one. Like ``pytest --checkpoint RUN_DIR --weights-latest``
        except that deferred kinds are judged only with ``final=True``.
        """
        run = discover_run(path)
        if run is None:
            raise CheckpointError(path, "not a run directory (no checkpoint named with a step, e.g. checkpoint-500/)")
        opened = [(e.step, open_checkpoint(e.path)) for e in run.entries]
        try:
            checker = Checker(self.device, store=self._file_store, cache=self.cache, reference=self.reference)
            checked = opened[-1:] if latest_only else opened
            work = [(c, a) for _, c in checked for a in self.per_checkpoint]
            work += [(c, a) for _, c in opened for a in self.run_scope if self._judged(a, final)]
            checker.prepare(work)
            results = [self._evaluate(checker, c, a) for _, c in checked for a in self.per_checkpoint]
            label = Path(path).name or str(path)
            for spec in self.run_scope:
                if not self._judged(spec, final):
                    results.append(_skipped(spec, label, "judged at the end of the run (final=True)"))
                elif len(opened) < MIN_RUN:
                    results.append(_skipped(spec, label, _waiting(len(opened))))
                else:
                    try:
                        results.append(checker.evaluate_run(opened, spec, label))
                    except WeightsError as e:
                        results.append(_error_result(spec, label, str(e)))
                    except Exception as e:
                        results.append(_error_result(spec, label, _crash(e)))
        finally:
            for _, c in opened:
                c.close()
        return self._verdict(Report(tuple(results)), run.latest.step)

    # ------------------------------------------------------------------ internals

    def _open(self, obj: Any, step: int) -> tuple[Checkpoint, bool]:
        if isinstance(obj, Checkpoint):
            return obj, False
        if isinstance(obj, (Mapping, torch.nn.Module)):
            return StateDictCheckpoint(obj, label=f"step {step}"), False
        return open_checkpoint(obj), True

    def _checker(self, ckpt: Checkpoint) -> Checker:
        in_memory = isinstance(ckpt, StateDictCheckpoint)
        # in-memory values change between checks: a fresh store, and nothing to cache
        store = StatStore() if in_memory else self._file_store
        checker = Checker(self.device, store=store, cache=None if in_memory else self.cache, reference=self.reference)
        # one pass for everything: per-checkpoint assertions and the run-scope snapshots
        checker.prepare([(ckpt, a) for a in self.spec.assertions])
        return checker

    def _evaluate(self, checker: Checker, ckpt: Checkpoint, spec: AssertionSpec) -> AssertionResult:
        try:
            return checker.evaluate(ckpt, spec)
        except WeightsError as e:  # e.g. view: delta without a reference
            return _error_result(spec, ckpt.label, str(e))
        except Exception as e:  # a kind that cannot judge these values fails the gate, never crashes training
            return _error_result(spec, ckpt.label, _crash(e))

    def _remember(self, checker: Checker, ckpt: Checkpoint, step: int) -> dict[str, str]:
        """Keep, for each run-scope assertion, only its statistics of the selected tensors."""
        snaps: dict[str, _Snapshot] = {}
        errors: dict[str, str] = {}
        for spec in self.run_scope:
            try:
                target = checker.target(ckpt, spec)
            except WeightsError as e:
                errors[spec.name] = str(e)
                continue
            infos = checker.select(target, spec).tensors
            cid = target.identity()
            wanted = spec.assertion.required_statistics()
            values = {}
            for info in infos:
                have = checker.store.get(cid, info.name)
                values[info.name] = {s: have[s] for s in wanted if s in have}
            snaps[spec.name] = _Snapshot(f"step {step}", infos, values)
        self._history[step] = snaps
        return errors

    def _judged(self, spec: AssertionSpec, final: bool) -> bool:
        return final or not ({spec.assertion.kind, spec.name} & self.defer)

    def _evaluate_run(self, spec: AssertionSpec, final: bool) -> AssertionResult:
        run = [(step, snaps[spec.name]) for step, snaps in sorted(self._history.items()) if spec.name in snaps]
        label = f"run (steps {run[0][0]}–{run[-1][0]})" if run else "run"
        if not self._judged(spec, final):
            return _skipped(spec, label, "judged at the end of the run (finish() or check(..., final=True))")
        if len(run) < MIN_RUN:
            return _skipped(spec, label, _waiting(len(run)))
        store = StatStore()
        for _, snap in run:
            for name, values in snap.values.items():
                store.put(snap.identity(), name, values)
        # the snapshots already hold the statistics of the assertion's target (weights or ΔW)
        checker = Checker(self.device, store=store)
        try:
            return checker.evaluate_run(run, dataclasses.replace(spec, view="weights"), label)
        except Exception as e:
            return _error_result(spec, label, _crash(e))

    def _verdict(self, report: Report, step: int | None) -> Report:
        self.last_report = report
        where = f" at step {step}" if step is not None else ""
        if report.passed:
            self.failed_step = None
            judged = sum(not r.skipped for r in report.results)
            self.logger.info("weights gate passed%s: %d assertion(s) judged", where, judged)
            return report
        self.failed_step = step
        message = failure_message(report, step)
        self.logger.error("%s\n\n%s", message.split("\n", 1)[0], report)
        if self.on_failure == "raise":
            raise WeightsGateError(report, step)
        if self.on_failure == "warn":
            warnings.warn(message, WeightsGateWarning, stacklevel=3)
        return report


def _waiting(n: int) -> str:
    return f"waiting for the run: {n} checkpoint(s) so far, {MIN_RUN} needed"


def _crash(e: Exception) -> str:
    return f"could not be evaluated: {type(e).__name__}: {e}"


def _skipped(spec: AssertionSpec, label: str, why: str) -> AssertionResult:
    return make_result(spec, label, Outcome(True, why, skipped=True))


def _error_result(spec: AssertionSpec, label: str, message: str) -> AssertionResult:
    return make_result(spec, label, Outcome(False, message))


__all__ = ["DEFER_KINDS", "WeightsGate", "WeightsGateError", "WeightsGateWarning", "failure_message"]
