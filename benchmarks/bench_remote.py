"""Remote reads from a local S3 server: throughput, requests, and bytes fetched against bytes selected.

A ``moto`` S3 server runs in its own process on localhost (so the client's CPU time is the
client's own); a generated transformer-like safetensors file (and the same weights as a
``torch.save`` zip) is uploaded, then read through ``open_checkpoint("s3://…")``::

    python benchmarks/bench_remote.py                      # 256 MB, medians of 3 runs
    python benchmarks/bench_remote.py --size-mb 1024 --repeat 5 --json out.json

Measured (wall seconds and client CPU seconds, user+sys, for each):

- **open**: the header (one or two range requests) or a zip's central directory and pickle;
- **read all**: every tensor read once — throughput, requests, bytes fetched / bytes of tensors;
- **one tensor**: a spec selecting one matrix, through :func:`pytest_weights.check` — bytes fetched / file size;
- **default spec**: :func:`pytest_weights.check` with the bundled default spec, remote against the same file
  on local disk (the statistics are identical; the difference is the transfer);
- **torch zip**: the same tensors as a ``torch.save`` archive, opened and read by range.

localhost has no network latency or bandwidth limit: these numbers are the client's overhead
per byte and per request (the floor); a real object store adds ~10–50 ms per request and its
bandwidth (docs/remote.md works out what that means per GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

ONE_TENSOR_SPEC = """\
version: 1
assertions:
  - name: one
    kind: stat_range
    stat: std
    min: 0.0
    select: {include: ["model.layers.3.mlp.up.weight"]}
"""


def cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of one call."""
    c, t = cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t, cpu() - c, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_http(directory: str, port: int) -> None:
    """A threaded HTTP server for ``directory`` that honours ``Range: bytes=a-b`` (run as a subprocess)."""
    import functools
    import http.server
    import re

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def send_head(self):  # type: ignore[override]
            path = self.translate_path(self.path)
            if not os.path.isfile(path):
                self.send_error(404)
                return None
            size = os.path.getsize(path)
            f = open(path, "rb")  # noqa: SIM115 - closed by the base class
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            begin, end = (int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)) if m else (0, size - 1)
            self.send_response(206 if m else 200)
            if m:
                self.send_header("Content-Range", f"bytes {begin}-{end}/{size}")
            f.seek(begin)
            self.left = end - begin + 1
            self.send_header("Content-Length", str(self.left))
            self.send_header("ETag", f'"{os.stat(path).st_mtime_ns}"')
            self.end_headers()
            return f

        def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
            while self.left > 0:
                chunk = source.read(min(self.left, 1 << 20))
                if not chunk:
                    break
                outputfile.write(chunk)
                self.left -= len(chunk)

    handler = functools.partial(Handler, directory=directory)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{cmd[2]} did not start")


def make_weights(size_mb: int, layers: int = 8) -> dict[str, torch.Tensor]:
    """Transformer-like fp32 matrices totalling about ``size_mb`` MB."""
    per_layer = size_mb * 1e6 / 4 / layers / 12  # q, k, v, o (d²) + up, down (4d²) = 12 d²
    d = max(64, int(per_layer**0.5) // 64 * 64)
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            out[p + f"attn.{n}.weight"] = torch.randn(d, d, generator=g) * 0.02
        out[p + "mlp.up.weight"] = torch.randn(4 * d, d, generator=g) * 0.02
        out[p + "mlp.down.weight"] = torch.randn(d, 4 * d, generator=g) * 0.02
        out[p + "norm.weight"] = torch.ones(d)
    return out


def read_all(url: str) -> dict:
    from pytest_weights.readers import open_checkpoint

    w_open, c_open, ckpt = timed(lambda: open_checkpoint(url))
    src = ckpt.source
    opened = (src.requests, src.bytes_fetched)
    nbytes = sum(i.nbytes for i in ckpt.tensors())
    w_read, c_read, _ = timed(lambda: [ckpt.read(i.name) for i in ckpt.tensors()])
    ckpt.close()
    return {
        "open_s": w_open,
        "open_cpu_s": c_open,
        "open_requests": opened[0],
        "open_bytes": opened[1],
        "read_s": w_read,
        "read_cpu_s": c_read,
        "read_MBps": nbytes / 1e6 / w_read,
        "requests": src.requests,
        "bytes_fetched": src.bytes_fetched,
        "bytes_of_tensors": nbytes,
        "fetched_over_selected": src.bytes_fetched / nbytes,
    }


def measure(base: str, st: Path, spec: Path, repeat: int) -> dict[str, list[dict]]:
    """Every measurement ``repeat`` times against the server at ``base`` (which serves model.safetensors/.pt)."""
    from pytest_weights import check
    from pytest_weights.readers.source import TOTALS

    runs: dict[str, list[dict]] = {"safetensors": [], "torch_zip": [], "one_tensor": [], "default_spec": []}
    size = st.stat().st_size
    for _ in range(repeat):
        runs["safetensors"].append(read_all(f"{base}/model.safetensors"))
        runs["torch_zip"].append(read_all(f"{base}/model.pt"))
        before = TOTALS.bytes
        w, c, _ = timed(lambda: check(f"{base}/model.safetensors", spec, device="cpu"))
        fetched = TOTALS.bytes - before
        runs["one_tensor"].append({"s": w, "cpu_s": c, "bytes_fetched": fetched, "of_file": fetched / size})
        w_r, c_r, _ = timed(lambda: check(f"{base}/model.safetensors", "default", device="cpu"))
        w_l, c_l, _ = timed(lambda: check(st, "default", device="cpu"))
        runs["default_spec"].append({"remote_s": w_r, "remote_cpu_s": c_r, "local_s": w_l, "local_cpu_s": c_l})
    return runs


def table(name: str, runs: dict[str, list[dict]], size: int) -> None:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    gb = size / 1e9
    print(f"\n## {name}\n")
    print("| measurement | wall s | client CPU s | notes |")
    print("|---|---:|---:|---|")
    for kind in ("safetensors", "torch_zip"):
        print(
            f"| {kind}: open | {med(kind, 'open_s'):.3f} | {med(kind, 'open_cpu_s'):.3f} | "
            f"{med(kind, 'open_requests'):.0f} requests, {med(kind, 'open_bytes') / 1e3:.0f} kB |"
        )
        print(
            f"| {kind}: read all | {med(kind, 'read_s'):.2f} | {med(kind, 'read_cpu_s'):.2f} | "
            f"{med(kind, 'read_MBps'):.0f} MB/s, {med(kind, 'requests'):.0f} requests, fetched/selected "
            f"{med(kind, 'fetched_over_selected'):.4f} |"
        )
    print(
        f"| one-tensor spec (check) | {med('one_tensor', 's'):.3f} | {med('one_tensor', 'cpu_s'):.3f} | "
        f"fetched {med('one_tensor', 'bytes_fetched') / 1e6:.2f} MB = {100 * med('one_tensor', 'of_file'):.2f} % "
        "of the file |"
    )
    for where in ("remote", "local"):
        print(
            f"| default spec, {where} | {med('default_spec', f'{where}_s'):.2f} | "
            f"{med('default_spec', f'{where}_cpu_s'):.2f} | {med('default_spec', f'{where}_s') / gb:.2f} s/GB |"
        )
    print(
        f"\nper GB (safetensors, read all): {med('safetensors', 'read_s') / gb:.2f} s wall, "
        f"{med('safetensors', 'read_cpu_s') / gb:.2f} s client CPU"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--servers", nargs="+", choices=["s3", "http"], default=["s3", "http"])
    ap.add_argument("--json", help="write every run's numbers here")
    ap.add_argument("--serve-http", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_http:
        serve_http(args.serve_http[0], int(args.serve_http[1]))
        return 0

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_weights(args.size_mb)
        st, pt, spec = Path(tmp) / "model.safetensors", Path(tmp) / "model.pt", Path(tmp) / "one.weights.yaml"
        save_file(weights, str(st))
        torch.save(weights, pt)
        spec.write_text(ONE_TENSOR_SPEC)
        size = st.stat().st_size
        print(f"# Remote reads on localhost: {size / 1e6:.0f} MB safetensors ({len(weights)} tensors), ", end="")
        print(f"medians of {args.repeat}; {os.cpu_count()} CPUs, {platform.platform()}")
        for name in args.servers:
            port = free_port()
            if name == "s3":
                server = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port)
                os.environ.update(
                    AWS_ACCESS_KEY_ID="bench",
                    AWS_SECRET_ACCESS_KEY="bench",
                    AWS_DEFAULT_REGION="us-east-1",
                    AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                )
                import boto3

                s3 = boto3.client("s3")
                s3.create_bucket(Bucket="bench")
                s3.upload_file(str(st), "bench", "model.safetensors")
                s3.upload_file(str(pt), "bench", "model.pt")
                base, title = "s3://bench", "moto S3 server (its ranged GET costs ~1.5 ms per MB of the *object*)"
            else:
                server = start([sys.executable, __file__, "--serve-http", tmp, str(port)], port)
                base, title = f"http://127.0.0.1:{port}", "HTTP server with Range support (http.server, threaded)"
            try:
                results[name] = measure(base, st, spec, args.repeat)
            finally:
                server.terminate()
                server.wait()
            table(title, results[name], size)
    if args.json:
        doc = {"size_bytes": size, "machine": platform.platform(), "cpus": os.cpu_count(), "runs": results}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
