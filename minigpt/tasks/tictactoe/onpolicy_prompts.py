"""On-policy RL prompts: the positions a checkpoint gets wrong, so that an RL stage spends its completions
where there is something to learn. Registered as the ``tictactoe_rl_onpolicy`` generator.

``tictactoe_rl`` offers every position; a start that is already right on most of them gives the same reward
to every completion of those prompts, a zero advantage in GRPO and RLOO, and so learns only from the few
prompts per step that it gets wrong. Here the checkpoint (the RL stage's start, ``start_model``, which a stage
fills in) answers every position greedily and ``samples`` more times by sampling; a position where any answer
is a mistake (``is_mistake``) is kept, and ``keep_right`` of the others are kept too, so that the stage still
sees positions it must not unlearn.

``reach: own_play`` asks only the positions the start meets in its own games: those its exhaustive check
visits (it plays each seat while the opponent tries every reply). Whether a player is unbeatable is decided
there alone, so the stage spends its completions on the mistakes that can lose a game, not on positions its
own play never reaches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from minigpt.errors import ConfigError
from minigpt.registry import GENERATORS
from minigpt.tasks.tictactoe.generators import REACH_CHOICES, rl_boards, rl_row
from minigpt.tasks.tictactoe.onpolicy_pairs import check_onpolicy_args, is_mistake, load_start, start_answers

if TYPE_CHECKING:
    from minigpt.tasks.tictactoe.player import ModelPlayer

OWN_PLAY = "own_play"
"""The ``reach`` of this generator besides those of ``select_positions`` (all, optimal_self)."""


def own_play_positions(player: ModelPlayer, seats: str) -> set[str]:
    """The boards ``player`` is asked in its exhaustive check as X and as O (or one seat). Its greedy answers
    stay in the player's cache, so asking those boards again costs nothing."""
    from minigpt.tasks.tictactoe.arena import exhaustive_check

    return {
        b
        for seat in (("X", "O") if seats == "both" else (seats,))
        for b in exhaustive_check(player, seat).asked
    }


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
    reach: str = "all",
    seed: int = 0,
    batch_size: int = 512,
    max_new_tokens: int = 40,
) -> Iterator[dict[str, Any]]:
    """``prompt_only`` rows (as ``tictactoe_rl``) for the positions ``start_model`` answers wrong, greedily or
    in one of ``samples`` sampled answers, plus a seeded ``keep_right`` share (0-1) of the positions it
    answered right every time; in a seeded order.

    start_model: a model folder; in a stage's mixture the stage's ``model.init`` (its start) when not given.
    seats / sample / kinds / min_legal_moves / reach choose the positions as for ``tictactoe_rl``, and
    ``reach: own_play`` keeps only those the start meets in its exhaustive check (module docstring), after
    the others have chosen theirs."""
    check_onpolicy_args("tictactoe_rl_onpolicy", start_model, samples, temperature)
    if not 0.0 <= keep_right <= 1.0:
        raise ConfigError(f"tictactoe_rl_onpolicy: keep_right must be between 0 and 1, got {keep_right!r}")
    if reach not in (*REACH_CHOICES, OWN_PLAY):
        raise ConfigError(
            f"tictactoe_rl_onpolicy: reach must be one of {', '.join((*REACH_CHOICES, OWN_PLAY))}, got {reach!r}"
        )
    boards = rl_boards(seats, sample, seed, "all" if reach == OWN_PLAY else reach, kinds, min_legal_moves)
    player = load_start(start_model, batch_size, max_new_tokens)
    if reach == OWN_PLAY:
        met = own_play_positions(player, seats)
        chosen, boards = len(boards), [b for b in boards if b in met]
        if not boards:
            raise ConfigError(
                f"tictactoe_rl_onpolicy: reach: own_play: none of the {chosen} positions chosen by seats, sample "
                f"and kinds is met in {start_model}'s own games (its exhaustive check)"
            )
    answers = start_answers(player, boards, samples, temperature, True, seed)
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
