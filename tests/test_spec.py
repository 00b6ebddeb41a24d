"""Spec parsing: defaults, inheritance, and errors that name file:line."""

from __future__ import annotations

import pytest

from pytest_weights import SpecError, load_spec
from pytest_weights.spec import InvalidEntry, bundled_specs, parse_spec


def test_defaults_are_inherited_and_overridden():
    spec = parse_spec(
        """
defaults:
  select: {include: ["*.weight"], min_ndim: 2}
  tol: 0.02
assertions:
  - kind: gaussian_ks
  - kind: gaussian_ks
    tol: 0.3
    select: {exclude: ["*embed*"]}
""",
        "s.weights.yaml",
    )
    a, b = spec.assertions
    assert (a.name, b.name) == ("gaussian_ks", "gaussian_ks-2")
    assert a.assertion.tol == 0.02 and b.assertion.tol == 0.3
    assert b.selection.include == ("*.weight",) and b.selection.exclude == ("*embed*",)
    assert b.selection.min_ndim == 2
    assert (a.line, b.line) == (6, 7)


def entry_error(text: str) -> SpecError:
    spec = parse_spec(text, "s.weights.yaml")
    bad = [e for e in spec.entries if isinstance(e, InvalidEntry)]
    assert len(bad) == 1
    return bad[0].error


def test_unknown_kind_suggests_the_closest():
    err = entry_error("assertions:\n  - kind: finite\n  - kind: gausian_ks\n")
    assert err.line == 3
    assert "unknown assertion kind 'gausian_ks'" in str(err)
    assert "did you mean 'gaussian_ks'" in str(err)
    assert str(err).startswith("s.weights.yaml:3:")


def test_unknown_parameter_names_its_line():
    err = entry_error("assertions:\n  - kind: gaussian_ks\n\n    tolerance: 0.1\n")
    assert err.line == 4 and "did you mean 'tol'" in str(err)


def test_wrong_type_and_missing_parameter():
    err = entry_error("assertions:\n  - kind: gaussian_ks\n    tol: lots\n")
    assert err.line == 3 and "must be float" in str(err)
    err = entry_error("assertions:\n  - kind: stat_range\n    min: 0\n")
    assert err.line == 2 and "needs parameter 'stat'" in str(err)
    err = entry_error("assertions:\n  - kind: stat_range\n    stat: stdd\n    min: 0\n")
    assert "did you mean 'std'" in str(err)


def test_bad_selection_key():
    err = entry_error("assertions:\n  - kind: finite\n    select:\n      includes: ['*']\n")
    assert err.line == 4 and "did you mean 'include'" in str(err)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("assertions: [\n  {kind: finite\n", 3, "invalid YAML"),
        ("- kind: finite\n", 1, "must be a mapping"),
        ("assertion:\n  - kind: finite\n", 1, "did you mean 'assertions'"),
        ("assertions: []\n", 1, "non-empty list"),
        ("defaults:\n  tool: 1\nassertions:\n  - kind: finite\n", 2, "unknown default 'tool'"),
        ("assertions:\n  - kind: finite\n  - kind: finite\n    kind: finite\n", 4, "duplicate key"),
    ],
)
def test_file_level_errors(text, line, fragment):
    with pytest.raises(SpecError) as e:
        parse_spec(text, "x.weights.yaml")
    assert e.value.line == line
    assert fragment in str(e.value)


def test_scientific_notation_without_dot_is_a_float():
    spec = parse_spec("assertions:\n  - kind: stat_range\n    stat: std\n    min: 1e-8\n")
    assert spec.assertions[0].assertion.min == 1e-8


def test_bundled_specs_load_cleanly():
    specs = bundled_specs()
    assert "default" in specs
    for path in specs.values():
        spec = load_spec(path)
        assert not spec.errors, spec.errors
        assert spec.assertions


def test_unknown_bundled_name():
    with pytest.raises(SpecError, match="did you mean 'default'"):
        load_spec("defualt")


def test_spec_reference_doc_is_generated_from_the_registry():
    from conftest import ROOT

    from pytest_weights.reference_docs import kinds_markdown

    assert (ROOT / "docs" / "kinds.md").read_text() == kinds_markdown(), (
        "docs/kinds.md is stale: python -m pytest_weights.reference_docs > docs/kinds.md"
    )


def test_if_empty_defaults_to_fail_and_is_inherited_and_overridden():
    spec = parse_spec(
        "defaults:\n  if_empty: skip\nassertions:\n  - kind: finite\n  - kind: finite\n    if_empty: fail\n",
        "s.weights.yaml",
    )
    assert [a.if_empty for a in spec.assertions] == ["skip", "fail"]
    assert parse_spec("assertions:\n  - kind: finite\n").assertions[0].if_empty == "fail"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("assertions:\n  - kind: finite\n\n    if_empty: ignore\n", 4),
        ("defaults:\n  if_empty: [skip]\nassertions:\n  - kind: finite\n", 2),
    ],
    ids=["entry", "defaults"],
)
def test_bad_if_empty_names_its_line(text, line):
    err = entry_error(text)
    assert err.line == line and "'if_empty' must be one of fail, skip" in str(err)
    assert str(err).startswith(f"s.weights.yaml:{line}: ")


def test_a_key_that_is_not_a_plain_value_is_a_spec_error():
    with pytest.raises(SpecError) as e:
        parse_spec("assertions:\n  - kind: finite\n    [a, b]: 1\n", "x.weights.yaml")
    assert e.value.line == 3 and "a key must be a plain value" in str(e.value)


def test_an_unknown_statistic_points_at_its_stat_line(tmp_path):
    text = "assertions:\n  - name: x\n    kind: stat_range\n    min: 0\n    stat: stdev\n"
    (entry,) = parse_spec(text, "s.weights.yaml").entries
    assert entry.error.line == 5 and "unknown statistic 'stdev' (did you mean 'std'?)" in entry.error.message
