"""A JSON Schema (draft 2020-12) of the spec format, generated from the assertion registry.

Editors validate and autocomplete ``*.weights.yaml`` files with it (VS Code's YAML
extension, JetBrains IDEs, any yaml-language-server client), e.g. with a first line::

    # yaml-language-server: $schema=weights.schema.json

Print it with ``python -m pytest_weights.schema > weights.schema.json``. Like
``docs/kinds.md`` it is derived from the same typed dataclasses the loader checks with:
kind parameters (names, types, ``Literal`` choices, defaults, docstrings), the ``select:``
keys (:class:`~pytest_weights.selection.Selection`) and the common entry keys
(:class:`~pytest_weights.spec.EntryKeys`) with their limits, so it cannot drift from what
:func:`pytest_weights.spec.parse_spec` accepts: tests/test_spec_schema_agree.py checks that
both give the same verdict on mutated specs. The loader also checks what a schema cannot say
(:class:`~pytest_weights.spec.LoaderOnlyError`: parameter consistency such as ``min ≤ max``,
``depth_pattern`` regexes, NaN) and reports ``file:line``.

:func:`schema_errors` validates a spec text against the schema with the ``jsonschema``
package (an optional dependency) and names ``file:line`` for each problem.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from .assertions import REGISTRY
from .assertions.base import params
from .keys import TypedKey
from .selection import Selection
from .spec import DEFAULT_KEYS, ENTRY, ENTRY_KEYS, SELECT, string_choices
from .stats.scalars import SCALARS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: File name under which the schema is written next to specs (``$schema=weights.schema.json``).
SCHEMA_FILENAME = "weights.schema.json"

#: A number as PyYAML (YAML 1.1) leaves it a string, e.g. ``1e-6``: the loader converts these
#: with Python's ``float()``, whose syntax this is (digits grouped by single underscores, inf, nan).
_DIGITS = r"\d(?:_?\d)*"
_NUMBER_STRING = (
    rf"^\s*[-+]?(?:(?:{_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}|{_DIGITS})(?:[eE][-+]?{_DIGITS})?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$"
)
#: Parameters of a kind that take a fixed set of strings although typed ``str`` (checked by
#: the kind's ``validate``): shown as enums so editors complete them.
_STRING_CHOICES: dict[str, tuple[str, ...]] = string_choices()


# ---------------------------------------------------------------------------- types


def type_schema(tp: Any, param: str = "") -> dict[str, Any]:
    """The JSON Schema of a parameter annotation, accepting what ``assertions.base._convert`` accepts."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(a, param) for a in typing.get_args(tp)]
        return {"anyOf": options}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin is tuple:
        item = type_schema(typing.get_args(tp)[0], param)
        # the loader takes a list, or a single value as a list of one
        return {"anyOf": [{"type": "array", "items": item}, item]}
    if tp is type(None):
        return {"type": "null"}
    if tp is float:
        return {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": _NUMBER_STRING, "description": "a number PyYAML reads as text (1e-6)"},
            ]
        }
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is str:
        if param in _STRING_CHOICES:
            choices = _STRING_CHOICES[param]
            out: dict[str, Any] = {"type": "string", "enum": list(choices)}
            if param == "stat":
                out["enumDescriptions"] = [SCALARS[c].description for c in choices]
            return out
        return {"type": "string"}
    return {}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return dataclasses.MISSING
    return list(value) if isinstance(value, tuple) else value


def key_schema(k: TypedKey) -> dict[str, Any]:
    """The JSON Schema of a typed key (:mod:`pytest_weights.keys`): its type, limits, default and doc."""
    schema = _limit(type_schema(k.type), k)
    if k.default is not None:
        schema["default"] = list(k.default) if isinstance(k.default, tuple) else k.default
    return {**schema, "description": k.meta.doc}


def _limit(schema: dict[str, Any], k: TypedKey) -> dict[str, Any]:
    """``schema`` with ``k``'s limits on each integer (minimum), text (maxLength) and list (maxItems)."""
    out = dict(schema)
    for word in ("anyOf",):
        if word in out:
            out[word] = [_limit(s, k) for s in out[word]]
    if "items" in out:
        out["items"] = _limit(out["items"], k)
    kind = out.get("type")
    if kind == "integer" and k.meta.minimum is not None:
        out["minimum"] = k.meta.minimum
    if kind == "string" and k.meta.max_length is not None:
        out["maxLength"] = k.meta.max_length
    if kind == "array" and k.meta.max_items is not None:
        out["maxItems"] = k.meta.max_items
    return out


def _markdown(text: str) -> str:
    """reST inline literals (````x````) and roles (``:mod:`x```) as Markdown code."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _mentions(doc: str, name: str) -> str:
    """The first sentence of ``doc`` that mentions ``name`` as a literal, else ''."""
    flat = " ".join(doc.split())
    for sentence in re.split(r"(?<=[.;:])\s+(?=[A-Z`(])", flat):
        if f"``{name}``" in sentence:
            return _markdown(sentence)
    return ""


def kind_schema(kind: str) -> dict[str, Any]:
    """The schema of one assertion entry of ``kind``: its parameters plus name/kind/select/view/if_empty."""
    cls = REGISTRY[kind]
    hints = typing.get_type_hints(cls)
    doc = inspect.cleandoc(cls.__doc__ or "")
    summary = doc.split("\n\n")[0].replace("\n", " ")
    props = _entry_props()
    props["kind"] = {"const": kind, "description": _markdown(summary)}
    for f in params(cls):
        schema = type_schema(hints[f.name], f.name)
        default = _default(f)
        typename = _typename(hints[f.name])
        note = _mentions(doc, f.name)
        if default is dataclasses.MISSING:
            text = f"{typename}, required"
        else:
            schema["default"] = default
            text = f"{typename}, default {json.dumps(default, ensure_ascii=False)}"
        schema["description"] = f"{kind}.{f.name} ({text})" + (f": {note}" if note else "")
        props[f.name] = schema
    scope = " Run scope: judged over the checkpoints of a training run." if cls.scope == "run" else ""
    ref = " Needs `--reference`." if cls.needs_reference else ""
    return {
        "title": kind,
        "description": _markdown(summary) + scope + ref,
        "markdownDescription": _markdown(doc) + ("\n\n" + (scope + ref).strip() if scope or ref else ""),
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }


def _typename(tp: Any) -> str:
    from .assertions.base import _typename as typename

    return typename(tp)


def _required() -> dict[str, list[str]]:
    """Parameter name → kinds that need it (no default)."""
    out: dict[str, list[str]] = {}
    for kind in sorted(REGISTRY):
        for f in params(REGISTRY[kind]):
            if _default(f) is dataclasses.MISSING:
                out.setdefault(f.name, []).append(kind)
    return out


def _entry_props() -> dict[str, Any]:
    """The common entry keys (:class:`pytest_weights.spec.EntryKeys`) as references to ``$defs``."""
    return {name: {"$ref": f"#/$defs/{name}"} for name in ENTRY_KEYS}


def _common_defs() -> dict[str, Any]:
    """``$defs`` of the common entry keys (but ``kind``, whose choices are the registry's) and ``select``."""
    out = {name: key_schema(k) for name, k in ENTRY.items() if name not in ("kind", "select")}
    out["select"] = _select_schema()
    return out


def _select_schema() -> dict[str, Any]:
    """``select:`` from the typed fields of :class:`~pytest_weights.selection.Selection`."""
    doc = " ".join(inspect.cleandoc(Selection.__doc__ or "").split())
    return {
        "type": ["object", "null"],
        "description": f"{ENTRY['select'].meta.doc}. {doc}",
        "properties": {name: key_schema(k) for name, k in SELECT.items()},
        "additionalProperties": False,
    }


def _defaults_schema(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    by_param: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for kind, schema in kinds.items():
        for name, prop in schema["properties"].items():
            if name not in ENTRY_KEYS:
                by_param.setdefault(name, []).append((kind, prop))
    props: dict[str, Any] = {name: {"$ref": f"#/$defs/{name}"} for name in DEFAULT_KEYS}
    for name in sorted(by_param):
        variants: list[dict[str, Any]] = []
        for _, prop in by_param[name]:
            bare = {k: v for k, v in prop.items() if k not in ("description", "default")}
            if bare not in variants:
                variants.append(bare)
        owners = ", ".join(k for k, _ in by_param[name])
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
        props[name] = {**schema, "description": f"default '{name}' for every assertion of kind: {owners}"}
    return {
        "type": ["object", "null"],
        "description": f"Inherited by every assertion: {', '.join(map(repr, DEFAULT_KEYS))} and parameters of "
        "assertion kinds (each applies to the kinds that take it).",
        "properties": props,
        "additionalProperties": False,
    }


def _typed_defaults(kinds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A parameter in ``defaults`` that kinds type differently must have the type of each kind of an
    entry that inherits it (one not setting it itself), as the loader builds each entry."""
    variants: dict[str, set[str]] = {}
    for schema in kinds.values():
        for name, prop in schema["properties"].items():
            bare = {k: v for k, v in prop.items() if k not in ("description", "default")}
            variants.setdefault(name, set()).add(json.dumps(bare, sort_keys=True))
    out = []
    for kind, schema in kinds.items():
        for name, prop in schema["properties"].items():
            if name in ENTRY_KEYS or len(variants[name]) < 2:
                continue
            inherits = {"properties": {"kind": {"const": kind}}, "required": ["kind"], "not": {"required": [name]}}
            out.append(
                {
                    "if": {"properties": {"assertions": {"contains": inherits}}, "required": ["assertions"]},
                    "then": {"properties": {"defaults": {"properties": {name: prop}}}},
                }
            )
    return out


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (draft 2020-12), from the assertion registry."""
    kinds = {kind: kind_schema(kind) for kind in sorted(REGISTRY)}
    summaries = [kinds[k]["description"] for k in kinds]
    entry: dict[str, Any] = {
        "type": "object",
        "description": "One assertion: a kind with its parameters, a selection and a view.",
        "properties": {
            **_entry_props(),
            "kind": {"enum": list(kinds), "description": ENTRY["kind"].meta.doc, "enumDescriptions": summaries},
        },
        "required": ["kind"],
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/kinds/{kind}"},
            }
            for kind in kinds
        ],
    }
    # A parameter without a default must be on the entry, unless ``defaults`` provides it.
    needs = [
        {
            "if": {
                "properties": {"defaults": {"type": "object", "required": [name]}},
                "required": ["defaults"],
            },
            "else": {
                "properties": {
                    "assertions": {
                        "items": {
                            "if": {"properties": {"kind": {"enum": owners}}, "required": ["kind"]},
                            "then": {"required": [name]},
                        }
                    }
                }
            },
        }
        for name, owners in _required().items()
    ] + _typed_defaults(kinds)
    return {
        "$schema": DRAFT,
        "title": "pytest-weights spec (*.weights.yaml)",
        "description": "Assertions on the statistics of neural-network checkpoint weights, checked by "
        "`pytest --checkpoint PATH`. Reference: docs/kinds.md.",
        "type": "object",
        "properties": {
            "version": {"const": 1, "description": "spec format version (1)", "default": 1},
            "description": {
                "type": ["string", "null"],
                "description": "what this spec asserts (shown by `pytest-weights specs`)",
            },
            "defaults": {"$ref": "#/$defs/defaults"},
            "assertions": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/entry"},
                "description": "the assertions; each becomes one pytest item",
            },
        },
        "required": ["assertions"],
        "additionalProperties": False,
        "allOf": needs,
        "$defs": {
            **_common_defs(),
            "defaults": _defaults_schema(kinds),
            "entry": entry,
            "kinds": kinds,
        },
    }


def schema_json() -> str:
    """The schema as formatted JSON text (what ``python -m pytest_weights.schema`` prints)."""
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: str | Path) -> Path:
    """Write the schema to ``path`` (a file, or a directory to hold ``weights.schema.json``)."""
    p = Path(path)
    if p.is_dir():
        p = p / SCHEMA_FILENAME
    p.write_text(schema_json(), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------- validation


def schema_errors(text: str, path: str = "<spec>") -> list[str]:
    """Problems of a spec text against the schema, as ``file:line: message`` (needs ``jsonschema``).

    Invalid YAML yields the loader's message. An empty list means schema-valid (the loader
    may still refuse parameter combinations the schema cannot express).
    """
    import jsonschema

    from .errors import SpecError
    from .spec import load_yaml

    try:
        doc = load_yaml(text, path)
    except SpecError as e:
        return [str(e)]
    validator = jsonschema.Draft202012Validator(spec_schema())
    found: list[tuple[int, str]] = []
    for err in validator.iter_errors(_plain(doc)):
        for leaf in _leaves(err):
            where = list(leaf.absolute_path)
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                known = leaf.schema.get("properties", {})
                extra = [k for k in leaf.instance if k not in known]
                where += extra[:1]  # point at the unexpected key itself
            line = _line(doc, where)
            at = ".".join(str(p) for p in leaf.absolute_path) or "(top level)"
            message = f"{path}:{line}: {at}: {leaf.message}" if line else f"{path}: {at}: {leaf.message}"
            if message not in (m for _, m in found):
                found.append((line or 0, message))
    return [m for _, m in sorted(found, key=lambda lm: lm[0])]


def _plain(value: Any) -> Any:
    """YAML values as plain JSON-like data (mappings with non-string keys stay as they are)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _leaves(err: Any) -> list[Any]:
    """The most specific errors under ``err`` (anyOf/if-then wrappers unfolded)."""
    if not err.context:
        return [err]
    import jsonschema

    best = jsonschema.exceptions.best_match(err.context)
    return [best] if best is not None else [err]


def _line(doc: Any, where: list[Any]) -> int | None:
    """The line of the innermost key or list item of ``where`` in the loaded YAML."""
    from .spec import _Map

    node, line = doc, getattr(doc, "line", None)
    for step in where:
        if isinstance(node, _Map) and step in node:
            line = node.key_lines.get(step, line)
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
            line = getattr(node, "line", line)
        else:
            break
    return line


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(schema_json())
