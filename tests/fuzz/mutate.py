"""Seeded mutations of checkpoint files: generic byte damage and format-aware lies.

:func:`mutate` picks, from a :class:`random.Random`, one mutation suited to the file (by its
name and first bytes) and returns the new bytes with a one-line description. Generic
mutations (bit flips, byte insertion and deletion, truncation, interesting integers …) apply
to every file; structured ones rewrite what a reader trusts: a safetensors header (shapes as
bools, huge or negative numbers, overlapping or shared offsets, duplicate names, deep
nesting), a JSON index or adapter config, zip members and sizes (torch.save archives, .npz
and their ``.npy`` headers), pickle streams (payloads that would create a marker file if run,
changed integers and globals), DCP metadata fields and GGUF header fields.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import random
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

Mutation = Callable[[bytes, random.Random, Path], tuple[bytes, str]]

INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 255, 256, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1]
INTERESTING_JSON = [True, False, None, -1, 0, 1.5, 2**31, 2**63, 2**64, 2**80, 10**40, "4", "", [], {}, [1, [2]]]

# -- generic byte mutations -------------------------------------------------------------------------------------------


def _position(data: bytes, rng: random.Random) -> int:
    """A position in ``data``, half of the time in its first 512 bytes (where headers live)."""
    if not data:
        return 0
    span = min(len(data), 512) if rng.random() < 0.5 else len(data)
    return rng.randrange(span)


def flip_bits(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    out = bytearray(data)
    n = rng.choice([1, 1, 2, 4, 8])
    for _ in range(n):
        if out:
            out[_position(out, rng)] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip {n} bits"


def set_bytes(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    out = bytearray(data)
    value = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x2E, 0x5D, 0x7D])
    n = rng.choice([1, 2, 4])
    for _ in range(n):
        if out:
            out[_position(out, rng)] = value
    return bytes(out), f"set {n} bytes to {value:#x}"


def interesting_int(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    width, fmt = rng.choice([(2, "<H"), (4, "<I"), (8, "<Q")])
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    pos = _position(data, rng)
    out = data[:pos] + struct.pack(fmt, value) + data[pos + width :]
    return out[: max(len(data), pos + width)], f"write u{8 * width} {value} at {pos}"


def insert_bytes(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    pos = _position(data, rng)
    chunk = rng.randbytes(rng.choice([1, 2, 8, 64]))
    return data[:pos] + chunk + data[pos:], f"insert {len(chunk)} bytes at {pos}"


def delete_bytes(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    pos = _position(data, rng)
    n = rng.choice([1, 2, 8, 64, 512])
    return data[:pos] + data[pos + n :], f"delete {n} bytes at {pos}"


def truncate(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    keep = rng.choice([0, 1, 4, 8, 16, _position(data, rng), len(data) // 2, max(0, len(data) - rng.randrange(1, 64))])
    return data[:keep], f"truncate to {keep} of {len(data)} bytes"


def copy_chunk(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    if len(data) < 2:
        return data + data, "double"
    n = rng.randrange(1, min(256, len(data)))
    src, dst = rng.randrange(len(data) - n + 1), _position(data, rng)
    return data[:dst] + data[src : src + n] + data[dst + n :], f"copy {n} bytes from {src} to {dst}"


def zero_range(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    pos, n = _position(data, rng), rng.choice([4, 16, 256, 4096])
    return data[:pos] + bytes(len(data[pos : pos + n])) + data[pos + n :], f"zero {n} bytes at {pos}"


GENERIC: list[Mutation] = [flip_bits, set_bytes, interesting_int, insert_bytes, delete_bytes, truncate, copy_chunk]
GENERIC += [zero_range]

# -- JSON -------------------------------------------------------------------------------------------------------------


def _dumps_pairs(pairs: list[tuple[str, object]]) -> str:
    """A JSON object from pairs, keeping repeated keys (json.dumps cannot write them)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in pairs) + "}"


def _dumps(value: object) -> str:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, dict):
        return _dumps_pairs(list(value.items()))
    if isinstance(value, list):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


class _Raw:
    """JSON text written as is (deep nesting, NaN, a huge number)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _nested(rng: random.Random) -> _Raw:
    depth = rng.choice([65, 200, 1000, 5000, 100_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return _Raw(opener * depth + "1" + closer * depth)


def _odd_value(rng: random.Random) -> object:
    choice = rng.randrange(4)
    if choice == 0:
        return _nested(rng)
    if choice == 1:
        return _Raw(rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000, "-0", "1E2"]))
    return rng.choice(INTERESTING_JSON)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON value."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set_path(obj: object, path: tuple, value: object) -> object:
    if not path:
        return value
    obj[path[0]] = _set_path(obj[path[0]], path[1:], value)
    return obj


def _json_mutation(doc: object, rng: random.Random) -> tuple[str, str]:
    """New JSON text for a parsed document, and what changed."""
    kind = rng.randrange(6)
    if kind == 0 or not isinstance(doc, dict) or not doc:
        path = rng.choice(_paths(doc))
        value = _odd_value(rng)
        return _dumps(_set_path(doc, path, value)), f"set {list(path)} to {_describe(value)}"
    if kind == 1:  # a key twice: in the top object or in a nested one
        holders = [p for p in _paths(doc) if isinstance(_get(doc, p), dict) and _get(doc, p)]
        path = rng.choice(holders)
        holder = _get(doc, path)
        pairs = list(holder.items())
        key, value = rng.choice(pairs)
        twin = value if rng.random() < 0.5 else _odd_value(rng)
        pairs.insert(rng.randrange(len(pairs) + 1), (key, twin))
        text = _dumps(_set_path(doc, path, _Raw(_dumps_pairs(pairs))))
        return text, f"key {key!r} twice in {list(path)}"
    if kind == 2:
        path = rng.choice([p for p in _paths(doc) if p])
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
        return _dumps(doc), f"remove {list(path)}"
    if kind == 3:
        path = rng.choice(_paths(doc))
        return _dumps(_set_path(doc, path, _nested(rng))), f"nest deeply at {list(path)}"
    if kind == 4:
        return _dumps(rng.choice([[doc], "x", 1, None, []])), "replace the document"
    text = _dumps(doc)
    return text[: rng.randrange(len(text))], "truncate the JSON"


def _get(obj: object, path: tuple) -> object:
    for p in path:
        obj = obj[p]
    return obj


def _describe(value: object) -> str:
    text = value.text if isinstance(value, _Raw) else repr(value)
    return text if len(text) < 40 else f"{text[:20]}…({len(text)} chars)"


def json_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    try:
        doc = json.loads(data)
    except ValueError:
        return flip_bits(data, rng, marker)
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict) and rng.random() < 0.5:
        return _weight_map_lie(doc, rng)
    text, what = _json_mutation(doc, rng)
    encoding = rng.choice(["utf-8"] * 8 + ["utf-16", "latin-1"])
    try:
        return text.encode(encoding), what + ("" if encoding == "utf-8" else f" ({encoding})")
    except UnicodeEncodeError:
        return text.encode("utf-8"), what


def _weight_map_lie(doc: dict, rng: random.Random) -> tuple[bytes, str]:
    wm = doc["weight_map"]
    shards = sorted(set(wm.values()))
    name = rng.choice(sorted(wm))
    kind = rng.randrange(5)
    if kind == 0:
        wm["ghost.weight"] = rng.choice(shards)
        what = "index lists a tensor no shard holds"
    elif kind == 1:
        del wm[name]
        what = f"index omits {name!r} (its shard still holds it)"
    elif kind == 2:
        wm[name] = rng.choice([s for s in shards if s != wm[name]] or shards)
        what = f"index moves {name!r} to another shard"
    elif kind == 3:
        wm[name] = rng.choice(["../outside.safetensors", "/etc/passwd", "", "missing.safetensors", "a/b", ".", "x\0y"])
        what = f"index points {name!r} to {wm[name]!r}"
    else:
        pairs = list(wm.items())
        other = rng.choice([s for s in shards if s != wm[name]] or shards)
        pairs.append((name, other))
        doc["weight_map"] = _Raw(_dumps_pairs(pairs))
        what = f"index lists {name!r} twice"
    return _dumps(doc).encode(), what


# -- safetensors ------------------------------------------------------------------------------------------------------


def _split_safetensors(data: bytes) -> tuple[dict, bytes] | None:
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError:
        return None
    return (header, data[8 + n :]) if isinstance(header, dict) else None


def safetensors_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    parts = _split_safetensors(data)
    if parts is None:
        return rng.choice(GENERIC)(data, rng, marker)
    header, body = parts
    names = [k for k in header if k != "__metadata__"]
    if not names:
        return json_file(data, rng, marker)
    name = rng.choice(names)
    entry = header[name]
    kind = rng.randrange(10)
    text = None
    if kind == 0:
        shape = list(entry["shape"]) or [1]
        i = rng.randrange(len(shape))
        shape[i] = rng.choice([True, False, -1, -(2**63), 2**64, 2**80, 1.5, "4", None, 0, 2**31, [2]])
        entry["shape"] = shape
        what = f"shape of {name!r} → {shape!r}"[:120]
    elif kind == 1:
        entry["dtype"] = rng.choice(["F32", "F64", "F16", "I8", "BOOL", "Q4", "", None, 7, "f32", "F8_E8M0", "C64"])
        what = f"dtype of {name!r} → {entry['dtype']!r}"
    elif kind == 2:
        what = _offsets_lie(header, names, name, rng)
    elif kind == 3:
        pairs = list(header.items())
        twin = dict(entry) if rng.random() < 0.5 else header[rng.choice(names)]
        pairs.insert(rng.randrange(len(pairs) + 1), (name, twin))
        text = _dumps_pairs(pairs)
        what = f"tensor {name!r} twice in the header"
    elif kind == 4:
        key = rng.choice(["shape", "data_offsets", "dtype"])
        entry[key] = _nested(rng)
        what = f"{key} of {name!r} nested deeply"
    elif kind == 5:
        header["__metadata__"] = rng.choice([{"a": 1}, ["x"], "x", {"a": {"b": "c"}}, None, {"a": None}])
        what = f"__metadata__ → {header['__metadata__']!r}"
    elif kind == 6:
        del header[name]
        what = f"remove {name!r} from the header"
    elif kind == 7:
        end = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
        header["extra"] = {"dtype": "F32", "shape": [rng.choice([1, 4, 1000, 2**40])], "data_offsets": [end, end + 4]}
        what = "an extra tensor past the data"
    elif kind == 8:
        text = _dumps(header)
        pos = rng.randrange(len(text))
        raw = text.encode()[:pos] + rng.choice([b"\xff", b"\xc3", b"\x00", b'"', b"\\"]) + text.encode()[pos:]
        return _pack_safetensors(raw, body, rng), f"bad byte in the header at {pos}"
    else:
        text, what = _json_mutation(header, rng)
    if text is None:
        text = _dumps(header)
    return _pack_safetensors(text.encode(), body, rng), what


def _offsets_lie(header: dict, names: list[str], name: str, rng: random.Random) -> str:
    entry = header[name]
    begin, end = entry["data_offsets"]
    other = header[rng.choice(names)]
    kind = rng.randrange(7)
    if kind == 0:
        entry["data_offsets"] = list(other["data_offsets"])
        return f"{name!r} shares its bytes with another tensor"
    if kind == 1:
        shift = rng.choice([-4, -1, 1, 4, (end - begin) // 2 or 1])
        entry["data_offsets"] = [begin + shift, end + shift]
        return f"{name!r} shifted by {shift} (overlap or gap)"
    if kind == 2:
        entry["data_offsets"] = [end, begin]
        return f"{name!r} offsets reversed"
    if kind == 3:
        entry["data_offsets"] = [rng.choice([True, -8, 2**64, 2**80, 1.0, "0"]), end]
        return f"{name!r} begin → {entry['data_offsets'][0]!r}"
    if kind == 4:
        entry["data_offsets"] = rng.choice([[begin], [begin, end, end], [], None, {"a": 1}])
        return f"{name!r} data_offsets → {entry['data_offsets']!r}"
    if kind == 5:  # consistent with the shape but overlapping another tensor's bytes
        ob, _ = other["data_offsets"]
        entry["data_offsets"] = [ob + 1, ob + 1 + end - begin]
        return f"{name!r} moved into another tensor's bytes"
    entry["data_offsets"] = [begin, end + rng.choice([4, 4096, 2**40])]
    return f"{name!r} ends past its shape"


def _pack_safetensors(header: bytes, body: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.7:
        header += b" " * (-len(header) % 8)
    n = len(header)
    if rng.random() < 0.1:
        n = rng.choice([n - 1, n + 1, n + 8, 2**63, 0])
    return struct.pack("<Q", n % 2**64) + header + body


# -- pickle -----------------------------------------------------------------------------------------------------------


def payloads(marker: Path) -> list[bytes]:
    """Pickle fragments that create ``marker`` when unpickled by an unrestricted unpickler, leaving the stack as
    they found it (each ends with POP), so they can be spliced into any pickle."""
    m = str(marker).encode()
    return [
        b"cbuiltins\nopen\n(V" + m + b"\nVw\ntR0",
        b"c__builtin__\nopen\n(V" + m + b"\nVw\ntR0",
        b"cos\nsystem\n(Vtouch " + m + b"\ntR0",
        b"cposix\nsystem\n(Vtouch " + m + b"\ntR0",
        b"cbuiltins\nexec\n(Vopen(" + repr(str(marker)).encode() + b", 'w')\ntR0",
        b"csubprocess\ncall\n((Vtouch\nV" + m + b"\nltR0",
        b"(V" + m + b"\nVw\nibuiltins\nopen\n0",
        b"(cbuiltins\nopen\nV" + m + b"\nVw\no0",
        b"\x8c\x08builtins\x8c\x04open\x93(V" + m + b"\nVw\ntR0",
        b"ctorch.serialization\n_open_file\n(V" + m + b"\nVw\ntR0",
        b"ctorch.distributed.checkpoint.filesystem\nos.system\n(Vtouch " + m + b"\ntR0",
    ]


def _pickle_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, STOP position) of each pickle in a stream of concatenated pickles (stops at the first bad one)."""
    spans, pos = [], 0
    while pos < len(data):
        try:
            ops = list(pickletools.genops(io.BytesIO(data[pos:])))
        except Exception:
            break
        stop = ops[-1][2]
        spans.append((pos, pos + stop))
        pos += stop + 1
    return spans


def _ops(data: bytes) -> list[tuple[object, object, int]]:
    ops = []
    for start, _ in _pickle_spans(data):
        ops += [(op, arg, start + p) for op, arg, p in pickletools.genops(io.BytesIO(data[start:]))]
    return ops


def inject_payload(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    spans = _pickle_spans(data) or [(0, max(0, len(data) - 1))]
    start, stop = rng.choice(spans)
    payload = rng.choice(payloads(marker))
    if rng.random() < 0.5:
        pos = start + (2 if data[start : start + 1] == b"\x80" else 0)
        where = "start"
    else:
        pos, where = stop, "end"
    return data[:pos] + payload + data[pos:], f"payload {payload[:24]!r}… at the {where} of the pickle at {start}"


_INT_OPS = {"BININT": "<i", "BININT1": "<B", "BININT2": "<H", "LONG1": None, "BINGET": "<B", "LONG_BINGET": "<I"}
_GLOBALS = [
    (b"builtins", b"eval"),
    (b"os", b"system"),
    (b"torch", b"load"),
    (b"torch", b"HalfStorage"),
    (b"torch", b"DoubleStorage"),
    (b"torch._utils", b"_rebuild_tensor_v2"),
    (b"torch._utils", b"_rebuild_sparse_tensor"),
    (b"torch._utils", b"_rebuild_parameter"),
    (b"collections", b"OrderedDict"),
    (b"torch", b"Size"),
    (b"torch", b"bfloat16"),
    (b"torch.distributed.checkpoint.metadata", b"Metadata"),
    (b"torch.distributed.checkpoint.metadata", b"ChunkStorageMetadata"),
    (b"pathlib", b"PosixPath"),
]


def pickle_ints(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    ops = [(op, arg, pos) for op, arg, pos in _ops(data) if op.name in _INT_OPS]
    if not ops:
        return inject_payload(data, rng, marker)
    op, arg, pos = rng.choice(ops)
    value = rng.choice([*INTERESTING_INTS, -1, -(2**31), 2**64, 2**80, 10**30])
    if op.name in ("BININT", "BININT1", "BININT2") and rng.random() < 0.5:
        new = b"\x8a" + _long1(value)  # re-encoded: any size
    else:
        fmt = _INT_OPS[op.name]
        if fmt is None:
            new = b"\x8a" + _long1(value)
        else:
            width = struct.calcsize(fmt)
            new = op.code.encode("latin-1") + (value % (1 << (8 * width))).to_bytes(width, "little", signed=False)
    end = _op_end(data, pos)
    return data[:pos] + new + data[end:], f"pickle {op.name} {arg!r} at {pos} → {value}"


def _long1(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "little", signed=True)
    return bytes([len(raw)]) + raw


def _op_end(data: bytes, pos: int) -> int:
    for _op, _arg, p in pickletools.genops(io.BytesIO(data[pos:])):
        if p > 0:
            return pos + p
    return len(data)


def pickle_globals(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    ops = [(op, arg, pos) for op, arg, pos in _ops(data) if op.name == "GLOBAL"]
    if not ops:
        return pickle_ints(data, rng, marker)
    _op, arg, pos = rng.choice(ops)
    module, name = rng.choice(_GLOBALS)
    end = _op_end(data, pos)
    return data[:pos] + b"c" + module + b"\n" + name + b"\n" + data[end:], f"global {arg} → {module}.{name}"


def pickle_ops(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """Delete, repeat or swap one opcode; or cut the stream at an opcode boundary."""
    ops = _ops(data)
    if len(ops) < 2:
        return flip_bits(data, rng, marker)
    i = rng.randrange(len(ops) - 1)
    _, _, pos = ops[i]
    end = ops[i + 1][2] if ops[i + 1][2] > pos else _op_end(data, pos)
    kind = rng.randrange(3)
    if kind == 0:
        return data[:pos] + data[end:], f"delete pickle op {ops[i][0].name} at {pos}"
    if kind == 1:
        return data[:end] + data[pos:], f"repeat pickle op {ops[i][0].name} at {pos}"
    return data[:pos], f"cut the pickle before {ops[i][0].name} at {pos}"


PICKLE: list[Mutation] = [inject_payload, inject_payload, pickle_ints, pickle_ints, pickle_globals, pickle_ops]


def pickle_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    return rng.choice(PICKLE)(data, rng, marker)


def embedded_pickle_ints(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """Change an integer of a pickle embedded in a larger file (a DCP data file's torch.save records) in place,
    keeping its width so every byte offset the metadata records stays valid."""
    starts = [i + 8 for i in _find_all(data, b"data.pkl")]
    ops = []
    for start in starts:
        begin = data.find(b"\x80", start, start + 64)
        if begin < 0:
            continue
        try:
            ops += [(op, arg, begin + p) for op, arg, p in pickletools.genops(io.BytesIO(data[begin:]))]
        except Exception:
            continue
    ops = [(op, arg, pos) for op, arg, pos in ops if op.name in ("BININT", "BININT1", "BININT2")]
    if not ops:
        return rng.choice(GENERIC)(data, rng, marker)
    op, arg, pos = rng.choice(ops)
    fmt = _INT_OPS[op.name]
    width = struct.calcsize(fmt)
    value = rng.choice([*INTERESTING_INTS, arg + 1, arg - 1, arg * 2]) % (1 << (8 * width))
    return data[: pos + 1] + value.to_bytes(width, "little") + data[pos + 1 + width :], (
        f"embedded pickle {op.name} {arg} at {pos} → {value}"
    )


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


# -- DCP metadata -----------------------------------------------------------------------------------------------------


def dcp_metadata(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """Change one field of the unpickled metadata (a size, an offset, a path …) and pickle it again."""
    from pytest_weights.readers.dcp import _MetadataUnpickler

    if rng.random() < 0.4:
        return pickle_file(data, rng, marker)
    try:
        meta = _MetadataUnpickler(io.BytesIO(data)).load()
        fields = _dcp_fields(meta)
    except Exception:
        return pickle_file(data, rng, marker)
    obj, attr = rng.choice(fields)
    value = _dcp_value(getattr(obj, attr), rng)
    object.__setattr__(obj, attr, value)
    try:
        return pickle.dumps(meta, protocol=rng.choice([2, 4, 5])), f"metadata {type(obj).__name__}.{attr} → {value!r}"[
            :160
        ]
    except Exception:
        return pickle_file(data, rng, marker)


def _dcp_fields(meta: object) -> list[tuple[object, str]]:
    fields: list[tuple[object, str]] = [(meta, "state_dict_metadata"), (meta, "storage_data"), (meta, "planner_data")]
    for md in meta.state_dict_metadata.values():
        fields += [(md, a) for a in ("size", "chunks", "properties") if hasattr(md, a)]
        if hasattr(md, "properties"):
            fields.append((md.properties, "dtype"))
        for chunk in getattr(md, "chunks", []):
            fields += [(chunk, "offsets"), (chunk, "sizes")]
    for index, info in meta.storage_data.items():
        fields += [(index, "fqn"), (index, "offset"), (info, "offset"), (info, "length"), (info, "relative_path")]
        fields.append((info, "transform_descriptors"))
    return fields


def _dcp_value(old: object, rng: random.Random) -> object:
    import torch

    if isinstance(old, tuple) and rng.random() < 0.7:  # torch.Size
        dims = list(old) or [1]
        dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2**40, 2**80, -1, True, 2**63])
        if rng.random() < 0.2:
            dims.append(3)
        try:
            return torch.Size(dims)
        except (TypeError, RuntimeError, OverflowError):
            return tuple(dims)
    if isinstance(old, int) and rng.random() < 0.7:
        return rng.choice([old + 1, old - 1, old * 2, -1, 0, 2**63, 2**80, True, old + 4096])
    if isinstance(old, str) and rng.random() < 0.7:
        return rng.choice(["../outside.distcp", "/etc/passwd", "", "missing.distcp", "x/y", old + "x", ".metadata"])
    return rng.choice([None, 1, "x", [], {}, ["zstd"], torch.float64, torch.Size([2**40, 2**40]), 1.5])


# -- zip archives (torch.save, .npz) ----------------------------------------------------------------------------------


def _rebuild(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as out:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted
        for info, content in entries:
            new = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            new.compress_type = info.compress_type
            out.writestr(new, content)
    return buf.getvalue()


_NPY_SHAPES = ["(True, 5)", "(-1,)", "(18446744073709551616,)", "(10**30,)", "(1e3,)", "()", "(6, 5, 1000000000)"]
_NPY_SHAPES += ["(6, 5", "[6, 5]", "(2147483648, 2147483648)", "(0,)", "(100000,)", "(4611686018427387904,)"]


def _npy_header(content: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change the dict in a ``.npy`` header (shape, dtype, order) or break its syntax."""
    if not content.startswith(b"\x93NUMPY") or len(content) < 10:
        return flip_bits(content, rng, Path())
    major = content[6]
    hlen_size = 2 if major == 1 else 4
    (hlen,) = struct.unpack("<H" if hlen_size == 2 else "<I", content[8 : 8 + hlen_size])
    start = 8 + hlen_size
    header, data = content[start : start + hlen].decode("latin-1"), content[start + hlen :]
    kind = rng.randrange(4)
    if kind == 0:
        new = rng.choice(_NPY_SHAPES)
        header = _replace_field(header, "'shape':", new)
        what = f"npy shape → {new}"
    elif kind == 1:
        new = rng.choice(["'|O'", "'<f16'", "'S10'", "'<c8'", "'V8'", "[('a', '<f4')]", "'<M8[s]'", "'xyz'", "'>f8'"])
        header = _replace_field(header, "'descr':", new)
        what = f"npy descr → {new}"
    elif kind == 2:
        new = rng.choice(["'maybe'", "1", "None", "True"])
        header = _replace_field(header, "'fortran_order':", new)
        what = f"npy fortran_order → {new}"
    else:
        pos = rng.randrange(len(header))
        header = header[:pos] + rng.choice(["'", '"', "'''", "(", "\\", "\x00", "#", "{"]) + header[pos:]
        what = f"npy header syntax broken at {pos}"
    raw = header.encode("latin-1")
    size = len(raw) if rng.random() < 0.9 else rng.choice([len(raw) + 1, len(raw) - 1, 65535])
    fmt = "<H" if hlen_size == 2 else "<I"
    return content[:8] + struct.pack(fmt, size % (1 << (8 * hlen_size))) + raw + data, what


def _replace_field(header: str, key: str, value: str) -> str:
    i = header.find(key)
    if i < 0:
        return header
    j = i + len(key)
    depth, k = 0, j
    while k < len(header):
        c = header[k]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0 and k > j + 1:
            break
        k += 1
    return header[:j] + " " + value + header[k:]


def zip_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entries = [(info, zf.read(info)) for info in zf.infolist()]
    except Exception:
        return rng.choice(GENERIC)(data, rng, marker)
    if not entries:
        return rng.choice(GENERIC)(data, rng, marker)
    kind = rng.randrange(8)
    i = rng.randrange(len(entries))
    info, content = entries[i]
    if kind <= 2:  # rewrite one member's content, CRC and sizes kept consistent
        if info.filename.endswith(".pkl"):
            content, what = pickle_file(content, rng, marker)
        elif info.filename.endswith(".npy"):
            content, what = _npy_header(content, rng)
        else:
            content, what = rng.choice(GENERIC)(content, rng, marker)
        entries[i] = (info, content)
        return _rebuild(entries), f"member {info.filename}: {what}"
    if kind == 3:  # flip bytes of a member's stored data (its CRC no longer matches)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        out = bytearray(data)
        for _ in range(rng.choice([1, 4, 64])):
            if info.compress_size:
                out[start + rng.randrange(info.compress_size)] ^= 0xFF
        return bytes(out), f"member {info.filename}: data bytes flipped"
    if kind == 4:
        return _size_lie(data, info, rng)
    if kind == 5:
        twin = rng.choice(entries)
        entries.insert(rng.randrange(len(entries) + 1), (twin[0], rng.choice([twin[1], content, b""])))
        return _rebuild(entries), f"member {twin[0].filename} twice"
    if kind == 6:
        del entries[i]
        return _rebuild(entries), f"member {info.filename} removed"
    renamed = zipfile.ZipInfo(rng.choice([info.filename[:-4], info.filename + "x", "../" + info.filename, "a/b.npy"]))
    renamed.compress_type = info.compress_type
    entries[i] = (renamed, content)
    return _rebuild(entries), f"member {info.filename} renamed {renamed.filename}"


def _size_lie(data: bytes, info: zipfile.ZipInfo, rng: random.Random) -> tuple[bytes, str]:
    """Change a size, method or flag in the member's central directory record or local header."""
    out = bytearray(data)
    central = data.rfind(b"PK\x01\x02" + data[info.header_offset + 4 : info.header_offset + 6])
    central_fields = {"method": 10, "flags": 8, "compressed": 20, "size": 24, "offset": 42}
    local_fields = {"method": 8, "flags": 6, "compressed": 18, "size": 22}
    where, base, fields = rng.choice(
        [("central", central, central_fields), ("local", info.header_offset, local_fields)]
    )
    field = rng.choice(sorted(fields))
    if base < 0:
        return flip_bits(data, rng, Path())
    pos = base + fields[field]
    if field == "method":
        value, fmt = rng.choice([0, 8, 12, 14, 99, 1]), "<H"
    elif field == "flags":
        value, fmt = rng.choice([1, 8, 0x41, 0]), "<H"
    else:
        value, fmt = rng.choice([0, 1, info.file_size * 2, info.file_size + 1, 2**31, 2**32 - 1, 0xFFFFFFFF]), "<I"
    out[pos : pos + struct.calcsize(fmt)] = struct.pack(fmt, value % (1 << (8 * struct.calcsize(fmt))))
    return bytes(out), f"member {info.filename}: {where} {field} → {value}"


# -- GGUF -------------------------------------------------------------------------------------------------------------

_GGUF_FIELDS: dict[int, list[tuple[int, int]]] = {}


def _gguf_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every count, length, type, dimension and offset in a valid GGUF header."""
    key = hash(data)
    if key not in _GGUF_FIELDS:
        import tempfile

        import numpy as np
        from gguf import GGUFReader

        with tempfile.NamedTemporaryFile(suffix=".gguf") as f:  # GGUFReader reads a path
            f.write(data)
            f.flush()
            reader = GGUFReader(f.name)
            base = reader.data.ctypes.data
            spans = []
            for field in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
                for part in field.parts:
                    if isinstance(part, np.ndarray) and part.dtype.kind in "iu" and part.size <= 8:
                        spans += [
                            (part.ctypes.data - base + k * part.itemsize, part.itemsize) for k in range(part.size)
                        ]
            del reader
        _GGUF_FIELDS[key] = sorted(set(spans))
    return _GGUF_FIELDS[key]


def gguf_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    try:
        fields = _gguf_fields(data)
    except Exception:
        return rng.choice(GENERIC)(data, rng, marker)
    if not fields:
        return rng.choice(GENERIC)(data, rng, marker)
    pos, width = rng.choice(fields)
    old = int.from_bytes(data[pos : pos + width], "little")
    value = rng.choice([*INTERESTING_INTS, old + 1, old - 1, old * 2, old + 32, len(data), 2**64 - 1]) % (
        1 << (8 * width)
    )
    new = data[:pos] + value.to_bytes(width, "little") + data[pos + width :]
    return new, f"gguf field at {pos} (u{8 * width}) {old} → {value}"


# -- dispatch ---------------------------------------------------------------------------------------------------------


def kind_of(name: str, data: bytes) -> str:
    """What a file is, for choosing mutations: safetensors, json, zip, pickle, gguf, dcp-metadata, distcp or bytes."""
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".metadata"):
        return "dcp-metadata"
    if data.startswith(b"GGUF"):
        return "gguf"
    if name.endswith(".distcp"):
        return "distcp"
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if data.startswith(b"\x80"):
        return "pickle"
    return "bytes"


STRUCTURED: dict[str, Mutation] = {
    "safetensors": safetensors_file,
    "json": json_file,
    "zip": zip_file,
    "pickle": pickle_file,
    "gguf": gguf_file,
    "dcp-metadata": dcp_metadata,
    "distcp": embedded_pickle_ints,
}


def mutate(name: str, data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """One seeded mutation of the file ``name`` (structured two times in three when the kind has any), sometimes
    followed by a second one; returns the new bytes and what was done."""
    kind = kind_of(name, data)
    structured = STRUCTURED.get(kind)
    mutation = structured if structured is not None and rng.random() < 0.67 else rng.choice(GENERIC)
    out, what = mutation(data, rng, marker)
    if rng.random() < 0.15:
        out, more = rng.choice(GENERIC)(out, rng, marker)
        what += f"; {more}"
    return out, f"{name}: {what}"
