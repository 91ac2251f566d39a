from minigpt.tasks.tictactoe.arena import MinimaxAgent, ScriptedAgent
from minigpt.tasks.tictactoe.play import draw_board, play_terminal
from minigpt.tasks.tictactoe.player import NO_MOVE


def _script(*answers):
    feed = iter(answers)

    def input_fn(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return input_fn


def test_draw_board():
    assert draw_board("X...O....") == " X | 1 | 2 \n---+---+---\n 3 | O | 5 \n---+---+---\n 6 | 7 | 8 "


def test_human_loses_to_minimax_with_bad_input_reasked():
    printed = []
    # Human X tries cells in a fixed order (taken ones are refused and re-asked) after two bad inputs. The
    # minimax agent, standing in for a model, answers 7, 2, 4 and wins with 2-4-6.
    script = _script("abc", "9", "1", "1", "3", "5", "7", "0", "2", "6", "8")
    result = play_terminal(MinimaxAgent(seed=0), "X", script, lambda *a: printed.append(a[0]))
    assert result == "O"
    text = "\n".join(printed)
    assert "'abc' is not a free cell" in text and "'9' is not a free cell" in text
    assert "'1' is not a free cell; choose one of [0, 2, 3, 4, 5, 6, 8]" in text
    assert [line for line in printed if line.startswith("Model plays")] == [
        "Model plays 7.",
        "Model plays 2.",
        "Model plays 4.",
        "Model plays 6.",
    ]
    assert printed[-1] == "O wins: the model beat you."


def test_human_wins_as_o_and_seat_is_asked():
    printed = []
    # The seat question is answered with garbage first; then the human (O) beats a
    # corner-first agent: X 0, O 4, X 8, O 2, X 6 (forced block), O 5 (6 is refused), X 1, O 3 wins 3-4-5.

    class Corner(ScriptedAgent):
        def move(self, board):
            return next(c for c in (0, 8, 2, 6, 1, 3, 5, 7, 4) if board[c] == ".")

    result = play_terminal(
        Corner(), None, _script("?", "o", "4", "2", "6", "5", "3", "1", "7"), printed.append
    )
    assert result == "O"
    assert printed[-1] == "You win!"
    assert "Please type X or O" in "\n".join(map(str, printed))


def test_quit_and_forfeit():
    assert play_terminal(MinimaxAgent(), "X", _script("q"), lambda *a: None) == "quit"
    assert play_terminal(MinimaxAgent(), "X", _script(), lambda *a: None) == "quit"  # end of input

    class Broken(ScriptedAgent):
        def move(self, board):
            return NO_MOVE

    printed = []
    assert play_terminal(Broken(), "X", _script("4"), printed.append) == "X"
    assert "forfeit" in printed[-1]
