"""Choosing the compute device: ``auto`` is CUDA when available, else CPU."""

from __future__ import annotations

import torch

from .errors import WeightsError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` → a usable :class:`torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise WeightsError(f"--weights-device: unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise WeightsError(f"--weights-device {name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise WeightsError(f"--weights-device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise WeightsError(f"--weights-device: unsupported device type {dev.type!r} (auto, cpu, cuda, cuda:N)")
    return dev
