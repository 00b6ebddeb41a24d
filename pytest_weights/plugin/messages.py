"""How an error reads in pytest's output: one line, the traceback only with ``--weights-debug``."""

from __future__ import annotations

import pytest

from ..errors import describe, format_traceback, is_internal

#: Appended to the one-line message of an unexpected error.
DEBUG_HINT = " (--weights-debug for the traceback)"


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


def with_traceback(config: pytest.Config, text: str, trace: str) -> str:
    """``text``, then ``trace`` with --weights-debug, else the hint (nothing when there is no trace)."""
    if not trace:
        return text
    return f"{text}\n{trace}" if debugging(config) else text + DEBUG_HINT
