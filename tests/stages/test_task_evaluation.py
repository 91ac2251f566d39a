"""The task evaluation during training (``task_eval``, recipe ``evaluation[].during_training``): when it runs,
what it logs, that its numbers are the task's own, that it leaves training untouched, and its refusals."""

import json
from pathlib import Path

import pytest
from support import assert_same_logged, tictactoe_model_dir, write_jsonl

from minigpt.errors import ConfigError
from minigpt.metrics import read_metrics
from minigpt.stages.stage_config import StageConfig
from minigpt.tasks.eval_spec import EvaluationSpec
from minigpt.tasks.tictactoe.generators import tictactoe_sft
from minigpt.typed_config import validate

ARGS = {"positions": 40, "positions_seed": 3, "exhaustive": True, "max_new_tokens": 12, "batch_size": 16}


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-eval")
    model = tictactoe_model_dir(root / "model")
    rows = write_jsonl(
        root / "sft.jsonl", list(tictactoe_sft(sample=64, moves="preferred", reasoning=True, seed=0))
    )
    return model, rows


def _cfg(start, out: Path, task_eval: dict | None, interval: int = 2, steps: int = 4) -> StageConfig:
    model, rows = start
    data = {
        "stage": "sft",
        "output_dir": str(out),
        "seed": 0,
        "model": {"init": str(model)},
        "data": {"train": [str(rows)], "max_length": 96},
        "train": {
            "max_steps": steps,
            "batch_size": 8,
            "lr": 3e-3,
            "eval_interval": interval,
            "log_interval": 1,
        },
    }
    if task_eval is not None:
        data["task_eval"] = task_eval
    return validate(StageConfig, data)


@pytest.fixture(scope="module")
def runs(start, tmp_path_factory):
    from minigpt.runner import run_stage

    root = tmp_path_factory.mktemp("task-eval-runs")
    plain = run_stage(_cfg(start, root / "plain", None), console=False)
    spec = {"task": "tictactoe", "args": ARGS}
    evaluated = run_stage(_cfg(start, root / "evaluated", spec), console=False)
    return root, plain, evaluated


def _task_records(folder: Path) -> list[dict]:
    return [r for r in read_metrics(folder / "metrics.jsonl") if "eval/task/optimal_rate" in r]


def test_runs_at_the_start_every_interval_and_at_the_end(runs):
    root, _, summary = runs
    records = _task_records(root / "evaluated")
    assert [r["step"] for r in records] == [0, 2, 4]
    keys = {
        "optimal_rate",
        "outcome_preserving_rate",
        "illegal_rate",
        "parse_error_rate",
        "seconds",
        "samples",
    }
    keys |= {"losses_X", "losses_O", "invalid_X", "invalid_O"}
    assert set(records[-1]) >= {f"eval/task/{k}" for k in keys}
    # samples: optimizer steps × batch_size (one process, no accumulation)
    assert [r["eval/task/samples"] for r in records] == [0.0, 16.0, 32.0]
    cost = summary["task_eval"]
    assert cost["evaluations"] == 3
    assert cost["seconds"] == pytest.approx(sum(r["eval/task/seconds"] for r in records), abs=0.05)
    assert 0 < cost["share"] < 1
    assert json.loads((root / "evaluated" / "stage.json").read_text())["task_eval"] == cost


def test_throughput_windows_cover_training_only(runs):
    """Every logged window reports rates whose ratio is the batch, including the windows that hold an
    evaluation (transformers' and the task's, which runs just before the log of its step): the evaluation's
    time is left out and the window's steps and samples are all counted."""
    root, _, _ = runs
    for run in ("plain", "evaluated"):
        windows = [r for r in read_metrics(root / run / "metrics.jsonl") if "train/loss" in r]
        assert [r["step"] for r in windows] == [1, 2, 3, 4], run
        for r in windows:
            ratio = r["train/samples_per_second"] / r["train/steps_per_second"]
            assert ratio == pytest.approx(8.0), (run, r["step"])  # batch_size 8, one process


def test_last_value_is_the_task_on_the_exported_model(runs):
    """The in-memory evaluation at the last step equals the task run on the exported folder, with the same
    switches: the callback measures the model it is given, not a stale or different one."""
    from minigpt.tasks.tictactoe.arena import exhaustive_check
    from minigpt.tasks.tictactoe.eval_settings import position_subset
    from minigpt.tasks.tictactoe.evaluate import optimal_move_rate
    from minigpt.tasks.tictactoe.player import load_player

    root, _, _ = runs
    last = _task_records(root / "evaluated")[-1]
    player = load_player(root / "evaluated", max_new_tokens=12, batch_size=16)
    sweep = optimal_move_rate(player, 16, position_subset(40, 3))
    assert sweep["n"] == 40
    for key in ("optimal", "outcome_preserving", "illegal", "parse_error"):
        assert last[f"eval/task/{key}_rate"] == pytest.approx(sweep[key]["rate"], abs=1e-12), key
    for seat in ("X", "O"):
        assert last[f"eval/task/losses_{seat}"] == exhaustive_check(player, seat).losses


def test_training_is_untouched(runs):
    """Losses, gradient norms and the final weights are the same with and without the evaluations."""
    from support import assert_same_weights

    root, plain, evaluated = runs
    assert_same_logged(root / "plain", root / "evaluated", ["train/loss", "train/grad_norm"], atol=0.0)
    assert_same_weights(root / "plain", root / "evaluated", atol=0.0)
    assert not _task_records(root / "plain") and "task_eval" not in plain
    assert evaluated["global_step"] == plain["global_step"] == 4


def test_without_an_interval_it_runs_at_the_start_and_the_end(start, tmp_path):
    from minigpt.runner import run_stage

    spec = {"task": "tictactoe", "args": {**ARGS, "exhaustive": False, "positions": 10}}
    run_stage(_cfg(start, tmp_path / "out", spec, interval=0, steps=3), console=False)
    records = _task_records(tmp_path / "out")
    assert [r["step"] for r in records] == [0, 3]
    assert "eval/task/losses_X" not in records[0]


def test_refusals_name_the_field():
    base = {"stage": "reward", "output_dir": "/tmp/x", "model": {"init": "tiny"}, "data": {"train": ["a"]}}
    with pytest.raises(ConfigError, match="task_eval: stage 'reward' trains a model that does not answer"):
        validate(StageConfig, {**base, "task_eval": {"task": "tictactoe"}})
    with pytest.raises(ConfigError, match="task_eval: task 'gsm8k' has no evaluation during training"):
        validate(StageConfig, {**base, "stage": "sft", "task_eval": {"task": "gsm8k"}})
    with pytest.raises(ConfigError, match="during_training.*task .samples. has no evaluation"):
        validate(EvaluationSpec, {"task": "samples", "during_training": {}})
    with pytest.raises(ConfigError, match="during_training.*positions: a count of positions must be"):
        validate(EvaluationSpec, {"task": "tictactoe", "during_training": {"positions": 0}})


def test_training_spec_layers_during_training_over_args():
    spec = validate(
        EvaluationSpec,
        {
            "task": "tictactoe",
            "args": {"max_new_tokens": 40, "positions": 900},
            "during_training": {"positions": 200},
        },
    )
    inner = spec.training_spec()
    assert inner.args.max_new_tokens == 40 and inner.args.positions == 200 and inner.during_training is None
    assert spec.args.positions == 900  # the evaluation after the stage keeps its own switches
    assert validate(EvaluationSpec, {"task": "tictactoe"}).training_spec() is None


def _recipe(tmp_path: Path, evaluation: str) -> Path:
    (tmp_path / "rows.jsonl").write_text("{}\n")
    text = f"""name: t
output_dir: {tmp_path / "run"}
evaluation:
{evaluation}
stages:
  - name: sft
    config:
      stage: sft
      model: {{init: tiny}}
      data: {{train: [rows.jsonl]}}
      train: {{eval_interval: 5}}
  - name: dpo
    config:
      stage: dpo
      data: {{train: [rows.jsonl]}}
  - name: reward
    from: sft
    config:
      stage: reward
      data: {{train: [rows.jsonl]}}
      train: {{eval_interval: 5}}
"""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_recipe_gives_it_to_the_stages_with_an_interval(tmp_path):
    from minigpt.recipe_plan import load_recipe

    path = _recipe(
        tmp_path,
        "  - {task: tictactoe, args: {max_new_tokens: 40}, during_training: {positions: 300, exhaustive: false}}",
    )
    _, planned = load_recipe(path)
    sft, dpo, reward = (p.config for p in planned)
    assert sft.task_eval.args.positions == 300 and sft.task_eval.args.max_new_tokens == 40
    assert not sft.task_eval.args.exhaustive and sft.task_eval.during_training is None
    assert dpo.task_eval is None  # no train.eval_interval
    assert reward.task_eval is None  # a classifier: nothing to ask
    # The switches are part of the config (and so of the key) of the stages that use them only; the other
    # two change keys here because both start from sft.
    _, again = load_recipe(path, ["evaluation.0.during_training.positions=301"])
    assert [a.config == b.config for a, b in zip(planned, again, strict=True)] == [False, True, True]
    assert planned[0].key != again[0].key


def test_a_recipe_allows_one_evaluation_during_training(tmp_path):
    from minigpt.recipe_plan import load_recipe

    two = (
        "  - {task: tictactoe, during_training: {positions: 10}}\n"
        "  - {task: tictactoe, name: second, during_training: {positions: 20}}"
    )
    with pytest.raises(ConfigError, match="both have during_training"):
        load_recipe(_recipe(tmp_path, two))
