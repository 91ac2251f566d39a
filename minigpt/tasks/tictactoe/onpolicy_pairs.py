"""On-policy preference pairs: the mistakes a checkpoint actually makes, each paired with the answer SFT
taught. Registered as the ``tictactoe_dpo_onpolicy`` generator.

The fixed pair families of ``tictactoe_dpo`` guess at what a trained model gets wrong; these pairs are what it
does get wrong. The checkpoint (the DPO stage's start, ``start_model``, which a stage fills in) answers every
position greedily and ``samples`` more times by sampling; every distinct answer that is not an optimal move
(a worse move, an illegal one, or one that does not parse) becomes a rejected answer, and the chosen answer is
the solver's preferred move in the taught format (``preferred_move``: what ``moves: preferred`` SFT taught).
Positions where every answer was optimal give no pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from minigpt.errors import ConfigError
from minigpt.registry import GENERATORS
from minigpt.tasks.tictactoe.engine import legal_moves
from minigpt.tasks.tictactoe.format import build_prompt, format_answer, parse_move
from minigpt.tasks.tictactoe.generators import preferred_move, select_positions
from minigpt.tasks.tictactoe.solver import optimal_moves

if TYPE_CHECKING:
    from minigpt.tasks.tictactoe.player import ModelPlayer


def is_mistake(completion: str, board: str) -> bool:
    """Whether an answer is wrong: unparseable, illegal, or a legal move outside the solver's optimal set."""
    result = parse_move(completion, board)
    if not result.ok or result.move is None or result.move not in legal_moves(board):
        return True
    return result.move not in optimal_moves(board)


def check_onpolicy_args(
    generator: str, start_model: str | None, samples: int, temperature: float, greedy: bool = True
) -> None:
    """The refusals the on-policy generators share (pairs here, RL prompts in onpolicy_prompts), before the
    start is loaded: a start, a whole number of samples (some answer to read), a positive temperature."""
    if not start_model:
        raise ConfigError(
            f"{generator}: start_model is not set: name a model folder in generator_args (a stage preparing "
            "this mixture sets it to its model.init)"
        )
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise ConfigError(f"{generator}: samples must be an integer >= 0, got {samples!r}")
    if samples == 0 and not greedy:
        raise ConfigError(f"{generator}: samples must be > 0 when greedy is false (no answer would be read)")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ConfigError(f"{generator}: temperature must be a number > 0, got {temperature!r}")


def load_start(start_model: str, batch_size: int, max_new_tokens: int) -> ModelPlayer:
    """The on-policy generators' start as a greedy player, its cache started from the answers its own
    evaluation kept in the folder (greedy_answers.py): those boards are not generated again."""
    from minigpt.tasks.tictactoe.greedy_answers import load_greedy_answers
    from minigpt.tasks.tictactoe.player import load_player

    player = load_player(start_model, batch_size=batch_size, max_new_tokens=max_new_tokens)
    load_greedy_answers(player, start_model)
    return player


def start_answers(
    player: ModelPlayer, boards: list[str], samples: int, temperature: float, greedy: bool, seed: int
) -> list[list[str]]:
    """Every answer the (greedy) ``player`` gives per board: the greedy one when ``greedy``, then ``samples``
    sampled from its model at ``temperature`` (seeded by ``seed``). Shared by the on-policy generators (pairs
    here, RL prompts in onpolicy_prompts), which load the start once."""
    from minigpt.tasks.tictactoe.player import ModelPlayer

    answers: list[list[str]] = [[] for _ in boards]
    rounds = [player.completions] if greedy else []
    if samples:
        sampler = ModelPlayer(
            player.model,
            player.tokenizer,
            sampling=True,
            temperature=temperature,
            seed=seed,
            batch_size=player.batch_size,
            max_new_tokens=player.max_new_tokens,
        )
        rounds += [sampler.completions] * samples
    for answer_all in rounds:
        for got, text in zip(answers, answer_all(boards), strict=True):
            got.append(text)
    return answers


@GENERATORS.register("tictactoe_dpo_onpolicy")
def tictactoe_dpo_onpolicy(
    start_model: str | None = None,
    samples: int = 4,
    temperature: float = 1.0,
    greedy: bool = True,
    seats: str = "both",
    sample: int | None = None,
    kinds: list[str] | None = None,
    reasoning: bool | str = "lines",
    seed: int = 0,
    batch_size: int = 512,
    max_new_tokens: int = 40,
) -> Iterator[dict[str, Any]]:
    """``preference`` rows from ``start_model``'s own answers (module docstring).

    start_model: a model folder; in a stage's mixture the stage's ``model.init`` (its start) when not given.
    samples: sampled answers per position (at ``temperature``, seeded by ``seed``), besides the greedy one
    when ``greedy``. seats / sample / kinds choose the positions as for ``tictactoe_sft``; reasoning is the
    chosen answer's format and should be what SFT taught."""
    check_onpolicy_args("tictactoe_dpo_onpolicy", start_model, samples, temperature, greedy)
    boards = select_positions(seats, sample, seed, kinds=kinds)
    player = load_start(start_model, batch_size, max_new_tokens)
    answers = start_answers(player, boards, samples, temperature, greedy, seed)
    for board, texts in zip(boards, answers, strict=True):
        wrong = [t for t in dict.fromkeys(texts) if is_mistake(t, board)]
        if not wrong:
            continue
        chosen = format_answer(board, preferred_move(board), reasoning)
        for text in wrong:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
            yield {
                "prompt": build_prompt(board),
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": text}],
                "meta": {"source": "tictactoe_dpo_onpolicy", "id": f"ttt-dpo-onpolicy-{board}-{digest}"},
            }
