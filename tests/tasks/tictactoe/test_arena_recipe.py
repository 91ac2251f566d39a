"""The arena recipe (recipes/tictactoe-arena.yaml), shortened, end to end on CPU: one short SFT start, then DPO
on the start's own mistakes, GRPO, RLOO, PPO and SPO as siblings from it. Each branch must log the task
metric during training and raise it over its start; editing one branch reruns that branch only."""

import json
from pathlib import Path

import pytest

from minigpt.metrics import read_metrics
from minigpt.pipeline import run_recipe

BRANCHES = ("dpo", "grpo", "rloo", "ppo", "spo")
SHORT = [
    "evaluation.0.args.games_per_opponent=0",
    "evaluation.0.args.positions=300",
    "evaluation.0.args.exhaustive=false",
    "evaluation.0.during_training.positions=300",
    "stages.1.config.train.max_steps=5",
    "stages.2.config.train.max_steps=150",
    "stages.2.config.train.eval_interval=0",
    *(f"stages.{i}.config.train.max_steps=12" for i in range(3, 8)),
    *(f"stages.{i}.config.train.eval_interval=6" for i in range(3, 8)),
]


def _arena_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("arena", Path("benchmarks/arena.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task_curve(folder: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["eval/task/optimal_rate"])
        for r in read_metrics(folder / "metrics.jsonl")
        if "eval/task/optimal_rate" in r
    ]


@pytest.mark.slow
def test_every_branch_raises_the_task_metric_and_reruns_alone(tmp_path):
    run = tmp_path / "run"
    sets = [f"output_dir={run}", *SHORT]
    result = run_recipe("recipes/tictactoe-arena.yaml", overrides=sets, console=False)
    assert [name for name, _, _ in result["plan"]] == ["tokenizer", "pretrain", "sft", *BRANCHES]
    gains = {}
    for branch in BRANCHES:
        curve = _task_curve(run / branch)
        assert [step for step, _ in curve] == [0, 6, 12], branch
        gains[branch] = curve[-1][1] - curve[0][1]
        # every branch starts from the same checkpoint: the same subset score at its step 0
        assert curve[0][1] == _task_curve(run / "dpo")[0][1]
        assert json.loads((run / branch / "stage.json").read_text())["task_eval"]["evaluations"] == 3
    # Measured on seed 0 (2026-12-02, 300-position subset, start 59.7%): see MARGINS below.
    for branch, margin in MARGINS.items():
        assert gains[branch] >= margin, (branch, gains)

    # The arena's table reads the run: one row per branch, completions as budgeted.
    table = _arena_module().table([run])
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert set(rows) == {"sft (start)", *BRANCHES}
    assert rows["grpo"].endswith("| 768 |")  # 12 steps × 64 completions

    # Editing one branch reruns that branch and nothing else.
    before = {b: (run / b / "stage.json").stat().st_mtime_ns for b in BRANCHES}
    again = run_recipe(
        "recipes/tictactoe-arena.yaml", overrides=[*sets, "stages.5.config.train.lr=9.0e-5"], console=False
    )
    actions = {name: action for name, action, _ in again["plan"]}
    assert actions == {
        "tokenizer": "skip",
        "pretrain": "skip",
        "sft": "skip",
        "dpo": "skip",
        "grpo": "skip",
        "rloo": "rerun",
        "ppo": "skip",
        "spo": "skip",
    }
    after = {b: (run / b / "stage.json").stat().st_mtime_ns for b in BRANCHES}
    assert {b for b in BRANCHES if before[b] != after[b]} == {"rloo"}


# Gains over the start on the 300-position subset after 12 steps, measured on seed 0 (2026-12-02): grpo, ppo
# and spo +0.0067 (two positions), rloo +0.0233. DPO on this 150-step start's own mistakes lowered the rate
# (0.597 -> 0.543 at lr 5e-5; in the full arena, from a 400-step start, it raised it 71.4% -> 73.5%), so it
# is not asserted to rise here: see docs/tictactoe.md, "The post-training arena". One seed only: margins
# over seeds are not measured yet.
MARGINS = {"grpo": 0.005, "rloo": 0.02, "ppo": 0.005, "spo": 0.005}
