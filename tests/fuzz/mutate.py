"""Seeded mutations of checkpoint files: generic byte damage and format-aware lies.

:func:`mutate` picks, from a :class:`random.Random`, one mutation suited to the file (by its
name and first bytes) and returns the new bytes with a one-line description. Generic
mutations (bit flips, byte insertion and deletion, truncation, interesting integers …) apply
to every file; structured ones rewrite what a reader trusts: a safetensors header (shapes as
bools, huge or negative numbers, overlapping or shared offsets, duplicate names, deep
nesting), a JSON index or adapter config, zip members and sizes (torch.save archives, .npz
and their ``.npy`` headers), pickle streams (payloads that would create a marker file if run,
changed integers and globals), DCP metadata fields, GGUF header fields, ONNX protobufs (dims, data
types, raw data, external data locations and ranges, deep subgraphs, odd Constants, huge repeated
fields) and TorchScript archives (hostile values in ``data.pkl``/``constants.pkl``, storage
records missing or duplicated, ``code/`` text that attacks the declaration parser).
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


# -- ONNX -------------------------------------------------------------------------------------------------------------

_ONNX_DIMS = [-1, -(2**63), 0, 1, 3, 2**31, 2**32, 2**40, 2**48 + 1, 2**56, 2**62, 2**63 - 1]
_ONNX_TYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 99]
_ONNX_TYPES += [2**31 - 1, -1]
_ONNX_NUMBERS = ["0", "-1", "-4096", "1", "4", "64", "4095", "4096", "65536", str(2**31), str(2**63), str(2**64 + 1)]
_ONNX_NUMBERS += ["1e3", "0x10", " 4", "+8", "1_0", "\u0663", "9" * 5000, "", "nan", "4 4"]


def _onnx_locations(marker: Path) -> list[str]:
    """External data locations: escapes (relative, absolute, Windows), the model itself, odd and missing names."""
    inside = str(marker.parent / "weights.bin")  # absolute, even though it names a file of the checkpoint
    return [
        "../x.bin", "../weights.bin", "sub/../../weights.bin", "/etc/passwd", inside, "..\\x.bin", "C:\\x.bin",
        "C:weights.bin", "\\\\host\\share\\x", "", ".", "..", "model.onnx", "weights.bin", "./weights.bin",
        "sub/../weights.bin", "missing.bin", "x\0y", "a" * 5000, "~/x", "weights.bin/", "//etc/passwd", "%2e%2e/x",
    ]  # fmt: skip


def _onnx_graphs(model: object) -> list[object]:
    """The main graph and every subgraph (If/Loop/Scan bodies), outermost first."""
    out, stack = [], [model.graph]
    while stack:
        g = stack.pop()
        out.append(g)
        for node in g.node:
            for a in node.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _onnx_tensors(model: object) -> list[tuple[object, str]]:
    """Every TensorProto a reader may read (initializers, Constant values) with a label, in every graph."""
    out = []
    for g in _onnx_graphs(model):
        out += [(t, f"initializer {t.name!r}") for t in g.initializer]
        for node in g.node:
            out += [
                (a.t, f"{node.op_type} {a.name} {list(node.output)[:1]}") for a in node.attribute if a.HasField("t")
            ]
    return out


def _onnx_dims(t: object, rng: random.Random) -> str:
    kind = rng.randrange(5)
    dims = list(t.dims)
    if kind == 0 or not dims:
        dims = dims or [1]
        i = rng.randrange(len(dims))
        dims[i] = rng.choice(_ONNX_DIMS)
    elif kind == 1:
        dims.append(rng.choice([0, 1, 2, 2**40]))
    elif kind == 2:
        dims = []
    elif kind == 3:
        dims = [1] * rng.choice([64, 65, 1000])
    else:
        dims = [0, *(rng.choice([2**40, 2**62, 2**63 - 1]) for _ in range(rng.choice([1, 2, 8])))]
    del t.dims[:]
    t.dims.extend(dims)
    return f"dims → {dims[:6]}{'…' if len(dims) > 6 else ''} ({len(dims)})"


def _onnx_raw(t: object, rng: random.Random) -> str:
    if t.HasField("raw_data") and rng.random() < 0.7:
        raw = t.raw_data
        kind = rng.randrange(4)
        if kind == 0:
            t.raw_data = raw[: rng.choice([0, max(0, len(raw) - 1), len(raw) // 2])]
        elif kind == 1:
            t.raw_data = raw + rng.randbytes(rng.choice([1, 2, 4, 4096]))
        elif kind == 2:
            t.raw_data = raw * rng.choice([2, 1000])
        else:
            t.raw_data = b""
        return f"raw_data {len(raw)} → {len(t.raw_data)} bytes"
    kind = rng.randrange(3)
    if kind == 0:  # raw_data next to the typed field
        t.raw_data = rng.randbytes(rng.choice([0, 4, 8, 16, 24]))
        return f"raw_data of {len(t.raw_data)} bytes added"
    if kind == 1:  # the typed field emptied or filled with extremes
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(field)
        return "typed fields cleared"
    t.float_data.extend([float("nan"), float("inf"), -0.0, 3.4e38][: rng.randrange(1, 5)])
    t.int32_data.extend([2**31 - 1, -(2**31), 65536, -1][: rng.randrange(1, 5)])
    t.int64_data.extend([2**63 - 1, -(2**63)][: rng.randrange(1, 3)])
    return "extreme values appended to the typed fields"


def _onnx_huge_field(t: object, rng: random.Random) -> str:
    """A long repeated field, its dims matching it or not."""
    n = rng.choice([10**4, 10**5, 10**6])
    field = rng.choice(["float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"])
    t.ClearField("raw_data")
    values = {"string_data": [b"x" * 8], "float_data": [0.5], "double_data": [0.25]}.get(field, [7])
    getattr(t, field).extend(values * n)
    if rng.random() < 0.6:
        del t.dims[:]
        t.dims.append(n if rng.random() < 0.7 else n + 1)
    return f"{field} extended by {n} entries, dims {list(t.dims)[:4]}"


def _onnx_external(t: object, rng: random.Random, marker: Path, external: bool) -> str:
    """External data that escapes the directory, lies about its range, or is malformed."""
    fields = {e.key: e.value for e in t.external_data}
    if not external:
        fields = {"location": "weights.bin", "offset": "0", "length": str(len(t.raw_data) or 4)}
        t.ClearField("raw_data")
        t.data_location = 1
    kind = rng.randrange(6)
    if kind == 0:
        fields["location"] = rng.choice(_onnx_locations(marker))
    elif kind == 1:
        fields[rng.choice(["offset", "length"])] = rng.choice(_ONNX_NUMBERS)
    elif kind == 2:  # a range past the end of the data file, or shifted into another tensor's bytes
        key = rng.choice(["offset", "length"])
        old = int(fields.get(key) or 0)
        fields[key] = str(old + rng.choice([-4, -1, 1, 4, 64, 4096, 2**40]))
    elif kind == 3:
        fields.pop(rng.choice(sorted(fields)), None)
    elif kind == 4:
        t.data_location = rng.choice([0, 1])  # DataLocation is a closed enum: other values cannot be written
    else:
        t.ClearField("external_data")
        pairs = [*fields.items(), (rng.choice(sorted(fields) or ["location"]), rng.choice(_onnx_locations(marker)))]
        pairs.append(("checksum", "0" * 40))
        for key, value in pairs:
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return f"external_data keys repeated: {[k for k, _ in pairs]}"
    t.ClearField("external_data")
    for key, value in fields.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    shown = {k: (v if len(v) < 40 else f"{v[:12]}…({len(v)})") for k, v in fields.items()}
    return f"external data {shown}, data_location {t.data_location}"


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _pb_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (written by hand: the protobuf library refuses deep nesting itself)."""
    return _pb_varint(number << 3 | 2) + _pb_varint(len(payload)) + payload


def _onnx_nest(model: object, rng: random.Random) -> tuple[bytes, str]:
    """The graph wrapped in If nodes, 20 to 500 levels deep (written by hand: protobuf will not build that, and
    refuses to parse more than 100 nested messages, about 32 levels of If)."""
    depth = rng.choice([20, 30, 31, 32, 33, 34, 64, 65, 100, 500])
    graph = model.graph.SerializeToString()
    for _ in range(depth):  # GraphProto.node(1) → NodeProto.attribute(5) → AttributeProto.g(6), type GRAPH (20) = 5
        attribute = _pb_field(1, b"then_branch") + _pb_field(6, graph) + b"\xa0\x01\x05"
        graph = _pb_field(1, _pb_field(4, b"If") + _pb_field(5, attribute))
    model.ClearField("graph")
    return model.SerializeToString() + _pb_field(7, graph), f"graph nested in {depth} If nodes"


def _onnx_constant(model: object, rng: random.Random) -> str:
    """A Constant node with an odd value: sparse, strings, a huge list, two values, a mistyped attribute …"""
    from onnx import AttributeProto, TensorProto, helper

    graph = rng.choice(_onnx_graphs(model))
    names = [t.name for t, _ in _onnx_tensors(model) if t.name] or ["x"]
    output = rng.choice(["const.new", "", rng.choice(names), "a\nb", "n" * 100_000])
    kind = rng.randrange(8)
    if kind == 0:
        sparse = helper.make_sparse_tensor(
            helper.make_tensor("v", TensorProto.FLOAT, [2], [1.0, 2.0]),
            helper.make_tensor("i", TensorProto.INT64, [2], rng.choice([[0, 3], [5, 2**40], [-1, 0]])),
            rng.choice([[4], [2**40], [-1], []]),
        )
        node = helper.make_node("Constant", [], [output], sparse_value=sparse)
    elif kind == 1:
        node = helper.make_node(
            "Constant", [], [output], **rng.choice([{"value_string": "s"}, {"value_strings": ["a", "b" * 1000]}])
        )
    elif kind == 2:
        n = rng.choice([10**4, 10**5, 10**6])
        node = helper.make_node(
            "Constant", [], [output], **rng.choice([{"value_floats": [0.5] * n}, {"value_ints": [7] * n}])
        )
    elif kind == 3:
        node = helper.make_node("Constant", [], [output], value_ints=[2**63 - 1, -(2**63)], value_float=float("nan"))
    elif kind == 4:  # "value" with the wrong attribute type, or a STRING tensor
        node = helper.make_node("Constant", [], [output])
        attr = node.attribute.add()
        attr.name = "value"
        attr.type = rng.choice(
            [AttributeProto.FLOAT, AttributeProto.TENSOR, AttributeProto.GRAPH, AttributeProto.STRINGS]
        )
        attr.t.CopyFrom(helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"]))
        attr.f = 1.0
    elif kind == 5:
        node = helper.make_node("Constant", [], [])  # no output, no value
    elif kind == 6:
        node = helper.make_node("Constant", [], [output], value=helper.make_tensor("t", 1, [2], [1.0, 2.0]))
        node.domain = rng.choice(["com.evil", "ai.onnx", "", "ai.onnx.ml"])
    else:
        node = helper.make_node("Constant", [], [output], value=helper.make_tensor("t", 1, [2, 2], [1.0] * 4))
        node.attribute[0].t.dims[0] = rng.choice(_ONNX_DIMS)
    graph.node.insert(rng.randrange(len(graph.node) + 1), node)
    return f"Constant {node.attribute[0].name if node.attribute else '(empty)'} in graph {graph.name!r}"


def _onnx_strings(model: object, rng: random.Random) -> str:
    from onnx import TensorProto, helper

    graph = rng.choice(_onnx_graphs(model))
    if rng.random() < 0.5 and graph.initializer:
        t = rng.choice(graph.initializer)
        t.data_type = TensorProto.STRING
        return f"initializer {t.name!r} made a STRING tensor"
    t = helper.make_tensor("labels", TensorProto.STRING, [2], [b"a", b"\xff\xfe" * rng.choice([1, 10**5])])
    if rng.random() < 0.3:
        t.raw_data = b"ab"
    graph.initializer.append(t)
    return "a STRING initializer"


def _onnx_names(model: object, rng: random.Random) -> str:
    tensors = _onnx_tensors(model)
    t, where = rng.choice(tensors)
    kind = rng.randrange(3)
    if kind == 0:
        other = rng.choice(tensors)[0]
        t.name = other.name
        return f"{where} renamed {other.name!r}"
    if kind == 1:
        t.name = rng.choice(["", "a\nb", "../../etc/passwd", "x" * 100_000, "\0", "é" * 10, " "])
        return f"{where} renamed {t.name[:20]!r}"
    graph = rng.choice(_onnx_graphs(model))
    copy = graph.initializer.add()
    copy.CopyFrom(t)
    if copy.dims:
        copy.dims[0] += 1
    return f"{where} twice (the second with other dims)"


def _onnx_repeated(model: object, rng: random.Random) -> str:
    """Huge repeated fields: many tensors, nodes, imports, properties, dims or external data entries."""
    from onnx import helper

    n = rng.choice([2_000, 20_000, 50_000])
    kind = rng.randrange(5)
    if kind == 0:
        tensor = helper.make_tensor("t", 1, [1], [1.0])
        for i in range(n):
            tensor.name = f"many.{i}"
            model.graph.initializer.append(tensor)
        return f"{n} more initializers"
    if kind == 1:
        for i in range(n):
            model.graph.node.append(helper.make_node("Constant", [], [f"c.{i}"], value_float=float(i)))
        return f"{n} more Constant nodes"
    if kind == 2:
        model.opset_import.extend([helper.make_opsetid(f"d{i}", i) for i in range(n)])
        return f"{n} more opset imports"
    if kind == 3:
        helper.set_model_props(model, {f"k{i}": "v" * 10 for i in range(n)})
        return f"{n} metadata properties"
    t = rng.choice(_onnx_tensors(model))[0]
    for i in range(n):
        entry = t.external_data.add()
        entry.key, entry.value = rng.choice(["location", "offset", f"k{i}"]), str(i)
    return f"{n} external_data entries"


def _onnx_structure(model: object, rng: random.Random) -> str:
    from onnx import TensorProto, helper

    kind = rng.randrange(6)
    if kind == 0:
        model.ir_version = rng.choice([0, -1, 2**63 - 1, 3])
        return f"ir_version → {model.ir_version}"
    if kind == 1:
        model.ClearField(rng.choice(["opset_import", "graph"]))
        return "opset_import or graph removed"
    if kind == 2:  # a function whose body holds a Constant (functions are not read)
        lying = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[2**40])
        body = [helper.make_node("Constant", [], ["f.c"], value=lying)]
        model.functions.append(helper.make_function("local", "F", [], ["f.c"], body, [helper.make_opsetid("", 17)]))
        return "a function with a lying Constant"
    t = rng.choice(_onnx_tensors(model))[0]
    if kind == 3:
        t.segment.begin, t.segment.end = rng.choice([(0, 1), (-1, 2**62), (5, 2)])
        return f"segment set on {t.name!r}"
    if kind == 4:
        sparse = model.graph.sparse_initializer.add()
        sparse.values.CopyFrom(t)
        sparse.dims.extend(rng.choice([[2**40], [-1], []]))
        return f"a sparse initializer from {t.name!r}"
    t.data_location = 1 - t.data_location
    return f"data_location of {t.name!r} → {t.data_location}"


def onnx_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """Decode the ModelProto, change one thing a reader trusts, encode it again (some lies are written by hand)."""
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
        tensors = _onnx_tensors(model)
    except Exception:
        return rng.choice(GENERIC)(data, rng, marker)
    if not tensors:
        return rng.choice(GENERIC)(data, rng, marker)
    t, where = rng.choice(tensors)
    external = t.data_location == 1
    kind = rng.randrange(13)
    if kind == 0:
        what = _onnx_dims(t, rng)
    elif kind == 1:
        t.data_type = rng.choice(_ONNX_TYPES)
        what = f"data_type → {t.data_type}"
    elif kind == 2:
        what = _onnx_raw(t, rng)
    elif kind == 3:
        what = _onnx_huge_field(t, rng)
    elif kind in (4, 5):
        what = _onnx_external(t, rng, marker, external)
    elif kind == 6:
        return _onnx_nest(model, rng)
    elif kind == 7:
        what = _onnx_constant(model, rng)
        where = "model"
    elif kind == 8:
        what = _onnx_strings(model, rng)
        where = "model"
    elif kind == 9:
        what = _onnx_names(model, rng)
        where = "model"
    elif kind == 10:
        what = _onnx_repeated(model, rng)
        where = "model"
    elif kind == 11:
        what = _onnx_structure(model, rng)
        where = "model"
    else:  # an unknown field, or a field whose length runs past the end
        extra = rng.choice(
            [_pb_field(99, b"x" * 16), _pb_varint(7 << 3 | 2) + _pb_varint(2**40), b"\x0a\xff\xff\xff\xff\x0f"]
        )
        return data + extra, f"protobuf field appended: {extra[:12]!r}"
    try:
        return model.SerializeToString(), f"{where}: {what}"
    except Exception as e:  # the protobuf library refused to write it
        return rng.choice(GENERIC)(data, rng, marker)[0], f"{where}: {what} (unserializable: {type(e).__name__})"


# -- TorchScript archives -------------------------------------------------------------------------------------------

#: Opcodes that push one value: a hostile value can take the place of any of them.
_VALUE_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE", "SHORT_BINUNICODE", "NONE", "NEWTRUE"}
_VALUE_OPS |= {"NEWFALSE", "BINGET", "LONG_BINGET", "EMPTY_TUPLE", "BINFLOAT", "EMPTY_DICT", "EMPTY_LIST"}
_HUGE_LENGTHS = [2**30, 2**33, 2**40, 2**62, 2**63 - 1, 2**64 - 1]


def _binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _memo_bomb(rng: random.Random) -> tuple[bytes, str]:
    """A billion laughs: each level holds the level below ``fanout`` times (memo references, a few bytes each)."""
    fanout, levels = rng.choice([(100, 3), (1000, 3), (1000, 4), (64, 6)])
    container = rng.choice(["list", "tuple", "dict"])
    base = 0x7FFF0000  # memo indices far from the ones the pickle uses
    out = b")r" + struct.pack("<I", base)
    for level in range(1, levels + 1):
        ref = b"j" + struct.pack("<I", base + level - 1)  # LONG_BINGET
        if container == "tuple":
            out += b"0(" + ref * fanout + b"t"
        elif container == "list":
            out += b"0](" + ref * fanout + b"e"
        else:
            out += b"0}(" + b"".join(_binunicode(f"k{i}") + ref for i in range(fanout)) + b"u"
        out += b"r" + struct.pack("<I", base + level)  # LONG_BINPUT
    return out, f"a {container} memo bomb ({fanout}^{levels})"


def _deep(rng: random.Random) -> tuple[bytes, str]:
    depth = rng.choice([100, 1000, 10_000, 100_000])
    kind = rng.randrange(4)
    if kind == 0:
        return b")" + b"\x85" * depth, f"tuples nested {depth} deep"  # TUPLE1
    if kind == 1:
        return b"]" * depth + b"a" * (depth - 1), f"lists nested {depth} deep"
    if kind == 2:
        return b"}" + (_binunicode("k") + b"}") * (depth - 1) + b"s" * (depth - 1), (f"dicts nested {depth} deep")
    return b"(" * depth + b"t" * depth, f"MARK nested {depth} deep"


def _ts_value(rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """Pickle opcodes that push one hostile value (or claim a huge length and swallow the rest of the stream)."""
    kind = rng.randrange(10)
    if kind == 0:
        n = rng.choice(_HUGE_LENGTHS)
        op, name = rng.choice([(b"\x96", "BYTEARRAY8"), (b"\x8e", "BINBYTES8"), (b"\x8d", "BINUNICODE8")])
        return op + struct.pack("<Q", n), f"{name} of {n} bytes"
    if kind == 1:
        op, name, n = rng.choice(
            [(b"X", "BINUNICODE", 2**32 - 1), (b"B", "BINBYTES", 2**31), (b"\x8b", "LONG4", 2**31 - 1)]
        )
        return op + struct.pack("<I", n), f"{name} of {n} bytes"
    if kind == 2:
        return _memo_bomb(rng)
    if kind == 3:
        return _deep(rng)
    if kind == 4:
        n = rng.choice([9, 1000, 100_000])
        return b"\x8b" + struct.pack("<i", n) + b"\xff" * (n - 1) + b"\x7f", f"an integer of {8 * n} bits"
    if kind == 5:
        value = rng.choice([2**63, 2**64, -(2**63) - 1, 2**62, -1, 10**30])
        return b"\x8a" + _long1(value), f"the integer {value}"
    if kind == 6:
        frag, what = rng.choice(
            [
                (b"G" + struct.pack(">d", float("nan")), "NaN"),
                (b"G" + struct.pack(">d", 1.5), "1.5"),
                (b"\x88", "True"),
                (b"N", "None"),
                (_binunicode("0"), "'0'"),
                (b"}", "{}"),
                (b"](K\x01K\x02e", "[1, 2]"),
                (_binunicode("x" * 1_000_000), "a string of a million characters"),
            ]
        )
        return frag, what
    if kind == 7:  # STACK_GLOBAL with a module that is not a string, or a persistent id that is a bomb
        bomb, what = _memo_bomb(rng)
        if rng.random() < 0.5:
            return bomb + _binunicode("x") + b"\x93", f"STACK_GLOBAL of {what}"
        return bomb + b"Q", f"BINPERSID of {what}"
    if kind == 8:  # a TorchScript object whose state is hostile
        inner, what = rng.choice([_memo_bomb, _deep])(rng)
        return b"c__torch__\nEvil\n)\x81" + inner + b"b", f"a __torch__ object whose state is {what}"
    return b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR", "os.system('touch marker')"


def ts_pickle(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """One value of the pickle (a key, a size, a storage key, a whole state …) replaced by a hostile one."""
    ops = [(op, pos) for op, _arg, pos in _ops(data) if op.name in _VALUE_OPS]
    value, what = _ts_value(rng, marker)
    if not ops:
        return data[:2] + value + data[2:], f"{what} at the start"
    op, pos = rng.choice(ops)
    return data[:pos] + value + data[_op_end(data, pos) :], f"{op.name} at {pos} → {what}"


def _zip_entries(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(info, zf.read(info)) for info in zf.infolist()]
    except Exception:
        return None


def _renamed(info: zipfile.ZipInfo, name: str, compress_type: int | None = None) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    new.compress_type = info.compress_type if compress_type is None else compress_type
    return new


def _ts_records(entries: list[tuple[zipfile.ZipInfo, bytes]], rng: random.Random) -> tuple[bytes, str]:
    """Storage records missing, duplicated, renamed, swapped, cut; other records removed or changed."""
    data = [k for k, (info, _) in enumerate(entries) if "/data/" in info.filename]
    k = rng.choice(data or range(len(entries)))
    info, content = entries[k]
    prefix = info.filename.split("/", 1)[0]
    kind = rng.randrange(10)
    if kind == 0:
        del entries[k]
        what = f"{info.filename} removed"
    elif kind == 1:
        twin = rng.choice([content, b"", content[: len(content) // 2], rng.choice(entries)[1], content * 2])
        entries.insert(rng.choice([k + 1, len(entries)]), (info, twin))
        what = f"{info.filename} twice ({len(content)} then {len(twin)} bytes)"
    elif kind == 2:
        tail = info.filename.rsplit("/", 1)[-1]
        name = rng.choice([f"{tail}0", f"0{tail}", "../" + tail, tail.upper() + "x", "-1", str(2**64), ""])
        entries[k] = (_renamed(info, f"{prefix}/data/{name}"), content)
        what = f"{info.filename} renamed data/{name}"
    elif kind == 3:
        j = rng.choice(data or range(len(entries)))
        entries[k], entries[j] = (info, entries[j][1]), (entries[j][0], content)
        what = f"contents of {info.filename} and {entries[j][0].filename} swapped"
    elif kind == 4:
        new = rng.choice([content[:-1], content[: len(content) // 2], b"", content + bytes(rng.choice([1, 8, 4096]))])
        entries[k] = (info, new)
        what = f"{info.filename}: {len(content)} → {len(new)} bytes"
    elif kind == 5:
        tails = ["constants.pkl", "data.pkl", "byteorder", "version", "code/", ".data/serialization_id"]
        tail = rng.choice(tails)
        entries[:] = [(i, c) for i, c in entries if not i.filename.startswith(f"{prefix}/{tail}")]
        what = f"{prefix}/{tail}* removed"
    elif kind == 6:
        value = rng.choice([b"big", b"middle", b"", b"little\n", b"l" * 100, b"\xff"])
        entries[:] = [(i, value if i.filename.endswith("/byteorder") else c) for i, c in entries]
        what = f"byteorder → {value[:20]!r}"
    elif kind == 7:
        other = rng.choice(["other", "", prefix + "2", "a/b"])
        j = rng.randrange(len(entries))
        name = entries[j][0].filename.split("/", 1)[-1]
        entries[j] = (_renamed(entries[j][0], f"{other}/{name}"), entries[j][1])
        what = f"{entries[j][0].filename} moved to {other!r}/"
    elif kind == 8:
        entries.append((_renamed(info, f"{prefix}/model.json", zipfile.ZIP_STORED), b"{}"))
        what = "model.json added"
    else:
        method = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
        entries[k] = (_renamed(info, info.filename, method), content)
        what = f"{info.filename} written with method {method}"
    return _rebuild(entries), what


def _bait(rng: random.Random) -> tuple[str, str]:
    """Text that makes a backtracking regex over code/ take quadratic time, and many declared names."""
    n = rng.choice([10_000, 100_000, 1_000_000])
    text, what = rng.choice(
        [
            ("class A" + " " * n, "class header without a colon, then spaces"),
            ("class A:\n" + "\n" * n, "blank lines"),
            ("  __parameters__ = [\n" * (n // 20), "unclosed __parameters__ lists"),
            ("class " + "A" * n, "a long class name"),
            ("  __buffers__ = [" + '"a", ' * (n // 5), "an unclosed __buffers__ list"),
            (" " * n + "__parameters__", "indentation"),
            ("\t" * n + "\n", "tabs"),
            ("class A(" + "(" * n, "open parentheses"),
            ("  __parameters__ = " + "[" * n, "open brackets"),
            ("class A(Module):\n  __parameters__ = [" + ", ".join(f'"p{i}"' for i in range(n // 8)) + "]\n",
             "a huge declaration"),
        ]
    )  # fmt: skip
    return text, f"{what} ({len(text)} characters)"


def _declaration_edit(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.split("\n")
    decl = [i for i, line in enumerate(lines) if line.strip().startswith(("__parameters__", "__buffers__"))]
    heads = [i for i, line in enumerate(lines) if line.startswith("class ")]
    kind = rng.randrange(6)
    if kind <= 2 and decl:
        i = rng.choice(decl)
        line = lines[i]
        names = [n.strip() for n in line[line.find("[") + 1 : line.rfind("]")].split(",") if n.strip()]
        if kind == 0 and names:
            names.remove(rng.choice(names))
        elif kind == 1:
            names.insert(rng.randrange(len(names) + 1), rng.choice(['"ghost"', '"training"', '"encoder"', '"rnn"']))
        elif names:
            names.append(rng.choice(names))
        lines[i] = line[: line.find("[") + 1] + ", ".join(names) + (", ]" if names else "]")
        return "\n".join(lines), f"line {i + 1} → {lines[i].strip()[:80]}"
    if kind == 3 and decl:
        del lines[rng.choice(decl)]
        return "\n".join(lines), "a declaration removed"
    if kind == 4 and heads:
        i = rng.choice(heads)
        lines[i] = lines[i].replace("class ", rng.choice(["class X", "klass ", "class  ", "Class "]), 1)
        return "\n".join(lines), f"class header → {lines[i][:60]}"
    if heads:
        i = rng.choice(heads)
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
        return "\n".join(lines), f"{lines[i][:60]} twice"
    return text, "unchanged"


def ts_code(entries: list[tuple[zipfile.ZipInfo, bytes]], rng: random.Random) -> tuple[bytes, str]:
    """The code/ text the reader reads declarations from: regex bait, huge declarations, edits, bad encodings."""
    code = [k for k, (info, _) in enumerate(entries) if "/code/" in info.filename and info.filename.endswith(".py")]
    if not code:
        return _ts_records(entries, rng)
    k = rng.choice(code)
    info, content = entries[k]
    text = content.decode("utf-8", "replace")
    kind = rng.randrange(4)
    if kind == 0:
        bait, what = _bait(rng)
        lines = text.split("\n")
        i = rng.randrange(len(lines) + 1)
        raw = "\n".join([*lines[:i], bait, *lines[i:]]).encode()
    elif kind == 1:
        new, what = _declaration_edit(text, rng)
        raw = new.encode()
    elif kind == 2:
        raw, what = rng.choice(
            [
                (text.replace("\n", "\r\n").encode(), "CRLF"),
                (text.replace("  ", "\t").encode(), "tabs"),
                (b"\xef\xbb\xbf" + content, "a BOM"),
                (content.replace(b"__", b"\xff\xfe", 1), "invalid UTF-8"),
                (content.replace(b"\n", b"\0", 3), "NUL bytes"),
                (b"", "emptied"),
            ]
        )
    else:
        raw, what = rng.choice(GENERIC)(content, rng, Path())
    method = rng.choice([info.compress_type, zipfile.ZIP_STORED])
    entries[k] = (_renamed(info, info.filename, method), raw)
    return _rebuild(entries), f"{info.filename}: {what}"


def torchscript_file(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """A torch.jit.save archive: the zip and pickle mutations, hostile values in data.pkl/constants.pkl, storage
    records missing or duplicated, and code/ text that attacks the declaration parser."""
    entries = _zip_entries(data)
    if entries is None or rng.random() < 0.3:
        return zip_file(data, rng, marker)
    kind = rng.randrange(3)
    if kind == 0:
        pickles = [k for k, (info, _) in enumerate(entries) if info.filename.endswith(("/data.pkl", "/constants.pkl"))]
        if pickles:
            k = rng.choice(pickles + pickles[:1])  # data.pkl more often
            info, content = entries[k]
            content, what = ts_pickle(content, rng, marker)
            entries[k] = (info, content)
            return _rebuild(entries), f"{info.filename}: {what}"
    if kind == 1:
        return _ts_records(entries, rng)
    return ts_code(entries, rng)


# -- dispatch ---------------------------------------------------------------------------------------------------------


def kind_of(name: str, data: bytes) -> str:
    """What a file is, for choosing mutations: safetensors, json, zip, torchscript, pickle, gguf, dcp-metadata,
    distcp, onnx or bytes."""
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
    if name.endswith(".onnx"):
        return "onnx"
    if data.startswith(b"PK\x03\x04"):
        if name.endswith((".jit", ".torchscript")) or (b"/code/" in data and b"/constants.pkl" in data):
            return "torchscript"
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
    "onnx": onnx_file,
    "torchscript": torchscript_file,
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
