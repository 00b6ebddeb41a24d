"""Assertion kinds on synthetic tensors, checked against independent references."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import save, transformer_like
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_weights import check
from pytest_weights.assertions import REGISTRY
from pytest_weights.assertions.groups import ranks, slope, spearman
from pytest_weights.spec import parse_spec


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=3, max_size=30), st.integers(0, 1000))
def test_spearman_and_ranks_match_scipy(values, seed):
    y = np.asarray(values, float)
    x = np.random.default_rng(seed).permutation(len(y)).astype(float)
    assert ranks(y) == pytest.approx(stats.rankdata(y))
    ref = stats.spearmanr(x, y).statistic
    got = spearman(x, y)
    assert (np.isnan(ref) and np.isnan(got)) or got == pytest.approx(ref, abs=1e-12)
    assert slope(x, y) == pytest.approx(stats.linregress(x, y).slope, abs=1e-9)


def run(tmp_path, tensors, text):
    return check(save(tmp_path / "c.safetensors", tensors), parse_spec(text, "t.weights.yaml"), device="cpu")


def test_stat_range_reports_observed_against_numpy(tmp_path):
    t = transformer_like()
    r = run(
        tmp_path,
        t,
        "assertions:\n  - {kind: stat_range, stat: std, max: 0.0199, select: {include: ['*.attn.q.weight']}}\n",
    )
    res = r.results[0]
    for name, std in res.observed.items():
        assert std == pytest.approx(t[name].double().std(unbiased=False).item(), rel=1e-6)
    expected_fail = {n for n, s in res.observed.items() if s > 0.0199}
    assert {d.subject for d in res.deviations} == expected_fail
    assert res.passed == (not expected_fail)


def test_sibling_consistency_names_the_rescaled_layer(tmp_path):
    t = transformer_like(layers=8)
    t["model.layers.5.mlp.up.weight"] *= 6
    r = run(tmp_path, t, "assertions:\n  - {kind: sibling_consistency, select: {min_ndim: 2}}\n").results[0]
    assert not r.passed
    assert [d.subject for d in r.deviations] == ["model.layers.5.mlp.up.weight"]
    ratio = float(re.search(r"×([0-9.]+)", r.deviations[0].observed).group(1))
    assert ratio == pytest.approx(6, rel=0.05)


def test_sibling_consistency_skips_when_nothing_to_compare(tmp_path):
    t = {"a.weight": torch.randn(10, 10), "b.weight": torch.randn(10, 10)}
    r = run(tmp_path, t, "assertions:\n  - {kind: sibling_consistency}\n").results[0]
    assert r.skipped and r.passed


def test_depth_trend_flat_and_not_enough_layers(tmp_path):
    t = transformer_like(layers=6)
    r = run(
        tmp_path,
        t,
        "assertions:\n  - {kind: depth_trend, stat: std, direction: flat, max_abs_rho: 0.95,"
        " select: {include: ['*.attn.*.weight']}}\n",
    ).results[0]
    assert r.passed, r.format()
    t2 = transformer_like(layers=2)
    r2 = run(tmp_path, t2, "assertions:\n  - {kind: depth_trend, stat: std, direction: grows}\n").results[0]
    assert not r2.passed and "no role has 3 or more layers" in r2.summary


def test_every_registered_kind_documents_itself():
    for kind, cls in REGISTRY.items():
        assert cls.__doc__ and cls.kind == kind


def test_check_api_without_pytest_reports_failures(tmp_path):
    t = transformer_like()
    t["model.layers.0.attn.q.weight"][0, 0] = float("nan")
    report = check(save(tmp_path / "x.safetensors", t))
    assert not report.passed
    # finite counts it; every assertion reading values fails it too (its statistics are undefined)
    assert [r.name for r in report.failures] == [
        "finite", "not-constant", "scale-vs-model", "not-flat", "consistent-with-siblings"
    ]  # fmt: skip
    for r in report.failures:
        assert [d.subject for d in r.deviations] == ["model.layers.0.attn.q.weight"]
        assert "1 NaN, 0 Inf of 4096" in r.deviations[0].observed


def test_check_in_memory_module_and_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(torch.nn.Linear(96, 96) for _ in range(4))
    for layer in model.layers:
        torch.nn.init.normal_(layer.weight, std=0.02)
    assert check(model, device="cpu").passed
    torch.nn.init.uniform_(model.layers[2].weight, -0.03, 0.03)  # left at a uniform init
    report = check(model.state_dict(), device="cpu")
    assert [r.name for r in report.failures] == ["not-flat"]
    assert report.failures[0].deviations[0].subject == "layers.2.weight"


def test_sibling_consistency_with_an_all_nan_role(tmp_path):
    t = {f"model.layers.{i}.w": torch.full((8, 8), float("nan")) for i in range(3)}
    r = run(tmp_path, t, "assertions:\n  - {kind: sibling_consistency}\n").results[0]
    assert not r.passed and len(r.deviations) == 3
