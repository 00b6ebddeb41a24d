"""The outcome cache: a re-run on unchanged inputs replays every outcome without importing torch,
and any change (checkpoint bytes or mtime, spec text, options, a broken record) runs the real pass.

Every run is a real ``pytest`` process (``runpytest_subprocess``); a probe plugin records at session
end whether torch was imported. Outcomes of a replay are compared with those of the real pass:
the same counts, the same failure texts, the same ``--weights-json`` results.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import save, transformer_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_weights.digest import IDENTITY_SPAN
from pytest_weights.replay import OutcomeStore, fingerprint

PROBE = """\
import json, sys

def pytest_sessionfinish(session):
    with open("probe.json", "w") as f:
        json.dump({"torch": "torch" in sys.modules}, f)
"""
REPLAYED = "result(s) replayed from the outcome cache"

SPEC = """\
version: 1
assertions:
  - name: std-range
    kind: stat_range
    stat: std
    min: {lo}
    select: {{min_ndim: 2}}
  - name: finite
    kind: finite
"""


class Run:
    """One pytest process: its result, whether it imported torch, its failure texts and JSON results."""

    def __init__(self, pytester: pytest.Pytester, *args: str) -> None:
        probe = pytester.path / "probe.json"
        probe.unlink(missing_ok=True)
        out = pytester.path / "results.json"
        out.unlink(missing_ok=True)
        cache = ("-o", f"cache_dir={pytester.path / 'cache'}")
        self.result = pytester.runpytest_subprocess("-p", "probe", *cache, "--weights-json", str(out), *args)
        self.torch = json.loads(probe.read_text())["torch"]
        self.outcomes = self.result.parseoutcomes()
        self.replayed = any(REPLAYED in line for line in self.result.stdout.lines)
        self.json = json.loads(out.read_text())["results"] if out.exists() else None

    def failures(self) -> list[str]:
        """The failure texts, and the short summary (the pass's own summary lines and durations left out)."""
        lines = self.result.stdout.lines
        start = next((i for i, line in enumerate(lines) if "FAILURES" in line), len(lines))
        return [re.sub(r" in [0-9.]+s", "", line) for line in lines[start:] if not line.startswith("pytest-weights:")]


@pytest.fixture
def probe(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(probe=PROBE)
    return pytester


def broken(path: Path) -> Path:
    """A checkpoint the default spec fails on three ways (scale, siblings, flatness)."""
    tensors = transformer_like()
    tensors["model.layers.1.attn.o.weight"] *= 100
    tensors["model.layers.2.mlp.up.weight"].uniform_(-0.03, 0.03)
    return save(path, tensors)


def assert_same(replay: Run, real: Run) -> None:
    assert replay.outcomes == real.outcomes
    assert replay.failures() == real.failures()
    assert replay.json == real.json


@pytest.mark.parametrize("model", ["broken", "minilm"])
def test_a_rerun_replays_every_outcome_without_torch(probe, tmp_path, request, model):
    ckpt = broken(tmp_path / "broken.safetensors") if model == "broken" else request.getfixturevalue("minilm")
    first = Run(probe, "--checkpoint", str(ckpt))
    assert first.torch and not first.replayed
    again = Run(probe, "--checkpoint", str(ckpt))
    assert again.replayed and not again.torch
    assert_same(again, first)
    assert again.outcomes == ({"passed": 2, "failed": 3} if model == "broken" else {"passed": 5})
    fresh = Run(probe, "--checkpoint", str(ckpt), "--weights-no-cache")  # bypasses both caches
    assert fresh.torch and not fresh.replayed
    assert_same(again, fresh)


def _touch(ckpt: Path, probe: pytest.Pytester | None = None) -> None:
    st_ = ckpt.stat()
    os.utime(ckpt, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))


def _header_byte(ckpt: Path, probe: pytest.Pytester) -> None:
    """One byte of the first 64 KiB changed, size and mtime kept: only the digest can tell."""
    st_ = ckpt.stat()
    data = bytearray(ckpt.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 2] ^= 0x40  # a bit of the first tensor's first value (within the first 64 KiB)
    ckpt.write_bytes(bytes(data))
    os.utime(ckpt, ns=(st_.st_atime_ns, st_.st_mtime_ns))


def _tensor_name_byte(ckpt: Path, probe: pytest.Pytester) -> None:
    """One byte of the JSON header (a tensor's name) changed, size and mtime kept."""
    st_ = ckpt.stat()
    data = ckpt.read_bytes()
    ckpt.write_bytes(data.replace(b'"embed.weight"', b'"embed.weighT"', 1))
    os.utime(ckpt, ns=(st_.st_atime_ns, st_.st_mtime_ns))


def _corrupt_record(ckpt: Path, probe: pytest.Pytester) -> None:
    for record in (probe.path / "cache").rglob("pytest-weights-outcomes/*.json"):
        record.write_text('{"format": 1, "key": ')


def _tampered_record(ckpt: Path, probe: pytest.Pytester) -> None:
    for record in (probe.path / "cache").rglob("pytest-weights-outcomes/*.json"):
        try:
            doc = json.loads(record.read_text())
        except ValueError:
            continue  # a record of an earlier key, corrupted above
        doc["key"]["paths"] = {}  # a record claiming another key is not this run's
        record.write_text(json.dumps(doc))


def _missing_record(ckpt: Path, probe: pytest.Pytester) -> None:
    for record in (probe.path / "cache").rglob("pytest-weights-outcomes/*.json"):
        record.unlink()


def test_a_changed_checkpoint_or_a_broken_record_runs_the_real_pass(probe, tmp_path):
    ckpt = broken(tmp_path / "m.safetensors")
    Run(probe, "--checkpoint", str(ckpt))
    changes = (_touch, _header_byte, _tensor_name_byte, _corrupt_record, _tampered_record, _missing_record)
    for change in changes:
        change(ckpt, probe)
        after = Run(probe, "--checkpoint", str(ckpt))  # the real pass, which records again
        assert after.torch and not after.replayed, change.__name__
        if change in (_header_byte, _tensor_name_byte):  # other bytes: outcomes as found without any cache
            assert_same(after, Run(probe, "--checkpoint", str(ckpt), "--weights-no-cache"))
    again = Run(probe, "--checkpoint", str(ckpt))
    assert again.replayed and not again.torch
    assert_same(again, after)


def test_an_edited_spec_is_judged_again_and_only_it(probe, tmp_path):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    (probe.path / "a.weights.yaml").write_text(SPEC.format(lo=0.001))
    (probe.path / "b.weights.yaml").write_text(SPEC.format(lo=0.001))
    first = Run(probe, "a.weights.yaml", "b.weights.yaml", "--checkpoint", str(ckpt))
    assert first.outcomes == {"passed": 4}
    (probe.path / "b.weights.yaml").write_text(SPEC.format(lo=0.5))  # a tolerance no std meets
    after = Run(probe, "a.weights.yaml", "b.weights.yaml", "--checkpoint", str(ckpt))
    assert after.outcomes == {"passed": 3, "failed": 1}
    assert after.torch  # b is judged for real …
    after.result.stdout.fnmatch_lines([f"*2 {REPLAYED}*"])  # … a's two items are replayed
    assert_same(after, Run(probe, "a.weights.yaml", "b.weights.yaml", "--checkpoint", str(ckpt), "--weights-no-cache"))
    again = Run(probe, "a.weights.yaml", "b.weights.yaml", "--checkpoint", str(ckpt))
    assert again.replayed and not again.torch
    assert_same(again, after)


def test_another_reference_or_option_is_not_replayed(probe, tmp_path):
    ckpt = save(tmp_path / "m.safetensors", transformer_like(seed=1))
    base = save(tmp_path / "base.safetensors", transformer_like(seed=1))
    other = save(tmp_path / "other.safetensors", transformer_like(seed=2))
    args = ("--weights-spec", "finetune-delta", "--checkpoint", str(ckpt))
    first = Run(probe, *args, "--reference", str(base))
    assert Run(probe, *args, "--reference", str(base)).replayed
    changed = Run(probe, *args, "--reference", str(other))
    assert changed.torch and not changed.replayed
    assert changed.outcomes != first.outcomes or changed.json != first.json
    assert_same(changed, Run(probe, *args, "--reference", str(other), "--weights-no-cache"))
    device = Run(probe, *args, "--reference", str(base), "--weights-device", "cpu")
    assert device.torch and not device.replayed


def test_deselection_and_collect_only_work_on_replayed_items(probe, tmp_path):
    ckpt = broken(tmp_path / "m.safetensors")
    Run(probe, "--checkpoint", str(ckpt))
    one = Run(probe, "--checkpoint", str(ckpt), "-k", "finite")
    assert one.replayed and not one.torch
    assert one.outcomes == {"passed": 1, "deselected": 4}
    listed = probe.runpytest_subprocess(
        "-o", f"cache_dir={probe.path / 'cache'}", "--co", "-q", "--checkpoint", str(ckpt)
    )
    listed.stdout.fnmatch_lines(["default.weights.yaml::finite", "*5 tests collected*"])


def test_no_cache_option_neither_replays_nor_records(probe, tmp_path):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    assert not Run(probe, "--checkpoint", str(ckpt), "--weights-no-cache").replayed
    assert not list((probe.path / "cache").rglob("pytest-weights-outcomes/*.json"))
    assert Run(probe, "--checkpoint", str(ckpt)).torch


# ---------------------------------------------------------------- the key's parts, without pytest


def test_fingerprint_of_a_directory_sees_every_file(tmp_path):
    model = tmp_path / "model"
    save(model / "model.safetensors", transformer_like(layers=1))
    (model / "config.json").write_text("{}")
    before = fingerprint(model)
    assert before is not None and fingerprint(model) == before
    (model / "extra.bin").write_bytes(b"x")  # a file added to a model or run directory
    assert fingerprint(model) != before
    (model / "extra.bin").unlink()
    assert fingerprint(model) == before
    (model / "config.json").write_text("{} ")
    assert fingerprint(model) != before
    assert fingerprint(tmp_path / "missing") is None


def test_fingerprint_changes_whenever_the_statistics_cache_identity_does(tmp_path):
    """What invalidates the statistics cache (``Checkpoint.identity()``) invalidates the outcomes too."""
    from pytest_weights.readers import open_checkpoint

    ckpt = save(tmp_path / "m.safetensors", transformer_like(layers=2))

    def both() -> tuple[str, str | None]:
        with open_checkpoint(ckpt) as opened:
            return opened.identity(), fingerprint(ckpt)

    def flip(at: int) -> None:
        st_ = ckpt.stat()
        data = bytearray(ckpt.read_bytes())
        data[at] ^= 1
        ckpt.write_bytes(bytes(data))
        os.utime(ckpt, ns=(st_.st_atime_ns, st_.st_mtime_ns))

    seen = [both()]
    data_start = 8 + int.from_bytes(ckpt.read_bytes()[:8], "little")
    for change in (lambda: os.utime(ckpt, ns=(1, 1)), lambda: flip(data_start + 10), lambda: flip(-1)):
        change()
        now = both()
        assert now[0] != seen[-1][0] and now[1] != seen[-1][1]
        seen.append(now)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fingerprint_changes_with_any_byte_at_either_end(tmp_path, data):
    path = tmp_path / "f.bin"
    size = data.draw(st.integers(1, 3 * IDENTITY_SPAN), label="size")
    content = bytearray(data.draw(st.binary(min_size=1, max_size=64), label="seed") * size)[:size]
    path.write_bytes(bytes(content))
    stamp = path.stat().st_mtime_ns
    before = fingerprint(path)
    ends = [*range(min(size, IDENTITY_SPAN)), *range(max(0, size - IDENTITY_SPAN), size)]
    at = data.draw(st.sampled_from(ends), label="byte")
    content[at] ^= data.draw(st.integers(1, 255), label="xor")
    path.write_bytes(bytes(content))
    os.utime(path, ns=(stamp, stamp))  # same size, same mtime
    assert fingerprint(path) != before


def test_store_ignores_missing_corrupt_foreign_and_other_format_records(tmp_path):
    store = OutcomeStore(tmp_path)
    key = {"code": "x", "paths": {"m": ["/m", "1:ab"]}}
    assert store.load(key) is None
    files = {"/s.weights.yaml": {"sha256": "00", "nodeid": "s.weights.yaml", "items": []}}
    session = {"args": [], "left_out": []}
    store.save(key, session, files)
    assert store.load(key)["files"] == files
    store.save(key, session, {"/t.weights.yaml": files["/s.weights.yaml"]})  # merged, not replaced
    assert set(store.load(key)["files"]) == {"/s.weights.yaml", "/t.weights.yaml"}
    assert store.load({**key, "code": "y"}) is None
    (record,) = tmp_path.glob("*.json")
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "format": 0}))
    assert store.load(key) is None
    record.write_text("[1, 2")
    assert store.load(key) is None
    record.write_text(json.dumps({**doc, "files": []}))
    assert store.load(key) is None


# ---------------------------------------------------------------- pytest-weights check / inspect

CLI = """\
import sys
from pytest_weights.cli import main
status = main(sys.argv[1:])
sys.stderr.write("torch imported" if "torch" in sys.modules else "")
sys.exit(status)
"""


def cli(cwd: Path, *argv: str) -> tuple[int, str, bool]:
    """``pytest-weights ARGV`` in a fresh interpreter: exit status, stdout, whether torch was imported."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    return run.returncode, run.stdout, "torch imported" in run.stderr


def test_a_repeated_check_or_inspect_prints_its_stored_output_without_torch(tmp_path):
    ckpt = broken(tmp_path / "m.safetensors")
    for argv in (["check", str(ckpt)], ["inspect", str(ckpt), "--stats", "std,weibull_k", "--json"]):
        first = cli(tmp_path, *argv)
        assert first[2] and first[0] == (1 if argv[0] == "check" else 0)
        again = cli(tmp_path, *argv)
        assert again == (*first[:2], False)  # the same status and output, no torch
        assert cli(tmp_path, *argv, "--no-cache") == (*first[:2], True)
    _touch(ckpt)
    assert cli(tmp_path, "check", str(ckpt))[2]  # a changed checkpoint: judged again
    spec = tmp_path / "s.weights.yaml"
    spec.write_text(SPEC.format(lo=0.001))
    assert cli(tmp_path, "check", str(ckpt), "--spec", str(spec))[:1] == (0,)
    spec.write_text(SPEC.format(lo=0.5))
    status, _, torch = cli(tmp_path, "check", str(ckpt), "--spec", str(spec))
    assert (status, torch) == (1, True)  # an edited spec: judged again
