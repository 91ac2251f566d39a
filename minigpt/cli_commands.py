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


def _cmd_eval(args: argparse.Namespace) -> int:
    from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint, format_report

    out = Path(args.output) if args.output else Path(args.checkpoint) / "task_eval.json"
    # Only the switches given go on: evaluate_checkpoint checks them (and fills the rest) as a recipe's
    # evaluation.args, so the CLI and a recipe refuse the same values with the same field names.
    given = {
        "games_per_opponent": args.games,
        "seed": args.seed,
        "positions": args.positions,
        "positions_seed": args.positions_seed,
        "exhaustive": args.exhaustive,
        "optimal_rate": args.optimal_rate,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "trust_remote_code": args.trust_remote_code,
    }
    kwargs = {k: v for k, v in given.items() if v is not None}
    result = evaluate_checkpoint(args.checkpoint, out_json=out, **kwargs)
    print(format_report(result))
    print(f"written: {out}")
    return 0


def _count_or_fraction(text: str) -> int | float:
    """``--positions``: an integer is a count of positions, a decimal a fraction of them."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (500) or a fraction (0.1), got {text!r}"
        ) from None


def register_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a checkpoint on the tic-tac-toe task (arena, optimal moves)")
    ev.add_argument("checkpoint", help="a stage output folder (HF model folder)")
    ev.add_argument("--games", type=int, default=100, help="games per opponent and seat (0: no games)")
    ev.add_argument("--seed", type=int, default=0, help="seeds the opponents of the games")
    ev.add_argument(
        "--positions",
        type=_count_or_fraction,
        metavar="N|F",
        help="optimal-move rate over a fixed seeded subset: a count (500) or a fraction (0.1); default all 4,520",
    )
    ev.add_argument("--positions-seed", type=int, help="seed of the position subset (default 0)")
    ev.add_argument(
        "--no-exhaustive",
        dest="exhaustive",
        action="store_const",
        const=False,
        help="skip the exhaustive check (the model in each seat against every legal reply)",
    )
    ev.add_argument(
        "--no-optimal-rate",
        dest="optimal_rate",
        action="store_const",
        const=False,
        help="skip the optimal-move rate",
    )
    ev.add_argument("--max-new-tokens", type=int, help="answer length limit (default 64)")
    ev.add_argument("--batch-size", type=int, help="positions per generate call (default 512)")
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
