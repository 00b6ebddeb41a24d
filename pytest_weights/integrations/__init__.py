"""Training-framework callbacks that gate a run on weight health (optional extras).

- :mod:`pytest_weights.integrations.huggingface`: ``WeightsGateCallback``, a
  ``transformers.TrainerCallback`` checking each checkpoint the ``Trainer`` saves
  (``pip install 'pytest-weights[huggingface]'``).
- :mod:`pytest_weights.integrations.lightning`: ``WeightsGateCallback``, a Lightning
  ``Callback`` checking the live ``LightningModule`` every N steps, after validation and
  when a checkpoint is saved (``pip install 'pytest-weights[lightning]'``).

Both wrap :class:`pytest_weights.gate.WeightsGate`; importing a module whose framework is
not installed raises an :class:`ImportError` that names the extra to install.
"""

from __future__ import annotations

ON_FAILURE = ("stop", "raise", "warn")


def missing_extra(framework: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError raised when an integration's framework cannot be imported."""
    return ImportError(
        f"this pytest-weights integration needs {framework}, which could not be imported ({error}): "
        f"pip install 'pytest-weights[{extra}]'"
    )


def check_on_failure(value: str) -> str:
    if value not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got {value!r}")
    return value
