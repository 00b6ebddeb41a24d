"""Spec files: YAML → validated :class:`Spec` objects, every error naming ``file:line``.

A spec file::

    description: Health checks for any transformer checkpoint
    defaults:                  # inherited by every assertion (selection and parameters)
      select: {include: ["*.weight"], min_ndim: 2}
      tol: 0.05
    assertions:
      - name: weights-gaussian # optional; defaults to the kind (made unique)
        kind: gaussian_ks
        select: {exclude: ["*embeddings*"]}   # merged key by key over defaults.select
        if_empty: skip         # a selection matching nothing skips the item (default: fail)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .assertions import REGISTRY, Assertion
from .assertions.base import ParamError, build, suggest
from .errors import SpecError
from .selection import Selection

SPEC_SUFFIXES = (".weights.yaml", ".weights.yml")
TOP_KEYS = ("version", "description", "defaults", "assertions")
ENTRY_KEYS = ("name", "kind", "select", "view", "if_empty")
#: Which tensors an assertion looks at: the weights, or ΔW against the reference / a LoRA adapter.
VIEWS = ("weights", "delta")
#: What a selection matching no tensor is: a failure (the default), or a skip (e.g. bundled specs).
IF_EMPTY = ("fail", "skip")
#: Entry keys that ``defaults`` may hold too, with their choices and default.
CHOICE_KEYS: dict[str, tuple[str, ...]] = {"view": VIEWS, "if_empty": IF_EMPTY}
SELECT_KEYS = tuple(f.name for f in fields(Selection) if f.init)
BUNDLED_DIRS = (Path(__file__).parent / "specs", Path(__file__).parent.parent / "specs")


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise SpecError(loader.name, key_node.start_mark.line + 1, f"a key must be a plain value, got {key!r}")
        if key in m:
            raise SpecError(loader.name, key_node.start_mark.line + 1, f"duplicate key {key!r}")
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = key_node.start_mark.line + 1
    return m


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class AssertionSpec:
    """One assertion of a spec: a kind with parameters, a selection and its location."""

    name: str
    assertion: Assertion
    selection: Selection
    path: str
    line: int
    view: str = "weights"
    #: "fail" (default) or "skip": what a selection matching no tensor is.
    if_empty: str = "fail"

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class InvalidEntry:
    """An assertion entry that failed validation; reported as an error, others still run."""

    name: str
    error: SpecError
    path: str
    line: int


@dataclass(frozen=True)
class Spec:
    path: str
    description: str
    entries: tuple[AssertionSpec | InvalidEntry, ...]

    @property
    def assertions(self) -> tuple[AssertionSpec, ...]:
        return tuple(e for e in self.entries if isinstance(e, AssertionSpec))

    @property
    def errors(self) -> tuple[SpecError, ...]:
        return tuple(e.error for e in self.entries if isinstance(e, InvalidEntry))


def bundled_specs() -> dict[str, Path]:
    """Specs shipped with the package, by name (``default``, …)."""
    for d in BUNDLED_DIRS:
        if d.is_dir():
            return {p.name.split(".")[0]: p for p in sorted(d.glob("*.weights.yaml"))}
    return {}


def resolve_spec(ref: str | Path) -> Path:
    """A spec path, or the name of a bundled spec (``default``)."""
    p = Path(ref)
    if p.is_file():
        return p
    bundled = bundled_specs()
    if str(ref) in bundled:
        return bundled[str(ref)]
    hint = suggest(str(ref), bundled)
    raise SpecError(ref, None, f"no such spec file or bundled spec{hint}; bundled: {', '.join(bundled)}")


def load_spec(ref: str | Path) -> Spec:
    """Load a spec file; a broken file raises :class:`SpecError`, broken entries are kept
    as :class:`InvalidEntry` so the valid ones still run."""
    path = resolve_spec(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(path, None, f"cannot read spec: {e}") from None
    return parse_spec(text, str(path))


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    loader = _Loader(text)
    loader.name = path
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(path, line, f"invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise SpecError(path, None, f"invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(doc, _Map):
        raise SpecError(path, 1, "a spec must be a mapping with an 'assertions' list")
    _check_keys(doc, TOP_KEYS, path, "top-level key")
    if doc.get("version", 1) != 1:
        raise SpecError(path, doc.key_lines["version"], "unsupported spec version (this plugin reads version 1)")
    defaults = doc.get("defaults") or _Map()
    if not isinstance(defaults, dict):
        raise SpecError(path, doc.key_lines["defaults"], "'defaults' must be a mapping")
    _check_defaults(defaults, path)
    items = doc.get("assertions")
    if not isinstance(items, list) or not items:
        line = doc.key_lines.get("assertions", doc.line)
        raise SpecError(path, line, "'assertions' must be a non-empty list of mappings with a 'kind'")
    entries, used = [], set()
    for i, raw in enumerate(items):
        line = raw.line if isinstance(raw, _Map) else doc.key_lines["assertions"]
        base = raw.get("name") if isinstance(raw, dict) else None
        name = _unique(
            str(base or (raw.get("kind") if isinstance(raw, dict) else None) or f"entry{i + 1}"),
            used,
        )
        try:
            entries.append(_entry(raw, defaults, name, path, line))
        except SpecError as e:
            entries.append(InvalidEntry(name, e, path, e.line or line))
    return Spec(path, str(doc.get("description") or ""), tuple(entries))


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 2
    while out in used:
        out, k = f"{name}-{k}", k + 1
    used.add(out)
    return out


def _check_keys(m: _Map, allowed: tuple[str, ...], path: str, what: str) -> None:
    for key in m:
        if key not in allowed:
            raise SpecError(
                path,
                m.key_lines.get(key, m.line),
                f"unknown {what} {key!r}{suggest(str(key), allowed)}; expected one of: {', '.join(allowed)}",
            )


def _check_defaults(defaults: Mapping[str, Any], path: str) -> None:
    known = {"select", *CHOICE_KEYS} | {f.name for cls in REGISTRY.values() for f in fields(cls) if f.init}  # type: ignore[arg-type]
    for key in defaults:
        if key not in known:
            line = defaults.key_lines.get(key) if isinstance(defaults, _Map) else None
            raise SpecError(
                path,
                line,
                f"unknown default {key!r}{suggest(str(key), known)}: "
                "defaults hold 'select', 'view', 'if_empty' and parameters of assertion kinds",
            )


def _entry(raw: Any, defaults: Mapping[str, Any], name: str, path: str, line: int) -> AssertionSpec:
    if not isinstance(raw, _Map):
        raise SpecError(path, line, "each assertion must be a mapping with a 'kind'")
    kind = raw.get("kind")
    if kind is None:
        raise SpecError(path, line, f"assertion {name!r} has no 'kind'; kinds: {', '.join(sorted(REGISTRY))}")
    if kind not in REGISTRY:
        raise SpecError(
            path,
            raw.key_lines["kind"],
            f"unknown assertion kind {kind!r}{suggest(str(kind), REGISTRY)}; kinds: {', '.join(sorted(REGISTRY))}",
        )
    cls = REGISTRY[kind]
    selection = _selection(defaults.get("select"), raw.get("select"), raw, defaults, path)
    param_names = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
    params = {k: v for k, v in defaults.items() if k in param_names}
    params.update({k: v for k, v in raw.items() if k not in ENTRY_KEYS})
    try:
        assertion = build(cls, params)
    except ParamError as e:
        key_line = raw.key_lines.get(e.key, line) if e.key else line
        if e.key and e.key not in raw and isinstance(defaults, _Map):
            key_line = defaults.key_lines.get(e.key, key_line)
        raise SpecError(path, key_line, e.message) from None
    view = _choice("view", raw, defaults, path, line)
    if_empty = _choice("if_empty", raw, defaults, path, line)
    return AssertionSpec(name, assertion, selection, path, line, view, if_empty)


def _choice(key: str, raw: _Map, defaults: Mapping[str, Any], path: str, line: int) -> str:
    """The value of a :data:`CHOICE_KEYS` key: the entry's, else the defaults', else the first choice."""
    choices = CHOICE_KEYS[key]
    value = raw.get(key, defaults.get(key, choices[0]))
    if isinstance(value, str) and value in choices:
        return value
    where = raw.key_lines.get(key) or (defaults.key_lines.get(key) if isinstance(defaults, _Map) else None)
    raise SpecError(path, where or line, f"'{key}' must be one of {', '.join(choices)}, got {value!r}")


def _selection(base: Any, over: Any, raw: _Map, defaults: Any, path: str) -> Selection:
    merged: dict[str, Any] = {}
    for src, owner in ((base, defaults), (over, raw)):
        if src is None:
            continue
        where = owner.key_lines.get("select", owner.line) if isinstance(owner, _Map) else None
        if not isinstance(src, dict):
            raise SpecError(path, where, "'select' must be a mapping")
        for key, value in src.items():
            kline = src.key_lines.get(key, where) if isinstance(src, _Map) else where
            if key not in SELECT_KEYS:
                raise SpecError(
                    path,
                    kline,
                    f"unknown selection key {key!r}{suggest(str(key), SELECT_KEYS)}; "
                    f"expected one of: {', '.join(SELECT_KEYS)}",
                )
            merged[key] = _select_value(key, value, path, kline)
    try:
        return Selection(**merged)
    except Exception as e:  # bad regex in depth_pattern
        raise SpecError(path, raw.line, f"invalid selection: {e}") from None


def _select_value(key: str, value: Any, path: str, line: int | None) -> Any:
    if key in ("include", "exclude", "groups"):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise SpecError(path, line, f"'{key}' must be a glob or a list of globs")
        return tuple(items)
    if key == "ndim":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise SpecError(path, line, "'ndim' must be an integer or a list of integers")
        return tuple(items)
    if key in ("min_ndim", "min_numel"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpecError(path, line, f"'{key}' must be a non-negative integer")
        return value
    if key == "depth_pattern":
        import re

        if not isinstance(value, str):
            raise SpecError(path, line, "'depth_pattern' must be a regex string")
        try:
            if re.compile(value).groups < 1:
                raise SpecError(path, line, "'depth_pattern' needs a group capturing the layer index")
        except re.error as e:
            raise SpecError(path, line, f"'depth_pattern' is not a valid regex: {e}") from None
        return value
    return value
