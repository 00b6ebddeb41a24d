"""The JSON Schema of the spec format: valid draft 2020-12, generated from the registry,
accepts every bundled and example spec (checked with the ``jsonschema`` package) and
rejects broken ones that the loader rejects too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT, save, transformer_like

from pytest_weights.assertions import REGISTRY
from pytest_weights.assertions.base import params
from pytest_weights.authoring import init_spec
from pytest_weights.errors import SpecError
from pytest_weights.schema import SCHEMA_FILENAME, schema_errors, schema_json, spec_schema, write_schema
from pytest_weights.spec import ENTRY_KEYS, SELECT_KEYS, parse_spec
from pytest_weights.stats.scalars import SCALARS

SPECS = sorted([*(ROOT / "specs").glob("*.weights.yaml"), *(ROOT / "examples").glob("*.weights.yaml")])


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def loader_accepts(text: str) -> bool:
    try:
        return not parse_spec(text).errors
    except SpecError:
        return False


def test_schema_is_draft_2020_12_and_covers_the_registry() -> None:
    schema = spec_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    kinds = schema["$defs"]["kinds"]
    assert set(kinds) == set(REGISTRY)
    for kind, cls in REGISTRY.items():
        props = kinds[kind]["properties"]
        assert {f.name for f in params(cls)} | set(ENTRY_KEYS) == set(props)
        assert kinds[kind]["description"]  # from the docstring
    assert set(schema["$defs"]["select"]["properties"]) == set(SELECT_KEYS)
    assert schema["$defs"]["entry"]["properties"]["kind"]["enum"] == sorted(REGISTRY)


def test_schema_parameters_carry_types_enums_defaults_and_descriptions() -> None:
    kinds = spec_schema()["$defs"]["kinds"]
    direction = kinds["depth_trend"]["properties"]["direction"]
    assert direction["enum"] == ["grows", "shrinks", "flat"] and "required" in direction["description"]
    tol = kinds["gaussian_ks"]["properties"]["tol"]
    assert tol["default"] == 0.05 and {"type": "number"} in tol["anyOf"]
    assert "tol" in tol["description"] and "≤" in tol["description"]  # the docstring sentence naming it
    assert kinds["shape"]["properties"]["allowed"]["default"] == ["gaussian"]
    assert kinds["stat_range"]["properties"]["stat"]["enum"] == list(SCALARS)
    assert kinds["stat_range"]["properties"]["min"]["default"] is None
    assert "markdownDescription" in kinds["weibull"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bundled_and_example_specs_validate(validator, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    errors = [e.message for e in validator.iter_errors(doc)]
    assert errors == []
    assert schema_errors(path.read_text(), str(path)) == []


def test_an_init_generated_spec_validates(validator, tmp_path: Path) -> None:
    text = init_spec(save(tmp_path / "m.safetensors", transformer_like()))
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


VALID = {
    "yaml-1.1-number-string": "assertions:\n  - kind: stat_range\n    stat: std\n    min: 1e-8\n",
    "single-glob-and-ndim": "assertions:\n  - kind: finite\n    select: {include: '*.weight', ndim: 2}\n",
    "tuple-as-one-value": "assertions:\n  - kind: shape\n    allowed: gaussian\n",
    "required-param-in-defaults": "defaults:\n  stat: std\nassertions:\n  - kind: stat_range\n    max: 1\n",
    "null-defaults": "defaults:\nassertions:\n  - kind: finite\n",
    "numeric-name": "assertions:\n  - name: 7\n    kind: finite\n",
    "delta-view": "defaults: {view: delta}\nassertions:\n  - kind: gaussian_ks\n",
    "optimizer-group": "assertions:\n  - kind: finite\n    select: {groups: [optimizer, weights]}\n",
    "null-bound": "assertions:\n  - kind: weibull\n    k_min: 1.0\n    k_max: null\n",
    "if-empty": "defaults: {if_empty: skip}\nassertions:\n  - kind: finite\n  - kind: finite\n    if_empty: fail\n",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_schema_accepts_what_the_loader_accepts(validator, text: str) -> None:
    assert loader_accepts(text)
    assert [e.message for e in validator.iter_errors(yaml.safe_load(text))] == []


BROKEN = {
    "unknown-kind": ("assertions:\n  - kind: gausian_ks\n", 2, "is not one of"),
    "unknown-parameter": ("assertions:\n  - kind: gaussian_ks\n    tolerance: 0.1\n", 3, "'tolerance' was unexpected"),
    "wrong-type": ("assertions:\n  - kind: gaussian_ks\n    tol: high\n", 3, "'high'"),
    "bad-choice": (
        "assertions:\n  - kind: depth_trend\n    stat: std\n    direction: up\n",
        4,
        "'up' is not one of ['grows', 'shrinks', 'flat']",
    ),
    "unknown-stat": ("assertions:\n  - kind: stat_range\n    stat: stdev\n    max: 1\n", 3, "'stdev' is not one of"),
    "missing-required": ("assertions:\n  - kind: stat_range\n    max: 1\n", 2, "'stat' is a required property"),
    "missing-kind": ("assertions:\n  - name: x\n", 2, "'kind' is a required property"),
    "select-typo": (
        "assertions:\n  - kind: finite\n    select:\n      includes: ['*']\n",
        4,
        "'includes' was unexpected",
    ),
    "bad-view": ("assertions:\n  - kind: finite\n    view: diff\n", 3, "'diff' is not one of"),
    "top-level-typo": ("assertion:\n  - kind: finite\n", 1, "'assertion' was unexpected"),
    "version-2": ("version: 2\nassertions:\n  - kind: finite\n", 1, "1 was expected"),
    "empty-assertions": ("assertions: []\n", 1, "should be non-empty"),
    "default-typo": ("defaults:\n  tolerance: 0.1\nassertions:\n  - kind: finite\n", 2, "'tolerance' was unexpected"),
    "ndim-not-int": ("assertions:\n  - kind: finite\n    select: {ndim: two}\n", 3, "'two'"),
    "bad-if-empty": ("assertions:\n  - kind: finite\n    if_empty: pass\n", 3, "'pass' is not one of ['fail', 'skip']"),
    "bad-if-empty-default": (
        "defaults:\n  if_empty: true\nassertions:\n  - kind: finite\n",
        2,
        "True is not one of ['fail', 'skip']",
    ),
}


@pytest.mark.parametrize(("text", "line", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_specs_are_rejected_by_schema_and_loader(validator, text: str, line: int, message: str) -> None:
    assert not loader_accepts(text)
    assert list(validator.iter_errors(yaml.safe_load(text)))
    errors = schema_errors(text, "broken.weights.yaml")
    assert errors, text
    assert errors[0].startswith(f"broken.weights.yaml:{line}: "), errors
    assert any(message in e for e in errors), errors


def test_schema_errors_reports_invalid_yaml_with_its_line() -> None:
    (error,) = schema_errors("assertions:\n  - kind: finite\n    select: {include: [\n", "x.weights.yaml")
    assert error.startswith("x.weights.yaml:") and "invalid YAML" in error


def test_module_prints_the_schema(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_weights.schema"], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out == schema_json()
    assert json.loads(out) == spec_schema()


def test_write_schema_into_a_directory(tmp_path: Path) -> None:
    written = write_schema(tmp_path)
    assert written == tmp_path / SCHEMA_FILENAME
    assert json.loads(written.read_text()) == spec_schema()
