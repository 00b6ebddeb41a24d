"""Where a checkpoint's bytes come from: a local file (memory-mapped) or a URL read by byte ranges.

:func:`as_path` turns what the user passed into a :class:`~pathlib.Path` or, for a URL such as
``s3://bucket/model.safetensors``, ``gs://…`` or ``https://…``, a :class:`RemotePath`: the few
path operations the readers use (``name``, ``suffix``, ``parent``, ``/``, ``is_file``, ``is_dir``),
answered by an `fsspec <https://filesystem-spec.readthedocs.io>`_ filesystem. fsspec (and s3fs,
gcsfs …) are imported only when a URL is opened. Credentials and endpoints come from each
filesystem's standard mechanisms (``AWS_*`` environment variables, ``AWS_ENDPOINT_URL``, fsspec
config); nothing here reads or stores them.

A :class:`RemotePath` prints as its *redacted* URL (``user:password@`` and query-string values
such as signatures become ``***``), so labels, tensor infos, messages, JSON reports and cache keys
built from it never hold a credential; the real URL is used only to fetch.

A byte source reads ranges: :class:`LocalFile` maps a file (zero-copy, as
:class:`~.safetensors_file.SafetensorsFile` always did); :class:`RemoteFile` fetches exactly the
ranges asked for (``fs.cat_file(path, start, end)``, nothing cached), counting the bytes and requests.
:class:`RangeFile` is a seekable file object over a :class:`RemoteFile` with a small block cache, for
parsers that want a file (``zipfile``, ``torch.load`` of a zip archive's metadata).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import mmap
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import torch

from ..errors import FATAL, CheckpointError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Query parameters kept in a redacted URL (they identify a version, they do not authorise).
_PUBLIC_QUERY = frozenset({"versionId", "version", "revision", "generation"})
#: Environment variables whose values are secrets: scrubbed from any foreign message quoted.
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
#: Bytes hashed at each end of a remote file that has no ETag or version (as local file identities do).
_IDENTITY_SPAN = 64 * 1024
#: A range larger than twice this is fetched as concurrent requests of this size.
CHUNK_BYTES = 8 << 20
#: Block size and block count of a :class:`RangeFile`'s cache.
BLOCK_BYTES = 64 * 1024
CACHE_BLOCKS = 16


def is_url(value: object) -> bool:
    """True for ``scheme://…`` strings other than ``file://`` (and for a :class:`RemotePath`)."""
    if isinstance(value, RemotePath):
        return True
    return isinstance(value, str) and bool(_URL.match(value)) and not value.lower().startswith("file://")


def as_path(value: str | os.PathLike[str]) -> Path | RemotePath:
    """A :class:`RemotePath` for a URL, else a :class:`Path` (``file://`` URLs become paths)."""
    if isinstance(value, (RemotePath, Path)):
        return value
    text = os.fspath(value)
    if text.lower().startswith("file://"):
        return Path(text[len("file://") :])
    return RemotePath(text) if is_url(text) else Path(text)


def redact(url: str) -> str:
    """``url`` without secrets: ``user:password@`` → ``***@``, query values → ``***`` (except version ids)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='') if k in _PUBLIC_QUERY else '***'}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str, url: str) -> str:
    """``text`` (a foreign error message) with the raw URL, its credentials and known secret values removed."""
    secrets = [url, url.split("?", 1)[0]]
    parts = urlsplit(url)
    if parts.password:
        secrets.append(parts.password)
    if parts.username:
        secrets.append(parts.username)
    if parts.query:
        secrets += [v for k, v in parse_qsl(parts.query) if k not in _PUBLIC_QUERY and len(v) >= 4]
    secrets += [os.environ[k] for k in _SECRET_ENV if len(os.environ.get(k, "")) >= 4]
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, redact(url) if secret in secrets[:2] else "***")
    text = re.sub(r"(?i)(signature|x-amz-[a-z-]+|token|sig|key)=[^&\s'\"]+", r"\1=***", text)
    return " ".join(text.split())[:200]


class RemotePath:
    """A URL with the path operations the readers use; ``str()`` is the redacted URL."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/") if not url.endswith("://") else url
        self._info: dict | None = None
        self._isdir: bool | None = None

    # -- path operations ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL to fetch (may hold credentials: never print it)."""
        return self._url

    @property
    def protocol(self) -> str:
        return self._url.split("://", 1)[0].lower()

    @property
    def _path_part(self) -> str:
        return urlsplit(self._url).path

    @property
    def name(self) -> str:
        return self._path_part.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        parts = urlsplit(self._url)
        head = parts.path.rstrip("/").rsplit("/", 1)[0]
        return RemotePath(urlunsplit((parts.scheme, parts.netloc, head, parts.query, "")))

    def __truediv__(self, name: str) -> RemotePath:
        parts = urlsplit(self._url)
        path = parts.path.rstrip("/") + "/" + quote(name, safe="/._-~")
        return RemotePath(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))

    def expanduser(self) -> RemotePath:
        return self

    def resolve(self) -> RemotePath:
        return self

    def __str__(self) -> str:
        return redact(self._url)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other._url == self._url

    def __hash__(self) -> int:
        return hash(("RemotePath", self._url))

    def __getstate__(self) -> dict:
        return {"_url": self._url, "_info": None, "_isdir": None}

    # -- the filesystem ----------------------------------------------------------------------------------------
    def fs(self) -> tuple[Any, str]:
        """(fsspec filesystem, path in it); ImportError and unknown schemes become CheckpointError."""
        with self.errors("cannot open"):
            try:
                import fsspec.core
            except ImportError:
                raise CheckpointError(self, "reading checkpoints by URL needs fsspec: pip install fsspec") from None
            try:
                return fsspec.core.url_to_fs(self._url)
            except ImportError as e:
                package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}.get(self.protocol, e.name)
                raise CheckpointError(
                    self, f"reading {self.protocol}:// URLs needs {package}: pip install {package}"
                ) from None
            except ValueError as e:
                if "protocol" in str(e).lower():
                    raise CheckpointError(self, f"unknown URL scheme {self.protocol!r}") from None
                raise

    @contextlib.contextmanager
    def errors(self, what: str):
        """Turn a filesystem's failure (404, 403, connection refused, …) into a one-line CheckpointError."""
        try:
            yield
        except (CheckpointError, *FATAL):
            raise
        except BaseException as e:
            raise CheckpointError(self, f"{what}: {remote_reason(e, self._url)}") from None

    @property
    def is_http(self) -> bool:
        return self.protocol in ("http", "https")

    def info(self) -> dict:
        """The filesystem's metadata (size, ETag …), fetched once; CheckpointError when it is not a file."""
        if self._info is None:
            fs, path = self.fs()
            with self.errors("cannot open"):
                info = fs.info(path)
            if info.get("type") == "directory":
                raise CheckpointError(self, "a directory, not a file")
            if info.get("size") is None:
                raise CheckpointError(self, "the server does not give the file's size (no Content-Length)")
            self._info = info
        return self._info

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_file(self) -> bool:
        """Whether the URL is a file; False when not found; CheckpointError when it cannot be asked (403, refused)."""
        if self.is_http and (self._url.endswith("/") or not self.suffix):
            return False
        try:
            self.info()
        except CheckpointError as e:
            if "not found" in e.message or "a directory" in e.message:
                return False
            raise
        return True

    def is_dir(self) -> bool:
        """A prefix with objects under it (object stores); over HTTP, a URL with no file suffix."""
        if self._isdir is None:
            if self.is_http:
                self._isdir = not self.suffix
            else:
                fs, path = self.fs()
                with self.errors("cannot list"):
                    self._isdir = bool(fs.isdir(path))
        return self._isdir

    def iterdir(self) -> list[RemotePath]:
        """The entries of a prefix (object stores; one listing request); none over HTTP, which cannot list."""
        if self.is_http or not self.is_dir():
            return []
        fs, path = self.fs()
        with self.errors("cannot list"):
            listing = fs.ls(path, detail=True)
        children = []
        for entry in listing:
            name = str(entry.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            if not name or str(entry.get("name", "")).rstrip("/") == path.rstrip("/"):
                continue
            child = self / name
            child._isdir = entry.get("type") == "directory"
            if not child._isdir and entry.get("size") is not None:
                child._info = dict(entry)
            children.append(child)
        return children

    def size(self) -> int:
        return int(self.info()["size"])

    def identity(self) -> str:
        """Redacted URL + ETag/version + size (a digest of both ends when the server gives neither)."""
        info = self.info()
        keys = ("VersionId", "ETag", "etag", "generation", "md5Hash", "Last-Modified")
        tag = next((str(info[k]) for k in keys if info.get(k)), None)
        if tag is None:
            source = RemoteFile(self)
            h = hashlib.sha256(source.read(0, min(_IDENTITY_SPAN, source.size)))
            if source.size > _IDENTITY_SPAN:
                start = max(_IDENTITY_SPAN, source.size - _IDENTITY_SPAN)
                h.update(source.read(start, source.size - start))
            tag = "sha256:" + h.hexdigest()[:16]
        return f"{self}:{tag.strip(chr(34))}:{self.size()}"


def remote_reason(exc: BaseException, url: str) -> str:
    """What a filesystem's exception means, in words, with no credential in it."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    statuses = [getattr(e, "status", None) or _status_of(e) for e in chain]
    if 403 in statuses or any(isinstance(e, PermissionError) for e in chain):
        return (
            "access denied (HTTP 403): check the credentials (AWS_* environment variables, fsspec config) "
            "and the object's permissions"
        )
    if 401 in statuses:
        return "not authorised (HTTP 401): credentials are missing or wrong"
    if any(_refused(e) for e in chain):
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https"):
            return f"cannot connect to {parts.hostname}{f':{parts.port}' if parts.port else ''}: connection refused"
        endpoint = os.environ.get("AWS_ENDPOINT_URL") if parts.scheme.lower() in ("s3", "s3a") else None
        where = f" at {redact(endpoint)}" if endpoint else ""
        return f"cannot connect to the {parts.scheme} endpoint{where}: connection refused or unreachable"
    if 404 in statuses or any(isinstance(e, FileNotFoundError) for e in chain):
        return "not found (no such file or object, HTTP 404)"
    if 416 in statuses:
        return "HTTP 416: the file is shorter than the byte range asked for (truncated, or changed)"
    status = next((s for s in statuses if isinstance(s, int) and s >= 400), None)
    if status is not None:
        return f"HTTP {status}"
    message = scrub(str(exc), url)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _status_of(e: BaseException) -> int | None:
    response = getattr(e, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return 403
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            return 404
        return status if isinstance(status, int) else None
    return None


def _refused(e: BaseException) -> bool:
    name = type(e).__name__
    if name in ("ClientConnectorError", "EndpointConnectionError", "ConnectTimeoutError", "ServerDisconnectedError"):
        return True
    if isinstance(e, ConnectionRefusedError):
        return True
    return isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


# -- byte sources ----------------------------------------------------------------------------------------------


class LocalFile:
    """A local file read by range: large ranges as private memory maps (zero-copy), small ones with ``preadv``."""

    #: Smaller ranges are read with one ``preadv`` (cheaper than mapping and unmapping them).
    MAP_MIN_BYTES = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()  # the prefetch thread and the caller may open at once

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return self._fd

    def read(self, offset: int, nbytes: int) -> bytes:
        """Up to ``nbytes`` bytes from ``offset`` (fewer at the end of the file), through a short-lived handle."""
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(nbytes)

    def tensor(self, offset: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
        """The bytes as a 1-D tensor of ``dtype``: mapped when large and aligned, else read into a new buffer."""
        mapped = self._map(offset, nbytes, dtype) if nbytes >= self.MAP_MIN_BYTES else None
        if mapped is not None:
            return mapped
        buf = torch.empty(nbytes, dtype=torch.uint8)
        self._read_into(buf, offset)
        return buf.view(dtype)

    def _map(self, offset: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The bytes as a 1-D tensor over a private memory map, or None if they cannot be mapped."""
        if offset % dtype.itemsize:
            return None  # misaligned for the dtype (the page-aligned start keeps the remainder)
        fd = self._open()
        if os.fstat(fd).st_size < offset + nbytes:
            raise CheckpointError(self.path, f"truncated since it was opened: needs {offset + nbytes} bytes")
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            m = mmap.mmap(fd, offset + nbytes - base, access=mmap.ACCESS_COPY, offset=base)
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError, AttributeError):
            m.madvise(mmap.MADV_WILLNEED)  # start reading ahead while the previous tensor is reduced
        return torch.frombuffer(m, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset - base)

    def _read_into(self, buf: torch.Tensor, offset: int) -> None:
        pread_into(self._open(), buf, offset, self.path)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Totals:
    """Bytes and range requests fetched by every :class:`RemoteFile` of this process (benchmarks, summaries)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes += nbytes
            self.requests += requests


#: What this process fetched by URL so far.
TOTALS = Totals()


class RemoteFile:
    """A remote file read by exact byte ranges (``cat_file``), nothing cached; counts bytes and requests."""

    def __init__(self, path: RemotePath) -> None:
        self.path = path
        self.size = path.size()
        self._fs, self._fspath = path.fs()
        self._lock = threading.Lock()
        #: Bytes and requests fetched so far (for benchmarks and tests).
        self.bytes_fetched = 0
        self.requests = 0

    def read(self, offset: int, nbytes: int) -> bytes:
        """Exactly ``nbytes`` bytes from ``offset``; CheckpointError when the file is shorter or unreachable."""
        parts = self._fetch(offset, nbytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def tensor(self, offset: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
        """The bytes as a 1-D tensor of ``dtype`` over a private buffer (copied once from the responses)."""
        buf = bytearray(nbytes)
        at = 0
        for part in self._fetch(offset, nbytes):
            buf[at : at + len(part)] = part
            at += len(part)
        return torch.frombuffer(buf, dtype=torch.uint8).view(dtype)

    def _fetch(self, offset: int, nbytes: int) -> list[bytes]:
        """The range as one response, or (when larger than 2 × :data:`CHUNK_BYTES`) chunks fetched concurrently:
        one connection rarely fills the link. Each response must hold exactly the bytes asked for."""
        if nbytes <= 0:
            return [b""]
        if offset + nbytes > self.size:
            raise CheckpointError(
                self.path, f"truncated: needs bytes {offset}..{offset + nbytes} but the file has {self.size}"
            )
        starts = [offset] if nbytes <= 2 * CHUNK_BYTES else list(range(offset, offset + nbytes, CHUNK_BYTES))
        ends = [*starts[1:], offset + nbytes]
        with self.path.errors(f"cannot read bytes {offset}..{offset + nbytes}"):
            if len(starts) == 1:
                parts = [self._fs.cat_file(self._fspath, start=offset, end=offset + nbytes)]
            else:
                parts = self._fs.cat_ranges([self._fspath] * len(starts), starts, ends, on_error="raise")
        got = sum(len(p) for p in parts)
        with self._lock:
            self.bytes_fetched += got
            self.requests += len(parts)
        TOTALS.add(got, len(parts))
        for begin, end, part in zip(starts, ends, parts, strict=True):
            if len(part) != end - begin:
                raise CheckpointError(
                    self.path,
                    f"asked for bytes {begin}..{end}, got {len(part)} bytes "
                    "(truncated, or the server ignores Range requests)",
                )
        return parts

    def close(self) -> None:
        pass


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over a :class:`RemoteFile`, fetching aligned blocks kept in a small LRU cache."""

    def __init__(self, source: RemoteFile, block: int = BLOCK_BYTES, blocks: int = CACHE_BLOCKS) -> None:
        super().__init__()
        self.source, self.block, self.max_blocks = source, block, blocks
        self.pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.source.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, index: int) -> bytes:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        start = index * self.block
        data = self.source.read(start, min(self.block, self.source.size - start))
        self._cache[index] = data
        if len(self._cache) > self.max_blocks:
            self._cache.popitem(last=False)
        return data

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        end = min(self.source.size, self.pos + len(view))
        if end <= self.pos:
            return 0
        if end - self.pos > self.block * 2:  # a large read: one request, not cached
            data = self.source.read(self.pos, end - self.pos)
            view[: len(data)] = data
            self.pos = end
            return len(data)
        done = 0
        while self.pos < end:
            index, within = divmod(self.pos, self.block)
            chunk = self._block(index)[within : within + end - self.pos]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.pos += len(chunk)
        return done


#: What the readers read bytes from.
ByteSource = LocalFile | RemoteFile


def download(path: RemotePath, why: str) -> Path:
    """Copy a remote file to a new temporary file (removed by the caller), saying so on stderr with progress."""
    source = RemoteFile(path)
    fd, tmp = tempfile.mkstemp(prefix="pytest-weights-", suffix=path.suffix or ".bin")
    step = 8 << 20
    started = time.monotonic()
    print(f"pytest-weights: {path}: {why}: downloading {source.size / 1e6:.1f} MB to a temporary file", file=sys.stderr)
    try:
        with os.fdopen(fd, "wb") as out:
            for offset in range(0, source.size, step):
                out.write(source.read(offset, min(step, source.size - offset)))
                if sys.stderr.isatty():
                    done = min(source.size, offset + step)
                    print(f"\r\x1b[K  {done / 1e6:.1f}/{source.size / 1e6:.1f} MB", end="", file=sys.stderr)
        if sys.stderr.isatty():
            print(f"\r\x1b[K  done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def remove(path: Path) -> None:
    """Delete a downloaded temporary file (or directory), ignoring errors."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def pread_into(fd: int, buf: torch.Tensor, offset: int, path: object) -> None:
    """Fill the CPU tensor ``buf`` with the file's bytes from ``offset`` (CheckpointError when short)."""
    view = memoryview(buf.numpy()).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise CheckpointError(path, f"truncated: read stopped at byte {offset + done}")
        done += n
