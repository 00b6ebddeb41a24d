"""The elementwise kernels of the hot loop, eager (default) or fused by ``torch.compile``.

Eager torch runs each elementwise op as its own pass over memory: the moments alone take
about ten passes. With :func:`use_compiled` on, the same functions are compiled once per
process (Inductor: C++/OpenMP on the CPU, Triton on CUDA; a few seconds to a minute the
first time, then cached on disk) into single fused passes that also accumulate in float64
in registers. Results agree with the eager path to ~1e-9 relative (tested).
"""

from __future__ import annotations

import functools

import torch

_state = {"compiled": False}


def use_compiled(on: bool) -> None:
    """Switch the hot-loop kernels to their ``torch.compile``-d versions (process-wide)."""
    _state["compiled"] = bool(on)


def compiled() -> bool:
    return _state["compiled"]


def _central_sums_eager(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # float32 cascade sums (relative error ~1e-8 measured) about a centre c that makes x − c exact
    d = x - c
    d2 = d * d
    lo, hi = torch.aminmax(x)
    sums = torch.stack([d.sum(), d2.sum(), (d2 * d).sum(), (d2 * d2).sum(), lo, hi])
    return sums.double()


def _central_sums_fused(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    d = x.double() - c.double()  # exact: the conversion is fused, it costs no memory pass
    d2 = d * d
    return torch.stack([d.sum(), d2.sum(), (d2 * d).sum(), (d2 * d2).sum(), x.amin().double(), x.amax().double()])


def _bin_index_eager(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, top: int) -> torch.Tensor:
    return torch.addcmul(b, x, a).clamp_(0, top).to(torch.int32)


def _bin_index_fused(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, top: int) -> torch.Tensor:
    return torch.addcmul(b, x, a).clamp(0, top).to(torch.int32)


@functools.cache
def _compile(fn):
    return torch.compile(fn, dynamic=True)


def central_sums(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float64 [Σd, Σd², Σd³, Σd⁴, min x, max x] with d = x − c (x finite, 1-D)."""
    if _state["compiled"]:
        return _compile(_central_sums_fused)(x, c)
    return _central_sums_eager(x, c)


def bin_index(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, top: int) -> torch.Tensor:
    """int32 trunc(clamp(a·x + b, 0, top)): a monotone bin index."""
    if _state["compiled"]:
        return _compile(_bin_index_fused)(x, a, b, top)
    return _bin_index_eager(x, a, b, top)
