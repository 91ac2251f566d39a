"""Tic-tac-toe rules on a 9-character board string.

A board is row-major, cells 0..8, each ``X``, ``O`` or ``.``. X moves first, so the side to move is
derived from the counts and never stored. Boards are plain strings so they hash, sort and serialise
for free (dataset columns, cache keys, row ids).
"""

from __future__ import annotations

from functools import lru_cache

from minigpt.errors import DataError

X, O, EMPTY = "X", "O", "."  # noqa: E741  (O is the player, not a zero)
EMPTY_BOARD = EMPTY * 9
CENTRE = 4
CORNERS = (0, 2, 6, 8)
EDGES = (1, 3, 5, 7)
LINES: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),
    (3, 4, 5),
    (6, 7, 8),
    (0, 3, 6),
    (1, 4, 7),
    (2, 5, 8),
    (0, 4, 8),
    (2, 4, 6),
)
# Number of reachable positions where the game is not over; a regression anchor for the enumeration.
NUM_POSITIONS = 4520


def other(player: str) -> str:
    """The opponent of ``player`` (``X`` <-> ``O``)."""
    return O if player == X else X


def _check_cells(board: str) -> None:
    if not isinstance(board, str) or len(board) != 9 or any(c not in "XO." for c in board):
        raise DataError(f"not a tic-tac-toe board: {board!r} (need 9 characters of 'X', 'O', '.')")


def side_to_move(board: str) -> str:
    """``X`` when the counts are equal (X moves first), else ``O``. Raises DataError on impossible counts."""
    _check_cells(board)
    nx, no = board.count(X), board.count(O)
    if nx == no:
        return X
    if nx == no + 1:
        return O
    raise DataError(f"impossible board {board!r}: {nx} X and {no} O")


def winner(board: str) -> str | None:
    """The player with three in a line, or None. Assumes a reachable board (at most one winner)."""
    for a, b, c in LINES:
        if board[a] != EMPTY and board[a] == board[b] == board[c]:
            return board[a]
    return None


def is_full(board: str) -> bool:
    return EMPTY not in board


def is_terminal(board: str) -> bool:
    """True when someone has won or no cell is left."""
    return winner(board) is not None or is_full(board)


def legal_moves(board: str) -> list[int]:
    """Empty cells in increasing order; empty when the game is over."""
    if is_terminal(board):
        return []
    return [i for i, c in enumerate(board) if c == EMPTY]


def play(board: str, cell: int) -> str:
    """The board after the side to move takes ``cell``. Raises DataError for an illegal move."""
    if cell not in legal_moves(board):
        raise DataError(f"illegal move {cell} on board {board!r}")
    return board[:cell] + side_to_move(board) + board[cell + 1 :]


def is_valid_board(board: str) -> bool:
    """True for a board reachable from the empty board by legal play (terminal boards included)."""
    return isinstance(board, str) and board in _reachable_set()


def winning_cells(board: str, player: str) -> list[int]:
    """Empty cells where ``player`` would complete a line now (threats), in increasing order."""
    cells = set()
    for line in LINES:
        marks = [board[i] for i in line]
        if marks.count(player) == 2 and marks.count(EMPTY) == 1:
            cells.add(line[marks.index(EMPTY)])
    return sorted(cells)


@lru_cache(maxsize=1)
def _reachable_set() -> frozenset[str]:
    seen = {EMPTY_BOARD}
    frontier = [EMPTY_BOARD]
    while frontier:
        nxt = []
        for board in frontier:
            for cell in legal_moves(board):
                child = play(board, cell)
                if child not in seen:
                    seen.add(child)
                    nxt.append(child)
        frontier = nxt
    return frozenset(seen)


@lru_cache(maxsize=1)
def _positions() -> tuple[str, ...]:
    live = [b for b in _reachable_set() if not is_terminal(b)]
    # Sorted by ply, then text: a fixed order so samples and batches are reproducible across runs.
    return tuple(sorted(live, key=lambda b: (9 - b.count(EMPTY), b)))


def all_positions() -> list[str]:
    """Every reachable position where the game is not over (4,520), ordered by ply then board text."""
    return list(_positions())


def all_reachable_boards() -> list[str]:
    """Every reachable board, terminal ones included (5,478), ordered by ply then board text."""
    return sorted(_reachable_set(), key=lambda b: (9 - b.count(EMPTY), b))
