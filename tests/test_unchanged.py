"""The ``unchanged`` kind ("frozen layers did not move", "only the LoRA targets changed") on a
fine-tune pair through the real plugin (``--reference``), and its changed fraction against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import save, transformer_like

from pytest_weights import check
from pytest_weights.cache import StatCache
from pytest_weights.engine import reduce_tensor
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.spec import parse_spec
from pytest_weights.stats.change import ChangedFraction, ChangeResult

SPEC = """
assertions:
  - name: frozen-bottom
    kind: unchanged
    view: delta
    select: {include: ["embed.*", "model.layers.0.*", "model.layers.1.*"], exclude: ["*lora*"]}
  - name: only-lora-changed
    kind: unchanged
    view: delta
    select: {exclude: ["*lora*"]}
"""


def base_model() -> dict[str, torch.Tensor]:
    """A transformer with LoRA factors on q (A random, B zero, as PEFT initialises them)."""
    out = transformer_like(layers=4, width=32)
    g = torch.Generator().manual_seed(3)
    for i in range(4):
        out[f"model.layers.{i}.attn.q.lora_A.weight"] = torch.randn(4, 32, generator=g) * 0.01
        out[f"model.layers.{i}.attn.q.lora_B.weight"] = torch.zeros(32, 4)
    return out


def lora_finetuned(base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return {k: v + torch.randn(v.shape, generator=g) * 1e-3 if "lora" in k else v.clone() for k, v in base.items()}


@pytest.fixture
def pair(tmp_path):
    base = base_model()
    tuned = lora_finetuned(base)
    return base, tuned, save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", tuned)


def run(pytester, ckpt, reference, spec: str = SPEC):
    pytester.makefile(".weights.yaml", frozen=spec)
    return pytester.runpytest(
        "frozen.weights.yaml", "--checkpoint", str(ckpt), "--reference", str(reference), "-p", "no:cacheprovider"
    )


def test_lora_finetune_passes_and_a_moved_frozen_layer_fails_naming_it(pytester, pair, tmp_path):
    _, tuned, b, f = pair
    run(pytester, f, b).assert_outcomes(passed=2)
    moved = dict(tuned)
    moved["model.layers.1.mlp.up.weight"] = tuned["model.layers.1.mlp.up.weight"].clone()
    moved["model.layers.1.mlp.up.weight"][0, :3] += 1e-6
    result = run(pytester, save(tmp_path / "moved.safetensors", moved), b)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*found:    1 of * tensors changed",
            "*model.layers.1.mlp.up.weight*0.0732% changed (3 of 4096; max |ΔW| *)*≤ 0% changed*|ΔW| > 0*",
        ]
    )
    assert "mlp.down" not in result.stdout.str()


def test_identical_passes_and_nan_on_either_side_is_a_change(pytester, pair, tmp_path):
    base, _, b, _ = pair
    run(pytester, b, b).assert_outcomes(passed=2)
    with_nan = {k: v.clone() for k, v in base.items()}
    with_nan["model.layers.0.attn.k.weight"][2, 2] = math.nan
    nan_path = save(tmp_path / "nan.safetensors", with_nan)
    for ckpt, ref in ((nan_path, b), (b, nan_path)):  # NaN in the checkpoint, then in the reference
        result = run(pytester, ckpt, ref)
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(["*model.layers.0.attn.k.weight*(1 of 1024, 1 NaN/Inf; max |ΔW| 0)*"])


def test_changed_fraction_threshold_and_atol_match_numpy():
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.{i}.w": torch.randn(64, 48, generator=g) for i in range(3)}
    tuned = {k: v.clone() for k, v in base.items()}
    tuned["model.layers.1.w"] += torch.randn(64, 48, generator=g) * 1e-3 * (torch.rand(64, 48, generator=g) < 0.1)
    tuned["model.layers.2.w"][5, 5] = math.inf
    ref = StateDictCheckpoint(base, label="base")
    spec = parse_spec(
        "assertions:\n"
        "  - {name: strict, kind: unchanged, view: delta}\n"
        "  - {name: loose, kind: unchanged, view: delta, max_changed_fraction: 0.2, atol: 5.0e-4}\n",
        "u.weights.yaml",
    )
    strict, loose = check(StateDictCheckpoint(tuned, label="ft"), spec, device="cpu", reference=ref).results
    for atol, result in ((0.0, strict), (5e-4, loose)):
        for name in base:
            d = tuned[name].double().numpy() - base[name].double().numpy()
            want = float(np.mean((np.abs(d) > atol) | ~np.isfinite(d)))
            assert result.observed[name] == pytest.approx(want, abs=0), (atol, name)
    assert not strict.passed and [d.subject for d in strict.deviations] == ["model.layers.1.w", "model.layers.2.w"]
    assert loose.passed, loose.format()  # ≤ 20 % moved by more than 5e-4
    assert loose.observed["model.layers.2.w"] == 1 / 3072  # the Inf counts as a change whatever the tolerance


def test_on_the_weights_it_asks_for_view_delta():
    ckpt = StateDictCheckpoint({"w": torch.ones(8, 8)}, label="m")
    spec = parse_spec("assertions:\n  - {kind: unchanged}\n", "u.weights.yaml")
    (result,) = check(ckpt, spec, device="cpu", reference=ckpt).results
    assert not result.passed and "add 'view: delta'" in result.summary


def test_renamed_reference_is_matched(pair, tmp_path):
    _, tuned, _, f = pair
    ddp = save(tmp_path / "ddp.safetensors", {f"module.{k}": v for k, v in base_model().items()})
    report = check(f, parse_spec(SPEC, "frozen.weights.yaml"), device="cpu", reference=ddp)
    assert report.passed, str(report)
    assert report.results[1].checked == sum(1 for k, v in tuned.items() if v.is_floating_point() and "lora" not in k)


def test_invalid_parameters_are_spec_errors():
    spec = parse_spec("assertions:\n  - {kind: unchanged, view: delta, max_changed_fraction: 2}\n", "u.weights.yaml")
    assert spec.errors and "max_changed_fraction must be in [0, 1]" in str(spec.errors[0])


def test_changed_fraction_is_exact_across_slices_and_cached(tmp_path):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3001, generator=g) * (torch.rand(3001, generator=g) < 0.3)
    x[10], x[20] = math.nan, -math.inf
    stat = ChangedFraction(0.5)
    one = reduce_tensor(x, [stat], slice_elements=1 << 22)[stat]
    many = reduce_tensor(x, [stat], slice_elements=7)[stat]
    want = int(((x.abs() > 0.5) | ~torch.isfinite(x)).sum())
    assert one == many == ChangeResult(3001, want, 2, float(x[torch.isfinite(x)].abs().max()))
    cache = StatCache(tmp_path)
    cache.save("ck", {"x": {stat: one}})
    assert StatCache(tmp_path).load("ck", {"x": [stat]}) == {"x": {stat: one}}
