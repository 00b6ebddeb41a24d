"""Reader for GGUF files (llama.cpp), via the optional ``gguf`` package.

Install with ``pip install 'pytest-weights[gguf]'``. The file is memory-mapped read-only by
``gguf.GGUFReader``; ``read(name)`` copies or dequantizes one tensor.

Types: F32, F16, BF16, F64 and the integer types are read as they are stored. Quantized
types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q8_K, the IQ types …) are dequantized with
``gguf.quants.dequantize`` and reported as ``torch.float32`` (the dtype of what ``read``
returns); the stored type is in :attr:`GGUFFile.tensor_types`. A type that the installed
``gguf`` cannot dequantize gives a :class:`CheckpointError` when read.

Shape convention: GGUF stores dimensions fastest-varying first (ggml's ``ne``), the reverse
of PyTorch/NumPy. Shapes here are in **PyTorch order** (``ne`` reversed), so a tensor
written from a PyTorch ``(out_features, in_features)`` weight — as llama.cpp's converters
and ``GGUFWriter.add_tensor(name, array)`` do — reads back as ``(out_features, in_features)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ._util import file_identity, read_magic
from .base import Checkpoint, TensorInfo

SUFFIX = ".gguf"
_MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'pytest-weights[gguf]'"

#: GGUF types stored as plain arrays → torch dtype.
PLAIN_TYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
}


def is_gguf_file(path: Path) -> bool:
    return path.is_file() and path.suffix == SUFFIX


class GGUFFile(Checkpoint):
    """A ``.gguf`` file: plain tensors as stored, quantized ones dequantized to float32."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        try:
            import gguf
        except ImportError:
            raise CheckpointError(
                self.path, f"reading .gguf files needs the optional 'gguf' package: {INSTALL_HINT}"
            ) from None
        self._gguf = gguf
        head = read_magic(self.path, 4)
        if head != _MAGIC:
            what = "the file is empty" if not head else f"it starts with {head!r}, not {_MAGIC!r}"
            raise CheckpointError(self.path, f"not a GGUF file: {what}")
        self._identity = file_identity(self.path)
        try:
            self._reader = gguf.GGUFReader(self.path, "r")
        except Exception as e:  # the reader fails in many ways on a corrupt or truncated file
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(self.path, f"not a valid GGUF file, or truncated: {msg[:300]}") from None
        #: Stored GGML type of each tensor, e.g. ``{"blk.0.attn_q.weight": "Q4_K"}``.
        self.tensor_types: dict[str, str] = {}
        self._by_name = {}
        infos = []
        for t in sorted(self._reader.tensors, key=lambda t: int(t.data_offset)):
            qtype = t.tensor_type.name
            shape = tuple(int(d) for d in reversed(list(t.shape)))
            if t.name in self._by_name:
                raise CheckpointError(self.path, f"two tensors named {t.name!r}")
            self._by_name[t.name] = t
            self.tensor_types[t.name] = qtype
            dtype = PLAIN_TYPES.get(qtype, torch.float32)
            infos.append(TensorInfo(t.name, shape, dtype, str(self.path)))
        self._infos = infos
        self._shapes = {i.name: i.shape for i in infos}

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def identity(self) -> str:
        return self._identity

    def read(self, name: str) -> torch.Tensor:
        try:
            t = self._by_name[name]
        except KeyError:
            raise CheckpointError(self.path, f"no tensor named {name!r}") from None
        qtype = t.tensor_type.name
        shape = self._shapes[name]
        try:
            if qtype == "BF16":
                bits = np.ascontiguousarray(t.data).view(np.int16).reshape(shape)
                return torch.from_numpy(bits.copy()).view(torch.bfloat16)
            if qtype in PLAIN_TYPES:
                arr = np.array(t.data, copy=True)
                if not arr.dtype.isnative:
                    arr = arr.astype(arr.dtype.newbyteorder("="))
                return torch.from_numpy(np.ascontiguousarray(arr.reshape(shape)))
            values = self._gguf.quants.dequantize(t.data, t.tensor_type)
            return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(shape))
        except NotImplementedError:
            raise CheckpointError(
                self.path, f"tensor {name!r}: the installed gguf package cannot dequantize {qtype}"
            ) from None
        except (ValueError, TypeError) as e:
            raise CheckpointError(self.path, f"cannot read tensor {name!r} ({qtype}): {e}") from None

    def close(self) -> None:
        # GGUFReader has no close(); the mapping goes with the reader
        pass
