"""Tic-tac-toe rewards with the TRL GRPOTrainer signature, registered in ``REWARDS``.

``fn(completions, board, player, **kwargs) -> list[float]``: ``completions`` holds strings or message lists
(the last message's content is read), ``board`` and ``player`` are the dataset columns of the same length.
Each function returns raw values; weights between several reward functions are applied by the caller
(the RL stage's ``reward_weights``), never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigpt.errors import DataError
from minigpt.registry import REWARDS
from minigpt.rewards.general import completion_text
from minigpt.tasks.tictactoe.engine import CENTRE, CORNERS, other, winning_cells
from minigpt.tasks.tictactoe.format import ParseResult, parse_move
from minigpt.tasks.tictactoe.solver import move_values, outcome

INVALID = -1.0


def _parsed(completions: Sequence[Any], board: Sequence[str], player: Sequence[str]) -> list[ParseResult]:
    if not (len(completions) == len(board) == len(player)):
        raise DataError(
            f"tictactoe reward: {len(completions)} completions but {len(board)} boards and {len(player)} players"
        )
    return [parse_move(completion_text(c), b) for c, b in zip(completions, board, strict=True)]


def shaped_score(board: str, player: str, cell: int) -> float:
    """The original project's move-quality score for a legal ``cell`` (see :func:`tictactoe_shaped`)."""
    if cell in winning_cells(board, player):
        return 1.0
    if cell in winning_cells(board, other(player)):
        return 0.8
    if cell == CENTRE:
        return 0.6
    if cell in CORNERS:
        return 0.4
    return 0.2


@REWARDS.register("tictactoe_shaped")
def tictactoe_shaped(
    completions: Sequence[Any], board: Sequence[str], player: Sequence[str], **kwargs: Any
) -> list[float]:
    """Win +1.0, block +0.8, centre +0.6, corner +0.4, edge +0.2 (first that applies); unparseable or
    illegal -1.0.

    Known flaw, kept on purpose to reproduce the original: the score looks at the move alone, not at what
    else was available, so blocking pays 0.8 even when a win was on the board (and the centre pays 0.6 when
    a block was needed). Prefer ``tictactoe_solver``.
    """
    scores = []
    for result, b, p in zip(_parsed(completions, board, player), board, player, strict=True):
        scores.append(shaped_score(b, p, result.move) if result.ok and result.move is not None else INVALID)
    return scores


def solver_score(board: str, cell: int) -> float:
    """``1 - 0.5 * drop - 0.1 * min(gap, 5)`` for a legal ``cell`` (see :func:`tictactoe_solver`)."""
    values = move_values(board)
    best = max(values.values())
    gap = best - values[cell]
    drop = outcome(best) - outcome(values[cell])
    return 1.0 - 0.5 * drop - 0.1 * min(gap, 5)


@REWARDS.register("tictactoe_solver")
def tictactoe_solver(
    completions: Sequence[Any], board: Sequence[str], player: Sequence[str], **kwargs: Any
) -> list[float]:
    """Solver-graded move quality: ``r = 1 - 0.5*drop - 0.1*min(gap, 5)`` for a legal move, -1.0 otherwise.

    ``gap`` = best move value - this move's value (solver scale: a win with ``p`` marks on the board is
    ``10 - p``), ``drop`` = how many outcome classes the move throws away (win -> draw or draw -> loss: 1,
    win -> loss: 2). So an optimal move gets exactly 1.0, a slower win 0.6..0.9, giving up a win or a draw
    0.0..0.4, turning a win into a loss -0.5..-0.2, and unparseable or illegal answers -1.0: every legal
    move beats every invalid one and the reward never increases with the value lost.
    """
    return [
        solver_score(b, r.move) if r.ok and r.move is not None else INVALID
        for r, b in zip(_parsed(completions, board, player), board, strict=True)
    ]


@REWARDS.register("tictactoe_format")
def tictactoe_format(
    completions: Sequence[Any], board: Sequence[str], player: Sequence[str], **kwargs: Any
) -> list[float]:
    """1.0 when the final line is a well-formed marker for a cell 0..8 (legal or not), else 0.0."""
    return [0.0 if r.status == "parse_error" else 1.0 for r in _parsed(completions, board, player)]
