"""Prompt and answer text for a chat model, and the strict move parser.

Prompt (one user message)::

    X 1 O
    3 X 5
    O 7 8
    O to move

Every cell is its own whitespace-separated symbol and an empty cell shows its own index, so answering is
partly a copy: the model reads the number it wants off the board. Any GPT-2 style byte-level pre-tokenizer
splits ``" 5"`` / ``" X"`` into their own pieces, so a cell can never merge with its neighbour.

Answer: an optional reasoning line, then the move marker as the final line::

    block 6
    Move: 6

Parser rules (:func:`parse_move`), applied to the completion text:

1. Trailing whitespace is removed; the rest is split on ``\\n`` (a ``\\r`` before it is dropped). Nothing
   else is normalised: special tokens such as ``<|im_end|>`` must already be stripped by the decoder.
2. Only the LAST line is read. It must be exactly ``Move: <n>`` (capital M, one space, a decimal integer
   without sign or leading zeros, nothing before or after). Earlier lines are reasoning and are ignored,
   even when they mention a cell or are themselves markers: with several markers only the final line counts.
3. Outcomes, decided in this order: ``ok`` (the last line is a marker for a legal cell); ``illegal`` (a
   well-formed marker naming a taken cell, reason ``occupied``, or any cell once the game is over, reason
   ``game_over``); ``parse_error`` with a reason: ``empty`` (nothing but whitespace), ``out_of_range``
   (a well-formed marker with n > 8), ``trailing_text`` (the last line is not a marker but an earlier line
   contains ``Move:`` and a number, e.g. ``Move: 4`` followed by a remark), ``malformed`` (the last line mentions ``move`` in any
   case but is not exact: ``move: 4``, ``Move:4``, `` Move: 4``, ``Move: 04``, ``Move: 4.``),
   ``no_marker`` (anything else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from minigpt.tasks.tictactoe.engine import (
    CENTRE,
    CORNERS,
    EMPTY,
    legal_moves,
    other,
    play,
    side_to_move,
    winner,
    winning_cells,
)

MARKER = "Move:"
_MARKER_LINE = re.compile(r"Move: (0|[1-9][0-9]*)")
_MARKER_ANYWHERE = re.compile(r"Move: ?-?[0-9]+")
_MARKER_ATTEMPT = re.compile(r"move", re.IGNORECASE)

Status = Literal["ok", "parse_error", "illegal"]


@dataclass(frozen=True)
class ParseResult:
    """What the parser made of a completion. ``move`` is set for ``ok`` and ``illegal``."""

    status: Status
    move: int | None = None
    reason: str | None = None  # parse_error / illegal detail: empty, no_marker, malformed, ...

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ParseFailure:
    """An agent's answer that is not a legal move: kept (with the raw text) so the arena can count it."""

    status: Literal["parse_error", "illegal"]
    reason: str
    move: int | None = None
    completion: str = ""


def render_board(board: str) -> str:
    """Three rows of space-separated cells; an empty cell shows its index (``X 1 O``)."""
    cells = [c if c != EMPTY else str(i) for i, c in enumerate(board)]
    return "\n".join(" ".join(cells[r * 3 : r * 3 + 3]) for r in range(3))


def prompt_text(board: str) -> str:
    """The user message content for ``board``; the side to move is derived from the board."""
    return f"{render_board(board)}\n{side_to_move(board)} to move"


def build_prompt(board: str) -> list[dict[str, str]]:
    """Chat messages asking for a move on ``board`` (a single user turn, no system prompt)."""
    return [{"role": "user", "content": prompt_text(board)}]


def move_reason(board: str, cell: int) -> str:
    """A short description of ``cell`` for the side to move, true of the position whatever its quality.

    First that applies: ``win`` (completes a line), ``block`` (takes a cell where the opponent would win),
    ``fork`` (leaves two or more winning cells), else the cell's shape: ``centre``, ``corner``, ``edge``.
    """
    me = side_to_move(board)
    if cell in winning_cells(board, me):
        kind = "win"
    elif cell in winning_cells(board, other(me)):
        kind = "block"
    elif len(winning_cells(play(board, cell), me)) >= 2:
        kind = "fork"
    elif cell == CENTRE:
        kind = "centre"
    elif cell in CORNERS:
        kind = "corner"
    else:
        kind = "edge"
    return f"{kind} {cell}"


# Rows, columns, diagonals: the order the ``lines`` reasoning lists them in.
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
REASONING_STYLES = (False, True, "lines")


def line_group(board: str, line: tuple[int, int, int]) -> str:
    """One line as written in the reasoning: its marks first (in line order), then its empty cells' indices:
    ``XX8``, ``XO1``, ``O48``, ``678``.

    Marks first, because a byte-level pre-tokenizer splits letters from digits (``XX`` | ``8``): the token
    after a ``XX`` token is then always an empty cell that completes X's line, which a model can copy by
    looking up what followed ``XX``. With cells in board order (``8XX`` or ``X8X``) the digit comes before
    or inside the pattern, and choosing it means looking ahead."""
    marks = "".join(board[i] for i in line if board[i] != EMPTY)
    return marks + "".join(str(i) for i in line if board[i] == EMPTY)


def lines_text(board: str) -> str:
    """The eight lines of the board (rows, columns, diagonals; see :func:`line_group`):
    ``lines XO1 X35 678 X36 X17 O58 XX8 XO6``. Written before the decision, it turns finding a win or a
    block from a two-dimensional search over the prompt into reading short token groups."""
    return "lines " + " ".join(line_group(board, line) for line in LINES)


def line_reason(board: str, cell: int) -> str:
    """:func:`move_reason`, but a win or a block names the line it completes as written by
    :func:`lines_text` (``win XX8``, ``block O4O``) instead of the bare cell.

    Measured: with ``win 8`` the model found that a win existed but often wrote the empty cell of another
    line (18% of the positions with a win were missed). Naming the line first splits the decision into
    copying a token group that is already written out, then reading the empty cell off that group."""
    kind, _ = move_reason(board, cell).split()
    if kind not in ("win", "block"):
        return f"{kind} {cell}"
    mark = side_to_move(board) if kind == "win" else other(side_to_move(board))
    for line in LINES:
        if cell in line and sum(board[i] == mark for i in line) == 2:
            return f"{kind} {line_group(board, line)}"
    raise AssertionError(f"no line through {cell} on {board}")  # move_reason said win/block


def format_answer(board: str, cell: int, reasoning: bool | str = True) -> str:
    """The assistant text for playing ``cell``: optional reasoning, then the marker line.

    reasoning: False (marker only), True (a short reason line), ``"lines"`` (the lines of the board, then
    the reason line)."""
    if reasoning not in REASONING_STYLES:
        raise ValueError(f"reasoning must be one of {REASONING_STYLES}, got {reasoning!r}")
    marker = f"{MARKER} {cell}"
    if not reasoning:
        return marker
    if reasoning == "lines":
        return f"{lines_text(board)}\n{line_reason(board, cell)}\n{marker}"
    return f"{move_reason(board, cell)}\n{marker}"


def parse_move(completion: str, board: str) -> ParseResult:
    """Read the move from the final line of ``completion`` (rules in the module docstring)."""
    if not isinstance(completion, str):
        return ParseResult("parse_error", reason="no_marker")
    text = completion.rstrip()
    if not text:
        return ParseResult("parse_error", reason="empty")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    match = _MARKER_LINE.fullmatch(lines[-1])
    if match is not None:
        cell = int(match.group(1))
        if cell > 8:
            return ParseResult("parse_error", move=None, reason="out_of_range")
        if cell not in legal_moves(board):
            reason = "game_over" if winner(board) is not None or EMPTY not in board else "occupied"
            return ParseResult("illegal", move=cell, reason=reason)
        return ParseResult("ok", move=cell)
    if any(_MARKER_ANYWHERE.search(line) for line in lines[:-1]):
        return ParseResult("parse_error", reason="trailing_text")
    if _MARKER_ATTEMPT.search(lines[-1]):
        return ParseResult("parse_error", reason="malformed")
    return ParseResult("parse_error", reason="no_marker")


def to_failure(result: ParseResult, completion: str) -> ParseFailure | None:
    """The :class:`ParseFailure` for a non-ok result (None when the move is legal)."""
    if result.ok:
        return None
    assert result.status in ("parse_error", "illegal")
    return ParseFailure(result.status, result.reason or "", result.move, completion)  # type: ignore[arg-type]
