"""On-policy RL prompts: the positions a checkpoint gets wrong, so that an RL stage spends its completions
where there is something to learn. Registered as the ``tictactoe_rl_onpolicy`` generator.

``tictactoe_rl`` offers every position; a start that is already right on most of them gives the same reward
to every completion of those prompts, a zero advantage in GRPO and RLOO, and so learns only from the few
prompts per step that it gets wrong. Here the checkpoint (the RL stage's start, ``start_model``, which a stage
fills in) answers every position greedily and ``samples`` more times by sampling; a position where any answer
is a mistake (``is_mistake``) is kept, and ``keep_right`` of the others are kept too, so that the stage still
sees positions it must not unlearn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from minigpt.errors import ConfigError
from minigpt.registry import GENERATORS
from minigpt.tasks.tictactoe.engine import legal_moves
from minigpt.tasks.tictactoe.generators import rl_row, select_positions
from minigpt.tasks.tictactoe.onpolicy_pairs import is_mistake, start_answers


@GENERATORS.register("tictactoe_rl_onpolicy")
def tictactoe_rl_onpolicy(
    start_model: str | None = None,
    samples: int = 0,
    temperature: float = 1.0,
    keep_right: float = 0.0,
    seats: str = "both",
    sample: int | None = None,
    min_legal_moves: int = 2,
    kinds: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 512,
    max_new_tokens: int = 40,
) -> Iterator[dict[str, Any]]:
    """``prompt_only`` rows (as ``tictactoe_rl``) for the positions ``start_model`` answers wrong, greedily or
    in one of ``samples`` sampled answers, plus a seeded ``keep_right`` share (0-1) of the positions it
    answered right every time; in a seeded order.

    start_model: a model folder; in a stage's mixture the stage's ``model.init`` (its start) when not given.
    seats / sample / kinds / min_legal_moves choose the positions as for ``tictactoe_rl``."""
    if not start_model:
        raise ConfigError(
            "tictactoe_rl_onpolicy: start_model is not set: name a model folder in generator_args (a stage "
            "preparing this mixture sets it to its model.init)"
        )
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise ConfigError(f"tictactoe_rl_onpolicy: samples must be an integer >= 0, got {samples!r}")
    if not temperature > 0:
        raise ConfigError(f"tictactoe_rl_onpolicy: temperature must be > 0, got {temperature!r}")
    if not 0.0 <= keep_right <= 1.0:
        raise ConfigError(f"tictactoe_rl_onpolicy: keep_right must be between 0 and 1, got {keep_right!r}")
    boards = [
        b
        for b in select_positions(seats, sample, seed, kinds=kinds)
        if len(legal_moves(b)) >= min_legal_moves
    ]
    answers = start_answers(start_model, boards, samples, temperature, True, seed, batch_size, max_new_tokens)
    rng = random.Random(seed)
    kept = [
        board
        for board, texts in zip(boards, answers, strict=True)
        # rng is drawn for every position so that which right ones are kept does not depend on the wrong ones
        if (rng.random() < keep_right) | any(is_mistake(t, board) for t in texts)
    ]
    if not kept:
        raise ConfigError(
            f"tictactoe_rl_onpolicy: {start_model} answered all {len(boards)} positions right and keep_right is "
            f"{keep_right}: no prompt is left (raise keep_right, or use tictactoe_rl)"
        )
    random.Random(seed).shuffle(kept)
    for board in kept:
        yield rl_row(board, "tictactoe_rl_onpolicy", "ttt-rl-onpolicy")
