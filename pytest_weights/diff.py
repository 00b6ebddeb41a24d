"""What changed between two checkpoints, tensor by tensor (``pytest-weights diff A B``).

:func:`diff_checkpoints` pairs the tensors of A and B by name (wrapper prefixes such as
DDP's ``module.`` stripped when that pairs them, :mod:`.names`) and compares each pair:

* an element *changed* when |a − b| > atol + rtol·|b| (``numpy.isclose``'s test, negated);
  NaN on one side only, ±Inf against anything else, and +Inf against −Inf are changes; NaN
  at the same place on both sides, or the same infinity, is not (counted apart:
  :attr:`TensorDiff.nan_both`);
* over the elements finite on both sides: max and mean |a − b|, and the relative Frobenius
  change ‖A − B‖ / ‖B‖ (float64 throughout);
* a tensor only in A or only in B, or whose shape differs, is a difference of its own
  (not an error); a dtype change is one too, and its values are still compared.

Streamed: one pair of tensors is read at a time and compared in tiles of :data:`TILE`
elements with torch ops in float64 (single-threaded: on small tiles an OpenMP team costs
more than it gains), so memory stays bounded by the largest pair.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch

from .errors import FATAL, CheckpointError, as_checkpoint_error, blame_tensor
from .formatting import table as _table
from .names import match_names
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .selection import Selection
from .stats.kernels import fixed_threads

#: Elements compared at once: the float64 temporaries of a tile stay in cache.
TILE = 1 << 16
#: Statuses of a tensor: the first is "no difference", every other one is a difference.
STATUSES = ("unchanged", "changed", "dtype", "shape", "only_a", "only_b")
STATUS_TEXT = {
    "unchanged": "unchanged",
    "changed": "changed",
    "dtype": "dtype changed",
    "shape": "shape changed",
    "only_a": "only in A",
    "only_b": "only in B",
}
DIFF_JSON_VERSION = 1


@dataclass(frozen=True)
class TensorDiff:
    """How one tensor differs between A and B (``name`` is A's name; B's for ``only_b``)."""

    name: str
    status: str
    #: B's name for this tensor when it differs from A's (a rename), else None.
    name_b: str | None = None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    role: str = ""
    depth: int | None = None
    #: Elements compared (0 when the values were not compared: shape mismatch, one side only).
    numel: int = 0
    #: Elements beyond the tolerance, non-finite mismatches included.
    changed: int = 0
    nan_a: int = 0  # NaN in A where B is not NaN: changed
    nan_b: int = 0  # NaN in B where A is not NaN: changed
    nan_both: int = 0  # NaN at the same place in both: not a change
    inf_changed: int = 0  # ±Inf on one side (no NaN) against a different value: changed
    finite: int = 0  # elements finite on both sides: what max/mean |Δ| and ‖A−B‖/‖B‖ cover
    max_abs: float = math.nan
    sum_abs: float = 0.0
    sum_sq_diff: float = 0.0
    sum_sq_b: float = 0.0

    @property
    def differs(self) -> bool:
        return self.status != "unchanged"

    @property
    def compared(self) -> bool:
        return self.status in ("unchanged", "changed", "dtype")

    @property
    def changed_fraction(self) -> float:
        return self.changed / self.numel if self.numel else math.nan

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.finite if self.finite else math.nan

    @property
    def rel_fro(self) -> float:
        """‖A − B‖ / ‖B‖ over the elements finite on both sides (inf when B is 0 and A is not)."""
        return _rel(self.sum_sq_diff, self.sum_sq_b) if self.finite else math.nan

    def note(self) -> str:
        """What a table row says besides the numbers: renames, shapes, dtypes, NaN/Inf."""
        parts = []
        if self.status == "shape":
            parts.append(f"shape {list(self.shape_a or ())} → {list(self.shape_b or ())}")
        elif self.status == "dtype":
            parts.append(f"dtype {self.dtype_a} → {self.dtype_b}")
        elif self.status in ("only_a", "only_b"):
            shape = self.shape_a if self.status == "only_a" else self.shape_b
            dtype = self.dtype_a if self.status == "only_a" else self.dtype_b
            parts.append(f"{list(shape or ())} {dtype}")
        if self.nan_a or self.nan_b:
            parts.append(f"NaN in {'A' if self.nan_a else 'B'} only: {self.nan_a or self.nan_b}")
            if self.nan_a and self.nan_b:
                parts[-1] = f"NaN in A only: {self.nan_a}, in B only: {self.nan_b}"
        if self.inf_changed:
            parts.append(f"Inf against another value: {self.inf_changed}")
        if self.nan_both:
            parts.append(f"NaN in both at the same place (not a change): {self.nan_both}")
        if self.name_b is not None:
            parts.append(f"B: {self.name_b}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            shape_a=list(self.shape_a) if self.shape_a is not None else None,
            shape_b=list(self.shape_b) if self.shape_b is not None else None,
            changed_fraction=self.changed_fraction,
            mean_abs=self.mean_abs,
            rel_fro=self.rel_fro,
        )
        return {k: _json_number(v) for k, v in out.items()}


def _rel(sq_diff: float, sq_b: float) -> float:
    if sq_b > 0:
        return math.sqrt(sq_diff / sq_b)
    return 0.0 if sq_diff == 0 else math.inf


def _json_number(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass(frozen=True)
class Rollup:
    """Differences summed over a group of tensors (one role, or one layer)."""

    key: str
    tensors: int
    differ: int
    numel: int
    changed: int
    max_abs: float
    sum_sq_diff: float
    sum_sq_b: float

    @property
    def changed_fraction(self) -> float:
        return self.changed / self.numel if self.numel else math.nan

    @property
    def rel_fro(self) -> float:
        return _rel(self.sum_sq_diff, self.sum_sq_b) if self.numel else math.nan

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(changed_fraction=self.changed_fraction, rel_fro=self.rel_fro)
        return {k: _json_number(v) for k, v in out.items()}


def rollup(key: str, items: Sequence[TensorDiff]) -> Rollup:
    maxes = [t.max_abs for t in items if t.finite]
    return Rollup(
        key,
        len(items),
        sum(t.differs for t in items),
        sum(t.numel for t in items),
        sum(t.changed for t in items),
        max(maxes) if maxes else math.nan,
        sum(t.sum_sq_diff for t in items),
        sum(t.sum_sq_b for t in items),
    )


@dataclass(frozen=True)
class DiffReport:
    """The per-tensor differences between checkpoints ``a`` and ``b`` at a tolerance."""

    a: str
    b: str
    atol: float
    rtol: float
    tensors: tuple[TensorDiff, ...]
    #: How names were paired besides equality, e.g. ``matched 103 tensors after stripping 'module.' from B``.
    renames: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        """No difference at the tolerance: same names, shapes, dtypes and values."""
        return not any(t.differs for t in self.tensors)

    @property
    def differences(self) -> tuple[TensorDiff, ...]:
        return tuple(t for t in self.tensors if t.differs)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.tensors)

    def roles(self) -> list[Rollup]:
        """One rollup per role (the name with its layer index as ``*``), in storage order."""
        return [rollup(k, v) for k, v in _group(self.tensors, lambda t: t.role).items()]

    def layers(self) -> list[Rollup]:
        """One rollup per layer index (tensors without one under ``-``), by index."""
        groups = _group(self.tensors, lambda t: "-" if t.depth is None else str(t.depth))
        order = sorted(groups, key=lambda k: (k == "-", int(k) if k != "-" else 0))
        return [rollup(k, groups[k]) for k in order]

    def summary(self) -> str:
        """One line: how many tensors differ and how."""
        n = len(self.tensors)
        tol = f"atol {self.atol:g}, rtol {self.rtol:g}"
        if self.identical:
            values = sum(t.numel for t in self.tensors)
            return f"identical within tolerance ({tol}): {n} tensors, {values} values"
        how = ", ".join(f"{self.count(s)} {STATUS_TEXT[s]}" for s in STATUSES[1:] if self.count(s))
        return f"{len(self.differences)} of {n} tensors differ ({tol}): {how}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (NaN/Inf as null)."""
        return {
            "version": DIFF_JSON_VERSION,
            "a": self.a,
            "b": self.b,
            "atol": self.atol,
            "rtol": self.rtol,
            "identical": self.identical,
            "summary": {s: self.count(s) for s in STATUSES},
            "renames": list(self.renames),
            "tensors": [t.to_dict() for t in self.tensors],
            "roles": [r.to_dict() for r in self.roles()],
            "layers": [r.to_dict() for r in self.layers()],
        }

    def format(self) -> str:
        """The text the ``diff`` command prints: summary, renames, differing tensors, rollups."""
        lines = [f"{self.a} vs {self.b}: {self.summary()}"]
        lines += [f"  names: {r}" for r in self.renames]
        if self.identical:
            return "\n".join(lines)
        lines += ["", *_table(TENSOR_COLUMNS, [_tensor_row(t) for t in self.differences])]
        layers = self.layers() if any(t.depth is not None for t in self.tensors) else []
        for title, groups in (("role", self.roles()), ("layer", layers)):
            rows = [_rollup_row(g) for g in groups if g.differ]
            if rows:
                lines += ["", f"by {title}:", *_table((title, *ROLLUP_COLUMNS), rows)]
        return "\n".join(lines)


TENSOR_COLUMNS = ("tensor", "status", "changed", "max|Δ|", "mean|Δ|", "‖A−B‖/‖B‖", "note")
ROLLUP_COLUMNS = ("tensors", "differ", "changed", "max|Δ|", "‖A−B‖/‖B‖")


def _group(items: Sequence[TensorDiff], key: Any) -> dict[str, list[TensorDiff]]:
    groups: dict[str, list[TensorDiff]] = {}
    for t in items:
        groups.setdefault(key(t), []).append(t)
    return groups


def _num(x: float) -> str:
    if math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    if math.isinf(x):
        return "∞"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


def _percent(fraction: float) -> str:
    return "–" if math.isnan(fraction) else f"{100 * fraction:.3g}%"


def _tensor_row(t: TensorDiff) -> tuple[str, ...]:
    if not t.compared:
        return (t.name, STATUS_TEXT[t.status], "", "", "", "", t.note())
    nums = (_num(t.max_abs), _num(t.mean_abs), _num(t.rel_fro)) if t.finite else ("–", "–", "–")
    return (t.name, STATUS_TEXT[t.status], _percent(t.changed_fraction), *nums, t.note())


def _rollup_row(r: Rollup) -> tuple[str, ...]:
    return (r.key, str(r.tensors), str(r.differ), _percent(r.changed_fraction), _num(r.max_abs), _num(r.rel_fro))


# ---------------------------------------------------------------------------- comparing


@dataclass
class _Sums:
    numel: int = 0
    changed: int = 0
    nan_a: int = 0
    nan_b: int = 0
    nan_both: int = 0
    inf_changed: int = 0
    finite: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq_diff: float = 0.0
    sum_sq_b: float = 0.0


def _as_float64(x: torch.Tensor, integral: bool) -> torch.Tensor:
    return x.to(torch.int64).to(torch.float64) if integral else x.to(torch.float64)


def compare_values(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> _Sums:
    """Counts and float64 sums of a against b (same number of elements), tile by tile."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    integral = not (a.is_floating_point() or b.is_floating_point())
    s = _Sums(numel=fa.numel())
    for i in range(0, fa.numel(), TILE):
        if integral:  # exact difference of integers, then float64
            xi, yi = fa[i : i + TILE].to(torch.int64), fb[i : i + TILE].to(torch.int64)
            x, y, d = xi.to(torch.float64), yi.to(torch.float64), (xi - yi).to(torch.float64).abs_()
        else:
            x, y = fa[i : i + TILE].to(torch.float64), fb[i : i + TILE].to(torch.float64)
            d = (x - y).abs_()
        _add_tile(s, x, y, d, atol, rtol)
    return s


def _add_tile(s: _Sums, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, atol: float, rtol: float) -> None:
    fin = torch.isfinite(x) & torch.isfinite(y)
    n_fin = int(fin.sum())
    s.finite += n_fin
    if n_fin < x.numel():  # NaN/Inf here: which of them are changes
        nx, ny = torch.isnan(x), torch.isnan(y)
        s.nan_a += int((nx & ~ny).sum())
        s.nan_b += int((ny & ~nx).sum())
        s.nan_both += int((nx & ny).sum())
        s.inf_changed += int((~fin & ~nx & ~ny & (x != y)).sum())
        d = torch.where(fin, d, 0.0)
        y = torch.where(fin, y, 0.0)
    beyond = d > (y.abs() * rtol + atol) if rtol else d > atol
    s.changed += int(beyond.sum())  # non-finite elements have d = 0 here: counted above
    if d.numel():
        s.max_abs = max(s.max_abs, float(d.max()))
    s.sum_abs += float(d.sum())
    s.sum_sq_diff += float(torch.dot(d, d))
    s.sum_sq_b += float(torch.dot(y, y))


def _finish(s: _Sums) -> dict[str, Any]:
    out = asdict(s)
    out["changed"] = s.changed + s.nan_a + s.nan_b + s.inf_changed
    if not s.finite:
        out["max_abs"] = math.nan
    return out


def _pair(ca: Checkpoint, cb: Checkpoint, ia: TensorInfo, ib: TensorInfo, atol: float, rtol: float) -> dict:
    """Fields of the :class:`TensorDiff` of a pair present in both checkpoints."""
    base: dict[str, Any] = {"shape_a": tuple(ia.shape), "shape_b": tuple(ib.shape)}
    base.update(dtype_a=ia.dtype_name, dtype_b=ib.dtype_name, name_b=ib.name if ib.name != ia.name else None)
    if tuple(ia.shape) != tuple(ib.shape):
        return {**base, "status": "shape"}
    a, b = _read(ca, ia.name), _read(cb, ib.name)
    values = _finish(compare_values(a, b, atol, rtol))
    del a, b
    status = "changed" if values["changed"] else "unchanged"
    return {**base, **values, "status": "dtype" if ia.dtype != ib.dtype else status}


def _read(ckpt: Checkpoint, name: str) -> torch.Tensor:
    try:
        return ckpt.read(name)
    except (CheckpointError, *FATAL):
        raise
    except BaseException as e:
        blame_tensor(e, name)
        raise as_checkpoint_error(getattr(ckpt, "path", ckpt.label), e) from e


@contextlib.contextmanager
def _opened(source: str | Path | Checkpoint) -> Iterator[tuple[Checkpoint, str]]:
    """(checkpoint, label): a path is opened (and closed after), a checkpoint used as is."""
    if isinstance(source, Checkpoint):
        yield source, source.label
        return
    ckpt = open_checkpoint(source)
    try:
        yield ckpt, str(source)
    finally:
        ckpt.close()


def diff_checkpoints(
    a: str | Path | Checkpoint,
    b: str | Path | Checkpoint,
    atol: float = 0.0,
    rtol: float = 0.0,
    include: Sequence[str] = (),
) -> DiffReport:
    """Compare every tensor of ``a`` with its counterpart in ``b`` (see the module docstring).

    ``include``: globs; only tensors whose name (in A or B) matches one are compared.
    Raises :class:`CheckpointError` when either checkpoint cannot be opened or a tensor read.

    >>> report = diff_checkpoints("base.safetensors", "tuned.safetensors", atol=1e-6)
    >>> report.identical, [t.name for t in report.differences]
    """
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be ≥ 0, got {atol} and {rtol}")
    sel = Selection()

    def wanted(*names: str | None) -> bool:
        return not include or any(n is not None and fnmatchcase(n, g) for n in names for g in include)

    def where(name: str) -> dict[str, Any]:
        return {"role": sel.role(name), "depth": sel.depth(name)}

    with _opened(a) as (ca, label_a), _opened(b) as (cb, label_b), fixed_threads(1):
        infos_a = {i.name: i for i in ca.tensors()}
        infos_b = {i.name: i for i in cb.tensors()}
        match = match_names({n: i.shape for n, i in infos_a.items()}, {n: i.shape for n, i in infos_b.items()})
        out = []
        for name, ia in infos_a.items():
            name_b = match.b_name(name)
            if not wanted(name, name_b):
                continue
            if name_b is None:
                out.append(TensorDiff(name, "only_a", shape_a=tuple(ia.shape), dtype_a=ia.dtype_name, **where(name)))
            else:
                out.append(TensorDiff(name, **_pair(ca, cb, ia, infos_b[name_b], atol, rtol), **where(name)))
        for name in match.only_b:
            if wanted(name):
                ib = infos_b[name]
                out.append(TensorDiff(name, "only_b", shape_b=tuple(ib.shape), dtype_b=ib.dtype_name, **where(name)))
        return DiffReport(label_a, label_b, atol, rtol, tuple(out), tuple(match.notes("A", "B")))
