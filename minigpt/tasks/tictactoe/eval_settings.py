"""The switches of the tic-tac-toe evaluation, as one typed config section, and the fixed position subset.

A recipe's ``evaluation.args`` and ``minigpt eval`` both go through :class:`TicTacToeEvalArgs`, so a wrong
value is refused before any model is loaded, with the field named. The defaults give the full check: every
one of the 4,520 positions, the exhaustive check as X and as O, and the games.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field, field_validator

from minigpt.tasks.tictactoe.engine import NUM_POSITIONS, all_positions
from minigpt.typed_config import Strict, validate


class TicTacToeEvalArgs(Strict):
    games_per_opponent: int = Field(200, ge=0)
    """Games per opponent (random, minimax, mixed) and seat; 0 plays none."""
    seed: int = 0
    """Seeds the opponents of the games."""
    epsilon: float = Field(0.2, ge=0.0, le=1.0)
    """The mixed opponent's share of random moves."""
    optimal_rate: bool = True
    """Measure the optimal-move rate (over ``positions``)."""
    positions: int | float | None = None
    """Positions for the optimal-move rate: a count (``500``), a fraction (``0.1``) or null for all 4,520.
    The subset is drawn with ``positions_seed`` and is the same in every run and stage."""
    positions_seed: int = 0
    exhaustive: bool = True
    """Run the exhaustive check (the model in each seat, the opponent trying every legal reply)."""
    batch_size: int = Field(512, ge=1)
    """Positions per ``generate`` call."""
    max_new_tokens: int = Field(64, ge=1)
    trust_remote_code: bool = False

    @field_validator("positions", mode="before")
    @classmethod
    def _positions_in_range(cls, value: Any) -> int | float | None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("expected a count (500), a fraction (0.1) or null for all positions")
        if isinstance(value, int) and not 1 <= value <= NUM_POSITIONS:
            raise ValueError(f"a count of positions must be 1..{NUM_POSITIONS} (null for all)")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError("a fraction of positions must be in (0, 1] (null for all)")
        return value


def eval_args(kwargs: dict[str, Any], source: str = "tictactoe evaluation") -> TicTacToeEvalArgs:
    """``kwargs`` checked as :class:`TicTacToeEvalArgs` (a ConfigError naming the field otherwise)."""
    return validate(TicTacToeEvalArgs, kwargs, source)


def position_subset(positions: int | float | None = None, seed: int = 0) -> list[str]:
    """The positions of the optimal-move rate, in the order of :func:`all_positions`.

    A count or fraction keeps the first positions of one permutation fixed by ``seed``, so the subset is the
    same in every run, and a larger one contains every smaller one (rates of different sizes compare)."""
    boards = all_positions()
    if positions is None:
        return boards
    fraction_ok = isinstance(positions, float) and 0.0 < positions <= 1.0
    count_ok = type(positions) is int and 1 <= positions <= len(boards)
    if not (fraction_ok or count_ok):
        raise ValueError(f"positions must be a count 1..{len(boards)}, a fraction in (0, 1] or None")
    count = positions if count_ok else max(1, round(positions * len(boards)))
    order = list(range(len(boards)))
    random.Random(seed).shuffle(order)
    return [boards[i] for i in sorted(order[:count])]
