"""Bad input stops with an error naming file, line (or row) and field, and leaves no output behind; with
on_error: skip the rows are dropped and counted by reason. Never silent."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigpt.data import plan_dataset, prepare_dataset
from minigpt.errors import ConfigError, DataError
from minigpt.registry import GENERATORS

from .conftest import alpaca_rows, write_jsonl


def alpaca_source(path: str = "data.jsonl", **extra) -> list[dict]:
    return [{"name": "src", "path": path, "converter": "alpaca", **extra}]


def expect_failure(cfg: Path, out: Path, error: type = DataError) -> str:
    with pytest.raises(error) as info:
        prepare_dataset(cfg, out)
    assert not out.exists() or not any(out.iterdir())  # nothing written, no work folder left behind
    return str(info.value)


def where(path: Path, line: int) -> str:
    return f"{path}:{line}: "


CASES = {
    "malformed JSON": ('{"instruction": "a", "output": ', 3, None),
    "missing field": ({"instruction": "a", "input": ""}, 3, "output"),
    "mistyped field": ({"instruction": 5, "input": "", "output": "x"}, 3, "instruction"),
    "empty assistant turn": ({"instruction": "a", "input": "", "output": "   "}, 3, "output"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_rows_name_file_line_and_field(case: str, mixture, tmp_path: Path) -> None:
    bad, line, field = CASES[case]
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(2) + [bad] + alpaca_rows(3, start=10))
    message = expect_failure(mixture(alpaca_source()), tmp_path / "out")
    assert message.startswith(where(data, line))
    if field:
        assert f"field '{field}'" in message
    assert case.split()[0] in message


def test_wrong_role_order_and_empty_turn_in_messages(mixture, tmp_path: Path) -> None:
    user, bot = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [user, bot]}, {"messages": [user, user, bot]}])
    cfg = mixture([{"name": "chat", "path": "chat.jsonl", "converter": "openai"}])
    message = expect_failure(cfg, tmp_path / "out")
    assert message.startswith(where(data, 2)) and "field 'messages[1].role'" in message
    assert "wrong role order" in message
    empty = {"role": "assistant", "content": ""}
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [user, bot]}, {"messages": [user, empty]}])
    message = expect_failure(cfg, tmp_path / "out")
    assert "field 'messages[1].content'" in message and "empty assistant turn" in message


def test_non_utf8_bytes(mixture, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    message = expect_failure(mixture(alpaca_source()), tmp_path / "out")
    assert message.startswith(where(data, 2)) and "not valid UTF-8" in message


def test_byte_order_mark_is_tolerated(mixture, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(
        b"\xef\xbb\xbf" + b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
    )
    assert prepare_dataset(mixture(alpaca_source()), tmp_path / "out").manifest["train"]["rows"] == 2


def test_empty_missing_and_unreadable_files(mixture, tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("")
    assert "file is empty" in expect_failure(mixture(alpaca_source()), tmp_path / "out")
    assert "not found" in expect_failure(mixture(alpaca_source("nope.jsonl")), tmp_path / "out")
    (tmp_path / "data.parquet").write_bytes(b"PAR1 but not really")
    message = expect_failure(mixture(alpaca_source("data.parquet")), tmp_path / "out")
    assert str(tmp_path / "data.parquet") in message and "cannot read parquet" in message


def test_parquet_row_errors_name_the_row(mixture, tmp_path: Path) -> None:
    table = pa.table({"instruction": ["a", "b"], "input": ["", ""], "output": ["x", None]})
    pq.write_table(table, tmp_path / "data.parquet")
    message = expect_failure(mixture(alpaca_source("data.parquet")), tmp_path / "out")
    assert message.startswith(f"{tmp_path / 'data.parquet'} row 2: field 'output': missing field")


def test_unknown_converter_names_config_line_and_key(mixture, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", alpaca_rows(3))
    cfg = mixture([{"name": "src", "path": "data.jsonl", "converter": "alpacca"}])
    message = expect_failure(cfg, tmp_path / "out", ConfigError)
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if "alpacca" in text)
    assert (
        message.startswith(f"{cfg}:{line}: key 'sources.0.converter'") and "Did you mean 'alpaca'" in message
    )


def test_unknown_config_key_is_a_config_error(mixture, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", alpaca_rows(3))
    cfg = mixture(alpaca_source(wieght=2))
    message = expect_failure(cfg, tmp_path / "out", ConfigError)
    assert "unknown key 'sources.0.wieght'" in message and "Did you mean 'weight'" in message


def test_failed_prepare_keeps_the_previous_output_intact(mixture, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(6))
    cfg = mixture(alpaca_source())
    first = prepare_dataset(cfg, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    write_jsonl(data, alpaca_rows(6) + ["{broken"])
    with pytest.raises(DataError):
        prepare_dataset(cfg, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert first.train_path.exists()


def test_on_error_skip_counts_and_reports_every_drop(mixture, tmp_path: Path) -> None:
    rows = alpaca_rows(10) + [
        "{not json",
        {"instruction": "a", "input": ""},
        {"instruction": "b", "input": "", "output": ""},
        {"instruction": ["x"], "input": "", "output": "y"},
        {"instruction": "c", "input": "", "output": "   "},
    ]
    write_jsonl(tmp_path / "data.jsonl", rows)
    cfg = mixture(alpaca_source(), on_error="skip")
    out = prepare_dataset(cfg, tmp_path / "out")
    assert out.manifest["train"]["rows"] == 10
    assert out.manifest["dropped"] == {
        "error: malformed JSON": 1,
        "error: missing field": 1,
        "error: empty turn": 2,
        "error: mistyped field": 1,
    }
    source = out.manifest["sources"][0]
    assert source["rows_read"] == 15 and len(source["examples"]) == 5
    assert re.search(r"data\.jsonl:11: malformed JSON", source["examples"][0])
    plan = plan_dataset(cfg).table()
    assert "src: 5 (error: empty turn: 2, error: malformed JSON: 1" in plan
    assert "e.g. " in plan
    # filters.empty_turns: drop turns empty turns into a counted filter instead of an error
    dropped = prepare_dataset(cfg, tmp_path / "out", overrides=["filters.empty_turns=drop"]).manifest[
        "dropped"
    ]
    assert dropped["filtered: empty turn"] == 2 and "error: empty turn" not in dropped


def test_on_error_skip_skips_a_bad_shard_in_a_folder(mixture, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "shards" / "a.jsonl", alpaca_rows(5))
    (tmp_path / "shards" / "b.jsonl").write_text("")
    write_jsonl(tmp_path / "shards" / "c.jsonl", alpaca_rows(5, start=5))
    assert "b.jsonl: file is empty" in expect_failure(mixture(alpaca_source("shards")), tmp_path / "out")
    out = prepare_dataset(mixture(alpaca_source("shards"), on_error="skip"), tmp_path / "out")
    assert out.manifest["train"]["rows"] == 10 and out.manifest["dropped"] == {"error: empty file": 1}


def test_all_rows_dropped_is_an_error_not_an_empty_file(mixture, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", ["{bad", "{worse"])
    message = expect_failure(mixture(alpaca_source(), on_error="skip"), tmp_path / "out")
    assert "no rows left for training" in message and "error: malformed JSON: 2" in message


def test_generator_rows_are_checked_and_located(mixture, tmp_path: Path) -> None:
    name = "test_data_counting_generator"
    if name not in GENERATORS:

        @GENERATORS.register(name)
        def counting(n: int = 3, bad_at: int | None = None):
            for i in range(n):
                turns = [{"role": "user", "content": f"count {i}"}, {"role": "assistant", "content": str(i)}]
                if i == bad_at:
                    turns.reverse()
                yield {"conversations": turns, "meta": {"source": "counting", "id": f"c{i}"}}

    sources = [{"name": "gen", "generator": name, "generator_args": {"n": 6}}]
    out = prepare_dataset(mixture(sources), tmp_path / "out")
    rows = out.read("train")
    assert len(rows) == 6 and {r["meta"]["id"] for r in rows} == {f"c{i}" for i in range(6)}
    assert {r["meta"]["source"] for r in rows} == {"gen"}  # the mixture's source name
    sources[0]["generator_args"]["bad_at"] = 2
    message = expect_failure(mixture(sources), tmp_path / "out2")
    assert message.startswith(f"generator:{name} row 3: field 'conversations[0].role'")


def test_offline_hub_source_without_sample_is_a_clear_error(mixture, tmp_path: Path) -> None:
    cfg = mixture([{"name": "hub", "hub": "someone/dataset", "converter": "alpaca"}])
    message = expect_failure(cfg, tmp_path / "out")
    assert "offline" in message and "offline_path" in message


def test_user_converter_failures_are_row_errors(mixture, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "user_conv.py").write_text(
        "def pick(row, column='body'):\n    return {'text': row[column]}\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_jsonl(tmp_path / "data.jsonl", [{"body": "one"}, {"other": "two"}])
    cfg = mixture([{"name": "u", "path": "data.jsonl", "converter": "user_conv:pick"}], schema="text")
    message = expect_failure(cfg, tmp_path / "out")
    assert message.startswith(f"{data}:2: field 'body': converter user_conv:pick failed: KeyError")
    skipped = prepare_dataset(cfg, tmp_path / "out", overrides=["on_error=skip"])
    assert skipped.manifest["dropped"] == {"error: converter failed": 1}
