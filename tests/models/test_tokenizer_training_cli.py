"""``minigpt tokenizer train``: the warning when BPE runs out of merges, and typed ``--generator-arg``."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from minigpt.cli import main
from minigpt.errors import ConfigError
from minigpt.generator_args import check_generator_args, parse_generator_args
from minigpt.models.tokenizer import SPECIAL_TOKENS
from minigpt.models.tokenizer_cli import TokenizerConfig, train_from_config
from minigpt.registry import GENERATORS

RECORDING = "test_tokenizer_recording_generator"
calls: list[dict] = []

if RECORDING not in GENERATORS:

    @GENERATORS.register(RECORDING)
    def recording(n: int = 3, word: str = "cat", kinds: list[str] | None = None, flag: bool = False):
        calls.append({"n": n, "word": word, "kinds": kinds, "flag": flag})
        for i in range(n):
            yield {"text": f"{word} {i} {' '.join(kinds or [])} {flag}"}


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20, encoding="utf-8")
    return path


@pytest.mark.parametrize("min_frequency", [1, 2])
def test_a_smaller_vocabulary_than_asked_is_a_warning_with_both_numbers(tmp_path, capsys, min_frequency):
    out = tmp_path / f"tok{min_frequency}"
    argv = ["tokenizer", "train", "--input", str(_text_file(tmp_path)), "--output", str(out)]
    assert main(argv + ["--vocab-size", "2000", "--min-frequency", str(min_frequency)]) == 0
    got = len(AutoTokenizer.from_pretrained(out))
    assert 256 + len(SPECIAL_TOKENS) < got < 2000
    err = capsys.readouterr().err
    assert f"warning: {out}: the tokenizer has {got} tokens, not the 2000 asked (vocab_size)" in err
    assert f"after {got - 256 - len(SPECIAL_TOKENS)} merges" in err
    assert f"at least min_frequency={min_frequency} times" in err
    # Lowering min_frequency is suggested only where it can still help.
    assert ("lower min_frequency (now 2)" in err) is (min_frequency == 2)


def test_no_warning_when_the_vocabulary_is_full(tmp_path, capsys):
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--input", str(_text_file(tmp_path)), "--output", str(out)]
    assert main(argv + ["--vocab-size", "280", "--min-frequency", "1"]) == 0
    assert len(AutoTokenizer.from_pretrained(out)) == 280
    assert "warning" not in capsys.readouterr().err


def test_generator_args_from_the_command_line_are_typed(tmp_path):
    calls.clear()
    argv = ["tokenizer", "train", "--generator", RECORDING, "--vocab-size", "400", "--output", str(tmp_path)]
    extra = ["n=4", "word=dog", "kinds=[win, open]", "flag=true"]
    assert main(argv + [a for item in extra for a in ("--generator-arg", item)]) == 0
    assert calls == [{"n": 4, "word": "dog", "kinds": ["win", "open"], "flag": True}]
    assert "dog" in AutoTokenizer.from_pretrained(tmp_path).get_vocab()


def test_a_real_generator_takes_its_arguments(tmp_path):
    from minigpt.models.tokenizer import iter_texts, train_tokenizer
    from minigpt.tasks.tictactoe.generators import tictactoe_sft

    argv = ["tokenizer", "train", "--generator", "tictactoe_sft", "--output", str(tmp_path)]
    args = ["sample=20", "moves=preferred", "reasoning=false", "seats=X"]
    assert main(argv + ["--vocab-size", "300", *[a for item in args for a in ("--generator-arg", item)]]) == 0
    vocab = AutoTokenizer.from_pretrained(tmp_path).get_vocab()

    def trained(**kwargs):
        return train_tokenizer(iter_texts(tictactoe_sft(**kwargs)), 300).get_vocab()

    # The same vocabulary as the generator called with these values, with reasoning the bool False (the
    # string "false" would be truthy and give the reason lines, hence another vocabulary).
    same = {"sample": 20, "moves": "preferred", "seats": "X"}
    assert vocab == trained(**same, reasoning=False) != trained(**same, reasoning=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sampel=20"], "generator 'tictactoe_sft' has no argument 'sampel'. Did you mean 'sample'?"),
        (["sample=many"], "generator 'tictactoe_sft' argument 'sample': 'many' is not a valid int | None"),
        (["kinds=open"], "argument 'kinds': 'open' is not a valid list[str] | None"),
        (["moves=bogus"], "tictactoe_sft: moves must be one of all_optimal, one, preferred, got 'bogus'"),
        (["sample"], "--generator-arg 'sample': expected key=value"),
        (["sample=1", "sample=2"], "--generator-arg 'sample=2': 'sample' is given twice"),
    ],
)
def test_bad_generator_args_are_errors_naming_the_key(tmp_path, capsys, args, message):
    argv = ["tokenizer", "train", "--generator", "tictactoe_sft", "--output", str(tmp_path / "tok")]
    assert main(argv + [a for item in args for a in ("--generator-arg", item)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


def test_generator_args_need_a_generator(tmp_path, capsys):
    argv = ["tokenizer", "train", "--input", str(_text_file(tmp_path)), "--output", str(tmp_path / "tok")]
    assert main(argv + ["--generator-arg", "n=1"]) == 2
    assert "generator_args (--generator-arg) need a generator" in capsys.readouterr().err


def test_config_generator_args_are_checked_before_any_file_is_read(tmp_path):
    cfg = TokenizerConfig(
        output_dir=str(tmp_path / "tok"),
        files=[str(tmp_path / "missing.jsonl")],
        generator=RECORDING,
        generator_args={"count": 3},
    )
    with pytest.raises(ConfigError, match=r"no argument 'count'.*Its arguments: n, word, kinds, flag"):
        train_from_config(cfg)


def test_parse_and_check_units():
    assert parse_generator_args(["a=3e-4", "b=", "c=[x", "d=null"]) == {
        "a": 3e-4,
        "b": "",
        "c": "[x",
        "d": None,
    }

    def open_ended(n: int = 1, **rest):
        return iter(())

    assert check_generator_args("g", open_ended, {"n": "2", "other": [1]}) == {"n": 2, "other": [1]}
