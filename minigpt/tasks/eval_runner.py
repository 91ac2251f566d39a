"""Running evaluation tasks on a model folder and reading their results back.

Each evaluation writes ``<folder>/eval_<label>.json`` (tic-tac-toe under its own name, ``task_eval.json``,
as before tasks were registered); the result carries ``task`` so a reader knows which task's functions render
it. The report card and ``minigpt eval`` go through here, never through a task by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minigpt.stage_files import read_json_mapping
from minigpt.tasks.eval_spec import EvaluationSpec

RESULT_PREFIX = "eval_"


def result_path(folder: str | Path, spec: EvaluationSpec) -> Path:
    from minigpt.registry import EVAL_TASKS

    task = EVAL_TASKS.get(spec.task)
    if spec.name in (None, spec.task) and task.result_file:
        return Path(folder) / task.result_file
    return Path(folder) / f"{RESULT_PREFIX}{spec.label}.json"


def run_evaluation(spec: EvaluationSpec, model_dir: str | Path, out_json: str | Path | None = None) -> dict:
    """Evaluate ``model_dir`` on one task and write the result (default: :func:`result_path`), secrets
    redacted."""
    from minigpt.checkpoints import write_json_atomic
    from minigpt.registry import EVAL_TASKS

    task = EVAL_TASKS.get(spec.task)
    result = task.function("evaluate")(Path(model_dir), spec.args)
    result = {"task": spec.task, **result, "model_dir": str(model_dir)}
    out = Path(out_json) if out_json is not None else result_path(model_dir, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)  # secrets redacted
    return result


def _result(path: Path) -> dict[str, Any] | None:
    return read_json_mapping(path) or None


def run_evaluations(specs: list[EvaluationSpec], model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every evaluation of ``specs`` on ``model_dir``, in order: ``{label: result}``."""
    return {spec.label: run_evaluation(spec, model_dir) for spec in specs}


def read_evaluations(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{label: result}`` of a model folder's evaluation files, each with its ``task``; files from before
    tasks were registered (a task's own ``result_file`` without ``task``) are read as that task's."""
    from minigpt.registry import EVAL_TASKS

    folder = Path(folder)
    found: dict[str, dict[str, Any]] = {}
    for name in EVAL_TASKS.names():
        own = EVAL_TASKS.get(name).result_file
        result = _result(folder / own) if own else None
        if result is not None:
            found[name] = {"task": name, **result}
    for path in sorted(folder.glob(f"{RESULT_PREFIX}*.json")):
        result = _result(path)
        if result is not None and result.get("task") in EVAL_TASKS:
            found[path.stem[len(RESULT_PREFIX) :]] = result
    return found
