"""A quick slice of the fuzz campaign (``python -m tests.fuzz`` runs the full one; see docs/fuzzing.md).

Every format's seed is mutated :data:`CASES` times; each mutated checkpoint must be read (every
tensor as listed) or refused with a one-line CheckpointError naming one of its files, with no
other exception, no payload run, no input changed, in bounded time and memory. The seed of the
slice is :data:`SEED`, or ``PW_FUZZ_SEED`` from the environment to explore further.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

from pytest_weights.errors import CheckpointError

from .corpus import FORMATS, build_corpus
from .harness import GOOD, check, replay, run_case, warm_up
from .mutate import mutate, payloads

CASES = 100
SEED = int(os.environ.get("PW_FUZZ_SEED", "11"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_checkpoints_are_read_or_refused(tmp_path, fmt):
    seeds = build_corpus(tmp_path / "corpus", [fmt])
    warm_up(seeds)
    work = tmp_path / "cases"
    work.mkdir()
    outcomes = [run_case(seeds, fmt, SEED, case, work) for case in range(CASES)]
    bad = [o for o in outcomes if o.kind not in GOOD]
    assert not bad, "\n".join(f"[{o.kind}] case {o.case} (seed {SEED}): {o.detail}\n  {o.mutation}" for o in bad)
    assert any(o.kind == "refused" for o in outcomes)  # the mutations do reach the readers' checks


def test_mutations_are_reproducible(tmp_path):
    seeds = build_corpus(tmp_path / "a", ["safetensors", "torch-legacy", "onnx-external", "torchscript"])
    rebuilt = build_corpus(tmp_path / "b", ["onnx-external", "torchscript"])
    for fmt, seed in rebuilt.items():  # the same bytes again (TorchScript: its random serialization id zeroed)
        for target in seed.targets:
            assert (seed.directory / target).read_bytes() == (seeds[fmt].directory / target).read_bytes(), target
    for seed in seeds.values():
        data = (seed.directory / seed.targets[0]).read_bytes()
        for case in range(20):
            first = mutate(seed.targets[0], data, random.Random(f"1:{case}"), tmp_path / "m")
            again = mutate(seed.targets[0], data, random.Random(f"1:{case}"), tmp_path / "m")
            assert first == again


def test_a_hung_case_is_rebuilt_to_say_what_it_was(tmp_path):
    seeds = build_corpus(tmp_path / "corpus", ["npz"])
    work = tmp_path / "cases"
    work.mkdir()
    mutation = replay(seeds, "npz", 3, 7, work, tmp_path / "keep")
    assert mutation == run_case(seeds, "npz", 3, 7, work).mutation
    assert (tmp_path / "keep" / "npz-7" / "arrays.npz").exists() and not any(work.iterdir())


#: Payloads that write the marker from Python (shell payloads are never run, even here).
PYTHON_PAYLOADS = [i for i, p in enumerate(payloads(Path("/x"))) if b"system" not in p and b"subprocess" not in p]


@pytest.mark.parametrize("index", PYTHON_PAYLOADS)
def test_payloads_run_when_unpickled_without_restrictions(tmp_path, index):
    # the marker check means something only if a payload spliced into a pickle really runs under plain pickle
    marker = tmp_path / "PWNED"
    payload = payloads(marker)[index]
    data = pickle.dumps({"a": 1}, protocol=2)  # protocol 2, as torch.save writes: __builtin__ maps to builtins
    assert pickle.loads(data[:2] + payload + data[2:]) == {"a": 1}
    assert marker.exists()


def test_harness_flags_a_reader_that_raises_something_else(tmp_path, monkeypatch):
    from pytest_weights.readers.safetensors_file import SafetensorsFile

    seed = build_corpus(tmp_path / "corpus", ["safetensors"])["safetensors"]
    entry = seed.directory / seed.entry
    assert check(entry, seed.directory, tmp_path / "m")[0] == "ok"

    def broken(self, name):
        raise ValueError("a bug")

    monkeypatch.setattr(SafetensorsFile, "read", broken)
    kind, detail, _ = check(entry, seed.directory, tmp_path / "m")
    assert kind == "other" and "ValueError: a bug" in detail

    def elsewhere(self, name):
        raise CheckpointError("/somewhere/else", "not this checkpoint")

    monkeypatch.setattr(SafetensorsFile, "read", elsewhere)
    assert check(entry, seed.directory, tmp_path / "m")[0] == "invalid"


def test_campaign_counts_outcomes_per_format(capsys):
    from .__main__ import main

    assert main(["--cases", "12", "--jobs", "1", "--formats", "safetensors", "npz", "peft", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed 3, 12 cases" in out
    for fmt in ("safetensors", "npz", "peft", "total"):
        assert any(line.startswith(fmt) for line in out.splitlines())
