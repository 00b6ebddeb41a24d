"""Assertion kinds. Every module in this package registers its kinds on import.

To add a kind, add one module here (or anywhere: a project's module or ``conftest.py``) with a
``@register``-ed dataclass (and its tests); see :mod:`.base` for what a kind says about itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Assertion, Deviation, Outcome, TensorView, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "groups", "series"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "Assertion", "Deviation", "Outcome", "TensorView", "register"]
