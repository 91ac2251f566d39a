"""Recipes: ordering, skip/rerun planning, and recovery from a SIGKILL in the middle of a stage."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support import SMALL

from minigpt.errors import ConfigError
from minigpt.pipeline import read_manifest, run_recipe
from minigpt.pipeline_keys import relative_to_run
from minigpt.recipe_plan import load_recipe


def _recipe(tmp_path: Path, lm_data, run_dir: Path, sft_steps: int = 12, name: str = "recipe.yaml") -> Path:
    recipe = {
        "name": "t",
        "output_dir": str(run_dir),
        "seed": 3,
        "defaults": {
            "model": {"overrides": SMALL},
            "train": {"batch_size": 16, "lr": 3e-3, "log_interval": 2},
        },
        "stages": [
            {
                "name": "tokenizer",
                "kind": "tokenizer",
                "config": {
                    "files": [str(lm_data["text"]), str(lm_data["conv"])],
                    "vocab_size": 400,
                    "min_frequency": 1,
                },
            },
            {
                "name": "pretrain",
                "config": {
                    "stage": "pretrain",
                    "model": {"init": "tiny"},
                    "data": {"train": [str(lm_data["text"])], "max_length": 64},
                    "train": {"max_steps": 6},
                },
            },
            {
                "name": "sft",
                "config": {
                    "stage": "sft",
                    "data": {"train": [str(lm_data["conv"])], "max_length": 64},
                    "train": {"max_steps": sft_steps, "save_interval": 2},
                },
            },
        ],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_plan_skips_finished_and_reruns_changed(tmp_path, lm_data):
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path, lm_data, run_dir)
    first = run_recipe(recipe, console=False)
    assert [a for _, a, _ in first["plan"]] == ["run", "run", "run"]
    assert json.loads((run_dir / "sft" / "stage.json").read_text())["global_step"] == 12
    # the SFT stage started from the pretrain stage's folder, with the recipe's tokenizer
    cfg = yaml.safe_load((run_dir / "sft" / "config.yaml").read_text())
    assert cfg["model"]["init"] == str(run_dir / "pretrain")
    again = run_recipe(recipe, dry_run=True, console=False)
    assert [a for _, a, _ in again["plan"]] == ["skip", "skip", "skip"]
    changed = run_recipe(recipe, dry_run=True, console=False, overrides=None, from_stage="pretrain")
    assert [a for _, a, _ in changed["plan"]] == ["skip", "rerun", "rerun"]
    only = run_recipe(recipe, dry_run=True, console=False, only="sft")
    assert [a for _, a, _ in only["plan"]] == ["skip", "skip", "rerun"]
    edited = _recipe(tmp_path, lm_data, run_dir, sft_steps=14)
    plan = run_recipe(edited, dry_run=True, console=False)["plan"]
    assert [a for _, a, _ in plan] == ["skip", "skip", "rerun"]
    with pytest.raises(ConfigError, match="no stage named 'sfft'"):
        run_recipe(recipe, dry_run=True, console=False, from_stage="sfft")


def _mtimes(run_dir: Path) -> dict[str, int]:
    """Stage files only: every run rewrites the manifest, skipped stages or not."""
    files = (f for f in run_dir.rglob("*") if f.is_file() and f.name != "manifest.json")
    return {str(f.relative_to(run_dir)): f.stat().st_mtime_ns for f in files}


@pytest.mark.slow
def test_a_copied_run_folder_keeps_its_keys(tmp_path, lm_data):
    run_dir, moved = tmp_path / "run", tmp_path / "elsewhere" / "run"
    run_recipe(_recipe(tmp_path, lm_data, run_dir), console=False)
    shutil.copytree(run_dir, moved)
    recipe = _recipe(tmp_path, lm_data, moved, name="moved.yaml")
    keys = {n: s["key"] for n, s in read_manifest(run_dir)["stages"].items()}
    assert [p.key for p in load_recipe(recipe)[1]] == list(keys.values())
    before = _mtimes(moved)
    again = run_recipe(recipe, console=False)
    assert [a for _, a, _ in again["plan"]] == ["skip", "skip", "skip"]
    assert _mtimes(moved) == before  # nothing retrained
    assert read_manifest(moved) == read_manifest(run_dir)
    # --from the second stage in the copy: that stage and the next one retrain there, the original is untouched
    original = _mtimes(run_dir)
    rerun = run_recipe(recipe, console=False, from_stage="pretrain")
    assert [a for _, a, _ in rerun["plan"]] == ["skip", "rerun", "rerun"]
    after = _mtimes(moved)
    for stage, changed in (("tokenizer", False), ("pretrain", True), ("sft", True)):
        name = "tokenizer/tokenizer.json" if stage == "tokenizer" else f"{stage}/model.safetensors"
        assert (after[name] != before[name]) == changed, name
    assert yaml.safe_load((moved / "sft" / "config.yaml").read_text())["model"]["init"] == str(
        moved / "pretrain"
    )
    assert _mtimes(run_dir) == original
    # a changed config value still changes the key of that stage and the ones after it, and only those
    edited = [p.key for p in load_recipe(_recipe(tmp_path, lm_data, moved, sft_steps=14, name="e.yaml"))[1]]
    assert edited[:2] == list(keys.values())[:2] and edited[2] != keys["sft"]
    edited = [p.key for p in load_recipe(recipe, overrides=["stages.1.config.train.max_steps=7"])[1]]
    assert edited[0] == keys["tokenizer"] and all(k not in keys.values() for k in edited[1:])


def test_relative_to_run_rewrites_only_paths_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    data = {"a": str(run / "sft"), "b": [str(run), f"{run}2/x", "tiny"], "c": 3, "d": str(tmp_path / "x")}
    assert relative_to_run(data, [str(run)]) == {
        "a": "<run>/sft",
        "b": ["<run>", f"{run}2/x", "tiny"],
        "c": 3,
        "d": str(tmp_path / "x"),
    }


@pytest.mark.slow
def test_sigkill_during_a_stage_then_rerun_resumes(tmp_path, lm_data):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    run_recipe(_recipe(tmp_path, lm_data, reference_dir, sft_steps=40, name="a.yaml"), console=False)
    recipe = _recipe(tmp_path, lm_data, killed_dir, sft_steps=40, name="b.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minigpt", "run", str(recipe)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed_dir / "sft" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run ended before it could be killed"
    assert not (killed_dir / "sft" / "stage.json").exists(), "killed too late: the stage had finished"
    result = run_recipe(recipe, console=False)
    assert [(n, a) for n, a, _ in result["plan"]] == [
        ("tokenizer", "skip"),
        ("pretrain", "skip"),
        ("sft", "resume"),
    ]
    logs = "".join(p.read_text() for p in (killed_dir / "sft").glob("sft_training_logs_*.txt"))
    assert "resuming from" in logs  # the killed attempt and the rerun each wrote a log file
    a = load_file(reference_dir / "sft" / "model.safetensors")
    b = load_file(killed_dir / "sft" / "model.safetensors")
    # Stated tolerance: equal to the uninterrupted run up to float32 rounding (1e-5 absolute).
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_keys_follow_the_content_of_a_mixtures_sources(tmp_path, lm_data):
    """A stage reading a mixture reruns when a source file it lists changes, though neither the recipe nor
    the mixture file did; the stages before it keep their keys."""
    source = tmp_path / "conv_copy.jsonl"
    shutil.copy(lm_data["conv"], source)
    mixture = {
        "name": "m",
        "stage": "sft",
        "schema": "conversations",
        "sources": [{"name": "c", "path": str(source)}],
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mixture))
    recipe = yaml.safe_load(_recipe(tmp_path, lm_data, tmp_path / "run").read_text())
    recipe["stages"][2]["config"]["data"] = {"data_config": str(tmp_path / "mix.yaml"), "max_length": 64}
    path = tmp_path / "mixture-recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))

    def keys() -> list[str]:
        return [p.key for p in load_recipe(path)[1]]

    before = keys()
    assert keys() == before  # deterministic
    source.write_text(source.read_text() + source.read_text().splitlines()[0] + "\n")
    after = keys()
    assert after[:2] == before[:2] and after[2] != before[2]
