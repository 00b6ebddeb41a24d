"""numba kernels for the CPU tiles of :mod:`.kernels` (the optional ``fast`` extra).

Imported only inside a pass, by :func:`.kernels.compiled` (never at plugin import): importing
this module imports numba. Each function is one loop over a tile (a NumPy view of a CPU tensor's
memory) doing what several eager torch ops do, with ``nogil=True`` so the engine's worker
threads run them in parallel, and ``cache=True`` so the machine code is compiled once per
installation (measured, CPU s: compiling all four on a fresh install 1.2, of which ~0.35 is
LLVM's start-up; from the cache: import numba 0.16 + first call 0.35–0.40 per process).

Arithmetic: every kernel computes each value exactly as the torch ops do (float32
``(t − mean)/std``, compares against float32 thresholds, bit-pattern look-ups) and only
counts, so its results are bit-identical to the torch path, whichever runs a tile, in
whatever thread. (Power sums stay torch: their eager ops are already vectorised, measured
0.73 ns/element against 0.54 compiled, and their summation order would change.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = {"nogil": True, "cache": True, "error_model": "numpy"}  # x/0 is ±inf or NaN, as in torch


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
def z_masses(x, mean, std, skip, lt, gt, counts, az_out):  # pragma: no cover - compiled
    """The |z| masses of one float32 tile, z = (x − mean)/std in float32 as torch computes it:
    counts[0:3] += #(|z| < lt[j]), counts[3:6] += #(|z| > gt[j]), counts[6] += values seen
    (NaN/±Inf |z| left out when ``skip``, as the torch path drops them); |z| into ``az_out``
    unless it is empty. Branch-free: vectorised."""
    a0, a1, a2 = lt[0], lt[1], lt[2]
    b0, b1, b2 = gt[0], gt[1], gt[2]
    inf = np.float32(np.inf)
    c0 = c1 = c2 = c3 = c4 = c5 = nan = big = 0
    keep = az_out.shape[0] > 0
    for i in range(x.shape[0]):
        az = abs((x[i] - mean) / std)
        if keep:
            az_out[i] = az
        c0 += az < a0
        c1 += az < a1
        c2 += az < a2
        c3 += az > b0
        c4 += az > b1
        c5 += az > b2
        nan += az != az  # NaN compares false: it is in no count
        big += az == inf
    drop = big if skip else 0
    counts[0] += c0
    counts[1] += c1
    counts[2] += c2
    counts[3] += c3 - drop
    counts[4] += c4 - drop
    counts[5] += c5 - drop
    counts[6] += x.shape[0] - ((nan + big) if skip else 0)


@njit(**_OPTS)
def z_hist(az, skip, first, code, edge, shift, hist):  # pragma: no cover - compiled
    """The slots of float32 |z| values (from :func:`z_masses`) by bit pattern, as
    :func:`table_counts`; NaN/±Inf left out when ``skip``."""
    last = code.shape[0] - 1
    bits = az.view(np.int32)  # |z| ≥ 0: the sign bit is clear
    for i in range(bits.shape[0]):
        u = bits[i]
        if skip and u >= 0x7F800000:
            continue
        row = min(max((u >> shift) - first, 0), last)
        hist[code[row] + (1 if u > edge[row] else 0)] += 1
