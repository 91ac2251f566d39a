"""Agents and the games between them.

An agent answers ``move(board) -> int`` and, batched, ``moves(boards) -> list[int | ParseFailure]``; the
batched form is what the arena uses, so a model answers many games' positions in one ``generate`` call and
its parse errors and illegal moves are counted instead of raised. Scripted agents (random, minimax,
epsilon-mixed) always return legal moves and own a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from minigpt.tasks.tictactoe.engine import EMPTY_BOARD, X, legal_moves, other, play, side_to_move, winner
from minigpt.tasks.tictactoe.format import ParseFailure
from minigpt.tasks.tictactoe.solver import optimal_moves

# Outcomes of a game from the evaluated agent's side. An invalid answer ends the game on the spot.
RESULTS = ("win", "draw", "loss", "illegal", "parse_error")


@runtime_checkable
class Agent(Protocol):
    name: str

    def move(self, board: str) -> int: ...

    def moves(self, boards: Sequence[str]) -> list[int | ParseFailure]: ...


class ScriptedAgent(ABC):
    """Base for agents that always answer legally; ``moves`` just maps ``move``."""

    name = "scripted"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    @abstractmethod
    def move(self, board: str) -> int:
        """A legal cell for the side to move."""

    def moves(self, boards: Sequence[str]) -> list[int | ParseFailure]:
        return [self.move(b) for b in boards]


class RandomAgent(ScriptedAgent):
    """Uniformly random legal move."""

    name = "random"

    def move(self, board: str) -> int:
        return self.rng.choice(legal_moves(board))


class MinimaxAgent(ScriptedAgent):
    """Perfect play; ties between optimal moves are broken uniformly at random from the seed."""

    name = "minimax"

    def move(self, board: str) -> int:
        return self.rng.choice(optimal_moves(board))


class MixedAgent(ScriptedAgent):
    """Random move with probability ``epsilon``, else a minimax move: a beatable but competent opponent."""

    def __init__(self, epsilon: float = 0.2, seed: int = 0):
        super().__init__(seed)
        self.epsilon = epsilon
        self.name = f"mixed{epsilon:g}"

    def move(self, board: str) -> int:
        if self.rng.random() < self.epsilon:
            return self.rng.choice(legal_moves(board))
        return self.rng.choice(optimal_moves(board))


@dataclass
class MatchResult:
    """Counts over a set of games from the evaluated agent's side (keys of ``RESULTS``)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    failures: list[tuple[str, ParseFailure]] = field(default_factory=list)  # (board, failure), first few

    @property
    def n(self) -> int:
        return sum(self.counts.values())


def play_match(agent: Agent, opponent: Agent, seat: str, n_games: int, keep_failures: int = 5) -> MatchResult:
    """Play ``n_games`` games with ``agent`` in ``seat`` (``X`` or ``O``), all games advancing together so
    each of the agent's turns is one batched ``moves`` call. The opponent must answer legally."""
    boards = [EMPTY_BOARD] * n_games
    live = list(range(n_games))
    result = MatchResult()
    while live:
        # All live games are at the same ply (they start together and each turn adds one mark).
        mover = side_to_move(boards[live[0]])
        answers = (agent if mover == seat else opponent).moves([boards[i] for i in live])
        still = []
        for i, answer in zip(live, answers, strict=True):
            if isinstance(answer, ParseFailure):
                if mover != seat:
                    raise ValueError(f"opponent {opponent.name} gave an invalid move on {boards[i]!r}")
                result.counts[answer.status] += 1
                if len(result.failures) < keep_failures:
                    result.failures.append((boards[i], answer))
                continue
            if answer not in legal_moves(boards[i]):
                # An agent outside this module may return a plain int; an illegal one still only counts.
                if mover != seat:
                    raise ValueError(f"opponent {opponent.name} played illegal {answer} on {boards[i]!r}")
                result.counts["illegal"] += 1
                continue
            boards[i] = play(boards[i], answer)
            who = winner(boards[i])
            if who is not None:
                result.counts["win" if who == seat else "loss"] += 1
            elif not legal_moves(boards[i]):
                result.counts["draw"] += 1
            else:
                still.append(i)
        live = still
    return result


@dataclass
class ExhaustiveResult:
    """The agent against every possible opponent line; counts are of distinct games (move sequences)."""

    seat: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    illegal: int = 0
    parse_errors: int = 0
    # the distinct boards the agent was asked about, ply by ply: the positions its own play meets
    asked: list[str] = field(default_factory=list)
    losing_boards: list[str] = field(default_factory=list)  # a few final boards of lost games

    @property
    def positions(self) -> int:
        """How many distinct boards the agent was asked about."""
        return len(self.asked)

    @property
    def unbeaten(self) -> bool:
        return self.losses == 0 and self.illegal == 0 and self.parse_errors == 0


def exhaustive_check(agent: Agent, seat: str, keep_examples: int = 5) -> ExhaustiveResult:
    """Let ``agent`` play ``seat`` while the opponent tries every legal reply.

    The agent is treated as a function of the board: its answer for each board is asked once (batched per
    ply) and cached, which is exact for greedy decoding. Boards at the same ply reached by different move
    orders are merged and carry a multiplicity, so ``games`` counts move sequences without replaying them.
    """
    if seat not in (X, other(X)):
        raise ValueError(f"seat must be 'X' or 'O', got {seat!r}")
    out = ExhaustiveResult(seat=seat)
    level: dict[str, int] = {EMPTY_BOARD: 1}
    while level:
        nxt: dict[str, int] = {}
        boards = list(level)
        if side_to_move(boards[0]) == seat:
            answers = dict(zip(boards, agent.moves(boards), strict=True))
            out.asked += boards
            children = []
            for board in boards:
                answer = answers[board]
                if isinstance(answer, ParseFailure) or answer not in legal_moves(board):
                    failed_parse = isinstance(answer, ParseFailure) and answer.status == "parse_error"
                    if failed_parse:
                        out.parse_errors += level[board]
                    else:
                        out.illegal += level[board]
                    out.games += level[board]
                    continue
                children.append((board, play(board, answer)))
        else:
            children = [(board, play(board, cell)) for board in boards for cell in legal_moves(board)]
        for parent, child in children:
            count = level[parent]
            who = winner(child)
            if who is not None or not legal_moves(child):
                out.games += count
                if who is None:
                    out.draws += count
                elif who == seat:
                    out.wins += count
                else:
                    out.losses += count
                    if len(out.losing_boards) < keep_examples and child not in out.losing_boards:
                        out.losing_boards.append(child)
            else:
                nxt[child] = nxt.get(child, 0) + count
        level = nxt
    return out
