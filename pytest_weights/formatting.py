"""Text for a terminal: the one table formatter and the one progress renderer.

- :func:`table`: aligned columns under a dashed rule (the CLI's ``inspect``/``specs``, the
  failure tables of reports, ``diff``).
- :func:`progress_text`: the live line of a statistics pass (``N/M tensors, GB, GB/s``), shown by
  the pytest plugin (through pytest's terminal writer) and by the CLI (:class:`LiveLine`).

Standard library only: the plugin imports this in every pytest run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .engine import PassProgress

PROG = "pytest-weights"


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], numbers_right: bool = False) -> list[str]:
    """Lines of left-aligned columns, a dashed rule under the header, trailing spaces cut.

    ``numbers_right``: a column whose non-empty cells are all numbers is right-aligned.
    """
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = [numbers_right and _numeric([r[i] for r in cells[1:]]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right, strict=True)).rstrip()

    return [line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])]


def _numeric(column: Sequence[str]) -> bool:
    filled = [c for c in column if c]
    return bool(filled) and all(_is_number(c) for c in filled)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def progress_text(p: PassProgress, prog: str = PROG) -> str:
    """``pytest-weights: model.safetensors: 12/67 tensors, 0.41/1.20 GB, 0.85 GB/s``."""
    rate = p.bytes_done / p.seconds / 1e9 if p.seconds > 0 else 0.0
    return (
        f"{prog}: {p.checkpoint}: {p.tensors_done}/{p.tensors_total} tensors, "
        f"{p.bytes_done / 1e9:.2f}/{p.bytes_total / 1e9:.2f} GB, {rate:.2f} GB/s"
    )


class LiveLine:
    """A progress callback that rewrites one status line on a terminal stream (default: the
    current ``sys.stderr``), at most once per ``interval`` seconds; cleared when the pass ends."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self._stream = stream
        self.interval = interval
        self.live = False
        self._last = 0.0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def __call__(self, p: PassProgress) -> None:
        if p.tensors_total == 0:
            return
        if p.finished:
            self.clear()
            return
        now = time.monotonic()
        if self.live and now - self._last < self.interval:
            return
        self._last = now
        self.stream.write(f"\r\x1b[K{progress_text(p)}")
        self.stream.flush()
        self.live = True

    def clear(self) -> None:
        """Erase the line, if one is shown."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.live = False
