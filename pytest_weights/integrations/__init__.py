"""Training-framework callbacks that gate a run on weight health (optional extras).

- :mod:`pytest_weights.integrations.huggingface`: ``WeightsGateCallback``, a
  ``transformers.TrainerCallback`` checking each checkpoint the ``Trainer`` saves
  (``pip install 'pytest-weights[huggingface]'``).
- :mod:`pytest_weights.integrations.lightning`: ``WeightsGateCallback``, a Lightning
  ``Callback`` checking the live ``LightningModule`` every N steps, after validation and
  when a checkpoint is saved (``pip install 'pytest-weights[lightning]'``).

Both are thin adapters over :class:`pytest_weights.integrations.core.GateCallbackCore` (the gate,
the failure policy, the logging), which wraps :class:`pytest_weights.gate.WeightsGate`; importing
a module whose framework is not installed raises an :class:`ImportError` that names the extra.
"""

from __future__ import annotations


def missing_extra(framework: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError raised when an integration's framework cannot be imported."""
    return ImportError(
        f"this pytest-weights integration needs {framework}, which could not be imported ({error}): "
        f"pip install 'pytest-weights[{extra}]'"
    )
