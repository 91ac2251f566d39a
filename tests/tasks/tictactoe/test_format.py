import pytest

from minigpt.tasks.tictactoe.engine import EMPTY_BOARD, all_positions, legal_moves, play, winning_cells
from minigpt.tasks.tictactoe.format import (
    build_prompt,
    format_answer,
    move_reason,
    parse_move,
    prompt_text,
    render_board,
    to_failure,
)

BOARD = "X.O.X.O.."  # X to move; 1, 3, 5, 7, 8 free


def test_prompt_shape():
    assert render_board(BOARD) == "X 1 O\n3 X 5\nO 7 8"
    assert prompt_text(BOARD) == "X 1 O\n3 X 5\nO 7 8\nX to move"
    assert build_prompt("X........") == [{"role": "user", "content": "X 1 2\n3 4 5\n6 7 8\nO to move"}]


def test_answer_shape_and_reasons():
    assert format_answer(BOARD, 8) == "win 8\nMove: 8"  # 0-4-8 completes
    assert format_answer(BOARD, 8, reasoning=False) == "Move: 8"
    assert move_reason("XX..O....", 2) == "block 2"
    assert move_reason("X...O...X", 1) == "edge 1"
    assert move_reason("X...O...X", 2) == "corner 2"
    assert move_reason(EMPTY_BOARD, 4) == "centre 4"
    # X at 0 and 8 against O at 1 and 4: taking 6 threatens 3 (0-3-6) and 7 (6-7-8): a fork.
    assert move_reason("XO..O...X", 6) == "fork 6"


def test_reasons_never_contradict_the_move():
    for board in all_positions()[::7]:
        me = "XO"[(9 - board.count(".")) % 2]
        for cell in legal_moves(board):
            kind, number = move_reason(board, cell).split()
            assert int(number) == cell
            if kind == "win":
                assert cell in winning_cells(board, me)
            elif kind == "block":
                assert cell in winning_cells(board, "O" if me == "X" else "X")
            elif kind == "fork":
                assert len(winning_cells(play(board, cell), me)) >= 2
            assert parse_move(format_answer(board, cell), board).move == cell


@pytest.mark.parametrize(
    ("text", "status", "move", "reason"),
    [
        ("Move: 1", "ok", 1, None),
        ("win 8\nMove: 8", "ok", 8, None),
        ("Move: 5\n", "ok", 5, None),  # trailing whitespace is ignored
        ("Move: 5 \n\n  ", "ok", 5, None),
        ("Move: 5\r\n", "ok", 5, None),
        ("block 3\r\nMove: 7", "ok", 7, None),
        ("win at 8\nMove: 1", "ok", 1, None),  # a move named in the reasoning is ignored
        ("Move: 3\nMove: 7", "ok", 7, None),  # several markers: only the final line counts
        ("Move: 0", "illegal", 0, "occupied"),
        ("centre 4\nMove: 4", "illegal", 4, "occupied"),
        ("", "parse_error", None, "empty"),
        ("  \n\t\n", "parse_error", None, "empty"),
        ("I would play 5", "parse_error", None, "no_marker"),
        ("5", "parse_error", None, "no_marker"),
        ("Move: 5\nthat is my move", "parse_error", None, "trailing_text"),
        ("Move: 5\n.", "parse_error", None, "trailing_text"),
        ("Move: 5<|im_end|>", "parse_error", None, "malformed"),  # special tokens must be stripped first
        ("Move: 5.", "parse_error", None, "malformed"),
        ("Move:5", "parse_error", None, "malformed"),
        ("Move:  5", "parse_error", None, "malformed"),
        ("move: 5", "parse_error", None, "malformed"),
        ("MOVE: 5", "parse_error", None, "malformed"),
        (" Move: 5", "parse_error", None, "malformed"),
        ("Move: 05", "parse_error", None, "malformed"),
        ("Move: -1", "parse_error", None, "malformed"),
        ("Move: five", "parse_error", None, "malformed"),
        ("Move: \uff15", "parse_error", None, "malformed"),  # a full-width digit is not a cell
        ("Move: 5 7", "parse_error", None, "malformed"),
        ("**Move: 5**", "parse_error", None, "malformed"),
        ("Move: 9", "parse_error", None, "out_of_range"),
        ("Move: 10", "parse_error", None, "out_of_range"),
        ("Move: 123456789012345678901234567890", "parse_error", None, "out_of_range"),
    ],
)
def test_parse_move_adversarial(text, status, move, reason):
    result = parse_move(text, BOARD)
    assert (result.status, result.move, result.reason) == (status, move, reason)
    assert result.ok == (status == "ok")


def test_parse_move_game_over_and_non_string():
    assert parse_move("Move: 5", "XXXOO....").status == "illegal"
    assert parse_move("Move: 5", "XXXOO....").reason == "game_over"
    assert parse_move(None, BOARD).status == "parse_error"  # type: ignore[arg-type]


def test_to_failure():
    assert to_failure(parse_move("Move: 1", BOARD), "Move: 1") is None
    failure = to_failure(parse_move("Move: 0", BOARD), "Move: 0")
    assert (failure.status, failure.reason, failure.move, failure.completion) == (
        "illegal",
        "occupied",
        0,
        "Move: 0",
    )


def test_lines_reasoning_lists_every_line_and_still_parses():
    from minigpt.tasks.tictactoe.format import LINES, format_answer, lines_text

    board = "XX.OO...."
    # each line: its marks in line order, then its empty cells: row 0 "XX2", column 0 "X" + "O" + "6"
    assert lines_text(board) == "lines XX2 OO5 678 XO6 XO7 258 XO8 O26"
    answer = format_answer(board, 2, reasoning="lines")
    assert answer == "lines XX2 OO5 678 XO6 XO7 258 XO8 O26\nwin XX2\nMove: 2"
    assert parse_move(answer, board).move == 2 and parse_move(answer, board).ok
    # every line of three cells appears once: 3 rows, 3 columns, 2 diagonals
    assert sorted(LINES) == sorted({tuple(line) for line in LINES}) and len(LINES) == 8
    with pytest.raises(ValueError, match="reasoning must be one of"):
        format_answer(board, 2, reasoning="long")


def test_line_reason_names_a_written_line_whose_last_digit_is_the_move():
    """A win or a block names a group of the lines text that ends with exactly the move's digit, and only
    the mover's marks (win) or only the opponent's (block); other kinds keep the bare cell."""
    from minigpt.tasks.tictactoe.engine import all_positions, legal_moves, other, side_to_move
    from minigpt.tasks.tictactoe.format import line_group, line_reason, lines_text

    assert line_group("X.O......", (0, 1, 2)) == "XO1"
    assert line_reason("XX.OO....", 5) == "block OO5"
    assert line_reason("X...O...X", 2) == "corner 2"
    seen = set()
    for board in all_positions():
        written = lines_text(board).split()[1:]
        me = side_to_move(board)
        for cell in legal_moves(board):
            kind, text = line_reason(board, cell).split()
            seen.add(kind)
            if kind in ("win", "block"):
                mark = me if kind == "win" else other(me)
                assert text in written and text == mark * 2 + str(cell), (board, cell, text)
            else:
                assert text == str(cell)
    assert seen == {"win", "block", "fork", "centre", "corner", "edge"}
