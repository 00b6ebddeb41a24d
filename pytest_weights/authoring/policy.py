"""The widening policy of ``init`` and ``--weights-regen``: how observed values become bounds.

The rules live with the kinds (each kind's ``propose``) and in
:mod:`pytest_weights.assertions.proposal` (widening, rounding, and the shared guard that no
regenerated bound makes its check unable to fail); this module re-exports them and adds
the constants of the generated specs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..assertions import Assertion
from ..assertions.base import TensorView
from ..assertions.depth_trend import TREND_MIN_RHO
from ..assertions.gaussian_ks import MAX_BASELINE_KS
from ..assertions.proposal import (
    DIGITS,
    KS_TOL_FLOOR,
    NONNEGATIVE,
    SLACK,
    WEIBULL_K_SLACK,
    Proposal,
    guard,
    number_text,
    round_bound,
    widen,
)

#: Matrices smaller than this get no distribution checks (as in the bundled specs).
MIN_NUMEL = 4096
DEFAULT_MARGIN = 0.5
#: Depth trends are asserted where Spearman |ρ| reaches TREND_MIN_RHO over at least TREND_MIN_LAYERS
#: depths (the ``depth_trend`` kind's rule for generated specs; its ``min_layers`` default).
TREND_MIN_LAYERS = 3


def propose(
    assertion: Assertion, tensors: Sequence[TensorView], margin: float
) -> tuple[dict[str, Proposal], list[str]]:
    """New values of ``assertion``'s baseline parameters from the tensors it selects, and notes
    on what cannot be derived (the kind's :meth:`~Assertion.proposals`: its ``propose`` under
    the shared guard). Every proposed value admits the observed values."""
    return assertion.proposals(tensors, margin)


__all__ = [
    "DEFAULT_MARGIN", "DIGITS", "KS_TOL_FLOOR", "MAX_BASELINE_KS", "MIN_NUMEL", "NONNEGATIVE", "SLACK",
    "TREND_MIN_LAYERS", "TREND_MIN_RHO", "WEIBULL_K_SLACK", "Proposal", "guard", "number_text", "propose",
    "round_bound", "widen",
]  # fmt: skip
