"""Play against an agent (usually a checkpoint) in the terminal.

Input and output go through ``input_fn`` / ``print_fn`` so a test can script a whole game.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from minigpt.tasks.tictactoe.arena import Agent
from minigpt.tasks.tictactoe.engine import (
    EMPTY,
    EMPTY_BOARD,
    O,
    X,
    legal_moves,
    other,
    play,
    side_to_move,
    winner,
)


def draw_board(board: str) -> str:
    """The board as a grid; empty cells show their number so the player knows what to type."""
    cells = [c if c != EMPTY else str(i) for i, c in enumerate(board)]
    rows = [f" {cells[r * 3]} | {cells[r * 3 + 1]} | {cells[r * 3 + 2]} " for r in range(3)]
    return "\n---+---+---\n".join(rows)


def ask_seat(input_fn: Callable[[str], str] = input, print_fn: Callable[..., None] = print) -> str | None:
    """Ask X or O until answered; None when input ends or the player types ``q``."""
    while True:
        try:
            answer = input_fn("Play as X (first) or O? ").strip().upper()
        except EOFError:
            return None
        if answer in (X, O):
            return answer
        if answer == "Q":
            return None
        print_fn("Please type X or O (q quits).")


def play_terminal(
    player: Agent,
    human_seat: str | None = None,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., None] = print,
) -> str:
    """One game of a human against ``player``. Returns ``X`` or ``O`` (the winner), ``draw`` or ``quit``.

    Bad input (not a number, out of range, taken cell) is re-asked. If the agent cannot produce a legal
    move (a checkpoint's ``move`` returns -1), the game stops and the human wins by forfeit.
    """
    seat = human_seat or ask_seat(input_fn, print_fn)
    if seat is None:
        return "quit"
    if seat not in (X, O):
        raise ValueError(f"human_seat must be 'X' or 'O', got {seat!r}")
    board = EMPTY_BOARD
    print_fn(f"You are {seat}. Type a cell number, q to quit.")
    while legal_moves(board):
        print_fn(draw_board(board))
        if side_to_move(board) == seat:
            try:
                raw = input_fn(f"Your move ({seat}): ").strip()
            except EOFError:
                return "quit"
            if raw.lower() == "q":
                return "quit"
            if not raw.isdigit() or int(raw) not in legal_moves(board):
                print_fn(f"'{raw}' is not a free cell; choose one of {legal_moves(board)}.")
                continue
            board = play(board, int(raw))
        else:
            cell = player.move(board)
            if cell not in legal_moves(board):
                print_fn(f"The model gave no legal move ({cell}); you win by forfeit.")
                return seat
            print_fn(f"Model plays {cell}.")
            board = play(board, cell)
    print_fn(draw_board(board))
    who = winner(board)
    if who is None:
        print_fn("Draw.")
        return "draw"
    print_fn("You win!" if who == seat else f"{other(seat)} wins: the model beat you.")
    return who


def play_checkpoint(
    model_dir: str | Path, human_seat: str | None = None, trust_remote_code: bool = False
) -> str:
    """``minigpt play``: load a checkpoint with :func:`load_player` and play one game in the terminal."""
    from minigpt.tasks.tictactoe.player import load_player

    return play_terminal(load_player(model_dir, trust_remote_code=trust_remote_code), human_seat)


def _cmd_play(args: argparse.Namespace) -> int:
    play_checkpoint(args.checkpoint, args.seat, trust_remote_code=args.trust_remote_code)
    return 0


def register_play(sub: argparse._SubParsersAction) -> None:
    """``minigpt play CHECKPOINT``: a sub-command the tic-tac-toe task brings (minigpt/tasks/eval_catalog.py)."""
    from minigpt.cli_options import add_trust_remote_code

    play = sub.add_parser("play", help="play tic-tac-toe against a checkpoint in the terminal")
    play.add_argument("checkpoint")
    play.add_argument("--seat", choices=["X", "O"], help="your seat (asked if omitted)")
    add_trust_remote_code(play)
    play.set_defaults(func=_cmd_play)
