import pytest

from minigpt.errors import ConfigError
from minigpt.registry import GENERATORS
from minigpt.tasks.tictactoe.engine import EMPTY_BOARD, all_positions, play, side_to_move, winner
from minigpt.tasks.tictactoe.format import build_prompt, parse_move
from minigpt.tasks.tictactoe.generators import rejected_order
from minigpt.tasks.tictactoe.solver import move_values, optimal_moves, outcome


def _board_of(prompt):
    """Recover the board from the prompt text (tests only: generators never need this)."""
    rows = prompt[0]["content"].split("\n")[:3]
    return "".join("." if c.isdigit() else c for row in rows for c in row.split())


def _check_meta(rows, source):
    ids = [r["meta"]["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert all(r["meta"]["source"] == source for r in rows)


def test_registered():
    names = GENERATORS.names()
    for name in ("tictactoe_sft", "tictactoe_dpo", "tictactoe_rl", "tictactoe_games"):
        assert name in names


def test_sft_all_optimal():
    rows = list(GENERATORS.get("tictactoe_sft")())
    assert len(rows) == sum(len(optimal_moves(b)) for b in all_positions()) == 7123
    _check_meta(rows, "tictactoe_sft")
    seats = set()
    for row in rows[::11]:
        user, assistant = row["messages"]
        assert set(row) == {"messages", "meta"}
        assert user["role"] == "user" and assistant["role"] == "assistant"
        board = _board_of([user])
        seats.add(side_to_move(board))
        result = parse_move(assistant["content"], board)
        assert result.ok and result.move in optimal_moves(board)
        assert row["meta"]["id"] == f"ttt-sft-{board}-{result.move}"
    assert seats == {"X", "O"}


def test_sft_options():
    one = list(GENERATORS.get("tictactoe_sft")(moves="one", reasoning=False, seed=3))
    assert len(one) == 4520
    assert all(r["messages"][1]["content"].startswith("Move: ") for r in one)
    assert one == list(GENERATORS.get("tictactoe_sft")(moves="one", reasoning=False, seed=3))  # deterministic
    other_seed = list(GENERATORS.get("tictactoe_sft")(moves="one", reasoning=False, seed=4))
    assert one != other_seed
    o_only = list(GENERATORS.get("tictactoe_sft")(seats="O", sample=100, moves="one"))
    assert len(o_only) == 100 and all(r["messages"][0]["content"].endswith("O to move") for r in o_only)
    with pytest.raises(ConfigError):
        list(GENERATORS.get("tictactoe_sft")(moves="best"))
    with pytest.raises(ConfigError):
        list(GENERATORS.get("tictactoe_sft")(seats="Z"))


def test_rejected_order():
    # X to move: 2 wins now (5), 5 only draws (0), 6/7/8 lose at once (-4): losing moves come first.
    assert rejected_order("XX.OO....") == [6, 7, 8, 5]
    # O to move: 5 wins now (4), 2 wins later (2), 6/8 lose (-3).
    assert rejected_order("XX.OO..X.") == [6, 8, 2]


def test_dpo_pairs():
    rows = list(GENERATORS.get("tictactoe_dpo")())
    _check_meta(rows, "tictactoe_dpo")
    gaps = []
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "meta"}
        board = _board_of(row["prompt"])
        assert row["prompt"] == build_prompt(board)
        good = parse_move(row["chosen"][0]["content"], board)
        bad = parse_move(row["rejected"][0]["content"], board)
        assert (
            good.ok and bad.ok and good.move in optimal_moves(board) and bad.move not in optimal_moves(board)
        )
        values = move_values(board)
        gaps.append(values[good.move] - values[bad.move])
    # Hard pairs are present: some rejected moves are only one value step worse than the chosen one.
    assert min(gaps) == 1 and max(gaps) >= 9
    # Default: two pairs per position, the easiest and the hardest rejected move.
    row_ids = {r["meta"]["id"] for r in rows}
    assert "ttt-dpo-XX.OO....-2-6" in row_ids and "ttt-dpo-XX.OO....-2-5" in row_ids
    assert not any(i.startswith("ttt-dpo-XX.OO....-2-7") for i in row_ids)


def test_dpo_pair_counts():
    every = list(GENERATORS.get("tictactoe_dpo")(pairs_per_position="all", sample=300, seed=1))
    boards = {_board_of(r["prompt"]) for r in every}
    assert len(every) == sum(len(rejected_order(b)) for b in boards)
    single = list(GENERATORS.get("tictactoe_dpo")(pairs_per_position=1, sample=300, seed=1))
    for row in single:
        board = _board_of(row["prompt"])
        bad = parse_move(row["rejected"][0]["content"], board).move
        assert bad == rejected_order(board)[0]  # the most clearly wrong move
        # ... and when a losing move exists, it is a losing move.
        if min(outcome(v) for v in move_values(board).values()) == -1:
            assert outcome(move_values(board)[bad]) == -1
    with pytest.raises(ConfigError):
        list(GENERATORS.get("tictactoe_dpo")(pairs_per_position=0))


def test_rl_rows():
    rows = list(GENERATORS.get("tictactoe_rl")())
    assert len(rows) == 4520
    _check_meta(rows, "tictactoe_rl")
    for row in rows[::13]:
        assert set(row) == {"prompt", "board", "player", "meta"}
        assert row["prompt"] == build_prompt(row["board"])
        assert row["player"] == side_to_move(row["board"])
    assert {r["player"] for r in rows} == {"X", "O"}
    assert [r["board"] for r in rows[:50]] != all_positions()[:50]  # shuffled
    no_forced = list(GENERATORS.get("tictactoe_rl")(min_legal_moves=2, shuffle=False))
    assert len(no_forced) < 4520 and all(r["board"].count(".") >= 2 for r in no_forced)
    for bad in (-1, "2", 1.5, True):  # one check for both RL prompt generators (rl_boards)
        with pytest.raises(ConfigError, match="min_legal_moves"):
            list(GENERATORS.get("tictactoe_rl")(min_legal_moves=bad))
        with pytest.raises(ConfigError, match="min_legal_moves"):
            list(GENERATORS.get("tictactoe_rl_onpolicy")("some/model", min_legal_moves=bad))


def test_games_transcripts():
    rows = list(GENERATORS.get("tictactoe_games")(n_games=200, seed=5))
    assert rows == list(GENERATORS.get("tictactoe_games")(n_games=200, seed=5))
    _check_meta(rows, "tictactoe_games")
    results = set()
    for row in rows:
        assert set(row) == {"text", "meta"}
        turns = row["text"].split("\n\n")
        board = EMPTY_BOARD
        for turn in turns[:-1]:
            lines = turn.split("\n")
            assert "\n".join(lines[:4]) == build_prompt(board)[0]["content"]
            result = parse_move("\n".join(lines[4:]), board)
            assert result.ok
            board = play(board, result.move)
        last = turns[-1].split("\n")[-1]
        assert last == (f"{winner(board)} wins" if winner(board) else "draw")
        results.add(last)
    assert results == {"X wins", "O wins", "draw"}
    with pytest.raises(ConfigError):
        list(GENERATORS.get("tictactoe_games")(agents=["human"]))


def test_optimal_self_positions_cover_what_a_perfect_player_meets():
    from minigpt.tasks.tictactoe.arena import MinimaxAgent, exhaustive_check
    from minigpt.tasks.tictactoe.generators import optimal_self_positions

    for seat in ("X", "O"):
        seen: list[str] = []

        class Recorder(MinimaxAgent):
            def moves(self, boards, seen=seen):
                seen.extend(boards)
                return super().moves(boards)

        result = exhaustive_check(Recorder(seed=1), seat)
        reach = optimal_self_positions(seat)
        assert result.losses == 0 and seen and set(seen) <= reach
    # every such position is a live position with that seat to move, and the SFT source yields only them
    rows = list(GENERATORS.get("tictactoe_sft")(reach="optimal_self", moves="one"))
    assert len(rows) == len(optimal_self_positions("X")) + len(optimal_self_positions("O")) == 3052


def test_position_kinds_partition_the_positions():
    from minigpt.tasks.tictactoe.generators import position_kind

    counts = {"win": 0, "block": 0, "open": 0}
    for board in all_positions():
        counts[position_kind(board)] += 1
    assert counts == {"win": 2358, "block": 1484, "open": 678}
    open_rows = list(GENERATORS.get("tictactoe_sft")(moves="preferred", kinds=["open"]))
    assert len(open_rows) == 678
    assert all(position_kind(_board_of(r["messages"][:1])) == "open" for r in open_rows)
    with pytest.raises(ConfigError, match="kinds"):
        list(GENERATORS.get("tictactoe_sft")(kinds=["quiet"]))
    with pytest.raises(ConfigError, match="kinds"):
        list(GENERATORS.get("tictactoe_rl")(kinds=[]))


def test_preferred_move_is_optimal_and_ranked_by_kind():
    from minigpt.tasks.tictactoe.format import move_reason
    from minigpt.tasks.tictactoe.generators import preferred_move

    order = ("win", "block", "fork", "centre", "corner", "edge")
    for board in all_positions():
        best = preferred_move(board)
        assert best in optimal_moves(board)
        rank = order.index(move_reason(board, best).split()[0])
        assert all(rank <= order.index(move_reason(board, c).split()[0]) for c in optimal_moves(board))
    assert preferred_move(EMPTY_BOARD) == 4  # every move draws: the centre ranks first
    assert preferred_move("XX.OO....") == 2  # X wins at 2
    rows = list(GENERATORS.get("tictactoe_sft")(moves="preferred"))
    assert len(rows) == 4520 and rows == list(GENERATORS.get("tictactoe_sft")(moves="preferred", seed=9))


def test_dpo_chosen_preferred_matches_sft_preferred():
    from minigpt.tasks.tictactoe.generators import preferred_move

    rows = list(GENERATORS.get("tictactoe_dpo")(chosen="preferred", kinds=["open"], pairs_per_position=1))
    assert rows
    for row in rows:
        board = _board_of(row["prompt"])
        assert parse_move(row["chosen"][0]["content"], board).move == preferred_move(board)
    with pytest.raises(ConfigError, match="chosen"):
        list(GENERATORS.get("tictactoe_dpo")(chosen="best"))


def test_misread_line_pairs_differ_from_chosen_only_in_the_cell():
    from minigpt.tasks.tictactoe.generators import position_kind, preferred_move

    rows = list(
        GENERATORS.get("tictactoe_dpo")(
            chosen="preferred", rejected="misread_line", reasoning="lines", pairs_per_position="all"
        )
    )
    assert len(rows) == 7576
    for row in rows[::37]:
        board = _board_of(row["prompt"])
        assert position_kind(board) in ("win", "block")
        good, bad = row["chosen"][0]["content"], row["rejected"][0]["content"]
        good_lines, good_reason, _ = good.split("\n")
        bad_lines, bad_reason, _ = bad.split("\n")
        assert good_lines == bad_lines and parse_move(good, board).move == preferred_move(board)
        cell = parse_move(bad, board).move
        assert cell not in optimal_moves(board) and parse_move(bad, board).ok  # legal, and a mistake
        # same kind and mark pattern ("win XX"), another line's empty cell
        assert bad_reason == good_reason.rstrip("0123456789") + str(cell)
    with pytest.raises(ConfigError, match="reasoning: lines"):
        list(GENERATORS.get("tictactoe_dpo")(rejected="misread_line", reasoning=True))
    with pytest.raises(ConfigError, match="rejected"):
        list(GENERATORS.get("tictactoe_dpo")(rejected="typos"))
