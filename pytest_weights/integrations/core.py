"""What the training-framework callbacks share: the gate, when a failure is acted on, the logging.

A :class:`GateCallbackCore` owns a :class:`~pytest_weights.gate.WeightsGate` whose own
``on_failure`` is ``"return"``: the callback decides what a failure does. Each adapter
(:mod:`.huggingface`, :mod:`.lightning`) only maps its framework's hooks to :meth:`check`,
:meth:`fail` and :meth:`finish`, and says how to stop (``stop_flag``, named in the log) and how
processes agree (a ``reduce`` that is true when any process failed). The Hugging Face callback
takes the core's constructor as it is; the Lightning one adds when to check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..gate import DEFER_KINDS, WeightsGate, WeightsGateError
from ..report import Report
from ..spec import Spec

ON_FAILURE = ("stop", "raise", "warn")


def check_on_failure(value: str) -> str:
    if value not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got {value!r}")
    return value


class GateCallbackCore:
    """The state and decisions of a gating callback (the base of each framework's callback).

    ``spec``, ``device``, ``cache_dir``, ``reference``, ``defer``: as for
    :class:`~pytest_weights.gate.WeightsGate` (or pass a ready ``gate``: its ``on_failure``
    becomes ``"return"``, the callback acting on failures). ``on_failure``: ``"stop"``,
    ``"raise"`` or ``"warn"``. ``logger``: a logger or its name.

    ``reports`` maps each checked step to its :class:`Report`; ``failed_step`` is the first step
    that failed (None if none did).
    """

    #: What an adapter sets to stop training (named in the log).
    stop_flag: ClassVar[str] = "should_stop"
    #: With ``"raise"``, processes that did not fail raise too (each checks its own replica, so all
    #: must leave together); else they stop.
    raise_everywhere: ClassVar[bool] = False

    def __init__(
        self,
        spec: str | Path | Spec = "default",
        device: str = "auto",
        on_failure: str = "stop",
        cache_dir: str | Path | None = None,
        logger: logging.Logger | str | None = None,
        reference: str | Path | None = None,
        defer: Collection[str] = DEFER_KINDS,
        gate: WeightsGate | None = None,
    ) -> None:
        self.on_failure = check_on_failure(on_failure)
        options = {"cache_dir": cache_dir, "logger": logger, "reference": reference, "defer": defer}
        self.gate = gate or WeightsGate(spec, device=device, on_failure="return", **options)
        self.gate.on_failure = "return"  # the callback decides what a failure does
        self.logger = self.gate.logger
        self.reports: dict[int, Report] = {}
        self.failed_step: int | None = None

    @property
    def stops(self) -> bool:
        """True when a failure stops training (``"stop"`` or ``"raise"``)."""
        return self.on_failure != "warn"

    def check(self, weights: str | Path | Mapping[str, Any] | Any, step: int) -> Report:
        """Check ``weights`` (a checkpoint path, a module or a state dict) at ``step``; keep the report."""
        report = self.gate.check(weights, step=step)
        self.reports[step] = report
        return report

    def has_deferred(self) -> bool:
        """True when end-of-run kinds (``saturates``, ``final_range``) wait for :meth:`finish`."""
        return len(self.gate.steps) >= 2 and any(
            {a.assertion.kind, a.name} & self.gate.defer for a in self.gate.run_scope
        )

    def fail(self, step: int, report: Report | None, stopping: bool = True) -> None:
        """Act on a failure at ``step``: raise, or log what happens next. ``report`` is None or
        passed when the failure was found on another process (which logged it)."""
        if self.failed_step is None:
            self.failed_step = step
        elsewhere = report is None or report.passed
        if self.on_failure == "raise" and report is not None and (not elsewhere or self.raise_everywhere):
            raise WeightsGateError(report, step)
        if elsewhere:
            self.logger.error("weights gate: a failure on another process stops training at step %d", step)
        elif stopping and self.on_failure == "stop":
            self.logger.error("weights gate: stopping training at step %d (%s)", step, self.stop_flag)
        elif stopping:
            self.logger.warning("weights gate: failed at step %d; training goes on (on_failure='warn')", step)

    def finish(self, reduce: Callable[[bool], bool] = bool, stopping: bool = False) -> None:
        """Judge the deferred end-of-run kinds (unless a step failed already); act on a failure."""
        if self.failed_step is not None or not self.has_deferred():
            return
        report = self.gate.finish()
        if reduce(not report.passed):
            self.fail(max(self.gate.steps), report, stopping)
