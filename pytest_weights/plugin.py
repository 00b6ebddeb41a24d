"""The pytest adapter: options, spec-file collection, one item per assertion.

Everything statistical lives in the library (:class:`pytest_weights.Checker`); this module
maps it onto pytest: ``*.weights.yaml`` files become collectors, assertions become items,
the first item to run triggers one streamed pass over all checkpoints for every selected
item, and failures render as tables. An error while opening, reading or judging fails only
the items concerned, in one line (``--weights-debug`` adds the traceback); it never
interrupts the session.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from .cache import StatCache
from .engine import PassProgress
from .errors import FATAL, CheckpointError, SpecError, WeightsError, describe, format_traceback, is_internal
from .readers import Checkpoint, detect_format
from .report import AssertionResult
from .runner import Checker, open_or_raise
from .runs import discover_run
from .spec import SPEC_SUFFIXES, AssertionSpec, load_spec, resolve_spec

SESSION_KEY = pytest.StashKey["WeightsSession"]()
#: Appended to the one-line message of an unexpected error.
DEBUG_HINT = " (--weights-debug for the traceback)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("weights", "pytest-weights: checkpoint weight assertions")
    group.addoption(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH",
        dest="weights_checkpoints",
        help="checkpoint to check (any supported format, a model directory, or a run directory "
        "of step checkpoints); repeatable",
    )
    group.addoption(
        "--weights-latest",
        action="store_true",
        default=False,
        dest="weights_latest",
        help="for a run directory, check only its newest checkpoint",
    )
    group.addoption(
        "--reference",
        default=None,
        metavar="PATH",
        dest="weights_reference",
        help="a checkpoint to compare against (e.g. the base model of a fine-tune)",
    )
    group.addoption(
        "--weights-spec",
        action="append",
        default=[],
        metavar="SPEC",
        dest="weights_specs",
        help="spec file (any name) or bundled spec name to run; repeatable. "
        "Default when no test paths are given: the 'weights_specs' ini value, else 'default'",
    )
    group.addoption(
        "--weights-device",
        default=None,
        metavar="DEVICE",
        dest="weights_device",
        help="where statistics run: auto (CUDA if available), cpu, cuda, cuda:N",
    )
    group.addoption(
        "--weights-workers",
        type=int,
        default=None,
        metavar="N",
        dest="weights_workers",
        help="CPU threads for the statistics pass (default: torch's intra-op thread count)",
    )
    group.addoption(
        "--weights-no-cache",
        action="store_true",
        default=False,
        dest="weights_no_cache",
        help="do not read or write cached statistics (kept in pytest's cache dir)",
    )
    group.addoption(
        "--weights-json",
        default=None,
        metavar="PATH",
        dest="weights_json",
        help="write every assertion's result as JSON (for dashboards; written once, also under xdist)",
    )
    group.addoption(
        "--weights-report",
        default=None,
        metavar="PATH",
        dest="weights_report",
        help="write a self-contained HTML report (plots need the 'report' extra: matplotlib)",
    )
    group.addoption(
        "--weights-regen",
        action="store_true",
        default=False,
        dest="weights_regen",
        help="rewrite, in the collected spec files, the baseline numbers (min/max, tol, k_min/k_max …) that the "
        "checkpoint violates, in place (comments kept); the rewritten items fail once, saying what changed",
    )
    group.addoption(
        "--weights-regen-margin",
        type=float,
        default=None,
        metavar="M",
        dest="weights_regen_margin",
        help="margin for --weights-regen (default: the one 'pytest-weights init' recorded in the spec, else 0.5)",
    )
    group.addoption(
        "--weights-debug",
        action="store_true",
        default=False,
        dest="weights_debug",
        help="show the Python traceback of internal errors (for bug reports) under their one-line message",
    )
    parser.addini("weights_specs", "specs to run with --checkpoint when no paths are given", type="args")
    parser.addini("weights_device", "default for --weights-device", default="auto")


def pytest_configure(config: pytest.Config) -> None:
    try:
        session = WeightsSession.from_config(config)
    except WeightsError as e:
        raise pytest.UsageError(str(e)) from None
    except FATAL:
        raise
    except BaseException as e:  # e.g. a directory that cannot be listed
        raise pytest.UsageError(explain(config, e)) from None
    config.stash[SESSION_KEY] = session
    if config.option.weights_regen:
        if len(session.checkpoint_paths) != 1:
            raise pytest.UsageError(
                "--weights-regen needs exactly one checkpoint "
                "(--checkpoint PATH; for a run directory, --weights-latest)"
            )
        if getattr(config.option, "numprocesses", None):
            raise pytest.UsageError("--weights-regen rewrites spec files: run it without -n (pytest-xdist)")
    wants_report = config.option.weights_json or config.option.weights_report
    if wants_report and not hasattr(config, "workerinput"):  # the xdist controller writes
        config.pluginmanager.register(ResultReports(config), "weights-reports")
    extra = [str(p) for p in session.spec_paths]
    if session.checkpoint_paths and config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest --checkpoint X` with no paths: run the specs, not the project's tests.
        config.args = extra or [str(resolve_spec(r)) for r in (config.getini("weights_specs") or ["default"])]
    else:
        config.args = [*config.args, *(p for p in extra if p not in config.args)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """The one pass, before the first item runs (so item durations exclude it)."""
    weights = session.config.stash.get(SESSION_KEY, None)
    if weights is not None and not session.config.option.collectonly and weights.checkpoint_paths:
        try:
            weights.prepare(session.items)
        except FATAL:
            raise
        except BaseException as e:  # each item then computes what it needs, and fails on its own
            weights.prepare_error = explain(session.config, e)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = parent.config.stash.get(SESSION_KEY, None)
    named = session is not None and file_path.resolve() in session.spec_paths
    if not (file_path.name.endswith(SPEC_SUFFIXES) or named):
        return None
    try:
        file_path.resolve().relative_to(parent.config.rootpath)
    except ValueError:  # e.g. a bundled spec: name it by its file name
        return SpecFile.from_parent(parent, path=file_path, nodeid=file_path.name)
    return SpecFile.from_parent(parent, path=file_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.when == "call" and isinstance(item, WeightsItem) and item.result is not None:
        report.weights_result = item.result.to_dict()  # travels to the xdist controller with the report
    return report


class ResultReports:
    """Collects every assertion's result (from workers too) and writes ``--weights-json``
    and ``--weights-report`` once, on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "weights_result", None)
        if result is not None:
            self.results.append({"nodeid": report.nodeid, **result})

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        try:
            self.write()
        except FATAL:
            raise
        except BaseException as e:  # e.g. an unwritable path: said in one line, the run fails
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"pytest-weights: error: cannot write the report: {explain(self.config, e)}", red=True)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def write(self) -> None:
        """Write ``--weights-report`` and ``--weights-json``."""
        results = sorted(self.results, key=lambda r: r["nodeid"])
        weights: WeightsSession = self.config.stash[SESSION_KEY]
        if self.config.option.weights_report:
            from .html_report import render_html

            paths = [str(p) for p in weights.checkpoint_paths]
            if weights.reference_path is not None:
                paths.append(str(weights.reference_path))
            Path(self.config.option.weights_report).write_text(render_html(results, paths), encoding="utf-8")
        if not self.config.option.weights_json:
            return
        doc = {
            "version": 1,
            "checkpoints": [str(p) for p in self.config.stash[SESSION_KEY].checkpoint_paths],
            "summary": {
                "passed": sum(r["passed"] and not r["skipped"] for r in results),
                "failed": sum(not r["passed"] for r in results),
                "skipped": sum(r["skipped"] for r in results),
            },
            "results": results,
        }
        Path(self.config.option.weights_json).write_text(json.dumps(doc, indent=2, ensure_ascii=False))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        for line in session.summary_lines():
            terminalreporter.write_line(f"pytest-weights: {line}")


class WeightsSession:
    """Per-run state: the checkpoints, the checker, and whether the pass has run."""

    def __init__(
        self,
        config: pytest.Config,
        checkpoint_paths: list[Path],
        spec_paths: list[Path],
        device: str,
    ) -> None:
        self.config = config
        self.checkpoint_paths = checkpoint_paths
        self.spec_paths = spec_paths
        self.checker = Checker(device, progress=self._progress, workers=config.option.weights_workers)
        #: Step number of each checkpoint that came from a run directory.
        self.steps: dict[Path, int] = {}
        #: Each run directory's checkpoints as (step, path), for run-scope assertions.
        self.runs: dict[Path, list[tuple[int, Path]]] = {}
        #: ``--reference``: a checkpoint to compare against (opened with :meth:`checkpoint`).
        self.reference_path: Path | None = None
        self._opened: dict[Path, Checkpoint | CheckpointError] = {}
        #: Why the one pass before the first item could not run (each item then computes its own statistics).
        self.prepare_error: str | None = None
        self._prepared = False
        self._live = False
        #: --weights-regen: every number rewritten (readable lines), and what was left alone.
        self.regen_changes: list[str] = []
        self.regen_notes: list[str] = []

    @classmethod
    def from_config(cls, config: pytest.Config) -> WeightsSession:
        paths: list[Path] = []
        steps: dict[Path, int] = {}
        runs: dict[Path, list[tuple[int, Path]]] = {}
        for raw in config.option.weights_checkpoints:
            p = Path(raw).expanduser()
            if not p.exists():
                raise CheckpointError(p, "--checkpoint: no such file or directory")
            run = discover_run(p) if detect_format(p) is None else None
            if run is None:
                paths.append(p.resolve())
                continue
            runs[p.resolve()] = [(e.step, e.path.resolve()) for e in run.entries]
            entries = [run.latest] if config.option.weights_latest else list(run.entries)
            for entry in entries:
                paths.append(entry.path.resolve())
                steps[entry.path.resolve()] = entry.step
        reference = config.option.weights_reference
        if reference is not None and not Path(reference).expanduser().exists():
            raise CheckpointError(reference, "--reference: no such file or directory")
        specs = [resolve_spec(s).resolve() for s in config.option.weights_specs]
        device = config.option.weights_device or config.getini("weights_device") or "auto"
        session = cls(config, paths, specs, device)
        session.steps = steps
        session.runs = runs
        session.reference_path = Path(reference).expanduser().resolve() if reference else None
        return session

    def checkpoint(self, path: Path) -> Checkpoint:
        """The opened checkpoint at ``path`` (opened once); raises its :class:`CheckpointError`."""
        if path not in self._opened:
            try:
                self._opened[path] = open_or_raise(path)
            except CheckpointError as e:
                self._opened[path] = e
        got = self._opened[path]
        if isinstance(got, CheckpointError):
            raise got.with_traceback(None)  # raised by many items: its traceback must not grow
        return got

    def label(self, path: Path) -> str:
        """Short id of a checkpoint for node ids (its name, disambiguated if needed)."""
        names = [p.name for p in self.checkpoint_paths]
        if names.count(path.name) == 1:
            return path.name
        if path in self.steps:
            return f"{path.parent.name}/{path.name}"
        return str(path)

    def prepare(self, items: list[pytest.Item]) -> None:
        """Before the first item runs: one pass computing what every selected item needs."""
        if self._prepared:
            return
        self._prepared = True
        if not self.config.option.weights_no_cache and getattr(self.config, "cache", None) is not None:
            self.checker.cache = StatCache(self.config.cache.mkdir("pytest-weights"))
        if self.reference_path is not None:
            with contextlib.suppress(CheckpointError):  # every item reports it
                self.checker.reference = self.checkpoint(self.reference_path)
        work = []
        for item in items:
            if not isinstance(item, WeightsItem):
                continue
            if item.checkpoint_path is not None:
                paths = [item.checkpoint_path]
            elif item.run_path is not None:
                paths = [p for _, p in self.runs[item.run_path]]
            else:
                paths = []
            for path in paths:
                try:
                    work.append((self.checkpoint(path), item.spec))
                except CheckpointError:
                    continue  # reported by the item itself
        try:
            self.checker.prepare(work)
        finally:
            self._end_live()

    def _progress(self, p: PassProgress) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or not tr.isatty or p.tensors_total == 0:
            return
        rate = p.bytes_done / p.seconds / 1e9 if p.seconds > 0 else 0.0
        with self._terminal():
            if not self._live:
                tr.write("\n")
                self._live = True
            tr.rewrite(
                f"pytest-weights: {p.checkpoint}: {p.tensors_done}/{p.tensors_total} tensors, "
                f"{p.bytes_done / 1e9:.2f}/{p.bytes_total / 1e9:.2f} GB, {rate:.2f} GB/s",
                erase=True,
            )

    def _end_live(self) -> None:
        if self._live:
            with self._terminal():
                self.config.pluginmanager.get_plugin("terminalreporter").write("\n")
            self._live = False

    def _terminal(self) -> contextlib.AbstractContextManager:
        """Output capture suspended, so the live line reaches the terminal."""
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()

    def regen(self, node: pytest.File) -> dict[str, list[str]]:
        """--weights-regen: rewrite ``node``'s baseline numbers from the checkpoint; changes by entry name."""
        from .authoring import regen_spec

        try:
            node.path.resolve().relative_to(self.config.rootpath)
        except ValueError:
            self.regen_notes.append(f"{node.path}: a bundled spec is never rewritten (copy it into your project)")
            return {}
        cache = None
        if not self.config.option.weights_no_cache and getattr(self.config, "cache", None) is not None:
            cache = self.config.cache.mkdir("pytest-weights")
        try:
            result = regen_spec(
                node.path,
                self.checkpoint_paths[0],
                self.config.option.weights_regen_margin,
                device=str(self.checker.device),
                cache_dir=cache,
                reference=self.reference_path,
                label=node.nodeid,
            )
        except WeightsError as e:
            self.regen_notes.append(str(e))
            return {}
        except FATAL:
            raise
        except BaseException as e:
            self.regen_notes.append(f"{node.path}: {explain(self.config, e)}")
            return {}
        self.regen_changes += result
        self.regen_notes += result.notes
        changed: dict[str, list[str]] = {}
        for change in result:
            changed.setdefault(change.entry, []).append(str(change))
        return changed

    def summary_lines(self) -> list[str]:
        lines = []
        if self.config.option.weights_regen:
            n = len(self.regen_changes)
            lines.append(f"--weights-regen: {n} number(s) rewritten" + (" (review with git diff):" if n else ""))
            lines += [f"  {c}" for c in self.regen_changes]
            lines += [f"  not rewritten: {note}" for note in self.regen_notes]
        cache = self.checker.cache
        if cache is not None and cache.hits:
            lines.append(f"{cache.hits} statistic value(s) taken from the cache (--weights-no-cache to recompute)")
        for p in self.checker.passes:
            if p.tensors_total:
                rate = p.bytes_done / p.seconds / 1e6 if p.seconds > 0 else 0.0
                lines.append(
                    f"{p.checkpoint}: read {p.tensors_done} tensors ({p.bytes_done / 1e6:.1f} MB) "
                    f"in {p.seconds:.2f} s ({rate:.0f} MB/s) on {self.checker.device}"
                )
        if self.steps:
            lines.append(
                f"run: {len(self.steps)} checkpoint(s), steps {', '.join(map(str, sorted(self.steps.values())))}"
            )
        if self.reference_path is not None:
            lines.append(f"reference: {self.reference_path}")
        if self.prepare_error is not None:
            lines.append(f"the statistics pass could not be planned: {self.prepare_error}")
        for ckpt, exc in self.checker.errors.items():
            lines.append(f"{ckpt.label}: statistics pass failed: {describe(exc)}")
        for path, got in self._opened.items():
            if isinstance(got, CheckpointError):
                lines.append(f"{path}: could not be read: {got.message}")
            else:
                nonfloat = [i for i in got.tensors() if not i.is_float]
                if nonfloat:
                    names = ", ".join(f"{i.name} ({i.dtype_name})" for i in nonfloat[:5])
                    more = f" and {len(nonfloat) - 5} more" if len(nonfloat) > 5 else ""
                    lines.append(
                        f"{got.label}: {len(nonfloat)} non-float tensor(s) not in float statistics: {names}{more}"
                    )
        return lines


def debugging(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "weights_debug", False))


def explain(config: pytest.Config, exc: BaseException) -> str:
    """The cause of ``exc`` in one line, then its traceback with --weights-debug (else a hint)."""
    cause = describe(exc)
    if not is_internal(exc):
        return cause
    if debugging(config):
        return f"{cause}\n{format_traceback(exc)}"
    return cause + DEBUG_HINT


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
        regen = session.regen(self) if self.config.option.weights_regen else {}
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
                items.append(
                    WeightsItem.from_parent(
                        self, name=name, spec=entry, checkpoint_path=path, regen=regen.get(entry.name, ())
                    )
                )
        return items


class WeightsFailure(Exception):
    """Raised by an item whose assertion failed; carries the result for the report."""

    def __init__(self, result: AssertionResult) -> None:
        self.result = result
        super().__init__(result.summary)


class WeightsItem(pytest.Item):
    """One assertion of a spec, checked on one checkpoint."""

    def __init__(
        self,
        *,
        spec: AssertionSpec,
        checkpoint_path: Path | None,
        run_path: Path | None = None,
        regen: Sequence[str] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        #: --weights-regen rewrote this assertion's numbers (the lines saying what changed).
        self.regen = tuple(regen)
        self.spec = spec
        self.checkpoint_path = checkpoint_path
        self.run_path = run_path
        self.result: AssertionResult | None = None

    def runtest(self) -> None:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        if self.regen:
            pytest.fail(
                "--weights-regen rewrote this assertion's baseline:\n  "
                + "\n  ".join(self.regen)
                + "\nrun again without --weights-regen to check the new values",
                pytrace=False,
            )
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
        else:
            if self.checkpoint_path is None:
                pytest.skip("no checkpoint given: run with --checkpoint PATH")
            session.prepare(self.session.items)
            if session.reference_path is not None:
                session.checkpoint(session.reference_path)  # raises the reference's error, if any
            self.result = session.checker.judge(session.checkpoint(self.checkpoint_path), self.spec)
        self._report()

    def _report(self) -> None:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        assert self.result is not None
        self.user_properties.append(("checkpoint", self.result.checkpoint))
        if self.checkpoint_path in session.steps:
            self.user_properties.append(("step", session.steps[self.checkpoint_path]))
        self.user_properties.append(("summary", self.result.summary))
        if self.result.skipped:  # reported at the spec line (-rs), not at this one
            raise pytest.skip.Exception(self.result.summary, _use_item_location=True)
        if not self.result.passed:
            raise WeightsFailure(self.result)

    def repr_failure(self, excinfo, style=None):
        exc = excinfo.value
        if isinstance(exc, WeightsFailure):
            return self._with_traceback(exc.result.format(), exc.result.traceback)
        if isinstance(exc, (pytest.fail.Exception, pytest.exit.Exception)):
            return super().repr_failure(excinfo, style=style)
        # Anything else raised while opening, reading or judging: one line naming spec, assertion and checkpoint.
        line = f"{self.spec.location}: {self.spec.name} on {self._label()}: {describe(exc)}"
        return self._with_traceback(line, format_traceback(exc) if is_internal(exc) else "")

    def _with_traceback(self, text: str, trace: str) -> str:
        if not trace:
            return text
        return f"{text}\n{trace}" if debugging(self.config) else text + DEBUG_HINT

    def _label(self) -> str:
        session: WeightsSession = self.config.stash[SESSION_KEY]
        if self.run_path is not None:
            return self.run_path.name
        return session.label(self.checkpoint_path) if self.checkpoint_path is not None else "no checkpoint"

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"{self.spec.name} [{self.spec.assertion.kind}]"


class SpecErrorItem(pytest.Item):
    """A spec (entry) that failed validation or could not be loaded: errors at setup, naming file:line."""

    def __init__(self, *, error: SpecError, trace: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.error = error
        #: The traceback of an unexpected loader error (shown with --weights-debug).
        self.trace = trace

    def _message(self) -> str:
        text = f"invalid spec: {self.error}"
        if not self.trace:
            return text
        return f"{text}\n{self.trace}" if debugging(self.config) else text + DEBUG_HINT

    def setup(self) -> None:
        pytest.fail(self._message(), pytrace=False)

    def runtest(self) -> None:  # pragma: no cover - setup always fails
        pytest.fail(self._message(), pytrace=False)

    def reportinfo(self):
        return self.path, (self.error.line or 1) - 1, f"invalid spec: {self.name}"
