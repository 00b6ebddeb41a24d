"""numba kernels for the CPU tiles of :mod:`.kernels` (the optional ``fast`` extra).

Imported only inside a pass, by :func:`.kernels.compiled` (never at plugin import): importing
this module imports numba. Each function is one loop over a tile (a NumPy view of a CPU tensor's
memory) doing what several eager torch ops do, with ``nogil=True`` so the engine's worker
threads run them in parallel, and ``cache=True`` so the machine code is compiled once per
installation (the first call of a fresh install compiles: about a second per function).

Arithmetic: the counting kernels compute every value exactly as the torch ops do (float32
``(t − mean)/std``, compares against float32 thresholds, bit-pattern look-ups), so their
counts are bit-identical to the torch path. :func:`power_sums` accumulates in float64
(torch sums float32 tiles in float32): within the torch path's own error (~1e−7 relative).
Each tile is reduced serially, so results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = {"nogil": True, "cache": True}
_SUMS = {"nogil": True, "cache": True, "fastmath": {"reassoc", "contract"}}  # no nnan: NaN propagates


@njit(**_SUMS)
def _sums(x, c, out):  # pragma: no cover - compiled
    s1 = s2 = s3 = s4 = 0.0
    for i in range(x.shape[0]):
        d = np.float64(x[i] - c)  # the difference in the data's dtype, as torch.sub
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
    out[0] = s1
    out[1] = s2
    out[2] = s3
    out[3] = s4


def power_sums(x: np.ndarray, c: float, out: np.ndarray) -> np.ndarray:
    """out[:4] = [Σd, Σd², Σd³, Σd⁴] (float64), d = x − c computed in x's dtype."""
    _sums(x, x.dtype.type(c), out)
    return out


@njit(**_OPTS)
def key_counts(bits, shift, mask, counts):  # pragma: no cover - compiled
    """counts[(bits >> shift) & mask] += 1 for every int32 bit pattern of a float32 tile."""
    for i in range(bits.shape[0]):
        counts[(bits[i] >> shift) & mask] += 1


@njit(**_OPTS)
def table_counts(bits, first, code, edge, shift, counts):  # pragma: no cover - compiled
    """Count float32 magnitudes into slots by their bit pattern (see ``kernels.EdgeTables``):
    u = |bits|, row = clamp((u >> shift) − first), slot = code[row] + (u > edge[row])."""
    last = code.shape[0] - 1
    for i in range(bits.shape[0]):
        u = bits[i] & 0x7FFFFFFF
        row = min(max((u >> shift) - first, 0), last)
        counts[code[row] + (1 if u > edge[row] else 0)] += 1


@njit(**_OPTS)
def z_counts(x, mean, std, skip, lt, gt, first, code, edge, shift, counts, hist):  # pragma: no cover
    """The |z| kernels of one float32 tile, z = (x − mean)/std in float32 as torch computes it.

    counts[0:3] += #(|z| < lt[j]), counts[3:6] += #(|z| > gt[j]), counts[6] += values seen
    (non-finite |z| skipped when ``skip``); hist: the |z| slots by bit pattern (as
    :func:`table_counts`), unless ``code`` is empty.
    """
    last = code.shape[0] - 1
    a0, a1, a2 = lt[0], lt[1], lt[2]
    b0, b1, b2 = gt[0], gt[1], gt[2]
    c0 = c1 = c2 = c3 = c4 = c5 = seen = 0
    for i in range(x.shape[0]):
        az = abs((x[i] - mean) / std)
        if skip and not np.isfinite(az):
            continue
        seen += 1
        c0 += az < a0
        c1 += az < a1
        c2 += az < a2
        c3 += az > b0
        c4 += az > b1
        c5 += az > b2
        if last >= 0:
            u = np.float32(az).view(np.int32) & 0x7FFFFFFF
            row = min(max((u >> shift) - first, 0), last)
            hist[code[row] + (1 if u > edge[row] else 0)] += 1
    counts[0] += c0
    counts[1] += c1
    counts[2] += c2
    counts[3] += c3
    counts[4] += c4
    counts[5] += c5
    counts[6] += seen
