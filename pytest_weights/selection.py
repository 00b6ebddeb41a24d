"""Tensor selection: name globs, shape filters, and the depth/role derived from names.

:class:`Selection` is also the typed ``select:`` mapping of a spec: each field is a typed key
(:mod:`pytest_weights.keys`) whose type, default, limits and doc the loader, the JSON Schema
and docs/kinds.md all derive from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Literal

from .keys import spec_key
from .readers.base import TensorInfo

#: Default depth scheme: the number after ``layers.``, ``layer.``, ``h.``, ``blocks.``, …
DEFAULT_DEPTH_PATTERN = r"(?:^|\.)(?:layers|layer|h|blocks|block|transformer_blocks)\.(\d+)(?=\.|$)"
#: Most globs per ``include``/``exclude`` and longest glob; longest ``depth_pattern``.
MAX_GLOBS = 256
MAX_GLOB = 256
MAX_PATTERN = 1000
GLOBS = f"a glob, or a list of at most {MAX_GLOBS} globs, of at most {MAX_GLOB} characters each"
#: What ``select: {groups: ...}`` may name: model weights and/or optimizer state.
Group = Literal["weights", "optimizer"]


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ``depth_pattern`` (:func:`depth_pattern_problem`, or a repetition
    that can take exponential time on a tensor name), prefixed with the pattern; None when it can."""
    from .errors import excerpt

    try:
        problem = depth_pattern_problem(pattern) or _backtracking_problem(pattern)
    except RecursionError:
        problem = "nested too deeply"
    except Exception:  # an atomic group (?>…) crashes the analysis
        problem = "uses a construct the layer-index check does not know (e.g. an atomic group); use (\\d+)"
    return f"{excerpt(pattern, 60)}: {problem}" if problem else None


@dataclass(frozen=True)
class Selection:
    """Which tensors an assertion applies to.

    ``include``/``exclude`` are glob patterns on the full tensor name (``*`` also
    matches dots); ``ndim`` keeps tensors with that many dimensions (or any of a list);
    ``min_ndim``/``min_numel`` drop small tensors; ``depth_pattern`` is a regex whose
    first group is the layer index; ``groups`` picks model weights and/or optimizer state.
    """

    include: tuple[str, ...] = spec_key(
        ("*",),
        "glob(s) on the full tensor name ('*' matches dots too)",
        what=GLOBS,
        max_items=MAX_GLOBS,
        max_length=MAX_GLOB,
    )
    exclude: tuple[str, ...] = spec_key(
        (), "glob(s) of tensors to drop", what=GLOBS, max_items=MAX_GLOBS, max_length=MAX_GLOB
    )
    ndim: tuple[int, ...] = spec_key(
        (), "keep tensors with exactly these numbers of dimensions (default: any)", minimum=0
    )
    min_ndim: int = spec_key(0, "drop tensors with fewer dimensions", minimum=0)
    min_numel: int = spec_key(1, "drop tensors with fewer elements", minimum=0)
    depth_pattern: str = spec_key(
        DEFAULT_DEPTH_PATTERN,
        "regex whose first group is the layer index (depth), decimal digits only; the role is the name with it as '*'",
        what=f"a regex of at most {MAX_PATTERN} characters",
        max_length=MAX_PATTERN,
        loader_check=pattern_problem,
    )
    groups: tuple[Group, ...] = spec_key(("weights",), "model weights (parameters, buffers) and/or optimizer state")
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.depth_pattern))

    def matches(self, info: TensorInfo) -> bool:
        name = info.name
        if info.group not in self.groups:
            return False
        if not any(fnmatchcase(name, p) for p in self.include):
            return False
        if any(fnmatchcase(name, p) for p in self.exclude):
            return False
        nd = len(info.shape)
        if self.ndim and nd not in self.ndim:
            return False
        return nd >= self.min_ndim and info.numel >= self.min_numel

    def depth(self, name: str) -> int | None:
        """The layer index in ``name``, or None when the name has none."""
        m = self._compiled.search(name)
        index = m.group(1) if m else None
        return int(index) if index and index.isascii() and index.isdigit() else None

    def role(self, name: str) -> str:
        """The name with its layer index replaced by ``*``: tensors comparable across depth."""
        m = self._compiled.search(name)
        if not m or self.depth(name) is None:
            return name
        a, b = m.span(1)
        return name[:a] + "*" + name[b:]

    def describe(self) -> str:
        """``include=['*'], exclude=['*emb*'], min_ndim=2``: ``include``, then the shape filters
        that differ from their defaults (the depth scheme and groups are not shown)."""
        parts = [f"include={list(self.include)}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("exclude", "ndim", "min_ndim", "min_numel") and value != f.default:
                parts.append(f"{f.name}={list(value) if isinstance(value, tuple) else value}")
        return ", ".join(parts)


def depth_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot serve as a ``depth_pattern`` (None when it can): it must compile and
    have exactly one capturing group, which matches decimal digits only (e.g. ``(\\d+)``)."""
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        return f"not a valid regex: {e}"
    if compiled.groups != 1:
        return f"needs exactly one capturing group (the layer index), found {compiled.groups}"
    try:
        from re import _parser  # the stdlib's own regex parser (Python ≥ 3.11)
    except ImportError:  # pragma: no cover - Python 3.10: sre_parse
        import sre_parse as _parser  # type: ignore[no-redef]
    group = _find_group(_parser.parse(pattern))
    if group is None or not _digits_only(group):
        return "its capturing group must match decimal digits only, e.g. (\\d+) or ([0-9]+)"
    return None


def _find_group(parsed) -> list | None:
    for op, arg in parsed:
        if str(op) == "SUBPATTERN" and arg[0] == 1:
            return list(arg[3])
        for sub in _children(op, arg):
            found = _find_group(sub)
            if found is not None:
                return found
    return None


def _children(op, arg) -> list:
    name = str(op)
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        return [arg[2]]
    if name == "SUBPATTERN":
        return [arg[-1]]
    if name == "ATOMIC_GROUP":
        return [arg]
    if name == "BRANCH":
        return list(arg[1])
    if name in ("ASSERT", "ASSERT_NOT"):
        return [arg[1]]
    return []


def _digits_only(items: list) -> bool:
    """True when a parsed group can only match a non-empty run of ASCII digits."""
    if not items:
        return False
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if arg[0] < 1 or not _digits_only(list(arg[2])):
                return False
        elif name == "IN":
            if not all(_digit_set_item(o, a) for o, a in arg):
                return False
        elif name == "LITERAL":
            if not "0" <= chr(arg) <= "9":
                return False
        else:
            return False
    return True


def _digit_set_item(op, arg) -> bool:
    name = str(op)
    if name == "CATEGORY":
        return str(arg) == "CATEGORY_DIGIT"
    if name == "RANGE":
        return ord("0") <= arg[0] <= arg[1] <= ord("9")
    if name == "LITERAL":
        return "0" <= chr(arg) <= "9"
    return False


def _backtracking_problem(pattern: str) -> str | None:
    """Why matching ``pattern`` may backtrack exponentially: a repetition of something that repeats
    or branches itself, like ``(?:.*)*x`` or ``(?:a|ab)*`` (28 characters of a name take seconds)."""
    try:
        from re import _parser  # Python ≥ 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse as _parser  # type: ignore[no-redef]

    if _nested_repetition(_parser.parse(pattern), inside=False, subpattern=_parser.SubPattern):
        return (
            "repeats a repetition or an alternative, e.g. (?:.*)* or (?:\\w+\\.)+, which can take exponential "
            "time on a long name: write the parts out, or use a class such as [\\w.]*"
        )
    return None


def _nested_repetition(items, inside: bool, subpattern: type) -> bool:
    """True when a repeat (``*``, ``+``, ``{m,n}`` with n > 1) holds another repeat or a branch."""
    for op, arg in items:
        name = str(op)
        repeats = name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[1] > 1
        if inside and (repeats or name == "BRANCH"):
            return True
        if any(_nested_repetition(sub, inside or repeats, subpattern) for sub in _subpatterns(arg, subpattern)):
            return True
    return False


def _subpatterns(arg, subpattern: type) -> list:
    """The parsed sub-patterns inside a parsed item's argument (groups, repeats, branches, lookarounds)."""
    if isinstance(arg, subpattern):
        return [arg]
    if isinstance(arg, (tuple, list)):
        return [sub for a in arg for sub in _subpatterns(a, subpattern)]
    return []
