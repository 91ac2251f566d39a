"""One source's rows through the pipeline: read → convert → adapt and check the schema → count tokens →
filter → dedup. Bad rows raise (on_error: raise) or are skipped and counted by reason (on_error: skip).

``read_checked`` is the same read and schema check for a file given straight to a stage (``data.train``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from minigpt.data.mixture_config import MixtureConfig, SourceConfig
from minigpt.data.parallel import map_chunks, worker_count
from minigpt.data.problems import EMPTY_TURN, Location, data_error, locate, reason_of
from minigpt.data.readers import RawRow, list_files, read_rows
from minigpt.data.schema import Renderer, adapt, content_key
from minigpt.data.sources import OpenedSource
from minigpt.data.tokens import TokenCounter
from minigpt.errors import ConfigError, DataError
from minigpt.registry import CONVERTERS

Outcome = tuple[str, Any]
"""A raw row after conversion: ("row", row dict), ("bad", DataError) or ("skip", reason)."""
CHUNK = 64  # rows per tokenizer call; small, so a streamed source reads little past its budget
MAX_EXAMPLES = 5


@dataclass
class SourceStats:
    """Everything the plan and the manifest report about one source."""

    name: str
    origin: str
    offline_sample: bool
    weight: float
    share: float
    streamed: bool = False
    rows_read: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    available_rows: int = 0
    available_tokens: int | None = None
    val_rows: int = 0
    val_tokens: int | None = None
    drawn_rows: int = 0
    drawn_tokens: int | None = None
    repeat: float | None = None
    capped: bool = False
    exhausted: bool = False

    def drop(self, reason: str, err: DataError | None = None) -> None:
        self.dropped[reason] += 1
        if err is not None and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err))


@dataclass
class Row:
    data: dict[str, Any]
    tokens: int | None
    key: bytes


def read_checked(path: str | os.PathLike, schema: str, render: Renderer | None) -> list[dict[str, Any]]:
    """Rows of a file (or folder of shards) given straight to a stage, checked exactly as a mixture source's
    rows are: the same readers, then ``adapt`` to ``schema`` (a row of another schema is turned into this one
    where a mixture would, e.g. conversations → text with ``render``). There is no converter, so the file
    must hold schema rows. Raises on the first bad row, naming file, line (or row) and field; an empty file
    gives no rows (whether that is an error is the caller's decision)."""
    rows: list[dict[str, Any]] = []
    for file in list_files(path):
        for item in read_rows(file):
            if item.error is not None:
                raise item.error
            try:
                rows.append(adapt(item.data, schema, render))
            except DataError as err:
                raise locate(err, item.loc) from None
    return rows


def _converter(config_name: str | None) -> Callable[..., Any] | None:
    return CONVERTERS.get(config_name) if config_name else None


class RowProcessor:
    """Turns a source's raw rows into accepted ``Row`` objects, recording every drop in the stats."""

    def __init__(self, config: MixtureConfig, counter: TokenCounter | None, render: Renderer | None):
        self.config = config
        self.counter = counter
        self.render = render
        self.seen: dict[bytes, str] = {}  # dedup key → the source that kept it first

    def _bad(self, err: DataError, loc: Location, stats: SourceStats) -> None:
        err = locate(err, loc)
        if reason_of(err) == EMPTY_TURN and self.config.filters.empty_turns == "drop":
            stats.drop("filtered: empty turn")
        elif self.config.on_error == "raise":
            raise err
        else:
            stats.drop(f"error: {reason_of(err)}", err)

    def _outcome(self, item: RawRow, src: SourceConfig, convert: Callable[..., Any] | None) -> Outcome:
        """One raw row through its converter and the schema check: ("row", row), ("bad", error) or
        ("skip", reason). Pure (no statistics touched), so it can run in a worker process."""
        if item.error is not None:
            return "bad", item.error
        try:
            out = item.data if convert is None else convert(dict(item.data), **src.converter_args)
            if out is None:
                return "skip", f"skipped by converter {src.converter}"
            if not isinstance(out, dict):
                raise data_error(
                    f"converter {src.converter} returned {type(out).__name__}, not a dict row",
                    reason="converter output",
                )
            row = adapt(out, self.config.schema, self.render)
        except DataError as err:
            return "bad", err
        except ConfigError:
            raise  # a setup problem (e.g. no chat template to render with), not this row's fault
        except Exception as exc:  # a user's converter failing on a row is that row's problem
            key = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
            err = data_error(
                f"converter {src.converter} failed: {type(exc).__name__}: {exc}",
                field=str(key) if key is not None else None,
                reason="converter failed",
            )
            return "bad", err
        # A generator's own meta is kept, but ``source`` is always the mixture's name for the source.
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        row["meta"] = {**meta, "source": src.name, "id": meta.get("id", item.loc.id)}
        return "row", row

    def _record(self, item: RawRow, outcome: Outcome, stats: SourceStats) -> dict[str, Any] | None:
        """Count one processed row in the statistics (raising on a bad row with on_error: raise)."""
        stats.rows_read += 1
        kind, value = outcome
        if kind == "bad":
            self._bad(value, item.loc, stats)
        elif kind == "skip":
            stats.drop(value)
        else:
            return value
        return None

    def _convert(self, opened: OpenedSource, stats: SourceStats) -> Iterator[dict[str, Any]]:
        src = opened.config
        convert = _converter(src.converter)
        for item in opened.rows():
            row = self._record(item, self._outcome(item, src, convert), stats)
            if row is not None:
                yield row

    def _count(self, rows: list[dict[str, Any]]) -> list[int | None]:
        return self.counter.count(rows, self.config.schema) if self.counter else [None] * len(rows)

    def _accept(
        self, rows: list[dict[str, Any]], stats: SourceStats, tokens: list[int | None] | None = None
    ) -> Iterator[Row]:
        schema = self.config.schema
        tokens = self._count(rows) if tokens is None else tokens
        limit = self.config.filters.max_tokens
        for row, count in zip(rows, tokens, strict=True):
            if limit is not None and count is not None and count > limit:
                stats.drop(f"filtered: over max_tokens ({limit})")
                continue
            key = content_key(row, schema)
            if self.config.dedup:
                first = self.seen.get(key)
                if first is not None:
                    stats.drop("duplicate" if first == stats.name else f"duplicate of source {first}")
                    continue
                # Recorded only when the row is handed on, so rows read past a streamed budget leave no trace.
                self.seen[key] = stats.name
            yield Row(row, count, key)

    def rows(self, opened: OpenedSource, stats: SourceStats) -> Iterator[Row]:
        workers = worker_count(self.config.num_proc)
        # A streamed source stops reading at its budget: reading ahead for workers would read (and count)
        # rows past it, so it stays in this process.
        if workers > 1 and not opened.config.streaming:
            yield from self._rows_parallel(opened, stats, workers)
            return
        chunk: list[dict[str, Any]] = []
        for row in self._convert(opened, stats):
            chunk.append(row)
            if len(chunk) >= CHUNK:
                yield from self._accept(chunk, stats)
                chunk = []
        yield from self._accept(chunk, stats)

    def _rows_parallel(self, opened: OpenedSource, stats: SourceStats, workers: int) -> Iterator[Row]:
        """``rows`` with conversion and token counting in worker processes; same rows, same statistics."""
        src = opened.config
        convert = _converter(src.converter)

        def task(items: list[RawRow]) -> tuple[list[RawRow], list[Outcome], list[int | None]]:
            outcomes = [self._outcome(item, src, convert) for item in items]
            kept = [value for kind, value in outcomes if kind == "row"]
            return items, outcomes, self._count(kept)

        for items, outcomes, tokens in map_chunks(task, opened.rows(), workers):
            kept = [self._record(item, outcome, stats) for item, outcome in zip(items, outcomes, strict=True)]
            yield from self._accept([row for row in kept if row is not None], stats, tokens)
