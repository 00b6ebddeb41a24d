"""Spec files: YAML → validated :class:`Spec` objects, every error naming ``file:line``.

The keys an entry takes besides its kind's parameters (:class:`EntryKeys`) and the ``select:``
keys (:class:`~pytest_weights.selection.Selection`) are typed keys (:mod:`pytest_weights.keys`),
like kind parameters are typed dataclass fields: the loader here, the JSON Schema
(:mod:`pytest_weights.schema`) and docs/kinds.md derive from the same types. An entry gets every
static check first; what no schema can say is a :class:`LoaderOnlyError`.

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

import math
import re
import typing
from collections.abc import Hashable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .assertions import REGISTRY, Assertion
from .assertions.base import ParamError, build, params, suggest
from .errors import SpecError, describe, excerpt
from .keys import BadValue, LoaderOnly, TypedKey, convert, loader_check, spec_key, typed_keys
from .selection import Group, Selection

SPEC_SUFFIXES = (".weights.yaml", ".weights.yml")
TOP_KEYS = ("version", "description", "defaults", "assertions")
#: Longest assertion name (a pytest test id).
MAX_NAME = 200


def _printable(name: Any) -> str | None:
    return None if str(name).isprintable() else f"must be printable text, got {excerpt(name)}"


@dataclass(frozen=True)
class EntryKeys:
    """The keys every assertion entry takes besides its kind's parameters.

    Typed keys (:mod:`pytest_weights.keys`): the loader, the JSON Schema and docs/kinds.md
    derive from these fields; those marked ``in_defaults`` may also be set in ``defaults``.
    """

    name: str | int | float | None = spec_key(
        None,
        "test id of the assertion (default: its kind; made unique)",
        max_length=MAX_NAME,
        what=f"printable text (or a number) of at most {MAX_NAME} characters",
        loader_check=_printable,
    )
    kind: str = spec_key(None, "the assertion kind (required)", what="the name of an assertion kind")
    select: Selection | None = spec_key(  # noqa: RUF009 - a field, like dataclasses.field
        None,
        "which tensors the assertion looks at (merged key by key over defaults.select)",
        what="a mapping of the select: keys (or null)",
        in_defaults=True,
    )
    view: Literal["weights", "delta"] = spec_key(
        "weights", "weights, or delta: ΔW = W − W_ref (--reference) or (α/r)·B·A of a LoRA adapter", in_defaults=True
    )
    if_empty: Literal["fail", "skip"] = spec_key(
        "fail",
        "a selection matching no tensor: fail (default), or skip the item saying so "
        "(for specs meant for many architectures)",
        in_defaults=True,
    )


#: The typed keys of an entry and of ``select:``, by name.
ENTRY: dict[str, TypedKey] = typed_keys(EntryKeys)
SELECT: dict[str, TypedKey] = typed_keys(Selection)
ENTRY_KEYS = tuple(ENTRY)
SELECT_KEYS = tuple(SELECT)
#: Entry keys that ``defaults`` may hold too.
DEFAULT_KEYS = tuple(n for n, k in ENTRY.items() if k.meta.in_defaults)
#: Which tensors an assertion looks at: the weights, or ΔW against the reference / a LoRA adapter.
VIEWS: tuple[str, ...] = typing.get_args(ENTRY["view"].type)
#: What a selection matching no tensor is: a failure (the default), or a skip (e.g. bundled specs).
IF_EMPTY: tuple[str, ...] = typing.get_args(ENTRY["if_empty"].type)
#: What ``select: {groups: ...}`` may name: model weights and/or optimizer state.
GROUPS: tuple[str, ...] = typing.get_args(Group)
BUNDLED_DIRS = (Path(__file__).parent / "specs", Path(__file__).parent.parent / "specs")


class LoaderOnlyError(SpecError):
    """A spec error no JSON Schema can express, found by the loader only, after every static check
    of the entry passed: a kind's parameter consistency (its ``validate``, e.g. ``min ≤ max``), a
    ``depth_pattern`` that does not compile or capture a layer index (or backtracks exponentially),
    a NaN parameter (JSON has no NaN), a name with characters that are not printable."""


# Limits on hostile or broken input, enforced while reading and parsing (never after expanding):
#: Largest spec accepted, in bytes (characters for text given to :func:`parse_spec`). The YAML
#: parser is pure Python (about 150 KB/s on dense specs: 128 KiB load in under a second); bundled
#: specs are under 4 KB.
MAX_SPEC_BYTES = 128 * 1024
#: Deepest nesting of mappings and lists (a spec needs five levels).
MAX_DEPTH = 32
#: Most aliases (``*name``) in a spec, and most material they may repeat in all (nodes plus
#: characters of scalars): an alias bomb ("billion laughs") is refused before it is expanded.
MAX_ALIASES = 100
MAX_ALIAS_EXPANSION = 100_000
#: Longest glob and depth_pattern, most globs per selection key: see :mod:`pytest_weights.selection`
#: (``MAX_GLOB``, ``MAX_GLOBS``, ``MAX_PATTERN``); longest assertion name: :data:`MAX_NAME`.
#: Largest integer in a spec (64 bits signed).
MAX_INT = 2**63 - 1
#: Characters YAML does not allow in a file (the same set as PyYAML's reader): control characters
#: other than tab, newline and carriage return, surrogates, U+FFFE/U+FFFF.
NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: YAML line breaks (line numbers of errors found before parsing agree with the parser's).
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that enforces :data:`MAX_DEPTH` and the alias limits while composing,
    so that a deep or self-expanding document is refused before it is built."""

    def __init__(self, stream: str, name: str = "<spec>") -> None:
        super().__init__(stream)
        self.name = name
        self._depth = 0
        self._aliases = 0
        self._expansion = 0
        self._complete: set[str] = set()  # anchors whose node is fully composed
        self._costs: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SpecError(self.name, event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            self._complete.add(event.anchor)
        return node

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # PyYAML reports the undefined alias
        line = event.start_mark.line + 1
        if event.anchor not in self._complete:
            raise SpecError(self.name, line, f"alias *{excerpt(event.anchor, 40)} refers to a value that contains it")
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise SpecError(self.name, line, f"more than {MAX_ALIASES} aliases (*name)")
        self._expansion += self._cost(node)
        if self._expansion > MAX_ALIAS_EXPANSION:
            raise SpecError(self.name, line, "aliases repeat too much (an alias bomb?): refused before expanding")

    def _cost(self, node: yaml.Node) -> int:
        """How much ``node`` adds when repeated: its nodes and scalar characters (memoised, capped)."""
        cost = self._costs.get(id(node))
        if cost is None:
            if isinstance(node, yaml.ScalarNode):
                cost = 1 + len(node.value)
            elif isinstance(node, yaml.SequenceNode):
                cost = 1 + sum(self._cost(n) for n in node.value)
            else:
                cost = 1 + sum(self._cost(k) + self._cost(v) for k, v in node.value)
            cost = min(cost, MAX_ALIAS_EXPANSION + 1)
            self._costs[id(node)] = cost
        return cost

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (SpecError, yaml.YAMLError):
            raise
        except Exception as e:  # a scalar the YAML library cannot build, e.g. the date 2001-13-45
            raise SpecError(self.name, node.start_mark.line + 1, f"invalid value: {describe(e, 160)}") from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Map:
    m = _Map(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError(loader.name, line, "merge keys (<<) are not supported: put shared values in 'defaults'")
        if not isinstance(key_node, yaml.ScalarNode):
            what = "mapping" if isinstance(key_node, yaml.MappingNode) else "list"
            raise SpecError(loader.name, line, f"a key must be a plain value (a name), not a {what}")
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise SpecError(loader.name, line, f"a key must be a plain value (a name), got {excerpt(key)}")
        if key in m:
            raise SpecError(loader.name, line, f"duplicate key {excerpt(key)}")
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = line
    return m


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """An integer, refused beyond 64 bits (Python would build, and print, a million digits)."""
    line = node.start_mark.line + 1
    if len(node.value) > 100:  # 64 bits are at most 66 characters (0b…); Python limits decimal digits
        raise SpecError(loader.name, line, f"integer too large: {excerpt(node.value, 40)}")
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # e.g. !!int x
        raise SpecError(loader.name, line, f"not an integer: {excerpt(node.value, 40)}") from None
    if abs(value) > MAX_INT:
        raise SpecError(loader.name, line, f"integer too large: {excerpt(node.value, 40)}")
    return value


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _line_of(text: str, index: int) -> int:
    """The 1-based line of ``text[index]``, counting line breaks as YAML does."""
    return len(LINE_BREAK.findall(text, 0, index)) + 1


def _check_text(text: str, path: str) -> None:
    """Refuse text too large to parse quickly, or holding characters YAML does not allow."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(path, None, f"larger than {MAX_SPEC_BYTES // 1024} KiB: a spec is a few KiB of YAML")
    bad = NON_PRINTABLE.search(text)
    if bad:
        index = bad.start()
        column = index - max(text.rfind("\n", 0, index), text.rfind("\r", 0, index))
        raise SpecError(
            path,
            _line_of(text, index),
            f"control character U+{ord(bad.group()):04X} at column {column}: a spec is printable text",
        )


def load_yaml(text: str, path: str = "<spec>") -> Any:
    """Parse spec text as YAML within the limits above; any failure is a :class:`SpecError`
    naming ``path`` and, when known, the line."""
    _check_text(text, path)
    loader = None
    try:
        loader = _Loader(text, path)
        return loader.get_single_data()
    except SpecError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or ""
        raise SpecError(path, mark.line + 1 if mark else None, f"invalid YAML: {_cut(problem)}") from None
    except yaml.YAMLError as e:
        raise SpecError(path, None, f"invalid YAML: {_cut(str(e))}") from None
    except Exception as e:  # RecursionError, MemoryError, a bug of the YAML library
        raise SpecError(path, _mark_line(loader), f"cannot parse: {describe(e, 160)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _cut(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mark_line(loader: _Loader | None) -> int | None:
    try:
        return loader.get_mark().line + 1 if loader is not None else None
    except Exception:
        return None


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
    return parse_spec(read_spec_text(path), str(path))


def read_spec_text(path: Path) -> str:
    """The text of a spec file: at most :data:`MAX_SPEC_BYTES`, UTF-8 (else a :class:`SpecError`
    naming the line of the first bad byte)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(path, None, f"cannot read spec: {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(path, None, f"larger than {MAX_SPEC_BYTES // 1024} KiB: a spec is a few KiB of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = _line_of(data[: e.start].decode("utf-8"), e.start)
        raise SpecError(path, line, f"not UTF-8 text: byte 0x{data[e.start]:02x} ({e.reason})") from None


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    """A :class:`Spec` from YAML text; a broken file raises :class:`SpecError`, broken entries
    become :class:`InvalidEntry`."""
    doc = load_yaml(text, path)
    if not isinstance(doc, _Map):
        raise SpecError(path, 1, "a spec must be a mapping with an 'assertions' list")
    _check_keys(doc, TOP_KEYS, path, "top-level key")
    _check_version(doc, path)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise SpecError(path, doc.key_lines["description"], f"'description' must be text, got {excerpt(description)}")
    defaults = doc.get("defaults")
    if defaults is None:
        defaults = _Map()
    if not isinstance(defaults, _Map):
        raise SpecError(path, doc.key_lines["defaults"], "'defaults' must be a mapping")
    _check_defaults(defaults, path)
    items = doc.get("assertions")
    if not isinstance(items, list) or not items:
        line = doc.key_lines.get("assertions", doc.line)
        raise SpecError(path, line, "'assertions' must be a non-empty list of mappings with a 'kind'")
    entries: list[AssertionSpec | InvalidEntry] = []
    used: dict[str, int] = {}
    for i, raw in enumerate(items):
        line = raw.line if isinstance(raw, _Map) else doc.key_lines["assertions"]
        name = _unique(_default_name(raw, i), used)
        try:
            entries.append(_entry(raw, defaults, name, path, line))
        except SpecError as e:
            entries.append(InvalidEntry(name, e, path, e.line or line))
    return Spec(path, "" if description is None else str(description), tuple(entries))


def _check_version(doc: _Map, path: str) -> None:
    if "version" not in doc:
        return
    version = doc["version"]
    if type(version) is not int:  # not True, 1.0 or "1"
        raise SpecError(path, doc.key_lines["version"], f"'version' must be the integer 1, got {excerpt(version)}")
    if version != 1:
        raise SpecError(path, doc.key_lines["version"], f"unsupported spec version {version} (this plugin reads 1)")


def _valid_name(value: Any) -> bool:
    """True for a usable assertion name: text or a number, printable, at most :data:`MAX_NAME` long."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    text = str(value)
    return len(text) <= MAX_NAME and text.isprintable()


def _default_name(raw: Any, index: int) -> str:
    """An entry's test id before it is made unique: its name, else its kind, else ``entryN``."""
    if isinstance(raw, Mapping):
        for key in ("name", "kind"):
            value = raw.get(key)
            if value and _valid_name(value) and (key == "name" or isinstance(value, str)):
                return str(value)
    return f"entry{index + 1}"


def _unique(name: str, used: dict[str, int]) -> str:
    """``name``, or ``name-2``, ``name-3`` … when taken (``used`` maps each name to its next suffix)."""
    out = name
    if name in used:
        k = used[name]
        while (out := f"{name}-{k}") in used:
            k += 1
        used[name] = k + 1
    used.setdefault(out, 2)
    return out


def _check_keys(m: _Map, allowed: tuple[str, ...], path: str, what: str) -> None:
    for key in m:
        if key not in allowed:
            raise SpecError(
                path,
                m.key_lines.get(key, m.line),
                f"unknown {what} {excerpt(key)}{suggest(str(key), allowed)}; expected one of: {', '.join(allowed)}",
            )


def _check_defaults(defaults: _Map, path: str) -> None:
    """Refuse a default that no entry key or kind takes, or a parameter no kind taking it accepts."""
    owners: dict[str, list[type[Assertion]]] = {}
    for cls in REGISTRY.values():
        for f in params(cls):
            owners.setdefault(f.name, []).append(cls)
    known = {*DEFAULT_KEYS, *owners}
    for key, value in defaults.items():
        line = defaults.key_lines.get(key, defaults.line)
        if key not in known:
            raise SpecError(
                path,
                line,
                f"unknown default {excerpt(key)}{suggest(str(key), known)}: "
                f"defaults hold {', '.join(map(repr, DEFAULT_KEYS))} and parameters of assertion kinds",
            )
        if key in owners and not any(_converts(cls, key, value) for cls in owners[key]):
            kinds = ", ".join(cls.kind for cls in owners[key])
            problem = _convert_problem(owners[key][0], key, value)
            raise SpecError(path, line, f"default {problem} (for kinds: {kinds})")


def _converts(cls: type[Assertion], name: str, value: Any) -> bool:
    return _convert_problem(cls, name, value) is None


def _convert_problem(cls: type[Assertion], name: str, value: Any) -> str | None:
    """Why ``value`` is not of the type of ``cls``'s parameter ``name`` (None: it is)."""
    from .assertions.base import _convert, unknown_statistic

    try:
        _convert(name, value, typing.get_type_hints(cls)[name])
    except ParamError as e:
        return e.message
    choices = string_choices().get(name)
    if choices is not None and isinstance(value, str) and value not in choices:
        return unknown_statistic(value)
    return None


def string_choices() -> dict[str, tuple[str, ...]]:
    """Kind parameters typed ``str`` that take a fixed set of names (each kind's ``validate`` refuses
    others): ``stat``, the statistics. The JSON Schema shows them as enums."""
    from .stats.scalars import SCALARS

    return {"stat": tuple(SCALARS)}


def _entry(raw: Any, defaults: _Map, name: str, path: str, line: int) -> AssertionSpec:
    """Validate one entry: every static check (types, choices, limits) first, then the checks only
    the loader can make (raised as :class:`LoaderOnlyError`)."""
    if not isinstance(raw, _Map):
        raise SpecError(path, line, "each assertion must be a mapping with a 'kind'")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(path, raw.key_lines[key], f"unknown key {excerpt(key)}: keys are names, e.g. 'kind'")
    later: list[LoaderOnlyError] = []  # found by the loader only: raised after the static checks
    if raw.get("name") is not None:
        _typed(ENTRY["name"], raw["name"], path, raw.key_lines["name"], later)
    cls = _kind(raw, name, path, line)
    selection = _selection(defaults, raw, path, later)
    view = _common("view", raw, defaults, path, line)
    if_empty = _common("if_empty", raw, defaults, path, line)
    assertion = _assertion(cls, raw, defaults, path, line)
    if later:
        raise later[0]
    return AssertionSpec(name, assertion, Selection(**selection), path, line, view, if_empty)


def _typed(k: TypedKey, value: Any, path: str, line: int, later: list[LoaderOnlyError]) -> Any:
    """``value`` converted by typed key ``k``; a static problem raises, a loader-only one is kept in ``later``."""
    try:
        out = convert(k, value)
    except BadValue as e:
        raise SpecError(path, line, str(e)) from None
    try:
        loader_check(k, out)
    except LoaderOnly as e:
        later.append(LoaderOnlyError(path, line, str(e)))
    return out


def _kind(raw: _Map, name: str, path: str, line: int) -> type[Assertion]:
    """The assertion class an entry's ``kind`` names."""
    kind = raw.get("kind")
    kinds = ", ".join(sorted(REGISTRY))
    if kind is None:
        raise SpecError(path, line, f"assertion {excerpt(name)} has no 'kind'; kinds: {kinds}")
    if not isinstance(kind, str):
        raise SpecError(path, raw.key_lines["kind"], f"'kind' must name an assertion kind, got {excerpt(kind)}")
    if kind not in REGISTRY:
        raise SpecError(
            path,
            raw.key_lines["kind"],
            f"unknown assertion kind {excerpt(kind)}{suggest(kind, REGISTRY)}; kinds: {kinds}",
        )
    return REGISTRY[kind]


def _assertion(cls: type[Assertion], raw: _Map, defaults: _Map, path: str, line: int) -> Assertion:
    """The entry's assertion from its parameters over the defaults'. Unknown, missing or mistyped
    parameters are static errors; a kind's consistency check and NaN are :class:`LoaderOnlyError`."""
    names = {f.name for f in params(cls)}
    values = {k: v for k, v in defaults.items() if k in names}
    values.update({k: v for k, v in raw.items() if k not in ENTRY_KEYS})
    try:
        assertion = build(cls, values)
    except ParamError as e:
        key_line = raw.key_lines.get(e.key, line) if e.key else line
        if e.key and e.key not in raw:
            key_line = defaults.key_lines.get(e.key, key_line)
        missing = any(f.name not in values for f in params(cls) if _required(f))
        error = SpecError if e.key is not None or missing else LoaderOnlyError
        raise error(path, key_line, e.message) from None
    for f in fields(assertion):  # type: ignore[arg-type]
        value = getattr(assertion, f.name)
        if any(isinstance(v, float) and math.isnan(v) for v in (value if isinstance(value, tuple) else (value,))):
            where = raw.key_lines.get(f.name) or defaults.key_lines.get(f.name) or line
            raise LoaderOnlyError(path, where, f"parameter {f.name!r} is NaN: give a number")
    return assertion


def _required(f: Any) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _common(name: str, raw: _Map, defaults: _Map, path: str, line: int) -> Any:
    """An entry key that ``defaults`` may hold: the entry's value, else the defaults', else its default.
    A value in ``defaults`` is checked even where an entry overrides it."""
    k = ENTRY[name]
    value = k.default
    for owner in (defaults, raw):
        if name in owner:
            value = _typed(k, owner[name], path, owner.key_lines.get(name) or line, [])
    return value


def _selection(defaults: _Map, raw: _Map, path: str, later: list[LoaderOnlyError]) -> dict[str, Any]:
    """The keys of ``defaults.select`` with the entry's ``select`` merged over them, converted."""
    merged: dict[str, Any] = {}
    for owner in (defaults, raw):
        src = owner.get("select")
        if src is None:
            continue
        where = owner.key_lines.get("select", owner.line)
        if not isinstance(src, _Map):
            raise SpecError(path, where, f"'select' must be a mapping of {', '.join(SELECT_KEYS)}")
        for key, value in src.items():
            kline = src.key_lines.get(key, where)
            if key not in SELECT:
                raise SpecError(
                    path,
                    kline,
                    f"unknown selection key {excerpt(key)}{suggest(str(key), SELECT_KEYS)}; "
                    f"expected one of: {', '.join(SELECT_KEYS)}",
                )
            merged[key] = _typed(SELECT[key], value, path, kline, later)
    return merged
