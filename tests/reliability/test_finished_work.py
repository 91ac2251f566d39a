"""Finished work is never lost or redone: --overwrite and a changed recipe stage keep the old output until the
new run has checked its inputs, a resume ends exactly where an uninterrupted run ends, a finished stage is
never trained again, a damaged newest checkpoint falls back to the previous one, killed runs leave no
leftovers, exported files get normal modes, and a stage cannot start from a later stage's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from minigpt.checkpoints import checkpoint_problem, resumable_checkpoint
from minigpt.cli import main
from minigpt.errors import ConfigError
from minigpt.pipeline import read_manifest, run_recipe
from minigpt.recipe_plan import load_recipe
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

from .helpers import stage_dict, write_yaml


def _cfg(out: Path, tok: Path, data: Path, **train) -> StageConfig:
    return StageConfig.model_validate(stage_dict(out, tok, data, **train))


def _weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.fixture()
def finished(tmp_path: Path, tiny_tokenizer_dir: Path, lm_data) -> Path:
    """A finished 4-step SFT stage with checkpoints every 2 steps (constant LR: an extra step would show)."""
    out = tmp_path / "sft"
    cfg = _cfg(out, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2, scheduler="constant")
    run_stage(cfg, console=False)
    return out


# ------------------------------------------------------------------ 1. data lost


@pytest.mark.parametrize("bad", ["missing data file", "missing tokenizer"])
def test_overwrite_with_bad_inputs_keeps_the_finished_stage(
    finished: Path, tiny_tokenizer_dir: Path, lm_data, tmp_path: Path, capsys, bad: str
) -> None:
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    cfg_file = write_yaml(
        tmp_path / "stage.yaml",
        stage_dict(finished, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2),
    )
    key = (
        "data.train=[/nonexistent/rows.jsonl]"
        if bad == "missing data file"
        else "model.tokenizer=/no/such/tok"
    )
    code = main(["train", "--config", str(cfg_file), "--overwrite", "--set", key])
    assert code == 2
    assert "error:" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    assert after == before  # the finished stage is back, byte for byte
    assert not [p for p in finished.iterdir() if p.name.startswith(".replaced-")]


def test_a_killed_overwrite_puts_the_old_run_back(finished: Path, tiny_tokenizer_dir: Path, lm_data) -> None:
    # As a SIGKILL between moving the old run aside and training would leave it:
    aside = finished / ".replaced-99999"
    aside.mkdir()
    for child in list(finished.iterdir()):
        if child.name not in (".minigpt.lock", aside.name):
            os.replace(child, aside / child.name)
    (finished / "config.yaml").write_text("partial attempt")
    cfg = _cfg(finished, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2)
    cfg.resume = True
    summary = run_stage(cfg, console=False)  # the old run is put back, and it had finished
    assert summary["global_step"] == 4 and (finished / "stage.json").exists()
    assert not aside.exists() and "partial attempt" not in (finished / "config.yaml").read_text()


def _recipe(tmp_path: Path, tok: Path, lm_data, sft_set: list[str] | None = None) -> Path:
    recipe = {
        "name": "keep",
        "output_dir": str(tmp_path / "run"),
        "seed": 1,
        "defaults": {
            "model": {"overrides": stage_dict(tmp_path, tok, lm_data["conv"])["model"]["overrides"]}
        },
        "stages": [
            {
                "name": "sft",
                "config": {
                    "stage": "sft",
                    "model": {"init": "tiny", "tokenizer": str(tok)},
                    "data": {"train": [str(lm_data["conv"])], "max_length": 48},
                    "train": {"max_steps": 2, "batch_size": 4},
                },
                "set": sft_set or [],
            }
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def test_recipe_stage_changed_to_bad_inputs_then_undone_is_still_finished(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    good = _recipe(tmp_path, tiny_tokenizer_dir, lm_data)
    run_recipe(good, console=False)
    weights = _weights(tmp_path / "run" / "sft")
    bad = _recipe(tmp_path, tiny_tokenizer_dir, lm_data, ["data.train=[/nonexistent/rows.jsonl]"])
    with pytest.raises(Exception, match="nonexistent"):
        run_recipe(bad, console=False)
    assert _same(_weights(tmp_path / "run" / "sft"), weights)
    plan = run_recipe(_recipe(tmp_path, tiny_tokenizer_dir, lm_data), dry_run=True, console=False)["plan"]
    assert plan == [("sft", "skip", "finished, inputs unchanged")]


# ------------------------------------------------------------------ 2. resume exactness


def test_resume_from_the_last_step_checkpoint_trains_no_extra_step(
    finished: Path, tiny_tokenizer_dir: Path, lm_data, tmp_path: Path
) -> None:
    uninterrupted = _weights(finished)
    (finished / "stage.json").unlink()  # killed during the export
    for name in ("model.safetensors", "config.json"):
        (finished / name).unlink()
    cfg = _cfg(
        finished, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2, scheduler="constant"
    )
    cfg.resume = True
    summary = run_stage(cfg, console=False)
    assert summary["global_step"] == 4
    assert _same(_weights(finished), uninterrupted)
    steps = [json.loads(line).get("step") for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 4


def test_resume_of_a_finished_stage_does_not_train_it_again(
    finished: Path, tiny_tokenizer_dir: Path, lm_data, capsys
) -> None:
    done = (finished / "stage.json").read_text()
    weights = (finished / "model.safetensors").read_bytes()
    cfg = _cfg(
        finished, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2, scheduler="constant"
    )
    cfg.resume = True
    summary = run_stage(cfg, console=True)
    assert "already finished" in capsys.readouterr().out
    assert summary == json.loads(done)
    assert (finished / "model.safetensors").read_bytes() == weights


def test_recipe_killed_during_its_evaluation_evaluates_without_training(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    recipe = _recipe(tmp_path, tiny_tokenizer_dir, lm_data)
    run_recipe(recipe, console=False)
    run = tmp_path / "run"
    manifest = read_manifest(run)
    manifest["stages"]["sft"]["status"] = "running"  # stage.json written, the evaluation then killed
    (run / "manifest.json").write_text(json.dumps(manifest))
    weights = (run / "sft" / "model.safetensors").read_bytes()
    result = run_recipe(recipe, console=False)
    assert result["plan"][0][1] == "finish"
    assert (run / "sft" / "model.safetensors").read_bytes() == weights
    assert read_manifest(run)["stages"]["sft"]["status"] == "done"


# ------------------------------------------------------------------ 6. disk faults, damaged files


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(
    finished: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    ckpt = finished / "checkpoints"
    newest = ckpt / "checkpoint-4" / "model.safetensors"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    assert checkpoint_problem(ckpt / "checkpoint-4") == (
        f"model.safetensors is truncated ({len(data) // 2} of {len(data)} bytes)"
    )
    path, notes = resumable_checkpoint(ckpt)
    assert path == ckpt / "checkpoint-2"
    assert notes == [
        f"{ckpt / 'checkpoint-4'} is damaged (model.safetensors is truncated "
        f"({len(data) // 2} of {len(data)} bytes)): not resuming from it"
    ]


@pytest.mark.parametrize("name", ["optimizer.pt", "trainer_state.json", "scheduler.pt"])
def test_other_damaged_checkpoint_files_are_found(finished: Path, name: str) -> None:
    target = finished / "checkpoints" / "checkpoint-4" / name
    target.write_bytes(target.read_bytes()[:40])
    assert name in (checkpoint_problem(target.parent) or "")
    assert resumable_checkpoint(finished / "checkpoints")[0] == finished / "checkpoints" / "checkpoint-2"


def test_a_corrupt_manifest_names_the_file(tmp_path: Path, tiny_tokenizer_dir: Path, lm_data) -> None:
    recipe = _recipe(tmp_path, tiny_tokenizer_dir, lm_data)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text('{"stages": {"sft": ')
    with pytest.raises(ConfigError, match=r"manifest.json: the recipe manifest is corrupt"):
        run_recipe(recipe, dry_run=True, console=False)


# ------------------------------------------------------------------ 8. keys


def test_a_stage_starting_from_a_later_stage_is_refused(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    recipe = yaml.safe_load(_recipe(tmp_path, tiny_tokenizer_dir, lm_data).read_text())
    second = json.loads(json.dumps(recipe["stages"][0]))
    second["name"] = "sft2"
    recipe["stages"][0]["config"]["model"]["init"] = str(tmp_path / "run" / "sft2")
    recipe["stages"].append(second)
    path = tmp_path / "later.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(
        ConfigError, match="model.init .* is the output of stage 'sft2', which runs after this stage 'sft'"
    ):
        load_recipe(path)


def test_editing_a_user_reward_changes_the_stage_key(tmp_path: Path, monkeypatch) -> None:
    from minigpt.pipeline_keys import user_code_digests
    from minigpt.rewards import RewardSpec

    module = tmp_path / "my_rewards_mod.py"
    module.write_text("def score(completions, **kw):\n    return [1.0 for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Params:
        rewards = [RewardSpec(name="my_rewards_mod:score")]

    first = user_code_digests(Params)
    import importlib
    import sys

    module.write_text("def score(completions, **kw):\n    return [0.5 for _ in completions]\n")
    importlib.reload(sys.modules["my_rewards_mod"])
    assert first != user_code_digests(Params) and first[0][0:2] == ["reward", "my_rewards_mod:score"]


def test_editing_a_user_converter_changes_the_data_digest(tmp_path: Path, monkeypatch) -> None:
    import importlib
    import sys

    from minigpt.pipeline_keys import _data_digests

    module = tmp_path / "my_conv_mod.py"
    module.write_text("def conv(row):\n    return {'text': row['t']}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rows.jsonl").write_text('{"t": "hello"}\n')
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "stage": "pretrain",
                "schema": "text",
                "sources": [
                    {"name": "a", "path": str(tmp_path / "rows.jsonl"), "converter": "my_conv_mod:conv"}
                ],
            }
        )
    )
    first = _data_digests(str(mix))
    module.write_text("def conv(row):\n    return {'text': row['t'].upper()}\n")
    importlib.reload(sys.modules["my_conv_mod"])
    assert first != _data_digests(str(mix))


# ------------------------------------------------------------------ 9. leftovers and file modes


def test_leftovers_of_killed_exports_are_cleared_and_modes_are_normal(
    finished: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    (finished / ".export-abc123").mkdir()
    (finished / ".export-abc123" / "model.safetensors").write_bytes(b"half")
    (finished / "stage.json.tmp").write_text("{")
    (finished / "checkpoints" / "checkpoint-6.tmp-4242").mkdir()
    (finished / "stage.json").unlink()
    cfg = _cfg(finished, tiny_tokenizer_dir, lm_data["conv"], max_steps=4, save_interval=2)
    cfg.resume = True
    run_stage(cfg, console=False)
    names = sorted(p.name for p in finished.iterdir())
    assert not [n for n in names if n.startswith(".export-") or n.endswith(".tmp")]
    assert sorted(p.name for p in (finished / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    mask = os.umask(0)
    os.umask(mask)
    for path in [*finished.iterdir(), *(finished / "checkpoints" / "checkpoint-4").iterdir()]:
        if path.is_file() and path.name != ".minigpt.lock":
            assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_without_save_interval_the_final_state_is_kept_only_until_the_export(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data
) -> None:
    out = tmp_path / "x"
    cfg = _cfg(out, tiny_tokenizer_dir, lm_data["conv"], max_steps=3)
    run_stage(cfg, console=False)
    assert not (out / "checkpoints").exists() and (out / "stage.json").exists()
