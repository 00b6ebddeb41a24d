"""A new assertion kind, defined in ONE file, gets everything a bundled kind gets.

The file below (:data:`KINDS`) is used as a pytest ``conftest.py`` (the plugin run) and as an
imported module (the library): a checkpoint kind ``abs_max`` (max |w| ≤ ``limit``, with a
baseline proposal) and a run-scope kind ``ends_below`` (judged at the end of a run). Without
touching any other module they get: spec validation (with the line and a did-you-mean), the
JSON Schema, a docs/kinds.md entry, ``init``/``--weights-regen`` proposals (under the shared
guard), numbers in the JSON report, a plot in the HTML report, and deferral by gates.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import save, transformer_like

from pytest_weights.assertions import REGISTRY

#: One file defining two kinds (kept importable on its own: only the public kind API).
KINDS = textwrap.dedent(
    '''
    """Two kinds added by a project: nothing else in pytest-weights is touched."""
    from __future__ import annotations

    from dataclasses import dataclass

    from pytest_weights.assertions import Assertion, register
    from pytest_weights.assertions.base import Suggestion, fmt, per_tensor
    from pytest_weights.assertions.proposal import upper
    from pytest_weights.assertions.series import Trajectory
    from pytest_weights.stats import Moments


    @register
    @dataclass(frozen=True)
    class AbsMax(Assertion):
        """The largest |w| of each tensor is ≤ ``limit``."""

        kind = "abs_max"
        baseline = ("limit",)
        limit: float = 1.0

        def validate(self):
            return None if self.limit > 0 else f"limit must be > 0, got {self.limit}"

        def statistics(self):
            return (Moments(),)

        def describe(self):
            return f"max |w| ≤ {fmt(self.limit)}"

        def evaluate(self, tensors):
            def read(t):
                m = t[Moments()]
                return max(abs(m.min), abs(m.max))

            return per_tensor(
                tensors, read, lambda v: v - self.limit if not v <= self.limit else None,
                f"max |w| ≤ {fmt(self.limit)}", statistic="max |w|", bounds=(None, self.limit),
            )

        @classmethod
        def suggest(cls, level, count):
            return (Suggestion("abs-max", rank=40),) if level == "role" else ()

        def propose(self, tensors, margin):
            top = max(self.evaluate(tensors).observed.values())
            return {"limit": upper(top * (1 + margin), top, f"observed max |w| {fmt(top)}")}, []


    @register
    @dataclass(frozen=True)
    class EndsBelow(Trajectory):
        """The statistic at the last checkpoint of the run is ≤ ``limit`` (an end-of-run kind)."""

        kind = "ends_below"
        judged_at_end = True
        limit: float = 1.0

        def expected(self):
            return f"final value ≤ {fmt(self.limit)}"

        def band(self, series):
            n = len(series.values)
            return [None] * n, [None] * (n - 1) + [self.limit]

        def judge(self, series):
            v = series.values[-1]
            return None if v <= self.limit else (f"final {fmt(v)}", v - self.limit)
    '''
)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory):
    """The file imported as a module (its kinds registered), unregistered afterwards."""
    path = tmp_path_factory.mktemp("seam") / "project_kinds.py"
    path.write_text(KINDS)
    spec = importlib.util.spec_from_file_location("project_kinds", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["project_kinds"] = module
    spec.loader.exec_module(module)
    yield module
    for kind in ("abs_max", "ends_below"):
        REGISTRY.pop(kind, None)
    sys.modules.pop("project_kinds", None)


SPEC = """\
version: 1
assertions:
  - name: small
    kind: abs_max
    limit: 10.0
  - name: tight
    kind: abs_max
    limit: 0.01
"""


def test_validation_schema_and_docs(kinds) -> None:
    import jsonschema

    from pytest_weights.reference_docs import kinds_markdown
    from pytest_weights.schema import spec_schema
    from pytest_weights.spec import parse_spec

    bad = parse_spec("version: 1\nassertions:\n  - name: x\n    kind: abs_max\n    limt: 2\n", "p.weights.yaml")
    (error,) = bad.errors
    assert error.line == 5 and "unknown parameter 'limt'" in str(error) and "did you mean 'limit'" in str(error)
    assert "must be > 0" in str(parse_spec(SPEC.replace("10.0", "-1.0"), "p.weights.yaml").errors[0])

    import yaml

    schema = spec_schema()
    jsonschema.validate(yaml.safe_load(SPEC), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(SPEC.replace("limit: 10.0", "limit: high")), schema)

    docs = kinds_markdown()
    assert "## `abs_max`" in docs and "The largest |w| of each tensor is ≤ ``limit``." in docs
    assert "| `limit` | float | 1.0 |" in docs
    assert "baseline (`init`, `--weights-regen`): `limit`" in docs
    assert "## `ends_below` (run scope" in docs and "judged at the end of a run" in docs


def test_regen_proposes_from_the_kind_and_leaves_the_rest(kinds, tmp_path: Path) -> None:
    from pytest_weights import check
    from pytest_weights.authoring import init_spec, regen_spec
    from pytest_weights.spec import parse_spec

    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    spec = tmp_path / "p.weights.yaml"
    spec.write_text(SPEC)
    assert [r.name for r in check(ckpt, spec, device="cpu").failures] == ["tight"]
    (change,) = regen_spec(spec, ckpt, margin=0.5)
    want = max(t.abs().max().item() for t in transformer_like().values() if t.is_floating_point())
    assert change.entry == "tight" and change.param == "limit" and float(change.new) >= want * 1.5
    text = spec.read_text()
    assert text.splitlines()[:5] == SPEC.splitlines()[:5]  # the passing entry is byte-identical
    assert check(ckpt, spec, device="cpu").passed
    # init asks every kind what it adds to a baseline: one abs_max entry per role, with its number
    text = init_spec(ckpt)
    generated = parse_spec(text).assertions
    mine = [a for a in generated if a.assertion.kind == "abs_max"]
    assert mine and all(a.name.endswith("-abs-max") for a in mine)
    assert "observed max |w|" in text and check(ckpt, parse_spec(text), device="cpu").passed


def test_gate_defers_the_end_of_run_kind(kinds) -> None:
    from pytest_weights.gate import DEFER_KINDS, WeightsGate
    from pytest_weights.spec import parse_spec

    assert "ends_below" in DEFER_KINDS
    spec = parse_spec(
        "version: 1\nassertions:\n  - name: end\n    kind: ends_below\n    stat: std\n    limit: 0.001\n",
        "g.weights.yaml",
    )
    gate = WeightsGate(spec, device="cpu", on_failure="return")
    weights = transformer_like()
    gate.check(weights, step=0)
    mid = gate.check(weights, step=1)
    (r,) = mid.results
    assert r.skipped and "judged at the end of the run" in r.summary
    (r,) = gate.finish().results
    assert not r.passed and r.deviations[0].step == 1 and r.deviations[0].bounds == (None, 0.001)
    (panel, *_) = r.plot
    assert panel.xlabel == "step" and list(panel.lines[0].bad) == [False, True]


def test_plugin_run_validates_reports_and_regenerates(pytester: pytest.Pytester) -> None:
    """The file as a conftest: items, a validation error at its line, the JSON and HTML
    reports with the kind's numbers and plot, and --weights-regen from its proposal."""
    pytest.importorskip("matplotlib")
    pytester.makeconftest(KINDS)
    ckpt = save(pytester.path / "m.safetensors", transformer_like())
    spec = pytester.path / "p.weights.yaml"
    spec.write_text(SPEC + "  - name: typo\n    kind: abs_max\n    limt: 1.0\n")
    args = ("-p", "no:randomly", "p.weights.yaml", "--checkpoint", str(ckpt), "--weights-no-cache")
    run = pytester.runpytest_subprocess(
        *args, "--weights-json=out.json", "--weights-report=out.html", "--junitxml=j.xml"
    )
    run.assert_outcomes(passed=1, failed=1, errors=1)
    run.stdout.fnmatch_lines(["*p.weights.yaml:11*unknown parameter 'limt'*did you mean 'limit'*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    (tight,) = [r for r in doc["results"] if r["name"] == "tight"]
    assert tight["statistic"] == "max |w|" and tight["bounds"] == [None, 0.01]
    assert tight["spec"]["line"] == 6 and tight["spec"]["file"].endswith("p.weights.yaml")
    row = tight["deviations"][0]
    assert row["value"] > 0.01 and row["bounds"] == [None, 0.01] and row["statistic"] == "max |w|"
    assert [p["panel"] for p in tight["plot"]] == ["histogram", "points"]
    junit = (pytester.path / "j.xml").read_text()  # JUnit properties: the same numbers
    assert f'<property name="worst_value" value="{row["value"]}"' in junit
    assert '<property name="statistic" value="max |w|"' in junit and '<property name="worst_max" value="0.01"' in junit
    page = (pytester.path / "out.html").read_text()
    assert page.count('<svg class="plot"') == 1 and "max |w| of every checked tensor" in page

    spec.write_text(SPEC)
    regen = pytester.runpytest_subprocess(*args, "--weights-regen")
    regen.assert_outcomes(passed=1, failed=1)
    regen.stdout.fnmatch_lines(["*p.weights.yaml:8: tight limit 0.01 → *", "*--weights-regen: 1 number(s) rewritten*"])
    assert spec.read_text().splitlines()[:5] == SPEC.splitlines()[:5]
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=2)


def test_no_kind_name_outside_the_kinds() -> None:
    """The modules that used to branch on kind names (reports, gate, verdict, regen) name none."""
    root = Path(__file__).resolve().parents[1] / "pytest_weights"
    files = ["html_report.py", "gate.py", "verdict.py", "report.py", "plugin/reports.py", "plugin/items.py"]
    files += [f"authoring/{m}.py" for m in ("policy", "init", "regen", "yamledit", "presets", "__init__")]
    for name in files:
        text = (root / name).read_text(encoding="utf-8")
        named = [k for k in REGISTRY if f'"{k}"' in text or f"'{k}'" in text]
        assert not named, (name, named)
