"""Spec authoring: a baseline spec from a known-good checkpoint (``init``), and baseline
numbers rewritten in place from a new checkpoint (``regen``).

Split by concern: :mod:`.presets` (architecture families recognised from tensor names),
:mod:`.policy` (how observed values become bounds: each kind's ``propose`` under the shared
guard that no bound makes its check unable to fail), :mod:`.init` (profile a checkpoint and
write a commented spec), :mod:`.yamledit` (numbers replaced in the YAML text where they
stand: comments and layout kept) and :mod:`.regen` (which numbers to rewrite).

Both derive every number with the same rules, so ``regen`` on the checkpoint a spec was
generated from changes nothing.
"""

from __future__ import annotations

from .init import SCHEMA_REF, init_spec
from .policy import (
    DEFAULT_MARGIN,
    DIGITS,
    KS_TOL_FLOOR,
    MAX_BASELINE_KS,
    MIN_NUMEL,
    NONNEGATIVE,
    SLACK,
    TREND_MIN_LAYERS,
    TREND_MIN_RHO,
    WEIBULL_K_SLACK,
    Proposal,
    guard,
    number_text,
    propose,
    widen,
)
from .presets import EMBEDDING_GLOBS, NORM_GLOBS, PRESETS, Preset, detect_preset
from .regen import RegenResult, regen_spec, spec_margin
from .yamledit import Change

__all__ = [
    "DEFAULT_MARGIN", "DIGITS", "EMBEDDING_GLOBS", "KS_TOL_FLOOR", "MAX_BASELINE_KS", "MIN_NUMEL", "NONNEGATIVE",
    "NORM_GLOBS", "PRESETS", "SCHEMA_REF", "SLACK", "TREND_MIN_LAYERS", "TREND_MIN_RHO", "WEIBULL_K_SLACK", "Change",
    "Preset", "Proposal", "RegenResult", "detect_preset", "guard", "init_spec", "number_text", "propose",
    "regen_spec", "spec_margin", "widen",
]  # fmt: skip
