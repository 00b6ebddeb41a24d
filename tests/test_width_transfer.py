"""Cross-width transfer (paper B): real tiny MLPs trained at two widths with one recipe."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import save
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_weights import check
from pytest_weights.engine import reduce_tensor
from pytest_weights.spec import parse_spec
from pytest_weights.stats.transfer import RowColNorms, StdEntryHistogram, hist_distances, sample_distances

# Entries: 1k–16k values per matrix: trained pairs measured KS 0.036–0.041, uniform noise
# 0.077–0.082. Row/column norms: only 32 rows in the narrow
# model, where the two-sample KS 5% critical value (n=32, m=128) is 1.36·√(160/4096) = 0.27.
SPEC = """
defaults:
  select: {include: ["layers.1.weight", "layers.2.weight"]}
assertions:
  - {name: entries-follow-narrow, kind: width_transfer, compare: [entries], max_ks: 0.06}
  - {name: norms-follow-narrow, kind: width_transfer, compare: [row_norms, col_norms], max_ks: 0.3}
"""


def train(width: int, steps: int = 150, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4-layer MLP, N(0, 1/fan_in) init, AdamW with lr ∝ 1/fan_in (a width-consistent recipe)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(1234)
    teacher = torch.randn(16, 4, generator=g)
    dims = [16, width, width, width, 4]
    layers = [torch.nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(dims)]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
    opt = torch.optim.AdamW([{"params": [m.weight], "lr": 0.05 / m.in_features} for m in layers], weight_decay=0.01)
    for _ in range(steps):
        x = torch.randn(64, 16, generator=g)
        h = x
        for layer in layers[:-1]:
            h = torch.relu(layer(h))
        loss = ((layers[-1](h) - torch.tanh(x @ teacher)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {f"layers.{i}.weight": m.weight.detach().clone() for i, m in enumerate(layers)}


def grow(narrow: dict[str, torch.Tensor], factor: int) -> dict[str, torch.Tensor]:
    """Net2WiderNet-style growth: each hidden unit copied ``factor`` times, its outgoing
    weights divided by ``factor`` (the function is preserved exactly)."""
    out = {}
    n = len(narrow)
    for i in range(n):
        w = narrow[f"layers.{i}.weight"]
        if i > 0:
            w = w.repeat_interleave(factor, dim=1) / factor
        if i < n - 1:
            w = w.repeat_interleave(factor, dim=0)
        out[f"layers.{i}.weight"] = w.contiguous()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("widths")
    narrow, wide = train(32), train(128)
    return {
        "narrow": save(d / "narrow.safetensors", narrow),
        "wide": save(d / "wide.safetensors", wide),
        "grown": save(d / "grown.safetensors", grow(narrow, 4)),
        "uniform": save(d / "uniform.safetensors", {k: torch.rand_like(v) - 0.5 for k, v in wide.items()}),
        "tensors": (narrow, wide),
    }


def test_trained_wide_model_follows_the_narrow_one(trained):
    report = check(trained["wide"], parse_spec(SPEC, "w.weights.yaml"), device="cpu", reference=trained["narrow"])
    assert report.passed, str(report)
    narrow, wide = trained["tensors"]
    for key, seen in report.results[0].observed.items():
        name, quantity = key.split("|")
        if quantity != "entries":
            continue
        x, y = wide[name].numpy().ravel(), narrow[seen["reference"]].numpy().ravel()
        x, y = x / np.sqrt((x**2).mean()), y / np.sqrt((y**2).mean())
        assert seen["ks"] == pytest.approx(stats.ks_2samp(x, y).statistic, abs=0.01)  # grid error ≤ a bin's mass
        assert seen["w1"] == pytest.approx(stats.wasserstein_distance(x, y), abs=0.005)


def test_grown_model_follows_exactly_and_uniform_noise_does_not(trained):
    spec = parse_spec(SPEC, "w.weights.yaml")
    grown = check(trained["grown"], spec, device="cpu", reference=trained["narrow"])
    assert grown.passed
    entries = [v["ks"] for v in grown.results[0].observed.values()]
    assert max(entries) < 1e-3  # the same values, each repeated 16 times
    bad = check(trained["uniform"], spec, device="cpu", reference=trained["narrow"])
    assert [r.name for r in bad.failures] == ["entries-follow-narrow"]


def test_matching_by_relative_depth(tmp_path):
    g = torch.Generator().manual_seed(0)
    shallow = {f"blocks.{i}.w": torch.randn(32, 32, generator=g) * (1 + i) for i in range(3)}
    deep = {f"blocks.{i}.w": torch.randn(64, 64, generator=g) * (1 + i) for i in range(5)}
    spec = parse_spec("assertions:\n  - {kind: width_transfer, compare: [entries]}\n", "d.weights.yaml")
    report = check(save(tmp_path / "d.safetensors", deep), spec, reference=save(tmp_path / "s.safetensors", shallow))
    pairs = {k.split("|")[0]: v["reference"] for k, v in report.results[0].observed.items()}
    assert (
        pairs
        == {
            "blocks.0.w": "blocks.0.w",
            "blocks.1.w": "blocks.0.w",
            "blocks.2.w": "blocks.1.w",
            "blocks.3.w": "blocks.1.w",
            "blocks.4.w": "blocks.2.w",
        }
        or pairs["blocks.4.w"] == "blocks.2.w"
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(2, 60), st.integers(0, 10_000))
def test_sample_distances_match_scipy(n, m, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), rng.standard_normal(m) * 1.3 + 0.2
    ks, w1 = sample_distances(x, y)
    assert ks == pytest.approx(stats.ks_2samp(x, y).statistic, abs=1e-12)
    assert w1 == pytest.approx(stats.wasserstein_distance(x, y), abs=1e-12)


def test_norm_profile_and_histogram_against_numpy():
    w = torch.randn(50, 40, generator=torch.Generator().manual_seed(3)) * 0.1
    v = reduce_tensor(w, [RowColNorms("rms"), StdEntryHistogram("rms")], chunk_elements=200)
    z = w.double().numpy()
    z = z / np.sqrt((z**2).mean())
    np.testing.assert_allclose(v[RowColNorms("rms")].rows, np.sqrt((z**2).mean(1)), rtol=1e-6)
    np.testing.assert_allclose(v[RowColNorms("rms")].cols, np.sqrt((z**2).mean(0)), rtol=1e-6)
    h = v[StdEntryHistogram("rms")]
    assert sum(h.counts) == 2000
    assert hist_distances(h, h) == (0.0, 0.0)


def test_bundled_width_transfer_spec(trained):
    assert check(trained["grown"], "width-transfer", device="cpu", reference=trained["narrow"]).passed
    bad = check(trained["uniform"], "width-transfer", device="cpu", reference=trained["narrow"])
    assert "entries-follow-reference" in {r.name for r in bad.failures}
