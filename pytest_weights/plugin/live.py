"""The live progress line of the statistics pass on pytest's terminal (one job: that line)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest

from ..formatting import progress_text

if TYPE_CHECKING:
    from ..engine import PassProgress


class LiveLine:
    """``pytest-weights: model.safetensors: 12/67 tensors, …`` rewritten in place while a pass runs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._live = False

    def update(self, p: PassProgress) -> None:
        """Show the pass's progress (a terminal only; nothing under capture or in a pipe)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or not tr.isatty or p.tensors_total == 0:
            return
        with self._terminal():
            if not self._live:
                tr.write("\n")
                self._live = True
            tr.rewrite(progress_text(p), erase=True)

    def end(self) -> None:
        """End the line (the next output starts on a fresh one)."""
        if self._live:
            with self._terminal():
                self.config.pluginmanager.get_plugin("terminalreporter").write("\n")
            self._live = False

    def _terminal(self) -> contextlib.AbstractContextManager:
        """Output capture suspended, so the live line reaches the terminal."""
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
