"""The built-in evaluation tasks: each name maps to its typed ``args`` (torch-free, so a recipe's
``evaluation:`` is checked without the training stack) and to its functions, imported on first use:

- ``evaluate(model_dir, args) -> dict``: a JSON-serialisable result for one model folder;
- ``headline(result) -> {label: score}``: the scores in [0, 1], higher better, that the report's benchmark
  table and plot show (none for a task that only shows text);
- ``describe(result) -> str``: markdown for one result (what ``minigpt eval`` prints);
- ``report(results) -> [lines]``: the report card's section over ``[(stage, result), ...]``; absent: a
  generic one (the headline per stage, then each stage's ``describe`` folded);
- ``during_training(model, tokenizer, args) -> {metric: value}``: the task on the model being trained (in
  memory, eval mode, no gradients), logged as ``eval/task/<metric>``; absent: the task cannot run during
  training (``evaluation[].during_training`` is refused).

Adding a task: its args class in a torch-free module, its functions in another, one ``_task(...)`` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minigpt.registry import EVAL_TASKS, import_object
from minigpt.tasks.gsm8k.gsm8k_settings import GSM8KEvalArgs
from minigpt.tasks.harness.harness_settings import HarnessEvalArgs
from minigpt.tasks.samples.samples_settings import SamplesEvalArgs
from minigpt.tasks.tictactoe.eval_settings import TicTacToeEvalArgs
from minigpt.typed_config import Strict

# What ``minigpt eval`` runs without --task (its only task before tasks were registered).
DEFAULT_TASK = "tictactoe"


@dataclass(frozen=True)
class EvalTask:
    name: str
    title: str
    """The report card's section heading."""
    params: type[Strict]
    evaluate: str
    """``module:function`` of each function (see the module docstring)."""
    headline: str
    describe: str
    report: str | None = None
    result_file: str | None = None
    """File name of the result in the model folder; default ``eval_<name>.json``."""
    commands: tuple[str, ...] = ()
    """``module:function(subparsers)`` adding the task's own sub-commands to ``minigpt``."""
    eval_flags: str | None = None
    """``module:function(parser) -> (namespace -> args given)``: the task's own ``minigpt eval`` flags."""
    during_training: str | None = None

    def function(self, role: str) -> Callable[..., Any]:
        path = getattr(self, role)
        return import_object(path, f"evaluation task '{self.name}' {role}")


def _task(**fields: Any) -> None:
    EVAL_TASKS.register(fields["name"])(EvalTask(**fields))


_task(
    name="tictactoe",
    title="tic-tac-toe",
    params=TicTacToeEvalArgs,
    evaluate="minigpt.tasks.tictactoe.eval_task:evaluate",
    headline="minigpt.tasks.tictactoe.eval_task:headline",
    describe="minigpt.tasks.tictactoe.eval_task:describe",
    report="minigpt.tasks.tictactoe.eval_task:report_section",
    result_file="task_eval.json",  # the name it had before tasks were registered (old run folders)
    commands=("minigpt.tasks.tictactoe.play:register_play",),
    eval_flags="minigpt.tasks.tictactoe.eval_task:add_eval_flags",
    during_training="minigpt.tasks.tictactoe.eval_task:evaluate_during_training",
)
_task(
    name="gsm8k",
    title="GSM8K (exact match of the final number)",
    params=GSM8KEvalArgs,
    evaluate="minigpt.tasks.gsm8k.gsm8k_eval:evaluate",
    headline="minigpt.tasks.gsm8k.gsm8k_eval:headline",
    describe="minigpt.tasks.gsm8k.gsm8k_eval:describe",
)
_task(
    name="lm_eval",
    title="lm-evaluation-harness",
    params=HarnessEvalArgs,
    evaluate="minigpt.tasks.harness.harness_eval:evaluate",
    headline="minigpt.tasks.harness.harness_eval:headline",
    describe="minigpt.tasks.harness.harness_eval:describe",
)
_task(
    name="samples",
    title="samples",
    params=SamplesEvalArgs,
    evaluate="minigpt.tasks.samples.samples_eval:evaluate",
    headline="minigpt.tasks.samples.samples_eval:headline",
    describe="minigpt.tasks.samples.samples_eval:describe",
    report="minigpt.tasks.samples.samples_eval:report_section",
)
