"""pytest-weights: assert the statistical health of neural-network checkpoints.

Data flows one way: :mod:`.readers` (checkpoint files) → :mod:`.selection` (which
tensors) → :mod:`.stats` via :mod:`.engine` (one streamed pass) → :mod:`.assertions`
(verdicts) → :mod:`.report`; :mod:`.plugin` adapts it to pytest, :func:`check` to code.

The public names are imported on first use (PEP 562), so that importing the package,
which pytest does for its plugin in every run, costs nothing until torch is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import CheckpointError, SpecError, WeightsError
    from .gate import WeightsGate, WeightsGateError
    from .readers import Checkpoint, TensorInfo, open_checkpoint
    from .report import AssertionResult, Report
    from .runner import Checker, check
    from .spec import Spec, load_spec

#: Public name → the submodule that defines it.
_EXPORTS = {
    "AssertionResult": ".report",
    "Checker": ".runner",
    "Checkpoint": ".readers",
    "CheckpointError": ".errors",
    "Report": ".report",
    "Spec": ".spec",
    "SpecError": ".errors",
    "TensorInfo": ".readers",
    "WeightsError": ".errors",
    "WeightsGate": ".gate",
    "WeightsGateError": ".gate",
    "check": ".runner",
    "load_spec": ".spec",
    "open_checkpoint": ".readers",
}

__all__ = [
    "AssertionResult",
    "Checker",
    "Checkpoint",
    "CheckpointError",
    "Report",
    "Spec",
    "SpecError",
    "TensorInfo",
    "WeightsError",
    "WeightsGate",
    "WeightsGateError",
    "check",
    "load_spec",
    "open_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
