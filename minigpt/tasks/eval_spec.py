"""One entry of a recipe's ``evaluation:`` list (and of ``minigpt eval --task``): a registered task and its
typed ``args``. Validating an entry picks the class whose ``args`` is that task's own args class, so a wrong
switch is reported with its file, line and key path before any model is loaded. Torch-free."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from minigpt.typed_config import Strict, typed_variant


class EvaluationSpec(Strict):
    task: str
    """A registered evaluation task (``minigpt list``): tictactoe, gsm8k, lm_eval, samples."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    """The evaluation's label (report columns, the ``eval_<name>.json`` file); default the task's name.
    Two evaluations of one task need two names."""
    args: Any = None
    """The task's switches (its args class; docs/report.md)."""
    during_training: dict[str, Any] | None = None
    """Also run this task while a stage trains (every ``train.eval_interval`` steps, at the start and at the
    end; logged as ``eval/task/*``), with these switches over ``args`` (e.g. a small fixed subset of
    positions). Only for a task that can evaluate the in-memory model (tic-tac-toe); null: only after the
    stage."""

    @property
    def label(self) -> str:
        return self.name or self.task

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from minigpt.registry import EVAL_TASKS, registered

        return registered(EVAL_TASKS, value)

    @field_validator("during_training")
    @classmethod
    def _check_during_training(cls, value: dict[str, Any] | None, info: ValidationInfo) -> Any:
        args = info.data.get("args")
        if value is not None and isinstance(args, BaseModel):  # the typed variant: args validated first
            _training_args(info.data["task"], args, value)
        return value

    def training_spec(self) -> EvaluationSpec | None:
        """The evaluation a stage runs during training: ``args`` with ``during_training`` over them (None
        without ``during_training``). A task without an in-training evaluation, or a wrong switch, raises
        ValueError naming ``during_training``."""
        if self.during_training is None:
            return None
        args = _training_args(self.task, self.args, self.during_training)
        return self.model_copy(update={"args": args, "during_training": None})

    @model_validator(mode="wrap")
    @classmethod
    def _typed_args(cls, data: Any, handler: Any) -> Any:
        from minigpt.registry import EVAL_TASKS

        if cls is EvaluationSpec and isinstance(data, dict):
            task = data.get("task")
            if isinstance(task, str) and task in EVAL_TASKS:
                return eval_spec_class(task).model_validate(data)
        return handler(data)


def _training_args(task: str, args: BaseModel, during: dict[str, Any]) -> BaseModel:
    """``args`` with ``during`` over them, validated; ValueError for a task without an in-training
    evaluation or a wrong switch (named)."""
    from minigpt.registry import EVAL_TASKS

    if EVAL_TASKS.get(task).during_training is None:
        raise ValueError(f"task '{task}' has no evaluation during training")
    try:
        return type(args).model_validate({**args.model_dump(exclude_unset=True), **during})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(args)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None


@cache
def eval_spec_class(task: str) -> type[EvaluationSpec]:
    """``EvaluationSpec`` with ``args`` typed as task ``task``'s args class."""
    from minigpt.registry import EVAL_TASKS

    return typed_variant(EvaluationSpec, "args", EVAL_TASKS.get(task).params, "Spec")


def evaluation_list(value: Any) -> Any:
    """A recipe's ``evaluation:`` as a list: the older single mapping (``{task: tictactoe, args: ...}``) is
    one entry, and a mapping without a task (``{}``, ``task: null``) none."""
    if isinstance(value, dict):
        if value.get("task") is None and not set(value) - {"task"}:
            return []
        return [EvaluationSpec.model_validate(value)]  # errors keep the mapping's own key paths
    return value


def check_labels(specs: list[EvaluationSpec]) -> list[EvaluationSpec]:
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"two evaluations named {', '.join(repeated)}: give each its own 'name'")
    return specs


def resolve_evaluation_paths(specs: list[EvaluationSpec], base: Path) -> None:
    """Files in the args (a JSONL, task YAMLs) relative to ``base``, the recipe's folder, when they are there
    and not from the working directory (as a stage config's paths)."""
    for spec in specs:
        resolved = getattr(spec.args, "resolved", None)
        if resolved is not None:
            spec.args = resolved(base)
