"""The cheap content digest of a file behind every identity: its first and last 64 KiB.

Standard library only, so that both the readers (statistics cache keys) and the outcome
replay (which must not import torch, as the readers package does) use the same one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Bytes hashed at each end of a file: enough to cover a zip central directory or a format
#: header, cheap enough to do on every open.
IDENTITY_SPAN = 64 * 1024


def head_tail_digest(path: Path, st: os.stat_result | None = None) -> str:
    """sha256 of the first and last :data:`IDENTITY_SPAN` bytes of ``path`` (hex)."""
    size = (st or path.stat()).st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(IDENTITY_SPAN))
        if size > IDENTITY_SPAN:
            f.seek(max(IDENTITY_SPAN, size - IDENTITY_SPAN))
            h.update(f.read(IDENTITY_SPAN))
    return h.hexdigest()
