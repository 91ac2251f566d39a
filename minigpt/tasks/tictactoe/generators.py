"""Data generators for every stage, registered in ``GENERATORS``.

Each generator is ``(**kwargs) -> Iterator[dict]`` and yields rows in the DESIGN section 4 schemas with
``meta: {source, id}``. Ids are built from the board and move(s), so they are stable across runs and
unique within one generator's output. All randomness comes from ``seed``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from minigpt.errors import ConfigError
from minigpt.registry import GENERATORS
from minigpt.tasks.tictactoe.engine import (
    EMPTY_BOARD,
    X,
    all_positions,
    legal_moves,
    other,
    play,
    side_to_move,
    winner,
    winning_cells,
)
from minigpt.tasks.tictactoe.format import (
    build_prompt,
    format_answer,
    move_reason,
    prompt_text,
    render_board,
)
from minigpt.tasks.tictactoe.solver import move_values, optimal_moves, outcome

_SEATS = ("both", "X", "O")
REACH_CHOICES = ("all", "optimal_self")


@lru_cache(maxsize=2)
def optimal_self_positions(seat: str) -> frozenset[str]:
    """Positions with ``seat`` to move that arise when ``seat`` always plays an optimal move and the
    opponent plays anything: exactly the positions a perfect player meets in the exhaustive check."""
    found: set[str] = set()
    frontier = [EMPTY_BOARD]
    seen = {EMPTY_BOARD}
    while frontier:
        board = frontier.pop()
        if winner(board) is not None or not legal_moves(board):
            continue
        mover = side_to_move(board)
        if mover == seat:
            found.add(board)
        for cell in optimal_moves(board) if mover == seat else legal_moves(board):
            child = play(board, cell)
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return frozenset(found)


KINDS = ("win", "block", "open")


def position_kind(board: str) -> str:
    """``win`` (the side to move can complete a line), ``block`` (it cannot, but the opponent threatens
    to), else ``open``: the positions where the answer needs lookahead (forks, fork blocks) rather than
    reading one line."""
    me = side_to_move(board)
    if winning_cells(board, me):
        return "win"
    return "block" if winning_cells(board, other(me)) else "open"


def select_positions(
    seats: str, sample: int | None, seed: int, reach: str = "all", kinds: list[str] | None = None
) -> list[str]:
    """Live positions for the requested seat(s) (``reach``: all of them, or only those a perfect player of
    that seat meets; ``kinds``: only positions of these :func:`position_kind` kinds), or a seeded sample of
    ``sample`` of them."""
    if kinds is not None:
        unknown = [k for k in kinds if k not in KINDS] if isinstance(kinds, list) else [kinds]
        if unknown or not kinds:
            raise ConfigError(
                f"tictactoe: kinds must be a non-empty list of {', '.join(KINDS)}, got {kinds!r}"
            )
    if seats not in _SEATS:
        raise ConfigError(f"tictactoe: seats must be one of {', '.join(_SEATS)}, got {seats!r}")
    if reach not in REACH_CHOICES:
        raise ConfigError(f"tictactoe: reach must be one of {', '.join(REACH_CHOICES)}, got {reach!r}")
    boards = [b for b in all_positions() if seats == "both" or side_to_move(b) == seats]
    if reach == "optimal_self":
        keep = optimal_self_positions("X") | optimal_self_positions("O")
        boards = [b for b in boards if b in keep]
    if kinds is not None:
        boards = [b for b in boards if position_kind(b) in kinds]
    if sample is not None:
        if not isinstance(sample, int) or sample < 1:
            raise ConfigError(f"tictactoe: sample must be a positive integer or null, got {sample!r}")
        if sample < len(boards):
            keep = set(random.Random(seed).sample(boards, sample))
            boards = [b for b in boards if b in keep]  # keep the canonical order, not the sample's
    return boards


_MOVE_CHOICES = ("all_optimal", "one", "preferred")
_KIND_ORDER = ("win", "block", "fork", "centre", "corner", "edge")


def preferred_move(board: str) -> int:
    """The optimal move a consistent player would pick: by the kind of its reason (win, block, fork, centre,
    corner, edge), then the lowest cell. One fixed answer per position is an easier function to learn than a
    random optimal move or every optimal move (which also over-weights quiet positions where all are)."""
    return min(optimal_moves(board), key=lambda c: (_KIND_ORDER.index(move_reason(board, c).split()[0]), c))


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


@GENERATORS.register("tictactoe_sft")
def tictactoe_sft(
    seats: str = "both",
    sample: int | None = None,
    moves: str = "all_optimal",
    reasoning: bool | str = True,
    seed: int = 0,
    reach: str = "all",
    kinds: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``conversations`` rows (turns under ``messages``): a position and an optimal answer.

    reach: ``all`` positions, or ``optimal_self``: only those a perfect player of the side to move meets
    against any opponent (use it as a second, upweighted source: these decide the exhaustive check).

    seats: ``both`` | ``X`` | ``O`` (which side is to move); sample: number of positions (seeded) or None
    for all; moves: ``all_optimal`` (one row per optimal move), ``one`` (one optimal move chosen by seed)
    or ``preferred`` (:func:`preferred_move`, one fixed answer per position); kinds: only positions of these
    :func:`position_kind` kinds (``win``, ``block``, ``open``), e.g. a second source that upweights ``open``;
    reasoning: False (marker only), True (a reason line before the marker) or ``lines`` (the board's
    lines, then the reason line; see ``format.lines_text``).
    """
    if moves not in _MOVE_CHOICES:
        raise ConfigError(f"tictactoe_sft: moves must be one of {', '.join(_MOVE_CHOICES)}, got {moves!r}")
    rng = random.Random(seed)
    for board in select_positions(seats, sample, seed, reach, kinds):
        best = optimal_moves(board)
        if moves == "all_optimal":
            cells = best
        elif moves == "preferred":
            cells = [preferred_move(board)]
        else:
            cells = [rng.choice(best)]
        for cell in cells:
            yield {
                "messages": build_prompt(board) + _assistant(format_answer(board, cell, reasoning)),
                "meta": {"source": "tictactoe_sft", "id": f"ttt-sft-{board}-{cell}"},
            }


def rejected_order(board: str) -> list[int]:
    """Non-optimal moves, easiest to reject first: losing moves, then draws thrown away from a won position,
    then slower wins (and faster losses); within a class the larger value gap comes first."""
    values = move_values(board)
    best = max(values.values())
    bad = [c for c, v in values.items() if v < best]
    return sorted(bad, key=lambda c: (outcome(values[c]), values[c], c))


@GENERATORS.register("tictactoe_dpo")
def tictactoe_dpo(
    seats: str = "both",
    sample: int | None = None,
    pairs_per_position: int | str = 2,
    hard_pairs: bool = True,
    reasoning: bool | str = True,
    seed: int = 0,
    chosen: str = "random",
    kinds: list[str] | None = None,
    rejected: str = "worse_moves",
) -> Iterator[dict[str, Any]]:
    """``preference`` rows: chosen is an optimal move, rejected a worse one.

    rejected: ``worse_moves`` (each rejected answer is a non-optimal move with its own true reasoning) or
    ``misread_line`` (with ``reasoning: lines``, win and block positions only: the rejected answer names the
    right pattern but the empty cell of another line — ``win XX3`` where the line is ``XX8`` —, the mistake
    left after SFT; rejected cells are the legal non-optimal ones, ``pairs_per_position`` of them, seeded).

    chosen: ``random`` (a seeded choice among the optimal moves) or ``preferred`` (:func:`preferred_move`:
    the same answer SFT with ``moves: preferred`` taught, so DPO does not pull towards other optimal moves).
    kinds: as for ``tictactoe_sft``.

    Positions where every legal move is optimal give no pair. pairs_per_position: how many rejected moves
    per position (``all`` for every non-optimal move), taken in :func:`rejected_order`. hard_pairs: when
    more than one pair is taken but not all, the last slot goes to the smallest-gap move (the hardest
    contrast) instead of the next easy one.
    """
    if pairs_per_position != "all" and (not isinstance(pairs_per_position, int) or pairs_per_position < 1):
        raise ConfigError(
            f"tictactoe_dpo: pairs_per_position must be >= 1 or 'all', got {pairs_per_position!r}"
        )
    if chosen not in ("random", "preferred"):
        raise ConfigError(f"tictactoe_dpo: chosen must be 'random' or 'preferred', got {chosen!r}")
    if rejected not in ("worse_moves", "misread_line"):
        raise ConfigError(
            f"tictactoe_dpo: rejected must be 'worse_moves' or 'misread_line', got {rejected!r}"
        )
    if rejected == "misread_line":
        if reasoning != "lines":
            raise ConfigError("tictactoe_dpo: rejected 'misread_line' needs reasoning: lines")
        yield from _misread_pairs(seats, sample, seed, chosen, kinds, pairs_per_position)
        return
    rng = random.Random(seed)
    for board in select_positions(seats, sample, seed, kinds=kinds):
        order = rejected_order(board)
        if not order:
            continue
        if pairs_per_position == "all" or pairs_per_position >= len(order):
            picked = order
        elif hard_pairs and pairs_per_position > 1:
            picked = order[: pairs_per_position - 1] + [order[-1]]
        else:
            picked = order[:pairs_per_position]
        best = optimal_moves(board)
        for bad in picked:
            good = preferred_move(board) if chosen == "preferred" else rng.choice(best)
            yield {
                "prompt": build_prompt(board),
                "chosen": _assistant(format_answer(board, good, reasoning)),
                "rejected": _assistant(format_answer(board, bad, reasoning)),
                "meta": {"source": "tictactoe_dpo", "id": f"ttt-dpo-{board}-{good}-{bad}"},
            }


def _misread_pairs(
    seats: str, sample: int | None, seed: int, chosen: str, kinds: list[str] | None, per_position: int | str
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for board in select_positions(seats, sample, seed, kinds=kinds):
        if position_kind(board) == "open":
            continue
        best = optimal_moves(board)
        good = preferred_move(board) if chosen == "preferred" else rng.choice(best)
        lines, reason, _ = format_answer(board, good, "lines").split("\n")
        kind, group = reason.split()
        marks = group.rstrip("0123456789")
        wrong = [c for c in legal_moves(board) if c not in best]
        if per_position != "all" and per_position < len(wrong):
            wrong = sorted(rng.sample(wrong, per_position))
        for bad in wrong:
            yield {
                "prompt": build_prompt(board),
                "chosen": _assistant(format_answer(board, good, "lines")),
                "rejected": _assistant(f"{lines}\n{kind} {marks}{bad}\nMove: {bad}"),
                "meta": {"source": "tictactoe_dpo", "id": f"ttt-dpo-misread-{board}-{good}-{bad}"},
            }


@GENERATORS.register("tictactoe_rl")
def tictactoe_rl(
    seats: str = "both",
    sample: int | None = None,
    min_legal_moves: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    reach: str = "all",
    kinds: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``prompt_only`` rows with ``board`` and ``player`` columns for the rewards.

    reach, kinds: as for ``tictactoe_sft``.

    min_legal_moves: skip positions with fewer legal moves (2 drops forced moves, which teach nothing);
    shuffle: seeded order, so a stage that reads the first N rows sees every ply.
    """
    boards = rl_boards(seats, sample, seed, reach, kinds, min_legal_moves)
    if shuffle:
        random.Random(seed).shuffle(boards)
    for board in boards:
        yield rl_row(board, "tictactoe_rl", "ttt-rl")


def rl_boards(
    seats: str, sample: int | None, seed: int, reach: str, kinds: list[str] | None, min_legal_moves: int
) -> list[str]:
    """The positions an RL prompt set draws from: :func:`select_positions` less those with fewer than
    ``min_legal_moves`` legal moves (a forced move teaches nothing), in the canonical order."""
    if not isinstance(min_legal_moves, int) or isinstance(min_legal_moves, bool) or min_legal_moves < 0:
        raise ConfigError(f"tictactoe: min_legal_moves must be an integer >= 0, got {min_legal_moves!r}")
    return [
        b
        for b in select_positions(seats, sample, seed, reach, kinds)
        if len(legal_moves(b)) >= min_legal_moves
    ]


def rl_row(board: str, source: str, id_prefix: str) -> dict[str, Any]:
    """One ``prompt_only`` row for the RL stages: the prompt, and the ``board`` and ``player`` columns the
    rewards read; ``meta`` names the generator and a row id ``{id_prefix}-{board}``."""
    return {
        "prompt": build_prompt(board),
        "board": board,
        "player": side_to_move(board),
        "meta": {"source": source, "id": f"{id_prefix}-{board}"},
    }


def _agent_move(kind: str, board: str, rng: random.Random, epsilon: float) -> int:
    if kind == "random" or (kind == "mixed" and rng.random() < epsilon):
        return rng.choice(legal_moves(board))
    return rng.choice(optimal_moves(board))


def game_transcript(moves: list[int], reasoning: bool | str = True) -> str:
    """A game as plain text: each turn is the prompt text and the answer text, as in the chat stages, then
    the final board and the result (``X wins`` / ``O wins`` / ``draw``)."""
    board, turns = EMPTY_BOARD, []
    for cell in moves:
        turns.append(f"{prompt_text(board)}\n{format_answer(board, cell, reasoning)}")
        board = play(board, cell)
    who = winner(board)
    turns.append(f"{render_board(board)}\n{f'{who} wins' if who else 'draw'}")
    return "\n\n".join(turns)


@GENERATORS.register("tictactoe_games")
def tictactoe_games(
    n_games: int = 1000,
    agents: tuple[str, ...] | list[str] = ("random", "minimax", "mixed"),
    epsilon: float = 0.3,
    reasoning: bool | str = True,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """``text`` rows: whole games between agents drawn (seeded) from ``agents`` for each seat.

    Agents: ``random`` (uniform legal), ``minimax`` (uniform among optimal moves), ``mixed`` (random with
    probability ``epsilon``, else minimax). The id holds the seed, the game index and the move sequence.
    """
    unknown = set(agents) - {"random", "minimax", "mixed"}
    if unknown or not agents:
        raise ConfigError(f"tictactoe_games: agents must be from random, minimax, mixed; got {list(agents)}")
    rng = random.Random(seed)
    for index in range(n_games):
        seat_kind = {X: rng.choice(list(agents)), "O": rng.choice(list(agents))}
        board, moves = EMPTY_BOARD, []
        while legal_moves(board):
            cell = _agent_move(seat_kind[side_to_move(board)], board, rng, epsilon)
            moves.append(cell)
            board = play(board, cell)
        yield {
            "text": game_transcript(moves, reasoning),
            "meta": {
                "source": "tictactoe_games",
                "id": f"ttt-game-{seed}-{index}-{''.join(map(str, moves))}",
            },
        }
