"""Helpers shared by the readers: cheap file identities, optimizer-state detection, names, and refusing
hostile input (:func:`refuse`, :func:`load_json`, :func:`check_shape`) with a one-line :class:`CheckpointError`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from ..digest import head_tail_digest
from ..errors import FATAL, CheckpointError

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
    """``path:size:mtime_ns:digest``; the digest covers the first and last 64 KiB of the file.

    A URL (:class:`~.source.RemotePath`) is identified by its redacted URL, ETag or version, and size."""
    if not isinstance(path, Path) and hasattr(path, "identity"):
        return path.identity()
    try:
        st = path.stat()
        digest = head_tail_digest(path, st)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    # the absolute path too: files written within one clock tick can share size and mtime
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{digest[:16]}"


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


# -- refusing hostile input ---------------------------------------------------------------------------------------

#: Longest foreign exception message quoted in a refusal.
REASON_LIMIT = 200
#: Deepest JSON nesting accepted in a header, index or config (real ones nest 3 or 4 levels).
MAX_JSON_DEPTH = 64
#: Largest dimension and element count accepted in a shape (beyond any real tensor; keeps arithmetic cheap).
MAX_NUMEL = 1 << 56
#: A tensor may not expand to more than this many bytes per byte of its file: zero strides, sparse layouts and
#: compression can make a small file describe a huge tensor, and reading it must not allocate without bound.
MAX_EXPANSION = 1024

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def refusal(what: str, exc: BaseException) -> str:
    """``<what>: <ExceptionType>: <message>`` on one line, the message cut to :data:`REASON_LIMIT` characters."""
    try:
        message = " ".join(str(exc).split())
    except Exception:  # an exception whose __str__ fails
        message = ""
    detail = message.partition("WeightsUnpickler error:")[2].strip()  # torch.load's advice hides the reason
    if detail:
        message = detail.split(" Check the documentation of torch.load")[0]
    if len(message) > REASON_LIMIT:
        message = message[: REASON_LIMIT - 1] + "…"
    return f"{what}: {type(exc).__name__}: {message}" if message else f"{what}: {type(exc).__name__}"


def _root_failure(exc: BaseException) -> BaseException:
    """The first failure wrapped by an exception that collects them (torch.distributed.checkpoint's
    ``CheckpointException`` maps ranks to ``(exception, stack)``), else ``exc`` itself."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, Mapping):
        for failure in failures.values():
            inner = failure[0] if isinstance(failure, tuple) and failure else failure
            if isinstance(inner, BaseException):
                return inner
    return exc


@contextlib.contextmanager
def refuse(path: str | Path, what: str) -> Iterator[None]:
    """Turn whatever a library raises on bad input into ``CheckpointError(path, "<what>: <Type>: <message>")``.

    Catches every exception, including ``BaseException`` subclasses such as torch's ``CheckpointException``,
    ``RecursionError`` and ``MemoryError``; :class:`CheckpointError` and the fatal ones (``KeyboardInterrupt``,
    ``SystemExit``, ``GeneratorExit``, also when wrapped) pass through. The original stays in ``__context__``.
    """
    try:
        yield
    except (CheckpointError, *FATAL):
        raise
    except BaseException as e:
        root = _root_failure(e)
        if isinstance(root, FATAL):
            raise root from None
        if isinstance(root, CheckpointError):
            raise root from None
        raise CheckpointError(path, refusal(what, root)) from None


class BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, without what lets a few bytes of a pickle allocate without bound.

    The C unpickler sizes its memo table by the largest index a PUT opcode names (12 crafted bytes make it
    allocate and zero gigabytes); this one keeps its memo in a dict. BYTEARRAY8 allocates the length it
    declares before reading it, so it is refused (checkpoint metadata never holds a bytearray). Subclasses
    still decide what :meth:`find_class` may return.
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def _no_bytearray8(self) -> None:
        raise pickle.UnpicklingError("BYTEARRAY8 is not accepted (it allocates its declared length first)")

    dispatch[pickle.BYTEARRAY8[0]] = _no_bytearray8


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``raw`` (JSON) nests arrays and objects, counting at most ``limit + 1``; linear, no recursion."""
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        depth += 1 if c in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, out[key], value)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str, first: object, second: object) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def load_json(path: str | Path, raw: bytes, what: str, *, constants: bool = True) -> object:
    """Parse untrusted JSON: UTF-8 only, nesting at most :data:`MAX_JSON_DEPTH`, no key twice in one object
    (which copy would count is ambiguous), ``NaN``/``Infinity`` only if ``constants``. CheckpointError otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(path, f"{what} is not UTF-8 text (byte {e.start})") from None
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise CheckpointError(path, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
    hooks: dict = {"object_pairs_hook": _unique_keys}
    if not constants:
        hooks["parse_constant"] = _no_constant
    try:
        return json.loads(text, **hooks)
    except _DuplicateKey as e:
        raise CheckpointError(
            path, f"{what} has the key {short(e.key)} twice in one object ({short(e.first)}, then {short(e.second)})"
        ) from None
    except (ValueError, RecursionError, MemoryError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(path, refusal(f"{what} is not valid JSON", e)) from None


def check_shape(path: str | Path, name: str, shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple if it is a list or tuple of non-negative ints (not bools) with a plausible product."""
    if not isinstance(shape, (list, tuple)) or len(shape) > 64:
        raise CheckpointError(path, f"tensor {name!r}: invalid shape {short(shape)}")
    numel = 1
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0 or s > MAX_NUMEL:
            raise CheckpointError(path, f"tensor {name!r}: invalid shape {short(shape)} (entry {short(s)})")
        numel *= s
    if numel > MAX_NUMEL:
        raise CheckpointError(path, f"tensor {name!r}: implausible shape {short(shape)} ({numel} elements)")
    return tuple(shape)


def check_expansion(path: str | Path, name: str, nbytes: int, file_bytes: int) -> None:
    """Refuse a tensor that would take more than :data:`MAX_EXPANSION` times the bytes of its file."""
    if nbytes > max(file_bytes, 1) * MAX_EXPANSION:
        raise CheckpointError(
            path,
            f"tensor {name!r} would take {nbytes} bytes, more than {MAX_EXPANSION}× the {file_bytes} bytes of the "
            "file: refused as implausible",
        )


def short(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (for values from a hostile file in a message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 300 characters."""
    try:
        text = str(e).strip()
    except Exception:  # an exception whose message cannot be formed
        text = ""
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def import_optional(path: object, module: str, what: str, extra: str):
    """Import the optional package a format needs, or refuse ``path`` in one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"pip install 'pytest-weights[{extra}]'"
        raise CheckpointError(path, f"reading {what} files needs the optional {module!r} package: {hint}") from None
