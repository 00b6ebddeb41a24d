"""The plugin costs nothing until it is used: pytest loads it in every run of every project
in the environment, so loading it must not import torch, numpy, scipy or yaml.

Each test runs pytest (or the CLI) in a fresh interpreter and records ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save, transformer_like

HEAVY = ("torch", "numpy", "scipy", "yaml", "safetensors")

#: A conftest that records every imported module's name when the session ends.
RECORDER = """\
import json, sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def unrelated_project(root: Path) -> Path:
    """A project with one ordinary test and nothing to do with checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "conftest.py").write_text(RECORDER)
    (root / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    return root


def modules_after_pytest(root: Path, *args: str) -> set[str]:
    """The modules imported by a ``pytest`` run in ``root`` (a fresh interpreter)."""
    (root / "modules.json").unlink(missing_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode in (0, 5), run.stdout[-3000:] + run.stderr[-3000:]
    return set(json.loads((root / "modules.json").read_text()))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in HEAVY if m in modules}


@pytest.mark.parametrize("args", [["--co", "-q"], ["-q"]], ids=["collect-only", "run"])
def test_an_unrelated_project_imports_nothing_heavy(tmp_path, args):
    root = unrelated_project(tmp_path / "proj")
    with_plugin = modules_after_pytest(root, *args)
    without = modules_after_pytest(root, *args, "-p", "no:weights")
    assert "pytest_weights.plugin" in with_plugin  # the entry point was loaded
    assert heavy(with_plugin) - heavy(without) == set(), "loading the plugin imported these"
    assert not {"torch", "numpy", "scipy"} & with_plugin
    loaded = {m for m in with_plugin if m.startswith("pytest_weights.")}
    assert not loaded & {"pytest_weights.plugin.session", "pytest_weights.plugin.items", "pytest_weights.runner"}


def test_options_of_the_plugin_alone_import_nothing_heavy(tmp_path):
    """--weights-json / --weights-report without a checkpoint or spec: still nothing to compute."""
    root = unrelated_project(tmp_path / "proj")
    modules = modules_after_pytest(root, "-q", f"--weights-json={tmp_path / 'r.json'}")
    assert "torch" not in modules and "numpy" not in modules


def test_a_checkpoint_imports_torch(tmp_path):
    """Sanity check of the recorder: with a spec file and --checkpoint the engine is there."""
    root = unrelated_project(tmp_path / "proj")
    ckpt = save(tmp_path / "m.safetensors", transformer_like(layers=2))
    (root / "my.weights.yaml").write_text("version: 1\nassertions:\n  - kind: finite\n")
    modules = modules_after_pytest(root, "-q", "my.weights.yaml", f"--checkpoint={ckpt}")
    assert {"torch", "numpy", "yaml"} <= modules
    assert "pytest_weights.plugin.session" in modules


def test_a_spec_file_without_checkpoint_loads_the_spec(tmp_path):
    """A ``*.weights.yaml`` in the project is collected (its items skip): that needs the loader."""
    root = unrelated_project(tmp_path / "proj")
    (root / "my.weights.yaml").write_text("version: 1\nassertions:\n  - kind: finite\n")
    modules = modules_after_pytest(root, "-q")
    assert "yaml" in modules and "pytest_weights.plugin.items" in modules


def python_modules(code: str) -> set[str]:
    """The modules imported by ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_importing_the_package_is_lazy():
    modules = python_modules("import pytest_weights, pytest_weights.plugin\nassert pytest_weights.__version__")
    assert heavy(modules) == set()


def test_public_names_still_import_on_use():
    modules = python_modules(
        "from pytest_weights import check, WeightsGate, open_checkpoint, Checker, SpecError\n"
        "import pytest_weights as pw\n"
        "assert callable(check) and pw.check is check and 'WeightsGate' in dir(pw)\n"
        "assert sorted(pw.__all__) == sorted(pw._EXPORTS)\n"
        "assert all(getattr(pw, name) is not None for name in pw.__all__)"
    )
    assert "torch" in modules


def test_an_unknown_attribute_is_an_attribute_error():
    import pytest_weights

    with pytest.raises(AttributeError, match="no_such_name"):
        pytest_weights.no_such_name  # noqa: B018


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_version_and_help_import_no_torch(flag):
    modules = python_modules(f"from pytest_weights import cli\ncli.main([{flag!r}])")
    assert "pytest_weights.cli" in modules
    assert heavy(modules) - {"yaml"} == set(), "pytest-weights --version/--help must not import torch"


def test_spec_suffixes_agree_with_the_loader():
    from pytest_weights import plugin, spec

    assert plugin.SPEC_SUFFIXES == spec.SPEC_SUFFIXES
