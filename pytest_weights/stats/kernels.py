"""The hot loops of the elementwise statistics: one sweep per block for all their kernels.

Eager torch runs every op as its own pass over memory and allocates its output; on the CPU
a fresh tensor-sized temporary page-faults (glibc hands large blocks back to the kernel with
``munmap``/``madvise`` and takes them again: the system time of the old per-statistic
temporaries) and costs about three times the op itself. So a block is swept once, in
L2-sized tiles (``TILE`` elements), by :class:`BlockKernels`: every :class:`Kernel` the
block's statistics declare (:meth:`~.base.Statistic.tile_kernels`) sees each tile while it
is in cache and writes into per-thread reusable buffers (:func:`scratch`), so a sweep
allocates nothing of the block's size. Statistics then read their kernels' results from
the :class:`BlockKernels` object passed to their ``reduce``: fusion is explicit, not a memo.

On CUDA (or any non-CPU device) a tile is the whole block: the same kernels run as a few
whole-slice torch ops (the caching allocator reuses memory; no host copies, no ``.numpy()``,
no per-element Python).

CPU tiles of the counting kernels (value-histogram keys, log|w| slots, |z| masses and
histogram) run compiled (:mod:`._compiled`, numba, the ``fast`` extra) when numba is
installed and the pass is large enough to repay loading it (:func:`compiled`): one loop per
tile instead of 6–12 eager ops, bit-identical counts. ``PYTEST_WEIGHTS_KERNELS=torch`` forces
the torch ops, ``=numba`` the compiled ones.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

#: Elements per tile on the CPU: a tile and its buffers fit in a core's L2 cache
#: (measured on a 2 MiB L2: 1.5 ns/element at 2¹⁷, 1.8 at 2¹⁸, 2.9 at 2¹⁴ for the power sums).
TILE = 1 << 17

_local = threading.local()

_compiled_module: Any = None  # None: not tried yet; False: numba unavailable
#: Compiled tile calls by kernel name (tests check the compiled path is taken when numba is there).
compiled_calls: Counter[str] = Counter()
#: Elements (summed over kernels) the counting kernels sweep with torch ops before numba is loaded
#: (``auto``): importing numba and loading its cached machine code costs ~0.5 CPU s per process
#: (measured: 0.15 s import, 0.35 s first call), what ~1.5 ns saved per kernel-element repays
#: after ~3e8: the ski-rental rule, never more than twice the better choice's cost.
BREAK_EVEN = 1 << 28
_swept_by_torch = 0


def expect(elements: int) -> None:
    """A pass is about to sweep ``elements`` values: when they alone repay loading numba
    (≥ :data:`BREAK_EVEN`), auto mode uses the compiled kernels from the first tile on (numba is
    still imported only if a counting kernel runs). Called by the engine; optional."""
    global _swept_by_torch
    if elements >= BREAK_EVEN:
        _swept_by_torch = max(_swept_by_torch, BREAK_EVEN)


def compiled(t: torch.Tensor) -> Any:
    """The numba kernels (:mod:`._compiled`) for CPU tile ``t``, or None for the torch ops.

    ``PYTEST_WEIGHTS_KERNELS``: ``torch`` never compiled, ``numba`` always (when installed),
    unset (auto) compiled once this process's counting kernels have swept :data:`BREAK_EVEN`
    elements. The compiled kernels count exactly what the torch ops count, so which one runs a
    tile changes no result. numba is imported on first use only, never at plugin import.
    """
    global _compiled_module, _swept_by_torch
    mode = os.environ.get("PYTEST_WEIGHTS_KERNELS", "auto")
    if t.device.type != "cpu" or mode == "torch":
        return None
    if _compiled_module is None:
        if mode != "numba" and _swept_by_torch < BREAK_EVEN:
            _swept_by_torch += t.numel()  # unlocked: a few lost updates only delay the switch
            return None
        try:
            from . import _compiled as module
        except Exception:  # numba missing or broken (e.g. built for another numpy): torch ops
            module = False
        _compiled_module = module
    return _compiled_module or None


def scratch(name: Hashable, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer of ``n`` elements: reused per thread on the CPU, freshly allocated elsewhere."""
    if device.type != "cpu":
        return torch.empty(n, dtype=dtype, device=device)
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get((name, dtype))
    if buf is None or buf.numel() < n:
        buf = bufs[(name, dtype)] = torch.empty(max(n, TILE), dtype=dtype)
    return buf[:n]


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype float arithmetic on a tile of ``dtype`` runs in: float64 stays, all else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def abs_tile(t: torch.Tensor, name: str) -> torch.Tensor:
    """|t| in :func:`work_dtype` (16- and 8-bit floats widened exactly), in scratch ``name``."""
    out = scratch(name, t.numel(), work_dtype(t.dtype), t.device)
    return torch.abs(t, out=out) if t.dtype == out.dtype else out.copy_(t).abs_()


def count(mask: torch.Tensor) -> torch.Tensor:
    """The number of ones in a float 0/1 mask (a compare written into a float buffer: cheaper to
    write and to sum than a bool mask); float32 sums are exact up to 2²⁴ elements (a CPU tile)."""
    return mask.sum() if mask.numel() <= 1 << 24 else mask.sum(dtype=torch.float64)


# ---------------------------------------------------------------- the fused sweep


class Kernel(ABC):
    """One elementwise reduction of a block, computed tile by tile inside a :class:`BlockKernels`
    sweep. Subclasses are frozen dataclasses: equal kernels (same parameters) run once per
    block, however many statistics ask for them."""

    def start(self, x: torch.Tensor) -> Any:
        """The accumulator for block ``x`` (1-D, storage dtype), before its first tile."""
        return None

    @abstractmethod
    def tile(self, acc: Any, t: torch.Tensor, at: int, sweep: BlockKernels) -> Any:
        """Fold tile ``t`` (``x[at : at + len(t)]``) into ``acc``; returns the accumulator.
        Temporaries come from :func:`scratch` (names unique to the kernel and its parameters)
        or :meth:`BlockKernels.shared` (values several kernels derive from the same tile)."""

    def finish(self, acc: Any, x: torch.Tensor) -> Any:
        """The kernel's result for the block, from its accumulator."""
        return acc


class BlockKernels:
    """The results of ``kernels`` on one block, computed together in one sweep over its tiles.

    Built once per block by the engine for the union of its statistics' kernels and passed to
    their ``reduce`` (as ``swept``); ``swept[kernel]`` is a kernel's result.
    """

    def __init__(self, block: torch.Tensor, kernels: Iterable[Kernel]) -> None:
        x = block.reshape(-1)
        todo = list(dict.fromkeys(kernels))
        self._tile_values: dict[Hashable, Any] = {}
        accs = [k.start(x) for k in todo]
        n = x.numel()
        step = TILE if x.device.type == "cpu" else max(n, 1)
        tiles = 0
        if todo:
            for at in range(0, n, step):
                t = x[at : at + step]
                self._tile_values.clear()
                accs = [k.tile(a, t, at, self) for k, a in zip(todo, accs, strict=True)]
                tiles += 1
        self._tile_values.clear()
        self._values = {k: k.finish(a, x) for k, a in zip(todo, accs, strict=True)}
        if (log := _recording) is not None:
            log.append((tiles, tuple(todo)))

    def __getitem__(self, kernel: Kernel) -> Any:
        return self._values[kernel]

    def shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value derived from the current tile, computed once for every kernel that asks
        (``compute()`` on the first request; forgotten at the next tile)."""
        if key not in self._tile_values:
            self._tile_values[key] = compute()
        return self._tile_values[key]


_recording: list[tuple[int, tuple[Kernel, ...]]] | None = None


@contextmanager
def record_sweeps() -> Iterator[list[tuple[int, tuple[Kernel, ...]]]]:
    """Inside: every :class:`BlockKernels` sweep is logged as (tiles, kernels) — for tests
    that check each block is swept once for all its statistics (fusion cannot silently stop)."""
    global _recording
    saved, _recording = _recording, []
    try:
        yield _recording
    finally:
        _recording = saved


def sweep(block: torch.Tensor, kernels: Iterable[Kernel]) -> BlockKernels:
    """:class:`BlockKernels` of ``block`` (what a statistic's ``reduce`` uses when called alone)."""
    return BlockKernels(block, kernels)


# ---------------------------------------------------------------- power sums


def _power_tile(t: torch.Tensor, c: float) -> torch.Tensor:
    """[Σd, Σd², Σd³, Σd⁴, min t, max t] of d = t − c in t's dtype (one tile, in cache)."""
    k = t.numel()
    lo, hi = torch.aminmax(t)
    d = torch.sub(t, c, out=scratch("d", k, t.dtype, t.device)) if c else t
    d2 = torch.square(d, out=scratch("d2", k, t.dtype, t.device))
    s1, s2, s3 = d.sum(), d2.sum(), torch.dot(d2, d)
    s4 = torch.square(d2, out=d2).sum()  # in place: one buffer, and it stays in cache
    return torch.stack([s1, s2, s3, s4, lo, hi])


def _combine_power_tiles(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not parts:
        inf = float("inf")
        return torch.tensor([0.0, 0.0, 0.0, 0.0, inf, -inf], dtype=torch.float64, device=device)
    p = torch.stack(parts).to(torch.float64)
    return torch.cat([p[:, :4].sum(0), p[:, 4].min().reshape(1), p[:, 5].max().reshape(1)])


def power_sums(x: torch.Tensor, c: float = 0.0) -> torch.Tensor:
    """float64 [Σd, Σd², Σd³, Σd⁴, min x, max x] with d = x − c (1-D float32 or float64), tile by tile.

    Within a tile, torch's cascade sums (Σd, Σd², Σd⁴; relative error ~1e−8) and one dot
    product (Σd³ = d²·d; ~2e−8 of Σ|d|³, measured) run in the data's dtype; tiles add in
    float64. min/max propagate NaN. (:class:`PowerSums` is the same, inside a fused sweep.)
    """
    x = x.reshape(-1)
    n = x.numel()
    step = TILE if x.device.type == "cpu" else max(n, 1)
    return _combine_power_tiles([_power_tile(x[i : i + step], c) for i in range(0, n, step)], x.device)


@dataclass(frozen=True)
class PowerSums(Kernel):
    """:func:`power_sums` about 0 of a float32/float64 block, inside the fused sweep."""

    def start(self, x: torch.Tensor) -> list[torch.Tensor]:
        return []

    def tile(self, acc: list[torch.Tensor], t: torch.Tensor, at: int, sweep: BlockKernels) -> list[torch.Tensor]:
        acc.append(_power_tile(t, 0.0))
        return acc

    def finish(self, acc: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return _combine_power_tiles(acc, x.device)


@dataclass(frozen=True)
class KeyCounts(Kernel):
    """The count of every key of a block (int64, one entry per possible key).

    float32 keys are written tile by tile (while the tile is in cache) into one per-thread
    buffer; 16/8-bit and float64 blocks are keyed whole at the end (a widening copy, or a
    rounding to float32). The counts go into a per-thread buffer too (``index_add_`` into a
    zeroed buffer, not a fresh ``bincount`` output: a new 4 MB array per slice is page-faulted
    in, and handed back, each time), so the result is valid until this thread's next sweep:
    a statistic keeps what it needs of it (:class:`~.histogram.ValueHistogram`: the occupied keys).
    """

    def start(self, x: torch.Tensor) -> Any:
        if x.dtype != torch.float32:
            return None
        if (fast := compiled(x)) is not None:  # compiled: keys counted tile by tile, never stored
            return fast, scratch("key_counts", 1 << key_bits(x.dtype), torch.int64, x.device).zero_()
        return scratch("keys", x.numel(), torch.int32, x.device)

    def tile(self, acc: Any, t: torch.Tensor, at: int, sweep: BlockKernels) -> Any:
        if isinstance(acc, tuple):
            acc[0].key_counts(t.view(torch.int32).numpy(), _F32_SHIFT, _F32_MASK, acc[1].numpy())
            compiled_calls["key_counts"] += 1  # an indicator for tests, not an exact count across threads
        elif acc is not None:
            _float32_keys(t, acc[at : at + t.numel()])
        return acc

    def finish(self, acc: Any, x: torch.Tensor) -> torch.Tensor:
        if isinstance(acc, tuple):
            return acc[1]
        k = keys(x) if acc is None else acc
        counts = scratch("key_counts", 1 << key_bits(x.dtype), torch.int64, x.device).zero_()
        return counts.index_add_(0, k, torch.ones(1, dtype=torch.int64, device=x.device).expand(k.numel()))


# ---------------------------------------------------------------- bins by bit pattern

INT32_MAX = (1 << 31) - 1


class EdgeTables(NamedTuple):
    """Look-up tables placing a non-negative float32 u (its bits) among sorted bounds:
    slot = code[row] + (u > edge[row]), row = clamp((u >> shift) − first, 0, len − 1)."""

    first: int  # the key of table row 1; row 0 stands for every smaller key
    code: torch.Tensor  # int32 per row
    edge: torch.Tensor  # int32 per row: bits beyond which u counts one slot up
    shift: int


def edge_tables(
    bits: torch.Tensor, offset: int, low: tuple[int, int], high: tuple[int, int], shift: int = 13
) -> EdgeTables:
    """Tables for slot = ``offset`` + #(bounds ≤ u) (``bits``: the bounds' float32 bit patterns,
    int64, ascending, each bound ≥ 2^shift apart relative to a key). Keys below the first bound's
    are row 0 = (code, edge) ``low``; keys above the last bound's, the last row ``high``. Non-negative
    floats order like their bit patterns, so a key's range holds at most one bound: ``edge`` is
    that bound's bits − 1 (values from it on count one slot up), else INT32_MAX.
    """
    first, last = int(bits[0]) >> shift, int(bits[-1]) >> shift
    keys = torch.arange(first, last + 1, dtype=torch.int64)
    below_first = torch.searchsorted(bits, keys << shift, right=True)  # bounds ≤ the key's smallest u
    below_last = torch.searchsorted(bits, ((keys + 1) << shift) - 1, right=True)
    if int((below_last - below_first).max()) > 1:  # pragma: no cover - bins narrower than a key
        raise ValueError("bins narrower than 2⁻¹⁰ relative cannot be keyed")
    inside = below_last > below_first
    edge = torch.where(inside, bits[below_first.clamp(max=len(bits) - 1)] - 1, INT32_MAX)
    code = torch.cat([torch.tensor([low[0]]), below_first + offset, torch.tensor([high[0]])])
    edge = torch.cat([torch.tensor([low[1]]), edge, torch.tensor([high[1]])])
    return EdgeTables(first - 1, code.to(torch.int32), edge.to(torch.int32), shift)


def table_slots(u: torch.Tensor, tables: EdgeTables, name: str) -> torch.Tensor:
    """The slots of non-negative float32 bit patterns ``u`` (int32), torch ops in scratch ``name``."""
    k, dev = u.numel(), u.device
    code, edge = tables.code.to(dev), tables.edge.to(dev)
    row = torch.bitwise_right_shift(u, tables.shift, out=scratch((name, "row"), k, torch.int32, dev))
    row.sub_(tables.first).clamp_(0, len(code) - 1)
    slot = torch.index_select(code, 0, row, out=scratch((name, "slot"), k, torch.int32, dev))
    up = torch.index_select(edge, 0, row, out=scratch((name, "edge"), k, torch.int32, dev))
    return slot.add_(torch.gt(u, up, out=row))  # int32 0/1: faster than a bool mask


# ---------------------------------------------------------------- value-histogram keys

#: Mantissa bits kept by the float32 key: bins 2⁻¹¹–2⁻¹⁰ wide relative to the value.
F32_MANTISSA_BITS = 10
_F32_SHIFT = 23 - F32_MANTISSA_BITS
_F32_MASK = (1 << (32 - _F32_SHIFT)) - 1


def exact_dtype(dtype: torch.dtype) -> bool:
    """True for the 16- and 8-bit floats, whose histogram key is the value itself."""
    return dtype in (torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


def key_bits(dtype: torch.dtype) -> int:
    """Width of the histogram key of a slice of ``dtype``: a sign-magnitude bit pattern."""
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return 8
    if dtype in (torch.float16, torch.bfloat16):
        return 16
    return 32 - _F32_SHIFT  # float32 (and float64 rounded to float32), truncated


def keys(x: torch.Tensor) -> torch.Tensor:
    """int32 histogram key of each value of a 1-D slice (see :mod:`.histogram`).

    16- and 8-bit floats: their own bit pattern, so each key is one exact value. float32:
    its bit pattern shifted right by 13 (sign, exponent, 10 mantissa bits: truncation);
    float64 is rounded to float32 first. Two cheap ops, no data-dependent parameter: keys
    of any two slices, chunks or machines count into the same bins.
    """
    x = x.reshape(-1)
    n = x.numel()
    out = scratch("keys", n, torch.int32, x.device)
    if x.dtype in (torch.float16, torch.bfloat16):
        return out.copy_(x.view(torch.uint16))
    if x.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return out.copy_(x.view(torch.uint8))
    if x.dtype == torch.float64:
        wide = x
        x = scratch("f32", n, torch.float32, x.device).copy_(wide)
        if torch.isinf(x).any():  # finite values beyond float32: into the top bin, not the Inf keys
            big = torch.isinf(x) & torch.isfinite(wide)
            x.masked_fill_(big & (wide > 0), torch.finfo(torch.float32).max)
            x.masked_fill_(big & (wide < 0), -torch.finfo(torch.float32).max)
    return _float32_keys(x, out)


def _float32_keys(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    torch.bitwise_right_shift(x.view(torch.int32), _F32_SHIFT, out=out)
    return out.bitwise_and_(_F32_MASK)  # the arithmetic shift copied the sign bit: clear it


def key_counts(x: torch.Tensor) -> torch.Tensor:
    """Counts of the keys of a slice (int64, on x's device; one entry per possible key), in a
    fresh array (:class:`KeyCounts` is the same in the fused sweep, in a reused one)."""
    return torch.bincount(keys(x), minlength=1 << key_bits(x.dtype))


@functools.lru_cache(maxsize=8)
def finite_magnitudes(dtype: torch.dtype) -> int:
    """Keys 0 … this − 1 are the finite non-negative values (the same with the sign bit set)."""
    if exact_dtype(dtype):
        return int(torch.isfinite(_key_table(dtype)[: 1 << (key_bits(dtype) - 1)]).sum())
    return 0x7F800000 >> _F32_SHIFT  # float32 exponent 255 is Inf/NaN


def key_values(dtype: torch.dtype, k: torch.Tensor) -> torch.Tensor:
    """The value (float64) of keys ``k`` of slices of ``dtype``: the lower end of the bin in
    magnitude for float32 keys, the value itself for 16- and 8-bit ones."""
    if exact_dtype(dtype):
        return _key_table(dtype)[k]
    bits = (k.to(torch.int64) << _F32_SHIFT).to(torch.int32)  # wraps into the sign bit as intended
    return bits.view(torch.float32).to(torch.float64)


@functools.lru_cache(maxsize=8)
def _key_table(dtype: torch.dtype) -> torch.Tensor:
    bits = key_bits(dtype)
    pattern = torch.arange(1 << bits, dtype=torch.int32).to(torch.uint16 if bits == 16 else torch.uint8)
    return pattern.view(dtype).to(torch.float64)


@contextlib.contextmanager
def fixed_threads(n: int = 1) -> Iterator[None]:
    """Inside: torch ops of this thread use ``n`` threads (results independent of the machine's
    cores: a multi-threaded matmul or LAPACK call changes its last bits with the thread count)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
