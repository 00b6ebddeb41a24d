"""A persistent cache of computed statistics, so an unchanged checkpoint is never re-read.

Entries are keyed by checkpoint identity (size, mtime and a header hash, see
:meth:`Checkpoint.identity`), tensor name and the statistic's key (its parameters). Values
are stored as JSON, never pickled: only result types registered with :func:`pytest_weights.stats.base.cacheable`
(NamedTuples of numbers and strings) are stored, so a tampered cache cannot run code.
One file per checkpoint; writes are atomic (temporary file + rename), so concurrent
writers (pytest-xdist workers) never leave a torn file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .stats.base import RESULT_TYPES, Statistic

VERSION = 1


def _encode(value: Any) -> dict | None:
    name = type(value).__qualname__
    if RESULT_TYPES.get(name) is not type(value):
        return None
    fields = []
    for v in value:
        if isinstance(v, float) and not math.isfinite(v):
            fields.append({"f": repr(v)})  # nan, inf, -inf
        elif isinstance(v, (int, float, str, bool)) or v is None:
            fields.append(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            fields.append(list(v))
        else:
            return None
    return {"type": name, "fields": fields}


def _decode(data: Any) -> Any:
    cls = RESULT_TYPES.get(data.get("type")) if isinstance(data, dict) else None
    if cls is None:
        raise ValueError("unknown result type")
    fields = [float(v["f"]) if isinstance(v, dict) else v for v in data["fields"]]
    return cls(*fields)


class StatCache:
    """Statistic values on disk under ``directory`` (e.g. pytest's cache dir)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.stored = 0

    def _file(self, identity: str) -> Path:
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"

    def load(self, identity: str, requests: Mapping[str, Iterable[Statistic]]) -> dict[str, dict[Statistic, Any]]:
        """Cached values of the requested statistics, by tensor name (missing ones absent)."""
        try:
            doc = json.loads(self._file(identity).read_text())
        except (OSError, ValueError):
            return {}
        if doc.get("version") != VERSION or doc.get("identity") != identity:
            return {}
        out: dict[str, dict[Statistic, Any]] = {}
        tensors = doc.get("tensors", {})
        for name, stats in requests.items():
            stored = tensors.get(name, {})
            for stat in stats:
                if stat.key in stored:
                    try:
                        out.setdefault(name, {})[stat] = _decode(stored[stat.key])
                        self.hits += 1
                    except (ValueError, TypeError, KeyError):
                        continue
        return out

    def save(self, identity: str, values: Mapping[str, Mapping[Statistic, Any]]) -> None:
        """Merge ``values`` into the checkpoint's cache file (atomically)."""
        path = self._file(identity)
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != VERSION or doc.get("identity") != identity:
                raise ValueError
        except (OSError, ValueError):
            doc = {"version": VERSION, "identity": identity, "tensors": {}}
        changed = False
        for name, stats in values.items():
            entry = doc["tensors"].setdefault(name, {})
            for stat, value in stats.items():
                encoded = _encode(value)
                if encoded is not None and entry.get(stat.key) != encoded:
                    entry[stat.key] = encoded
                    changed = True
                    self.stored += 1
        if not changed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
