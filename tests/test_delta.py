"""Transformation weights ΔW = W − W_ref (paper A) and LoRA ΔW = (α/r)·B·A."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import save, transformer_like
from safetensors.torch import save_file

from pytest_weights import WeightsError, check, open_checkpoint
from pytest_weights.readers.derived import DeltaCheckpoint, LoraDelta
from pytest_weights.spec import parse_spec

FINETUNE_SPEC = """
defaults:
  select: {include: ["model.layers.*.weight"], exclude: ["*norm*"], min_ndim: 2}
assertions:
  - {name: delta-gaussian, kind: gaussian_ks, view: delta, tol: 0.02}
  - {name: delta-centred, kind: stat_range, stat: mean, view: delta, min: -0.001, max: 0.001}
  - {name: delta-std-grows, kind: depth_trend, stat: std, direction: grows, min_rho: 0.9, view: delta}
  - {name: widens, kind: reference_ratio, stat: std, min_ratio: 1.0}
"""


def finetuned(base: dict[str, torch.Tensor], scale: float = 0.002) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    out = {}
    for name, t in base.items():
        if t.is_floating_point() and ".layers." in name:
            depth = int(name.split(".layers.")[1].split(".")[0])
            out[name] = t + torch.randn(t.shape, generator=g) * scale * (1 + depth)
        else:
            out[name] = t.clone()
    return out


def test_finetune_delta_spec_passes_and_matches_numpy(tmp_path):
    base = transformer_like(layers=6, width=96)
    tuned = finetuned(base)
    b, f = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", tuned)
    report = check(f, parse_spec(FINETUNE_SPEC, "ft.weights.yaml"), device="cpu", reference=b)
    assert report.passed, str(report)
    means = report.results[1].observed
    for name, m in means.items():
        ref = (tuned[name].double() - base[name].double()).numpy()
        assert m == pytest.approx(ref.mean(), abs=1e-6 * ref.std())


def test_identical_models_have_a_degenerate_delta(tmp_path):
    base = transformer_like()
    b = save(tmp_path / "base.safetensors", base)
    report = check(b, parse_spec(FINETUNE_SPEC, "ft.weights.yaml"), device="cpu", reference=b)
    failed = {r.name for r in report.failures}
    assert {"delta-gaussian", "delta-std-grows"} <= failed  # ΔW = 0: D = 1, no trend


def test_delta_without_reference_is_a_clear_error(tmp_path):
    b = save(tmp_path / "base.safetensors", transformer_like())
    with pytest.raises(WeightsError, match="'view: delta' needs a reference checkpoint"):
        check(b, parse_spec(FINETUNE_SPEC, "ft.weights.yaml"), device="cpu")


def test_a_shape_mismatch_drops_that_tensor_with_a_note_and_the_rest_of_delta_works(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref = {"w": torch.randn(4, 5, generator=g), "v": torch.randn(8, 8, generator=g)}
    tuned = {"w": torch.randn(4, 4, generator=g), "v": ref["v"] + 1.0}
    a, b = save(tmp_path / "a.safetensors", tuned), save(tmp_path / "b.safetensors", ref)
    delta = DeltaCheckpoint(open_checkpoint(a), open_checkpoint(b))
    assert [i.name for i in delta.tensors()] == ["v"] and delta.unmatched == []
    assert delta.notes() == ("w left out of ΔW: shape [4, 4] here, [4, 5] in the reference",)
    np.testing.assert_array_equal(delta.read("v").numpy(), (tuned["v"] - ref["v"]).numpy())
    spec = parse_spec("assertions:\n  - {kind: stat_range, stat: mean, view: delta, min: 0.99, max: 1.01}\n", "d.yaml")
    report = check(a, spec, device="cpu", reference=b)
    assert report.passed and report.results[0].checked == 1


def test_an_int_buffer_in_both_is_non_float_not_missing_from_the_reference(tmp_path):
    base = transformer_like(layers=2)
    b, f = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", finetuned(base))
    delta = DeltaCheckpoint(open_checkpoint(f), open_checkpoint(b))
    assert delta.unmatched == [] and delta.notes() == ()
    ids = next(i for i in delta.tensors() if i.name == "position_ids")
    assert ids.dtype == torch.int64 and not ids.is_float
    assert int(delta.read("position_ids").abs().sum()) == 0
    spec = parse_spec("assertions:\n  - {kind: stat_range, stat: std, view: delta, min: 0}\n", "d.weights.yaml")
    (result,) = check(f, spec, device="cpu", reference=b).results
    assert result.passed
    assert result.notes == ("1 non-float tensor(s) left out of float statistics: position_ids (int64)",)


def test_a_float_tensor_that_became_int_is_left_out_with_a_note(tmp_path):
    a = save(tmp_path / "a.safetensors", {"w": torch.ones(3, 3), "x": torch.zeros(2)})
    b = save(tmp_path / "b.safetensors", {"w": torch.ones(3, 3, dtype=torch.int32), "x": torch.zeros(2)})
    delta = DeltaCheckpoint(open_checkpoint(a), open_checkpoint(b))
    assert [i.name for i in delta.tensors()] == ["x"]
    assert delta.notes() == ("w left out of ΔW: float32 here, int32 in the reference",)


@pytest.mark.parametrize("side", ["checkpoint", "reference"])
def test_nan_on_either_side_fails_value_reading_kinds_on_delta(tmp_path, side):
    """The NaN policy covers ΔW: absmax (which ignores NaN when computed) fails the tensor, naming the count."""
    base = transformer_like(layers=2)
    tuned = finetuned(base)
    broken = base if side == "reference" else tuned
    broken["model.layers.1.attn.v.weight"] = broken["model.layers.1.attn.v.weight"].clone()
    broken["model.layers.1.attn.v.weight"][3, 4] = float("nan")
    b, f = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", tuned)
    spec = parse_spec(
        "assertions:\n  - {kind: stat_range, stat: absmax, view: delta, max: 10, select: {min_ndim: 2}}\n", "d.yaml"
    )
    (result,) = check(f, spec, device="cpu", reference=b).results
    assert not result.passed
    assert [(d.subject, d.observed) for d in result.deviations] == [
        ("model.layers.1.attn.v.weight", "1 NaN, 0 Inf of 4096 values")
    ]


def test_a_ddp_prefixed_reference_is_matched_by_name_and_said_so(tmp_path):
    base = transformer_like(layers=2)
    tuned = finetuned(base)
    b = save(tmp_path / "base.safetensors", {f"module.{k}": v for k, v in base.items()})
    f = save(tmp_path / "ft.safetensors", tuned)
    delta = DeltaCheckpoint(open_checkpoint(f), open_checkpoint(b))
    assert delta.unmatched == [] and len(delta.tensors()) == len(base)
    assert delta.notes() == (
        f"ΔW names: matched {len(base)} tensors after stripping 'module.' from the reference (shapes agree)",
    )
    name = "model.layers.1.mlp.up.weight"
    want = tuned[name].double().numpy() - base[name].double().numpy()
    np.testing.assert_allclose(delta.read(name).double().numpy(), want, rtol=0, atol=1e-9)
    report = check(f, parse_spec(FINETUNE_SPEC, "ft.weights.yaml"), device="cpu", reference=b)
    assert report.results[1].passed  # delta-centred: means of ΔW, matched through the rename
    only = DeltaCheckpoint(
        open_checkpoint(f), open_checkpoint(save(tmp_path / "one.safetensors", {"embed.weight": base["embed.weight"]}))
    )
    assert only.notes() == (
        f"{len(base) - 1} tensor(s) not in the reference left out of ΔW: position_ids, model.layers.0.attn.k.bias, "
        "model.layers.0.attn.k.weight, model.layers.0.attn.o.bias, model.layers.0.attn.o.weight "
        f"and {len(base) - 6} more",
    )


def test_lora_adapter_delta_is_scaled_b_times_a(tmp_path):
    g = torch.Generator().manual_seed(0)
    r, alpha = 8, 16
    tensors = {}
    for i in range(4):
        p = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        tensors[f"{p}.lora_A.weight"] = torch.randn(r, 64, generator=g) * 0.01
        tensors[f"{p}.lora_B.weight"] = torch.randn(96, r, generator=g) * 0.01
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha}))
    delta = LoraDelta(open_checkpoint(adapter))
    names = [i.name for i in delta.tensors()]
    assert names == [f"base_model.model.model.layers.{i}.self_attn.q_proj.weight" for i in range(4)]
    want = (alpha / r) * (
        tensors[names[0].replace(".weight", ".lora_B.weight")].double().numpy()
        @ tensors[names[0].replace(".weight", ".lora_A.weight")].double().numpy()
    )
    np.testing.assert_allclose(delta.read(names[0]).double().numpy(), want, rtol=1e-5, atol=1e-9)
    spec = parse_spec("assertions:\n  - {kind: stat_range, stat: std, view: delta, min: 0.0}\n", "l.weights.yaml")
    report = check(adapter, spec, device="cpu")
    assert report.passed
    assert report.results[0].observed[names[0]] == pytest.approx(want.std(), rel=1e-5)


def test_plugin_reference_option_runs_delta_assertions(pytester, tmp_path):
    base = transformer_like(layers=6, width=96)
    b, f = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", finetuned(base))
    pytester.makefile(".weights.yaml", ft=FINETUNE_SPEC)
    result = pytester.runpytest(
        "ft.weights.yaml", "--checkpoint", str(f), "--reference", str(b), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=4)
    without = pytester.runpytest("ft.weights.yaml", "--checkpoint", str(f), "-p", "no:cacheprovider")
    without.assert_outcomes(failed=4)
    without.stdout.fnmatch_lines(["*needs a reference checkpoint*", "*pass --reference*"])


def test_bundled_finetune_delta_spec(tmp_path):
    base = transformer_like(layers=6, width=96)
    b, f = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", finetuned(base))
    assert check(f, "finetune-delta", device="cpu", reference=b).passed
    shrunk = {k: v * 0.9 if k.endswith("attn.q.weight") else v for k, v in finetuned(base).items()}
    report = check(save(tmp_path / "shrunk.safetensors", shrunk), "finetune-delta", device="cpu", reference=b)
    assert "widens" in {r.name for r in report.failures}


def test_delta_results_carry_the_notes_and_reference_kinds_follow_renames(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.{i}.w": torch.randn(64, 64, generator=g) for i in range(3)}
    tuned = {k: v * 1.1 for k, v in base.items()}
    tuned["model.layers.0.w"] = torch.randn(64, 32, generator=g)
    b = save(tmp_path / "base.safetensors", {f"module.{k}": v for k, v in base.items()})
    f = save(tmp_path / "ft.safetensors", tuned)
    spec = parse_spec(
        "assertions:\n"
        "  - {kind: stat_range, stat: std, view: delta, min: 0}\n"
        "  - {kind: reference_ratio, stat: std, min_ratio: 1.05, max_ratio: 1.15,\n"
        "     select: {include: ['*layers.[12]*']}}\n",
        "d.weights.yaml",
    )
    delta, ratio = check(f, spec, device="cpu", reference=b).results
    assert delta.passed and delta.notes == (
        "ΔW names: matched 3 tensors after stripping 'module.' from the reference (1 of them differs in shape)",
        "model.layers.0.w left out of ΔW: shape [64, 32] here, [64, 64] in the reference",
    )
    assert ratio.passed and ratio.observed == pytest.approx({"model.layers.1.w": 1.1, "model.layers.2.w": 1.1})
