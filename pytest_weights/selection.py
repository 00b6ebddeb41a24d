"""Tensor selection: name globs, shape filters, and the depth/role derived from names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .readers.base import TensorInfo

#: Default depth scheme: the number after ``layers.``, ``layer.``, ``h.``, ``blocks.``, …
DEFAULT_DEPTH_PATTERN = r"(?:^|\.)(?:layers|layer|h|blocks|block|transformer_blocks)\.(\d+)(?=\.|$)"


@dataclass(frozen=True)
class Selection:
    """Which tensors an assertion applies to.

    ``include``/``exclude`` are glob patterns on the full tensor name (``*`` also
    matches dots); ``ndim`` keeps tensors with that many dimensions (or any of a list);
    ``min_ndim``/``min_numel`` drop small tensors; ``depth_pattern`` is a regex whose
    first group is the layer index; ``groups`` picks model weights and/or optimizer state.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    ndim: tuple[int, ...] = ()
    min_ndim: int = 0
    min_numel: int = 1
    depth_pattern: str = DEFAULT_DEPTH_PATTERN
    groups: tuple[str, ...] = ("weights",)
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.depth_pattern))

    def matches(self, info: TensorInfo) -> bool:
        name = info.name
        if info.group not in self.groups:
            return False
        if not any(fnmatchcase(name, p) for p in self.include):
            return False
        if any(fnmatchcase(name, p) for p in self.exclude):
            return False
        nd = len(info.shape)
        if self.ndim and nd not in self.ndim:
            return False
        return nd >= self.min_ndim and info.numel >= self.min_numel

    def depth(self, name: str) -> int | None:
        """The layer index in ``name``, or None when the name has none."""
        m = self._compiled.search(name)
        return int(m.group(1)) if m else None

    def role(self, name: str) -> str:
        """The name with its layer index replaced by ``*``: tensors comparable across depth."""
        m = self._compiled.search(name)
        if not m:
            return name
        a, b = m.span(1)
        return name[:a] + "*" + name[b:]

    def describe(self) -> str:
        parts = [f"include={list(self.include)}"]
        if self.exclude:
            parts.append(f"exclude={list(self.exclude)}")
        if self.ndim:
            parts.append(f"ndim={list(self.ndim)}")
        if self.min_ndim:
            parts.append(f"min_ndim={self.min_ndim}")
        if self.min_numel > 1:
            parts.append(f"min_numel={self.min_numel}")
        return ", ".join(parts)
