"""Training runs: a directory of checkpoints from one run, each named with its step.

``discover_run(path)`` recognises the usual layouts and orders them by step (numerically)::

    checkpoint-500/            Hugging Face Trainer
    step_1000.safetensors      step-1000/   step1000.pt
    global_step200/            DeepSpeed
    epoch=3-step=900.ckpt      PyTorch Lightning (the step, not the epoch, is used)
    ckpt_300.pt                iter_0000400/ (Megatron)   model_700.pth   00000800/ (Orbax)

Each entry is a checkpoint file with a known suffix or a directory. A directory that is
itself a checkpoint (``model.safetensors``, a DCP ``.metadata`` …) is not a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: File suffixes of single-file checkpoints (a name may carry several, e.g. ``x.safetensors``).
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz", ".gguf")

_STEP_PATTERNS = (
    # "step" anywhere after a separator: step_1000, step-1000, global_step200, epoch=3-step=900
    re.compile(r"(?:^|[-_.=])(?:global_)?step[-_=]?(\d+)$", re.IGNORECASE),
    re.compile(r"^(?:checkpoint|ckpt|iter|iteration|it|model|weights|snapshot)[-_=]?(\d+)$", re.IGNORECASE),
    re.compile(r"^(\d+)$"),
)


@dataclass(frozen=True)
class RunEntry:
    """One checkpoint of a run."""

    step: int
    path: Path


@dataclass(frozen=True)
class Run:
    """The checkpoints of one training run, ordered by step (then by name)."""

    path: Path
    entries: tuple[RunEntry, ...]

    @property
    def latest(self) -> RunEntry:
        return self.entries[-1]

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(e.step for e in self.entries)

    def not_one_checkpoint(self) -> str:
        """Why this run's directory is not one checkpoint, and which to pass instead."""
        steps = ", ".join(str(e.step) for e in self.entries[:5]) + (", …" if len(self.entries) > 5 else "")
        return (
            f"a directory of {len(self.entries)} checkpoints from one run (steps {steps}), not one checkpoint: "
            f"pass one of them, e.g. {self.latest.path}"
        )


def step_of(name: str) -> int | None:
    """The step number in a checkpoint's file or directory name, or None if it has none."""
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pattern in _STEP_PATTERNS:
        m = pattern.search(stem)
        if m:
            return int(m.group(1))
    return None


def _is_entry(child: Path) -> bool:
    if child.name.startswith("."):
        return False
    if child.is_dir():
        return True
    return child.is_file() and child.name.endswith(CHECKPOINT_SUFFIXES)


def discover_run(path: str | Path) -> Run | None:
    """The run whose checkpoints are the children of ``path``, or None if it is not a run."""
    from .readers.local import is_checkpoint
    from .readers.source import as_path

    p = as_path(path)  # a URL prefix (s3://bucket/run/) is listed like a directory
    if not p.is_dir() or is_checkpoint(p):
        return None
    entries = []
    try:
        children = list(p.iterdir())
    except OSError:
        return None
    for child in children:
        if not _is_entry(child):
            continue
        step = step_of(child.name)
        if step is not None:
            entries.append(RunEntry(step, child))
    if not entries:
        return None
    entries.sort(key=lambda e: (e.step, e.path.name))
    return Run(p, tuple(entries))
