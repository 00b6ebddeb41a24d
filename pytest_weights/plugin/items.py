"""The pytest nodes of spec files: a collector per file, an item per assertion (per checkpoint).

Imported by :mod:`.plugin` when a spec file is collected (it brings in the spec loader).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..errors import FATAL, SpecError, describe, format_traceback, is_internal
from ..report import AssertionResult
from ..spec import AssertionSpec, load_spec
from .messages import with_traceback
from .state import SESSION_KEY

if TYPE_CHECKING:
    from .session import WeightsSession


class SpecFile(pytest.File):
    """A spec file: one item per assertion (per checkpoint when several are given)."""

    def collect(self) -> list[pytest.Item]:
        try:
            return self._items()
        except FATAL:
            raise
        except BaseException as e:  # a loader bug must not interrupt the session: one error item
            error = e if isinstance(e, SpecError) else SpecError(self.path, None, f"cannot be loaded: {describe(e)}")
            trace = format_traceback(e) if is_internal(e) else ""
            return [SpecErrorItem.from_parent(self, name="spec", error=error, trace=trace)]

    def _items(self) -> list[pytest.Item]:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        spec = load_spec(self.path)
        paths: list[Path | None] = list(session.checkpoint_paths) or [None]
        items: list[pytest.Item] = []
        for entry in spec.entries:
            if not isinstance(entry, AssertionSpec):
                items.append(SpecErrorItem.from_parent(self, name=entry.name, error=entry.error))
                continue
            if entry.assertion.scope == "run":
                runs = list(session.runs) or [None]
                for run in runs:
                    name = entry.name if len(runs) == 1 else f"{entry.name}[{run.name}]"  # type: ignore[union-attr]
                    items.append(
                        WeightsItem.from_parent(self, name=name, spec=entry, checkpoint_path=None, run_path=run)
                    )
                continue
            for path in paths:
                name = entry.name if len(paths) == 1 else f"{entry.name}[{session.label(path)}]"
                items.append(WeightsItem.from_parent(self, name=name, spec=entry, checkpoint_path=path))
        return items


class WeightsFailure(Exception):
    """Raised by an item whose assertion failed; carries the result for the report."""

    def __init__(self, result: AssertionResult) -> None:
        self.result = result
        super().__init__(result.summary)


class WeightsItem(pytest.Item):
    """One assertion of a spec, checked on one checkpoint."""

    #: Marks the items whose assertions the statistics pass prepares.
    weights_item = True

    def __init__(
        self,
        *,
        spec: AssertionSpec,
        checkpoint_path: Path | None,
        run_path: Path | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        #: --weights-regen rewrites this assertion's numbers (the lines saying what changes).
        self.regen: tuple[str, ...] = ()
        self.spec = spec
        self.checkpoint_path = checkpoint_path
        self.run_path = run_path
        self.result: AssertionResult | None = None

    def runtest(self) -> None:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        if self.spec.assertion.scope == "run":
            if self.run_path is None:
                if not session.checkpoint_paths:
                    pytest.skip("no checkpoint given: run with --checkpoint RUN_DIR")
                pytest.fail(
                    f"{self.spec.location}: {self.spec.name}: {self.spec.assertion.kind} judges a training run: "
                    "pass a directory of step checkpoints (--checkpoint RUN_DIR)",
                    pytrace=False,
                )
            session.prepare(self.session.items)
            run = [(step, session.checkpoint(path)) for step, path in session.runs[self.run_path]]
            self.result = session.checker.judge_run(run, self.spec, self.run_path.name)
            if self.config.option.weights_regen:
                session.regen.item(self, preview=False)  # remembered: the summary says why it is not rewritten
        else:
            if self.checkpoint_path is None:
                pytest.skip("no checkpoint given: run with --checkpoint PATH")
            session.prepare(self.session.items)
            if session.reference_path is not None:
                session.checkpoint(session.reference_path)  # raises the reference's error, if any
            self.result = session.checker.judge(session.checkpoint(self.checkpoint_path), self.spec)
            if self.config.option.weights_regen:
                self._regen(session)
        self._report()

    def _regen(self, session: WeightsSession) -> None:
        """--weights-regen: the numbers of this entry rewritten (in the file at the session's end)."""
        self.regen = tuple(session.regen.item(self))
        if self.regen:
            pytest.fail(
                "--weights-regen rewrote this assertion's baseline:\n  "
                + "\n  ".join(self.regen)
                + "\n(written to the spec file at the end of the session; run again without --weights-regen"
                " to check the new values)",
                pytrace=False,
            )

    def _report(self) -> None:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        assert self.result is not None
        self.user_properties.append(("checkpoint", self.result.checkpoint))
        if self.checkpoint_path in session.steps:
            self.user_properties.append(("step", session.steps[self.checkpoint_path]))
        self.user_properties.append(("summary", self.result.summary))
        self.user_properties += junit_numbers(self.result)
        if self.result.skipped:  # reported at the spec line (-rs), not at this one
            raise pytest.skip.Exception(self.result.summary, _use_item_location=True)
        if not self.result.passed:
            raise WeightsFailure(self.result)

    def repr_failure(self, excinfo, style=None):
        exc = excinfo.value
        if isinstance(exc, WeightsFailure):
            return with_traceback(self.config, exc.result.format(), exc.result.traceback)
        if isinstance(exc, (pytest.fail.Exception, pytest.exit.Exception)):
            return super().repr_failure(excinfo, style=style)
        # Anything else raised while opening, reading or judging: one line naming spec, assertion and checkpoint.
        line = f"{self.spec.location}: {self.spec.name} on {self._label()}: {describe(exc)}"
        return with_traceback(self.config, line, format_traceback(exc) if is_internal(exc) else "")

    def _label(self) -> str:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        if self.run_path is not None:
            return self.run_path.name
        return session.label(self.checkpoint_path) if self.checkpoint_path is not None else "no checkpoint"

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"{self.spec.name} [{self.spec.assertion.kind}]"


def junit_numbers(result: AssertionResult) -> list[tuple[str, object]]:
    """The result's numbers as JUnit properties (the same as the JSON report's): what was
    judged, the interval, how many rows deviate and the worst one's value and bounds."""
    props: list[tuple[str, object]] = [("checked", result.checked), ("deviations", len(result.deviations))]
    if result.statistic:
        props.append(("statistic", result.statistic))
    if result.deviations:
        worst = result.deviations[0]
        props.append(("worst", worst.subject))
        if worst.value is not None:
            props.append(("worst_value", worst.value))
        if worst.bounds is not None:
            props += [("worst_min", worst.bounds[0]), ("worst_max", worst.bounds[1])]
    return props


class SpecErrorItem(pytest.Item):
    """A spec (entry) that failed validation or could not be loaded: errors at setup, naming file:line."""

    def __init__(self, *, error: SpecError, trace: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.error = error
        #: The traceback of an unexpected loader error (shown with --weights-debug).
        self.trace = trace

    def _message(self) -> str:
        return with_traceback(self.config, f"invalid spec: {self.error}", self.trace)

    def setup(self) -> None:
        pytest.fail(self._message(), pytrace=False)

    def runtest(self) -> None:  # pragma: no cover - setup always fails
        pytest.fail(self._message(), pytrace=False)

    def reportinfo(self):
        return self.path, (self.error.line or 1) - 1, f"invalid spec: {self.name}"
