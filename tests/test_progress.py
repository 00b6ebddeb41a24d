"""The live progress line (pytest_weights.formatting): shown on a terminal, by the plugin and by
the CLI, absent when output is not a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from conftest import save, transformer_like


def run_on_tty(argv: list[str], cwd) -> str:
    """What the command ``argv`` writes to a terminal (stdout and stderr both on a pty)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=secondary, stdout=secondary, stderr=secondary)
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
    tty = run_on_tty([sys.executable, "-m", "pytest", *args], tmp_path)
    assert "67/67 tensors" in tty and "GB/s" in tty, tty[-2000:]
    piped = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=tmp_path, capture_output=True, text=True)
    assert piped.returncode == 0
    assert "67/67 tensors" not in piped.stdout
    assert "read 67 tensors" in piped.stdout  # the summary line is always there


def test_cli_inspect_shows_the_shared_progress_line_on_a_terminal(tmp_path):
    ckpt = save(tmp_path / "m.safetensors", transformer_like())
    argv = [sys.executable, "-m", "pytest_weights.cli", "inspect", str(ckpt), "--no-cache", "--stats", "std"]
    tty = run_on_tty(argv, tmp_path)
    assert "\r\x1b[Kpytest-weights: m.safetensors: " in tty and " GB/s" in tty, tty[:2000]
    assert "\r\x1b[K" in tty.split("GB/s")[-1]  # erased before the table
    piped = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "GB/s" not in piped.stderr and piped.stdout.startswith("name ")
