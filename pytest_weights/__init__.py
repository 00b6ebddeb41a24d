"""pytest-weights: assert the statistical health of neural-network checkpoints.

Data flows one way: :mod:`.readers` (checkpoint files) → :mod:`.selection` (which
tensors) → :mod:`.stats` via :mod:`.engine` (one streamed pass) → :mod:`.assertions`
(verdicts) → :mod:`.report`; :mod:`.plugin` adapts it to pytest, :func:`check` to code.
"""

from .errors import CheckpointError, SpecError, WeightsError
from .gate import WeightsGate, WeightsGateError
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .report import AssertionResult, Report
from .runner import Checker, check
from .spec import Spec, load_spec

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
