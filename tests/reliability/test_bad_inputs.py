"""Bad inputs through the ``minigpt`` command: each gives exit status 2 and one ``error:`` line naming the
file (and line and key where there is one), never a bare traceback, and leaves no output files behind.
Inputs that are awkward but valid (a byte-order mark, a 10 MB line, rows over ``max_length``) train, with
what was changed counted. docs/reliability.md has the table of these cases and what the user sees."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from minigpt.cli import main
from minigpt.data.readers import iter_jsonl, read_jsonl
from minigpt.data.training.lm_tokens import encode_conversations
from minigpt.errors import DataError, ModelError
from minigpt.models.tokenizer import CHAT_TEMPLATE, PAD_TOKEN, check_chat_tokenizer
from minigpt.stages.stage_config import load_stage_config

from .helpers import files_under, stage_dict, write_rows, write_yaml

Case = Callable[[Path, Path, Path], tuple[list[str], Path, list[str]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def _train(config: Path) -> list[str]:
    return ["train", "--config", str(config)]


def _config(
    tmp: Path, tok: Path, data: Path, edit: Callable[[dict], None] | None = None
) -> tuple[Path, Path]:
    out = tmp / "out"
    cfg = stage_dict(out, tok, data, max_steps=1)
    if edit:
        edit(cfg)
    return write_yaml(tmp / "stage.yaml", cfg), out


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _model_folder(tmp: Path, tok: Path, weights: dict[str, bytes]) -> Path:
    folder = tmp / "model"
    shutil.copytree(tok, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    for name, content in weights.items():
        (folder / name).write_bytes(content)
    return folder


@case
def malformed_yaml(tmp, tok, data):
    cfg = tmp / "stage.yaml"
    cfg.write_text(f"stage: sft\noutput_dir: {tmp / 'out'}\nmodel: {{init: tiny\ntrain: [\n")
    return _train(cfg), tmp / "out", [f"{cfg}:4: malformed YAML"]


@case
def unknown_key(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c["train"].update(lrr=1e-3))
    line = _line_of(cfg, "lrr:")
    return _train(cfg), out, [f"{cfg}:{line}: unknown key 'train.lrr'. Did you mean 'lr'?"]


@case
def wrong_type(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c["train"].update(batch_size="eight"))
    line = _line_of(cfg, "batch_size:")
    return _train(cfg), out, [f"{cfg}:{line}: key 'train.batch_size'", "valid integer", "(got 'eight')"]


@case
def unknown_stage(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c.update(stage="sfft"))
    return _train(cfg), out, [f"{cfg}:1: key 'stage': unknown stage 'sfft'. Did you mean 'sft'?"]


@case
def bad_override(tmp, tok, data):
    cfg, out = _config(tmp, tok, data)
    return _train(cfg) + ["--set", "train.lr"], out, ["--set 'train.lr': expected key.sub=value"]


@case
def missing_config_file(tmp, tok, data):
    return _train(tmp / "nope.yaml"), tmp / "out", [f"{tmp / 'nope.yaml'}: config file not found"]


@case
def missing_data_file(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c["data"].update(train=[str(tmp / "nope.jsonl")]))
    return _train(cfg), out, [f"{tmp / 'nope.jsonl'}: file not found"]


@case
def missing_tokenizer_folder(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c["model"].update(tokenizer=str(tmp / "no_tok")))
    return _train(cfg), out, [f"cannot load tokenizer '{tmp / 'no_tok'}'"]


@case
def empty_dataset(tmp, tok, data):
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    cfg, out = _config(tmp, tok, data, lambda c: c["data"].update(train=[str(empty)]))
    return _train(cfg), out, [f"{empty}: the training data is empty"]


@case
def non_utf8_data(tmp, tok, data):
    bad = tmp / "bad.jsonl"
    bad.write_bytes(data.read_bytes().split(b"\n", 1)[0] + b'\n{"text": "caf\xe9"}\n')
    cfg, out = _config(tmp, tok, data, lambda c: c["data"].update(train=[str(bad)]))
    return _train(cfg), out, [f"{bad}:2: not valid UTF-8 (byte 14 of the line)"]


@case
def non_utf8_config(tmp, tok, data):
    cfg = tmp / "stage.yaml"
    content = b"stage: sft\noutput_dir: out\nmodel: {init: caf\xe9}\n"
    cfg.write_bytes(content)
    return _train(cfg), tmp / "out", [f"{cfg}: not valid UTF-8 (byte {content.index(0xE9)})"]


@case
def malformed_json_row(tmp, tok, data):
    bad = tmp / "bad.jsonl"
    bad.write_text(data.read_text().split("\n", 1)[0] + '\n{"conversations": [\n')
    cfg, out = _config(tmp, tok, data, lambda c: c["data"].update(train=[str(bad)]))
    return _train(cfg), out, [f"{bad}:2: malformed JSON"]


@case
def python_object_yaml_tag(tmp, tok, data):
    cfg = tmp / "stage.yaml"
    cfg.write_text("stage: !!python/object/apply:os.system ['touch pwned']\noutput_dir: out\n")
    return _train(cfg), tmp / "out", [f"{cfg}:1: malformed YAML: could not determine a constructor"]


@case
def model_folder_without_weights(tmp, tok, data):
    folder = _model_folder(tmp, tok, {})
    cfg, out = _config(tmp, tok, data, lambda c: c.update(model={"init": str(folder)}))
    return _train(cfg), out, [f"{folder}: the model folder has no weights (model.safetensors)"]


@case
def model_folder_with_pickle_weights_only(tmp, tok, data):
    folder = _model_folder(tmp, tok, {"pytorch_model.bin": b"not loaded"})
    cfg, out = _config(tmp, tok, data, lambda c: c.update(model={"init": str(folder)}))
    return (
        _train(cfg),
        out,
        [f"{folder}: only pickle weights (.bin/.pt) found; miniGPT loads safetensors only"],
    )


@case
def unknown_reward_function(tmp, tok, data):
    prompts = write_rows(tmp / "prompts.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}])

    def edit(c: dict) -> None:
        c.update(stage="grpo", algo={"rewards": ["no_such_reward"]})
        c["data"]["train"] = [str(prompts)]

    cfg, out = _config(tmp, tok, data, edit)
    line = _line_of(cfg, "no_such_reward")
    return (
        _train(cfg),
        out,
        [
            f"{cfg}:{line}: key 'algo.rewards.0.name'",
            "unknown reward function 'no_such_reward'",
            "Known: format",
        ],
    )


@case
def mixture_weights_zero(tmp, tok, data):
    mix = {
        "name": "m",
        "stage": "sft",
        "schema": "conversations",
        "sources": [
            {"name": "a", "path": str(data), "converter": "openai", "weight": 0},
            {"name": "b", "path": str(data), "converter": "openai", "weight": 0},
        ],
    }
    cfg = write_yaml(tmp / "mix.yaml", mix)
    argv = ["data", "prepare", "--config", str(cfg), "--output-dir", str(tmp / "out")]
    line = _line_of(cfg, "weight: 0")
    return argv, tmp / "out", [f"{cfg}:{line}: key 'sources.0.weight': Input should be greater than 0"]


@case
def mixture_unknown_converter(tmp, tok, data):
    mix = {"name": "m", "stage": "sft", "schema": "conversations", "sources": [{"name": "a", "path": str(data),
           "converter": "sharegtp"}]}  # fmt: skip
    cfg = write_yaml(tmp / "mix.yaml", mix)
    argv = ["data", "prepare", "--config", str(cfg), "--output-dir", str(tmp / "out")]
    return (
        argv,
        tmp / "out",
        ["key 'sources.0.converter': unknown converter 'sharegtp'. Did you mean 'sharegpt'?"],
    )


@case
def overlong_rows_refused(tmp, tok, data):
    cfg, out = _config(tmp, tok, data, lambda c: c["data"].update(max_length=16, overlong="error"))
    return (
        _train(cfg),
        out,
        [f"{data}:1: field 'messages':", "tokens > data.max_length 16 (data.overlong: error)"],
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# Cases whose error is found after the run has started writing its log files (see PARTIAL below).
LATE_ERRORS = {"overlong_rows_refused"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_clear_error_line(
    name: str, tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path], capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative output_dir or a stray side effect lands here, where we look
    argv, out, expected = CASES[name](tmp_path, tiny_tokenizer_dir, lm_data["conv"])
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    # One "error:" line; several problems in one config each get a further line naming file and line.
    assert lines[0].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err
    assert not (tmp_path / "pwned").exists()
    if name not in LATE_ERRORS:
        assert files_under(out) == [], "a refused run must leave no output files"


def test_data_error_found_while_tokenizing_leaves_no_files(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path], capsys
) -> None:
    argv, out, _ = overlong_rows_refused(tmp_path, tiny_tokenizer_dir, lm_data["conv"])
    assert run_cli(argv, capsys)[0] == 2
    assert files_under(out) == []


# ---------------------------------------------------------------- awkward but valid input


def test_byte_order_marks_and_a_10_mb_line_are_read(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "x " * 5_000_000},
        ]
    }
    data = tmp_path / "big.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode() * 2)
    assert data.stat().st_size > 20_000_000
    rows = read_jsonl(data)  # the stage reader
    assert len(rows) == 2 and list(rows[0]) == ["conversations"]  # the BOM is not glued to the first key
    assert [item.error for item in iter_jsonl(data)] == [None, None]  # the mixture reader
    config = tmp_path / "stage.yaml"
    config.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(stage_dict(tmp_path / "o", tmp_path, data)).encode())
    assert load_stage_config(config).stage == "sft"


def test_overlong_conversations_are_truncated_or_dropped_with_a_count_or_refused(
    tiny_tokenizer_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    short = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    long = {
        "conversations": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "the cat " * 20_000},
        ]
    }
    rows = [short, long, long]
    examples, stats = encode_conversations(rows, tok, 48, "truncate", "d.jsonl")
    assert len(examples) == 3 and stats.truncated == 2 and max(len(e["input_ids"]) for e in examples) == 48
    examples, stats = encode_conversations(rows, tok, 48, "drop", "d.jsonl")
    assert len(examples) == 1 and stats.dropped == 2
    assert stats.drop_reasons == {"longer than max_length": 2}
    with pytest.raises(DataError, match=r"^d.jsonl:2: field 'messages': \d+ tokens > data.max_length 48"):
        encode_conversations(rows, tok, 48, "error", "d.jsonl")


def test_truncation_is_counted_in_the_run_log(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path], capsys
) -> None:
    cfg, out = _config(
        tmp_path, tiny_tokenizer_dir, lm_data["conv"], lambda c: c["data"].update(max_length=24)
    )
    code, err = run_cli(_train(cfg), capsys)
    assert code == 0, err
    log = next(out.glob("sft_training_logs_*.txt")).read_text()
    assert f"{lm_data['conv']}: 300 rows truncated to 24 tokens, 0 dropped" in log


# ---------------------------------------------------------------- a tokenizer without the chat tokens


def _tokenizer_without_chat_tokens(folder: Path, corpus: list[str]) -> Path:
    """A byte-level BPE whose only special token is the pad/eos; given the ChatML template anyway."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[PAD_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=PAD_TOKEN, pad_token=PAD_TOKEN)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


def test_check_chat_tokenizer_names_the_missing_token(tmp_path: Path, lm_data: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    corpus = [json.dumps(r) for r in read_jsonl(lm_data["conv"])]
    tok = AutoTokenizer.from_pretrained(_tokenizer_without_chat_tokens(tmp_path / "tok", corpus))
    with pytest.raises(
        ModelError, match=r"the chat template uses '<\|im_start\|>' but the tokenizer has no such"
    ):
        check_chat_tokenizer(tok, str(tmp_path / "tok"))
    tok.chat_template = None
    with pytest.raises(ModelError, match="has no chat template"):
        check_chat_tokenizer(tok, "t")


@pytest.mark.parametrize("broken", ["no-chat-tokens", "no-template"])
def test_sft_with_a_tokenizer_unfit_for_chat_is_refused(
    broken: str, tmp_path: Path, lm_data: dict[str, Path], capsys
) -> None:
    corpus = [json.dumps(r) for r in read_jsonl(lm_data["conv"])]
    tok_dir = _tokenizer_without_chat_tokens(tmp_path / "tok", corpus)
    if broken == "no-template":
        (tok_dir / "chat_template.jinja").unlink(missing_ok=True)
        settings = json.loads((tok_dir / "tokenizer_config.json").read_text())
        settings.pop("chat_template", None)
        (tok_dir / "tokenizer_config.json").write_text(json.dumps(settings))
    # Long enough that '<|im_start|>' spelled out byte by byte still fits: today the run then just trains.
    cfg, out = _config(tmp_path, tok_dir, lm_data["conv"], lambda c: c["data"].update(max_length=256))
    code, err = run_cli(_train(cfg), capsys)
    assert code == 2 and err.startswith(f"error: {tok_dir}") and "chat template" in err
    assert files_under(out) == []
