"""Typed spec keys: the fields of ``select:`` and the keys every assertion entry takes.

A key is a dataclass field made with :func:`spec_key`: its annotation is the type, its default the
default, and its :class:`Key` metadata the documentation and the limits (``minimum``,
``max_items``, ``max_length``). From the same field

- the loader (:mod:`pytest_weights.spec`) converts and checks a value with :func:`convert`
  (the conversion kind parameters use, then the limits), raising :class:`BadValue`;
- :mod:`pytest_weights.schema` derives its JSON Schema (:func:`pytest_weights.schema.key_schema`);
- :mod:`pytest_weights.reference_docs` derives its row of the reference tables,

so the three agree by construction. What a JSON Schema cannot say is a key's ``loader_check``
(e.g. that a regex compiles and captures a layer index): only the loader runs it, after every
static check, and reports it as a :class:`LoaderOnly` problem.

Standard library only; the kind parameters are converted here too (`_convert`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import excerpt

#: What :func:`describe` calls each plain type in a message or a table.
_WORDS = {str: "text", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


@dataclass(frozen=True)
class Key:
    """The documentation and limits of one typed key (the type and default are the field's)."""

    doc: str
    #: Smallest integer allowed (for an integer, or each integer of a list).
    minimum: int | None = None
    #: Most items of a list.
    max_items: int | None = None
    #: Longest text (a text, or each text of a list).
    max_length: int | None = None
    #: What the key takes, in words, when better said than derived from its type (messages, docs).
    what: str = ""
    #: True for the entry keys that ``defaults`` may hold too.
    in_defaults: bool = False
    #: What only the loader can check: returns why the (converted) value is refused, or None.
    loader_check: Callable[[Any], str | None] | None = None


def spec_key(default: Any, doc: str, **limits: Any) -> Any:
    """A dataclass field that is a typed spec key (``limits``: the other :class:`Key` fields)."""
    return dataclasses.field(default=default, metadata={"key": Key(doc, **limits)})


@dataclass(frozen=True)
class TypedKey:
    """A key as the loader, the schema and the docs see it: name, type, default and :class:`Key`."""

    name: str
    type: Any
    default: Any
    meta: Key


class BadValue(Exception):
    """A value a key does not take; the message names the key (``'ndim' must be …``)."""


class LoaderOnly(BadValue):
    """A value refused by a key's ``loader_check``: a problem no JSON Schema can express."""


def typed_keys(cls: type) -> dict[str, TypedKey]:
    """The typed keys of dataclass ``cls`` (fields made with :func:`spec_key`), in order."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: TypedKey(f.name, hints[f.name], f.default, f.metadata["key"])
        for f in dataclasses.fields(cls)
        if "key" in f.metadata
    }


def convert(k: TypedKey, value: Any) -> Any:
    """``value`` as ``k``'s type (a list for a tuple; one value as a list of one), within its limits."""

    try:
        out = _convert(k.name, value, k.type)
    except ParamError:
        raise BadValue(f"'{k.name}' must be {describe(k)}, got {excerpt(value)}{_hint(k.type, value)}") from None
    problem = _limits(k, out)
    if problem:
        raise BadValue(f"'{k.name}' {problem}")
    return out


def loader_check(k: TypedKey, value: Any) -> None:
    """Raise :class:`LoaderOnly` when ``k``'s ``loader_check`` refuses the converted ``value``."""
    check = k.meta.loader_check
    problem = check(value) if check is not None else None
    if problem:
        raise LoaderOnly(f"'{k.name}' {problem}")


def describe(k: TypedKey) -> str:
    """What ``k`` takes, in words: ``an integer ≥ 0, or a list of them``."""
    return k.meta.what or _words(k.type, k.meta.minimum)


def _words(tp: Any, minimum: int | None = None) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_words(a, minimum) for a in typing.get_args(tp))
    if origin is tuple:
        return f"{_words(typing.get_args(tp)[0], minimum)}, or a list of them"
    word = _WORDS.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{word} ≥ {minimum}" if tp is int and minimum is not None else word


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _limits(k: TypedKey, value: Any) -> str | None:
    """Why a converted value breaks ``k``'s limits, or None."""
    m = k.meta
    items = _items(value)
    if m.max_items is not None and len(items) > m.max_items:
        return f"takes at most {m.max_items} values, got {len(items)}"
    if m.max_length is not None and any(isinstance(v, str) and len(v) > m.max_length for v in items):
        return f"takes text of at most {m.max_length} characters"
    if m.minimum is not None and any(isinstance(v, int) and v < m.minimum for v in items):
        return f"must be {describe(k)}, got {value if isinstance(value, int) else list(items)}"
    return None


def _hint(tp: Any, value: Any) -> str:
    """`` (did you mean 'x'?)`` for a text close to one of the choices of a ``Literal`` in ``tp``."""

    choices = [str(c) for c in _literals(tp)]
    words = [v for v in _items(value) if isinstance(v, str) and v not in choices]
    return suggest(words[0], choices) if choices and words else ""


def _literals(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp)
    if origin in (typing.Union, types.UnionType, tuple):
        return tuple(c for a in typing.get_args(tp) for c in _literals(a))
    return ()


# ---------------------------------------------------------------- typed values (kind parameters and spec keys)


class ParamError(Exception):
    """A parameter is wrong; ``key`` names it so the caller can point at its line."""

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(message)


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``''``."""
    options = [str(c) for c in choices]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    close = close or [c for c in options if len(c) >= 3 and (word.startswith(c) or c.startswith(word))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _typename(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_typename(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_typename(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(name, value, option)
            except ParamError:
                continue
        raise ParamError(name, f"parameter {name!r} must be {_typename(tp)}, got {excerpt(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ParamError(
            name,
            f"parameter {name!r} must be {_typename(tp)}, got {excerpt(value)}{suggest(str(value), map(str, choices))}",
        )
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        return tuple(_convert(name, v, typing.get_args(tp)[0]) for v in items)
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif (tp is bool or tp is str) and isinstance(value, tp):
        return value
    raise ParamError(name, f"parameter {name!r} must be {_typename(tp)}, got {excerpt(value)}")
