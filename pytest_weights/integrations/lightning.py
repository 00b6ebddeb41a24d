"""Lightning integration: check the live ``LightningModule`` during ``trainer.fit``, stop on failure.

>>> from pytest_weights.integrations.lightning import WeightsGateCallback
>>> trainer = Trainer(callbacks=[WeightsGateCallback("default", every_n_steps=500)])

The callback checks the module's weights *in memory* (no file is written or read) with a
:class:`~pytest_weights.gate.WeightsGate`:

- every ``every_n_steps`` optimizer steps (``trainer.global_step``), after the batch;
- at the end of each validation run, with ``on_validation=True`` (not the sanity check);
- when Lightning saves a checkpoint (``on_checkpoint=True``, the default): the
  ``state_dict`` about to be written is checked; with ``on_failure="raise"`` it is not written.

A step is checked once, whichever hook comes first. On failure the report is logged and, by
``on_failure``: ``"stop"`` (default) sets ``trainer.should_stop`` (the fit ends after the
current batch, like ``EarlyStopping``; ``min_epochs``/``min_steps`` still apply), ``"raise"``
raises :class:`~pytest_weights.gate.WeightsGateError` out of ``trainer.fit``, ``"warn"`` only
logs. Run-scope assertions are judged over the steps checked so far; deferred end-of-run kinds
(``saturates``, ``final_range``) at ``on_train_end``. Under DDP every process checks its
replica and the decision is reduced over processes (any failure stops all).

Uses ``lightning.pytorch`` (``pip install 'pytest-weights[lightning]'``), or the standalone
``pytorch_lightning`` package when only that is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import missing_extra

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as _e:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer
    except ImportError:
        raise missing_extra("lightning", "lightning", _e) from _e

from ..spec import Spec
from .core import GateCallbackCore


class WeightsGateCallback(GateCallbackCore, Callback):
    """A Lightning ``Callback`` that gates ``trainer.fit`` on the health of the module's weights.

    ``every_n_steps``, ``on_validation``, ``on_checkpoint``: when to check (see the module docs).
    ``spec``, ``on_failure`` (``"stop"``, ``"raise"`` or ``"warn"``), ``device`` and the keyword
    ``options`` ``cache_dir``, ``logger``, ``reference``, ``defer``, ``gate``: as for
    :class:`~pytest_weights.integrations.core.GateCallbackCore`.

    ``reports`` maps each checked step to its :class:`Report`; ``failed_step`` is the first
    step that failed (None if none did).
    """

    stop_flag = "trainer.should_stop"
    raise_everywhere = True  # every process checks its replica: all leave together

    def __init__(
        self,
        spec: str | Path | Spec = "default",
        every_n_steps: int | None = None,
        on_validation: bool = False,
        on_checkpoint: bool = True,
        on_failure: str = "stop",
        device: str = "auto",
        **options: Any,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be ≥ 1 or None, got {every_n_steps}")
        super().__init__(spec, device, on_failure, **options)
        self.every_n_steps = every_n_steps
        self.on_validation = on_validation
        self.on_checkpoint = on_checkpoint

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self._check(trainer, pl_module, step)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._check(trainer, pl_module, trainer.global_step)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.on_checkpoint:
            self._check(trainer, checkpoint.get("state_dict", pl_module), trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.finish(lambda failed: trainer.strategy.reduce_boolean_decision(failed, all=False), stopping=True)

    def _check(self, trainer: Trainer, weights: LightningModule | Mapping[str, Any], step: int) -> None:
        if step in self.reports:
            return  # the weights of a step are checked once
        report = self.check(weights, step)
        if trainer.strategy.reduce_boolean_decision(not report.passed, all=False):
            trainer.should_stop = trainer.should_stop or self.stops
            self.fail(step, report)


__all__ = ["WeightsGateCallback"]
