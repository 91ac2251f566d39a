"""Numerical faults: a NaN/inf loss or gradient norm stops the stage before the optimizer applies it, with a
message naming the step and the metric, and the last good checkpoint intact and loadable; with
``train.max_bad_steps: N`` up to N such steps are skipped (weights untouched, counted), then it stops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from minigpt.checkpoints import newest_checkpoint
from minigpt.errors import TrainingError
from minigpt.metrics import read_metrics
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

from .helpers import stage_dict


class InjectFault(TrainerCallback):
    """Makes the given (1-based) steps non-finite. ``loss``: NaN logits, so the loss and every gradient are
    NaN. ``grad``: the loss stays finite but one weight's gradient is inf."""

    def __init__(self, steps: set[int], kind: str):
        self.steps, self.kind, self.active = steps, kind, False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.kind == "loss":
            model.lm_head.register_forward_hook(self._logits)
        else:
            model.model.norm.weight.register_hook(self._grad)

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = state.global_step + 1 in self.steps

    def _logits(self, module, inputs, output):
        return output * float("nan") if self.active and module.training else None

    def _grad(self, grad):
        return torch.full_like(grad, float("inf")) if self.active else grad


class Snapshots(TrainerCallback):
    """A copy of one weight after every optimizer step."""

    def __init__(self):
        self.after: dict[int, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = model.model.layers[0].mlp.up_proj.weight.detach().clone()


def _cfg(tmp_path: Path, tok: Path, data: Path, name: str, **train) -> StageConfig:
    return StageConfig.model_validate(stage_dict(tmp_path / name, tok, data, **train))


def _finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(path).values())


def test_nan_loss_stops_with_step_and_metric_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "nan", save_interval=2, save_total_limit=2)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError) as info:
        run_stage(cfg, console=False, callbacks=[InjectFault({5}, "loss")])
    message = str(info.value)
    assert "train/loss is nan at step 5" in message and "train.max_bad_steps is 0" in message
    last_good = out / "checkpoints" / "checkpoint-4"
    assert str(last_good) in message
    # Stopped before step 5 reached the weights or a checkpoint: checkpoint-4 is the newest, loads, is finite.
    assert newest_checkpoint(out / "checkpoints") == last_good
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    model = AutoModelForCausalLM.from_pretrained(last_good)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (out / "stage.json").exists() and not (out / "model.safetensors").exists()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert all(math.isfinite(r["train/loss"]) for r in records if "train/loss" in r)
    # The fault gone (a one-off), resuming from the kept checkpoint finishes the stage.
    cfg.resume = True
    assert run_stage(cfg, console=False)["global_step"] == 8
    assert _finite(out / "model.safetensors")


def test_inf_gradient_with_a_finite_loss_stops_naming_the_gradient_norm(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    # Logged every 10 steps: the fault of step 3 is read (without a per-step sync) at the next point that
    # looks at the weights, here the checkpoint of step 4, which must then not be written.
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "inf", log_interval=10, save_interval=2)
    with pytest.raises(TrainingError) as info:
        run_stage(cfg, console=False, callbacks=[InjectFault({3}, "grad")])
    assert "train/grad_norm is inf at step 3: training stopped" in str(info.value)
    ckpts = tmp_path / "inf" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2"]
    assert _finite(ckpts / "checkpoint-2" / "model.safetensors")


def test_a_fault_in_the_last_steps_is_never_exported(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "last", max_steps=4, log_interval=10)
    with pytest.raises(TrainingError, match="train/loss is nan at step 4: .*no checkpoint had been saved"):
        run_stage(cfg, console=False, callbacks=[InjectFault({4}, "loss")])
    assert not (tmp_path / "last" / "model.safetensors").exists()


def test_max_bad_steps_skips_a_nan_step_without_touching_the_weights(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "skip", max_bad_steps=2, save_interval=4)
    snaps = Snapshots()
    summary = run_stage(cfg, console=False, callbacks=[InjectFault({3}, "loss"), snaps])
    out = tmp_path / "skip"
    assert summary["global_step"] == 8 and _finite(out / "model.safetensors")
    assert torch.equal(snaps.after[2], snaps.after[3]), "the skipped step changed the weights"
    assert not torch.equal(snaps.after[3], snaps.after[4])
    records = [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert [r["train/skipped_steps"] for r in records] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert all(math.isfinite(r["train/loss"]) for r in records)  # the NaN never reaches the logged loss
    assert "train/grad_norm" not in records[2]  # no gradient was applied at step 3, so none is logged
    log = next(out.glob("sft_training_logs_*.txt")).read_text()
    assert "step 3: train/loss is nan; optimizer step skipped (1 of train.max_bad_steps 2)" in log
    # The count is part of the checkpoint, so a resumed run keeps spending the same budget.
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "minigpt_state.json").read_text())
    assert state == {"skipped_steps": 1}


def test_max_bad_steps_is_a_budget_then_the_stage_stops(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "budget", max_bad_steps=1, save_interval=4)
    with pytest.raises(TrainingError) as info:
        run_stage(cfg, console=False, callbacks=[InjectFault({2, 6}, "loss")])
    assert "train/loss is nan at step 6" in str(info.value)
    assert "2 non-finite step(s), train.max_bad_steps is 1" in str(info.value)
    assert newest_checkpoint(tmp_path / "budget" / "checkpoints").name == "checkpoint-4"
