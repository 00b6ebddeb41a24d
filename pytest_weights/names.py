"""Match tensor names across two checkpoints whose wrappers prefix them differently.

A model saved from ``DistributedDataParallel`` names its tensors ``module.<name>``, one
saved after ``torch.compile`` ``_orig_mod.<name>``, a Lightning module or a Hugging Face
``*For…`` head ``model.<name>``. :func:`match_names` pairs the names of two checkpoints:
equal names first; then, among the names left over, those equal once such wrapper prefixes
are stripped (from either side, in any order and number) — and only when that pairing is
unambiguous: a name that two others would map to stays unmatched. Each kind of rename is
reported (``matched 103 tensors after stripping 'module.' from B``) with how many of the
renamed pairs agree in shape. Pure Python: no tensor is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Prefixes that wrappers put in front of every tensor name: DDP, torch.compile, Lightning / HF.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")

Shape = Sequence[int]


def strip_wrappers(name: str) -> tuple[tuple[str, ...], str]:
    """(the wrapper prefixes removed from the front of ``name``, in order; what is left)."""
    removed: list[str] = []
    found = True
    while found:
        found = False
        for p in WRAPPER_PREFIXES:
            if name.startswith(p) and len(name) > len(p):
                removed.append(p)
                name = name[len(p) :]
                found = True
    return tuple(removed), name


@dataclass(frozen=True)
class Rename:
    """One way names were paired: ``strip_a`` removed from A's names, ``strip_b`` from B's."""

    strip_a: str
    strip_b: str
    count: int
    #: Renamed pairs whose shapes differ (reported per tensor by whoever compares them).
    shape_mismatches: int = 0

    def describe(self, a: str = "A", b: str = "B") -> str:
        """``matched 103 tensors after stripping 'module.' from B (shapes agree)``."""
        parts = [f"{p!r} from {side}" for p, side in ((self.strip_a, a), (self.strip_b, b)) if p]
        shapes = (
            "shapes agree"
            if not self.shape_mismatches
            else f"{self.shape_mismatches} of them {'differs' if self.shape_mismatches == 1 else 'differ'} in shape"
            if self.shape_mismatches < self.count
            else "but every shape differs"
        )
        noun = "tensor" if self.count == 1 else "tensors"
        return f"matched {self.count} {noun} after stripping {' and '.join(parts)} ({shapes})"


@dataclass(frozen=True)
class NameMatch:
    """How the names of checkpoint A pair with those of checkpoint B."""

    #: (name in A, name in B), in A's order.
    pairs: tuple[tuple[str, str], ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    renames: tuple[Rename, ...] = ()
    _to_b: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._to_b.update(self.pairs)

    def b_name(self, a_name: str) -> str | None:
        """The name in B paired with ``a_name`` (None: only in A)."""
        return self._to_b.get(a_name)

    @property
    def renamed(self) -> int:
        return sum(r.count for r in self.renames)

    def notes(self, a: str = "A", b: str = "B") -> list[str]:
        return [r.describe(a, b) for r in self.renames]


def _minimal(pa: tuple[str, ...], pb: tuple[str, ...]) -> tuple[str, str]:
    """The prefixes that differ: the wrappers both names share at the end of their prefix are kept."""
    while pa and pb and pa[-1] == pb[-1]:
        pa, pb = pa[:-1], pb[:-1]
    return "".join(pa), "".join(pb)


def _unique_keys(names: Sequence[str]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Stripped name → (removed prefixes, original) for the stripped names only one name has."""
    seen: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for n in names:
        removed, rest = strip_wrappers(n)
        seen.setdefault(rest, []).append((removed, n))
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def match_names(a: Mapping[str, Shape], b: Mapping[str, Shape]) -> NameMatch:
    """Pair the tensor names of A with those of B (each given as name → shape, in storage order).

    Equal names pair first. Left-over names pair when they are equal after stripping
    :data:`WRAPPER_PREFIXES` and no other left-over name on either side strips to the same.
    """
    rest_a = [n for n in a if n not in b]
    rest_b = [n for n in b if n not in a]
    keys_a, keys_b = _unique_keys(rest_a), _unique_keys(rest_b)
    renamed: dict[str, str] = {}
    groups: dict[tuple[str, str], list[int]] = {}
    for key, (pa, name_a) in keys_a.items():
        other = keys_b.get(key)
        if other is None:
            continue
        pb, name_b = other
        renamed[name_a] = name_b
        group = groups.setdefault(_minimal(pa, pb), [0, 0])
        group[0] += 1
        group[1] += tuple(a[name_a]) != tuple(b[name_b])
    pairs = tuple((n, n if n in b else renamed[n]) for n in a if n in b or n in renamed)
    taken = set(renamed.values())
    return NameMatch(
        pairs=pairs,
        only_a=tuple(n for n in rest_a if n not in renamed),
        only_b=tuple(n for n in rest_b if n not in taken),
        renames=tuple(Rename(sa, sb, c, m) for (sa, sb), (c, m) in groups.items()),
    )
