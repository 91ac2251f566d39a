"""Local readers: every format, folders of shards, BOM, bad bytes, malformed lines, empty files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigpt.data import read_jsonl
from minigpt.data.readers import iter_file, list_files
from minigpt.errors import DataError

from .conftest import write_jsonl


def rows_and_errors(path: Path) -> tuple[list[dict], list[DataError]]:
    items = list(iter_file(path))
    return [i.data for i in items if i.error is None], [i.error for i in items if i.error is not None]


def test_jsonl_with_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\n\n{"text": "two"}\n')
    rows, errors = rows_and_errors(path)
    assert rows == [{"text": "one"}, {"text": "two"}] and errors == []
    items = list(iter_file(path))
    assert [i.loc.line for i in items] == [1, 3]


def test_jsonl_bad_bytes_and_malformed_lines_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": \n[1, 2]\n')
    rows, errors = rows_and_errors(path)
    assert rows == [{"text": "ok"}]
    assert [(e.line, e.reason) for e in errors] == [
        (2, "not valid UTF-8"),
        (3, "malformed JSON"),
        (4, "row is not an object"),
    ]
    assert str(errors[0]).startswith(f"{path}:2: ")


def test_read_jsonl_raises_with_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"a": 1}, "{oops"])
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert info.value.file == str(path) and info.value.line == 2
    assert read_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"a": 1}])) == [{"a": 1}]
    (tmp_path / "empty.jsonl").write_text("")
    assert read_jsonl(tmp_path / "empty.jsonl") == []


def test_json_array_json_lines_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    (tmp_path / "b.json").write_text('{"text": "p"}\n{"text": "q"}\n', encoding="utf-8")
    (tmp_path / "c.csv").write_text(
        '\ufeffinstruction,input,output\nSay hi,,hi\n"Multi\nline",x,y\n', "utf-8"
    )
    pq.write_table(pa.table({"text": ["r1", "r2", "r3"]}), tmp_path / "d.parquet")
    assert rows_and_errors(tmp_path / "a.json")[0] == [{"text": "x"}, {"text": "y"}]
    assert [i.loc.row for i in iter_file(tmp_path / "a.json")] == [1, 2]
    assert rows_and_errors(tmp_path / "b.json")[0] == [{"text": "p"}, {"text": "q"}]
    csv_items = list(iter_file(tmp_path / "c.csv"))
    assert csv_items[0].data == {"instruction": "Say hi", "input": "", "output": "hi"}
    assert csv_items[1].data["instruction"] == "Multi\nline" and csv_items[1].loc.line == 4
    assert rows_and_errors(tmp_path / "d.parquet")[0] == [{"text": "r1"}, {"text": "r2"}, {"text": "r3"}]


def test_empty_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n")
    assert [e.reason for e in rows_and_errors(tmp_path / "e.jsonl")[1]] == ["empty file"]
    (tmp_path / "f.parquet").write_bytes(b"not parquet at all")
    assert [e.reason for e in rows_and_errors(tmp_path / "f.parquet")[1]] == ["unreadable file"]
    (tmp_path / "g.csv").write_bytes(b"text\nok\n\xff\xfe\n")
    err = rows_and_errors(tmp_path / "g.csv")[1][0]
    assert err.reason == "not valid UTF-8" and err.line == 3
    (tmp_path / "h.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        list_files(tmp_path / "h.txt")
    with pytest.raises(DataError, match="not found"):
        list_files(tmp_path / "missing.jsonl")


def test_folder_of_shards_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "shards" / "part-001.jsonl", [{"text": "b"}])
    write_jsonl(tmp_path / "shards" / "part-000.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "shards" / ".cache" / "x.jsonl", [{"text": "hidden"}])
    (tmp_path / "shards" / "README.md").write_text("not data")
    assert [p.name for p in list_files(tmp_path / "shards")] == ["part-000.jsonl", "part-001.jsonl"]
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="folder has no"):
        list_files(tmp_path / "none")
