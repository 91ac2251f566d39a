import pytest

from minigpt.errors import DataError
from minigpt.registry import REWARDS
from minigpt.tasks.tictactoe.rewards import tictactoe_format, tictactoe_shaped, tictactoe_solver

WIN_OR_BLOCK = "XX.OO...."  # X to move: 2 wins now, 5 blocks O's win (and only draws)


def _call(fn, texts, board, player="X"):
    return fn(texts, board=[board] * len(texts), player=[player] * len(texts))


def test_registered():
    assert REWARDS.get("tictactoe_shaped") is tictactoe_shaped
    assert REWARDS.get("tictactoe_solver") is tictactoe_solver
    assert REWARDS.get("tictactoe_format") is tictactoe_format


def test_shaped_values():
    texts = ["Move: 2", "Move: 5", "Move: 6", "Move: 7", "Move: 0", "nonsense", "Move: 9"]
    assert _call(tictactoe_shaped, texts, WIN_OR_BLOCK) == [1.0, 0.8, 0.4, 0.2, -1.0, -1.0, -1.0]
    assert _call(tictactoe_shaped, ["Move: 4"], "X........", "O") == [0.6]


def test_shaped_flaw_pays_a_block_when_a_win_was_available():
    # Blocking at 5 throws the win away (the game is then a draw) yet earns 0.8, close to the win's 1.0
    # and well above every quiet move; the solver reward gives the same move 0.0.
    assert _call(tictactoe_shaped, ["block 5\nMove: 5"], WIN_OR_BLOCK) == [0.8]
    assert _call(tictactoe_solver, ["block 5\nMove: 5"], WIN_OR_BLOCK) == [0.0]


def test_solver_values_by_hand():
    # Values for X: 2 -> +5 (win at 5 marks), 5 -> 0 (draw), 6/7/8 -> -4 (O wins at 6 marks).
    # r = 1 - 0.5*drop - 0.1*min(gap, 5): optimal 1.0; draw: 1 - 0.5 - 0.5 = 0.0; loss: 1 - 1 - 0.5 = -0.5.
    got = _call(tictactoe_solver, ["Move: 2", "Move: 5", "Move: 6", "Move: 3", "oops"], WIN_OR_BLOCK)
    assert got == pytest.approx([1.0, 0.0, -0.5, -1.0, -1.0])
    # O to move on XX.OO..X.: 5 wins now (+4), the block at 2 wins later (+2): gap 2, no drop -> 0.8;
    # 6 loses (-3): gap 7, drop 2 -> 1 - 1 - 0.5 = -0.5.
    got = _call(tictactoe_solver, ["Move: 5", "Move: 2", "Move: 6"], "XX.OO..X.", "O")
    assert got == pytest.approx([1.0, 0.8, -0.5])
    # Opening: every move draws, so every legal move is optimal.
    assert _call(tictactoe_solver, [f"Move: {c}" for c in range(9)], ".........") == [1.0] * 9


def test_format_reward():
    texts = ["Move: 2", "Move: 0", "reason\nMove: 5", "Move: 9", "Move:2", "Move: 2\nbye", ""]
    assert _call(tictactoe_format, texts, WIN_OR_BLOCK) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_message_list_completions():
    completions = [
        [{"role": "assistant", "content": "win 2\nMove: 2"}],
        [{"role": "assistant", "content": "x"}],
    ]
    boards, players = [WIN_OR_BLOCK] * 2, ["X"] * 2
    assert tictactoe_shaped(completions, boards, players) == [1.0, -1.0]
    assert tictactoe_solver(completions, board=boards, player=players, prompts=None) == [1.0, -1.0]
    assert tictactoe_format(completions, boards, players) == [1.0, 0.0]


def test_length_mismatch():
    with pytest.raises(DataError):
        tictactoe_solver(["Move: 2"], [WIN_OR_BLOCK] * 2, ["X"])
