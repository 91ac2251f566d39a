"""On-policy preference pairs (``tictactoe_dpo_onpolicy``): which answers become rejected ones, what is chosen,
and how a stage's mixture gets its start model (and re-prepares when those weights change)."""

import pytest
from support import tictactoe_model_dir

from minigpt.data.mixture_config import load_mixture
from minigpt.data.sources import open_source, start_model_overrides
from minigpt.errors import ConfigError
from minigpt.tasks.tictactoe.engine import legal_moves
from minigpt.tasks.tictactoe.format import format_answer
from minigpt.tasks.tictactoe.generators import preferred_move, select_positions
from minigpt.tasks.tictactoe.onpolicy_pairs import is_mistake, tictactoe_dpo_onpolicy
from minigpt.tasks.tictactoe.player import ModelPlayer
from minigpt.tasks.tictactoe.solver import optimal_moves


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tictactoe_model_dir(tmp_path_factory.mktemp("onpolicy"))


def _worse(board: str) -> int | None:
    return next((c for c in legal_moves(board) if c not in optimal_moves(board)), None)


def _canned(board: str, index: int, sampling: bool) -> str:
    """Greedy: right, a worse move or garbage by position; sampled: a worse move where there is one."""
    worse = _worse(board)
    if sampling:
        return format_answer(board, worse, "lines") if worse is not None else "Move: 9"
    if index % 3 == 0 or worse is None:
        return format_answer(board, preferred_move(board), "lines")
    return format_answer(board, worse, "lines") if index % 3 == 1 else "no idea"


def test_every_distinct_wrong_answer_is_rejected_against_the_taught_answer(model_dir, monkeypatch):
    boards = select_positions("both", 30, 5)
    index = {b: i for i, b in enumerate(boards)}

    def completions(self, asked):
        return [_canned(b, index[b], self.sampling) for b in asked]

    monkeypatch.setattr(ModelPlayer, "completions", completions)
    rows = list(tictactoe_dpo_onpolicy(str(model_dir), samples=2, sample=30, seed=5))
    expected = []
    for board in boards:
        texts = [_canned(board, index[board], False)] + [_canned(board, index[board], True)] * 2
        wrong = [t for t in dict.fromkeys(texts) if is_mistake(t, board)]
        expected += [(board, t) for t in wrong]
    from minigpt.tasks.tictactoe.format import prompt_text

    text_of = {prompt_text(b): b for b in boards}
    got = [(text_of[r["prompt"][0]["content"]], r["rejected"][0]["content"]) for r in rows]
    assert len(got) == len(expected) > 20  # each wrong answer once per position, the repeated sample too
    for row, (board, text) in zip(rows, expected, strict=True):
        assert row["rejected"][0]["content"] == text
        assert row["chosen"][0]["content"] == format_answer(board, preferred_move(board), "lines")
        assert row["meta"]["source"] == "tictactoe_dpo_onpolicy"
    assert len({r["meta"]["id"] for r in rows}) == len(rows)
    # The greedy-right positions with a worse move give exactly their sampled worse move.
    for i, board in enumerate(boards):
        if i % 3 == 0 and _worse(board) is not None:
            assert [t for b, t in got if b == board] == [format_answer(board, _worse(board), "lines")]


def test_mistakes_are_worse_illegal_or_unparseable():
    board = "XX.OO...."  # X to move: 2 wins at once
    assert not is_mistake(format_answer(board, 2, "lines"), board)
    assert is_mistake(format_answer(board, 5, "lines"), board)  # blocks instead of winning
    assert is_mistake("Move: 0", board)  # occupied
    assert is_mistake("I win", board)


def test_sampling_is_seeded_and_the_real_model_is_asked(model_dir):
    a = list(tictactoe_dpo_onpolicy(str(model_dir), samples=1, sample=12, seed=1, max_new_tokens=8))
    b = list(tictactoe_dpo_onpolicy(str(model_dir), samples=1, sample=12, seed=1, max_new_tokens=8))
    assert a == b and a  # an untrained model is wrong everywhere
    greedy_only = list(tictactoe_dpo_onpolicy(str(model_dir), samples=0, sample=12, seed=1, max_new_tokens=8))
    assert len(greedy_only) == 12  # one (garbage) greedy answer per position


def test_bad_arguments_are_refused(model_dir):
    with pytest.raises(ConfigError, match="start_model is not set"):
        list(tictactoe_dpo_onpolicy(None))
    with pytest.raises(ConfigError, match="samples must be > 0 when greedy is false"):
        list(tictactoe_dpo_onpolicy(str(model_dir), samples=0, greedy=False))


@pytest.mark.parametrize("generator", ["tictactoe_dpo_onpolicy", "tictactoe_rl_onpolicy"])
@pytest.mark.parametrize(
    "args, message",
    [
        ({"samples": -1}, "samples must be an integer >= 0, got -1"),
        ({"samples": True}, "samples must be an integer >= 0, got True"),  # not read as 1
        ({"samples": 1.5}, "samples must be an integer >= 0, got 1.5"),
        ({"temperature": 0}, "temperature must be a number > 0, got 0"),
        ({"temperature": "hot"}, "temperature must be a number > 0, got 'hot'"),
    ],
)
def test_both_onpolicy_generators_refuse_the_same_bad_sampling(model_dir, generator, args, message):
    """One check for both generators: the refusal names the generator and the value, before any model is
    loaded."""
    from minigpt.registry import GENERATORS

    with pytest.raises(ConfigError, match=f"^{generator}: {message}"):
        list(GENERATORS.get(generator)(str(model_dir), **args))


def _mixture(**args):
    return load_mixture(
        {
            "name": "m",
            "stage": "dpo",
            "schema": "preference",
            "sources": [
                {"name": "mine", "generator": "tictactoe_dpo_onpolicy", "generator_args": args},
                {"name": "fixed", "generator": "tictactoe_dpo", "generator_args": {"sample": 3}},
            ],
        }
    )


def test_a_stage_fills_in_its_start_and_the_weights_are_fingerprinted(model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    assert start_model_overrides(_mixture(), "/runs/x/sft") == [
        'sources.0.generator_args.start_model="/runs/x/sft"'
    ]
    assert start_model_overrides(_mixture(start_model="/mine"), "/runs/x/sft") == []  # named: kept
    filled = load_mixture(
        _mixture().model_dump(mode="json"), [f'sources.0.generator_args.start_model="{model_dir}"']
    )
    assert filled.sources[0].generator_args["start_model"] == str(model_dir)

    # Same path, other weights (a parent stage retrained): the source's identity changes.
    before = open_source(filled.sources[0], offline=True).content_id()
    weights = load_file(model_dir / "model.safetensors")
    changed = {k: v + 1e-3 if v.dtype == torch.float32 else v for k, v in weights.items()}
    save_file(changed, model_dir / "model.safetensors", metadata={"format": "pt"})
    try:
        after = open_source(filled.sources[0], offline=True).content_id()
    finally:
        save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    assert before["start_model"] != after["start_model"] and before["code"] == after["code"]


def test_the_shipped_pair_configs_fill_in_only_the_on_policy_source():
    for name in ("dpo-onpolicy", "dpo-anchored"):
        mixture = load_mixture(f"recipes/tictactoe/{name}.yaml")
        assert mixture.stage == "dpo" and mixture.schema == "preference"
        assert start_model_overrides(mixture, "/runs/x/sft") == [
            'sources.0.generator_args.start_model="/runs/x/sft"'
        ]
    anchored = load_mixture("recipes/tictactoe/dpo-anchored.yaml")
    anchor = anchored.sources[1]
    assert anchor.generator == "tictactoe_dpo" and anchor.generator_args["chosen"] == "preferred"
