"""The live progress line: shown on a terminal, absent when output is not a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from conftest import save, transformer_like


def run_on_tty(args: list[str], cwd) -> str:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args], cwd=cwd, stdin=secondary, stdout=secondary, stderr=secondary
    )
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(primary)
    return out.decode(errors="replace")


def test_progress_line_on_a_terminal_only(tmp_path):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    args = ["--checkpoint", str(ckpt), "-p", "no:cacheprovider", "-p", "no:xdist"]
    tty = run_on_tty(args, tmp_path)
    assert "67/67 tensors" in tty and "GB/s" in tty, tty[-2000:]
    piped = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=tmp_path, capture_output=True, text=True)
    assert piped.returncode == 0
    assert "67/67 tensors" not in piped.stdout
    assert "read 67 tensors" in piped.stdout  # the summary line is always there
