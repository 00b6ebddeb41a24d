"""The plugin end to end: real safetensors files, real pytest runs (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import save, transformer_like

DEFAULT_ITEMS = ["finite", "not-constant", "scale-vs-model", "not-flat", "consistent-with-siblings"]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def broken(tmp_path: Path, edit) -> Path:
    tensors = transformer_like()
    edit(tensors)
    return save(tmp_path / "broken.safetensors", tensors)


def test_healthy_checkpoint_passes_the_default_spec(pytester, healthy):
    result = run(pytester, "--checkpoint", str(healthy), "-v")
    result.assert_outcomes(passed=len(DEFAULT_ITEMS))
    for name in DEFAULT_ITEMS:
        result.stdout.fnmatch_lines([f"*default.weights.yaml::{name} PASSED*"])
    result.stdout.fnmatch_lines(["*non-float tensor(s) not in float statistics: position_ids (int64)*"])


FAULTS = {
    "nan": (
        lambda t: t["model.layers.3.attn.q.weight"].view(-1)[17:20].fill_(float("nan")),
        "finite",
        "model.layers.3.attn.q.weight",
        "3 NaN, 0 Inf",
    ),
    "inf": (
        lambda t: t["model.layers.0.attn.k.bias"].view(-1)[0:1].fill_(float("inf")),
        "finite",
        "model.layers.0.attn.k.bias",
        "0 NaN, 1 Inf",
    ),
    "zeroed": (
        lambda t: t["model.layers.2.mlp.up.weight"].zero_(),
        "not-constant",
        "model.layers.2.mlp.up.weight",
        "0",
    ),
    "constant": (
        lambda t: t["model.layers.4.attn.v.weight"].fill_(0.01),
        "not-constant",
        "model.layers.4.attn.v.weight",
        "0",
    ),
    "scaled-x100": (
        lambda t: t["model.layers.1.attn.o.weight"].mul_(100),
        "consistent-with-siblings",
        "model.layers.1.attn.o.weight",
        "×100",
    ),
    "uniform": (
        lambda t: t["model.layers.5.mlp.down.weight"].uniform_(-0.03, 0.03),
        "not-flat",
        "model.layers.5.mlp.down.weight",
        "kurtosis ≥ -1",
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_default_spec_catches_fault_and_names_the_tensor(pytester, tmp_path, fault):
    edit, item, tensor, observed = FAULTS[fault]
    ckpt = broken(tmp_path, edit)
    result = run(pytester, "--checkpoint", str(ckpt))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert item in failed
    out = result.stdout.str()
    section = out[out.index(f"_ {item} _") if f"_ {item} _" in out else out.index(item) :]
    assert tensor in section and observed in section
    assert "tensor" in section and "observed" in section and "expected" in section
    assert "default.weights.yaml:" in section  # the spec line of the failing assertion


def test_failure_report_lists_worst_first_and_caps_rows(pytester, tmp_path):
    tensors = transformer_like(layers=24)
    for i in range(20):
        tensors[f"model.layers.{i}.attn.q.weight"].view(-1)[: i + 1] = float("nan")
    ckpt = save(tmp_path / "many.safetensors", tensors)
    result = run(pytester, "--checkpoint", str(ckpt), "-k", "finite")
    out = result.stdout.str()
    assert "20 of" in out and "… and 5 more" in out
    assert out.index("model.layers.19.attn.q.weight") < out.index("model.layers.18.attn.q.weight")


def test_passing_items_are_quiet_and_failures_show_the_spec_line(pytester, healthy):
    pytester.makefile(
        ".weights.yaml",
        my="assertions:\n  - name: fine\n    kind: finite\n  - name: too-strict\n    kind: stat_range\n"
        "    stat: std\n    max: 0.001\n",
    )
    result = run(pytester, "my.weights.yaml", "--checkpoint", str(healthy))
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "my.weights.yaml:4: too-strict [stat_range]" in out
    assert "_ fine _" not in out


def test_bad_spec_reports_file_line_and_other_specs_still_run(pytester, healthy):
    pytester.makefile(".weights.yaml", bad="assertions:\n  - kind: finite\n  - kind: gausian_ks\n    tol: 0.1\n")
    pytester.makefile(".weights.yaml", broken="assertions: [\n")
    pytester.makefile(".weights.yaml", good="assertions:\n  - kind: gaussian_ks\n    select: {min_ndim: 2}\n")
    result = run(pytester, ".", "--checkpoint", str(healthy))
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*bad.weights.yaml:3: unknown assertion kind 'gausian_ks' (did you mean 'gaussian_ks'?)*",
            "*broken.weights.yaml:1: invalid YAML*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_selection_matching_nothing_fails(pytester, healthy):
    pytester.makefile(".weights.yaml", s="assertions:\n  - kind: finite\n    select: {include: ['decoder.*']}\n")
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(healthy))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the selection matches no tensor*"])


def test_missing_checkpoint_is_a_usage_error(pytester, tmp_path):
    result = run(pytester, "--checkpoint", str(tmp_path / "nope.safetensors"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*nope.safetensors: --checkpoint: no such file or directory*"])


def test_not_a_checkpoint_fails_every_item_naming_the_file(pytester, tmp_path):
    junk = tmp_path / "notes.safetensors"
    junk.write_text("just some text, not a checkpoint at all")
    result = run(pytester, "--checkpoint", str(junk))
    result.assert_outcomes(failed=len(DEFAULT_ITEMS))
    out = result.stdout.str()
    assert "notes.safetensors: not a safetensors file" in out
    assert "Traceback" not in out


def test_model_directory_and_junit_xml_and_k(pytester, tmp_path):
    model_dir = tmp_path / "my-model"
    save(model_dir / "model.safetensors", transformer_like())
    xml = tmp_path / "junit.xml"
    result = run(pytester, "--checkpoint", str(model_dir), "-k", "finite or flat", f"--junitxml={xml}")
    result.assert_outcomes(passed=2)
    text = xml.read_text()
    assert 'name="finite"' in text and 'name="not-flat"' in text


def test_two_checkpoints_get_one_item_each(pytester, healthy, tmp_path):
    other = save(tmp_path / "other.safetensors", transformer_like(seed=3))
    result = run(pytester, "--checkpoint", str(healthy), "--checkpoint", str(other), "-k", "finite", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*finite?healthy.safetensors? PASSED*", "*finite?other.safetensors? PASSED*"])


def test_spec_without_checkpoint_is_skipped(pytester):
    pytester.makefile(".weights.yaml", s="assertions:\n  - kind: finite\n")
    result = run(pytester, "s.weights.yaml", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no checkpoint given*"])


def test_weights_spec_option_runs_any_file_name(pytester, healthy):
    spec = pytester.path / "checks.yaml"
    spec.write_text("assertions:\n  - kind: finite\n")
    result = run(pytester, "--checkpoint", str(healthy), "--weights-spec", str(spec))
    result.assert_outcomes(passed=1)


def test_depth_trend_and_last_failed(pytester, tmp_path):
    tensors = transformer_like(layers=6)
    for i in range(6):
        tensors[f"model.layers.{i}.attn.q.weight"] *= 1 + i  # std grows with depth
    ckpt = save(tmp_path / "deep.safetensors", tensors)
    pytester.makefile(
        ".weights.yaml",
        s="""
defaults:
  select: {include: ["*.attn.q.weight"]}
assertions:
  - {name: grows, kind: depth_trend, stat: std, direction: grows, min_rho: 0.9}
  - {name: shrinks, kind: depth_trend, stat: std, direction: shrinks}
""",
    )
    result = pytester.runpytest("s.weights.yaml", "--checkpoint", str(ckpt))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*model.layers.*.attn.q.weight*ρ=1 *"])
    again = pytester.runpytest("s.weights.yaml", "--checkpoint", str(ckpt), "--lf")
    again.assert_outcomes(failed=1, deselected=1)


def test_statistics_are_computed_once_per_tensor(pytester, healthy, monkeypatch):
    from pytest_weights.readers.safetensors_file import SafetensorsFile

    reads: list[str] = []
    real_read = SafetensorsFile.read
    monkeypatch.setattr(SafetensorsFile, "read", lambda self, name: reads.append(name) or real_read(self, name))
    result = run(pytester, "--checkpoint", str(healthy))
    result.assert_outcomes(passed=len(DEFAULT_ITEMS))
    assert len(reads) == len(set(reads)) > 0


def test_checkpoint_bytes_are_never_modified(pytester, tmp_path):
    import hashlib

    ckpt = broken(tmp_path, lambda t: t["model.layers.1.attn.o.weight"].mul_(100))
    before = (hashlib.sha256(ckpt.read_bytes()).hexdigest(), ckpt.stat().st_mtime_ns)
    run(pytester, "--checkpoint", str(ckpt))
    assert (hashlib.sha256(ckpt.read_bytes()).hexdigest(), ckpt.stat().st_mtime_ns) == before


def test_bfloat16_checkpoint(pytester, tmp_path):
    ckpt = save(
        tmp_path / "bf16.safetensors",
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in transformer_like().items()},
    )
    run(pytester, "--checkpoint", str(ckpt)).assert_outcomes(passed=len(DEFAULT_ITEMS))


def test_run_directory_gives_items_per_step_and_latest(pytester, tmp_path):
    run_dir = tmp_path / "run"
    for step in (100, 2000, 500):
        save(run_dir / f"checkpoint-{step}" / "model.safetensors", transformer_like(seed=step))
    result = run(pytester, "--checkpoint", str(run_dir), "-k", "finite", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*finite?checkpoint-100? PASSED*", "*finite?checkpoint-500? PASSED*", "*finite?checkpoint-2000? PASSED*"]
    )
    result.stdout.fnmatch_lines(["*run: 3 checkpoint(s), steps 100, 500, 2000*"])
    latest = run(pytester, "--checkpoint", str(run_dir), "--weights-latest", "-k", "finite", "-v")
    latest.assert_outcomes(passed=1)
    latest.stdout.fnmatch_lines(["*run: checked step 2000 (latest); trajectory over 3 checkpoints, steps 100…2000*"])


def test_reference_must_exist(pytester, healthy, tmp_path):
    result = run(pytester, "--checkpoint", str(healthy), "--reference", str(tmp_path / "base.safetensors"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*base.safetensors: --reference: no such file or directory*"])
    ok = run(pytester, "--checkpoint", str(healthy), "--reference", str(healthy), "-k", "finite")
    ok.assert_outcomes(passed=1)
    ok.stdout.fnmatch_lines(["*reference: *healthy.safetensors*"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_json_report(pytester, tmp_path, workers):
    import json

    tensors = transformer_like()
    tensors["model.layers.1.attn.o.weight"] *= 100
    ckpt = save(tmp_path / "bad.safetensors", tensors)
    out = tmp_path / "report.json"
    result = pytester.runpytest_subprocess("--checkpoint", str(ckpt), f"--weights-json={out}", *workers)
    result.assert_outcomes(passed=3, failed=2)  # the ×100 layer: scale-vs-model, consistent-with-siblings
    doc = json.loads(out.read_text())
    assert doc["version"] == 1 and doc["summary"] == {"passed": 3, "failed": 2, "skipped": 0}
    by_name = {r["name"]: r for r in doc["results"]}
    bad = by_name["consistent-with-siblings"]
    assert not bad["passed"] and bad["spec"]["file"].endswith("default.weights.yaml") and bad["spec"]["line"] > 0
    assert bad["deviations"][0]["tensor"] == "model.layers.1.attn.o.weight"
    assert set(by_name["not-flat"]["observed"]) == {n for n, t in tensors.items() if t.ndim == 2 and t.numel() >= 4096}


def test_html_report_option(pytester, tmp_path):
    tensors = transformer_like()
    tensors["model.layers.1.attn.o.weight"] *= 100
    ckpt = save(tmp_path / "bad.safetensors", tensors)
    out = tmp_path / "report.html"
    result = run(pytester, "--checkpoint", str(ckpt), f"--weights-report={out}")
    result.assert_outcomes(passed=3, failed=2)
    html = out.read_text()
    assert "consistent-with-siblings" in html and "model.layers.1.attn.o.weight" in html
    assert html.count("<svg") >= 1


TINY = {"l.0.weight": torch.randn(16, 16), "l.1.weight": torch.randn(32, 32), "l.0.bias": torch.zeros(16)}
IF_EMPTY_SPEC = """\
defaults:
  select: {{min_ndim: 2, min_numel: 4096}}
{if_empty}assertions:
  - name: gaussian
    kind: gaussian_ks
  - name: siblings
    kind: sibling_consistency
"""
NOTHING = "nothing to check here: no float tensor matches include=['*'], min_ndim=2, min_numel=4096 (if_empty: skip)"


def test_if_empty_skip_skips_an_empty_selection_with_the_reason(pytester, tmp_path):
    tiny = save(tmp_path / "tiny.safetensors", TINY)  # every tensor < 4096 values
    pytester.makefile(".weights.yaml", s=IF_EMPTY_SPEC.format(if_empty="  if_empty: skip\n"))
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(tiny), "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=2)
    out = result.stdout.str()
    assert f"SKIPPED [1] s.weights.yaml:5: {NOTHING}" in out and f"SKIPPED [1] s.weights.yaml:7: {NOTHING}" in out


def test_without_if_empty_an_empty_selection_fails(pytester, tmp_path):
    tiny = save(tmp_path / "tiny.safetensors", TINY)
    pytester.makefile(".weights.yaml", s=IF_EMPTY_SPEC.format(if_empty=""))
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(tiny))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*found:    the selection matches no tensor*"])


def test_if_empty_skip_applies_to_run_scope_assertions(pytester, tmp_path):
    run_dir = tmp_path / "run"
    for step in (1, 2, 3):
        save(run_dir / f"step_{step}.safetensors", TINY)
    pytester.makefile(
        ".weights.yaml",
        s="defaults: {select: {min_numel: 4096}, if_empty: skip}\nassertions:\n  - {kind: run_trend, stat: std}\n",
    )
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(run_dir), "-rs")
    result.assert_outcomes(skipped=1)
    assert "s.weights.yaml:3: nothing to check here: no float tensor matches include=['*'], min_numel=4096" in (
        result.stdout.str()
    )


def test_bad_if_empty_is_an_error_item_naming_file_and_line(pytester, healthy):
    pytester.makefile(".weights.yaml", s="assertions:\n  - kind: finite\n    if_empty: sometimes\n  - kind: finite\n")
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(healthy))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*s.weights.yaml:3: 'if_empty' must be one of fail, skip, got 'sometimes'*"])
