"""One schema check for every data path: a file given straight to a stage (``data.train`` /
``data.validation``) gets exactly the row checks of a data-mixture source (``minigpt.data.schema.adapt``, via
``minigpt.data.row_pipeline.read_checked``), so a bad row is refused with the same message, naming file, line (or
row) and field, whichever way it comes in. Files are read by what their suffix says (.jsonl, .json, .csv,
.parquet); a JSON array in a .jsonl file is named as such."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigpt.cli import main
from minigpt.data import prepare_dataset
from minigpt.data.readers import JSON_ARRAY_IN_JSONL
from minigpt.data.training.stage_rows import load_rows
from minigpt.errors import ConfigError, DataError
from minigpt.registry import STAGES
from minigpt.stages.stage_config import StageConfig, load_stage_config

from .helpers import files_under, stage_dict, write_yaml


def turn(role: str, content: Any = "x") -> dict[str, Any]:
    return {"role": role, "content": content}


GOOD = {
    "text": {"text": "a sentence"},
    "conversations": {"conversations": [turn("user", "hi"), turn("assistant", "hello")]},
    "preference": {
        "prompt": [turn("user", "hi")],
        "chosen": [turn("assistant", "good")],
        "rejected": [turn("assistant", "bad")],
    },
    "prompt_only": {"prompt": [turn("user", "hi")], "answer": "4"},
}


def conv(*turns: dict[str, Any]) -> dict[str, Any]:
    return {"conversations": list(turns)}


def pair(prompt: list, chosen: list, rejected: list) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


U, A = turn("user", "hi"), turn("assistant", "hello")

# name: (schema, bad row (a dict, or a raw line), field or None, message after "file:3: [field 'f': ]")
BAD_ROWS: dict[str, tuple[str, Any, str | None, str]] = {
    "malformed JSON": ("conversations", '{"conversations": [', None, "malformed JSON: Expecting value (column 1)"),
    "row is not an object": ("text", '"just a string"', None, "a row must be a JSON object, got str"),
    "unknown role": ("conversations", conv(turn("bot"), A), "conversations[0].role",
                     "unknown role: 'bot' (use system, user, assistant)"),
    "role order": ("conversations", conv(U, U, A), "conversations[1].role",
                   "wrong role order: expected assistant, got user"),
    "last turn is the user's": ("conversations", conv(U, A, U), "conversations[2].role",
                                "wrong role order: must end with an assistant turn"),
    "system turn not first": ("conversations", conv(U, turn("system"), A), "conversations[1].role",
                              "wrong role order: expected assistant, got system"),
    "empty prompt turn": ("conversations", conv(turn("user", "  "), A), "conversations[0].content",
                          "empty user turn"),
    "empty assistant turn": ("conversations", conv(U, turn("assistant", "")), "conversations[1].content",
                             "empty assistant turn"),
    "content not a string": ("conversations", conv(U, turn("assistant", 5)), "conversations[1].content",
                             "mistyped field: expected a string, got int"),
    "content missing": ("conversations", conv(U, {"role": "assistant"}), "conversations[1].content",
                        "mistyped field: expected a string, got missing"),
    "turn not an object": ("conversations", conv("hi", A), "conversations[0]",
                           "mistyped field: expected a {role, content} object, got str"),
    "conversations not a list": ("conversations", {"conversations": "hi"}, "conversations",
                                 "mistyped field: expected a list of messages, got str"),
    "no turns": ("conversations", {"messages": []}, "messages", "empty conversation: no turns"),
    "missing conversations": ("conversations", {"dialogue": []}, "messages",
                              "missing field: a conversations row needs messages (or conversations)"),
    "text row for a chat stage": ("conversations", {"text": "hi"}, None,
                                  "wrong schema: a text row cannot be turned into a conversations row"),
    "empty text": ("text", {"text": " \n"}, "text", "empty text"),
    "text not a string": ("text", {"text": ["a"]}, "text", "mistyped field: expected a string, got list"),
    "missing text": ("text", {"body": "a"}, "text", "missing field: a text row needs text"),
    "identical pair": ("preference", pair([U], [A], [A]), "rejected",
                       "identical chosen and rejected: the pair carries no preference"),
    "chosen starts with the user": ("preference", pair([U], [U], [A]), "chosen[0].role",
                                    "wrong role order: expected assistant, got user"),
    "pair prompt ends with the assistant": ("preference", pair([U, A], [A], [turn("assistant", "no")]),
                                            "prompt[1].role", "wrong role order: must end with a user turn"),
    "missing rejected": ("preference", {"prompt": [U], "chosen": [A]}, "rejected",
                         "missing field: a preference row needs prompt, chosen, rejected"),
    "prompt ends with the assistant": ("prompt_only", {"prompt": [U, A]}, "prompt[1].role",
                                       "wrong role order: must end with a user turn"),
    "empty prompt list": ("prompt_only", {"prompt": []}, "prompt", "empty conversation: no turns"),
    "empty prompt string": ("prompt_only", {"prompt": ""}, "prompt[0].content", "empty user turn"),
}  # fmt: skip


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def stage_config(tmp: Path, train: list[Path], **data: Any) -> StageConfig:
    """A validated stage config reading ``train`` directly (the stage name does not matter to load_rows)."""
    cfg = stage_dict(tmp / "out", tmp / "tok", train[0], data=data)
    cfg["data"]["train"] = [str(p) for p in train]
    return load_stage_config(write_yaml(tmp / "stage.yaml", cfg))


def direct_error(tmp: Path, path: Path, schema: str) -> str:
    with pytest.raises(DataError) as info:
        load_rows(stage_config(tmp, [path]), None, tmp / "out", schema)
    return str(info.value)


def mixture_error(tmp: Path, path: Path, schema: str) -> str:
    mix = {"name": "m", "stage": "s", "schema": schema, "sources": [{"name": "src", "path": str(path)}]}
    with pytest.raises(DataError) as info:
        prepare_dataset(write_yaml(tmp / "mix.yaml", mix), tmp / "prepared")
    return str(info.value)


def direct_rows(tmp: Path, path: Path, schema: str, tokenizer: Any = None) -> list[dict[str, Any]]:
    return load_rows(stage_config(tmp, [path]), tokenizer, tmp / "out", schema)[0]


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_a_bad_row_gets_the_same_message_from_a_mixture_and_from_data_train(
    kind: str, tmp_path: Path
) -> None:
    schema, bad, field, message = BAD_ROWS[kind]
    path = write_lines(tmp_path / "rows.jsonl", [GOOD[schema], GOOD[schema], bad, GOOD[schema]])
    expected = f"{path}:3: " + (f"field '{field}': " if field else "") + message
    assert mixture_error(tmp_path, path, schema) == expected
    assert direct_error(tmp_path, path, schema) == expected


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_row_numbered_formats_name_the_row_the_same_way(suffix: str, tmp_path: Path) -> None:
    rows = [GOOD["conversations"], GOOD["conversations"], conv(U, A, U)]
    path = tmp_path / f"rows{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows), "utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    expected = (
        f"{path} row 3: field 'conversations[2].role': wrong role order: must end with an assistant turn"
    )
    assert mixture_error(tmp_path, path, "conversations") == expected
    assert direct_error(tmp_path, path, "conversations") == expected


def test_a_bad_validation_file_is_checked_too(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", [GOOD["text"]])
    val = write_lines(tmp_path / "val.jsonl", [GOOD["text"], {"text": ""}])
    with pytest.raises(DataError) as info:
        load_rows(stage_config(tmp_path, [train], validation=[str(val)]), None, tmp_path / "out", "text")
    assert str(info.value) == f"{val}:2: field 'text': empty text"


# ---------------------------------------------------------------- files read by what they are


CHATS = [  # clean rows: turns under messages, the key a prepared row is written with
    {"messages": [turn("user", f"what is {i} + 1?"), turn("assistant", f"{i + 1}")], "id": str(i)}
    for i in range(5)
]


@pytest.mark.parametrize("suffix", [".json", ".parquet", ".jsonl-in-folder"])
def test_json_array_and_parquet_files_in_data_train_give_the_jsonl_rows(suffix: str, tmp_path: Path) -> None:
    reference = direct_rows(tmp_path, write_lines(tmp_path / "ref.jsonl", CHATS), "conversations")
    assert reference == CHATS  # already clean rows pass through unchanged
    if suffix == ".json":
        path = tmp_path / "rows.json"
        path.write_text(json.dumps(CHATS, indent=2), "utf-8")
    elif suffix == ".parquet":
        path = tmp_path / "rows.parquet"
        pq.write_table(pa.Table.from_pylist(CHATS), path)
    else:  # a folder of shards, as a mixture source may be
        path = tmp_path / "shards"
        path.mkdir()
        write_lines(path / "b.jsonl", CHATS[3:])
        write_lines(path / "a.jsonl", CHATS[:3])
    assert direct_rows(tmp_path, path, "conversations") == reference


def test_a_csv_file_in_data_train_gives_the_jsonl_rows(tmp_path: Path) -> None:
    texts = [{"text": "one, two"}, {"text": 'a "quoted"\nline'}, {"text": "three"}]
    reference = direct_rows(tmp_path, write_lines(tmp_path / "ref.jsonl", texts), "text")
    path = tmp_path / "rows.csv"
    path.write_text('text\n"one, two"\n"a ""quoted""\nline"\nthree\n', "utf-8")
    assert direct_rows(tmp_path, path, "text") == reference == texts


@pytest.mark.parametrize("layout", ["one line", "indented"])
def test_a_json_array_in_a_jsonl_file_is_named_as_such(layout: str, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(CHATS, indent=2 if layout == "indented" else None) + "\n", "utf-8")
    expected = f"{path}:1: {JSON_ARRAY_IN_JSONL}"
    assert direct_error(tmp_path, path, "conversations") == expected
    assert mixture_error(tmp_path, path, "conversations") == expected


def test_parquet_without_pyarrow_is_refused_by_name(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(CHATS), path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # makes `import pyarrow.parquet` fail
    assert direct_error(tmp_path, path, "conversations") == (
        f"{path}: reading parquet needs pyarrow, which is not installed"
    )


def test_an_unsupported_file_type_is_refused_by_name(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.txt", CHATS)
    assert direct_error(tmp_path, path, "conversations") == (
        f"{path}: unsupported file type '.txt' (use .jsonl, .json, .parquet, .csv)"
    )


# ---------------------------------------------------------------- rows adapted as a mixture adapts them


def test_rows_are_normalised_as_in_a_mixture(tmp_path: Path) -> None:
    plain = write_lines(tmp_path / "p.jsonl", [{"prompt": "hi", "answer": "4"}])
    assert direct_rows(tmp_path, plain, "prompt_only") == [{"prompt": [turn("user", "hi")], "answer": "4"}]
    chats = write_lines(tmp_path / "c.jsonl", [{"messages": [U | {"name": "x"}, A], "answer": "4"}])
    assert direct_rows(tmp_path, chats, "conversations") == [{"messages": [U, A], "answer": "4"}]
    legacy = write_lines(tmp_path / "l.jsonl", [{"conversations": [U, A], "answer": "4"}])
    assert direct_rows(tmp_path, legacy, "conversations") == [{"messages": [U, A], "answer": "4"}]
    # SFT on a preference pair trains on the preferred answer; RL on a conversation drops its last answer.
    pairs = write_lines(tmp_path / "d.jsonl", [GOOD["preference"]])
    assert direct_rows(tmp_path, pairs, "conversations") == [
        {"messages": [turn("user", "hi"), turn("assistant", "good")]}
    ]
    assert direct_rows(tmp_path, chats, "prompt_only") == [{"prompt": [U], "answer": "4"}]


def test_a_text_stage_renders_conversations_with_the_chat_template(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    chats = write_lines(tmp_path / "c.jsonl", [conv(U, A)])
    assert direct_rows(tmp_path, chats, "text", tok) == [
        {"text": tok.apply_chat_template([U, A], tokenize=False)}
    ]


def test_a_mixture_of_another_schema_is_refused(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "t.jsonl", [GOOD["text"]] * 3)
    mix = {
        "name": "m",
        "stage": "pretrain",
        "schema": "text",
        "sources": [{"name": "s", "path": str(source)}],
    }
    mix_path = write_yaml(tmp_path / "mix.yaml", mix)
    cfg = stage_dict(tmp_path / "out", tmp_path / "tok", source, data={"data_config": str(mix_path)})
    del cfg["data"]["train"]
    stage_cfg = load_stage_config(write_yaml(tmp_path / "stage.yaml", cfg))
    with pytest.raises(ConfigError) as info:
        load_rows(stage_cfg, None, tmp_path / "out", "conversations")
    assert str(info.value) == (
        f"{mix_path}: the mixture's schema is text, but stage 'sft' trains on conversations rows; "
        "set schema: conversations in the mixture"
    )


def test_the_stage_schema_comes_from_the_stage_and_its_params(tmp_path: Path) -> None:
    expected = {"pretrain": "text", "midtrain": "text", "sft": "conversations", "dpo": "preference",
                "reward": "preference", "grpo": "prompt_only", "rloo": "prompt_only", "ppo": "prompt_only",
                "spo": "prompt_only", "reasoning_distill": "conversations"}  # fmt: skip
    for name, schema in expected.items():
        assert STAGES.get(name).load().row_schema(None) == schema, name
    for data_schema in ("text", "conversations"):
        cfg = stage_dict(tmp_path / "o", tmp_path / "tok", tmp_path / "d.jsonl", stage="distill")
        cfg["algo"] = {"teacher": str(tmp_path / "teacher"), "data_schema": data_schema}
        params = load_stage_config(write_yaml(tmp_path / "distill.yaml", cfg)).algo
        assert STAGES.get("distill").load().row_schema(params) == data_schema


# ---------------------------------------------------------------- end to end: minigpt train


E2E = {
    "sft: last turn is the user's": (
        "sft",
        [GOOD["conversations"], conv(U, A, turn("user", "and?"))],
        ":2: field 'conversations[2].role': wrong role order: must end with an assistant turn",
    ),
    "dpo: identical pair": (
        "dpo",
        [GOOD["preference"], pair([U], [A], [A])],
        ":2: field 'rejected': identical chosen and rejected: the pair carries no preference",
    ),
    "pretrain: a JSON array in .jsonl": ("pretrain", None, f":1: {JSON_ARRAY_IN_JSONL}"),
}


@pytest.mark.parametrize("case", list(E2E))
def test_minigpt_train_refuses_a_bad_row_with_one_line_and_no_files(
    case: str, tmp_path: Path, tiny_tokenizer_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stage, rows, tail = E2E[case]
    data = tmp_path / "rows.jsonl"
    if rows is None:
        data.write_text(json.dumps([GOOD["text"]] * 4), "utf-8")
    else:
        write_lines(data, rows)
    out = tmp_path / "out"
    config = write_yaml(tmp_path / "stage.yaml", stage_dict(out, tiny_tokenizer_dir, data, stage=stage))
    code = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [f"error: {data}{tail}"]
    assert files_under(out) == []
