"""Perfect play by memoised negamax.

Values are from the point of view of the side to move. A game won when the board holds ``p`` marks scores
``10 - p`` for the winner (so 5..1: a faster win is worth more) and ``-(10 - p)`` for the loser (a slower
loss is worth more); a draw scores 0. Because every continuation of a position starts from the same mark
count, comparing these absolute scores is the same as comparing plies-to-end.

With memoisation the whole game tree (5,478 reachable boards) is solved once, in well under a second.
"""

from __future__ import annotations

from functools import cache

from minigpt.tasks.tictactoe.engine import EMPTY, is_full, legal_moves, play, winner

WIN, DRAW, LOSS = 1, 0, -1


@cache
def value(board: str) -> int:
    """Game-theoretic value of ``board`` for the side to move (see the module docstring for the scale)."""
    if winner(board) is not None:
        # The mark that just completed a line belongs to the previous mover: the side to move has lost.
        return -(10 - (9 - board.count(EMPTY)))
    if is_full(board):
        return 0
    return max(-value(play(board, cell)) for cell in legal_moves(board))


@cache
def _move_values(board: str) -> tuple[tuple[int, int], ...]:
    return tuple((cell, -value(play(board, cell))) for cell in legal_moves(board))


def move_values(board: str) -> dict[int, int]:
    """Value of every legal move, for the side to move (higher is better)."""
    return dict(_move_values(board))


def best_value(board: str) -> int:
    """Value of the best move; equals :func:`value` for a non-terminal board."""
    return max(v for _, v in _move_values(board))


def optimal_moves(board: str) -> list[int]:
    """All moves reaching the best value (fastest win, else draw, else slowest loss), increasing order."""
    pairs = _move_values(board)
    if not pairs:
        return []
    best = max(v for _, v in pairs)
    return [cell for cell, v in pairs if v == best]


def outcome(score: int) -> int:
    """Coarse outcome of a value: WIN (+1), DRAW (0) or LOSS (-1)."""
    return (score > 0) - (score < 0)


def move_outcomes(board: str) -> dict[int, int]:
    """WIN / DRAW / LOSS for every legal move under perfect play afterwards."""
    return {cell: outcome(v) for cell, v in _move_values(board)}


def outcome_preserving_moves(board: str) -> list[int]:
    """Moves that keep the best coarse outcome (any win when winning, any draw when drawn); a superset of
    :func:`optimal_moves` that ignores speed."""
    outcomes = move_outcomes(board)
    if not outcomes:
        return []
    best = max(outcomes.values())
    return [cell for cell, o in outcomes.items() if o == best]
