"""Evaluation of a tic-tac-toe player: games against scripted opponents, optimal-move rate over all
positions, and the exhaustive check. Output is a JSON-serialisable dict; :func:`format_report` renders it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from minigpt.tasks.tictactoe.arena import (
    RESULTS,
    Agent,
    MinimaxAgent,
    MixedAgent,
    RandomAgent,
    exhaustive_check,
    play_match,
)
from minigpt.tasks.tictactoe.engine import (
    EMPTY_BOARD,
    NUM_POSITIONS,
    O,
    X,
    all_positions,
    legal_moves,
    play,
    side_to_move,
    winner,
)
from minigpt.tasks.tictactoe.eval_settings import eval_args, position_subset
from minigpt.tasks.tictactoe.format import ParseFailure
from minigpt.tasks.tictactoe.solver import optimal_moves, outcome_preserving_moves


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes in ``n`` trials ((0, 1) when n == 0). Unlike the normal
    approximation it stays inside [0, 1] and is not degenerate at 0 or n successes."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"count": k, "rate": k / n if n else 0.0, "ci95": [lo, hi]}


def exact_reference(perfect_seat: str) -> dict[str, Fraction]:
    """Exact outcome probabilities of a perfect player in ``perfect_seat`` against a uniformly random one.

    The perfect player picks uniformly among its optimal moves; any pick among outcome-keeping moves gives
    the same numbers (a won position stays won against anyone). Perfect X wins 75257/77760 (96.78%, draws
    3.22%); perfect O wins 2645/3402 (77.75%, draws 22.25%). Keys: the winner (``X``/``O``) and ``draw``.
    """
    return dict(_exact(perfect_seat, EMPTY_BOARD))


@cache
def _exact(perfect_seat: str, board: str) -> tuple[tuple[str, Fraction], ...]:
    who = winner(board)
    if who is not None or not legal_moves(board):
        return (((who or "draw"), Fraction(1)),)
    cells = optimal_moves(board) if side_to_move(board) == perfect_seat else legal_moves(board)
    total: dict[str, Fraction] = {}
    for cell in cells:
        for key, p in _exact(perfect_seat, play(board, cell)):
            total[key] = total.get(key, Fraction(0)) + p / len(cells)
    return tuple(sorted(total.items()))


def optimal_move_rate(
    player: Agent, batch_size: int = 512, boards: Sequence[str] | None = None
) -> dict[str, Any]:
    """The player's answer on every one of ``boards`` (default: all 4,520 positions), in batches: the share
    of optimal moves (solver's fastest-win set), of outcome-keeping moves, and of illegal / unparseable
    answers. ``n`` is the number of positions asked, ``of`` the number there are."""
    boards = all_positions() if boards is None else list(boards)
    counts = {"optimal": 0, "outcome_preserving": 0, "illegal": 0, "parse_error": 0}
    for start in range(0, len(boards), batch_size):
        chunk = boards[start : start + batch_size]
        for board, answer in zip(chunk, player.moves(chunk), strict=True):
            if isinstance(answer, ParseFailure):
                counts[answer.status] += 1
            elif answer not in legal_moves(board):
                counts["illegal"] += 1
            else:
                counts["optimal"] += answer in optimal_moves(board)
                counts["outcome_preserving"] += answer in outcome_preserving_moves(board)
    n = len(boards)
    return {"n": n, "of": NUM_POSITIONS, **{key: _rate(k, n) for key, k in counts.items()}}


def evaluate_player(
    player: Agent,
    games_per_opponent: int = 200,
    seed: int = 0,
    epsilon: float = 0.2,
    optimal_rate: bool = True,
    exhaustive: bool = True,
    batch_size: int = 512,
    positions: int | float | None = None,
    positions_seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``player`` (any :class:`Agent`); returns a JSON-serialisable dict with keys:

    ``games``: ``{opponent: {seat: {n, win, draw, loss, illegal, parse_error}}}`` for opponents ``random``,
    ``minimax`` and ``mixed`` (each rate ``{count, rate, ci95: [lo, hi]}``), plus ``failure_examples``;
    ``optimal_moves``: see :func:`optimal_move_rate`; ``exhaustive``: ``{X: {...}, O: {...}}`` with games,
    wins, draws, losses, illegal, parse_errors, positions, losing_boards; ``unbeatable``: no loss, illegal
    move or parse error in the exhaustive check as X and as O; ``settings``: the arguments.

    ``positions`` (a count, a fraction, None for all) limits the optimal-move rate to a subset fixed by
    ``positions_seed`` (:func:`position_subset`); ``optimal_rate`` / ``exhaustive`` switch those parts off.
    """
    opponents = {
        "random": lambda s: RandomAgent(seed=s),
        "minimax": lambda s: MinimaxAgent(seed=s),
        "mixed": lambda s: MixedAgent(epsilon=epsilon, seed=s),
    }
    # Model questions go from the widest to the narrowest set, so that with a greedy player (answers cached
    # per board) each later part mostly reads answers already made in large batches: the sweep, then the
    # exhaustive check (every board the player can meet in a seat against any opponent), then the games,
    # whose boards all lie in that tree. Greedy answers are a function of the board (tested against one
    # generate per board), so the order changes no result, only how many boards are generated.
    sweep = None
    if optimal_rate:
        sweep = optimal_move_rate(player, batch_size, position_subset(positions, positions_seed))
    checks = {seat: exhaustive_check(player, seat) for seat in (X, O)} if exhaustive else {}
    games: dict[str, Any] = {}
    examples: list[dict[str, Any]] = []
    for o_index, (name, make) in enumerate(opponents.items()):
        games[name] = {}
        for s_index, seat in enumerate((X, O)):
            # Each (opponent, seat) gets its own derived seed so adding one does not shift the others.
            match = play_match(player, make(seed * 1000 + o_index * 10 + s_index), seat, games_per_opponent)
            games[name][seat] = {"n": match.n, **{k: _rate(match.counts[k], match.n) for k in RESULTS}}
            for board, failure in match.failures[:2]:
                examples.append(
                    {
                        "board": board,
                        "status": failure.status,
                        "reason": failure.reason,
                        "text": failure.completion,
                    }
                )
    result: dict[str, Any] = {"games": games, "failure_examples": examples[:10]}
    if sweep is not None:
        result["optimal_moves"] = sweep
    if exhaustive:
        result["exhaustive"] = {
            seat: {
                "games": c.games,
                "wins": c.wins,
                "draws": c.draws,
                "losses": c.losses,
                "illegal": c.illegal,
                "parse_errors": c.parse_errors,
                "positions": c.positions,
                "losing_boards": c.losing_boards,
            }
            for seat, c in checks.items()
        }
        result["unbeatable"] = all(c.unbeaten for c in checks.values())
    result["settings"] = {
        "games_per_opponent": games_per_opponent,
        "seed": seed,
        "epsilon": epsilon,
        "optimal_rate": optimal_rate,
        "positions": positions,
        "positions_seed": positions_seed,
        "exhaustive": exhaustive,
    }
    return result


def _pct(entry: dict[str, Any]) -> str:
    lo, hi = entry["ci95"]
    return f"{100 * entry['rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _scope(opt: dict[str, Any]) -> str:
    total = opt.get("of", NUM_POSITIONS)
    return (
        f"all {opt['n']} positions"
        if opt["n"] == total
        else f"a fixed subset of {opt['n']} of {total} positions"
    )


def format_report(result: dict[str, Any]) -> str:
    """Markdown tables for a result of :func:`evaluate_player`."""
    lines = ["## Tic-tac-toe", ""]
    lines += [
        "| opponent | seat | games | win | draw | loss | illegal | parse error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, seats in result["games"].items():
        for seat, row in seats.items():
            cells = " | ".join(_pct(row[k]) for k in RESULTS)
            lines.append(f"| {name} | {seat} | {row['n']} | {cells} |")
    if "optimal_moves" in result:
        opt = result["optimal_moves"]
        lines += [
            "",
            f"Optimal-move rate over {_scope(opt)}: {_pct(opt['optimal'])}; outcome-keeping: "
            f"{_pct(opt['outcome_preserving'])}; illegal: {_pct(opt['illegal'])}; parse errors: "
            f"{_pct(opt['parse_error'])}.",
        ]
    if "exhaustive" in result:
        lines += [
            "",
            "| exhaustive check | games | wins | draws | losses | illegal | parse errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for seat, c in result["exhaustive"].items():
            lines.append(
                f"| as {seat} | {c['games']} | {c['wins']} | {c['draws']} | {c['losses']} | "
                f"{c['illegal']} | {c['parse_errors']} |"
            )
        lines += ["", f"**Unbeatable: {'yes' if result['unbeatable'] else 'no'}**"]
    return "\n".join(lines) + "\n"


def evaluate_checkpoint(
    model_dir: str | Path, out_json: str | Path | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Load a checkpoint with :func:`load_player`, evaluate it and optionally write the result as JSON.

    ``kwargs`` are the fields of :class:`~minigpt.tasks.tictactoe.eval_settings.TicTacToeEvalArgs`
    (checked before the model is loaded: a ConfigError names a wrong field); ``max_new_tokens`` and
    ``trust_remote_code`` go to the player, ``batch_size`` to both, the rest to :func:`evaluate_player`.
    The result gains a ``model_dir`` key; the greedy answers are kept in the folder (greedy_answers.py)."""
    from minigpt.tasks.tictactoe.greedy_answers import save_greedy_answers
    from minigpt.tasks.tictactoe.player import load_player

    args = eval_args(kwargs).model_dump()
    player_kw = {k: args.pop(k) for k in ("max_new_tokens", "trust_remote_code")}
    player = load_player(model_dir, batch_size=args["batch_size"], **player_kw)
    result = evaluate_player(player, **args)
    result["model_dir"] = str(model_dir)
    # the next stage's on-policy generators ask this folder the same positions greedily (greedy_answers.py)
    save_greedy_answers(player, model_dir)
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        from minigpt.secrets import redact

        Path(out_json).write_text(json.dumps(redact(result), indent=2) + "\n")
    return result
