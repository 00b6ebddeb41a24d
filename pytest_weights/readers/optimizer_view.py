"""``OptimizerView``: a checkpoint's weights joined with the optimizer state saved next to them.

The exact AdamW force budget of a checkpoint's last step (:mod:`pytest_weights.forces`) needs
each weight tensor together with its Adam state. This view makes that pair one tensor the
one-pass engine reads like any other: for every float tensor of the weights, ``read(name)``
returns a float64 ``(numel, 2)`` tensor whose rows are ``[W_prev, û]`` — the Adam direction
of the last step (:func:`~pytest_weights.forces.adam_direction`) and the weights before it
(:func:`~pytest_weights.forces.previous_weights`), exactly as
:func:`~pytest_weights.forces.budget_from_state` computes them. A tensor without Adam state
reads as ``[W, 0]`` (its values still go through the NaN policy; no budget is taken from it).
So the budget's sums (:class:`~pytest_weights.stats.force.StepBudgetSums`) are computed in
the checkpoint's one pass and kept by the statistics cache under :meth:`identity` (the
weights', the optimizer file's and ``config.json``'s identities and the lr/weight-decay
overrides): an unchanged run is judged again without reading a tensor.

The optimizer state is ``optimizer_file`` next to a tensor's file (its directory is the
checkpoint: a Hugging Face ``checkpoint-N/``, an ``examples/train_tiny.py`` checkpoint), or,
for a ``torch.save`` weights file with no such file beside it, the file itself (a Lightning
``.ckpt``: ``optimizer_states[0]``). It is loaded and matched to names
(:func:`~pytest_weights.forces.map_optimizer_state`) when the view is opened; what a kind
needs to judge each tensor — the status, the step's lr and weight decay, the state's step
count, how names were matched, or why the state is unusable — is in its
:class:`OptimizerInfo`. An unusable optimizer file never raises here (``strict=False``): its
tensors say ``status="unmapped"`` with the one-line ``problem`` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import CheckpointError, WeightsError
from .base import Checkpoint, TensorInfo

#: What an :class:`OptimizerInfo` says about its tensor's optimizer state.
Status = Literal["adam", "unstepped", "no_state", "no_adam", "not_in_groups", "buffer", "none", "unmapped"]

#: Errors of loading or matching an optimizer file that make its state unusable (reported, never raised).
_UNUSABLE = (WeightsError, ValueError, KeyError, TypeError, IndexError, OSError)


@dataclass(frozen=True)
class OptimizerInfo(TensorInfo):
    """A weight tensor of an :class:`OptimizerView` with what its optimizer state says.

    ``status``: ``adam`` (a budget can be taken), ``unstepped`` (the optimizer never stepped),
    ``no_state`` (this parameter not stepped yet), ``no_adam`` (state without ``exp_avg``),
    ``not_in_groups`` (not in the optimizer's parameter groups), ``buffer`` (not a parameter),
    ``none`` (no optimizer state beside this tensor), ``unmapped`` (the state cannot be read or
    matched: ``problem`` says why, naming the file). ``source``: the optimizer file as
    ``<dir>/<file>``; ``method``: how names were matched; ``lr``/``weight_decay``: the step's;
    ``state_step``: the state's step count.
    """

    status: Status = "none"
    source: str = ""
    problem: str = ""
    method: str = ""
    lr: float = 0.0
    weight_decay: float = 0.0
    state_step: float = 0.0

    @property
    def nbytes(self) -> int:
        return 2 * self.numel * 8  # read as (numel, 2) float64


@dataclass
class _Source:
    """One optimizer file and the weights it was matched against."""

    path: Path
    label: str
    mapping: Any = None  # forces.StateMap when usable
    lr: float | None = None
    problem: str = ""
    absent: bool = False  # a plain torch.save weights file: no optimizer inside
    entries: Mapping[str, Any] = field(default_factory=dict)


def _source_key(file: str, optimizer_file: str) -> tuple[Path, Path] | None:
    """(optimizer file, weights checkpoint it belongs to) for a tensor stored in ``file``, or None."""
    from . import detect_format
    from .torch_file import is_torch_file

    if not file:
        return None
    path = Path(file)
    opt = path.parent / optimizer_file
    try:
        if opt.is_file():
            return opt, path.parent if detect_format(path.parent) is not None else path
        if is_torch_file(path):
            return path, path
    except (OSError, WeightsError):
        return None
    return None


def _load_source(opt_path: Path, target: Path, lr: float | None) -> _Source:
    """Load ``opt_path`` and match its state to the names of ``target``; a failure is recorded, not raised."""
    from ..forces import (
        OptimizerMappingError,
        load_optimizer_file,
        map_optimizer_state,
        optimizer_state_of,
        weights_layout,
    )

    label = f"{opt_path.parent.name}/{opt_path.name}"
    try:
        found = optimizer_state_of(load_optimizer_file(opt_path))
        if found is None:
            if opt_path == target:
                return _Source(opt_path, label, absent=True)
            raise OptimizerMappingError("no optimizer state in the file")
        opt, saved_lr = found
        mapping = map_optimizer_state(opt, weights_layout(target), source=label)
    except _UNUSABLE as e:
        msg = str(e) if isinstance(e, OptimizerMappingError) else f"{label}: cannot read: {e}"
        return _Source(opt_path, label, problem=" ".join(msg.split()))
    return _Source(opt_path, label, mapping, lr if lr is not None else saved_lr, entries=mapping.entries)


class OptimizerView(Checkpoint):
    """The weights of ``weights`` as ``[W_prev, û]`` rows, from the optimizer state next to them.

    ``lr``/``weight_decay`` override the saved values (e.g. from a spec). ``strict``: raise a
    :class:`CheckpointError` naming the optimizer file when its state cannot be read or matched.
    """

    def __init__(
        self,
        weights: Checkpoint,
        optimizer_file: str = "optimizer.pt",
        lr: float | None = None,
        weight_decay: float | None = None,
        strict: bool = False,
    ) -> None:
        self.weights = weights
        self.path = weights.path
        self.label = weights.label
        self.optimizer_file = optimizer_file
        self.lr, self.weight_decay = lr, weight_decay
        self._sources: dict[tuple[Path, Path], _Source] = {}
        self._infos: list[TensorInfo] = [self._info(i) for i in weights.tensors()]
        self._by_name = {i.name: i for i in self._infos}
        self._identity: str | None = None
        if strict:
            for src in self._sources.values():
                if src.problem:
                    why = src.problem.removeprefix(f"{src.label}: ")
                    raise CheckpointError(src.path, f"optimizer state unusable: {why}")

    @property
    def sources(self) -> tuple[_Source, ...]:
        """The optimizer files found beside the weights (with their mapping or problem)."""
        return tuple(self._sources.values())

    def _source(self, info: TensorInfo) -> _Source | None:
        if not info.is_float or info.group != "weights":
            return None
        key = _source_key(info.file, self.optimizer_file)
        if key is None:
            return None
        if key not in self._sources:
            self._sources[key] = _load_source(*key, self.lr)
        return self._sources[key]

    def _info(self, info: TensorInfo) -> TensorInfo:
        """The view's entry for one tensor of the weights (non-float tensors as they are)."""
        if not info.is_float:
            return info
        src = self._source(info)
        base = (info.name, info.shape, torch.float64, info.file, info.group)
        if src is None or src.absent:
            return OptimizerInfo(*base)
        if src.problem:
            return OptimizerInfo(*base, status="unmapped", source=src.label, problem=src.problem)
        common = {"source": src.label, "method": src.mapping.method}
        entry = src.entries.get(info.name)
        if not src.entries:
            return OptimizerInfo(*base, status="unstepped", **common)
        if entry is None:
            from ..forces import is_buffer

            return OptimizerInfo(
                *base, status="buffer" if is_buffer(info.name, info.shape) else "not_in_groups", **common
            )
        state, group = entry
        if not state or "exp_avg" not in state:
            return OptimizerInfo(*base, status="no_adam" if state else "no_state", **common)
        hyper = self._hyper(src, group)
        return OptimizerInfo(*base, status="adam", lr=hyper.lr, weight_decay=hyper.weight_decay,
                             state_step=float(state["step"]), **common)  # fmt: skip

    def _hyper(self, src: _Source, group: Mapping[str, Any]) -> Any:
        from ..forces import OptimizerHyper

        return OptimizerHyper.from_group(group, src.lr, self.weight_decay)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> torch.Tensor:
        info = self.lookup(self._by_name, name)
        w = self.weights.read(name)
        if not isinstance(info, OptimizerInfo):
            return w
        with self.reading(name):
            if info.status != "adam":
                flat = w.reshape(-1).double()
                return torch.stack((flat, torch.zeros_like(flat)), dim=1)
            return self._rows(info, w)

    def _rows(self, info: OptimizerInfo, w: torch.Tensor) -> torch.Tensor:
        """``[W_prev, û]`` per element, as :func:`~pytest_weights.forces.budget_from_state` computes them."""
        from ..forces import adam_direction, previous_weights

        src = self._source(info)
        state, group = src.entries[info.name]  # type: ignore[union-attr]
        hyper = self._hyper(src, group)  # type: ignore[arg-type]
        u = adam_direction(state["exp_avg"], state["exp_avg_sq"], float(state["step"]), hyper.beta1, hyper.beta2,
                           hyper.eps)  # fmt: skip
        w_prev = previous_weights(w, u, hyper.lr, hyper.weight_decay)
        return torch.stack((w_prev.reshape(-1), u.reshape(-1)), dim=1)

    def identity(self) -> str:
        if self._identity is None:
            from ._util import file_identity

            parts = [self.weights.identity()]
            for opt, _target in self._sources:
                parts.append(file_identity(opt))
                config = opt.parent / "config.json"  # the rebuilt model may decide the names
                if config.is_file():
                    parts.append(file_identity(config))
            parts.append(f"lr={self.lr!r},wd={self.weight_decay!r},file={self.optimizer_file}")
            self._identity = f"optimizer-view({'|'.join(parts)})"
        return self._identity

    def changed(self) -> bool:
        return self.weights.changed()

    def __repr__(self) -> str:
        return f"OptimizerView({self.weights!r}, {self.optimizer_file!r})"
