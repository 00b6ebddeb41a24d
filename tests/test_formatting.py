"""The one table formatter and the one progress renderer (pytest_weights.formatting); the live
line on a real terminal is tested in test_progress.py."""

from __future__ import annotations

import io
from dataclasses import replace

from pytest_weights.cli import print_table
from pytest_weights.engine import PassProgress
from pytest_weights.formatting import LiveLine, progress_text, table


def state(**changes: object) -> PassProgress:
    """A pass 12 of 67 tensors in, with ``changes``."""
    return replace(PassProgress("m.safetensors", 12, 67, 410_000_000, 1_200_000_000, 0.5), **changes)


def test_table_aligns_columns_under_a_rule_and_cuts_trailing_spaces() -> None:
    rows = [("a.weight", "0.5", ""), ("layers.10.b", "12", "x")]
    assert table(("name", "std", "note"), rows) == [
        "name         std  note",
        "-----------  ---  ----",
        "a.weight     0.5",
        "layers.10.b  12   x",
    ]
    assert table(("name", "std", "note"), rows, numbers_right=True)[2:] == ["a.weight     0.5", "layers.10.b   12  x"]


def test_cli_tables_are_the_shared_formatter() -> None:
    out = io.StringIO()
    rows = [("x", "1.5", "nan"), ("yy", "-2", "")]
    print_table(("name", "v", "w"), rows, out)
    assert out.getvalue() == "\n".join(table(("name", "v", "w"), rows, numbers_right=True)) + "\n"
    assert out.getvalue().splitlines()[2] == "x     1.5  nan"


def test_progress_text() -> None:
    assert progress_text(state()) == "pytest-weights: m.safetensors: 12/67 tensors, 0.41/1.20 GB, 0.82 GB/s"
    assert progress_text(state(seconds=0.0)).endswith(", 0.00 GB/s")


def test_live_line_rewrites_throttles_and_clears() -> None:
    out = io.StringIO()
    line = LiveLine(out, interval=3600)
    line(state(tensors_total=0))
    assert out.getvalue() == ""  # nothing to read: no line
    line(state())
    line(state(tensors_done=13))  # within the interval: not drawn
    assert out.getvalue() == "\r\x1b[K" + progress_text(state())
    line(state(finished=True))
    assert out.getvalue().endswith(progress_text(state()) + "\r\x1b[K") and not line.live
    line.clear()  # nothing shown: nothing written
    assert out.getvalue().count("\r\x1b[K") == 2
