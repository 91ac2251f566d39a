"""On-policy RL prompts (``tictactoe_rl_onpolicy``): which positions are kept (every one the start gets wrong,
a seeded share of the rest), that the rows are what the RL rewards read, and that bad arguments are named."""

import functools
import hashlib

import pytest
from support import tictactoe_model_dir

from minigpt.data.sources import start_model_overrides
from minigpt.errors import ConfigError
from minigpt.tasks.tictactoe.engine import legal_moves, side_to_move
from minigpt.tasks.tictactoe.format import build_prompt, format_answer
from minigpt.tasks.tictactoe.generators import preferred_move, select_positions, tictactoe_rl
from minigpt.tasks.tictactoe.onpolicy_prompts import tictactoe_rl_onpolicy
from minigpt.tasks.tictactoe.player import ModelPlayer
from minigpt.tasks.tictactoe.solver import optimal_moves


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tictactoe_model_dir(tmp_path_factory.mktemp("onpolicy-prompts"))


def _worse(board: str) -> int | None:
    return next((c for c in legal_moves(board) if c not in optimal_moves(board)), None)


@pytest.fixture
def canned(monkeypatch):
    """Greedy answers right on every third position (by board), wrong elsewhere; samples always wrong."""

    def wrong_greedily(board: str) -> bool:
        return int(hashlib.sha256(board.encode()).hexdigest(), 16) % 3 != 0

    def completions(self, asked):
        out = []
        for b in asked:
            if self.sampling or wrong_greedily(b):
                worse = _worse(b)
                out.append(format_answer(b, worse, "lines") if worse is not None else "Move: 9")
            else:
                out.append(format_answer(b, preferred_move(b), "lines"))
        return out

    monkeypatch.setattr(ModelPlayer, "completions", completions)
    return wrong_greedily


def _boards(rows: list[dict]) -> list[str]:
    return [r["board"] for r in rows]


def test_the_greedy_mistakes_are_kept_and_a_seeded_share_of_the_rest(model_dir, canned):
    eligible = [b for b in select_positions("both", 200, 3) if len(legal_moves(b)) >= 2]
    wrong = {b for b in eligible if canned(b)}
    only_wrong = _boards(tictactoe_rl_onpolicy(str(model_dir), sample=200, seed=3))
    assert sorted(only_wrong) == sorted(wrong) and len(wrong) > 60
    assert only_wrong != sorted(only_wrong)  # shuffled, as tictactoe_rl

    some_right = _boards(tictactoe_rl_onpolicy(str(model_dir), sample=200, seed=3, keep_right=0.5))
    right_kept = set(some_right) - wrong
    assert wrong <= set(some_right) and len(some_right) == len(set(some_right))
    right = len(eligible) - len(wrong)
    assert 0.3 * right < len(right_kept) < 0.7 * right  # about half of them, seeded
    assert some_right == _boards(tictactoe_rl_onpolicy(str(model_dir), sample=200, seed=3, keep_right=0.5))
    every = _boards(tictactoe_rl_onpolicy(str(model_dir), sample=200, seed=3, keep_right=1.0))
    assert sorted(every) == sorted(eligible)

    # A sampled answer that is wrong keeps a position the greedy answer got right.
    with_samples = _boards(tictactoe_rl_onpolicy(str(model_dir), samples=1, sample=200, seed=3))
    assert sorted(with_samples) == sorted(eligible)


def test_rows_are_the_rl_rows_the_rewards_read(model_dir, canned):
    rows = list(tictactoe_rl_onpolicy(str(model_dir), sample=40, seed=1))
    reference = {r["board"]: r for r in tictactoe_rl(sample=40, seed=1, min_legal_moves=2)}
    for row in rows:
        board = row["board"]
        assert row["prompt"] == build_prompt(board) == reference[board]["prompt"]
        assert row["player"] == side_to_move(board)
        assert row["meta"] == {"source": "tictactoe_rl_onpolicy", "id": f"ttt-rl-onpolicy-{board}"}


def test_the_real_model_is_asked(model_dir):
    # An untrained model answers garbage: every eligible position is a mistake.
    rows = list(tictactoe_rl_onpolicy(str(model_dir), sample=12, seed=1, max_new_tokens=8))
    eligible = [b for b in select_positions("both", 12, 1) if len(legal_moves(b)) >= 2]
    assert sorted(_boards(rows)) == sorted(eligible)


def test_bad_arguments_are_refused(model_dir, canned, monkeypatch):
    with pytest.raises(ConfigError, match="start_model is not set"):
        list(tictactoe_rl_onpolicy(None))
    with pytest.raises(ConfigError, match="samples must be an integer >= 0"):
        list(tictactoe_rl_onpolicy(str(model_dir), samples=-1))
    with pytest.raises(ConfigError, match="temperature must be a number > 0"):
        list(tictactoe_rl_onpolicy(str(model_dir), temperature=0))
    with pytest.raises(ConfigError, match="keep_right must be between 0 and 1"):
        list(tictactoe_rl_onpolicy(str(model_dir), keep_right=1.5))
    monkeypatch.setattr(
        ModelPlayer,
        "completions",
        lambda self, asked: [format_answer(b, preferred_move(b), "lines") for b in asked],
    )
    with pytest.raises(ConfigError, match="answered all 30 positions right and keep_right is 0.0"):
        list(tictactoe_rl_onpolicy(str(model_dir), sample=30, seed=2, min_legal_moves=1))


def test_an_rl_stage_fills_in_its_start():
    from minigpt.data.mixture_config import load_mixture

    mixture = load_mixture("recipes/tictactoe/rl-onpolicy.yaml")
    assert start_model_overrides(mixture, "/runs/x/sft") == [
        'sources.0.generator_args.start_model="/runs/x/sft"'
    ]


def _met_by_own_play(move, seat: str) -> set[str]:
    """The boards ``move`` (board -> cell) is asked when it plays ``seat`` against every reply, by plain
    recursion over games (the check itself merges boards ply by ply)."""
    from minigpt.tasks.tictactoe.engine import EMPTY_BOARD, play, winner

    met: set[str] = set()

    def visit(board: str) -> None:
        if winner(board) is not None or not legal_moves(board):
            return
        if side_to_move(board) == seat:
            met.add(board)
            cell = move(board)
            if cell in legal_moves(board):
                visit(play(board, cell))
        else:
            for cell in legal_moves(board):
                visit(play(board, cell))

    visit(EMPTY_BOARD)
    return met


def test_own_play_keeps_only_the_mistakes_its_own_games_meet(model_dir, canned, monkeypatch):
    from minigpt.tasks.tictactoe.format import parse_move

    player = ModelPlayer.__new__(ModelPlayer)
    player.sampling = False

    @functools.cache
    def move(board: str) -> int | None:
        return parse_move(ModelPlayer.completions(player, [board])[0], board).move

    met = _met_by_own_play(move, "X") | _met_by_own_play(move, "O")
    wrong = {b for b in met if canned(b) and len(legal_moves(b)) >= 2}
    kept = _boards(tictactoe_rl_onpolicy(str(model_dir), reach="own_play", seed=3))
    assert sorted(kept) == sorted(wrong) and 0 < len(kept) < len(met) < 4520
    only_o = _boards(tictactoe_rl_onpolicy(str(model_dir), reach="own_play", seats="O", seed=3))
    assert sorted(only_o) == sorted(
        b for b in wrong if b in _met_by_own_play(move, "O") and side_to_move(b) == "O"
    )
    # reach: optimal_self chooses as for tictactoe_rl; an unknown reach is named
    reference = [r["board"] for r in tictactoe_rl(reach="optimal_self", min_legal_moves=2)]
    self_kept = _boards(tictactoe_rl_onpolicy(str(model_dir), reach="optimal_self", seed=3))
    assert sorted(self_kept) == sorted(b for b in reference if canned(b))
    with pytest.raises(ConfigError, match="reach must be one of all, optimal_self, own_play"):
        list(tictactoe_rl_onpolicy(str(model_dir), reach="mine"))
    # a choice that leaves no position of the start's own games is named as such
    never_met = next(b for b in select_positions("O", None, 0) if b not in _met_by_own_play(move, "O"))
    monkeypatch.setattr("minigpt.tasks.tictactoe.onpolicy_prompts.rl_boards", lambda *a: [never_met])
    with pytest.raises(ConfigError, match="reach: own_play: none of the 1 positions"):
        list(tictactoe_rl_onpolicy(str(model_dir), reach="own_play"))
