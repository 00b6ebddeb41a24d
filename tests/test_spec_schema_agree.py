"""The spec loader and the JSON Schema give the same verdict on every spec.

Both derive from the same typed keys (``select:`` from :class:`Selection`, the common entry keys
from :class:`EntryKeys`, kind parameters from each kind's dataclass). Hypothesis mutates valid
specs (the bundled and example specs, plus small bases using defaults and selections): it
replaces, deletes, adds and renames keys and values at any depth, with values of every YAML
type and near-miss words (typos of keys, kinds, choices), and checks that ``parse_spec``
accepts exactly the specs that ``jsonschema`` validates.

Excluded, explicitly, because a JSON Schema cannot express them (the loader reports them as
:class:`LoaderOnlyError`, after every static check of the entry passed):

- a kind's parameter consistency (its ``validate``: ``min ≤ max``, a signed statistic where a
  ratio needs a non-negative one, …);
- a ``depth_pattern`` that does not compile, has no single digits-only group, or backtracks
  exponentially (the schema says only ``format: regex``);
- NaN parameters (JSON has no NaN) and names with characters that are not printable.

Not generated, because JSON cannot tell them apart: an integral float (``2.0``) where an integer
is expected (YAML reads ``2.0`` as a float, the loader refuses it; JSON Schema's ``integer``
takes it), and what the YAML reader refuses before any structure is seen (size, depth, alias and
integer limits, duplicate or merge keys: see ``test_spec_hostile.py``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import ROOT
from fuzz.mutate import _get as _at
from fuzz.mutate import _paths as _places
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_weights.assertions import REGISTRY
from pytest_weights.assertions.base import params
from pytest_weights.errors import SpecError
from pytest_weights.schema import schema_errors, spec_schema
from pytest_weights.spec import ENTRY_KEYS, SELECT_KEYS, TOP_KEYS, LoaderOnlyError, parse_spec
from pytest_weights.stats.scalars import SCALARS

SPECS = sorted([*(ROOT / "specs").glob("*.weights.yaml"), *(ROOT / "examples").glob("*.weights.yaml")])
SMALL_BASES = [
    {"assertions": [{"kind": "finite"}]},
    {
        "version": 1,
        "description": "small",
        "defaults": {"select": {"include": ["*.weight"], "min_ndim": 2}, "tol": 0.1, "if_empty": "skip"},
        "assertions": [
            {"name": "ks", "kind": "gaussian_ks", "select": {"exclude": "*emb*", "ndim": [2, 3]}},
            {"kind": "stat_range", "stat": "std", "min": 0.001, "view": "delta"},
            {"kind": "depth_trend", "stat": "std", "direction": "flat", "select": {"groups": ["weights"]}},
        ],
    },
    {
        "defaults": {"direction": "grows", "max_ratio": 3.5, "stat": "std"},
        "assertions": [{"kind": "run_trend"}, {"kind": "scale_consistency"}, {"kind": "reference_ratio"}],
    },
]
BASES = [yaml.safe_load(p.read_text()) for p in SPECS] + SMALL_BASES

PARAMS = sorted({f.name for cls in REGISTRY.values() for f in params(cls)})
WORDS = sorted(
    {
        *TOP_KEYS,
        *ENTRY_KEYS,
        *SELECT_KEYS,
        *PARAMS,
        *REGISTRY,
        *list(SCALARS)[:6],
        *("weights", "optimizer", "weightz", "optim", "delta", "skip", "fail", "grows", "flat", "up"),
        *("stdev", "includes", "gausian_ks", "*", "*.weight", "(\\d+)", "1e-6", "1_0", "1__0", "inf", "nan"),
        *("x" * 201, "y" * 257, "", " 2 "),
    }
)


def _enums(node: Any) -> set[Any]:
    """Every choice the schema lists (kinds, statistics, directions, groups, …)."""
    if isinstance(node, dict):
        own = set(node["enum"]) if isinstance(node.get("enum"), list) else set()
        return own.union(*(_enums(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_enums(v) for v in node))
    return set()


#: Values near the edges: every choice, and numbers around the limits.
NEAR = sorted(_enums(spec_schema()) | {-1, 0, 1, 2, 0.5, 1e-6, 255, 256, 257}, key=repr)
# Integral floats are left out (see the module docstring); NaN too (loader-only).
FLOATS = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer())
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.integers(6, 300),
    FLOATS,
    st.sampled_from(WORDS),
    st.text(max_size=4),
)
#: Values of the wrong type or just outside a limit, drawn often.
CONFUSING = [None, True, False, -1, 0, 1, 0.5, "x", "", [], {}, ["x"], [-1], [None], "weightz", "x" * 257]
VALUES = st.one_of(
    st.sampled_from(CONFUSING).map(copy.deepcopy),
    st.sampled_from(CONFUSING).map(copy.deepcopy),
    st.sampled_from(NEAR),
    st.lists(st.sampled_from(NEAR), max_size=3),
    st.recursive(
        SCALAR,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(WORDS), inner, max_size=3)
        ),
        max_leaves=6,
    ),
)
#: Keys that belong in a mapping, by its place: the top level, defaults, select, an entry.
RELEVANT = {
    "top": TOP_KEYS,
    "defaults": ("select", "view", "if_empty", *PARAMS),
    "select": SELECT_KEYS,
    "entry": (*ENTRY_KEYS, *PARAMS),
}


def _role(path: tuple) -> str:
    if not path:
        return "top"
    if path[-1] in ("select", "defaults"):
        return str(path[-1])
    return "entry"


def keys_for(path: tuple) -> st.SearchStrategy[Any]:
    """A key to add at ``path``: mostly one that belongs there, else any word or text."""
    other = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=4), st.integers(0, 2))
    return st.one_of(st.sampled_from(RELEVANT[_role(path)]), other)


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """A base spec with one to three mutations, each at a mapping of it (top level, defaults, an
    entry, a selection): set a key (mostly one that belongs there) to a value, delete or rename a
    key, or replace an item of a list; rarely, the whole mapping by a value."""
    doc = copy.deepcopy(draw(st.one_of(st.sampled_from(SMALL_BASES), st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in _places(doc) if isinstance(_at(doc, p), (dict, list))]
        if not places:
            break
        path = draw(st.sampled_from(places))
        node = _at(doc, path)
        op = draw(st.sampled_from(("set", "set", "delete", "rename", "whole")))
        if op == "whole" and path:
            _at(doc, path[:-1])[path[-1]] = draw(VALUES)
        elif isinstance(node, list):
            if node and op != "set":
                del node[draw(st.integers(0, len(node) - 1))]
            else:
                node.append(draw(VALUES))
        elif op == "set" or not node:
            node[draw(keys_for(path))] = draw(VALUES)
        elif op == "delete":
            del node[draw(st.sampled_from(list(node)))]
        elif op == "rename":
            node[draw(keys_for(path))] = node.pop(draw(st.sampled_from(list(node))))
    return doc


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def loader_accepts(text: str) -> bool:
    """The loader's verdict on what a schema can check: errors found by the loader only do not count."""
    try:
        spec = parse_spec(text, "m.weights.yaml")
    except SpecError:
        return False
    return not [e for e in spec.errors if not isinstance(e, LoaderOnlyError)]


def schema_accepts(text: str) -> bool:
    return not any(True for _ in validator().iter_errors(yaml.safe_load(text)))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_loader_and_schema_agree_on_mutated_specs(doc: Any) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    assert loader_accepts(text) == schema_accepts(text), text


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_bases_are_valid(path: Path) -> None:
    text = path.read_text()
    assert loader_accepts(text) and schema_accepts(text)


def test_an_unknown_group_is_refused_by_both_naming_the_line_and_the_groups() -> None:
    text = "assertions:\n  - kind: finite\n    select:\n      groups: [weightz]\n"
    (entry,) = parse_spec(text, "s.weights.yaml").entries
    assert str(entry.error).startswith("s.weights.yaml:4: 'groups' must be one of weights, optimizer")
    assert "did you mean 'weights'" in str(entry.error)
    assert schema_errors(text, "s.weights.yaml")[0].startswith("s.weights.yaml:4: ")


#: Places where the loader and the schema disagreed before they shared the typed keys: (spec, verdict).
FORMER_DISAGREEMENTS = {
    "negative-ndim": ("assertions:\n  - kind: finite\n    select: {ndim: -1}\n", False),
    "too-many-globs": (
        "assertions:\n  - kind: finite\n    select: {include: [" + ", ".join(["a"] * 257) + "]}\n",
        False,
    ),
    "long-name": ("assertions:\n  - kind: finite\n    name: " + "n" * 201 + "\n", False),
    "description-a-number": ("description: 5\nassertions:\n  - kind: finite\n", False),
    "overridden-bad-default-view": (
        "defaults: {view: diff}\nassertions:\n  - kind: finite\n    view: weights\n",
        False,
    ),
    "unused-default-of-wrong-type": ("defaults: {tol: high}\nassertions:\n  - kind: finite\n", False),
    "default-of-another-kinds-type": ("defaults: {direction: flat}\nassertions:\n  - kind: run_trend\n", False),
    "unused-default-unknown-statistic": ("defaults: {stat: stdev}\nassertions:\n  - kind: finite\n", False),
    "number-text-python-refuses": ("assertions:\n  - kind: gaussian_ks\n    tol: '1__0'\n", False),
    "null-select": ("assertions:\n  - kind: finite\n    select:\n", True),
    "null-name": ("assertions:\n  - kind: finite\n    name:\n", True),
    "null-description": ("description:\nassertions:\n  - kind: finite\n", True),
    "number-text-with-underscore": ("assertions:\n  - kind: gaussian_ks\n    tol: '1_0'\n", True),
}


@pytest.mark.parametrize(("text", "valid"), FORMER_DISAGREEMENTS.values(), ids=FORMER_DISAGREEMENTS.keys())
def test_former_disagreements_now_agree(text: str, valid: bool) -> None:
    assert loader_accepts(text) is valid
    assert schema_accepts(text) is valid


LOADER_ONLY = {
    "consistency": "assertions:\n  - kind: stat_range\n    stat: std\n    min: 2\n    max: 1\n",
    "regex": "assertions:\n  - kind: finite\n    select: {depth_pattern: '(\\w+)'}\n",
    "nan": "assertions:\n  - kind: gaussian_ks\n    tol: .nan\n",
    "not-printable": 'assertions:\n  - kind: finite\n    name: "a\\tb"\n',
}


@pytest.mark.parametrize("text", LOADER_ONLY.values(), ids=LOADER_ONLY.keys())
def test_what_only_the_loader_sees_is_a_loader_only_error_the_schema_accepts(text: str) -> None:
    (entry,) = parse_spec(text, "s.weights.yaml").entries
    assert isinstance(entry.error, LoaderOnlyError) and entry.error.line
    assert schema_accepts(text)
