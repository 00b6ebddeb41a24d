"""Checkpoints read by URL: a real S3 API on localhost (moto in server mode) and a local HTTP server that
honours ``Range: bytes=a-b`` and counts the bytes it serves. Nothing of the reading path is mocked."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import require, save, transformer_like
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from pytest_weights import check
from pytest_weights.cli import main as cli_main
from pytest_weights.errors import CheckpointError
from pytest_weights.readers import open_checkpoint
from pytest_weights.readers.source import RemotePath, redact

require("fsspec", "'pytest-weights[remote]'")

SECRET = "s3cr3t-Do-Not-Print-7f3a"  # the password / secret key: must appear in no output
pytest_plugins = ["pytester"]


# -- a local HTTP server with Range support ---------------------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; honours single ``bytes=a-b`` ranges (not under ``/norange/``); 403 under
    ``/forbidden/``; counts bytes served."""

    served = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[override]
        if self.path.split("?")[0].startswith("/forbidden/"):
            self.send_error(403)
            return None
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            return super().send_head()
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and not self.path.startswith("/norange/"):
            begin, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {begin}-{end}/{size}")
            f.seek(begin)
            self._left = end - begin + 1
        else:
            self.send_response(200)
            self._left = size
        self.send_header("Content-Length", str(self._left))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{os.stat(path).st_mtime_ns}-{size}"')
        self.end_headers()
        return f

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        left = self._left
        while left > 0:
            chunk = source.read(min(left, 1 << 20))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)
            with self.lock:
                type(self).served += len(chunk)


@pytest.fixture(scope="module")
def http_root(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """(served directory, base URL with a user:password that must never be printed)."""
    root = tmp_path_factory.mktemp("http")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://reader:{SECRET}@127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# -- a real S3 API on localhost ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[object]:
    """A moto S3 server; credentials and endpoint through the standard AWS_* environment variables."""
    require("s3fs", "'pytest-weights[remote]'")
    moto_server = require("moto.server", "'moto[server]'")
    import boto3
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAREMOTETEST",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3")
    client.create_bucket(Bucket="ckpts")
    yield client
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def upload(client, path: Path, key: str) -> str:
    client.upload_file(str(path), "ckpts", key)
    return f"s3://ckpts/{key}"


# -- byte ranges --------------------------------------------------------------------------------------------------

ONE_TENSOR_SPEC = """\
version: 1
assertions:
  - name: one
    kind: stat_range
    stat: std
    min: 0.5
    select: {include: ["layers.41.weight"]}
"""


def test_a_one_tensor_spec_fetches_under_5_percent_of_a_90_mb_file(http_root, tmp_path):
    root, base = http_root
    g = torch.Generator().manual_seed(1)
    ckpt = save(root / "big.safetensors", {f"layers.{i}.weight": torch.randn(500, 500, generator=g) for i in range(90)})
    size = ckpt.stat().st_size
    assert size > 89e6
    spec = tmp_path / "one.weights.yaml"
    spec.write_text(ONE_TENSOR_SPEC)
    RangeHandler.served = 0
    report = check(f"{base}/big.safetensors", spec, device="cpu")
    fetched = RangeHandler.served
    assert report.passed and len(report.results) == 1
    assert fetched <= 0.05 * size, f"fetched {fetched} of {size} bytes"
    assert fetched >= 500 * 500 * 4  # the tensor itself, once
    print(f"\none tensor of 90: fetched {fetched / 1e6:.2f} MB of {size / 1e6:.1f} MB ({100 * fetched / size:.2f} %)")


def test_remote_safetensors_tensors_equal_the_local_ones_and_each_range_is_read_once(s3, tmp_path):
    local = save(tmp_path / "m.safetensors", transformer_like(layers=2))
    url = upload(s3, local, "eq/m.safetensors")
    expected = load_file(str(local))
    with open_checkpoint(url) as ckpt:
        assert str(ckpt.path) == url and ckpt.label == "m.safetensors"
        assert [i.name for i in ckpt.tensors()] == [i.name for i in open_checkpoint(local).tensors()]
        header_requests = ckpt.source.requests
        for info in ckpt.tensors():
            assert torch.equal(ckpt.read(info.name), expected[info.name])
        data = sum(i.nbytes for i in ckpt.tensors() if i.nbytes)
        assert ckpt.source.requests == header_requests + sum(1 for i in ckpt.tensors() if i.nbytes)
        assert ckpt.source.bytes_fetched <= data + 64 * 1024


def test_identity_is_url_etag_and_size_and_changes_with_the_object(s3, tmp_path):
    url = upload(s3, save(tmp_path / "a.safetensors", {"w": torch.ones(8, 8)}), "id/a.safetensors")
    first = open_checkpoint(url).identity()
    assert first.startswith(url + ":") and first.split(":")[-2] == str((tmp_path / "a.safetensors").stat().st_size)
    assert open_checkpoint(url).identity() == first
    upload(s3, save(tmp_path / "b.safetensors", {"w": torch.zeros(8, 8)}), "id/a.safetensors")
    assert open_checkpoint(url).identity() != first


def test_sharded_index_and_model_directory_by_url(s3, tmp_path):
    tensors = transformer_like(layers=2)
    names = sorted(tensors)
    half = len(names) // 2
    d = tmp_path / "sharded"
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, part in shards.items():
        save(d / shard, {n: tensors[n] for n in part})
    weight_map = {n: shard for shard, part in shards.items() for n in part}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for f in d.iterdir():
        upload(s3, f, f"sharded/{f.name}")
    for url in ("s3://ckpts/sharded/model.safetensors.index.json", "s3://ckpts/sharded"):
        with open_checkpoint(url) as ckpt:
            assert type(ckpt).__name__ == "ShardedCheckpoint"
            assert sorted(i.name for i in ckpt.tensors()) == names
            for n in names[:: max(1, len(names) // 5)]:
                assert torch.equal(ckpt.read(n), tensors[n])
            assert "model-00002-of-00002.safetensors" in {i.file.rsplit("/", 1)[-1] for i in ckpt.tensors()}


def test_a_torch_zip_archive_is_read_by_range(http_root):
    root, base = http_root
    g = torch.Generator().manual_seed(2)
    state = {f"big.{i}": torch.randn(512, 512, generator=g) for i in range(8)}
    state["small"] = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    state["view"] = state["big.3"][10:20, 5:9]  # a strided view into a shared storage
    state["optimizer"] = {"state": {0: {"exp_avg": torch.ones(4)}}, "param_groups": [{"lr": 0.1}]}
    torch.save(state, root / "model.pt")
    size = (root / "model.pt").stat().st_size
    RangeHandler.served = 0
    with open_checkpoint(f"{base}/model.pt") as ckpt:
        assert type(ckpt).__name__ == "RemoteTorchFile"
        opened = RangeHandler.served
        assert opened < 0.05 * size
        assert torch.equal(ckpt.read("small"), state["small"])
        assert torch.equal(ckpt.read("view"), state["view"])
        assert ckpt.metadata["optimizer.param_groups.0.lr"] == 0.1
        groups = {i.name: i.group for i in ckpt.tensors()}
        assert groups["optimizer.state.0.exp_avg"] == "optimizer" and groups["big.0"] == "weights"
        assert RangeHandler.served < opened + 0.05 * size
        assert torch.equal(ckpt.read("big.5"), state["big.5"])
    local = open_checkpoint(root / "model.pt")
    assert [(i.name, i.shape, i.dtype, i.group) for i in local.tensors()] == [
        (i.name, i.shape, i.dtype, i.group) for i in open_checkpoint(f"{base}/model.pt").tensors()
    ]


def test_a_legacy_pickle_is_downloaded_and_said_so(http_root, capsys):
    root, base = http_root
    torch.save({"w": torch.randn(6, 6)}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    ckpt = open_checkpoint(f"{base}/legacy.pt")
    err = capsys.readouterr().err
    assert "legacy (non-zip) torch.save file cannot be read by range: downloading" in err and SECRET not in err
    local = ckpt.local
    assert local.is_file() and ckpt.tensors()[0].file == redact(f"{base}/legacy.pt")
    assert torch.equal(ckpt.read("w"), torch.load(root / "legacy.pt")["w"])
    ckpt.close()
    assert not local.exists()


# -- results equal the local ones, through the plugin and the CLI -------------------------------------------------


def _without_source(result: dict) -> dict:
    """A result without where its checkpoint was read from (a path here, the URL there)."""
    return {k: v for k, v in result.items() if k != "source"}


def _results(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    return sorted(json.dumps(_without_source(r), sort_keys=True) for r in doc["results"])


@pytest.mark.parametrize("where", ["s3", "http"])
def test_plugin_results_by_url_equal_the_local_ones(pytester, where, request, tmp_path):
    tensors = transformer_like()
    tensors["model.layers.1.attn.o.weight"] *= 100  # two failures, so the deviations are compared too
    if where == "s3":
        local = save(tmp_path / "model.safetensors", tensors)
        url = upload(request.getfixturevalue("s3"), local, "plugin/model.safetensors")
    else:
        root, base = request.getfixturevalue("http_root")
        local = save(root / "plugin" / "model.safetensors", tensors)
        url = f"{base}/plugin/model.safetensors?X-Amz-Signature={SECRET}"
    outs = []
    for i, target in enumerate((str(local), url)):
        out = tmp_path / f"r{i}.json"
        result = pytester.runpytest("--checkpoint", target, f"--weights-json={out}", "-v")
        result.assert_outcomes(passed=3, failed=2)
        text = "\n".join(result.outlines + result.errlines)
        assert SECRET not in text
        outs.append(out)
    assert _results(outs[0]) == _results(outs[1])
    assert SECRET not in outs[1].read_text()
    for f in (pytester.path / ".pytest_cache").rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f


def test_plugin_reference_by_url(pytester, s3, tmp_path):
    base = save(tmp_path / "base.safetensors", transformer_like(seed=0))
    ref = upload(s3, base, "ref/base.safetensors")
    result = pytester.runpytest("--checkpoint", str(base), "--reference", ref, "-k", "finite")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*reference: s3://ckpts/ref/base.safetensors*"])


def test_cli_check_by_url_equals_local(s3, tmp_path, capsys):
    local = save(tmp_path / "cli.safetensors", transformer_like(layers=2))
    url = upload(s3, local, "cli/cli.safetensors")
    outs = []
    for i, target in enumerate((str(local), url)):
        out = tmp_path / f"c{i}.json"
        assert cli_main(["check", target, "--no-cache", "--json", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert [_without_source(r) for r in outs[0]["results"]] == [_without_source(r) for r in outs[1]["results"]]
    assert SECRET not in capsys.readouterr().out


# -- errors: one line naming the URL, never a credential ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error(url: str) -> str:
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(url)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_http_errors_are_one_line_naming_the_url(http_root):
    _root, base = http_root
    shown = base.replace(f"reader:{SECRET}@", "***@")
    missing = _error(f"{base}/missing.safetensors")
    assert missing == f"{shown}/missing.safetensors: not found (no such file or object, HTTP 404)"
    assert "access denied (HTTP 403)" in _error(f"{base}/forbidden/model.safetensors")
    port = _free_port()
    refused = _error(f"http://u:{SECRET}@127.0.0.1:{port}/m.safetensors")
    assert (
        refused
        == f"http://***@127.0.0.1:{port}/m.safetensors: cannot open: cannot connect to 127.0.0.1:{port}: "
        + ("connection refused")
    )


def test_cli_json_never_holds_the_credentials_of_a_url(http_root, tmp_path, capsys):
    root, base = http_root
    save(root / "cli" / "m.safetensors", transformer_like(layers=2))
    out = tmp_path / "v.json"
    url = f"{base}/cli/m.safetensors?token={SECRET}"
    missing = f"{base}/cli/gone.safetensors?sig={SECRET}"
    assert cli_main(["check", url, missing, "--no-cache", "--json", str(out)]) == 2
    captured = capsys.readouterr()
    doc = out.read_text()
    assert SECRET not in doc + captured.out + captured.err
    assert json.loads(doc)["checkpoints"][0].endswith("/cli/m.safetensors?token=***")


def test_truncated_and_corrupt_remote_files_are_refused(s3, tmp_path):
    good = save(tmp_path / "t.safetensors", {"w": torch.randn(64, 64)}).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[:-100])
    url = upload(s3, tmp_path / "cut.safetensors", "bad/cut.safetensors")
    assert "truncated" in _error(url) and url in _error(url)
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04" + os.urandom(4000))
    assert "truncated or corrupt torch.save archive" in _error(upload(s3, tmp_path / "junk.pt", "bad/junk.pt"))
    assert _error("s3://ckpts/bad/none.safetensors") == (
        "s3://ckpts/bad/none.safetensors: not found (no such file or object, HTTP 404)"
    )
    assert "not found" in _error("s3://no-such-bucket/m.safetensors")


def test_cli_says_one_line_for_an_unreachable_url(capsys):
    port = _free_port()
    assert cli_main(["check", f"http://u:{SECRET}@127.0.0.1:{port}/m.safetensors", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and len(err.strip().splitlines()) == 1 and "connection refused" in err
    assert "Traceback" not in err


def test_plugin_usage_error_for_a_missing_url(pytester, s3):
    result = pytester.runpytest("--checkpoint", "s3://ckpts/nothing/here.safetensors")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*s3://ckpts/nothing/here.safetensors: --checkpoint: no such file or directory*"])


# -- redaction --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host/a/b.safetensors", "https://***@host/a/b.safetensors"),
        (
            "https://host/m.pt?X-Amz-Signature=abc&X-Amz-Credential=k%2Fx",
            "https://host/m.pt?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("s3://bucket/key.safetensors?versionId=v1", "s3://bucket/key.safetensors?versionId=v1"),
        ("gs://b/k.safetensors", "gs://b/k.safetensors"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown
    assert str(RemotePath(url)) == shown


def test_remote_path_operations():
    p = RemotePath("s3://bucket/dir/model.safetensors.index.json")
    assert p.name == "model.safetensors.index.json" and p.suffix == ".json"
    assert str(p.parent / "model-00001-of-00002.safetensors") == "s3://bucket/dir/model-00001-of-00002.safetensors"
    assert p == RemotePath(str(p)) and len({p, RemotePath(str(p))}) == 1


# -- mutated files: a URL is read or refused exactly like the same file on disk ----------------------------------

FUZZ_FORMATS = ["safetensors", "sharded", "torch-zip"]
FUZZ_CASES = 25


def _outcome(target: str | Path) -> tuple:
    """("ok", every tensor's (name, shape, dtype, values digest)) or ("refused",); anything else propagates."""
    try:
        with open_checkpoint(target) as ckpt:
            rows = []
            for info in ckpt.tensors():
                t = ckpt.read(info.name)
                rows.append((info.name, tuple(t.shape), t.dtype, info.group, t.view(-1).view(torch.uint8).sum().item()))
            return ("ok", rows)
    except CheckpointError as e:
        assert "\n" not in str(e) and SECRET not in str(e)
        return ("refused",)


@pytest.mark.parametrize("fmt", FUZZ_FORMATS)
def test_mutated_files_by_url_are_read_or_refused_like_local_ones(http_root, tmp_path, fmt):
    from tests.fuzz.corpus import build_corpus
    from tests.fuzz.harness import case_rng, make_case

    root, base = http_root
    seed = build_corpus(tmp_path / "corpus", [fmt])[fmt]
    kinds = set()
    for case in range(FUZZ_CASES):
        work = root / "fuzz" / fmt / str(case)
        entry, _marker, mutation = make_case(seed, work, case_rng(5, fmt, case))
        local = _outcome(entry)
        remote = _outcome(f"{base}/{entry.relative_to(root).as_posix()}")
        assert local == remote, f"case {case}: {mutation}"
        kinds.add(local[0])
    assert "refused" in kinds  # the mutations reach the readers' checks
    seed_url = f"{base}/{(work / seed.entry).relative_to(root).as_posix()}"
    shutil.copytree(seed.directory, work, dirs_exist_ok=True)  # the unmutated seed: read, and equal
    assert _outcome(work / seed.entry)[0] == "ok" and _outcome(work / seed.entry) == _outcome(seed_url)


def test_a_torch_archive_rewritten_by_another_zip_tool_is_read_at_the_right_offsets(http_root):
    import zipfile

    root, base = http_root
    state = {"a": torch.randn(100, 7), "b": torch.arange(50, dtype=torch.int32), "c": torch.randn(3)}
    torch.save(state, root / "orig.pt")
    with zipfile.ZipFile(root / "orig.pt") as src, zipfile.ZipFile(root / "rezipped.pt", "w") as dst:
        for info in src.infolist():  # no 64-byte alignment, no data descriptors: torch's offset guess is wrong
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_STORED)
    with open_checkpoint(f"{base}/rezipped.pt") as ckpt:
        for name, t in state.items():
            assert torch.equal(ckpt.read(name), t)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def test_a_remote_pickle_asking_for_a_global_is_refused_and_nothing_runs(http_root, capfd):
    root, base = http_root
    torch.save({"w": torch.ones(2), "evil": Payload()}, root / "evil.pt")
    message = _error(f"{base}/evil.pt")
    assert "refused: not a plain tensor checkpoint (weights_only)" in message
    assert "PWNED" not in capfd.readouterr().out


def test_a_large_tensor_is_fetched_as_concurrent_chunks_and_reassembled_in_order(http_root):
    from pytest_weights.readers.source import CHUNK_BYTES

    root, base = http_root
    big = torch.arange(5_000_000, dtype=torch.float32)  # 20 MB: three 8 MiB chunks
    save(root / "chunks.safetensors", {"big": big, "small": torch.ones(3)})
    with open_checkpoint(f"{base}/chunks.safetensors") as ckpt:
        before = ckpt.source.requests
        assert torch.equal(ckpt.read("big"), big)
        assert ckpt.source.requests - before == -(-big.nbytes // CHUNK_BYTES)


def test_a_server_that_ignores_range_requests_is_refused_in_one_line(http_root):
    root, base = http_root
    save(root / "norange" / "m.safetensors", {"w": torch.randn(256, 256)})  # larger than the header probe
    message = _error(f"{base}/norange/m.safetensors")
    assert "the server ignores Range requests" in message and message.startswith("http://***@")


_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"
_FRAME = "https://user:@host.example/path/m.safetensors?X-Amz-Signature=&token=&versionId=v3 cannot open"


@given(
    password=st.text(alphabet=_SAFE, min_size=6, max_size=40),
    signature=st.text(alphabet=_SAFE, min_size=6, max_size=80),
    token=st.text(alphabet=_SAFE + "/+=%", min_size=6, max_size=80),
)
@settings(max_examples=200, deadline=None)
def test_no_secret_survives_redaction_or_scrubbing(password, signature, token):
    from urllib.parse import quote

    from pytest_weights.readers.source import scrub

    for secret in (password, signature, token):
        assume(secret not in _FRAME and quote(secret, safe="") not in _FRAME)
    url = f"https://user:{password}@host.example/path/m.safetensors?X-Amz-Signature={signature}&token={quote(token)}"
    url += "&versionId=v3"
    shown = redact(url)
    assert shown == "https://***@host.example/path/m.safetensors?X-Amz-Signature=***&token=***&versionId=v3"
    message = scrub(f"ClientResponseError: 403, message='Forbidden', url='{url}' (token {token})", url)
    for secret in (password, signature, token, quote(token)):
        assert secret not in shown and secret not in message and secret not in str(RemotePath(url))


def test_an_unknown_scheme_or_a_missing_filesystem_package_is_one_line():
    import importlib.util

    assert _error("foo://x/m.safetensors") == "foo://x/m.safetensors: unknown URL scheme 'foo'"
    if importlib.util.find_spec("gcsfs") is None:
        assert _error("gs://b/m.safetensors").endswith(": reading gs:// URLs needs gcsfs: pip install gcsfs")


def test_a_run_prefix_is_discovered_by_listing_and_checked_step_by_step(pytester, s3, tmp_path):
    from pytest_weights.runs import discover_run

    for step in (100, 20, 300):
        local = save(tmp_path / f"step_{step}.safetensors", transformer_like(layers=1, seed=step))
        upload(s3, local, f"run1/step_{step}.safetensors")
    run = discover_run("s3://ckpts/run1")
    assert run is not None and run.steps == (20, 100, 300)
    assert str(run.latest.path) == "s3://ckpts/run1/step_300.safetensors"
    assert "a directory of 3 checkpoints from one run (steps 20, 100, 300)" in _error("s3://ckpts/run1/")
    result = pytester.runpytest("--checkpoint", "s3://ckpts/run1/", "-k", "finite", "-v")
    result.assert_outcomes(passed=3)
    latest = pytester.runpytest("--checkpoint", "s3://ckpts/run1", "--weights-latest", "-k", "finite", "-v")
    latest.assert_outcomes(passed=1)
    latest.stdout.fnmatch_lines(["*run: checked step 300 (latest); trajectory over 3 checkpoints, steps 20…300*"])
