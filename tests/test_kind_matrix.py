"""Every statistic × kind combination the loader accepts evaluates without an exception, on
healthy and on degenerate tensors (constant, one row, one value, NaN, Inf), per checkpoint and
over a run: an undefined statistic is a clear failure, never a crash."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pytest_weights.assertions import REGISTRY
from pytest_weights.assertions.base import ParamError, build, params
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.runner import Checker
from pytest_weights.selection import Selection
from pytest_weights.spec import AssertionSpec
from pytest_weights.stats.scalars import SCALARS

#: What each kind needs besides ``stat`` to be accepted.
REQUIRED = {"stat_range": {"min": 0.0}, "depth_trend": {"direction": "grows"}}


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {f"model.layers.{i}.mlp.weight": torch.randn(32, 48, generator=g) * 0.02 for i in range(3)}
    out["model.layers.0.const.weight"] = torch.full((16, 16), 0.5)
    out["model.layers.1.zero.weight"] = torch.zeros(8, 8)
    out["model.layers.0.row.weight"] = torch.randn(1, 64, generator=g)
    out["model.layers.1.one.weight"] = torch.ones(1, 1)
    nan = torch.randn(16, 16, generator=g)
    nan[3, 4] = math.nan
    out["model.layers.2.nan.weight"] = nan
    inf = torch.randn(16, 16, generator=g)
    inf[0, 0] = math.inf
    out["model.layers.0.inf.weight"] = inf
    return out


def accepted() -> list[tuple[str, str]]:
    """(kind, stat) pairs the loader accepts (kinds without ``stat`` once, as (kind, ""))."""
    pairs = []
    for kind, cls in sorted(REGISTRY.items()):
        if "stat" not in {f.name for f in params(cls)}:
            pairs.append((kind, ""))
            continue
        for stat in SCALARS:
            try:
                build(cls, {"stat": stat, **REQUIRED.get(kind, {})})
            except ParamError:
                continue
            pairs.append((kind, stat))
    return pairs


def entry(kind: str, stat: str) -> AssertionSpec:
    raw = {**REQUIRED.get(kind, {}), **({"stat": stat} if stat else {})}
    missing = [
        f.name
        for f in params(REGISTRY[kind])
        if f.name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert not missing, f"add defaults for {kind} to REQUIRED: {missing}"
    assertion = build(REGISTRY[kind], raw)
    return AssertionSpec(f"{kind}-{stat}", assertion, Selection(include=("model.*",)), "matrix.weights.yaml", 1)


@pytest.mark.parametrize(("kind", "stat"), accepted())
def test_every_accepted_combination_evaluates_without_an_exception(kind, stat):
    spec = entry(kind, stat)
    checker = Checker("cpu", reference=StateDictCheckpoint(tensors(1), label="ref"))
    if spec.assertion.scope == "run":
        run = [(step, StateDictCheckpoint(tensors(step), label=f"step {step}")) for step in (0, 10, 20)]
        result = checker.evaluate_run(run, spec, "run")
    else:
        result = checker.evaluate(StateDictCheckpoint(tensors(), label="m"), spec)
    assert result.summary
    # the NaN and Inf tensors are undefined for every value-reading kind: a failure naming them
    if spec.assertion.reads_values and kind != "force_share":
        assert not result.passed
        named = {d.subject for d in result.deviations}
        assert {"model.layers.2.nan.weight", "model.layers.0.inf.weight"} <= named, result.summary


def test_signed_statistics_are_refused_where_ratios_are_taken():
    with pytest.raises(ParamError, match="can be negative"):
        build(REGISTRY["sibling_consistency"], {"stat": "lag1_corr"})
