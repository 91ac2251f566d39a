"""Sub-commands that drive the pipeline, evaluation and the task (kept apart from cli.py's core)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minigpt.cli_options import add_overrides, add_trust_remote_code


def _cmd_run(args: argparse.Namespace) -> int:
    from minigpt.pipeline import run_recipe

    result = run_recipe(
        args.recipe,
        from_stage=args.from_stage,
        only=args.only,
        dry_run=args.dry_run,
        overrides=args.overrides,
    )
    if args.dry_run:
        return 0
    from minigpt.distributed import is_main_process

    if is_main_process():  # under accelerate launch / torchrun: one report
        run_dir = Path(result["run_dir"])
        from minigpt.report.report_card import build_report

        print(f"outputs: {run_dir}")
        print(f"report: {build_report(run_dir)}")
    return 0


def register_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a whole pipeline recipe (skips finished stages, resumes)")
    run.add_argument("recipe", help="recipe YAML (e.g. recipes/tictactoe.yaml)")
    run.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun from this stage on")
    run.add_argument("--only", metavar="STAGE", help="run only this stage")
    run.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    add_overrides(run, "recipe", "stages.2.config.train.max_steps=100")
    run.set_defaults(func=_cmd_run)


def _task_args(args: argparse.Namespace, tasks: list[str]) -> dict[str, dict]:
    """Each task's ``args`` from the command line: the task's own flags, then ``--arg`` (``KEY=VALUE`` for
    every task, ``TASK.KEY=VALUE`` for one), then ``--trust-remote-code``."""
    from minigpt.errors import ConfigError
    from minigpt.typed_config import apply_overrides, parse_override

    raw: dict[str, dict] = {name: {} for name in tasks}
    for name, given in args.task_flags.items():
        values = given(args)
        if values and name not in raw:
            raise ConfigError(
                f"{', '.join(values)}: switches of the '{name}' task, which is not asked for "
                f"(--task {' '.join(tasks)}); use --task {name}, or --arg for the other tasks"
            )
        if name in raw:
            raw[name].update(values)
    for item in args.task_args:
        parts, _ = parse_override(item)
        if len(parts) > 1 and parts[0] in raw:
            apply_overrides(raw[parts[0]], [item.split(".", 1)[1]])
        else:
            for values in raw.values():
                apply_overrides(values, [item])
    if args.trust_remote_code:
        for values in raw.values():
            values["trust_remote_code"] = True
    return raw


def _cmd_eval(args: argparse.Namespace) -> int:
    from minigpt.errors import ConfigError
    from minigpt.registry import EVAL_TASKS
    from minigpt.tasks.eval_runner import result_path, run_evaluation
    from minigpt.tasks.eval_spec import EvaluationSpec
    from minigpt.typed_config import validate

    tasks = list(dict.fromkeys(args.tasks or [args.default_task]))
    if args.output and len(tasks) > 1:
        raise ConfigError(
            "--output names one file: give one --task (each task writes its own file otherwise)"
        )
    # Every task's switches are checked (as a recipe's evaluation.args) before any model is loaded.
    specs = [
        validate(EvaluationSpec, {"task": name, "args": values}, f"minigpt eval --task {name}", {})
        for name, values in _task_args(args, tasks).items()
    ]
    card_due = False
    for spec in specs:
        default = result_path(args.checkpoint, spec)
        out = Path(args.output) if args.output else default
        result = run_evaluation(spec, args.checkpoint, out_json=out)
        print(EVAL_TASKS.get(spec.task).function("describe")(result))
        print(f"written: {out}")
        card_due = card_due or out.resolve() == default.resolve()
    if card_due:
        from minigpt.model_card import refresh_model_card

        card = refresh_model_card(args.checkpoint)  # a stage folder's card reports its evaluations
        if card is not None:
            print(f"updated: {card}")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    from minigpt.registry import EVAL_TASKS
    from minigpt.tasks.eval_catalog import DEFAULT_TASK

    names = EVAL_TASKS.names()
    ev = sub.add_parser("eval", help=f"evaluate a checkpoint on evaluation tasks ({', '.join(names)})")
    ev.add_argument("checkpoint", help="a stage output folder (HF model folder)")
    ev.add_argument(
        "--task",
        dest="tasks",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"an evaluation task (repeatable): {', '.join(names)}; default {DEFAULT_TASK}",
    )
    ev.add_argument(
        "--arg",
        dest="task_args",
        action="append",
        default=[],
        metavar="[TASK.]KEY=VALUE",
        help="a task switch, the value read as YAML (repeatable), e.g. --arg gsm8k.limit=20; "
        "without TASK. it goes to every task asked for",
    )
    ev.add_argument("--output", help="JSON path of the one task's result (default: its file in CHECKPOINT)")
    add_trust_remote_code(ev)
    # The tasks' own flags (e.g. --games, --positions), defined next to each task.
    flags = {
        name: EVAL_TASKS.get(name).function("eval_flags")(ev)
        for name in names
        if EVAL_TASKS.get(name).eval_flags
    }
    ev.set_defaults(func=_cmd_eval, task_flags=flags, default_task=DEFAULT_TASK)


def register_task_commands(sub: argparse._SubParsersAction) -> None:
    """The sub-commands evaluation tasks bring (e.g. ``minigpt play``)."""
    from minigpt.registry import EVAL_TASKS, import_object

    for name in EVAL_TASKS.names():
        for path in EVAL_TASKS.get(name).commands:
            import_object(path, f"evaluation task '{name}' command")(sub)
