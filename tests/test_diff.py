"""``pytest-weights diff`` and :func:`pytest_weights.diff.diff_checkpoints`: per-tensor verdicts on
real zoo models and edited copies, numbers against numpy float64, NaN/Inf rules, name matching."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save
from safetensors.torch import load_file

from pytest_weights.cli import main
from pytest_weights.diff import diff_checkpoints
from pytest_weights.names import match_names
from pytest_weights.readers.memory import StateDictCheckpoint

CHANGED = "encoder.layer.3.attention.self.query.weight"
REMOVED = "pooler.dense.bias"
RESHAPED = "encoder.layer.0.output.dense.weight"
RETYPED = "encoder.layer.5.output.dense.bias"
WITH_NAN = "encoder.layer.2.intermediate.dense.weight"


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest_weights.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy().reshape(-1)


def expected(a: torch.Tensor, b: torch.Tensor, atol: float = 0.0, rtol: float = 0.0) -> dict[str, float]:
    """The per-tensor numbers, independently in numpy float64 (NaN in both at one place is not a change)."""
    x, y = f64(a), f64(b)
    changed = ~np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
    fin = np.isfinite(x) & np.isfinite(y)
    d = np.abs(x[fin] - y[fin])
    return {
        "changed": int(changed.sum()),
        "changed_fraction": float(changed.mean()),
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "rel_fro": float(np.linalg.norm(x[fin] - y[fin]) / np.linalg.norm(y[fin])),
    }


@pytest.fixture(scope="module")
def edited(zoo, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A copy of MiniLM with one tensor changed, one removed, one reshaped, one dtype-changed, NaN in one."""
    base = load_file(str(zoo["minilm"]))
    t = dict(base)
    g = torch.Generator().manual_seed(0)
    t[CHANGED] = base[CHANGED] + torch.randn(base[CHANGED].shape, generator=g) * 1e-3
    del t[REMOVED]
    t[RESHAPED] = base[RESHAPED].reshape(1536, 384).contiguous()
    t[RETYPED] = base[RETYPED].half()
    nan = base[WITH_NAN].clone()
    nan.view(-1)[[3, 999]] = math.nan
    t[WITH_NAN] = nan
    return save(tmp_path_factory.mktemp("diff") / "edited.safetensors", t), base, t


def test_zoo_model_against_itself_is_identical_exit_0(zoo, tmp_path):
    done = cli("diff", str(zoo["minilm"]), str(zoo["minilm"]), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    same = f"{zoo['minilm']} vs {zoo['minilm']}"
    assert done.stdout == f"{same}: identical within tolerance (atol 0, rtol 0): 104 tensors, 22713728 values\n"


def test_edited_copy_gets_the_right_verdict_per_tensor(zoo, edited, tmp_path):
    path, base, tuned = edited
    out = tmp_path / "diff.json"
    done = cli("diff", str(zoo["minilm"]), str(path), "--json", str(out), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    head = done.stdout.splitlines()[0]
    assert head.endswith(
        "5 of 104 tensors differ (atol 0, rtol 0): 2 changed, 1 dtype changed, 1 shape changed, 1 only in A"
    )
    doc = json.loads(out.read_text())
    assert doc["identical"] is False
    assert doc["summary"] == {"unchanged": 99, "changed": 2, "dtype": 1, "shape": 1, "only_a": 1, "only_b": 0}
    rows = {r["name"]: r for r in doc["tensors"]}
    assert {n for n, r in rows.items() if r["status"] != "unchanged"} == {CHANGED, REMOVED, RESHAPED, RETYPED, WITH_NAN}
    assert rows[REMOVED]["status"] == "only_a" and rows[REMOVED]["shape_a"] == [384]
    assert rows[RESHAPED]["status"] == "shape" and (rows[RESHAPED]["shape_a"], rows[RESHAPED]["shape_b"]) == (
        [384, 1536],
        [1536, 384],
    )
    assert rows[RESHAPED]["numel"] == 0  # values of different shapes are not compared
    assert (rows[RETYPED]["status"], rows[RETYPED]["dtype_a"], rows[RETYPED]["dtype_b"]) == (
        "dtype",
        "float32",
        "float16",
    )
    for name in (CHANGED, RETYPED):  # values compared in float64, against numpy
        want = expected(base[name], tuned[name])
        for key, value in want.items():
            assert rows[name][key] == pytest.approx(value, rel=1e-12, abs=0), (name, key)
    nan = rows[WITH_NAN]
    assert (nan["status"], nan["changed"], nan["nan_a"], nan["nan_b"], nan["nan_both"]) == ("changed", 2, 0, 2, 0)
    assert nan["max_abs"] == 0 and nan["finite"] == base[WITH_NAN].numel() - 2
    line = next(x for x in done.stdout.splitlines() if x.startswith(WITH_NAN))
    assert line.split()[1:3] == ["changed", "0.000339%"] and line.endswith("NaN in B only: 2")
    # rollups: by role and by layer, in float64
    roles = {r["key"]: r for r in doc["roles"]}
    q = roles["encoder.layer.*.attention.self.query.weight"]
    qs = [f"encoder.layer.{i}.attention.self.query.weight" for i in range(6)]
    num = sum(float(((f64(base[n]) - f64(tuned[n])) ** 2).sum()) for n in qs)
    den = sum(float((f64(tuned[n]) ** 2).sum()) for n in qs)
    assert (q["tensors"], q["differ"]) == (6, 1)
    assert q["rel_fro"] == pytest.approx(math.sqrt(num / den), rel=1e-12)
    layers = {r["key"]: r for r in doc["layers"]}
    assert layers["3"]["differ"] == 1 and layers["1"]["differ"] == 0 and layers["-"]["differ"] == 1
    assert "by role:" in done.stdout and "by layer:" in done.stdout


def test_ddp_prefixed_copy_is_matched_and_reported_as_a_rename(zoo, tmp_path):
    tensors = load_file(str(zoo["silero"]))
    ddp = save(tmp_path / "ddp.safetensors", {f"module.{k}": v for k, v in tensors.items()})
    done = cli("diff", str(zoo["silero"]), str(ddp), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[1] == "  names: matched 15 tensors after stripping 'module.' from B (shapes agree)"
    report = diff_checkpoints(ddp, zoo["silero"])  # either side
    assert report.identical and report.renames == (
        "matched 15 tensors after stripping 'module.' from A (shapes agree)",
    )


def test_tolerances_match_numpy_isclose(tmp_path):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 200, generator=g)
    b = a + torch.randn(300, 200, generator=g) * 1e-4 * (1 + a.abs())
    a[0, :3] = torch.tensor([math.inf, -math.inf, math.nan])
    b[0, :3] = torch.tensor([math.inf, math.inf, math.nan])  # same Inf: equal; opposite: changed; NaN both: equal
    b[1, 0] = math.nan
    pa = save(tmp_path / "a.safetensors", {"w": a, "ids": torch.arange(5)})
    pb = save(tmp_path / "b.safetensors", {"w": b, "ids": torch.tensor([0, 1, 2, 3, 5])})
    ids = {t.name: t for t in diff_checkpoints(pa, pb).tensors}["ids"]
    assert (ids.status, ids.changed, ids.max_abs) == ("changed", 1, 1.0)  # integers compared exactly
    for atol, rtol in [(0.0, 0.0), (1e-4, 0.0), (0.0, 1e-4), (5e-5, 5e-5), (1.0, 0.0)]:
        report = diff_checkpoints(pa, pb, atol=atol, rtol=rtol)
        w = {t.name: t for t in report.tensors}["w"]
        want = expected(a, b, atol, rtol)
        assert w.changed == want["changed"], (atol, rtol)
        assert (w.nan_both, w.nan_b, w.inf_changed) == (1, 1, 1)
        assert w.max_abs == pytest.approx(want["max_abs"], rel=1e-12)
        assert w.rel_fro == pytest.approx(want["rel_fro"], rel=1e-12)


def test_only_in_b_include_and_errors(capsys, tmp_path):
    a = save(tmp_path / "a.safetensors", {"x.weight": torch.ones(4), "y.weight": torch.zeros(2)})
    b = save(tmp_path / "b.safetensors", {"x.weight": torch.ones(4), "z.weight": torch.zeros(3)})
    code = main(["diff", str(a), str(b), "--json", "-"])
    out, err = capsys.readouterr()
    assert (code, err) == (1, "")
    doc = json.loads(out)  # --json - prints JSON only
    assert [(t["name"], t["status"]) for t in doc["tensors"]] == [
        ("x.weight", "unchanged"),
        ("y.weight", "only_a"),
        ("z.weight", "only_b"),
    ]
    assert main(["diff", str(a), str(b), "--include", "x.*"]) == 0
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--include", "nothing*"]) == 2
    assert "no tensor of" in capsys.readouterr().err
    assert main(["diff", str(a), str(b), "--atol", "-1"]) == 2
    assert "--atol must be a finite number ≥ 0" in capsys.readouterr().err
    assert main(["diff", str(a), str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err == f"pytest-weights: error: {tmp_path / 'missing.pt'}: no such file or directory\n"


def test_streams_one_pair_at_a_time():
    """Each pair is read, compared and released before the next one is read."""
    reads: list[str] = []

    class Logged(StateDictCheckpoint):
        def read(self, name: str) -> torch.Tensor:
            reads.append(f"{self.label}:{name}")
            return super().read(name)

    tensors = {f"l.{i}.weight": torch.full((8, 8), float(i)) for i in range(4)}
    other = {k: v + (k == "l.2.weight") for k, v in tensors.items()}
    report = diff_checkpoints(Logged(tensors, label="A"), Logged(other, label="B"))
    assert reads == [f"{side}:l.{i}.weight" for i in range(4) for side in "AB"]
    assert [t.name for t in report.differences] == ["l.2.weight"]


# ---------------------------------------------------------------------------- name matching


def test_match_names_strips_wrappers_only_when_that_pairs_them():
    a = {"module._orig_mod.enc.w": (2, 2), "module._orig_mod.head.w": (3,), "extra": (1,)}
    b = {"enc.w": (2, 2), "head.w": (4,), "model.enc.w": (2, 2)}
    m = match_names(a, b)
    # 'enc.w' and 'model.enc.w' both strip to 'enc.w' on B's side: ambiguous, left alone
    assert m.pairs == (("module._orig_mod.head.w", "head.w"),)
    assert m.only_a == ("module._orig_mod.enc.w", "extra") and m.only_b == ("enc.w", "model.enc.w")
    assert m.notes() == ["matched 1 tensor after stripping 'module._orig_mod.' from A (but every shape differs)"]


def test_match_names_exact_first_and_hf_wrappers():
    a = {"model.layers.0.w": (2,), "model.layers.1.w": (2,), "lm_head.weight": (5,), "norm": (1,)}
    b = {"layers.0.w": (2,), "layers.1.w": (2,), "norm": (1,)}
    m = match_names(a, b)
    assert m.pairs == (("model.layers.0.w", "layers.0.w"), ("model.layers.1.w", "layers.1.w"), ("norm", "norm"))
    assert m.only_a == ("lm_head.weight",) and m.only_b == ()
    assert m.notes("ft", "base") == ["matched 2 tensors after stripping 'model.' from ft (shapes agree)"]
    # wrappers on both sides: only the part that differs is named
    m = match_names({"module.model.x": (1,)}, {"model.x": (1,)})
    assert m.pairs == (("module.model.x", "model.x"),) and m.notes() == [
        "matched 1 tensor after stripping 'module.' from A (shapes agree)"
    ]
    assert match_names({"x": (1,)}, {"x": (1,)}).renames == ()
