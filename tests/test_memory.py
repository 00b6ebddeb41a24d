"""Memory of the statistics pass is bounded by the largest tensor, not by the checkpoint.

A real safetensors file several times larger than the bound is generated in ``tmp_path``;
the default spec's statistics pass runs on it in a fresh subprocess, whose peak RSS
(``VmHWM``, read by the child) must stay within

    baseline + 2 × largest tensor + MARGIN

where *baseline* is the peak RSS of a child that only imports the package (interpreter,
torch: what does not depend on the data), *2 × largest tensor* is what the engine keeps
in flight (memory-mapped tensors being reduced; the next one is mapped but not yet
touched), and MARGIN covers everything else: the rest of the imports (scipy.stats, the
spec), per-thread reusable buffers (a slice's keys: 16 MiB per worker), thread pools and
allocator slack. The checkpoint is several times that bound. A second child on a
checkpoint a quarter the size must peak almost as high: memory does not grow with the
number of tensors (a per-tensor leak or allocator retention would show here). No mocks:
real files, real child processes, no allocator tuning.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

MB = 1 << 20
ROWS, COLS = 4096, 1024  # one fp32 matrix = 16 MiB (4 Mi elements: a single engine block)
N_MATRICES = 64  # 1 GiB of matrices: 2.5 × the 416 MiB allowed above the baseline
#: Measured on 2 cores with 16 MiB tensors: 120 MiB above the baseline, 62 of them the rest of the
#: imports (a child that imports everything and opens the file, without the pass); with 8 matrices
#: instead of 64, 13 MiB less.
MARGIN_MB = 192
#: Peak growth allowed from a quarter of the matrices to all of them.
GROWTH_MB = 32

BASELINE = textwrap.dedent(
    """
    import json
    from pytest_weights import Checker, load_spec, open_checkpoint  # the package is lazy: import the engine

    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({"peak_kb": int(status["VmHWM"].split()[0])}))
    """
)

CHILD = textwrap.dedent(
    """
    import json, sys
    from pytest_weights import Checker, load_spec, open_checkpoint

    spec = load_spec("default")
    ckpt = open_checkpoint(sys.argv[1])
    checker = Checker(device="cpu")
    checker.prepare([(ckpt, a) for a in spec.assertions])
    results = [checker.evaluate(ckpt, a) for a in spec.assertions]
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({
        "peak_kb": int(status["VmHWM"].split()[0]),
        "bytes_read": sum(p.bytes_total for p in checker.passes),
        "failed": [r.name for r in results if not r.passed],
    }))
    """
)


def write_checkpoint(path: Path, n_matrices: int, rows: int, cols: int, seed: int = 0) -> tuple[int, int]:
    """A transformer-like fp32 safetensors file written tensor by tensor; (data bytes, largest tensor bytes).

    Per layer: a LayerNorm weight (1-D) and a Gaussian matrix (std 0.02), in storage order.
    """
    entries: list[tuple[str, tuple[int, ...]]] = []
    for i in range(n_matrices):
        entries += [(f"model.layers.{i}.norm.weight", (cols,)), (f"model.layers.{i}.mlp.weight", (rows, cols))]
    header: dict[str, object] = {}
    offset = 0
    for name, shape in entries:
        nbytes = 4 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(seed)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, shape in entries:
            t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen).mul_(0.02)
            f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return offset, 4 * rows * cols


def run_child(code: str, *argv: str) -> dict:
    """Run ``code`` in a fresh interpreter; what it prints, with its peak RSS in bytes as ``peak``.

    ``VmHWM`` is read by the child itself: ``ru_maxrss`` of a fork+exec'd child may count
    the pre-exec copy of this (larger) test process, which would inflate the baseline.
    """
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["peak"] = result["peak_kb"] * 1024
    return result


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_rss_is_bounded_by_the_largest_tensor_not_the_checkpoint(tmp_path: Path) -> None:
    big = tmp_path / "big.safetensors"
    data_bytes, largest = write_checkpoint(big, N_MATRICES, ROWS, COLS)

    baseline = run_child(BASELINE)
    run = run_child(CHILD, str(big))

    assert run["bytes_read"] == data_bytes, "the pass must read every tensor once"
    assert run["failed"] == [], "a Gaussian checkpoint passes the default spec"
    allowance = 2 * largest + MARGIN_MB * MB
    grown = run["peak"] - baseline["peak"]
    detail = (
        f"peak RSS {run['peak'] / MB:.0f} MiB = baseline {baseline['peak'] / MB:.0f} MiB + {grown / MB:.0f} MiB; "
        f"allowed: 2 × largest tensor ({largest / MB:.0f} MiB) + {MARGIN_MB} MiB = {allowance / MB:.0f} MiB; "
        f"checkpoint {big.stat().st_size / MB:.0f} MiB"
    )
    print(detail)  # shown with -s / -rP
    assert grown <= allowance, detail
    # Well below the checkpoint: memory does not scale with the file.
    assert grown <= data_bytes / 2, detail
    assert data_bytes >= 2.4 * allowance, "the checkpoint must be several times the bound to prove anything"
    quarter = tmp_path / "quarter.safetensors"
    write_checkpoint(quarter, N_MATRICES // 4, ROWS, COLS)
    smaller = run_child(CHILD, str(quarter))
    growth = run["peak"] - smaller["peak"]
    assert growth <= GROWTH_MB * MB, f"{N_MATRICES // 4} → {N_MATRICES} matrices: peak RSS +{growth / MB:.0f} MiB"
