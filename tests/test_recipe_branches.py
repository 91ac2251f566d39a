"""Branched recipes: ``from: NAME`` makes a stage start from an earlier training stage, so siblings share one
checkpoint and the recipe is a tree. A stage's key chains only the stages it starts from (editing one branch
reruns that branch only); ``--from`` reruns a stage and its descendants; bad ``from`` values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import write_jsonl

from minigpt import pipeline
from minigpt.errors import ConfigError
from minigpt.pipeline import plan_actions
from minigpt.recipe_plan import load_recipe


def _recipe(tmp_path: Path, branches: dict | None = None, name: str = "recipe.yaml") -> Path:
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"the cat {i}"} for i in range(20)])
    conv = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 20
    conv = write_jsonl(tmp_path / "conv.jsonl", conv)
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "chosen": [{"role": "assistant", "content": "yo"}],
                "rejected": [{"role": "assistant", "content": "no"}],
            }
        ]
        * 20,
    )
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}] * 20)
    stages = [
        {"name": "tokenizer", "kind": "tokenizer", "config": {"files": [str(text)], "vocab_size": 300}},
        {
            "name": "pretrain",
            "config": {"stage": "pretrain", "model": {"init": "tiny"}, "data": {"train": [str(text)]}},
        },
        {"name": "sft", "config": {"stage": "sft", "data": {"train": [str(conv)]}}},
        {"name": "dpo", "from": "sft", "config": {"stage": "dpo", "data": {"train": [str(pairs)]}}},
        {
            "name": "grpo",
            "from": "sft",
            "config": {"stage": "grpo", "data": {"train": [str(prompts)]}, "algo": {"rewards": ["format"]}},
        },
        {
            "name": "rloo",
            "config": {"stage": "rloo", "data": {"train": [str(prompts)]}, "algo": {"rewards": ["format"]}},
        },
    ]
    for i, entry in (branches or {}).items():
        stages[i] = {**stages[i], **entry}
    recipe = {"name": "branchy", "output_dir": str(tmp_path / "run"), "stages": stages}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _keys(path: Path, overrides: list[str] | None = None) -> dict[str, str]:
    return {p.entry.name: p.key for p in load_recipe(path, overrides)[1]}


def test_siblings_start_from_the_stage_they_name(tmp_path):
    _, planned = load_recipe(_recipe(tmp_path))
    init = {p.entry.name: Path(p.config.model.init).name for p in planned if p.entry.kind == "train"}
    # rloo has no `from`: it starts from the stage before it (grpo), as in a linear recipe
    assert init == {"pretrain": "tiny", "sft": "pretrain", "dpo": "sft", "grpo": "sft", "rloo": "grpo"}
    parents = {p.entry.name: p.parent for p in planned}
    assert parents == {"tokenizer": None, "pretrain": 0, "sft": 1, "dpo": 2, "grpo": 2, "rloo": 4}


def test_editing_one_branch_changes_only_that_branch_and_its_descendants(tmp_path):
    path = _recipe(tmp_path)
    keys = _keys(path)
    grpo = _keys(path, ["stages.4.config.train.lr=1e-4"])
    assert [n for n in keys if keys[n] != grpo[n]] == ["grpo", "rloo"]  # rloo starts from grpo
    dpo = _keys(path, ["stages.3.config.train.lr=1e-4"])
    assert [n for n in keys if keys[n] != dpo[n]] == ["dpo"]
    sft = _keys(path, ["stages.2.config.train.lr=1e-4"])
    assert [n for n in keys if keys[n] != sft[n]] == ["sft", "dpo", "grpo", "rloo"]


def _plan(path: Path, monkeypatch, overrides=None, from_stage=None, only=None) -> dict[str, str]:
    """The plan against a manifest in which every stage of the unedited recipe finished."""
    monkeypatch.setattr(pipeline, "_output_complete", lambda p: True)
    done = {p.entry.name: {"key": p.key, "status": "done"} for p in load_recipe(path)[1]}
    planned = load_recipe(path, overrides)[1]
    plan_actions(planned, {"stages": done}, from_stage, only)
    return {p.entry.name: p.action for p in planned}


def test_plan_reruns_the_edited_branch_and_from_reruns_a_stage_with_its_descendants(tmp_path, monkeypatch):
    path = _recipe(tmp_path)
    assert set(_plan(path, monkeypatch).values()) == {"skip"}
    edited = _plan(path, monkeypatch, ["stages.3.config.train.lr=1e-4"])
    assert [n for n, a in edited.items() if a != "skip"] == ["dpo"]
    assert [n for n, a in _plan(path, monkeypatch, from_stage="dpo").items() if a != "skip"] == ["dpo"]
    from_sft = _plan(path, monkeypatch, from_stage="sft")
    assert [n for n, a in from_sft.items() if a != "skip"] == ["sft", "dpo", "grpo", "rloo"]
    assert [n for n, a in _plan(path, monkeypatch, only="grpo").items() if a != "skip"] == ["grpo"]


@pytest.mark.parametrize(
    ("branch", "message"),
    [
        ({3: {"from": "nope"}}, r"recipe.yaml:\d+: stages\[3\] 'dpo': from 'nope' is no stage of the recipe"),
        (
            {3: {"from": "grpo"}},
            r"from 'grpo' runs at or after it; a stage can start only from a training stage",
        ),
        ({3: {"from": "dpo"}}, r"from 'dpo' runs at or after it"),
        ({3: {"from": "tokenizer"}}, r"'from' joins training stages"),
        ({0: {"from": "sft"}}, r"from 'sft' runs at or after it"),
    ],
)
def test_bad_from_is_named_with_file_and_line(tmp_path, branch, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(_recipe(tmp_path, branch))


def test_model_init_in_another_branch_is_refused(tmp_path):
    path = _recipe(tmp_path)  # rloo starts from grpo (the stage before it); dpo is another branch
    cfg = yaml.safe_load(path.read_text())
    cfg["stages"][5]["config"]["model"] = {"init": str(tmp_path / "run" / "dpo")}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(
        ConfigError, match=r"output of stage 'dpo', which this stage 'rloo' does not start from"
    ):
        load_recipe(path)


def test_from_and_another_model_init_are_refused(tmp_path):
    path = _recipe(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["stages"][4]["config"]["model"] = {"init": "tiny"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError, match=r"'from: sft' and model.init 'tiny' name two starting points"):
        load_recipe(path)
