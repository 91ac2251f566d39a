"""Crash safety: a checkpoint appears only by an atomic rename of a fully written folder, rotation never
removes the last good one, and a stage killed with SIGKILL (in a step, or halfway through writing a
checkpoint) resumes from its newest complete checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigpt.checkpoints import (
    complete_checkpoints,
    newest_checkpoint,
    publish_checkpoint,
    rotate_checkpoints,
    staging_dir,
)
from minigpt.metrics import read_metrics
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig, load_stage_config

from .helpers import PYTHON, stage_dict, subprocess_env, write_yaml

STAGE_PROC = Path(__file__).with_name("stage_proc.py")
REPO = Path(__file__).resolve().parents[2]


def fake_checkpoint(path: Path, complete: bool = True) -> Path:
    """A folder with the files resume looks for (contents do not matter to discovery and rotation)."""
    path.mkdir(parents=True)
    # the smallest intact files: a safetensors header with no tensors, a JSON object, an empty zip archive
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (path / "trainer_state.json").write_text("{}")
    if complete:
        with zipfile.ZipFile(path / "optimizer.pt", "w"):
            pass
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_rotation_keeps_the_newest_complete_checkpoint_and_clears_leftovers(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        fake_checkpoint(ckpt / f"checkpoint-{step}")
    fake_checkpoint(ckpt / "checkpoint-3", complete=False)  # an old half-written one: never resumable
    fake_checkpoint(ckpt / "checkpoint-8", complete=False)  # a newer half-written one (killed writer)
    fake_checkpoint(ckpt / "checkpoint-10.tmp-999")  # a killed run's staging folder
    fake_checkpoint(ckpt / "checkpoint-1.del-999-abc")  # a killed rotation's half-deleted folder
    assert newest_checkpoint(ckpt) == ckpt / "checkpoint-6"
    # save_total_limit 1: the half-written checkpoint-8 is newer, but it is not a good one, so checkpoint-6
    # (the last good one) stays; transformers' own rotation would count checkpoint-8 and delete it.
    rotate_checkpoints(ckpt, keep=1)
    assert names(ckpt) == ["checkpoint-6", "checkpoint-8"]
    assert complete_checkpoints(ckpt) == [ckpt / "checkpoint-6"]
    # A limit of 0 / None keeps everything (transformers' meaning).
    fake_checkpoint(ckpt / "checkpoint-7")
    rotate_checkpoints(ckpt, keep=None)
    assert names(ckpt) == ["checkpoint-6", "checkpoint-7", "checkpoint-8"]


def test_publish_replaces_a_half_written_folder_in_one_rename(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    fake_checkpoint(ckpt / "checkpoint-8", complete=False)
    staged = fake_checkpoint(staging_dir(ckpt, 8, "123") / "checkpoint-8")
    assert newest_checkpoint(ckpt) is None  # neither the staging folder nor the partial one counts
    publish_checkpoint(staged, ckpt / "checkpoint-8")
    assert newest_checkpoint(ckpt) == ckpt / "checkpoint-8"
    assert (ckpt / "checkpoint-8" / "optimizer.pt").exists()
    assert names(ckpt) == ["checkpoint-8", "checkpoint-8.tmp-123"]  # the empty staging shell; the trainer
    # removes it right after publishing


def _stall_then_kill(config: Path, mode: str, marker: Path, resume: bool = False) -> None:
    """Run the stage in a child that stalls at ``mode`` (see stage_proc.py), then SIGKILL it there."""
    log = marker.with_suffix(".log")
    with log.open("wb") as err:
        args = [PYTHON, str(STAGE_PROC), str(config), mode, str(marker)] + (["--resume"] if resume else [])
        proc = subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=err, stderr=err)
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert marker.exists(), f"the child never reached {mode}:\n{log.read_text(errors='replace')[-3000:]}"


@pytest.mark.slow
def test_sigkill_in_a_step_and_in_a_checkpoint_write_then_resume(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    train = {"max_steps": 8, "save_interval": 2, "save_total_limit": 2}
    reference = StageConfig.model_validate(
        stage_dict(tmp_path / "reference", tiny_tokenizer_dir, lm_data["conv"], **train)
    )
    run_stage(reference, console=False)

    out = tmp_path / "killed"
    ckpts = out / "checkpoints"
    config = write_yaml(
        tmp_path / "killed.yaml", stage_dict(out, tiny_tokenizer_dir, lm_data["conv"], **train)
    )

    # 1. SIGKILL in the middle of step 5 (inside the forward pass).
    _stall_then_kill(config, "step:4", tmp_path / "in_step")
    assert names(ckpts) == ["checkpoint-2", "checkpoint-4"]
    assert complete_checkpoints(ckpts) == [ckpts / "checkpoint-2", ckpts / "checkpoint-4"]

    # 2. Resume in a child and SIGKILL it halfway through writing checkpoint-6: weights and optimizer are
    #    written, the trainer state is not. Nothing named checkpoint-6 exists; checkpoint-4 is the newest.
    _stall_then_kill(config, "save:6", tmp_path / "in_save", resume=True)
    staged = [p for p in ckpts.iterdir() if ".tmp-" in p.name]
    assert len(staged) == 1 and (staged[0] / "checkpoint-6" / "optimizer.pt").exists()
    assert not (staged[0] / "checkpoint-6" / "trainer_state.json").exists()
    assert not (ckpts / "checkpoint-6").exists()
    assert newest_checkpoint(ckpts) == ckpts / "checkpoint-4"
    weights = load_file(ckpts / "checkpoint-4" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert (out / ".minigpt.lock").exists()  # left behind by the killed run; the next run takes it over

    # 3. What a non-atomic writer killed mid-write leaves: a checkpoint-8 folder with a truncated weights
    #    file and nothing else. Resume must not pick it, and the run must replace it when it reaches step 8.
    (ckpts / "checkpoint-8").mkdir()
    (ckpts / "checkpoint-8" / "model.safetensors").write_bytes(b"\0" * 100)

    cfg = load_stage_config(config)
    cfg.resume = True
    summary = run_stage(cfg, console=False)
    assert summary["global_step"] == 8
    assert names(ckpts) == ["checkpoint-6", "checkpoint-8"]  # leftovers gone, save_total_limit kept
    assert complete_checkpoints(ckpts) == [ckpts / "checkpoint-6", ckpts / "checkpoint-8"]
    assert json.loads((ckpts / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8
    assert not (out / ".minigpt.lock").exists()
    logs = "".join(p.read_text() for p in sorted(out.glob("sft_training_logs_*.txt")))
    assert f"resuming from {ckpts / 'checkpoint-4'}" in logs
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(1, 9)), "each step logged once across three processes"
    a = load_file(tmp_path / "reference" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    # Stated tolerance: the same weights as the uninterrupted run up to float32 rounding (1e-5 absolute).
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_a_torn_last_metrics_line_does_not_stop_resume(tmp_path: Path) -> None:
    from minigpt.runner import _trim_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "train/lo', encoding="utf-8")
    _trim_metrics(path, 1)
    assert read_metrics(path) == [{"step": 1}]
