import time

import pytest

from minigpt.errors import DataError
from minigpt.tasks.tictactoe import engine, solver
from minigpt.tasks.tictactoe.engine import (
    EMPTY_BOARD,
    LINES,
    all_positions,
    all_reachable_boards,
    is_terminal,
    is_valid_board,
    legal_moves,
    play,
    side_to_move,
    winner,
    winning_cells,
)
from minigpt.tasks.tictactoe.solver import (
    move_outcomes,
    move_values,
    optimal_moves,
    outcome_preserving_moves,
    value,
)


def test_position_counts():
    positions = all_positions()
    assert len(positions) == engine.NUM_POSITIONS == 4520
    assert len(set(positions)) == 4520
    assert len(all_reachable_boards()) == 5478  # the classic count of legal boards including terminal ones
    assert not any(is_terminal(b) for b in positions)
    seats = [side_to_move(b) for b in positions]
    assert seats.count("X") == 2423 and seats.count("O") == 2097
    assert positions[0] == EMPTY_BOARD


def test_winner_every_line():
    for line in LINES:
        for mark in "XO":
            board = ["."] * 9
            for cell in line:
                board[cell] = mark
            assert winner("".join(board)) == mark
    assert winner("XOXXOOOXX") is None  # full board, draw
    assert is_terminal("XOXXOOOXX") and legal_moves("XOXXOOOXX") == []
    assert legal_moves("XXXOO....") == []  # won: no more moves


def test_side_to_move_and_play():
    assert side_to_move(EMPTY_BOARD) == "X"
    assert side_to_move("X........") == "O"
    assert play("X........", 4) == "X...O...."
    with pytest.raises(DataError):
        play("X........", 0)
    with pytest.raises(DataError):
        side_to_move("XX.......")
    with pytest.raises(DataError):
        side_to_move("XO?......")
    with pytest.raises(DataError):
        side_to_move("X" * 8)
    assert is_valid_board("XXXOO....") and not is_valid_board("XXXOOO...") and not is_valid_board("abc")


def test_winning_cells():
    assert winning_cells("XX.OO....", "X") == [2]
    assert winning_cells("XX.OO....", "O") == [5]
    assert winning_cells("X.X.O.O..", "X") == [1]


def test_solver_fast_and_complete():
    solver.value.cache_clear()
    solver._move_values.cache_clear()
    start = time.perf_counter()
    for board in all_positions():
        assert optimal_moves(board)
    assert time.perf_counter() - start < 1.0
    assert value(EMPTY_BOARD) == 0
    assert optimal_moves(EMPTY_BOARD) == list(range(9))  # every opening draws


def test_known_positions():
    # X to move can win at 2 now (5 marks: value 10 - 5 = 5); blocking at 5 only draws; other moves lose
    # at once to O's win at 5 (6 marks: -(10 - 6) = -4).
    assert move_values("XX.OO....") == {2: 5, 5: 0, 6: -4, 7: -4, 8: -4}
    assert optimal_moves("XX.OO....") == [2]
    assert move_outcomes("XX.OO....") == {2: 1, 5: 0, 6: -1, 7: -1, 8: -1}
    # Block: O has no win, X threatens 2; only the block keeps the draw.
    assert optimal_moves("XX..O....") == [2]
    # Faster win preferred: O can win now at 5 (value 4) or block at 2 and win later (value 2).
    assert move_values("XX.OO..X.") == {2: 2, 5: 4, 6: -3, 8: -3}
    assert optimal_moves("XX.OO..X.") == [5]
    assert outcome_preserving_moves("XX.OO..X.") == [2, 5]
    # Full optimal sets of classic openings: corner -> centre only; centre -> any corner; edge -> 0, 2, 4, 7.
    assert optimal_moves("X........") == [4]
    assert optimal_moves("....X....") == [0, 2, 6, 8]
    assert optimal_moves(".X.......") == [0, 2, 4, 7]
    # Opposite corners against a centre: O must take an edge, a corner loses to a fork.
    assert optimal_moves("X...O...X") == [1, 3, 5, 7]
    assert move_outcomes("X...O...X")[2] == -1


def test_slower_loss_preferred():
    # O to move is lost (X threatens 6 and gets a fork after the block), but blocking loses at 7 marks
    # (value -3) while anything else loses at once (5 marks, value -5): the solver picks the block.
    assert move_values(".....O.XX") == {0: -5, 1: -5, 2: -5, 3: -5, 4: -5, 6: -3}
    assert optimal_moves(".....O.XX") == [6]
    for board in all_positions():
        values = move_values(board)
        best = max(values.values())
        assert set(optimal_moves(board)) == {c for c, v in values.items() if v == best}
        assert value(board) == best
