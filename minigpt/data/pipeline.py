"""One source's rows through the pipeline: read → convert → adapt and check the schema → count tokens →
filter → dedup. Bad rows raise (on_error: raise) or are skipped and counted by reason (on_error: skip)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from minigpt.data.config import MixtureConfig
from minigpt.data.problems import EMPTY_TURN, Location, data_error, locate, reason_of
from minigpt.data.schema import Renderer, adapt, content_key
from minigpt.data.sources import OpenedSource
from minigpt.data.tokens import TokenCounter
from minigpt.errors import ConfigError, DataError
from minigpt.registry import CONVERTERS

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

    def _convert(self, opened: OpenedSource, stats: SourceStats) -> Iterator[dict[str, Any]]:
        src = opened.config
        convert = _converter(src.converter)
        for item in opened.rows():
            stats.rows_read += 1
            if item.error is not None:
                self._bad(item.error, item.loc, stats)
                continue
            try:
                out = item.data if convert is None else convert(dict(item.data), **src.converter_args)
                if out is None:
                    stats.drop(f"skipped by converter {src.converter}")
                    continue
                if not isinstance(out, dict):
                    raise data_error(
                        f"converter {src.converter} returned {type(out).__name__}, not a dict row",
                        reason="converter output",
                    )
                row = adapt(out, self.config.schema, self.render)
            except DataError as err:
                self._bad(err, item.loc, stats)
                continue
            except ConfigError:
                raise  # a setup problem (e.g. no chat template to render with), not this row's fault
            except Exception as exc:  # a user's converter failing on a row is that row's problem
                key = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
                err = data_error(
                    f"converter {src.converter} failed: {type(exc).__name__}: {exc}",
                    field=str(key) if key is not None else None,
                    reason="converter failed",
                )
                self._bad(err, item.loc, stats)
                continue
            # A generator's own meta is kept, but ``source`` is always the mixture's name for the source.
            meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
            row["meta"] = {**meta, "source": src.name, "id": meta.get("id", item.loc.id)}
            yield row

    def _accept(self, rows: list[dict[str, Any]], stats: SourceStats) -> Iterator[Row]:
        schema = self.config.schema
        tokens = self.counter.count(rows, schema) if self.counter else [None] * len(rows)
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
        chunk: list[dict[str, Any]] = []
        for row in self._convert(opened, stats):
            chunk.append(row)
            if len(chunk) >= CHUNK:
                yield from self._accept(chunk, stats)
                chunk = []
        yield from self._accept(chunk, stats)
