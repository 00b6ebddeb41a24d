"""``--weights-json`` and ``--weights-report``: every assertion's result, written once.

:class:`ResultReports` is registered on the process that writes (never on a pytest-xdist
worker): it collects the results that travel with the test reports, from workers too, and
writes both files at the end of the session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..errors import FATAL
from .messages import explain

#: The name under which :class:`ResultReports` is registered with pytest's plugin manager.
PLUGIN_NAME = "weights-reports"


class ResultReports:
    """Collects every assertion's result and writes ``--weights-json`` / ``--weights-report``."""

    def __init__(self, config: pytest.Config, checkpoints: list[str], reference: str | None = None) -> None:
        self.config = config
        #: The checkpoints checked and the ``--reference`` checkpoint, as recorded in the files.
        self.checkpoints = checkpoints
        self.reference = reference
        self.results: list[dict] = []
        #: The files written, as given on the command line (for the terminal summary).
        self.written: list[str] = []

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
        option = self.config.option
        if option.weights_report:
            from ..html_report import render_html

            paths = [*self.checkpoints, self.reference] if self.reference else self.checkpoints
            self._write(option.weights_report, render_html(results, paths))
        if option.weights_json:
            self._write(option.weights_json, json.dumps(self.json_doc(results), indent=2, ensure_ascii=False))

    def json_doc(self, results: list[dict]) -> dict[str, Any]:
        """The ``--weights-json`` document (version 1)."""
        return {
            "version": 1,
            "checkpoints": self.checkpoints,
            "summary": {
                "passed": sum(r["passed"] and not r["skipped"] for r in results),
                "failed": sum(not r["passed"] for r in results),
                "skipped": sum(r["skipped"] for r in results),
            },
            "results": results,
        }

    def _write(self, given: str, text: str) -> None:
        path = Path(given)
        if not path.is_absolute():  # relative to where pytest was started, whatever a test did to the cwd
            path = self.config.invocation_params.dir / path
        path.write_text(text, encoding="utf-8")
        self.written.append(given)
