"""The greedy answers an evaluation keeps in a model folder (greedy_answers.py): what is written, that the
on-policy generators read them instead of generating and get the same rows, and that they are read only for
the inputs they were made from."""

import json
import shutil

import pytest
from support import tictactoe_model_dir

from minigpt.errors import ConfigError
from minigpt.tasks.tictactoe import greedy_answers
from minigpt.tasks.tictactoe.eval_settings import position_subset
from minigpt.tasks.tictactoe.evaluate import evaluate_checkpoint
from minigpt.tasks.tictactoe.generators import select_positions
from minigpt.tasks.tictactoe.greedy_answers import ANSWERS_FILE, load_greedy_answers
from minigpt.tasks.tictactoe.onpolicy_pairs import tictactoe_dpo_onpolicy
from minigpt.tasks.tictactoe.onpolicy_prompts import tictactoe_rl_onpolicy
from minigpt.tasks.tictactoe.player import ModelPlayer, load_player

EVAL = {"games_per_opponent": 0, "exhaustive": False, "positions": 0.5, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return tictactoe_model_dir(tmp_path_factory.mktemp("greedy") / "model")


@pytest.fixture
def folder(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "model")


@pytest.fixture
def generated(monkeypatch):
    """Every board the players generate an answer for, in order."""
    asked: list[str] = []
    real = ModelPlayer._generate

    def recording(self, boards):
        asked.extend(boards)
        return real(self, boards)

    monkeypatch.setattr(ModelPlayer, "_generate", recording)
    return asked


def test_the_evaluation_keeps_every_greedy_answer_it_made(folder, generated):
    evaluate_checkpoint(folder, **EVAL)
    data = json.loads((folder / ANSWERS_FILE).read_text())
    subset = position_subset(0.5)
    assert sorted(data["answers"]) == sorted(subset) == sorted(generated)
    fresh = load_player(folder, max_new_tokens=8)
    some = subset[:: len(subset) // 7][:7]
    assert [fresh._generate([b])[0] for b in some] == [data["answers"][b] for b in some]
    assert data["key"]["max_new_tokens"] == 8 and data["key"]["device"] == "cpu"


def test_the_generators_read_them_and_make_the_same_rows(folder, generated):
    kw = {"sample": 40, "seed": 3, "max_new_tokens": 8}
    pairs_before = list(tictactoe_dpo_onpolicy(str(folder), samples=0, **kw))
    prompts_before = list(tictactoe_rl_onpolicy(str(folder), keep_right=0.5, **kw))
    evaluate_checkpoint(folder, **{**EVAL, "positions": None})  # every board a generator can ask
    generated.clear()
    assert list(tictactoe_dpo_onpolicy(str(folder), samples=0, **kw)) == pairs_before
    assert list(tictactoe_rl_onpolicy(str(folder), keep_right=0.5, **kw)) == prompts_before
    assert generated == []  # no greedy answer was generated again
    # sampled answers are never taken from the file
    list(tictactoe_dpo_onpolicy(str(folder), samples=1, **kw))
    assert sorted(generated) == sorted(select_positions("both", 40, 3))


@pytest.mark.parametrize(
    "change",
    ["weights", "generation_config", "chat_template", "max_new_tokens"],
)
def test_they_are_not_read_for_other_inputs(folder, change):
    evaluate_checkpoint(folder, **EVAL)
    max_new_tokens = 8
    if change == "weights":
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / "model.safetensors")
        name = next(iter(weights))
        weights[name] = weights[name] + 1e-3
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    elif change == "generation_config":
        path = folder / "generation_config.json"
        config = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**config, "repetition_penalty": 1.3}))
    elif change == "chat_template":
        config = json.loads((folder / "tokenizer_config.json").read_text())
        template = folder / "chat_template.jinja"
        if template.exists():
            template.write_text(template.read_text() + " ")
        else:
            config["chat_template"] += " "
            (folder / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        max_new_tokens = 9
    player = load_player(folder, max_new_tokens=max_new_tokens)
    assert load_greedy_answers(player, folder) == 0 and player.greedy_answers() == {}
    same = load_player(folder, max_new_tokens=8)
    if change == "max_new_tokens":
        assert load_greedy_answers(same, folder) == len(position_subset(0.5))


def test_a_damaged_file_is_an_error_naming_it(folder):
    evaluate_checkpoint(folder, **EVAL)
    path = folder / ANSWERS_FILE
    data = json.loads(path.read_text())
    player = load_player(folder, max_new_tokens=8)
    board = next(iter(data["answers"]))
    cases = [
        ("{not json", "corrupt"),
        (json.dumps({**data, "format": 99}), "not a file of greedy answers"),
        (json.dumps({**data, "answers": {**data["answers"], board: 3}}), f"answers.{board}: expected"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as info:
            load_greedy_answers(player, folder)
        assert str(path) in str(info.value)
    assert player.greedy_answers() == {}  # nothing taken from a damaged file


def test_nothing_is_written_where_it_may_not_be(folder, monkeypatch):
    monkeypatch.setattr(greedy_answers.os, "access", lambda *args: False)
    result = evaluate_checkpoint(folder, **EVAL)
    assert result["optimal_moves"]["n"] == len(position_subset(0.5))
    assert not (folder / ANSWERS_FILE).exists()
    sampler = load_player(folder, sampling=True, max_new_tokens=8)
    sampler.completions(["........."])
    assert greedy_answers.save_greedy_answers(sampler, folder) is None
