"""The default recipe (make demo), shortened, end to end on CPU: tokenizer → pretrain → SFT → DPO → GRPO with
the arena after every stage. The model must beat its untrained self (the pretrained checkpoint, which has
never seen an answer) by a clear margin."""

import json
from pathlib import Path

import pytest

from minigpt.pipeline import run_recipe

SFT_STEPS = 150
# The arena after each stage asks a fixed seeded subset of the positions, not all 4,520 (the test's time).
POSITIONS = 1000


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
        "stages.3.config.train.eval_interval=0",
        "stages.4.config.train.max_steps=2",
        "stages.4.config.train.eval_interval=0",
    ]
    result = run_recipe("recipes/tictactoe.yaml", overrides=sets, console=False)
    assert [name for name, action, _ in result["plan"]] == ["tokenizer", "pretrain", "sft", "dpo", "grpo"]

    def arena(stage: str) -> dict:
        return json.loads(Path(run / stage / "task_eval.json").read_text())

    before, after = arena("pretrain"), arena("grpo")
    for stage in ("pretrain", "sft", "dpo", "grpo"):  # evaluated after every stage
        assert arena(stage)["optimal_moves"]["n"] == POSITIONS

    def rate(result: dict, key: str) -> float:
        return result["optimal_moves"][key]["rate"]

    def wins_as_o_vs_random(result: dict) -> float:
        return result["games"]["random"]["O"]["win"]["rate"]

    # The pretrained model continues game transcripts instead of answering: no legal answer at all.
    assert rate(before, "optimal") == 0.0 and rate(before, "parse_error") > 0.9
    # Stated margins, measured at 150 SFT steps on the 1,000-position subset (2026-12-03): optimal moves 0.0 →
    # 0.593 (0.59 over all 4,520 positions on 2026-11-23), invalid answers 100% → 0%, wins as O against random
    # 0.0 → 0.40 (as X the opening answer is not yet valid this early, so every X game is forfeited: both seats
    # are compared only in the full recipe's README table).
    assert rate(after, "optimal") >= 0.45, after["optimal_moves"]
    assert rate(after, "parse_error") + rate(after, "illegal") <= 0.05
    assert wins_as_o_vs_random(after) >= wins_as_o_vs_random(before) + 0.2
