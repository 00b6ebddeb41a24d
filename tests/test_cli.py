"""The ``pytest-weights`` command, run in-process through ``main(argv)`` on real files."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save, transformer_like

from pytest_weights.cli import main, stat_names

TENSORS = transformer_like()
FLOAT = {k: v for k, v in TENSORS.items() if v.is_floating_point()}


def np_std(name: str) -> float:
    return float(TENSORS[name].numpy().astype(np.float64).std())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("cli") / "model.safetensors", TENSORS)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    code, out, err = run(capsys, "inspect", *argv, "--json")
    assert (code, err) == (0, "")
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in output"))


# ---------------------------------------------------------------------------- validate


def test_validate_ok(capsys, tmp_path: Path) -> None:
    spec = tmp_path / "mine.weights.yaml"
    spec.write_text("version: 1\nassertions:\n  - kind: finite\n  - kind: gaussian_ks\n    tol: 0.1\n")
    code, out, _ = run(capsys, "validate", str(spec), "default")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"OK {spec} (2 assertions)"
    assert lines[1].startswith("OK ") and lines[1].endswith("default.weights.yaml (5 assertions)")


def test_validate_reports_every_error_with_file_and_line(capsys, tmp_path: Path) -> None:
    good = tmp_path / "good.weights.yaml"
    good.write_text("assertions:\n  - kind: finite\n")
    entries = tmp_path / "entries.weights.yaml"
    entries.write_text(
        "version: 1\n"
        "assertions:\n"
        "  - kind: finite\n"
        "  - kind: gaussian_ks\n"
        "    tol: -1\n"  # the entry's line (4) is reported: the kind rejects the value as a whole
        "  - kind: gausian_ks\n"  # line 6
    )
    broken = tmp_path / "broken.weights.yaml"
    broken.write_text("assertions:\n  - kind: finite\n  bad: [\n")
    code, out, err = run(capsys, "validate", str(good), str(entries), str(broken))
    assert code == 1
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"OK {good} (1 assertion)"
    assert lines[1].startswith(f"{entries}:4: ") and "tol" in lines[1]
    assert lines[2].startswith(f"{entries}:6: unknown assertion kind 'gausian_ks'")
    assert "did you mean 'gaussian_ks'" in lines[2]
    assert lines[3].startswith(f"{broken}:") and "invalid YAML" in lines[3]
    assert len(lines) == 4


def test_validate_missing_spec_is_an_error(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pytest-weights: error: ") and "nope.yaml" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unexpected_loader_error_is_one_line_and_debug_shows_its_traceback(
    capsys, tmp_path: Path, monkeypatch, where
) -> None:
    import pytest_weights.spec

    def crash(path: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")  # a loader bug, not an invalid spec

    monkeypatch.setattr(pytest_weights.spec, "load_spec", crash)
    spec = tmp_path / "any.weights.yaml"
    spec.write_text("assertions: []\n")
    code, out, err = run(capsys, "validate", str(spec))
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith(f"pytest-weights: error: {spec}: RecursionError: ")
    assert line.endswith(" (--debug for the traceback)")
    argv = ["--debug", "validate", str(spec)] if where == "before" else ["validate", str(spec), "--debug"]
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith(f"pytest-weights: error: {spec}: RecursionError: ")
    assert "--debug for the traceback" not in err


def test_specs_lists_bundled(capsys) -> None:
    code, out, _ = run(capsys, "specs")
    assert code == 0
    default = next(line for line in out.splitlines() if line.startswith("default "))
    assert "default.weights.yaml" in default and "Health checks" in default


# ---------------------------------------------------------------------------- inspect


def test_inspect_table_lists_every_tensor_with_exact_std(capsys, ckpt: Path) -> None:
    code, out, err = run(capsys, "inspect", str(ckpt), "--no-cache")
    assert (code, err) == (0, "")  # no progress line: stderr is not a TTY
    names = stat_names(None)
    header, rule, *rows = out.splitlines()
    assert header.split() == ["name", "shape", "dtype", "role", "depth", *names]
    assert set(rule) == {"-", " "}
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == set(TENSORS)
    std_col = names.index("std") - len(names)  # stat cells are filled for every float tensor
    for name in FLOAT:
        assert float(by_name[name][std_col]) == pytest.approx(np_std(name), rel=1e-6, abs=1e-12), name
    assert by_name["model.layers.3.attn.q.weight"][1:5] == ["64x64", "float32", "model.layers.*.attn.q.weight", "3"]
    assert by_name["position_ids"] == ["position_ids", "1x32", "int64", "position_ids"]  # no statistics


def test_inspect_json_matches(capsys, ckpt: Path) -> None:
    records = inspect_json(capsys, str(ckpt), "--no-cache", "--stats", "mean,std,ks")
    assert sorted(r["name"] for r in records) == sorted(TENSORS)
    by_name = {r["name"]: r for r in records}
    q = by_name["model.layers.2.attn.q.weight"]
    assert q["shape"] == [64, 64] and q["dtype"] == "float32" and q["depth"] == 2
    assert q["role"] == "model.layers.*.attn.q.weight"
    for name in FLOAT:
        assert by_name[name]["std"] == pytest.approx(np_std(name), rel=1e-6, abs=1e-12)
        t = TENSORS[name].numpy().astype(np.float64)
        assert by_name[name]["mean"] == pytest.approx(t.mean(), rel=1e-6, abs=1e-9)
    assert by_name["embed.weight"]["depth"] is None
    assert by_name["position_ids"] == {
        "name": "position_ids",
        "shape": [1, 32],
        "dtype": "int64",
        "role": "position_ids",
        "depth": None,
        "group": "weights",
        "mean": None,
        "std": None,
        "ks": None,
    }
    assert by_name["model.layers.0.norm.weight"]["ks"] == 1.0  # constant: D = 1 by definition


def test_inspect_csv_parses(capsys, ckpt: Path) -> None:
    code, out, _ = run(capsys, "inspect", str(ckpt), "--no-cache", "--csv", "--include", "model.layers.1.*")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = sorted(n for n in TENSORS if n.startswith("model.layers.1."))
    assert [r["name"] for r in rows] == expected
    assert list(rows[0]) == ["name", "shape", "dtype", "role", "depth", "group", *stat_names(None)]
    for r in rows:
        assert float(r["std"]) == pytest.approx(np_std(r["name"]), rel=1e-6, abs=1e-12)
        assert r["depth"] == "1"


def test_inspect_roles_groups_layers(capsys, ckpt: Path) -> None:
    records = inspect_json(capsys, str(ckpt), "--no-cache", "--roles", "--stats", "std,kurtosis")
    by_role = {r["role"]: r for r in records}
    q = by_role["model.layers.*.attn.q.weight"]
    assert q["count"] == 6 and q["depths"] == [0, 1, 2, 3, 4, 5]
    stds = [np_std(f"model.layers.{i}.attn.q.weight") for i in range(6)]
    assert q["std"] == pytest.approx(float(np.median(stds)), rel=1e-6)
    assert by_role["embed.weight"]["count"] == 1 and by_role["embed.weight"]["depths"] == []
    assert by_role["position_ids"]["std"] is None
    assert sum(r["count"] for r in records) == len(TENSORS)

    code, out, _ = run(capsys, "inspect", str(ckpt), "--no-cache", "--roles", "--stats", "std")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("model.layers.*.attn.q.weight "))
    assert line.split()[1:3] == ["6", "0-5"]


def test_inspect_uses_the_plugin_cache_dir(capsys, ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fresh = inspect_json(capsys, str(ckpt), "--no-cache")
    assert not (tmp_path / ".pytest_cache").exists()
    assert inspect_json(capsys, str(ckpt), "--stats", "std") == inspect_json(
        capsys, str(ckpt), "--no-cache", "--stats", "std"
    )
    cache = tmp_path / ".pytest_cache"
    assert (cache / ".gitignore").is_file()  # like pytest's own, never committed
    assert list((cache / "d" / "pytest-weights").glob("*.json"))
    # some statistics cached (std), others not: computed, and the result is the same
    assert inspect_json(capsys, str(ckpt)) == fresh
    assert inspect_json(capsys, str(ckpt)) == fresh


def test_missing_checkpoint_is_one_line_exit_2(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "inspect", str(tmp_path / "missing.safetensors"))
    assert code == 2
    assert out == ""
    assert err == f"pytest-weights: error: {tmp_path / 'missing.safetensors'}: no such file or directory\n"


def test_corrupt_checkpoint_and_bad_stat_are_one_line_exit_2(capsys, tmp_path: Path, ckpt: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\x00" * 7 + b"{not json")
    code, out, err = run(capsys, "inspect", str(bad), "--no-cache")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"pytest-weights: error: {bad}: ")
    code, out, err = run(capsys, "inspect", str(ckpt), "--stats", "std,kurtossis")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "unknown statistic 'kurtossis' (did you mean 'kurtosis'?)" in err


def test_entry_point_help() -> None:
    exe = shutil.which("pytest-weights", path=str(Path(sys.executable).parent)) or shutil.which("pytest-weights")
    assert exe is not None, "the pytest-weights console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("check", "diff", "validate", "inspect", "specs", "init"):
        assert command in proc.stdout
