"""``pytest-weights check``: the one-screen verdict, on real zoo models (subprocess) and faults
injected into copies of them, plus the headline logic (:mod:`pytest_weights.verdict`) alone."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, save, transformer_like
from safetensors.torch import load_file

from pytest_weights.assertions.base import NONFINITE, UNDEFINED, Deviation
from pytest_weights.cli import main
from pytest_weights.report import AssertionResult
from pytest_weights.verdict import GUESSES, Checked, coverage, problems, verdict

MINILM_COVERAGE = (
    "checked 39 matrices and 103 float tensors; left out: 1 non-float (embeddings.position_ids int64), "
    "1 small matrix (< 4096 values)"
)


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pytest_weights.cli ARGV`` in a fresh process (one torch thread: tests run in parallel)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest_weights.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- real models, subprocess


def test_check_healthy_minilm_exit_0_one_screen(zoo, tmp_path):
    done = cli("check", str(zoo["minilm"]), "--no-cache", "--device", "cpu", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines() == [
        "model.safetensors: healthy: 5 checks passed on 39 matrices",
        f"  {MINILM_COVERAGE}",
    ]


def test_check_silero_with_a_matrix_times_100_names_it_and_guesses(zoo, tmp_path):
    tensors = load_file(str(zoo["silero"]))
    tensors["conv3.weight"] = tensors["conv3.weight"] * 100
    bad = save(tmp_path / "silero_x100.safetensors", tensors)
    done = cli("check", str(bad), "--no-cache", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    headline, *rest = done.stdout.splitlines()
    assert headline.startswith("silero_x100.safetensors: 1 of 7 matrices is ≈×")
    assert "the model's median scale (std·√fan_in): conv3.weight" in headline
    assert headline.endswith(f"— likely {GUESSES['scale']} (guess)")
    # the failing item as the plugin prints it, then the coverage line
    assert any(line.endswith("scale-vs-model [scale_consistency] on silero_x100.safetensors") for line in rest)
    assert rest[-1] == "  checked 7 matrices and 15 float tensors; left out: 1 small matrix (< 4096 values)"


def test_check_unreadable_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10" + b"\x00" * 7 + b"{not json")
    done = cli("check", str(bad), "--no-cache", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pytest-weights: error: {bad}: ")


def test_check_minilm_scaled_layer_is_named_against_its_siblings(zoo, tmp_path, capsys):
    tensors = load_file(str(zoo["minilm"]))
    name = "encoder.layer.4.attention.output.dense.weight"
    tensors[name] = tensors[name] * 100
    bad = save(tmp_path / "model.safetensors", tensors)
    code, out, err = run(capsys, "check", str(bad), "--no-cache", "--device", "cpu")
    assert (code, err) == (1, "")
    headline = out.splitlines()[0]
    # the ratio to the role median, computed here in float64 with numpy
    stds = [
        np.float64(tensors[f"encoder.layer.{i}.attention.output.dense.weight"].double().numpy().std()) for i in range(6)
    ]
    ratio = stds[4] / np.median(stds)
    assert headline == (
        f"model.safetensors: 1 of 36 matrices is ≈×{ratio:.0f} its siblings' std: {name} — likely {GUESSES['scale']} "
        "(guess)"
    )
    assert out.rstrip().splitlines()[-1] == f"  {MINILM_COVERAGE}"


# ---------------------------------------------------------------------------- faults, in process


@pytest.fixture(scope="module")
def model() -> dict[str, torch.Tensor]:
    return transformer_like(layers=6, width=64)


def with_fault(model: dict[str, torch.Tensor], name: str, fault: str) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in model.items()}
    t = out[name]
    if fault == "nan":
        t.view(-1)[7] = math.nan
    elif fault == "zero":
        t.zero_()
    elif fault == "flat":  # uniform with the same std: kurtosis −1.2 among Gaussian matrices
        g = torch.Generator().manual_seed(5)
        t.copy_((torch.rand(t.shape, generator=g) * 2 - 1) * math.sqrt(3) * float(t.std()))
    return out


@pytest.mark.parametrize(
    ("fault", "fact", "guess"),
    [
        (
            "nan",
            "1 of 67 float tensors holds NaN/Inf: model.layers.3.mlp.up.weight (1 NaN, 0 Inf of 16384)",
            "nonfinite",
        ),
        ("zero", "1 of 37 matrices is all-zero or constant (std ≈ 0): model.layers.3.mlp.up.weight", "constant"),
        (
            "flat",
            "1 of 37 matrices is flat (uniform-like) among bell-shaped ones: model.layers.3.mlp.up.weight",
            "flat",
        ),
    ],
)
def test_each_fault_gets_its_fact_and_guess(capsys, tmp_path, model, fault, fact, guess):
    path = save(tmp_path / "m.safetensors", with_fault(model, "model.layers.3.mlp.up.weight", fault))
    code, out, err = run(capsys, "check", str(path), "--no-cache", "--device", "cpu")
    assert (code, err) == (1, "")
    headline = out.splitlines()[0]
    assert headline.startswith(f"m.safetensors: {fact}"), headline
    assert headline.endswith(f" — likely {GUESSES[guess]} (guess)")


def test_several_problems_one_line_each_every_tensor_once(capsys, tmp_path, model):
    bad = with_fault(with_fault(model, "model.layers.1.attn.q.weight", "nan"), "model.layers.2.attn.k.weight", "zero")
    bad["model.layers.4.attn.v.weight"] = bad["model.layers.4.attn.v.weight"] * 100
    code, out, _ = run(capsys, "check", str(save(tmp_path / "m.safetensors", bad)), "--no-cache", "--device", "cpu")
    assert code == 1
    head, *problem_lines = out.split("\n\n")[0].splitlines()
    assert head == "m.safetensors: 3 problems"
    assert [line.split(":")[0] for line in problem_lines] == [
        "  1 of 67 float tensors holds NaN/Inf",
        "  1 of 37 matrices is all-zero or constant (std ≈ 0)",
        "  1 of 37 matrices is ≈×100 its siblings' std",
    ]
    assert problem_lines[0].count("attn.q.weight") == 1 and "attn.q" not in problem_lines[1] + problem_lines[2]


def test_json_holds_results_and_verdicts_and_several_checkpoints_exit_with_the_worst(capsys, tmp_path, model):
    good = save(tmp_path / "good.safetensors", model)
    bad = save(tmp_path / "bad.safetensors", with_fault(model, "model.layers.0.mlp.down.weight", "zero"))
    missing = tmp_path / "missing.safetensors"
    report = tmp_path / "out" / "check.json"
    code, out, err = run(capsys, "check", str(good), str(bad), "--no-cache", "--device", "cpu", "--json", str(report))
    assert code == 1 and err == ""
    assert out.startswith("good.safetensors: healthy: 5 checks passed on 37 matrices\n")
    assert "\n\nbad.safetensors: 1 of 37 matrices is all-zero or constant" in out
    doc = json.loads(report.read_text())
    assert doc["version"] == 1 and doc["checkpoints"] == [str(good), str(bad)]
    assert doc["summary"] == {"passed": 7, "failed": 3, "skipped": 0}
    assert [v["healthy"] for v in doc["verdicts"]] == [True, False]
    assert doc["verdicts"][1]["problems"][0]["tensors"] == ["model.layers.0.mlp.down.weight"]
    assert doc["verdicts"][1]["problems"][0]["guess"] == GUESSES["constant"]
    assert {r["checkpoint"] for r in doc["results"]} == {"good.safetensors", "bad.safetensors"}

    code, out, err = run(capsys, "check", str(good), str(missing), "--no-cache", "--device", "cpu")
    assert code == 2
    assert out.startswith("good.safetensors: healthy")
    assert err == f"pytest-weights: error: {missing}: no such file or directory\n"


def test_spec_and_usage_errors_are_exit_2(capsys, tmp_path, model):
    path = save(tmp_path / "m.safetensors", model)
    code, out, err = run(capsys, "check", str(path), "--spec", "no-such-spec")
    assert (code, out) == (2, "") and err.startswith("pytest-weights: error: no-such-spec: ")
    invalid = tmp_path / "bad.weights.yaml"
    invalid.write_text("assertions:\n  - kind: gausian_ks\n")
    code, out, err = run(capsys, "check", str(path), "--spec", str(invalid))
    assert (code, out) == (2, "") and f"{invalid}:2: unknown assertion kind 'gausian_ks'" in err
    code, out, err = run(capsys, "check", str(path), "--spec", "finetune-delta", "--no-cache")
    assert code == 2 and "'view: delta' needs a reference checkpoint" in err
    code, _, err = run(capsys, "check", str(path), "--device", "tpu")
    assert code == 2 and err.count("\n") == 1


def test_reference_with_renamed_names_shows_the_rename(capsys, tmp_path, model):
    base = save(tmp_path / "base.safetensors", {f"module.{k}": v for k, v in model.items()})
    tuned = dict(model)
    tuned["model.layers.5.mlp.up.weight"] = model["model.layers.5.mlp.up.weight"] + 0.01
    ft = save(tmp_path / "ft.safetensors", tuned)
    spec = tmp_path / "frozen.weights.yaml"
    spec.write_text(
        "assertions:\n  - {name: frozen, kind: unchanged, view: delta, select: {exclude: ['*layers.5.*']}}\n"
    )
    code, out, err = run(capsys, "check", str(ft), "--spec", str(spec), "--reference", str(base), "--no-cache")
    assert (code, err) == (0, "")
    assert "note: ΔW names: matched 68 tensors after stripping 'module.' from the reference (shapes agree)" in out
    spec.write_text("assertions:\n  - {name: frozen, kind: unchanged, view: delta}\n")
    code, out, _ = run(capsys, "check", str(ft), "--spec", str(spec), "--reference", str(base), "--no-cache")
    assert code == 1
    assert (
        out.splitlines()[0] == "ft.safetensors: frozen failed (1 of 67 tensors changed): model.layers.5.mlp.up.weight"
    )


# ---------------------------------------------------------------------------- verdict alone


def result(name: str, kind: str, rows: list[Deviation], checked: int = 10, **kw) -> AssertionResult:
    """A result of ``kind`` on checkpoint ``m``: failed when it has rows or an error."""
    passed = not rows and kw.get("error") is None
    description = kw.pop("description", kind)
    return AssertionResult(name, kind, description, "s.yaml:1", "m", passed, "summary", tuple(rows), checked, **kw)


def test_problems_take_each_tensor_once_most_serious_first():
    nan_row = Deviation("a", "1 NaN, 0 Inf of 9 values", "finite values", UNDEFINED, statistic=NONFINITE)
    finite_row = Deviation("a", "1 NaN, 0 Inf of 9", "0 non-finite", value=1.0, bounds=(0, 0), statistic=NONFINITE)
    results = [
        result("finite", "finite", [finite_row], checked=20, statistic=NONFINITE),
        result(
            "sib",
            "sibling_consistency",
            [nan_row, Deviation("b", "std=0 (×0)", "", ratio=0.0), Deviation("c", "std=3 (×12)", "", ratio=12.0)],
        ),
        result(
            "scale",
            "scale_consistency",
            [Deviation("c", "std·√fan_in=3 (×11)", "", ratio=11.0), Deviation("d", "x (×6)", "", ratio=6.0)],
        ),
        result("range", "stat_range", [Deviation("e", "9", "std ≤ 1")], description="std ≤ 1"),
        result("broken", "gaussian_ks", [], error="RuntimeError: boom"),
    ]
    found = problems(results)
    assert [p.kind for p in found] == ["nonfinite", "constant", "scale", "other", "other"]
    assert [p.tensors for p in found[:3]] == [("a",), ("b",), ("c", "d")]
    assert found[2].fact == "2 matrices are scaled off the model: c (≈×12 its siblings' std), d (≈×6 " + (
        "the model's median scale (std·√fan_in))"
    )
    assert found[2].guess is None  # ×6 is not far enough from 1 to guess a scaling bug
    assert found[3].fact == "range failed (summary): e" and found[3].guess is None
    assert found[4].fact == "broken could not be checked: RuntimeError: boom"
    v = verdict("m", results)
    assert not v.healthy and v.headline().splitlines()[0] == "m: 5 problems"


def test_healthy_headline_counts_passed_and_skipped():
    ok = [result("a", "finite", []), result("b", "flatness", []), result("c", "sibling_consistency", [], skipped=True)]
    assert verdict("m", ok).headline() == "m: healthy: 2 checks passed on 0 float tensors; 1 skipped: c"


def test_coverage_counts_matrices_small_non_float_and_optimizer():
    from pytest_weights.readers.base import TensorInfo

    f32, i64 = torch.float32, torch.int64
    infos = [
        TensorInfo("w1", (64, 64), f32, ""),
        TensorInfo("w2", (64, 64), f32, ""),
        TensorInfo("tiny", (2, 8), f32, ""),
        TensorInfo("b", (64,), f32, ""),
        TensorInfo("ids", (1, 8), i64, ""),
        TensorInfo("head", (64, 64), f32, ""),
        TensorInfo("exp_avg", (64, 64), f32, "", "optimizer"),
    ]
    checked = [Checked("finite", 1, {"w1", "w2", "tiny", "b"}), Checked("flatness", 4096, {"w1", "w2"})]
    c = coverage(infos, checked)
    assert c.line() == (
        "checked 2 matrices and 4 float tensors; left out: 1 non-float (ids int64), 1 small matrix (< 4096 values), "
        "1 float not selected by any check, 1 optimizer-state"
    )


# ---------------------------------------------------------------------------- import hygiene


def test_cli_module_imports_no_torch_at_import_time():
    """Only the standard library, ``.errors`` and ``__version__`` at module level: engine, readers,
    runner, diff and verdict (all of which import torch) are imported inside the commands."""
    tree = ast.parse((ROOT / "pytest_weights" / "cli.py").read_text(encoding="utf-8"))
    relative = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level]
    assert {n.module for n in relative} <= {None, "errors"}, [n.module for n in relative]
    absolute = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    absolute |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and not n.level}
    assert absolute <= set(sys.stdlib_module_names) | {"__future__"}, absolute
