"""Errors that reach the user: each names the file (and line) and what is wrong."""

from __future__ import annotations

import contextlib
import reprlib
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


#: Exceptions that end the program rather than one check: never caught and reported as a failure.
FATAL: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit)
#: Longest cause (exception type and message) shown in a one-line failure.
CAUSE_LIMIT = 300


def describe(exc: BaseException, limit: int = CAUSE_LIMIT) -> str:
    """One line saying what went wrong: a :class:`WeightsError`'s own message, else the
    exception's type name and message (truncated to about ``limit`` characters)."""
    if isinstance(exc, WeightsError):
        return " ".join(str(exc).split())
    message = " ".join(str(exc).split())
    kind = type(exc)
    name = kind.__qualname__  # qualified when it says little alone: zlib.error, struct.error
    if not name[:1].isupper() and kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    text = f"{name}: {message}" if message else name
    tensor = getattr(exc, "weights_tensor", None)
    if tensor is not None:
        text += f" (tensor {tensor!r})"
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Longest excerpt of a user's value quoted in an error message.
EXCERPT_LIMIT = 80


class _Excerpt(reprlib.Repr):
    """``repr`` that never expands a value in full: long strings, lists and mappings are elided."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = self.maxlong = limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6
        self.maxlevel = 3

    def repr1(self, x: object, level: int) -> str:
        if isinstance(x, bool) or x is None:
            return repr(x)
        if isinstance(x, int):
            return self.repr_int(int(x), level)
        for kind, method in ((str, self.repr_str), (dict, self.repr_dict), (list, self.repr_list)):
            if isinstance(x, kind):  # subclasses too (the spec loader's mappings)
                return method(x, level)
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        bits = x.bit_length()
        return f"<a {bits}-bit integer>" if bits > 256 else super().repr_int(x, level)


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, for quoting a user's value in a message
    (a huge string, a deep or aliased list, a giant integer is never expanded in full)."""
    try:
        text = _Excerpt(limit).repr(value)
    except Exception:  # a value whose repr fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_internal(exc: BaseException) -> bool:
    """True for errors whose traceback helps a bug report: anything but a plain :class:`WeightsError`."""
    return not isinstance(exc, WeightsError) or exc.__cause__ is not None


def format_traceback(exc: BaseException) -> str:
    """The full Python traceback of ``exc`` (with its causes), as printed by the interpreter."""
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")


def blame_tensor(exc: BaseException, name: str) -> None:
    """Remember on ``exc`` the tensor being read or reduced when it was raised (shown by :func:`describe`)."""
    if isinstance(exc, (WeightsError, *FATAL)) or hasattr(exc, "weights_tensor"):
        return
    with contextlib.suppress(AttributeError):  # an exception type without __dict__
        exc.weights_tensor = name  # type: ignore[attr-defined]


def as_checkpoint_error(path: str | Path, exc: BaseException) -> CheckpointError:
    """``exc`` (raised opening or reading ``path``) as a :class:`CheckpointError`, chained to it."""
    if isinstance(exc, CheckpointError):
        return exc
    err = CheckpointError(path, describe(exc))
    err.__cause__ = exc
    return err
