"""WeightsGate: gating real (tiny) AdamW training runs on the CPU, in memory and from files."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pytest_weights import SpecError
from pytest_weights.gate import WeightsGate, WeightsGateError, WeightsGateWarning
from pytest_weights.readers.safetensors_file import SafetensorsFile
from pytest_weights.spec import parse_spec

WIDTH, DEPTH = 64, 4  # 64×64 = 4096 values: the default spec's matrices


class Tiny(nn.Module):
    """A residual MLP: ``layers.N.weight`` are siblings (same role at depths 0..3)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return x


def train(
    gate: WeightsGate | None,
    steps: int,
    fault_at: int | None = None,
    fault: str = "scale",
    save_dir: Path | None = None,
) -> tuple[Tiny, list[int]]:
    """Train with AdamW (one param group per layer); check every step; return the steps checked."""
    model = Tiny()
    groups = [{"params": list(layer.parameters()), "lr": 1e-3} for layer in model.layers]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, WIDTH, generator=g)
    y = torch.roll(x, 1, dims=1)
    checked = []
    for step in range(1, steps + 1):
        # the fault: layer 1's lr multiplier misconfigured ×300 for one step, or layer 2 scaled ×100
        opt.param_groups[1]["lr"] = 0.3 if (fault == "lr_spike" and step == fault_at) else 1e-3
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if fault == "scale" and step == fault_at:
            with torch.no_grad():
                model.layers[2].weight.mul_(100)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in model.state_dict().items()}, str(save_dir / f"step_{step}.safetensors")
            )
        if gate is not None:
            checked.append(step)
            gate.check(model, step=step)
    return model, checked


RUN_SPEC = """
version: 1
defaults:
  select: {include: ["layers.*.weight"]}
assertions:
  - name: finite
    kind: finite
  - name: std-drift
    kind: drift
    stat: std
    max_rel: 0.5
  - name: std-saturates
    kind: saturates
    stat: std
    last: 3
    tol: 1.0e-9
"""


def test_healthy_adamw_run_passes_every_check(caplog):
    gate = WeightsGate("default", device="cpu")
    with caplog.at_level(logging.INFO, logger="pytest_weights.gate"):
        train(gate, steps=8)
    assert gate.steps == tuple(range(1, 9))
    assert gate.last_report is not None and gate.last_report.passed
    assert gate.failed_step is None
    assert "weights gate passed at step 8" in caplog.text


def test_layer_scaled_x100_stops_the_run_naming_step_and_tensor(caplog):
    gate = WeightsGate("default", device="cpu")
    with caplog.at_level(logging.INFO, logger="pytest_weights.gate"), pytest.raises(WeightsGateError) as exc:
        train(gate, steps=12, fault_at=6)
    err = exc.value
    assert err.step == 6 and gate.failed_step == 6
    assert [r.name for r in err.report.failures] == ["scale-vs-model", "consistent-with-siblings"]
    assert {d.subject for r in err.report.failures for d in r.deviations} == {"layers.2.weight"}
    headline = str(err).splitlines()[0]
    assert headline.startswith("weights gate failed at step 6:")
    assert "consistent-with-siblings (layers.2.weight)" in headline
    # the report is logged at ERROR with its table
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "at step 6" in errors[0].getMessage() and "layers.2.weight  std=" in errors[0].getMessage()
    assert "on step 6" in str(err)  # in-memory checkpoints are labelled with their step


def test_lr_spike_on_one_layer_is_caught_at_the_spike():
    gate = WeightsGate("default", device="cpu")
    with pytest.raises(WeightsGateError) as exc:
        train(gate, steps=10, fault_at=5, fault="lr_spike")
    report = exc.value.report
    assert exc.value.step == 5
    failed = {r.name: r for r in report.failures}
    assert {"scale-vs-model", "not-flat", "consistent-with-siblings"} <= set(failed)
    for r in failed.values():  # only the spiked layer deviates
        assert [d.subject for d in r.deviations] == ["layers.1.weight"]


def test_on_failure_warn_and_return(caplog):
    for mode in ("warn", "return"):
        gate = WeightsGate("default", device="cpu", on_failure=mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(gate, steps=7, fault_at=6)  # not raised: training goes on to the end
        report = gate.last_report
        assert report is not None and not report.passed and gate.failed_step == 7
        warned = [w for w in caught if issubclass(w.category, WeightsGateWarning)]
        assert len(warned) == (2 if mode == "warn" else 0)  # steps 6 and 7
        if warned:
            assert "at step 6" in str(warned[0].message) and "layers.2.weight" in str(warned[0].message)


def test_invalid_spec_and_option_fail_before_training():
    with pytest.raises(SpecError, match="unknown assertion kind"):
        WeightsGate(parse_spec("assertions: [{kind: finit}]", "bad.weights.yaml"))
    with pytest.raises(ValueError, match="on_failure"):
        WeightsGate(on_failure="stop")  # type: ignore[arg-type]


def test_run_scope_assertions_judge_the_run_so_far_and_stop_a_drifting_layer():
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu")
    model = Tiny()
    first = gate.check(model, step=0)
    by_name = {r.name: r for r in first.results}
    assert by_name["std-drift"].skipped and "1 checkpoint(s) so far" in by_name["std-drift"].summary
    assert by_name["std-saturates"].skipped and "end of the run" in by_name["std-saturates"].summary
    # a healthy AdamW run: std drifts by a few % — the drift assertion is judged and passes
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(128, WIDTH)
    for step in range(1, 5):
        loss = (model(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        report = gate.check(model, step=step)
        drift = next(r for r in report.results if r.name == "std-drift")
        assert drift.passed and not drift.skipped and drift.checked == DEPTH
        assert drift.checkpoint == f"run (steps 0–{step})"
    # layer 3 is rescaled ×3 in place: the gate compares with what it remembered at step 0
    with torch.no_grad():
        model.layers[3].weight.mul_(3)
    with pytest.raises(WeightsGateError) as exc:
        gate.check(model, step=5)
    drift = next(r for r in exc.value.report.failures)
    assert drift.name == "std-drift"
    assert drift.deviations[0].subject == "layers.3.weight"
    assert "at step 5" in drift.deviations[0].observed
    assert str(exc.value).startswith("weights gate failed at step 5: 1 of 3 assertion(s) failed: std-drift")


def test_the_gate_keeps_statistics_not_weights():
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu", on_failure="return")
    model = Tiny()
    std0 = model.layers[0].weight.std(unbiased=False).item()
    gate.check(model, step=0)
    with torch.no_grad():  # in place: a gate holding the tensors would see the new values at step 0 too
        model.layers[0].weight.mul_(2)
    report = gate.check(model, step=1)
    drift = next(r for r in report.results if r.name == "std-drift")
    values = drift.observed["layers.0.weight"]["values"]
    assert drift.observed["layers.0.weight"]["steps"] == [0, 1]
    assert values[0] == pytest.approx(std0, rel=1e-6) and values[1] == pytest.approx(2 * std0, rel=1e-6)
    assert not drift.passed
    # what is remembered: small statistic values per (step, assertion, tensor), no tensors
    for snaps in gate._history.values():
        for snap in snaps.values():
            for stats in snap.values.values():
                assert stats and not any(isinstance(v, torch.Tensor) for v in stats.values())
                assert not any(isinstance(f, torch.Tensor) for v in stats.values() for f in v)


def test_finish_judges_the_deferred_end_of_run_kinds():
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu")
    _, checked = train(gate, steps=5)
    assert checked == [1, 2, 3, 4, 5]  # std keeps moving: 'saturates' would have failed every check
    with pytest.raises(WeightsGateError) as exc:
        gate.finish()
    (fail,) = exc.value.report.failures
    assert fail.name == "std-saturates" and fail.checked == DEPTH
    assert exc.value.step == 5 and fail.checkpoint == "run (steps 1–5)"
    # deferral by assertion name too; final=True judges it in check()
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu", on_failure="return", defer=())
    model = Tiny()
    gate.check(model, step=0)
    report = gate.check(model, step=1)
    assert next(r for r in report.results if r.name == "std-saturates").passed  # unchanged weights


def test_steps_default_to_counting_and_rechecking_a_step_replaces_it():
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu", on_failure="return")
    model = Tiny()
    gate.check(model)
    gate.check(model)
    gate.check(model, step=10)
    gate.check(model, step=10)
    gate.check(model)
    assert gate.steps == (0, 1, 10, 11)
    gate.reset()
    assert gate.steps == ()


def test_check_run_dir_latest_only_and_reads_only_new_checkpoints(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train(None, steps=4, save_dir=run_dir)
    reads: list[str] = []
    original = SafetensorsFile.read

    def counting(self, name):
        reads.append(f"{self.path.name}:{name}")
        return original(self, name)

    monkeypatch.setattr(SafetensorsFile, "read", counting)
    gate = WeightsGate(parse_spec(RUN_SPEC, "run.weights.yaml"), device="cpu")
    report = gate.check_run_dir(run_dir)
    assert report.passed
    finite = [r for r in report.results if r.name == "finite"]
    assert [r.checkpoint for r in finite] == ["step_4.safetensors"]  # latest only
    drift = next(r for r in report.results if r.name == "std-drift")
    assert drift.observed["layers.0.weight"]["steps"] == [1, 2, 3, 4]
    assert {r.split(":")[0] for r in reads} == {f"step_{k}.safetensors" for k in range(1, 5)}
    assert len(gate.check_run_dir(run_dir, latest_only=False).results) == 4 + 2
    # a new, broken checkpoint: only it is read; the gate names its step and tensor
    reads.clear()
    state = {k: v.clone() for k, v in Tiny().state_dict().items()}
    state["layers.1.weight"][0, 0] = math.nan
    save_file(state, str(run_dir / "step_5.safetensors"))
    with pytest.raises(WeightsGateError) as exc:
        gate.check_run_dir(run_dir)
    assert {r.split(":")[0] for r in reads} == {"step_5.safetensors"}
    assert exc.value.step == 5
    assert "finite (layers.1.weight)" in str(exc.value).splitlines()[0]
    with pytest.raises(WeightsGateError, match="std-saturates"):
        WeightsGate(parse_spec(RUN_SPEC, "r.weights.yaml"), device="cpu").check_run_dir(run_dir, final=True)


def test_check_paths_and_state_dicts(tmp_path):
    model, _ = train(None, steps=2, save_dir=tmp_path / "run")
    gate = WeightsGate("default", device="cpu")
    assert gate.check(tmp_path / "run" / "step_2.safetensors", step=2).passed
    assert gate.check(model.state_dict(), step=3).passed
    with pytest.raises(Exception, match="not a run directory"):
        gate.check_run_dir(tmp_path / "run" / "step_2.safetensors")


def test_pytest_exit_codes_for_scripts(pytester, tmp_path):
    """The exit codes docs/training.md promises for ``pytest --checkpoint RUN_DIR --weights-latest``."""
    run_dir = tmp_path / "run"
    train(None, steps=3, save_dir=run_dir)
    args = ("-p", "no:cacheprovider", "--checkpoint", str(run_dir), "--weights-latest")
    assert pytester.runpytest(*args).ret == 0
    broken = {k: v.clone() for k, v in Tiny().state_dict().items()}
    broken["layers.2.weight"] *= 100
    save_file(broken, str(run_dir / "step_4.safetensors"))
    result = pytester.runpytest(*args)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*layers.2.weight*std=*"])
    assert pytester.runpytest("-p", "no:cacheprovider", "--checkpoint", str(tmp_path / "nope")).ret == 4
    assert pytester.runpytest(*args, "-k", "no_such_item").ret == 5
