"""Hugging Face ``Trainer`` integration: check every checkpoint as it is saved, stop on failure.

>>> from pytest_weights.integrations.huggingface import WeightsGateCallback
>>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[WeightsGateCallback("default")])

On each ``on_save`` the callback checks the checkpoint just written
(``args.output_dir/checkpoint-{state.global_step}``) with a :class:`~pytest_weights.gate.WeightsGate`.
On failure the report is logged and, by ``on_failure``: ``"stop"`` (default) sets
``control.should_training_stop`` so the Trainer ends after this step, ``"raise"`` raises
:class:`~pytest_weights.gate.WeightsGateError` out of ``trainer.train()``, ``"warn"`` only logs.
Run-scope assertions are judged over the checkpoints saved so far (the gate keeps their
statistics, so ``save_total_limit`` deleting old checkpoints does not matter); deferred
end-of-run kinds (``saturates``, ``final_range``) are judged at ``on_train_end``.

In distributed training the world's process zero (which wrote the checkpoint) checks it and
the verdict is shared with every process (``all_reduce``), so all of them stop together.

Needs ``pip install 'pytest-weights[huggingface]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import missing_extra

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("transformers", "huggingface", e) from e

from ..report import Report
from .core import GateCallbackCore


class WeightsGateCallback(GateCallbackCore, TrainerCallback):
    """A ``TrainerCallback`` that gates training on the health of each saved checkpoint.

    ``spec``, ``device``, ``cache_dir``, ``reference``, ``defer``: as for
    :class:`~pytest_weights.gate.WeightsGate` (or pass a ready ``gate``: its ``on_failure``
    becomes ``"return"``, the callback acting on failures).
    ``on_failure``: ``"stop"``, ``"raise"`` or ``"warn"``. ``logger``: a logger or its name.

    After training, ``reports`` maps each checked step to its :class:`Report` and
    ``failed_step`` is the first step that failed (None if none did).
    """

    stop_flag = "control.should_training_stop"

    def checkpoint_dir(self, args: TrainingArguments, state: TrainerState) -> Path:
        """The directory the Trainer saved the checkpoint of this step to."""
        return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        step = state.global_step
        report, error = None, None
        if state.is_world_process_zero:  # it wrote the checkpoint; the verdict is shared
            try:
                report = self._check_saved(args, state)
            except Exception as e:  # shared with the other processes first, then re-raised
                error = e
        failed = _any_process(error is not None or (report is not None and not report.passed), args.device)
        if error is not None:
            raise error
        if failed:
            self.fail(step, report)  # ("raise" raises on process zero: the others stop)
            control.should_training_stop = control.should_training_stop or self.stops
        return control

    def _check_saved(self, args: TrainingArguments, state: TrainerState) -> Report | None:
        path = self.checkpoint_dir(args, state)
        if not path.is_dir():
            self.logger.warning("weights gate: no checkpoint at %s (step %d): not checked", path, state.global_step)
            return None
        return self.check(path, state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.is_world_process_zero:  # deferred end-of-run kinds on the checkpoints saved
            self.finish()
        return control


def _any_process(flag: bool, device: Any) -> bool:
    """True if ``flag`` is true on any process (just ``flag`` when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


__all__ = ["WeightsGateCallback"]
