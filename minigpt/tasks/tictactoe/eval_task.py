"""Tic-tac-toe as a registered evaluation task: the arena run on a model folder, its headline scores, its
report-card section across stages, and the ``minigpt eval`` flags it has had since before tasks were
registered (``--games``, ``--positions``, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigpt.tasks.tictactoe.eval_settings import TicTacToeEvalArgs
from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint, format_report

DASH = "—"


def evaluate(model_dir: str | Path, args: TicTacToeEvalArgs) -> dict[str, Any]:
    return evaluate_checkpoint(model_dir, **args.model_dump())


def evaluate_during_training(model: Any, tokenizer: Any, args: TicTacToeEvalArgs) -> dict[str, float]:
    """The optimal-move rate over ``args``' fixed position subset and, with ``exhaustive``, the exhaustive
    check's losses and invalid answers per seat, on the model being trained. Games are not played here
    (their rates need hundreds of games to be read; the subset's rates are exact for its positions)."""
    from minigpt.tasks.tictactoe.arena import exhaustive_check
    from minigpt.tasks.tictactoe.eval_settings import position_subset
    from minigpt.tasks.tictactoe.evaluate import optimal_move_rate
    from minigpt.tasks.tictactoe.player import ModelPlayer

    player = ModelPlayer(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    out: dict[str, float] = {}
    if args.optimal_rate:
        sweep = optimal_move_rate(
            player, args.batch_size, position_subset(args.positions, args.positions_seed)
        )
        for key in ("optimal", "outcome_preserving", "illegal", "parse_error"):
            out[f"{key}_rate"] = sweep[key]["rate"]
    if args.exhaustive:
        for seat in ("X", "O"):
            check = exhaustive_check(player, seat)
            out[f"losses_{seat}"] = float(check.losses)
            out[f"invalid_{seat}"] = float(check.illegal + check.parse_errors)
    return out


def headline(result: dict[str, Any]) -> dict[str, float]:
    """Optimal and outcome-keeping move rates, and the win rate against the random opponent (both seats)."""
    out = {}
    opt = result.get("optimal_moves") or {}
    for key, label in (("optimal", "optimal moves"), ("outcome_preserving", "outcome-keeping")):
        if key in opt:
            out[label] = opt[key]["rate"]
    seats = (result.get("games") or {}).get("random") or {}
    played = [row for row in seats.values() if row.get("n")]
    if played:
        out["wins vs random"] = sum(row["win"]["count"] for row in played) / sum(row["n"] for row in played)
    return out


def describe(result: dict[str, Any]) -> str:
    return format_report(result)


def _pct(rate: Any) -> str:
    return f"{100 * rate:.1f}%" if isinstance(rate, int | float) else DASH


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else DASH


def _wdl(games: dict[str, Any], opponent: str, seat: str) -> str:
    row = (games.get(opponent) or {}).get(seat)
    if not row or not row.get("n"):
        return DASH
    text = " / ".join(f"{100 * row[k]['rate']:.0f}" for k in ("win", "draw", "loss"))
    invalid = row["illegal"]["count"] + row["parse_error"]["count"]
    return text + (f" ({invalid} invalid)" if invalid else "")


def report_section(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One row per stage (optimal moves, exhaustive check, games), then each stage's full tables folded."""
    evaluated = [(stage, r) for stage, r in results if "games" in r]
    if not evaluated:
        return ["No stage has a tic-tac-toe result.", ""]
    header = ["stage", "optimal moves", "outcome-keeping", "illegal / unparseable", "exhaustive losses X / O"]
    header += ["exhaustive illegal X / O", "vs random as X", "vs random as O", "vs minimax as X"]
    header += ["vs minimax as O", "unbeatable"]
    rows = []
    for stage, t in evaluated:
        opt, ex, games = t.get("optimal_moves") or {}, t.get("exhaustive") or {}, t["games"]
        bad = [(opt.get(k) or {}).get("rate") for k in ("illegal", "parse_error")]
        # Per seat: losses, and answers that broke the game (illegal moves plus unparseable ones).
        seats = [ex.get(seat) or {} for seat in ("X", "O")]
        ex_losses = " / ".join(_num(c.get("losses")) for c in seats)
        ex_bad = " / ".join(
            _num(c.get("illegal", 0) + c.get("parse_errors", 0)) if c else DASH for c in seats
        )
        rows.append(
            [stage, _pct((opt.get("optimal") or {}).get("rate"))]
            + [_pct((opt.get("outcome_preserving") or {}).get("rate")), " / ".join(_pct(b) for b in bad)]
            + [ex_losses, ex_bad]
            + [_wdl(games, o, seat) for o in ("random", "minimax") for seat in ("X", "O")]
            + ["**yes**" if t.get("unbeatable") else ("no" if "unbeatable" in t else DASH)]
        )
    games_per = evaluated[0][1].get("settings", {}).get("games_per_opponent", "?")
    lines = ["One row per stage, after that stage trained.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "Optimal moves: share of the 4,520 positions where the answer is one of the solver's best moves;",
        "outcome-keeping: does not worsen the game-theoretic result. Games: win / draw / loss in % "
        f"({games_per} games per "
        "opponent and seat). Unbeatable: no loss, illegal move or parse error in the exhaustive check.",
    ]
    for stage, t in evaluated:
        detail = format_report(t).split("\n", 1)[1]  # without its own heading
        lines += ["", f"<details><summary>{stage}: full arena tables with 95% intervals</summary>", detail]
        lines += ["</details>"]
    return [*lines, ""]


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


def add_eval_flags(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict[str, Any]]:
    """The tic-tac-toe switches of ``minigpt eval``; returns what reads the given ones back as args."""
    group = parser.add_argument_group("tictactoe task")
    group.add_argument("--games", type=int, help="games per opponent and seat (default 200; 0: no games)")
    group.add_argument("--seed", type=int, help="seeds the opponents of the games (default 0)")
    group.add_argument(
        "--positions",
        type=_count_or_fraction,
        metavar="N|F",
        help="optimal-move rate over a fixed seeded subset: a count (500) or a fraction (0.1); default all 4,520",
    )
    group.add_argument("--positions-seed", type=int, help="seed of the position subset (default 0)")
    group.add_argument(
        "--no-exhaustive",
        dest="exhaustive",
        action="store_const",
        const=False,
        help="skip the exhaustive check (the model in each seat against every legal reply)",
    )
    group.add_argument(
        "--no-optimal-rate",
        dest="optimal_rate",
        action="store_const",
        const=False,
        help="skip the optimal-move rate",
    )
    group.add_argument("--max-new-tokens", type=int, help="answer length limit (default 64)")
    group.add_argument("--batch-size", type=int, help="positions per generate call (default 512)")

    def given(args: argparse.Namespace) -> dict[str, Any]:
        values = {
            "games_per_opponent": args.games,
            "seed": args.seed,
            "positions": args.positions,
            "positions_seed": args.positions_seed,
            "exhaustive": args.exhaustive,
            "optimal_rate": args.optimal_rate,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
        }
        return {k: v for k, v in values.items() if v is not None}

    return given
