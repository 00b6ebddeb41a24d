"""Helpers shared by the readers: cheap file identities, optimizer-state detection, names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import CheckpointError

#: Bytes hashed at each end of a file for its identity: enough to cover a zip central
#: directory or a format header, cheap enough to do on every open.
_IDENTITY_SPAN = 64 * 1024

#: Key-path components under which everything is optimizer state.
OPTIMIZER_KEYS = frozenset(
    {
        "optim",
        "optim_state",
        "optimizer",
        "optimizers",
        "optimizer_state",
        "optimizer_states",
        "optimizer_state_dict",
        "opt_state",
    }
)


def file_identity(path: Path) -> str:
    """``path:size:mtime_ns:digest``; the digest covers the first and last 64 KiB of the file."""
    try:
        st = path.stat()
        h = hashlib.sha256()
        with path.open("rb") as f:
            h.update(f.read(_IDENTITY_SPAN))
            if st.st_size > _IDENTITY_SPAN:
                f.seek(max(_IDENTITY_SPAN, st.st_size - _IDENTITY_SPAN))
                h.update(f.read(_IDENTITY_SPAN))
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    # the absolute path too: files written within one clock tick can share size and mtime
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:16]}"


def combine_identities(parts: Iterable[str]) -> str:
    """One identity for a checkpoint made of several files (it changes if any part does)."""
    h = hashlib.sha256()
    n = 0
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
        n += 1
    return f"{n}:{h.hexdigest()[:32]}"


def is_optimizer_path(parts: Sequence[str]) -> bool:
    """True when a key path lies under an optimizer-state key such as ``optimizer``."""
    return any(p in OPTIMIZER_KEYS for p in parts)


def read_magic(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file (fewer if it is shorter); CheckpointError if unreadable."""
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None


def is_plain_filename(name: str) -> bool:
    """A file name with no directory part, so it cannot point outside its directory."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
