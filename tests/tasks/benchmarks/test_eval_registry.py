"""The evaluation-task registry: recipe ``evaluation:`` lists (and the older single mapping), typed args per
task with file/line errors, result files, and ``minigpt eval --task``."""

from __future__ import annotations

import json

import pytest
from test_text_tasks import tiny_adder_model  # noqa: F401  (a sibling module's fixture)

from minigpt.errors import ConfigError
from minigpt.recipe_plan import Recipe, load_recipe
from minigpt.registry import EVAL_TASKS

RECIPE = """name: evals
evaluation:
  - task: tictactoe
    args: {games_per_opponent: 4}
  - task: gsm8k
    args: {data: rows.jsonl, limit: 3}
  - {task: samples, name: short, args: {prompts: [Hi], max_new_tokens: 4}}
  - {task: samples}
stages:
  - name: sft
    config: {stage: sft, model: {init: tiny}, data: {train: [rows.jsonl]}}
"""


def _recipe(tmp_path, text: str = RECIPE):
    (tmp_path / "rows.jsonl").write_text('{"question": "a?", "answer": 1}\n')
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_every_task_is_registered_with_its_functions():
    assert EVAL_TASKS.names() == ["gsm8k", "lm_eval", "samples", "tictactoe"]
    for name in EVAL_TASKS.names():
        task = EVAL_TASKS.get(name)
        for role in ("evaluate", "headline", "describe") + (("report",) if task.report else ()):
            assert callable(task.function(role))


def test_a_list_of_evaluations_is_typed_per_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # rows.jsonl is found next to the recipe, not from here
    recipe, _ = load_recipe(_recipe(tmp_path))
    assert [(s.task, s.label) for s in recipe.evaluation] == [
        ("tictactoe", "tictactoe"),
        ("gsm8k", "gsm8k"),
        ("samples", "short"),
        ("samples", "samples"),
    ]
    ttt, gsm8k, short, samples = recipe.evaluation
    assert ttt.args.games_per_opponent == 4 and ttt.args.exhaustive  # the rest at the task's defaults
    assert gsm8k.args.data == str(tmp_path / "rows.jsonl") and gsm8k.args.limit == 3
    assert short.args.prompts == ["Hi"] and len(samples.args.prompts) == 3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("limit: 3", "limit: 0"), r"recipe.yaml:6: key 'evaluation.1.args.limit'"),
        (("limit: 3", "limt: 3"), r"recipe.yaml:6: unknown key 'evaluation.1.args.limt'"),
        (
            ("task: gsm8k", "task: gsm8"),
            r"recipe.yaml:5: .*unknown evaluation task 'gsm8'. Did you mean 'gsm8k'",
        ),
        (("name: short, ", ""), r"two evaluations named samples: give each its own 'name'"),
    ],
)
def test_bad_evaluations_are_refused_with_file_line_and_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(_recipe(tmp_path, RECIPE.replace(*edit)))


def test_the_single_mapping_form_is_one_evaluation():
    single = {"task": "tictactoe", "args": {"positions": 10}}
    base = {"name": "x", "stages": [{"name": "a"}]}
    (spec,) = Recipe.model_validate(base | {"evaluation": single}).evaluation
    assert spec.task == "tictactoe" and spec.args.positions == 10
    assert Recipe.model_validate(base | {"evaluation": {}}).evaluation == []
    assert Recipe.model_validate(base | {"evaluation": {"task": None}}).evaluation == []
    assert Recipe.model_validate(base).evaluation == []


def test_eval_command_runs_several_tasks(tiny_adder_model, tmp_path, capsys):  # noqa: F811
    import shutil

    from minigpt.cli import main
    from minigpt.tasks.eval_runner import read_evaluations

    model = tmp_path / "model"
    shutil.copytree(tiny_adder_model, model)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"question": f"What is {i} plus 1?", "answer": i + 1}) + "\n" for i in range(4))
    )
    argv = ["eval", str(model), "--task", "gsm8k", "--task", "samples", "--arg", f"gsm8k.data={rows}"]
    assert main([*argv, "--arg", "max_new_tokens=6", "--arg", "samples.prompts=[Hello]"]) == 0
    out = capsys.readouterr().out
    found = read_evaluations(model)
    assert set(found) == {"gsm8k", "samples"}
    gsm8k, samples = found["gsm8k"], found["samples"]
    assert gsm8k["task"] == "gsm8k" and gsm8k["n"] == 4 and gsm8k["settings"]["max_new_tokens"] == 6
    assert samples["settings"]["max_new_tokens"] == 6 and [s["prompt"] for s in samples["samples"]] == [
        "Hello"
    ]
    assert f"Exact match: {gsm8k['correct']} of 4" in out and f"written: {model / 'eval_samples.json'}" in out
    # a task's own flags without that task, --output with two tasks, a bad switch: one-line errors
    assert main(["eval", str(model), "--task", "gsm8k", "--games", "2"]) == 2
    assert "games_per_opponent: switches of the 'tictactoe' task" in capsys.readouterr().err
    assert main([*argv, "--output", str(tmp_path / "x.json")]) == 2
    assert main(["eval", str(model), "--task", "gsm8k", "--arg", "limit=0"]) == 2
    assert "minigpt eval --task gsm8k: key 'args.limit'" in capsys.readouterr().err
