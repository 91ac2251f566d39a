"""The batched evaluation against the per-position path, and the evaluation's switches (position subset,
exhaustive check and games on/off) in the typed config, the recipe and ``minigpt eval``.

The model is the tiny one of test_player.py after a few dozen SFT steps on bare ``Move: n`` answers: enough
that its answers mix optimal, merely legal, illegal and unparseable ones, so equal counts mean something."""

import json

import pytest
from test_player import tiny_model_dir  # noqa: F401  (a sibling module's fixture)

from minigpt.errors import ConfigError
from minigpt.recipe_plan import Recipe, load_recipe
from minigpt.tasks.tictactoe import load_player
from minigpt.tasks.tictactoe.arena import MinimaxAgent, RandomAgent, play_match
from minigpt.tasks.tictactoe.engine import (
    NUM_POSITIONS,
    all_positions,
    legal_moves,
    play,
    side_to_move,
    winner,
)
from minigpt.tasks.tictactoe.eval_settings import TicTacToeEvalArgs, eval_args, position_subset
from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint, evaluate_player, format_report
from minigpt.tasks.tictactoe.format import ParseFailure, to_failure
from minigpt.tasks.tictactoe.generators import tictactoe_sft
from minigpt.tasks.tictactoe.solver import optimal_moves, outcome_preserving_moves
from minigpt.typed_config import apply_overrides, read_yaml

MAX_NEW = 6  # "Move: 4" and the stop token fit; a longer answer is cut and fails to parse, as in the arena


@pytest.fixture(scope="module")
def trained_tiny_dir(tiny_model_dir, tmp_path_factory):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = list(tictactoe_sft(sample=600, moves="one", reasoning=False, seed=1))
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    tok.padding_side = "right"
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(60):
        batch = tok(texts[(step * 32) % 576 : (step * 32) % 576 + 32], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("tiny-ttt-trained")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class PerPositionAgent:
    """The path without batching: every board is its own ``generate`` call (a batch of one, no padding)."""

    name = "per-position"

    def __init__(self, player):
        self.player = player
        self.asked: list[str] = []

    def _one(self, board: str) -> int | ParseFailure:
        self.asked.append(board)
        answer = self.player.answer(board)
        return to_failure(answer.result, answer.completion) or answer.result.move

    def move(self, board: str) -> int:
        return self.player.move(board)

    def moves(self, boards):
        return [self._one(b) for b in boards]


def reference_sweep(agent: PerPositionAgent, boards: list[str]) -> dict[str, int]:
    counts = {"optimal": 0, "outcome_preserving": 0, "illegal": 0, "parse_error": 0}
    for board in boards:
        answer = agent.moves([board])[0]
        if isinstance(answer, ParseFailure):
            counts[answer.status] += 1
        else:
            counts["optimal"] += answer in optimal_moves(board)
            counts["outcome_preserving"] += answer in outcome_preserving_moves(board)
    return counts


def reference_exhaustive(agent: PerPositionAgent, seat: str) -> dict[str, int]:
    """Every move sequence walked one by one (no merging of transpositions, no batching)."""
    out = dict.fromkeys(("games", "wins", "draws", "losses", "illegal", "parse_errors"), 0)
    seen: set[str] = set()

    def walk(board: str) -> None:
        if side_to_move(board) == seat:
            seen.add(board)
            answer = agent.moves([board])[0]
            if isinstance(answer, ParseFailure):
                out["games"] += 1
                out["parse_errors" if answer.status == "parse_error" else "illegal"] += 1
                return
            replies = [answer]
        else:
            replies = legal_moves(board)
        for cell in replies:
            child = play(board, cell)
            who = winner(child)
            if who is None and legal_moves(child):
                walk(child)
                continue
            out["games"] += 1
            out["draws" if who is None else ("wins" if who == seat else "losses")] += 1

    walk("." * 9)
    return {**out, "positions": len(seen)}


def test_batched_evaluation_equals_the_per_position_path(trained_tiny_dir):
    batched = load_player(trained_tiny_dir, batch_size=64, max_new_tokens=MAX_NEW)
    result = evaluate_player(batched, games_per_opponent=6, positions=300, positions_seed=3)
    one_by_one = PerPositionAgent(load_player(trained_tiny_dir, batch_size=1, max_new_tokens=MAX_NEW))
    boards = position_subset(300, seed=3)

    expected = reference_sweep(one_by_one, boards)
    got = {k: result["optimal_moves"][k]["count"] for k in expected}
    assert got == expected
    assert result["optimal_moves"]["n"] == 300 and result["optimal_moves"]["of"] == NUM_POSITIONS
    # The answers are a real mix, so the equality above compares every kind of outcome.
    assert expected["optimal"] > 0 and expected["illegal"] + expected["parse_error"] > 0
    assert (
        300 - expected["illegal"] - expected["parse_error"] > expected["optimal"]
    )  # some legal, not optimal

    for seat in ("X", "O"):
        row = {k: v for k, v in result["exhaustive"][seat].items() if k != "losing_boards"}
        assert row == reference_exhaustive(one_by_one, seat), seat
    assert sum(result["exhaustive"][s]["games"] for s in "XO") > 10

    # Games: the same seeded opponents against the per-position path give the same games.
    for o_index, make in enumerate((RandomAgent, MinimaxAgent)):
        for s_index, seat in enumerate(("X", "O")):
            want = play_match(one_by_one, make(seed=o_index * 10 + s_index), seat, 6).counts
            name = make.name
            assert {k: result["games"][name][seat][k]["count"] for k in want} == want, (name, seat)

    # Every completion text is the same, batched (left-padded, cached) or alone.
    asked = list(dict.fromkeys(one_by_one.asked))
    assert batched.completions(asked) == one_by_one.player.completions(asked)


def test_position_subset_is_fixed_nested_and_checked():
    small, large = position_subset(100), position_subset(0.25)
    assert small == position_subset(100, seed=0)  # the same positions every call
    assert len(large) == round(0.25 * NUM_POSITIONS) and set(small) < set(large)  # a larger one contains it
    order = {b: i for i, b in enumerate(all_positions())}
    assert [order[b] for b in small] == sorted(order[b] for b in small)
    assert position_subset(100, seed=1) != small
    assert position_subset(None) == all_positions() == position_subset(1.0)
    assert {side_to_move(b) for b in small} == {"X", "O"}
    for bad in (0, NUM_POSITIONS + 1, 0.0, 1.5, True):
        with pytest.raises(ValueError):
            position_subset(bad)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"positions": 0}, "positions"),
        ({"positions": 1.5}, "positions"),
        ({"positions": "all"}, "positions"),
        ({"games_per_opponent": -1}, "games_per_opponent"),
        ({"exhaustiv": False}, "exhaustiv"),
    ],
)
def test_bad_switches_are_refused_naming_the_field(args, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        eval_args(args)
    with pytest.raises(ConfigError, match=f"recipes/tictactoe.yaml:7: .*'evaluation.args.{field}'"):
        load_recipe(
            "recipes/tictactoe.yaml", [f"evaluation.args.{k}={json.dumps(v)}" for k, v in args.items()]
        )


def test_recipe_defaults_keep_the_full_check():
    raw, _ = read_yaml("recipes/tictactoe.yaml")
    args = Recipe.model_validate(raw).evaluation[0].args
    assert args.positions is None and args.exhaustive and args.optimal_rate
    assert args.model_dump(exclude_unset=True) == {"games_per_opponent": 50, "max_new_tokens": 40}
    assert TicTacToeEvalArgs().games_per_opponent == 200  # evaluate_player's own default
    raw = apply_overrides(raw, ["evaluation.args.positions=0.1", "evaluation.args.exhaustive=false"])
    args = Recipe.model_validate(raw).evaluation[0].args
    assert args.positions == 0.1 and args.exhaustive is False


def test_switches_off_skip_their_parts(tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "eval.json"
    result = evaluate_checkpoint(
        tiny_model_dir, out_json=out, games_per_opponent=0, positions=40, exhaustive=False, max_new_tokens=4
    )
    assert result["optimal_moves"]["n"] == 40 and "exhaustive" not in result and "unbeatable" not in result
    assert all(row["n"] == 0 for seats in result["games"].values() for row in seats.values())
    assert result["settings"]["positions"] == 40 and result["settings"]["exhaustive"] is False
    assert "a fixed subset of 40 of 4520 positions" in format_report(result)
    assert json.loads(out.read_text()) == result


def test_cli_eval_passes_the_switches(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    from minigpt.cli import main

    out = tmp_path / "cli.json"
    argv = ["eval", str(tiny_model_dir), "--games", "2", "--positions", "0.005", "--no-exhaustive"]
    assert main([*argv, "--max-new-tokens", "4", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["optimal_moves"]["n"] == round(0.005 * NUM_POSITIONS) and "exhaustive" not in result
    assert result["games"]["random"]["X"]["n"] == 2
    assert main(["eval", str(tiny_model_dir), "--positions", "0"]) != 0
    assert "positions" in capsys.readouterr().err
