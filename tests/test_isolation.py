"""No traceback reaches a user: an error while opening, reading or judging one checkpoint or
assertion fails that item in one line (spec file:line, assertion, checkpoint, cause) and
everything else still runs; real pytest runs (pytester), real corrupt files, the real CLI."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save, transformer_like
from torch.distributed.checkpoint.api import CheckpointException

from pytest_weights import check, open_checkpoint
from pytest_weights.assertions.base import Assertion, Outcome, TensorView
from pytest_weights.errors import CheckpointError
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.runner import Checker
from pytest_weights.selection import Selection
from pytest_weights.spec import AssertionSpec, Spec, parse_spec
from pytest_weights.stats.moments import Moments

SPEC = """\
assertions:
  - name: finite
    kind: finite
  - name: not-constant
    kind: stat_range
    stat: std
    min: 1.0e-8
    select: {min_ndim: 2}
  - name: siblings
    kind: sibling_consistency
"""
#: Test-only kinds (a pytester conftest registers them; each test removes them again): one whose
#: evaluation raises, one whose statistic raises inside the engine on a sentinel value.
TEST_KINDS = """\
import dataclasses
import torch
from pytest_weights.assertions.base import REGISTRY, Assertion, Outcome
from pytest_weights.stats.base import Statistic


@dataclasses.dataclass(frozen=True)
class Exploding(Statistic):
    layout = "flat"

    def reduce(self, block, deps):
        if bool((block == 12345.0).any()):
            raise RuntimeError("simulated kernel failure")
        return 0

    def merge(self, a, b):
        return 0

    def finalize(self, state, deps):
        return 0


@dataclasses.dataclass(frozen=True)
class Boom(Assertion):
    kind = "boom_for_tests"

    def statistics(self):
        return ()

    def evaluate(self, tensors):
        raise ValueError("simulated bug in a kind")


@dataclasses.dataclass(frozen=True)
class Explode(Assertion):
    kind = "explode_for_tests"

    def statistics(self):
        return (Exploding(),)

    def evaluate(self, tensors):
        return Outcome(True, "fine")


REGISTRY.setdefault(Boom.kind, Boom)
REGISTRY.setdefault(Explode.kind, Explode)
"""
BOOM = """\
assertions:
  - name: boom
    kind: boom_for_tests
  - name: fine
    kind: finite
"""
EXPLODE = """\
assertions:
  - name: explode
    kind: explode_for_tests
    select: {min_ndim: 2}
  - name: finite
    kind: finite
"""
HINT = "(--weights-debug for the traceback)"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def corrupt_npz(path: Path, tensors: dict[str, torch.Tensor], member: str, want: str) -> Path:
    """An ``.npz`` that opens (every ``.npy`` header intact) but whose ``member`` fails when read:
    bytes inside its deflate stream overwritten. ``want``: "crc" (the data inflates, its CRC-32
    is wrong) or "deflate" (the stream itself is invalid: zlib fails)."""
    np.savez_compressed(path, **{k: v.numpy() for k, v in tensors.items()})
    raw = path.read_bytes()
    info = zipfile.ZipFile(path).getinfo(member + ".npy")
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for percent in range(10, 95, 5):
        for fill in (b"\xff", b"\x00", b"\xa5"):
            pos = start + info.compress_size * percent // 100
            data = bytearray(raw)
            data[pos : pos + 2000] = fill * 2000
            path.write_bytes(bytes(data))
            try:
                ckpt = open_checkpoint(path)
            except CheckpointError:
                continue  # the header was hit: not a mid-pass failure
            with ckpt:
                try:
                    ckpt.read(member)
                except (CheckpointError, zlib.error) as e:
                    got = "crc" if "CRC" in str(e) else "deflate"
                else:
                    continue
            if got == want:
                return path
    if os.environ.get("CI"):  # pragma: no cover
        pytest.fail(f"no corruption gave a {want!r} failure")
    pytest.skip(f"this zlib gave no {want!r} corruption")  # pragma: no cover


def reports(result: pytest.RunResult) -> list[pytest.TestReport]:
    return [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.when == "call"]


def assert_no_traceback(result: pytest.RunResult) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text and "Interrupted" not in text


# ---------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("want", "member"),
    [("crc", "model.layers.1.attn.q.weight"), ("deflate", "model.layers.1.mlp.up.weight")],
    ids=["bad-crc-small-tensor", "bad-deflate-large-tensor"],
)
def test_a_checkpoint_failing_mid_pass_fails_only_its_items(pytester, tmp_path, want, member):
    first = save(tmp_path / "first.safetensors", transformer_like(seed=1))
    # width 256: mlp.up is 1 MB, read and reduced in the engine's threads; attn.q inline
    bad = corrupt_npz(tmp_path / "bad.npz", transformer_like(layers=3, width=256), member, want)
    last = save(tmp_path / "last.safetensors", transformer_like(seed=2))
    pytester.makefile(".weights.yaml", s=SPEC)
    args = ["s.weights.yaml", "--checkpoint", str(first), "--checkpoint", str(bad), "--checkpoint", str(last)]
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=3)
    for r in reports(result):
        assert r.passed == ("bad.npz" not in r.nodeid), r.nodeid
        if r.failed:
            name = r.nodeid.split("::")[-1].split("[")[0]
            (line,) = r.longreprtext.splitlines()
            assert line.startswith(f"{pytester.path / 's.weights.yaml'}:")
            assert f": {name} on bad.npz: " in line and str(bad) in line and member in line
            assert len(line) < 600
    result.stdout.fnmatch_lines([f"pytest-weights: bad.npz: statistics pass failed: *{member}*"])
    assert_no_traceback(result)
    assert ("Bad CRC-32" if want == "crc" else "Error -3 while decompressing") in result.stdout.str()


def test_the_failed_checkpoint_keeps_no_partial_statistics(tmp_path):
    bad = corrupt_npz(tmp_path / "bad.npz", transformer_like(), "model.layers.4.mlp.up.weight", "crc")
    good = save(tmp_path / "good.safetensors", transformer_like())
    spec = parse_spec(SPEC, "s.weights.yaml").assertions[0]
    with open_checkpoint(bad) as b, open_checkpoint(good) as g:
        checker = Checker("cpu", cache=None)
        checker.prepare([(b, spec), (g, spec)])  # never raises for one checkpoint's sake
        assert set(checker.errors) == {b} and len(checker.passes) == 1
        assert not any(cid == b.identity() and values for (cid, _), values in checker.store.items())
        assert checker.judge(g, spec).passed
        result = checker.judge(b, spec)
        assert not result.passed and result.error is not None and "Bad CRC-32" in result.error
        assert result.format().count("\n") == 0
        with pytest.raises(CheckpointError, match="Bad CRC-32"):
            checker.evaluate(b, spec)  # the lower-level API raises it


class _Unreadable(StateDictCheckpoint):
    """An in-memory checkpoint whose reads fail like torch.distributed.checkpoint's do (a BaseException)."""

    def read(self, name: str) -> torch.Tensor:
        raise CheckpointException("rank 0 failed", {0: (OSError("shard gone"), None)})


def test_base_exceptions_of_a_reader_are_isolated_but_interrupts_are_not():
    tensors = {"w": torch.randn(64, 64), "v": torch.randn(64, 64)}
    spec = parse_spec(SPEC, "s.weights.yaml").assertions[1]
    bad, good = _Unreadable(tensors, "bad"), StateDictCheckpoint(tensors, "good")
    checker = Checker("cpu")
    checker.prepare([(bad, spec), (good, spec)])
    assert checker.judge(good, spec).passed
    result = checker.judge(bad, spec)
    assert not result.passed and "CheckpointException" in result.summary and "tensor 'w'" in result.summary
    assert "CheckpointException" in result.traceback

    class Interrupted(StateDictCheckpoint):
        def read(self, name: str) -> torch.Tensor:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Checker("cpu").prepare([(Interrupted(tensors, "i"), spec)])


# ---------------------------------------------------------------------------- evaluating


@pytest.mark.parametrize(
    "exc",
    [
        ZeroDivisionError("float division by zero"),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
        RuntimeError("linalg.eigvalsh: The algorithm failed to converge"),
        CheckpointException("rank 0 failed", {}),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_assertion_raising_anything_becomes_a_failed_result(exc):
    spec = AssertionSpec("boom", _raising(exc), Selection(), "s.weights.yaml", 7)
    ckpt = StateDictCheckpoint({"w": torch.randn(8, 8)}, "model")
    result = Checker("cpu").judge(ckpt, spec)
    assert not result.passed and not result.skipped
    assert result.format().startswith(f"s.weights.yaml:7: boom on model: {type(exc).__name__}")
    assert "\n" not in result.format() and len(result.summary) <= 300
    assert result.to_dict()["error"] == result.summary


def test_a_long_message_is_truncated():
    spec = AssertionSpec("boom", _raising(ValueError("x" * 5000)), Selection(), "s.weights.yaml", 3)
    result = Checker("cpu").judge(StateDictCheckpoint({"w": torch.randn(8, 8)}, "m"), spec)
    assert len(result.summary) <= 300 and result.summary.endswith("…")


def _raising(exc: BaseException) -> Assertion:
    """An assertion whose evaluation raises ``exc`` (a test double, not a registered kind)."""

    class Raises(Assertion):
        kind = "raises"

        def statistics(self) -> tuple[Moments, ...]:
            return (Moments(),)

        def evaluate(self, tensors: Sequence[TensorView]) -> Outcome:
            raise exc

    return Raises()


@pytest.fixture
def test_kinds(pytester):
    """The test-only kinds registered in the pytester run (and removed afterwards)."""
    from pytest_weights.assertions.base import REGISTRY

    pytester.makeconftest(TEST_KINDS)
    yield
    REGISTRY.pop("boom_for_tests", None)
    REGISTRY.pop("explode_for_tests", None)


def test_an_evaluation_error_is_a_one_line_failure_and_the_rest_runs(pytester, test_kinds, healthy):
    pytester.makefile(".weights.yaml", s=BOOM)
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(healthy))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    (failed,) = [r for r in reports(result) if r.failed]
    assert failed.longreprtext == (
        f"{pytester.path / 's.weights.yaml'}:2: boom on healthy.safetensors: ValueError: simulated bug in a kind {HINT}"
    )
    assert_no_traceback(result)


def test_weights_debug_shows_the_traceback(pytester, test_kinds, healthy):
    pytester.makefile(".weights.yaml", s=BOOM)
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(healthy), "--weights-debug")
    result.assert_outcomes(passed=1, failed=1)
    (failed,) = [r for r in reports(result) if r.failed]
    first, *trace = failed.longreprtext.splitlines()
    assert first.endswith(": boom on healthy.safetensors: ValueError: simulated bug in a kind")
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == "ValueError: simulated bug in a kind"
    assert any("conftest.py" in line for line in trace)  # where it was raised
    assert HINT not in result.stdout.str()


def test_an_error_of_the_engine_fails_only_that_checkpoint(pytester, test_kinds, tmp_path):
    tensors = transformer_like()
    tensors["model.layers.1.mlp.up.weight"][0, 0] = 12345.0  # the test statistic's trigger
    bad = save(tmp_path / "bad.safetensors", tensors)
    good = save(tmp_path / "good.safetensors", transformer_like())
    pytester.makefile(".weights.yaml", s=EXPLODE)
    result = run(pytester, "s.weights.yaml", "--checkpoint", str(bad), "--checkpoint", str(good))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=2)
    for r in reports(result):
        assert r.passed == ("good.safetensors" in r.nodeid)
        if r.failed:
            (line,) = r.longreprtext.splitlines()
            assert f"on bad.safetensors: {bad}: RuntimeError: simulated kernel failure" in line
            assert line.endswith(f"(tensor 'model.layers.1.mlp.up.weight') {HINT}")
    result.stdout.fnmatch_lines(["pytest-weights: bad.safetensors: statistics pass failed: RuntimeError: *"])
    assert_no_traceback(result)


def test_a_run_past_float64_range_and_empty_tensors_are_judged_not_crashed(tmp_path):
    """Two former crashes: an overflowing std series (sparkline of inf) and 0-element matrices."""
    g = torch.Generator().manual_seed(0)
    run = []
    for step in (10, 20, 30):
        huge = {f"model.layers.{i}.w": torch.randn(16, 16, generator=g, dtype=torch.float64) * 1e300 for i in range(3)}
        run.append((step, StateDictCheckpoint(huge, f"step {step}")))
    trend = parse_spec("assertions:\n  - {kind: run_trend, stat: std}\n", "t.weights.yaml").assertions[0]
    result = Checker("cpu").judge_run(run, trend, "run")
    assert result.error is None and result.summary
    empty = StateDictCheckpoint({"l.0.w": torch.randn(8, 8), "l.1.w": torch.zeros(0, 8)}, "m")
    shape = parse_spec("assertions:\n  - {kind: shape, select: {min_numel: 0}}\n", "s.weights.yaml").assertions[0]
    result = Checker("cpu").judge(empty, shape)
    assert result.error is None
    assert any("1 empty tensor(s) (0 values) left out: l.1.w (0, 8)" in n for n in result.notes)


def test_check_turns_evaluation_errors_into_failed_results_and_raises_for_unreadable_files(tmp_path, healthy):
    good = parse_spec("assertions:\n  - name: fine\n    kind: finite\n", "s.weights.yaml").assertions[0]
    boom = AssertionSpec(
        "boom", _raising(ZeroDivisionError("float division by zero")), Selection(), "s.weights.yaml", 9
    )
    report = check(healthy, Spec("s.weights.yaml", "", (good, boom)), device="cpu")
    fine, failed = report.results
    assert fine.passed and not report.passed
    assert failed.error == failed.summary == "ZeroDivisionError: float division by zero"
    assert "ZeroDivisionError" in str(report)
    bad = corrupt_npz(tmp_path / "bad.npz", transformer_like(), "model.layers.2.mlp.up.weight", "crc")
    with pytest.raises(CheckpointError, match="Bad CRC-32"):
        check(bad, parse_spec(SPEC, "s.weights.yaml"), device="cpu")


# ---------------------------------------------------------------------------- collection


LOADER_BUG = """\
import pytest_weights.plugin.items as items

_load = items.load_spec


def _crash(path):
    if str(path).endswith("choke.weights.yaml"):
        raise RecursionError("maximum recursion depth exceeded")  # a loader bug, not an invalid spec
    return _load(path)


def pytest_configure(config):
    items.load_spec = _crash


def pytest_unconfigure(config):
    items.load_spec = _load
"""


def test_a_spec_the_loader_chokes_on_is_one_error_item(pytester, healthy):
    pytester.makeconftest(LOADER_BUG)
    pytester.makefile(".weights.yaml", choke="assertions:\n  - kind: finite\n")
    pytester.makefile(".weights.yaml", good="assertions:\n  - kind: finite\n")
    result = run(pytester, ".", "--checkpoint", str(healthy))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*invalid spec: *choke.weights.yaml: cannot be loaded: RecursionError: *" + HINT])
    assert_no_traceback(result)


def test_a_spec_nested_500_deep_is_an_invalid_spec_not_a_crash(pytester, healthy):
    pytester.makefile(".weights.yaml", deep="assertions: " + "[" * 500 + "]" * 500 + "\n")
    pytester.makefile(".weights.yaml", good="assertions:\n  - kind: finite\n")
    result = run(pytester, ".", "--checkpoint", str(healthy))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*invalid spec: *deep.weights.yaml:1: *nested deeper than*"])
    assert_no_traceback(result)


# ---------------------------------------------------------------------------- command line


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_weights.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("want", ["crc", "deflate"])
def test_cli_inspect_of_a_corrupt_file_is_one_line_exit_2(tmp_path, want):
    bad = corrupt_npz(tmp_path / "bad.npz", transformer_like(), "model.layers.2.mlp.up.weight", want)
    proc = cli("inspect", str(bad), "--no-cache", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"pytest-weights: error: {bad}: ") and "model.layers.2.mlp.up.weight" in line


def test_cli_validate_of_a_deeply_nested_spec_is_one_line(tmp_path):
    deep = tmp_path / "deep.weights.yaml"
    deep.write_text("assertions: " + "[" * 3000 + "]" * 3000 + "\n")
    good = tmp_path / "good.weights.yaml"
    good.write_text("assertions:\n  - kind: finite\n")
    proc = cli("validate", str(deep), str(good), cwd=tmp_path)
    assert proc.returncode == 1  # an invalid spec, reported like any other
    assert f"OK {good} (1 assertion)" in proc.stdout
    text = proc.stdout + proc.stderr
    assert f"{deep}:1:" in text and "nested deeper than" in text
    assert "Traceback" not in text and len(text) < 1000
