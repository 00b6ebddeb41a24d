"""The outcome cache: a re-run on unchanged inputs replays its judged outcomes without torch.

The statistics cache (:mod:`.cache`) spares a re-run the reading of tensors, but judging the
cached values still needs the assertion kinds and statistics, which import torch (~1–2 s).
This module is the other half: it stores what every item of a spec file *concluded* (passed,
the failure text, the skip reason, the ``--weights-json`` result), keyed by everything that
can change a conclusion, and a re-run whose key matches re-reports those outcomes without
importing torch, numpy, scipy or PyYAML and without opening a checkpoint.

Design (option (b) of issue 15, part 3): re-evaluating cached statistics torch-free (option
(a)) would need every statistic, reader and assertion module to import torch lazily and the
tensor listing of every format without torch; the outcome cache gets the same start-up with
the full path untouched. The key (:func:`.plugin.replay.session_key`) holds:

* each ``--checkpoint``/``--reference`` path's :func:`fingerprint`: path, size, mtime and a
  digest of the first and last 64 KiB of *every* file under it (as the readers'
  ``file_identity``, so anything that invalidates the statistics cache invalidates this too,
  and a file added to a run or model directory as well);
* every ``--weights-*`` option but the output paths (options added later included), the
  ini file's digest and ``-o`` overrides, pytest's arguments, rootdir and start directory;
* pytest-weights' version and a fingerprint of its source files and bundled specs, the
  version files of torch, numpy, scipy, PyYAML, pytest, onnx and gguf, and Python's version.

Each spec file's record is also tied to the SHA-256 of its text, so editing one spec
re-evaluates that file only. A missing, unreadable or tampered record (it is JSON, never
pickled), or any mismatch, falls back to the real pass; ``--weights-no-cache``,
``--weights-regen``, pytest-xdist and ``-p no:cacheprovider`` bypass the outcome cache.
Limits, as for the statistics cache: a change in the middle of a large file that keeps its
size and mtime goes unseen; a URL (``s3://``) is not fingerprinted, so it is never replayed.

``pytest-weights check`` and ``inspect`` do the same with their whole output
(:func:`replay_output`): keyed by their options, the fingerprint of every file an option
names, the code and the terminal, an unchanged re-run prints the stored output and exit
status (0 or 1 only; never an error) without importing torch; ``--no-cache`` and
``check --json PATH`` always run. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .digest import head_tail_digest

#: Bump when the record layout or the meaning of a field changes.
FORMAT = 1
#: A checkpoint path with more files than this is not fingerprinted (no replay; hashing them costs more).
MAX_FILES = 10_000
#: Packages whose version can change a statistic or an outcome (their version files are fingerprinted:
#: ``importlib.metadata`` alone costs a tenth of a second to import).
DEPENDENCIES = ("torch", "numpy", "scipy", "yaml", "_pytest", "onnx", "gguf")
#: Files of a package that change with its version.
VERSION_FILES = ("__init__.py", "version.py", "_version.py")
#: Package files whose change invalidates every record (code, bundled specs, data).
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".json")

_code: str | None = None


def file_identity(path: Path) -> str:
    """``path:size:mtime_ns:inode:digest`` of one file; the digest covers its first and last 64 KiB."""
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{head_tail_digest(path, st)}"


def fingerprint(path: str | Path, skip: Iterable[Path] = ()) -> str | None:
    """Identity of every file under ``path`` (or of the file itself); None when there are too
    many files or one cannot be read. Directories in ``skip`` (e.g. pytest's cache) are left out."""
    root = Path(path).resolve()
    skipped = {Path(s).resolve() for s in skip}
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if here / d not in skipped)
            files += [here / f for f in sorted(filenames)]
            if len(files) > MAX_FILES:
                return None
    else:
        return None
    h = hashlib.sha256()
    try:
        for f in files:
            if f.is_file():
                h.update(file_identity(f).encode())
            else:  # a socket, a dangling link …: its name and kind
                h.update(f"{f}:{f.lstat().st_mode}".encode())
            h.update(b"\0")
    except OSError:
        return None
    return f"{len(files)}:{h.hexdigest()}"


def code_fingerprint() -> str:
    """pytest-weights' version, its source files (name, size, mtime) and its dependencies' version files."""
    global _code
    if _code is None:
        from importlib.util import find_spec

        h = hashlib.sha256(f"{__version__}|{sys.version}|".encode())
        package = Path(__file__).resolve().parent
        for top in (package, package.parent / "specs"):  # the bundled specs of a source checkout too
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for name in sorted(filenames):
                    if name.endswith(CODE_SUFFIXES):
                        st = os.stat(os.path.join(dirpath, name))
                        h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
        for name in DEPENDENCIES:
            spec = find_spec(name)  # locates a top-level package without importing it
            where = Path(spec.origin).parent if spec is not None and spec.origin else None
            for file in VERSION_FILES if where is not None else ():
                with contextlib.suppress(OSError):
                    st = os.stat(where / file)  # type: ignore[operator]
                    h.update(f"{where}/{file}:{st.st_size}:{st.st_mtime_ns}\0".encode())
            h.update(f"{name}:{where}\0".encode())
        _code = h.hexdigest()
    return _code


def text_digest(path: Path) -> str | None:
    """SHA-256 of a spec file's bytes (None if unreadable)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def key_digest(key: Mapping[str, Any]) -> str:
    """The file-name digest of a key (canonical JSON)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


class OutcomeStore:
    """Records on disk under ``directory``: one JSON file per session key, written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _file(self, key: Mapping[str, Any]) -> Path:
        return self.directory / f"{key_digest(key)}.json"

    def load(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record stored under ``key``, or None (missing, unreadable, another format or key)."""
        try:
            doc = json.loads(self._file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != _plain(key):
            return None
        if not isinstance(doc.get("files"), dict) or not isinstance(doc.get("session"), dict):
            return None
        return doc

    def save(self, key: Mapping[str, Any], session: Mapping[str, Any], files: Mapping[str, Any]) -> None:
        """Merge ``files`` (spec path → its record) into the record of ``key``, with ``session``'s data
        (the same key means the same checkpoints, options and code: the other files' records stay valid)."""
        old = self.load(key)
        merged = dict(old["files"]) if old is not None else {}
        merged.update(files)
        doc = {"format": FORMAT, "key": _plain(key), "session": _plain(session), "files": merged}
        write_json(self._file(key), doc)


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` to ``path`` atomically (temporary file + rename): readers never see a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------- the command line's replay


#: Command-line options that say where the cache is or whether to use it: not part of the key.
CLI_UNKEYED = ("cache_dir", "no_cache")
#: What a progress line on a terminal looks like (``cli._progress``): not an error, not recorded.
_PROGRESS = re.compile(r"\r\x1b\[K[^\r\n]*")


class _Tee:
    """A text stream that writes through to ``stream`` and keeps a copy of what was written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding …
        return getattr(self.stream, name)


def output_key(command: str, options: Mapping[str, Any], skip: Iterable[Path] = ()) -> dict[str, Any] | None:
    """The key of a command's output: its options, and the :func:`fingerprint` of every option
    value that names a local file or directory (None for a URL, or a path that cannot be fingerprinted)."""
    values = {k: _plain(v) for k, v in sorted(options.items()) if k not in CLI_UNKEYED}
    paths = {}
    for text in _strings(values.values()):
        if "://" in text:
            return None
        path = Path(text)
        if path.exists():
            got = fingerprint(path, skip)
            if got is None:
                return None
            paths[text] = [str(path.resolve()), got]
    return {
        "command": command,
        "options": values,
        "cwd": os.getcwd(),
        "code": code_fingerprint(),
        "env": {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "COLUMNS")},
        "tty": [sys.stdout.isatty(), sys.stderr.isatty()],
        "paths": paths,
    }


def _strings(values: Iterable[Any]) -> Iterator[str]:
    for v in values:
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            yield from _strings(v)


def replay_output(key: Mapping[str, Any] | None, directory: Path, run: Callable[[], int]) -> int:
    """A command's stored output and exit status when ``key`` matches a record in ``directory``;
    else ``run()`` with its output recorded (exit status 0 or 1 and nothing but progress on stderr)."""
    if key is None:
        return run()
    path = directory / f"{key_digest(key)}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") == FORMAT and doc.get("key") == _plain(key) and doc.get("status") in (0, 1):
            sys.stdout.write(str(doc["stdout"]))
            sys.stdout.flush()
            return int(doc["status"])
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        pass
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        status = run()
    finally:
        sys.stdout, sys.stderr = out.stream, err.stream
    if status in (0, 1) and not _PROGRESS.sub("", err.copy.getvalue()):
        with contextlib.suppress(OSError):
            write_json(path, {"format": FORMAT, "key": _plain(key), "status": status, "stdout": out.copy.getvalue()})
    return status
