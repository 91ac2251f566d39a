from fractions import Fraction

import pytest

from minigpt.tasks.tictactoe.arena import (
    Agent,
    MinimaxAgent,
    MixedAgent,
    RandomAgent,
    ScriptedAgent,
    exhaustive_check,
    play_match,
)
from minigpt.tasks.tictactoe.engine import legal_moves
from minigpt.tasks.tictactoe.evaluate import evaluate_player, exact_reference, format_report, wilson_interval
from minigpt.tasks.tictactoe.format import ParseFailure
from minigpt.tasks.tictactoe.solver import optimal_moves


class FirstFreeAgent(ScriptedAgent):
    """Plays the lowest free cell: legal but easy to beat."""

    name = "first-free"

    def move(self, board: str) -> int:
        return legal_moves(board)[0]


class BlunderAgent(MinimaxAgent):
    """Perfect except on one board, where it plays a losing move."""

    def move(self, board: str) -> int:
        if board == "X........":
            return 1  # O on an edge after a corner opening loses
        return super().move(board)


class FlakyAgent(MinimaxAgent):
    """Perfect, but answers garbage on one board and a taken cell on another."""

    def moves(self, boards):
        out = []
        for b in boards:
            if b == "....X....":
                out.append(ParseFailure("parse_error", "no_marker", None, "hmm"))
            elif b == "X........":
                out.append(ParseFailure("illegal", "occupied", 0, "Move: 0"))
            else:
                out.append(self.move(b))
        return out


def test_exact_references():
    x = exact_reference("X")
    assert x == {"X": Fraction(75257, 77760), "draw": Fraction(2503, 77760)}
    assert round(float(x["X"]), 3) == 0.968 and round(float(x["draw"]), 3) == 0.032
    o = exact_reference("O")
    assert o == {"O": Fraction(2645, 3402), "draw": Fraction(757, 3402)}
    assert round(float(o["O"]), 3) == 0.777 and round(float(o["draw"]), 3) == 0.223


def test_simulated_references():
    # 2,000 seeded games each; tolerances are about four standard errors.
    perfect_x = play_match(MinimaxAgent(seed=1), RandomAgent(seed=2), "X", 2000)
    assert perfect_x.counts["loss"] == 0
    assert abs(perfect_x.counts["win"] / 2000 - 0.9678) < 0.016
    perfect_o = play_match(MinimaxAgent(seed=3), RandomAgent(seed=4), "O", 2000)
    assert perfect_o.counts["loss"] == 0
    assert abs(perfect_o.counts["win"] / 2000 - 0.7775) < 0.037
    assert perfect_o.counts == play_match(MinimaxAgent(seed=3), RandomAgent(seed=4), "O", 2000).counts


def test_agents():
    assert isinstance(RandomAgent(), Agent) and isinstance(MinimaxAgent(), Agent)
    boards = ["X........"] * 20
    assert set(MinimaxAgent(seed=0).moves(boards)) == {4}
    assert len(set(RandomAgent(seed=0).moves(boards))) > 3
    mixed = MixedAgent(epsilon=0.5, seed=0).moves(boards * 5)
    assert 0.4 < mixed.count(4) / 100 < 0.7  # 50% minimax (always 4) + 50% random (4 with prob 1/8)
    assert MixedAgent(epsilon=0.0).moves(["....X...."] * 30) == MixedAgent(epsilon=0.0).moves(
        ["....X...."] * 30
    )
    assert set(MixedAgent(epsilon=0.0).moves(["....X...."] * 30)) <= set(optimal_moves("....X...."))


def test_minimax_draws_itself():
    result = play_match(MinimaxAgent(seed=0), MinimaxAgent(seed=1), "X", 50)
    assert result.counts["draw"] == 50


def test_exhaustive_perfect_agent():
    for seat in "XO":
        check = exhaustive_check(MinimaxAgent(seed=7), seat)
        assert check.losses == 0 and check.illegal == 0 and check.parse_errors == 0 and check.unbeaten
        assert check.games == check.wins + check.draws
        assert check.wins > 0 and check.draws > 0


def test_exhaustive_finds_losses():
    check = exhaustive_check(FirstFreeAgent(), "X")
    assert check.losses > 0 and not check.unbeaten
    check = exhaustive_check(BlunderAgent(seed=0), "O")
    assert check.losses > 0 and all(b[0] == "X" and b[1] == "O" for b in check.losing_boards)
    assert exhaustive_check(BlunderAgent(seed=0), "X").losses == 0  # the blunder is only ever played as O


def test_exhaustive_counts_invalid_answers():
    check = exhaustive_check(FlakyAgent(seed=0), "O")
    # O faces each of X's 9 openings once: centre -> parse error, corner 0 -> illegal.
    assert check.parse_errors == 1 and check.illegal == 1 and check.losses == 0 and not check.unbeaten
    match = play_match(FlakyAgent(seed=0), MinimaxAgent(seed=5), "O", 100)
    assert match.counts["parse_error"] + match.counts["illegal"] > 0
    assert match.n == 100
    assert all(isinstance(f, ParseFailure) for _, f in match.failures)


def test_wilson_interval():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluate_player_and_report():
    import json

    result = evaluate_player(MinimaxAgent(seed=0), games_per_opponent=40, seed=1)
    json.dumps(result)  # JSON-serialisable
    assert set(result) == {
        "games",
        "failure_examples",
        "optimal_moves",
        "exhaustive",
        "unbeatable",
        "settings",
    }
    assert set(result["games"]) == {"random", "minimax", "mixed"}
    for seats in result["games"].values():
        for row in seats.values():
            assert row["n"] == 40 and row["loss"]["count"] == 0
            assert sum(row[k]["count"] for k in ("win", "draw", "loss", "illegal", "parse_error")) == 40
    assert result["optimal_moves"]["optimal"]["rate"] == 1.0 and result["optimal_moves"]["n"] == 4520
    assert result["unbeatable"] is True
    report = format_report(result)
    assert "| random | X | 40 |" in report and "Unbeatable: yes" in report

    weak = evaluate_player(FirstFreeAgent(), games_per_opponent=10, optimal_rate=False)
    assert weak["unbeatable"] is False and "optimal_moves" not in weak
    assert weak["games"]["minimax"]["X"]["loss"]["count"] > 0
