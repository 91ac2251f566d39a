"""Sub-commands that drive the pipeline, evaluation and the task (kept apart from cli.py's core)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_overrides(
    parser: argparse.ArgumentParser, what: str = "config", example: str = "train.lr=1e-3"
) -> None:
    """The ``--set key.sub=value`` option every config-driven command takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help=f"override a {what} field (repeatable), e.g. --set {example}",
    )


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    """The ``--trust-remote-code`` switch of the commands that load a model folder (off: such a folder is
    refused, never asked about)."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code the model folder ships (config.json auto_map); only for folders you trust",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from minigpt.pipeline import run_recipe

    result = run_recipe(
        args.recipe,
        from_stage=args.from_stage,
        only=args.only,
        dry_run=args.dry_run,
        overrides=args.overrides,
    )
    from minigpt.distributed import is_main_process

    if not args.dry_run and is_main_process():  # under accelerate launch / torchrun: one report
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint, format_report

    out = Path(args.output) if args.output else Path(args.checkpoint) / "task_eval.json"
    result = evaluate_checkpoint(
        args.checkpoint,
        out_json=out,
        games_per_opponent=args.games,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
    )
    print(format_report(result))
    print(f"written: {out}")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a checkpoint on the tic-tac-toe task (arena, optimal moves)")
    ev.add_argument("checkpoint", help="a stage output folder (HF model folder)")
    ev.add_argument("--games", type=int, default=100, help="games per opponent and seat")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--output", help="JSON path (default CHECKPOINT/task_eval.json)")
    add_trust_remote_code(ev)
    ev.set_defaults(func=_cmd_eval)


def _cmd_play(args: argparse.Namespace) -> int:
    from minigpt.tasks.tictactoe.play import play_checkpoint

    play_checkpoint(args.checkpoint, args.seat, trust_remote_code=args.trust_remote_code)
    return 0


def register_play(sub: argparse._SubParsersAction) -> None:
    play = sub.add_parser("play", help="play tic-tac-toe against a checkpoint in the terminal")
    play.add_argument("checkpoint")
    play.add_argument("--seat", choices=["X", "O"], help="your seat (asked if omitted)")
    add_trust_remote_code(play)
    play.set_defaults(func=_cmd_play)


def _late_commands() -> list:
    from minigpt.chat import register_chat
    from minigpt.report.report_card import register_report

    return [register_report, register_chat]


COMMANDS = [register_run, register_eval, register_play, *_late_commands()]
COMMANDS.append(__import__("minigpt.perf.perf_cli", fromlist=["register_bench"]).register_bench)
