"""The model card every stage folder gets: hub front matter (library, pipeline tag, base model only when it
is a hub id, tags, datasets), the stage, its data, its settings and final metrics, refreshed with the recipe's
task evaluation; no machine-local path in it; a half-written card is a leftover like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from support import SMALL, copy_pairs, write_jsonl

from minigpt.checkpoints import clear_leftovers
from minigpt.model_card import CARD_FILE, build_model_card, front_matter
from minigpt.models.model_origin import hub_snapshot, model_origin
from minigpt.pipeline import evaluate_stage
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig
from minigpt.tasks.eval_spec import EvaluationSpec

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def stage_cfg(out: Path, stage: str, init: str, tokenizer: str | None, train: Path, **extra) -> StageConfig:
    model = {"init": init, "tokenizer": tokenizer, **({"overrides": SMALL} if init == "tiny" else {})}
    return StageConfig.model_validate(
        {
            "stage": stage,
            "output_dir": str(out),
            "model": model,
            "data": {"train": [str(train)], "val_fraction": 0.1, "max_length": 64},
            "train": {"max_steps": 3, "batch_size": 8, "log_interval": 1, "eval_interval": 0},
            **extra,
        }
    )


def card(folder: Path) -> tuple[dict, str]:
    """(front matter, body) of a folder's README.md."""
    text = (folder / CARD_FILE).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_tokenizer_dir) -> dict[str, Path]:
    """A pretrain stage from a preset, then an SFT stage from its folder."""
    from support import addition_conversations, synthetic_sentences

    root = tmp_path_factory.mktemp("chain")
    text = write_jsonl(root / "text.jsonl", [{"text": t} for t in synthetic_sentences(200, seed=1)])
    conv = write_jsonl(root / "conv.jsonl", addition_conversations(100, seed=2))
    run_stage(stage_cfg(root / "pre", "pretrain", "tiny", str(tiny_tokenizer_dir), text), console=False)
    run_stage(stage_cfg(root / "sft", "sft", str(root / "pre"), None, conv), console=False)
    return {"root": root, "pre": root / "pre", "sft": root / "sft"}


def test_a_stage_from_a_preset_has_a_card_without_base_model(chain):
    pre = chain["pre"]
    meta, body = card(pre)
    assert meta == {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["minigpt", "pretrain"],
    }  # random weights: no base model to name, and no hub dataset
    summary = json.loads((pre / "stage.json").read_text())
    assert "Trained by miniGPT's `pretrain` stage" in body
    assert "random weights of the miniGPT preset `tiny` (trained from scratch)" in body
    assert "Training rows from `text.jsonl`: 180 rows." in body and "20 rows held out" in body
    assert f"| optimizer steps run | {summary['global_step']} |" in body
    assert f"| `train_loss` | {summary['final_metrics']['train_loss']:.4g} |" in body
    assert "last logged `train/loss` (step 3)" in body
    assert str(chain["root"]) not in body  # files by name only, never the machine's path
    # the card is in place before stage.json, so a finished folder always has one
    assert (pre / CARD_FILE).stat().st_mtime_ns <= (pre / "stage.json").stat().st_mtime_ns


def test_a_stage_from_an_earlier_stage_names_its_chain(chain):
    meta, body = card(chain["sft"])
    assert "base_model" not in meta and meta["tags"] == ["minigpt", "sft"]
    assert (
        "Started from the earlier stage folder `pre` (stage `pretrain`), which started from random weights "
        "of the miniGPT preset `tiny`" in body
    )


def test_a_hub_base_is_named_through_every_later_stage(tmp_path, chain):
    # A hub download in the cache layout huggingface_hub writes, used as model.init by path.
    snapshot = tmp_path / "hub" / "models--org--base" / "snapshots" / COMMIT
    shutil.copytree(chain["pre"], snapshot, ignore=shutil.ignore_patterns("stage.json", "config.yaml"))
    assert hub_snapshot(snapshot) == ("org/base", COMMIT)
    direct = model_origin(str(snapshot))
    assert (direct.kind, direct.hub_id, direct.revision) == ("hub", "org/base", COMMIT)
    # two stages on: sft (from the snapshot), then dpo from the sft folder
    for name, init in (("s1", str(snapshot)), ("s2", str(tmp_path / "s1"))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"stage": "sft", "model": {"init": init}}))
        (folder / "stage.json").write_text('{"status": "done"}')
    later = model_origin(str(tmp_path / "s2"))
    assert (later.kind, later.hub_id, later.root_hub_id, later.root_revision) == (
        "stage",
        None,
        "org/base",
        COMMIT,
    )
    config = {"stage": "dpo", "model": {"init": str(tmp_path / "s2")}}
    meta = front_matter(tmp_path / "s2", config, {})
    assert meta["base_model"] == "org/base" and meta["base_model_relation"] == "finetune"
    assert model_origin("org/other", "v1").hub_id == "org/other"
    hub = {"stage": "sft", "model": {"init": "org/other", "revision": "v1"}}
    text = build_model_card(tmp_path / "s2", {}).replace(str(tmp_path), "")
    assert "`s1` (stage `sft`), which started from the hub model [`org/base`]" in text
    assert front_matter(tmp_path, hub, {})["base_model"] == "org/other"


def test_a_mixture_stage_lists_its_sources(tmp_path, tiny_tokenizer_dir, lm_data):
    rows = [json.loads(line) for line in lm_data["conv"].read_text().splitlines()]
    for row in rows:  # other rows than the first source's (the mixture's dedup would drop copies)
        row["conversations"][1]["content"] = "Please: " + row["conversations"][1]["content"]
    polite = write_jsonl(tmp_path / "polite.jsonl", rows)
    mixture = {
        "name": "mix",
        "stage": "sft",
        "schema": "conversations",
        "validation": {"fraction": 0.1},
        "sources": [
            {"name": "adds", "path": str(lm_data["conv"]), "weight": 3},
            {"name": "polite", "path": str(polite)},
        ],
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mixture))
    cfg = stage_cfg(tmp_path / "sft", "sft", "tiny", str(tiny_tokenizer_dir), lm_data["conv"])
    cfg.data.train, cfg.data.val_fraction, cfg.data.data_config = [], 0.0, str(tmp_path / "mix.yaml")
    run_stage(cfg, console=False)
    manifest = json.loads((tmp_path / "sft" / "data" / "sft_mix_manifest.json").read_text())
    meta, body = card(tmp_path / "sft")
    assert "datasets" not in meta  # local files only
    assert (
        f"The mixture `mix` (schema `conversations`): {manifest['train']['rows']:,} training rows "
        f"({manifest['train']['tokens']:,} tokens), {manifest['val']['rows']} validation rows." in body
    )
    for source in manifest["sources"]:
        name = Path(source["origin"].removeprefix("file ")).name
        assert f"| {source['name']} | file {name} | {source['normalised_weight']:.4g} | " in body
    assert str(tmp_path) not in body


def test_hub_datasets_come_from_the_mixture_manifest(tmp_path):
    manifest = {
        "config": {"sources": [{"name": "a", "hub": "org/a"}, {"name": "b", "hub": "org/b"}, {"name": "c"}]},
        "sources": [
            {"name": "a", "offline_sample": False},
            {"name": "b", "offline_sample": True},  # a local sample read instead: not that dataset
            {"name": "c", "offline_sample": False},
        ],
    }
    assert front_matter(tmp_path, {"stage": "sft"}, manifest)["datasets"] == ["org/a"]


def test_the_reward_stage_card_is_a_text_classifier(tmp_path, tiny_tokenizer_dir):
    train = write_jsonl(tmp_path / "pairs.jsonl", copy_pairs(64, seed=0))
    cfg = stage_cfg(tmp_path / "rm", "reward", "tiny", str(tiny_tokenizer_dir), train)
    run_stage(cfg, console=False)
    meta, body = card(tmp_path / "rm")
    assert meta["pipeline_tag"] == "text-classification" and meta["tags"] == ["minigpt", "reward"]
    assert "AutoModelForSequenceClassification.from_pretrained" in body


def test_the_task_evaluations_refresh_the_card(tmp_path, chain):
    folder = tmp_path / "sft"
    shutil.copytree(chain["sft"], folder)
    assert "## Task evaluation" not in card(folder)[1]
    args = {"games_per_opponent": 2, "optimal_rate": False, "exhaustive": False, "max_new_tokens": 4}
    specs = [
        EvaluationSpec.model_validate({"task": "tictactoe", "args": args}),
        EvaluationSpec.model_validate({"task": "tictactoe", "name": "more", "args": {**args, "seed": 1}}),
    ]
    results = evaluate_stage(specs, folder)
    _, body = card(folder)
    section = body.split("## Task evaluation", 1)[1]
    assert "### tic-tac-toe\n" in section and "### tic-tac-toe (`more`)" in section
    for label, result in results.items():
        part = section.split(f"### tic-tac-toe{'' if label == 'tictactoe' else ' (`more`)'}\n", 1)[1]
        for opponent, seats in result["games"].items():
            for seat, row in seats.items():
                assert f"| {opponent} | {seat} | {row['n']} |" in part


def test_a_half_written_card_is_cleared_as_a_leftover(tmp_path):
    (tmp_path / "README.md.tmp").write_text("---\nlibrary_")
    (tmp_path / "README.md").write_text("kept")
    assert [p.name for p in clear_leftovers(tmp_path)] == ["README.md.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
