"""The engine: parallel slices, pipelined tensors and fused kernels change nothing but the speed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import save

from pytest_weights.engine import StatStore, Workers, compute_pass, reduce_tensor
from pytest_weights.readers import open_checkpoint
from pytest_weights.stats import KSNormal, Moments, Statistic, ValueHistogram

STATS = [Moments(), KSNormal(), KSNormal(max_error=0.0)]


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "big": torch.randn(700, 3000, generator=g) * 0.02,  # several slices, mapped (≥ 1 MiB)
        "offset": 1.0 + 0.01 * torch.randn(600, 1000, generator=g),  # refined by a second sweep
        "bf16": (torch.randn(1000, 1500, generator=g) * 0.02).bfloat16(),
        "small": torch.randn(64, 64, generator=g),  # reduced inline
        "vector": torch.ones(10),
        "with_nan": torch.where(torch.rand(800, 800, generator=g) < 1e-3, float("nan"), 0.5),
    }


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save(tmp_path / "m.safetensors", tensors())


def test_workers_and_slicing_give_bit_identical_results():
    for t in tensors().values():
        inline = reduce_tensor(t, STATS, slice_elements=1 << 18)
        with Workers(2) as w:
            parallel = reduce_tensor(t, STATS, workers=w, slice_elements=1 << 18)
        for s in STATS:
            assert parallel[s] == inline[s], s


def test_compute_pass_matches_reduce_tensor_and_keeps_only_what_was_asked(checkpoint):
    store = StatStore()
    with open_checkpoint(checkpoint) as ckpt:
        progress = compute_pass(ckpt, {i.name: STATS for i in ckpt.tensors()}, store, workers=2)
        cid = ckpt.identity()
    assert progress.finished and progress.tensors_done == progress.tensors_total == len(tensors())
    for name, t in tensors().items():
        values = store.get(cid, name)
        assert set(values) == set(STATS)  # the histogram (an intermediate) is not kept
        want = reduce_tensor(t, STATS)
        for s in STATS:
            assert values[s] == want[s], (name, s)


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs one thread per process; this checks a real restore
    yield
    torch.set_num_threads(saved)


def test_thread_setting_is_restored_even_when_a_read_fails(checkpoint, two_threads):
    before = torch.get_num_threads()
    with open_checkpoint(checkpoint) as ckpt:
        compute_pass(ckpt, {"big": [Moments()]}, StatStore(), workers=2)
        assert torch.get_num_threads() == before
        checkpoint.write_bytes(b"")  # truncated under our feet: mapping "big" must fail cleanly
        with pytest.raises(Exception, match="truncated"):
            compute_pass(ckpt, {"big": [Moments()], "offset": [Moments()]}, StatStore(), workers=2)
    assert torch.get_num_threads() == before


@dataclass(frozen=True)
class Exploding(Statistic):
    layout = "flat"

    def reduce(self, block, deps):
        raise RuntimeError("boom in a worker")

    def merge(self, a, b):
        return a

    def finalize(self, state, deps):
        return state


def test_errors_in_worker_threads_reach_the_caller(checkpoint, two_threads):
    before = torch.get_num_threads()
    with open_checkpoint(checkpoint) as ckpt, pytest.raises(RuntimeError, match="boom in a worker"):
        compute_pass(ckpt, {"big": [Exploding(), Moments()]}, StatStore(), workers=2)
    assert torch.get_num_threads() == before


def test_fused_sweep_gives_the_same_moments_as_a_sweep_of_its_own():
    t = torch.randn(3, 700_000, generator=torch.Generator().manual_seed(1))
    alone = reduce_tensor(t, [Moments()])[Moments()]
    fused = reduce_tensor(t, [Moments(), ValueHistogram()])[Moments()]
    assert fused == alone


def test_a_tensor_written_in_place_between_checks_is_measured_afresh():
    # the training-loop case: the same parameter object, updated by the optimizer in place
    w = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(2))
    first = reduce_tensor(w, [Moments(), KSNormal()])
    w.mul_(3.0)
    second = reduce_tensor(w, [Moments(), KSNormal()])
    assert second[Moments()].std == pytest.approx(3 * first[Moments()].std, rel=1e-6)


def test_a_workers_pool_need_not_be_entered():
    t = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    assert reduce_tensor(t, [Moments()], workers=Workers(2))[Moments()] == reduce_tensor(t, [Moments()])[Moments()]


def test_a_checkpoint_rewritten_during_the_pass_is_refused(checkpoint):
    from pytest_weights.errors import CheckpointError

    with open_checkpoint(checkpoint) as ckpt:
        store = StatStore()
        compute_pass(ckpt, {"big": [Moments()]}, store)  # unchanged: fine
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[:-4] + b"\0\0\0\0")  # same size, new bytes, new mtime
        with pytest.raises(CheckpointError, match="changed while it was being read"):
            compute_pass(ckpt, {"offset": [Moments()]}, StatStore())


def test_rows_statistics_do_not_depend_on_the_callers_thread_count():
    """A multi-threaded matmul or LAPACK call changes its last bits with the thread count: rows
    statistics (row structure, the Gram matrix and its eigenvalues) run with a fixed count, so a
    2 MiB matrix gives the same bits whether the caller runs 1 or 2 torch threads."""
    from pytest_weights.stats.shape import Shape
    from pytest_weights.stats.spectral import Spectral

    g = torch.Generator().manual_seed(7)
    w = torch.randn(768, 768, generator=g) * 0.02 + torch.randn(768, 1, generator=g) * 0.01
    stats = [Shape(), Spectral()]
    saved = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(reduce_tensor(w, stats))
            assert torch.get_num_threads() == n  # restored
    finally:
        torch.set_num_threads(saved)
    for s in stats:
        assert results[0][s] == results[1][s], s
