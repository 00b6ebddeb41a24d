"""The pytest adapter (the ``pytest11`` entry point): its hooks, nothing heavier than pytest.

Everything statistical lives in the library (:class:`pytest_weights.Checker`); the hooks map
it onto pytest: ``*.weights.yaml`` files become collectors, assertions become items, the
first item to run triggers one streamed pass over all checkpoints for every selected item,
and failures render as tables. An error while opening, reading or judging fails only the
items concerned, in one line (``--weights-debug`` adds the traceback); it never interrupts
the session.

pytest imports this module in every run of every project in the environment, so it imports
the standard library and pytest only: torch, numpy, scipy and yaml are imported (with
:mod:`.session` and :mod:`.items`) when a checkpoint is given (``--checkpoint``,
``--reference``, ``--weights-spec``) or a spec file is collected.

Modules: :mod:`.options` (options), :mod:`.rootdir` (rootdir despite
``--checkpoint PATH``), :mod:`.session` (per-run state, the pass), :mod:`.items`
(collectors and items), :mod:`.reports` (``--weights-json``/``--weights-report``),
:mod:`.summary` (the terminal summary, merged over xdist workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..errors import FATAL
from .messages import explain
from .options import add_options
from .rootdir import correct_rootdir
from .state import REPLAY_KEY, SESSION_KEY, weights_session
from .summary import PassSummary

if TYPE_CHECKING:
    from .replay import Replay
    from .session import WeightsSession

#: Pass summaries sent by pytest-xdist workers, on the controller.
WORKER_SUMMARIES = pytest.StashKey[list[PassSummary]]()
#: Key of a worker's pass summary in ``config.workeroutput``.
WORKER_OUTPUT_KEY = "pytest_weights"
#: File names collected as spec files (the same as :data:`pytest_weights.spec.SPEC_SUFFIXES`).
SPEC_SUFFIXES = (".weights.yaml", ".weights.yml")
#: Options that involve a checkpoint or a spec, so the session (and torch) is set up at configure time.
EAGER_OPTIONS = ("weights_checkpoints", "weights_reference", "weights_specs", "weights_device", "weights_regen")
#: The outcome recorder's name with the plugin manager (see :mod:`.replay`).
RECORDER_NAME = "weights-outcome-recorder"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Before conftest files load: undo the rootdir that ``--checkpoint PATH`` chose (see :mod:`.rootdir`)."""
    correct_rootdir(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[WORKER_SUMMARIES] = []
    session = None
    replay = None
    if any(getattr(config.option, name, None) for name in EAGER_OPTIONS):
        replay = start_replay(config)
        if replay is None:
            session = weights_session(config)
            check_regen(config, session)
            add_spec_args(config, session)
        else:  # every outcome may come from the outcome cache: no torch unless a spec file changed
            config.args = list(replay.args)
        recorder = config.pluginmanager.get_plugin(RECORDER_NAME)
        if recorder is not None:
            recorder.args = list(config.args)
    if (config.option.weights_json or config.option.weights_report) and not hasattr(config, "workerinput"):
        from .reports import PLUGIN_NAME, ResultReports  # the xdist controller writes

        checkpoints = [str(p) for p in session.checkpoint_paths] if session else []
        reference = str(session.reference_path) if session and session.reference_path else None
        if replay is not None:
            checkpoints, reference = replay.checkpoints, replay.reference
        config.pluginmanager.register(ResultReports(config, checkpoints, reference), PLUGIN_NAME)


def start_replay(config: pytest.Config) -> Replay | None:
    """The outcome cache (:mod:`.replay`): the replay of this run when every input is unchanged
    (stashed), else None; registers the recorder of this run's outcomes when they may be cached."""
    from .replay import start

    replay, recorder = start(config)
    if recorder is not None:
        config.pluginmanager.register(recorder, RECORDER_NAME)
    if replay is not None:
        config.stash[REPLAY_KEY] = replay
    return replay


def check_regen(config: pytest.Config, session: WeightsSession) -> None:
    """--weights-regen needs one checkpoint and one process."""
    if not config.option.weights_regen:
        return
    if len(session.checkpoint_paths) != 1:
        raise pytest.UsageError(
            "--weights-regen needs exactly one checkpoint (--checkpoint PATH; for a run directory, --weights-latest)"
        )
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--weights-regen rewrites spec files: run it without -n (pytest-xdist)")


def add_spec_args(config: pytest.Config, session: WeightsSession) -> None:
    """`pytest --checkpoint X` with no paths runs the specs, not the project's tests; --weights-spec adds specs."""
    if session.checkpoint_paths and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = session.default_specs()
    else:
        extra = [str(p) for p in session.spec_paths]
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
    config = parent.config
    session = config.stash.get(SESSION_KEY, None)
    replay = config.stash.get(REPLAY_KEY, None)
    named = session is not None and file_path.resolve() in session.spec_paths
    named = named or (replay is not None and file_path.resolve() in replay.spec_paths)
    if not (file_path.name.endswith(SPEC_SUFFIXES) or named):
        return None
    bundled = session.bundled if session is not None else replay.bundled if replay is not None else set()
    kwargs = {}
    if file_path.resolve() in bundled or not _inside(file_path, config.rootpath):
        kwargs["nodeid"] = short_nodeid(config, file_path)
    if replay is not None:  # stored outcomes, or the real spec file once it is collected
        from .replay import replay_file

        return replay_file(config, parent, file_path, **kwargs)
    session = weights_session(config)
    from .items import SpecFile

    if "nodeid" not in kwargs and file_path.resolve() in session.bundled:
        kwargs["nodeid"] = short_nodeid(config, file_path)
    return SpecFile.from_parent(parent, path=file_path, **kwargs)


def short_nodeid(config: pytest.Config, path: Path) -> str:
    """Node id of a bundled spec, or one outside the rootdir: shown as its file name.

    pytest shows node ids relative to the directory it was started in, so the id is that
    directory (relative to the rootdir) joined with the name: ``default.weights.yaml::finite``
    wherever pytest runs, never ``../../default.weights.yaml::finite``.
    """
    try:
        here = config.invocation_params.dir.relative_to(config.rootpath)
    except ValueError:
        return path.name
    return (here / path.name).as_posix()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    result = getattr(item, "result", None) if getattr(item, "weights_item", False) else None
    if call.when == "call" and result is not None:
        report.weights_result = result.to_dict()  # travels to the xdist controller with the report
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """--weights-regen: write the rewritten spec files, once. On a pytest-xdist worker: hand this
    worker's pass summary to the controller."""
    config = session.config
    weights = config.stash.get(SESSION_KEY, None)
    if weights is not None and config.option.weights_regen:
        weights.regen.write()
    workeroutput = getattr(config, "workeroutput", None)
    if weights is not None and workeroutput is not None:
        worker = config.workerinput.get("workerid", "")
        workeroutput[WORKER_OUTPUT_KEY] = weights.pass_summary(worker).to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the pytest-xdist controller: keep each finished worker's pass summary."""
    data = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if data is not None:
        node.config.stash[WORKER_SUMMARIES].append(PassSummary.from_dict(data))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for line in summary_lines(config):
        terminalreporter.write_line(f"pytest-weights: {line}")


def summary_lines(config: pytest.Config) -> list[str]:
    """One block: rewrites, what was read (this process and xdist workers together), runs, notes, files written."""
    session = config.stash.get(SESSION_KEY, None)
    replay = config.stash.get(REPLAY_KEY, None)
    parts = list(config.stash.get(WORKER_SUMMARIES, []))
    if session is not None:
        parts.insert(0, session.pass_summary())
    if replay is not None and replay.replayed:  # what the replayed items' checkpoints left out
        parts.insert(0, PassSummary(left_out=replay.left_out))
    summary = PassSummary.merge(parts)
    lines = session.regen.lines() if session is not None else []
    lines += replay.lines() if replay is not None else []
    lines += summary.lines(verbose=config.get_verbosity() > 0)
    lines += session.run_lines() if session is not None else replay.run_lines if replay is not None else []
    lines += summary.note_lines()
    reports = config.pluginmanager.get_plugin("weights-reports")
    lines += [f"wrote {path}" for path in getattr(reports, "written", ())]
    return lines
