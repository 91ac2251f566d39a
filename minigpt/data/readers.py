"""Read rows from local JSONL / JSON / parquet / CSV files and folders of shards, lazily where the format allows.

Readers never raise for a bad row or a bad file: they yield a ``RawRow`` carrying the error, so the pipeline
can apply ``on_error`` (raise, or skip and count). ``read_jsonl`` is the strict reader for prepared files.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from minigpt.data.problems import Location, data_error
from minigpt.errors import DataError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class RawRow(NamedTuple):
    data: dict[str, Any] | None
    loc: Location
    error: DataError | None = None


def _bad(loc: Location, message: str, reason: str) -> RawRow:
    return RawRow(None, loc, data_error(message, file=loc.file, line=loc.line, row=loc.row, reason=reason))


def _parse_object(text: str, loc: Location) -> RawRow:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return _bad(loc, f"malformed JSON: {exc.msg} (column {exc.colno})", "malformed JSON")
    if not isinstance(obj, dict):
        return _bad(loc, f"a row must be a JSON object, got {type(obj).__name__}", "row is not an object")
    return RawRow(obj, loc)


def iter_jsonl(path: str | os.PathLike) -> Iterator[RawRow]:
    """One row per non-blank line. A BOM at the start is tolerated; bytes that are not UTF-8 are an error."""
    file = str(path)
    try:
        # Read bytes, so a bad byte names its own line and the rest of the file stays readable.
        with open(path, "rb") as handle:
            yield from _jsonl_lines(handle, file)
    except OSError as exc:
        yield _bad(Location(file), f"cannot read file: {exc.strerror}", "unreadable file")


JSON_ARRAY_IN_JSONL = (
    "the file holds a JSON array, not JSON Lines (one object per line): "
    "name it .json to read it as an array, or write one object per line"
)


def _jsonl_lines(handle: Iterable[bytes], file: str) -> Iterator[RawRow]:
    first = True
    for number, raw in enumerate(handle, 1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        loc = Location(file, line=number)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _bad(loc, f"not valid UTF-8 (byte {exc.start + 1} of the line)", "not valid UTF-8")
            continue
        if not text.strip():
            continue
        if first and text.lstrip().startswith("["):
            # A row is never an array, so a first line opening one is a whole JSON array file: one error
            # for the file, not "malformed JSON" for each of its lines.
            yield _bad(loc, JSON_ARRAY_IN_JSONL, "JSON array in a JSON Lines file")
            return
        first = False
        yield _parse_object(text, loc)


def _decode_whole(path: Path) -> str | RawRow:
    """Text of a whole file (JSON, CSV), or an error row naming the line of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _bad(Location(str(path)), f"cannot read file: {exc.strerror}", "unreadable file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return _bad(Location(str(path), line=line), "not valid UTF-8", "not valid UTF-8")


def iter_json(path: Path) -> Iterator[RawRow]:
    """A JSON array of row objects (rows numbered from 1); a .json file holding JSON Lines also works."""
    text = _decode_whole(path)
    if isinstance(text, RawRow):
        yield text
        return
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: it is JSON Lines under a .json name
            yield from iter_jsonl(path)
            return
        yield _bad(Location(str(path), line=exc.lineno), f"malformed JSON: {exc.msg}", "malformed JSON")
        return
    if isinstance(data, dict):
        yield RawRow(data, Location(str(path), row=1))
        return
    if not isinstance(data, list):
        yield _bad(Location(str(path)), "expected a list of row objects", "row is not an object")
        return
    for number, obj in enumerate(data, 1):
        loc = Location(str(path), row=number)
        if isinstance(obj, dict):
            yield RawRow(obj, loc)
        else:
            yield _bad(loc, f"a row must be a JSON object, got {type(obj).__name__}", "row is not an object")


def iter_csv(path: Path) -> Iterator[RawRow]:
    """A header line, then one row per record; ``line`` is the record's last line in the file."""
    text = _decode_whole(path)
    if isinstance(text, RawRow):
        yield text
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for record in reader:
            loc = Location(str(path), line=reader.line_num)
            if None in record:  # DictReader files surplus values under the key None
                yield _bad(loc, "more values than header columns", "malformed CSV")
            else:
                yield RawRow(dict(record), loc)
    except csv.Error as exc:
        yield _bad(Location(str(path), line=reader.line_num), f"malformed CSV: {exc}", "malformed CSV")


def iter_parquet(path: Path) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # an optional dependency: refuse the file by name instead of a traceback
        yield _bad(
            Location(str(path)), "reading parquet needs pyarrow, which is not installed", "unreadable file"
        )
        return
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # arrow raises several types for a damaged file; all mean "cannot read"
        yield _bad(Location(str(path)), f"cannot read parquet file: {exc}", "unreadable file")
        return
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):  # lazily: a shard is never loaded whole
        for record in batch.to_pylist():
            number += 1
            yield RawRow(record, Location(str(path), row=number))


_READERS = {".jsonl": iter_jsonl, ".json": iter_json, ".csv": iter_csv, ".parquet": iter_parquet}


def list_files(path: str | os.PathLike) -> list[Path]:
    """The files a local source reads: the file itself, or every supported file under a folder, sorted."""
    root = Path(path)
    if root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise data_error(
                f"folder has no {', '.join(SUFFIXES)} files", file=str(root), reason="empty folder"
            )
        return files
    if not root.exists():
        raise data_error("file or folder not found", file=str(root), reason="file not found")
    if root.suffix not in SUFFIXES:
        raise data_error(
            f"unsupported file type '{root.suffix}' (use {', '.join(SUFFIXES)})",
            file=str(root),
            reason="file type",
        )
    return [root]


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of one file, read by what its suffix says it is (.jsonl, .json, .csv, .parquet); an empty file
    gives no rows. ``path`` is one of ``list_files``' answers (so its suffix is a supported one)."""
    return _READERS[path.suffix](path)


def iter_file(path: Path) -> Iterator[RawRow]:
    """Rows of one file; a file with no rows at all is reported as an error row (never silently empty)."""
    empty = True
    for item in read_rows(path):
        empty = False
        yield item
    if empty:
        yield _bad(Location(str(path)), "file is empty (no rows)", "empty file")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a JSONL file; raises DataError naming file and line on the first malformed line.

    An empty file gives an empty list (a prepared validation split may legitimately be empty).
    """
    if not Path(path).is_file():
        raise data_error("file not found", file=str(path), reason="file not found")
    rows = []
    for item in iter_jsonl(path):
        if item.error is not None:
            raise item.error
        rows.append(item.data)
    return rows
