"""The outcome cache in the plugin: record each spec file's outcomes, replay them on a re-run.

See :mod:`pytest_weights.replay` for the design and the key. :func:`start` (at configure
time, before anything imports torch) computes the key and loads the record: when it holds
the session's data, the run collects :class:`ReplaySpecFile` nodes for every spec file whose
text is unchanged, and their :class:`ReplayItem` items re-report the stored outcomes (same
node ids, locations, failure texts, skip reasons, ``user_properties`` and ``--weights-json``
results). A spec file without a matching record is a :class:`PendingSpecFile`: collected, it is
the real :class:`~.items.SpecFile` (which brings in torch and runs the pass for its items only).
:class:`Recorder` stores what the real items concluded at the end of a run, for the files
whose every item ran and ended in a plain outcome (no internal error, captured output or
warning). Standard library and pytest only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ..errors import FATAL
from ..replay import OutcomeStore, code_fingerprint, fingerprint, text_digest
from .state import REPLAY_KEY, SESSION_KEY

#: ``--weights-*`` options that cannot change an outcome (outputs, and those that turn replay off);
#: every other one is part of the key, options added later included.
UNKEYED_OPTIONS = ("weights_json", "weights_report", "weights_no_cache", "weights_regen", "weights_regen_margin")
#: Environment variables that can change where (hence how) statistics are computed.
OUTCOME_ENV = ("CUDA_VISIBLE_DEVICES",)


def eligible(config: pytest.Config) -> bool:
    """Whether outcomes may be replayed or recorded in this run."""
    option = config.option
    return bool(
        option.weights_checkpoints
        and not option.weights_no_cache
        and not option.weights_regen
        and getattr(config, "cache", None) is not None
        and not getattr(option, "numprocesses", None)  # pytest-xdist: workers judge; not recorded
        and not hasattr(config, "workerinput")
    )


def store_dir(config: pytest.Config) -> Path:
    return config.cache.mkdir("pytest-weights-outcomes")


def session_key(config: pytest.Config) -> dict[str, Any] | None:
    """Everything besides a spec file's text that an item's outcome depends on (None: no replay)."""
    option = config.option
    here = config.invocation_params.dir
    cache_root = store_dir(config).parent.parent  # <cache_dir>/d/<name>: never part of a checkpoint
    paths = {}
    raws = [*option.weights_checkpoints, *([option.weights_reference] if option.weights_reference else [])]
    for raw in raws:
        path = here / Path(raw).expanduser()
        got = fingerprint(path, skip=[cache_root])
        if got is None:
            return None
        paths[raw] = [str(path.resolve()), got]
    inifile = text_digest(config.inipath) if config.inipath is not None else None
    return {
        "code": code_fingerprint(),
        "dir": str(here),
        "rootdir": str(config.rootpath),
        "inifile": [str(config.inipath), inifile],
        "args": [str(a) for a in config.args],
        "args_source": config.args_source.name,
        "options": {
            name: _jsonable(value)
            for name, value in sorted(vars(option).items())
            if name.startswith("weights_") and name not in UNKEYED_OPTIONS
        },
        "override_ini": _jsonable(getattr(option, "override_ini", None)),  # -o name=value; the file: "inifile"
        "env": {name: os.environ.get(name) for name in OUTCOME_ENV},
        "specs": [[s, Path(s).is_file()] for s in option.weights_specs],
        "paths": paths,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


class Replay:
    """A run replaying stored outcomes: the record's session data and its spec files."""

    def __init__(self, record: dict[str, Any]) -> None:
        session = record["session"]
        self.files: dict[str, Any] = record["files"]
        self.args = [str(a) for a in session["args"]]
        self.spec_paths = {Path(p) for p in session["spec_paths"]}
        self.bundled = {Path(p) for p in session["bundled"]}
        self.checkpoints = [str(p) for p in session["checkpoints"]]
        self.reference: str | None = session["reference"]
        self.left_out = [(str(c), str(t)) for c, t in session["left_out"]]
        self.run_lines = [str(line) for line in session["run_lines"]]
        #: Items replayed in this run.
        self.replayed = 0

    def file_record(self, path: Path) -> dict[str, Any] | None:
        """The record of the spec file at ``path`` if its text is the one recorded."""
        entry = self.files.get(str(path.resolve()))
        if not isinstance(entry, dict) or entry.get("sha256") != text_digest(path):
            return None
        return entry

    def lines(self) -> list[str]:
        if not self.replayed:
            return []
        return [
            f"{self.replayed} result(s) replayed from the outcome cache: checkpoints, specs, options and "
            "pytest-weights unchanged; nothing read (--weights-no-cache to recompute)"
        ]


def start(config: pytest.Config) -> tuple[Replay | None, Recorder | None]:
    """At configure time: the replay of this run's stored outcomes (None: no usable record), and
    the recorder to register when the real path runs (None: outcomes are not cached)."""
    if not eligible(config):
        return None, None
    try:
        key = session_key(config)
    except FATAL:
        raise
    except BaseException:  # an unreadable path: the real path says what is wrong
        return None, None
    if key is None:
        return None, None
    store = OutcomeStore(store_dir(config))
    record = store.load(key)
    replay = None
    if record is not None:
        try:
            replay = Replay(record)
        except (KeyError, TypeError, ValueError):  # a record of the right format but wrong content
            replay = None
    return replay, Recorder(config, store, key)


class ReplayedFailure(Exception):
    """Raised by a :class:`ReplayItem` whose stored outcome is a failure: its text is the report."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


class _Result:
    """What :func:`pytest_runtest_makereport` needs of a replayed result: its ``--weights-json`` dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


class ReplaySpecFile(pytest.File):
    """A spec file whose items' outcomes are replayed from the outcome cache."""

    record: dict[str, Any]

    def collect(self) -> list[pytest.Item]:
        return [ReplayItem.from_parent(self, name=data["name"], data=data) for data in self.record["items"]]


class ReplayItem(pytest.Item):
    """An item re-reporting the stored outcome of the real item of the same node id."""

    #: Reports carry its ``--weights-json`` result (see :func:`pytest_runtest_makereport`).
    weights_item = True
    spec = None

    def __init__(self, *, data: dict[str, Any], **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.result: _Result | None = None

    def setup(self) -> None:
        self.config.stash[REPLAY_KEY].replayed += 1
        if self.data.get("setup") is not None:
            pytest.fail(self.data["setup"], pytrace=False)

    def runtest(self) -> None:
        call = self.data["call"]
        self.user_properties.extend(tuple(p) for p in call["properties"])
        if call.get("result") is not None:
            self.result = _Result(call["result"])
        if call["outcome"] == "skipped":
            raise pytest.skip.Exception(call["text"], _use_item_location=True)
        if call["outcome"] == "failed":
            raise ReplayedFailure(call["text"])

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ReplayedFailure):
            return excinfo.value.text
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.data["line"], self.data["domain"]


class PendingSpecFile(pytest.File):
    """In a replaying run, a spec file without stored outcomes: judged for real (with torch)
    if pytest collects it, which it does not for the other files of an argument's directory."""

    def collect(self) -> list[pytest.Collector]:
        from .items import SpecFile
        from .state import weights_session

        weights_session(self.config)
        return [SpecFile.from_parent(self, path=self.path, nodeid=self.nodeid)]


def replay_file(config: pytest.Config, parent: pytest.Collector, file_path: Path, **kwargs) -> pytest.File:
    """The :class:`ReplaySpecFile` of ``file_path`` when its outcomes are stored, else a :class:`PendingSpecFile`."""
    replay: Replay = config.stash[REPLAY_KEY]
    record = replay.file_record(file_path)
    node = ReplaySpecFile.from_parent(parent, path=file_path, **kwargs) if record is not None else None
    if node is None or node.nodeid != record.get("nodeid"):  # type: ignore[union-attr]
        return PendingSpecFile.from_parent(parent, path=file_path, **kwargs)
    node.record = record  # type: ignore[assignment]
    return node


class Recorder:
    """Keeps what the real spec items concluded and stores it at the end of the session."""

    def __init__(self, config: pytest.Config, store: OutcomeStore, key: dict[str, Any]) -> None:
        self.config = config
        self.store = store
        self.key = key
        self.args: list[str] = []
        #: node id → (item, {phase: report data}) for the items of real spec files.
        self.items: dict[str, tuple[pytest.Item, dict[str, Any]]] = {}
        self.warned = False

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        module = sys.modules.get("pytest_weights.plugin.items")
        if module is not None and isinstance(item.parent, module.SpecFile):
            self.items[item.nodeid] = (item, {})

    def pytest_warning_recorded(self) -> None:
        self.warned = True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        got = self.items.get(report.nodeid)
        if got is None:
            return
        item, phases = got
        phases[report.when] = self._phase(item, report)

    def _phase(self, item: pytest.Item, report: pytest.TestReport) -> dict[str, Any] | None:
        """What a phase's report shows, or None when it cannot be replayed."""
        if report.sections:
            return None
        if report.when != "call":
            if report.passed:
                return {"outcome": "passed"}
            message = getattr(item, "_message", None)  # SpecErrorItem: its setup fails with this text
            if report.when == "setup" and report.failed and message is not None and not getattr(item, "trace", ""):
                return {"outcome": "failed", "text": message()}
            return None
        result = getattr(item, "result", None)
        if result is None or result.error or getattr(item, "regen", ()):
            return None
        if report.failed and isinstance(report.longrepr, str):
            text = report.longrepr
        elif report.skipped and result.skipped:
            text = result.summary
        elif report.passed:
            text = None
        else:
            return None
        properties = [list(p) for p in item.user_properties]
        return {"outcome": report.outcome, "text": text, "properties": properties, "result": result.to_dict()}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self._save()
        except FATAL:
            raise
        except BaseException:  # the outcome cache is an optimisation: never fail a run over it
            return

    def _save(self) -> None:
        weights = self.config.stash.get(SESSION_KEY, None)
        if weights is None or self.warned or weights.notes() or self.config.option.collectonly:
            return
        by_file: dict[pytest.Collector, list[dict[str, Any]] | None] = {}
        for item, phases in self.items.values():
            data = self._item_record(item, phases)
            known = by_file.setdefault(item.parent, [])
            by_file[item.parent] = None if data is None or known is None else [*known, data]
        files = {}
        for node, items in by_file.items():
            digest = text_digest(node.path)
            if items is not None and digest is not None:
                files[str(node.path.resolve())] = {"sha256": digest, "nodeid": node.nodeid, "items": items}
        if not files:
            return
        replay = self.config.stash.get(REPLAY_KEY, None)
        left_out = (replay.left_out if replay is not None else []) + weights.left_out()
        session = {
            "args": self.args,
            "spec_paths": sorted(str(p) for p in weights.spec_paths),
            "bundled": sorted(str(p) for p in weights.bundled),
            "checkpoints": [str(p) for p in weights.checkpoint_paths],
            "reference": str(weights.reference_path) if weights.reference_path else None,
            "left_out": [list(x) for x in dict.fromkeys(left_out)],
            "run_lines": weights.run_lines(),
        }
        self.store.save(self.key, session, files)

    @staticmethod
    def _item_record(item: pytest.Item, phases: dict[str, Any]) -> dict[str, Any] | None:
        """The stored form of one item, or None if any phase cannot be replayed (or did not run)."""
        setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
        if setup is None or teardown is None or teardown["outcome"] != "passed":
            return None
        if setup["outcome"] == "failed":
            call = {"outcome": "passed", "text": None, "properties": [], "result": None}  # never reached
        elif call is None:
            return None
        _, line, domain = item.reportinfo()
        return {
            "name": item.name,
            "nodeid": item.nodeid,
            "line": line,
            "domain": domain,
            "setup": setup["text"] if setup["outcome"] == "failed" else None,
            "call": call,
        }
