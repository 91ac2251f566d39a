"""How ``minigpt chat`` turns input lines into user messages, so a message can span several lines.

Three ways, all keeping the newlines in the message the model sees:

- a line ending in ``\\`` continues on the next line (the backslash is dropped);
- a line starting with ``\"\"\"`` opens a block that a line ending in ``\"\"\"`` closes (end of input closes
  it too); everything in between is the message, blank lines included;
- in a terminal, lines that arrive together (a paste) are one message: after each line, lines already
  waiting on stdin are read into the same message.

The third needs to know whether more input is already waiting, which only a terminal can tell honestly: in a
pipe the whole input is always waiting, so there each line is one message unless one of the explicit rules
above joins it. Whitespace around the whole message is dropped; the lines inside are kept as typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

FENCE = '"""'
PROMPT = "you> "
CONTINUATION_PROMPT = "... "
# A paste reaches the terminal in one burst; over ssh it can come in pieces a few tens of ms apart. A human
# cannot type a next line this fast, and waiting this long once per message is not noticeable.
PASTE_WAIT_S = 0.1

MULTILINE_HELP = 'Multi-line message: end a line with \\ to continue it, or put it between """ lines.'
PASTE_HELP = " Pasted lines are sent as one message."


def multiline_help(paste: bool) -> str:
    """The startup hint about multi-line input; the paste rule is mentioned only where it applies."""
    return MULTILINE_HELP + (PASTE_HELP if paste else "")


def input_pending(stream: TextIO, timeout: float = PASTE_WAIT_S) -> bool:
    """Whether ``stream`` has input waiting now or within ``timeout`` seconds (False where that cannot be
    known: no file descriptor, or a platform whose ``select`` does not take one)."""
    import select

    try:
        ready, _, _ = select.select([stream], [], [], timeout)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return bool(ready)


def _continued(line: str, input_fn: Callable[[str], str]) -> list[str]:
    """``line`` and the lines its trailing backslashes pull in (end of input stops the chain)."""
    lines = []
    while line.rstrip().endswith("\\"):
        lines.append(line.rstrip()[:-1])
        try:
            line = input_fn(CONTINUATION_PROMPT)
        except EOFError:
            return lines
    return lines + [line]


def _fenced(first: str, input_fn: Callable[[str], str]) -> list[str]:
    """The lines of a ``\"\"\"`` block whose opening line (without the fence) is ``first``."""
    lines, line = [], first
    while not line.rstrip().endswith(FENCE):
        lines.append(line)
        try:
            line = input_fn(CONTINUATION_PROMPT)
        except EOFError:
            return lines
    return lines + [line.rstrip()[: -len(FENCE)]]


def read_message(input_fn: Callable[[str], str], pending: Callable[[], bool] | None = None) -> str | None:
    """The next user message, or None at end of input. ``pending`` says whether more pasted input is
    already waiting (None: never, as in a pipe). A one-line message may be a ``/command``."""
    try:
        line = input_fn(PROMPT)
    except EOFError:
        return None
    if line.lstrip().startswith(FENCE):
        return "\n".join(_fenced(line.lstrip()[len(FENCE) :], input_fn)).strip()
    lines = _continued(line, input_fn)
    while pending is not None and pending():
        try:
            # No prompt: the terminal already shows the pasted text.
            lines += _continued(input_fn(""), input_fn)
        except EOFError:
            break
    return "\n".join(lines).strip()
