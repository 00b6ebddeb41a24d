"""The TorchScript reader against ``torch.jit.load(f).state_dict()`` (used here only, as the reference):
the real silero VAD archive, scripted and traced modules of our own, and hostile archives — payload
pickles (a marker file proves nothing ran), truncated zips, missing records, lying storages.
"""

from __future__ import annotations

import json
import random
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_weights.errors import CheckpointError
from pytest_weights.readers import TorchFile, TorchScriptFile, detect_format, open_checkpoint
from pytest_weights.readers.torchscript_file import parse_declarations

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

TORCHSCRIPT = "TorchScript (.jit/.torchscript, or a torch.jit.save .pt)"


def assert_matches_state_dict(path: Path) -> TorchScriptFile:
    """Names, shapes, dtypes and values equal to torch.jit.load's state dict (plus constants.N)."""
    want = torch.jit.load(str(path), map_location="cpu").state_dict()
    ckpt = open_checkpoint(path)
    assert isinstance(ckpt, TorchScriptFile)
    infos = {i.name: i for i in ckpt.tensors()}
    assert {n for n in infos if not n.startswith("constants.")} == set(want)
    for name, t in want.items():
        got = ckpt.read(name)
        assert infos[name].shape == tuple(t.shape) == tuple(got.shape), name
        assert infos[name].dtype == t.dtype == got.dtype, name
        assert torch.equal(got, t), name
    return ckpt


# -- the zoo ------------------------------------------------------------------------------------


def test_silero_jit_matches_torch_jit_load(zoo):
    with assert_matches_state_dict(zoo["silero-jit"]) as ckpt:
        infos = ckpt.tensors()
        floats = [i for i in infos if i.is_float]
        assert (len(infos), len(floats), sum(i.numel for i in floats)) == (31, 31, 545_282)
        names = {i.name for i in infos}
        assert {"_model.encoder.0.reparam_conv.weight", "_model.decoder.rnn.weight_ih", "constants.0"} <= names
        assert "_model_8k.stft.forward_basis_buffer" in names  # a buffer
        assert ckpt.attributes == ["_state", "_context"]  # runtime state tensors, not in the state dict
        assert ckpt.skipped == {}
    assert detect_format(zoo["silero-jit"]) == TORCHSCRIPT


def test_silero_formats_overlap(zoo):
    """What the three silero files share, bit for bit (the finding, pinned):

    - silero_vad.jit and silero_vad.onnx hold the same weights: the jit's ``_model.*`` (16 kHz) are the
      ONNX's ``If_0_then_branch__Inline_0__*`` Constants, ``_model_8k.*`` the ``else_branch`` ones;
    - silero_vad_16k.safetensors shares only the fixed STFT basis with them; its learned weights are
      another training (same shapes, correlated but different values), as are silero_vad_half.onnx's.
    """
    pytest.importorskip("onnx")
    with open_checkpoint(zoo["silero-jit"]) as jit, open_checkpoint(zoo["silero-onnx"]) as ox:
        for info in jit.tensors():
            if info.name.startswith("_model."):
                onnx_name = "If_0_then_branch__Inline_0__" + info.name.removeprefix("_model.")
            elif info.name.startswith("_model_8k."):
                onnx_name = "If_0_else_branch__Inline_0__" + info.name.removeprefix("_model_8k.")
            else:
                continue
            assert torch.equal(jit.read(info.name), ox.read(onnx_name)), info.name
    with open_checkpoint(zoo["silero-jit"]) as jit, open_checkpoint(zoo["silero"]) as st:
        assert torch.equal(jit.read("_model.stft.forward_basis_buffer"), st.read("stft_conv.weight"))
        a, b = jit.read("_model.encoder.0.reparam_conv.weight"), st.read("conv1.weight")
        assert a.shape == b.shape and not torch.equal(a, b)


# -- modules of our own ---------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 8, 3, padding=1)
        self.norm = nn.BatchNorm1d(8)
        self.register_buffer("scale", torch.full((8,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) * self.scale[None, :, None]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([Block(4), Block(8)])
        self.rnn = nn.LSTM(8, 16, num_layers=2)
        self.head = nn.Linear(16, 3)
        self.emb = nn.Embedding(10, 16)
        self.proj = nn.Linear(16, 10, bias=False)
        self.proj.weight = self.emb.weight  # tied: both names, one storage
        self.low = nn.Linear(3, 3).to(torch.bfloat16)
        self.nobias = nn.Linear(3, 3, bias=False)  # a None parameter
        self.state = torch.zeros(3)  # a plain tensor attribute: not in the state dict
        base = torch.arange(24.0).reshape(4, 6)
        self.register_buffer("base", base)
        self.register_buffer("view_t", base.t())  # strided view of the same storage
        self.register_buffer("view_tail", base.view(-1)[10:16])  # at a storage offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.encoder:
            x = block(x)
        y, _ = self.rnn(x.permute(2, 0, 1))
        z = self.head(y) + self.proj(y)[..., :3] + self.state
        return z + self.low(z.to(torch.bfloat16)).float() + self.nobias(z) + self.view_tail[:3] + self.view_t[0, :3]


def _scripted(tmp_path: Path, name: str) -> Path:
    torch.manual_seed(0)
    net = Net().eval()
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_()
            m.num_batches_tracked.fill_(7)
    path = tmp_path / name
    torch.jit.script(net).save(str(path))
    return path


@pytest.mark.parametrize("name", ["net.jit", "net.pt", "net.torchscript", "net.pth"])
def test_scripted_module_matches_state_dict(tmp_path, name):
    path = _scripted(tmp_path, name)
    assert detect_format(path) == TORCHSCRIPT  # a torch.jit.save .pt goes here, not to the torch reader
    with assert_matches_state_dict(path) as ckpt:
        infos = {i.name: i for i in ckpt.tensors()}
        assert {"encoder.1.conv.weight", "encoder.0.norm.running_var", "rnn.weight_hh_l1", "rnn.bias_ih_l0"} <= set(
            infos
        )
        assert infos["encoder.0.norm.num_batches_tracked"].dtype == torch.int64  # listed, not float
        assert not infos["encoder.0.norm.num_batches_tracked"].is_float
        assert infos["low.weight"].dtype == torch.bfloat16
        assert "nobias.bias" not in infos
        assert torch.equal(ckpt.read("view_t"), torch.arange(24.0).reshape(4, 6).t())
        assert ckpt.read("view_tail").tolist() == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
        assert torch.equal(ckpt.read("proj.weight"), ckpt.read("emb.weight"))
        assert "state" in ckpt.attributes and "rnn._flat_weights.0" in ckpt.attributes
        read = ckpt.read("head.weight")
        read.add_(1)  # a private copy: reading again gives the stored values
        assert not torch.equal(read, ckpt.read("head.weight"))


def test_traced_module_and_its_tensor_constants(tmp_path):
    table = torch.linspace(0, 1, 6).reshape(2, 3)

    class Traced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + table.sum(0)

    path = tmp_path / "traced.pt"
    torch.jit.trace(Traced(), torch.randn(2, 3)).save(str(path))
    with assert_matches_state_dict(path) as ckpt:
        assert [i.name for i in ckpt.tensors()][-1] == "constants.0"
        assert torch.equal(ckpt.read("constants.0"), table)


def test_no_module_code_runs_and_torch_loaders_are_not_used(zoo, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the reader must not call torch.jit.load / torch.load")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with open_checkpoint(zoo["silero-jit"]) as ckpt:
        for info in ckpt.tensors():
            ckpt.read(info.name)


def test_torch_save_files_still_go_to_the_torch_reader(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert isinstance(open_checkpoint(path), TorchFile)


def test_close_and_read_again(tmp_path):
    ckpt = open_checkpoint(_scripted(tmp_path, "net.jit"))
    first = ckpt.read("head.weight")
    ckpt.close()
    assert torch.equal(ckpt.read("head.weight"), first)
    ckpt.close()


def test_parse_declarations_reads_text_only():
    source = (
        "class Conv1d(Module):\n"
        '  __parameters__ = ["weight", "bias", ]\n'
        '  __buffers__ = ["running", ]\n'
        "  weight : Tensor\n"
        "  def forward(self: __torch__.Conv1d, x: Tensor) -> Tensor:\n"
        '    __parameters__ = ["not", "this"]\n'
        "    return x\n"
        "class Plain(Module):\n"
        "  __parameters__ = []\n"
        "  __buffers__ = []\n"
    )
    assert parse_declarations(source) == {"Conv1d": (["weight", "bias"], ["running"]), "Plain": ([], [])}


# -- crafted archives -------------------------------------------------------------------------------


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(
    numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...], key: str = "0", storage: str = "Float"
) -> bytes:
    """The exact opcodes torch.jit.save writes for one tensor (protocol 2)."""
    pid = _tuple(_s("storage"), _g("torch", f"{storage}Storage"), _s(key), _s("cpu"), _i(numel))
    args = pid + b"Q" + _i(offset) + _tuple(*map(_i, size)) + _tuple(*map(_i, stride))
    args += b"\x89" + _g("collections", "OrderedDict") + b")R"
    return _g("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def _module(state: bytes) -> bytes:
    return b"\x80\x02" + _g("__torch__", "M") + b")\x81}(" + state + b"ub."


EMPTY = b"\x80\x02)."  # an empty tuple: constants.pkl of a module without tensor constants
CODE = 'class M(Module):\n  __parameters__ = ["weight", ]\n  __buffers__ = []\n  weight : Tensor\n'


def crafted(
    path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None, constants: bytes = b"\x80\x02)."
) -> Path:
    """A TorchScript-shaped zip: m/data.pkl, m/code/__torch__.py, m/constants.pkl, m/data/0 (12 floats)."""
    if records is None:
        records = {"m/data/0": torch.arange(12, dtype=torch.float32).numpy().tobytes()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m/data.pkl", data_pkl)
        zf.writestr("m/code/__torch__.py", CODE)
        zf.writestr("m/constants.pkl", constants)
        for name, data in records.items():
            zf.writestr(name, data)
        zf.writestr("m/version", "3\n")
    return path


def test_crafted_archive_control(tmp_path):
    path = crafted(tmp_path / "ok.jit", _module(_s("weight") + _tensor(12, 2, (2, 3), (1, 2))))
    with open_checkpoint(path) as ckpt:
        assert [(i.name, i.shape) for i in ckpt.tensors()] == [("weight", (2, 3))]
        want = torch.arange(12, dtype=torch.float32).as_strided((2, 3), (1, 2), 2)
        assert torch.equal(ckpt.read("weight"), want)


def test_big_endian_archive(tmp_path):
    big = torch.arange(12, dtype=torch.float32).numpy().astype(">f4").tobytes()
    records = {"m/data/0": big, "m/byteorder": b"big"}
    path = crafted(tmp_path / "big.jit", _module(_s("weight") + _tensor(12, 2, (2, 3), (3, 1))), records)
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.read("weight"), torch.arange(2.0, 8.0).reshape(2, 3))


def test_deflated_records_read_the_same(tmp_path, zoo):
    path = tmp_path / "deflated.jit"
    with zipfile.ZipFile(zoo["silero-jit"]) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with open_checkpoint(zoo["silero-jit"]) as stored, open_checkpoint(path) as deflated:
        assert [i.name for i in stored.tensors()] == [i.name for i in deflated.tensors()]
        for info in stored.tensors():
            assert torch.equal(stored.read(info.name), deflated.read(info.name)), info.name


def refused(path: Path, match: str | None = None) -> CheckpointError:
    """Open, list and read everything; a fast CheckpointError naming the file, nothing else."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err, open_checkpoint(path) as ckpt:
        for info in ckpt.tensors():
            ckpt.read(info.name)
    assert time.perf_counter() - start < 2.0
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert "Traceback" not in str(err.value)
    if match is not None:
        assert match in err.value.message, err.value.message
    return err.value


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (_tensor(12, 10, (2, 3), (3, 1)), "reaches element 16 of a storage of 12"),
        (_tensor(12, -1, (2,), (1,)), "negative offset"),
        (_tensor(12, 0, (-2, 3), (3, 1)), "negative offset, size or stride"),
        (_tensor(12, 0, (2, 3), (3,)), "differ in length"),
        (_tensor(12, 0, (1 << 20, 1 << 20), (0, 0)), "absurd tensor size"),
        (_tensor(1_000_000, 0, (1000, 1000), (1000, 1)), "holds 48 bytes but its storage of 1000000 float32 needs"),
        (_tensor(12, 0, (12,), (1,), key="7"), "missing record 'm/data/7'"),
        (_tensor(12, 0, (12,), (1,), key="../../etc/passwd"), "missing record"),
        (_tensor(12, 0, (12,), (1,), storage="Evil"), "refused"),
    ],
)
def test_lying_storages_are_refused(tmp_path, tensor, match):
    refused(crafted(tmp_path / "lying.jit", _module(_s("weight") + tensor)), match)


PAYLOADS = {  # each would create the marker file if it ran
    "os.system": lambda m: _g("os", "system") + b"(" + _s(f"touch {m}") + b"tR",
    "builtins.open": lambda m: _g("builtins", "open") + b"(" + _s(m) + _s("w") + b"tR",
    "eval": lambda m: _g("builtins", "eval") + b"(" + _s(f"open({m!r}, 'w')") + b"tR",
    "subprocess": lambda m: _g("subprocess", "run") + b"(" + _s(f"touch {m}") + b"\x88tR",
    "posing as __torch__": lambda m: (
        _g("__torch__", "M")
        + b"("
        + _s(f"touch {m}")
        + b"tR"
        + b"0"
        + _g("os", "system")
        + b"("
        + _s(f"touch {m}")
        + b"tR"
    ),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("where", ["data.pkl", "constants.pkl", "top-level"])
def test_payload_pickles_are_refused_and_nothing_runs(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    code = PAYLOADS[payload](str(marker))
    if where == "data.pkl":
        data, constants = _module(_s("weight") + _tensor(12, 0, (12,), (1,)) + _s("x") + code), b"\x80\x02)."
    elif where == "constants.pkl":
        data, constants = _module(_s("weight") + _tensor(12, 0, (12,), (1,))), b"\x80\x02" + code + b"\x85."
    else:
        data, constants = b"\x80\x02" + code + b".", b"\x80\x02)."
    path = crafted(tmp_path / "evil.jit", data, constants=constants)
    e = refused(path, "refused")
    assert "never runs code" in e.message
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    [
        _tensor(12, 0, (12,), (1,)),  # a validated tensor reference: offset/size must stay checked
        _g("torch.jit._pickle", "build_intlist"),  # a stand-in function
        _g("torch", "FloatStorage"),
    ],
)
def test_only_torch_placeholders_can_have_their_state_set(tmp_path, target):
    build = b"(" + _s("offset") + _i(10**9) + _s("__defaults__") + b")" + b"d" + b"b"  # BUILD {…}
    path = crafted(tmp_path / "rebuilt.jit", _module(_s("weight") + target + build))
    refused(path, "refused: data.pkl asks for BUILD")


def test_payload_in_a_real_archive_is_refused(tmp_path, zoo):
    """silero's own archive with its data.pkl swapped for a pickle that would create the marker."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(zoo["silero-jit"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps({"model": Evil()}, protocol=2)
            dst.writestr(info, data)
    assert detect_format(path) == TORCHSCRIPT
    refused(path, "refused: data.pkl asks for GLOBAL io.open")
    assert not marker.exists()


def test_cyclic_and_exploding_module_trees_are_refused(tmp_path):
    # a module whose attribute is itself (memo reference): a cycle
    cyclic = b"\x80\x02" + _g("__torch__", "M") + b")\x81q\x00}(" + _s("me") + b"h\x00ub."
    refused(crafted(tmp_path / "cyclic.jit", cyclic), "cyclic")
    # 40 levels, each holding the level below twice: 2**40 paths through a tiny pickle
    body = b"\x80\x02" + _g("__torch__", "M") + b")\x81}bq\x00"
    for level in range(1, 41):
        body += b"0" + _g("__torch__", "M") + b")\x81}(" + _s("a") + b"h" + bytes([level - 1])
        body += _s("b") + b"h" + bytes([level - 1]) + b"ub" + b"q" + bytes([level])
    refused(crafted(tmp_path / "dag.jit", body + b"."), "more than")


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + bytes(60)])
def test_not_a_torchscript_archive(tmp_path, content):
    path = tmp_path / "junk.jit"
    path.write_bytes(content)
    refused(path)


def test_a_torch_save_zip_named_jit_is_refused_clearly(tmp_path):
    path = tmp_path / "sd.jit"
    torch.save({"w": torch.ones(2)}, path)
    refused(path, "not a TorchScript archive")


def test_truncated_archive_is_refused(tmp_path, zoo):
    data = zoo["silero-jit"].read_bytes()
    rng = random.Random(3)
    for cut in [10, len(data) // 2, len(data) - 30, *(rng.randrange(len(data)) for _ in range(4))]:
        path = tmp_path / f"cut{cut}.jit"
        path.write_bytes(data[:cut])
        refused(path)


def test_missing_record_is_refused(tmp_path, zoo):
    path = tmp_path / "missing.jit"
    with zipfile.ZipFile(zoo["silero-jit"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/5"):
                dst.writestr(info, src.read(info))
    refused(path, "missing record")


def test_bit_flips_never_escape_as_another_exception(tmp_path, zoo):
    data = zoo["silero-jit"].read_bytes()
    marker = tmp_path / "pwned"
    rng = random.Random(5)
    with zipfile.ZipFile(zoo["silero-jit"]) as zf:  # flip inside data.pkl, the central directory, anywhere
        pkl = next(i for i in zf.infolist() if i.filename.endswith("/data.pkl"))
    refusals = 0
    for i in range(24):
        flipped = bytearray(data)
        if i % 3 == 0:
            pos = pkl.header_offset + 100 + rng.randrange(pkl.file_size)
        elif i % 3 == 1:
            pos = len(data) - 1 - rng.randrange(2000)
        else:
            pos = rng.randrange(len(data))
        flipped[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.jit"
        path.write_bytes(bytes(flipped))
        try:
            with open_checkpoint(path) as ckpt:
                for info in ckpt.tensors():
                    ckpt.read(info.name)
        except CheckpointError as e:
            assert e.path == str(path)
            refusals += 1
    assert refusals > 0
    assert not marker.exists()


# -- found by the fuzzer (tests/fuzz: docs/fuzzing.md) --------------------------------------------------------------


def _long(n: int) -> bytes:
    """LONG1 or LONG4: an integer of any size."""
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw if len(raw) < 256 else b"\x8b" + struct.pack("<i", len(raw)) + raw


def _rebuild(pid: bytes, offset: bytes, size: bytes, stride: bytes) -> bytes:
    """A tensor rebuild call with each argument given as opcodes (so any of them can be hostile)."""
    args = pid + offset + size + stride + b"\x89" + _g("collections", "OrderedDict") + b")R"
    return _g("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def _pid(key: bytes = _s("0"), numel: bytes = _i(12)) -> bytes:
    return _tuple(_s("storage"), _g("torch", "FloatStorage"), key, _s("cpu"), numel) + b"Q"


def _bomb(container: str, fanout: int = 1000, levels: int = 4) -> bytes:
    """Opcodes pushing a billion laughs: each level holds the level below ``fanout`` times, by memo reference (5
    bytes each), so 20 KB of pickle make a value of 10¹² items that anything walking or printing it never finishes."""
    base = 0x7FFF0000
    out = b")r" + struct.pack("<I", base)
    for level in range(1, levels + 1):
        ref = b"j" + struct.pack("<I", base + level - 1)
        if container == "tuple":
            out += b"0(" + ref * fanout + b"t"
        elif container == "list":
            out += b"0](" + ref * fanout + b"e"
        else:
            out += b"0}(" + b"".join(_s(f"k{i}") + ref for i in range(fanout)) + b"u"
        out += b"r" + struct.pack("<I", base + level)
    return out


WEIGHT = _s("weight") + _tensor(12, 0, (12,), (1,))


@pytest.mark.parametrize(
    ("opcodes", "where"),
    [
        (b"\x96" + struct.pack("<Q", 2**30), "data.pkl"),  # BYTEARRAY8: allocated 1 GB before reading a byte
        (b"\x96" + struct.pack("<Q", 2**33), "data.pkl"),  # 8 GB: MemoryError
        (b"\x96" + struct.pack("<Q", 2**40), "constants.pkl"),
        (b"\x8e" + struct.pack("<Q", 2**62), "data.pkl"),  # BINBYTES8, BINUNICODE8: read what is there, then EOF
        (b"\x8d" + struct.pack("<Q", 2**63 - 1), "constants.pkl"),
    ],
)
def test_huge_declared_lengths_allocate_nothing(tmp_path, opcodes, where):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if where == "data.pkl":
        path = crafted(tmp_path / "long.jit", b"\x80\x02" + opcodes + b".")
    else:
        path = crafted(tmp_path / "long.jit", _module(WEIGHT), constants=b"\x80\x02" + opcodes + b".")
    refused(path, f"corrupt {where}")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no gigabyte allocated


@pytest.mark.parametrize(
    ("state", "match"),
    [
        # a billion-laugh value where the reader quotes it in a refusal: repr() of it never returned
        (_s("weight") + _bomb("tuple") + b"Q", "unknown persistent id"),
        (_s("weight") + _rebuild(_pid(), _i(0), _bomb("list"), _tuple(_i(1))), "invalid tensor size"),
        (_s("weight") + _rebuild(_pid(key=_bomb("dict", 100)), _i(0), _tuple(_i(12)), _tuple(_i(1))), "storage key"),
        (_s("weight") + _rebuild(_pid(numel=_bomb("list")), _i(0), _tuple(_i(12)), _tuple(_i(1))), "storage size"),
        (_s("weight") + _g("torch", "device") + b"(" + _bomb("list") + b"tR", "invalid device"),
        (_s("weight") + _bomb("list", 100) + _s("x") + b"\x93", "STACK_GLOBAL requires str"),
        # … or hashes it: a tuple as a dict key
        (WEIGHT + _s("table") + b"}" + _bomb("tuple") + _i(1) + b"s", "a tuple as a dict key"),
        (WEIGHT + _s("seen") + b"\x8f", "a set"),
        # sizes and strides beyond int64 (torch.empty / as_strided raised RuntimeError from read())
        (_s("weight") + _rebuild(_pid(), _i(0), _tuple(_i(0), _long(2**70)), _tuple(_i(1), _i(1))), "invalid tensor"),
        (_s("weight") + _rebuild(_pid(), _long(2**64), _tuple(_i(0)), _tuple(_i(1))), "invalid tensor storage offset"),
        # a module attribute whose name is not a string (str() of it raised ValueError: more than 4300 digits)
        (WEIGHT + _long(2**20_000) + b"N", "named by a int, not a string"),
    ],
    ids=[
        "pid",
        "size",
        "storage-key",
        "storage-size",
        "device",
        "stack-global",
        "tuple-key",
        "set",
        "size>int64",
        "offset>int64",
        "non-str-attribute",
    ],
)
def test_memo_bombs_and_huge_values_are_refused_quickly(tmp_path, state, match):
    refused(crafted(tmp_path / "bomb.jit", _module(state)), match)


@pytest.mark.parametrize("container", ["list", "tuple", "dict"])
def test_memo_bombs_in_attributes_are_walked_once(tmp_path, container):
    """A billion laughs as a plain attribute or as a TorchScript object's state: each container is looked at once."""
    state = WEIGHT + _s("cache") + _bomb(container) + _s("sub") + _g("__torch__", "S") + b")\x81" + _bomb(container)
    path = crafted(tmp_path / "bomb.jit", _module(state + b"b"))
    start = time.perf_counter()
    with open_checkpoint(path) as ckpt:
        assert [i.name for i in ckpt.tensors()] == ["weight"]
    assert time.perf_counter() - start < 2.0


def test_the_unpickler_counts_opcodes(tmp_path, monkeypatch):
    from pytest_weights.readers import torchscript_file

    monkeypatch.setattr(torchscript_file, "_MAX_PICKLE_OPS", 1000)
    refused(crafted(tmp_path / "long.jit", _module(WEIGHT + _s("pad") + b"N" + b"0N" * 600)), "more than 1000 pickle")
    with open_checkpoint(crafted(tmp_path / "short.jit", _module(WEIGHT))) as ckpt:
        assert ckpt.read("weight").shape == (12,)


@pytest.mark.parametrize(
    "bait",
    [
        "\n" * 1_000_000,  # blank lines: ^\s+ scanned every following line from every line start
        "class A" + " " * 1_000_000,  # a header without a colon: two \s* shared the spaces
        "  __parameters__ = [\n" * 50_000,  # unclosed lists: each scanned to the end of the text
        "class " + "A" * 1_000_000,
        "  __buffers__ = [" + '"a", ' * 200_000,
    ],
    ids=["blank-lines", "header-spaces", "unclosed-lists", "long-name", "unclosed-long-list"],
)
def test_code_text_cannot_make_the_declaration_parser_backtrack(tmp_path, bait):
    code = CODE + bait  # at the end, where the old expressions scanned all of it again from every line start
    start = time.perf_counter()
    assert parse_declarations(code)["M"] == (["weight"], [])
    assert time.perf_counter() - start < 1.0  # 100,000 blank lines took 3 minutes
    path = tmp_path / "bait.jit"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data.pkl", _module(WEIGHT))
        zf.writestr("m/code/__torch__.py", code)
        zf.writestr("m/constants.pkl", EMPTY)
        zf.writestr("m/data/0", torch.arange(12, dtype=torch.float32).numpy().tobytes())
    start = time.perf_counter()
    with open_checkpoint(path) as ckpt:
        assert [i.name for i in ckpt.tensors()] == ["weight"]
    assert time.perf_counter() - start < 2.0


def test_a_huge_declaration_is_refused(tmp_path):
    names = ", ".join(f'"p{i}"' for i in range(100_001))
    with pytest.raises(ValueError, match="more than 100000 names"):
        parse_declarations(f"class M(Module):\n  __parameters__ = [{names}]\n")
    path = crafted(tmp_path / "decl.jit", _module(WEIGHT))
    entries = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    entries["m/code/__torch__.py"] = f"class M(Module):\n  __parameters__ = [{names}]\n".encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    refused(path, "more than 100000 names")


def test_a_record_twice_is_refused(tmp_path):
    records = {"m/data/0": torch.arange(12, dtype=torch.float32).numpy().tobytes()}
    path = crafted(tmp_path / "twice.jit", _module(WEIGHT), records)
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("m/data/0", bytes(48))  # which copy is read depends on the zip reader
    refused(path, "record 'm/data/0' appears twice")


def test_zero_strides_cannot_expand_a_tensor_beyond_the_file(tmp_path):
    # 2**28 float32 from a 1-element storage: accepted, then read() allocated 1 GB
    path = crafted(tmp_path / "expand.jit", _module(_s("weight") + _tensor(1, 0, (1 << 14, 1 << 14), (0, 0))))
    refused(path, "more than 1024×")


def test_a_corrupt_deflate_stream_is_refused_on_read(tmp_path):
    path = tmp_path / "deflated.jit"
    crafted(path, _module(WEIGHT))
    entries = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("m/data/0")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size  # zlib.error escaped read()
    path.write_bytes(bytes(data))
    refused(path, "cannot read tensor 'weight'")


def test_bytes_cut_from_the_start_are_reported_as_a_bad_header(tmp_path):
    path = tmp_path / "cut.jit"
    with zipfile.ZipFile(path, "w") as zf:  # storage records first, as torch.jit.save writes them
        zf.writestr("m/data/0", torch.arange(12, dtype=torch.float32).numpy().tobytes())
        zf.writestr("m/data.pkl", _module(WEIGHT))
        zf.writestr("m/code/__torch__.py", CODE)
        zf.writestr("m/constants.pkl", EMPTY)
    data = path.read_bytes()
    path.write_bytes(data[:40] + data[48:])  # zipfile shifts every offset by -8: os.pread raised EINVAL
    refused(path, "bad local header at -8")


# -- end to end -----------------------------------------------------------------------------------


def test_plugin_runs_the_default_spec_on_a_jit_file(pytester, zoo):
    path = zoo["silero-jit"]
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--checkpoint", str(path), "--weights-json", str(report)
    )
    out = result.stdout.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    outcomes = result.parseoutcomes()  # pass/fail is the default spec's business, not this reader's
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed", "skipped")) >= 1
    assert not outcomes.get("errors") and not outcomes.get("error")
    assert f"{path.name}: read 30 tensors" in out
    results = json.loads(report.read_text())["results"]
    assert results and all(r["checkpoint"] == path.name for r in results)
    named = {name for r in results for name in r["observed"]}
    assert "_model.encoder.0.reparam_conv.weight" in named  # items name tensors by state-dict names
