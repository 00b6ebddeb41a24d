"""Every failing result carries its observed numbers in the JSON record (not only in the table)."""

from __future__ import annotations

import math

import torch
from conftest import transformer_like

from pytest_weights import check
from pytest_weights.readers.memory import StateDictCheckpoint


def test_failing_finite_and_sibling_results_carry_observed_values():
    t = transformer_like()
    t["model.layers.1.attn.o.weight"] = t["model.layers.1.attn.o.weight"] * 100
    t["model.layers.2.attn.q.bias"][3] = math.nan
    report = check(StateDictCheckpoint(t), "default", device="cpu")
    records = {r.name: r.to_dict() for r in report.results}
    finite = records["finite"]
    assert not finite["passed"]
    assert finite["observed"]["model.layers.2.attn.q.bias"] == {"nan": 1, "inf": 0, "numel": 64}
    assert finite["observed"]["model.layers.0.attn.q.weight"]["nan"] == 0
    siblings = records["consistent-with-siblings"]
    assert not siblings["passed"]
    o = siblings["observed"]
    expected = float(t["model.layers.1.attn.o.weight"].double().std(unbiased=False))
    assert math.isclose(o["model.layers.1.attn.o.weight"], expected, rel_tol=1e-6)
    assert len(o) == sum(1 for k, v in t.items() if v.dim() >= 2 and v.numel() >= 4096 and v.is_floating_point())
    assert all(isinstance(v, float) for v in o.values())
    assert torch.isfinite(torch.tensor(list(o.values()))).all()
