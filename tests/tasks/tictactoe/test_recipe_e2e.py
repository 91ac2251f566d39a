"""The default recipe (make demo), shortened, end to end on CPU: tokenizer → pretrain → SFT → DPO → GRPO with
the arena after every stage. The model must beat its untrained self (the pretrained checkpoint, which has
never seen an answer) by a clear margin."""

import json
from pathlib import Path

import pytest
import yaml
from support import short_onpolicy_mixture

from minigpt.pipeline import run_recipe

SFT_STEPS = 150
# The arena after each stage asks a fixed seeded subset of the positions, not all 4,520 (the test's time).
POSITIONS = 1000
# The on-policy DPO pairs and RL prompts are drawn from a seeded share of the positions, not all of them: the
# start's sampled sweep over 4,520 positions would cost more than the shortened stages themselves.
ONPOLICY_POSITIONS = 600


def _short_mixture(recipe_file: str, folder: Path) -> Path:
    """The recipe's on-policy mixture with its on-policy source limited to ONPOLICY_POSITIONS positions."""
    recipe = yaml.safe_load(Path("recipes/tictactoe.yaml").read_text())
    used = [
        st["config"]["data"].get("data_config") for st in recipe["stages"] if "data" in st.get("config", {})
    ]
    assert f"tictactoe/{recipe_file}" in used, used  # the test shortens what the recipe runs
    return short_onpolicy_mixture(recipe_file, ONPOLICY_POSITIONS, folder)


@pytest.mark.slow
def test_shortened_tictactoe_recipe_beats_its_untrained_self(tmp_path):
    run = tmp_path / "run"
    sets = [
        f"output_dir={run}",
        "evaluation.args.games_per_opponent=20",
        f"evaluation.args.positions={POSITIONS}",
        "stages.1.config.train.max_steps=5",
        f"stages.2.config.train.max_steps={SFT_STEPS}",
        "stages.3.config.train.max_steps=3",
        f"stages.3.config.data.data_config={_short_mixture('dpo-anchored.yaml', tmp_path)}",
        "stages.4.config.train.max_steps=2",
        f"stages.4.config.data.data_config={_short_mixture('rl-onpolicy.yaml', tmp_path)}",
    ]
    result = run_recipe("recipes/tictactoe.yaml", overrides=sets, console=False)
    assert [name for name, action, _ in result["plan"]] == ["tokenizer", "pretrain", "sft", "dpo", "grpo"]

    def arena(stage: str) -> dict:
        return json.loads(Path(run / stage / "task_eval.json").read_text())

    def rows_from(stage: str, generator: str) -> int:
        (manifest,) = (run / stage / "data").glob("*_manifest.json")
        sources = json.loads(manifest.read_text())["sources"]
        return sum(s["rows_read"] for s in sources if s["origin"] == f"generator {generator}")

    # DPO learns from the SFT model's own mistakes and GRPO asks the DPO model's: 150 SFT steps leave hundreds
    # (measured: 567 pairs, 270 prompts of the 600 positions)
    assert rows_from("dpo", "tictactoe_dpo_onpolicy") > 100
    assert rows_from("grpo", "tictactoe_rl_onpolicy") > 50

    before, after = arena("pretrain"), arena("grpo")
    for stage in ("pretrain", "sft", "dpo", "grpo"):  # evaluated after every stage
        assert arena(stage)["optimal_moves"]["n"] == POSITIONS

    def rate(result: dict, key: str) -> float:
        return result["optimal_moves"][key]["rate"]

    def wins_as_o_vs_random(result: dict) -> float:
        return result["games"]["random"]["O"]["win"]["rate"]

    # The pretrained model continues game transcripts instead of answering: no legal answer at all.
    assert rate(before, "optimal") == 0.0 and rate(before, "parse_error") > 0.9
    # Stated margins, measured at 150 SFT steps on the 1,000-position subset (2026-12-03, with the on-policy DPO
    # and GRPO stages on 600 positions): optimal moves 0.0 → 0.578 after SFT, 0.581 after DPO, 0.569 after GRPO;
    # invalid answers 100% → 0.6%; wins as O against random 0.0 → 0.50 (as X the opening answer is not yet valid
    # this early, so every X game is forfeited: both seats are compared only in the full recipe's README table).
    assert rate(after, "optimal") >= 0.45, after["optimal_moves"]
    assert rate(after, "parse_error") + rate(after, "illegal") <= 0.05
    assert wins_as_o_vs_random(after) >= wins_as_o_vs_random(before) + 0.2
