"""The checkpoint agent on a tiny random model built locally (no presets, no hub)."""

import json

import pytest
from support import tictactoe_model_dir

from minigpt.errors import ModelError
from minigpt.tasks.tictactoe import load_player
from minigpt.tasks.tictactoe.arena import MinimaxAgent, exhaustive_check, play_match
from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint
from minigpt.tasks.tictactoe.format import ParseFailure
from minigpt.tasks.tictactoe.player import NO_MOVE


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return tictactoe_model_dir(tmp_path_factory.mktemp("tiny-ttt"))


def test_prompt_uses_chat_template(tiny_model_dir):
    player = load_player(tiny_model_dir)
    text = player.prompt_texts(["X........"])[0]
    assert text == "<|im_start|>user\nX 1 2\n3 4 5\n6 7 8\nO to move<|im_end|>\n<|im_start|>assistant\n"
    assert player.tokenizer.padding_side == "left"


def test_move_returns_int_and_failures_are_counted(tiny_model_dir):
    player = load_player(tiny_model_dir, max_new_tokens=8)
    move = player.move("X........")
    assert isinstance(move, int) and (move == NO_MOVE or 0 <= move <= 8)
    # Greedy is deterministic, also across batch compositions (left padding must not change answers).
    alone = player.completions(["X........"])[0]
    fresh = load_player(tiny_model_dir, max_new_tokens=8)  # no cached answers: really decodes the batch
    assert fresh.completions(["X........", "XO.X.O..."])[0] == alone
    # The untrained model writes garbage: the arena counts it instead of crashing.
    match = play_match(player, MinimaxAgent(seed=0), "X", 6)
    assert match.n == 6
    assert (
        match.counts["parse_error"] + match.counts["illegal"] + match.counts["loss"] + match.counts["draw"]
        == 6
    )
    check = exhaustive_check(player, "O")
    assert check.games >= 9 and not check.unbeaten


def test_parsed_answers_map_to_moves(tiny_model_dir, monkeypatch):
    player = load_player(tiny_model_dir)
    canned = {"X........": "centre 4\nMove: 4", "XO.......": "Move: 1", "X.O......": "oops"}
    monkeypatch.setattr(player, "completions", lambda boards: [canned[b] for b in boards])
    out = player.moves(list(canned))
    assert out[0] == 4
    assert isinstance(out[1], ParseFailure) and out[1].status == "illegal" and out[1].move == 1
    assert isinstance(out[2], ParseFailure) and out[2].status == "parse_error" and out[2].completion == "oops"
    assert [player.move(b) for b in canned] == [4, NO_MOVE, NO_MOVE]


def test_greedy_answers_are_cached_per_board_and_sampled_ones_are_not(tiny_model_dir, monkeypatch):
    player = load_player(tiny_model_dir, max_new_tokens=4)
    calls = []
    real = player.model.generate
    monkeypatch.setattr(player.model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    first = player.completions(["X........", "XO.......", "X........"])
    assert len(calls) == 1 and calls[0]["input_ids"].shape[0] == 2  # a repeated board is decoded once
    assert player.completions(["XO.......", "X........"]) == first[1:] and len(calls) == 1
    sampler = load_player(tiny_model_dir, sampling=True, max_new_tokens=4)
    monkeypatch.setattr(sampler.model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    sampler.completions(["X........"])
    sampler.completions(["X........"])
    assert len(calls) == 3


def test_sampling_is_seeded(tiny_model_dir):
    boards = ["X........", "....X....", "XO.......", "........."]
    first = load_player(tiny_model_dir, sampling=True, temperature=1.5, seed=3, max_new_tokens=6).completions(
        boards
    )
    again = load_player(tiny_model_dir, sampling=True, temperature=1.5, seed=3, max_new_tokens=6).completions(
        boards
    )
    assert first == again


def test_evaluate_checkpoint_writes_json(tiny_model_dir, tmp_path):
    out = tmp_path / "eval" / "ttt.json"
    result = evaluate_checkpoint(
        tiny_model_dir, out_json=out, games_per_opponent=4, optimal_rate=False, max_new_tokens=8
    )
    assert json.loads(out.read_text()) == result
    assert result["unbeatable"] is False
    row = result["games"]["random"]["X"]
    assert (
        row["n"] == 4 and sum(row[k]["count"] for k in ("win", "draw", "loss", "illegal", "parse_error")) == 4
    )


def test_load_player_errors(tmp_path):
    with pytest.raises(ModelError):
        load_player(tmp_path)
