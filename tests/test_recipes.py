"""Every shipped recipe validates (each stage's config and algo section) and plans offline."""

from pathlib import Path

import pytest

from minigpt.pipeline import run_recipe
from minigpt.recipe_plan import load_recipe

RECIPES = sorted(Path("recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipe_validates(recipe, tmp_path):
    _, planned = load_recipe(recipe, overrides=[f"output_dir={tmp_path / 'run'}"])
    # a from-scratch recipe trains its tokenizer first; a post-training one starts from a model folder
    assert planned and (planned[0].entry.kind == "tokenizer" or recipe.stem.endswith("-hf"))
    plan = run_recipe(recipe, dry_run=True, console=False, overrides=[f"output_dir={tmp_path / 'run'}"])
    assert all(action == "run" for _, action, _ in plan["plan"])


def test_tictactoe_recipe_is_the_default_demo():
    makefile = Path("Makefile").read_text()
    assert "RECIPE ?= recipes/tictactoe.yaml" in makefile


@pytest.mark.slow
def test_hf_recipe_post_trains_a_local_hf_model_folder(tmp_path, tiny_tokenizer_dir):
    """The -hf recipe on a tiny local HF folder standing in for a downloaded Qwen2.5 (same ChatML template)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    base = tmp_path / "base-model"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    run = tmp_path / "run"
    sets = [
        f"output_dir={run}",
        f"stages.0.config.model.init={base}",
        "evaluation.args.games_per_opponent=2",
        "stages.0.config.train.max_steps=2",
        "stages.1.config.train.max_steps=2",
        "stages.2.config.train.max_steps=1",
        "stages.2.config.algo.max_completion_length=8",
        "stages.2.config.train.batch_size=8",
    ]
    result = run_recipe("recipes/tictactoe-hf.yaml", overrides=sets, console=False)
    assert [a for _, a, _ in result["plan"]] == ["run", "run", "run"]
    for stage in ("sft", "dpo", "grpo"):
        assert (run / stage / "stage.json").exists() and (run / stage / "task_eval.json").exists()
    assert (run / "sft" / "config.json").exists()


@pytest.mark.slow
def test_minimind_zero_runs_offline_on_the_shipped_samples(tmp_path, monkeypatch):
    """The general-LLM recipe end to end, shrunk to a few steps of a small model (the shipped data samples)."""
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")
    small = (
        "{hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, "
        "num_key_value_heads: 2, head_dim: 16}"
    )
    run = tmp_path / "run"
    sets = [
        f"output_dir={run}",
        f"defaults.model.overrides={small}",
        "defaults.train.save_interval=0",
        "stages.0.config.vocab_size=600",
        "stages.1.config.train.max_steps=3",
        "stages.1.config.data.max_length=128",
        "stages.2.config.train.max_steps=2",
        "stages.2.config.data.max_length=256",
        "stages.2.config.train.eval_interval=0",
        "stages.3.config.train.max_steps=2",
        "stages.3.config.data.max_length=256",
        "stages.3.config.train.eval_interval=0",
        "stages.3.config.train.batch_size=2",
        "stages.4.config.train.max_steps=1",
        "stages.4.config.algo.max_completion_length=8",
        "stages.4.config.algo.num_generations=2",
        "stages.4.config.train.batch_size=4",
        "stages.4.config.train.eval_interval=0",
    ]
    result = run_recipe("recipes/minimind-zero.yaml", overrides=sets, console=False)
    assert [a for _, a, _ in result["plan"]] == ["run"] * 5
    for stage in ("pretrain", "sft", "dpo", "grpo"):
        summary = (run / stage / "stage.json").read_text()
        assert '"status": "done"' in summary
    metrics = (run / "grpo" / "metrics.jsonl").read_text()
    assert "train/reward" in metrics
