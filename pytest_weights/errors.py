"""Errors that reach the user: each names the file (and line) and what is wrong."""

from __future__ import annotations

from pathlib import Path


class WeightsError(Exception):
    """Base class of every error pytest-weights reports without a traceback."""


class SpecError(WeightsError):
    """A spec file is invalid: names ``file:line`` and what was expected."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(WeightsError):
    """A checkpoint cannot be opened or read: names the file and the problem."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
