"""Build a mixture: read every source (in config order, sharing one dedup set), split validation per source
before mixing, compute quotas, draw. Streamed sources are read only until their quota is met and their rows
go straight to shard files; the others are held in memory (they are drawn from, possibly repeatedly)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minigpt.data.mix import draw, normalise, quotas, rng_for, split_validation, validation_count
from minigpt.data.mixture_config import MixtureConfig, SourceConfig
from minigpt.data.row_pipeline import Row, RowProcessor, SourceStats
from minigpt.data.schema import Renderer, render_plain
from minigpt.data.sources import OpenedSource
from minigpt.data.tokens import TokenCounter
from minigpt.errors import ConfigError, DataError


@dataclass
class Stream:
    """One source's rows for one split: how many, and a way to read their JSON lines once."""

    count: int
    lines: Callable[[], Iterator[str]]


@dataclass
class MixtureBuild:
    config: MixtureConfig
    stats: list[SourceStats]
    train: list[Stream] = field(default_factory=list)
    val: list[Stream] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def to_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


def _memory(lines: list[str]) -> Stream:
    return Stream(len(lines), lambda: iter(lines))


def _shard(path: Path, count: int) -> Stream:
    def lines() -> Iterator[str]:
        with open(path, encoding="utf-8") as handle:
            yield from handle

    return Stream(count, lines)


def needs_tokenizer(config: MixtureConfig) -> list[str]:
    """The config settings that count tokens (each one needs a tokenizer)."""
    reasons = []
    if config.unit == "tokens":
        reasons.append("unit: tokens")
    if config.budget.kind == "tokens":
        reasons.append("budget.tokens")
    if config.filters.max_tokens is not None:
        reasons.append("filters.max_tokens")
    return reasons


def make_renderer(config: MixtureConfig, counter: TokenCounter | None) -> Renderer | None:
    """How conversations become text in a text mixture (midtraining on chats)."""
    if config.schema != "text":
        return None
    if config.render == "plain":
        return render_plain
    if counter is not None:
        return counter.render

    def missing(_: list[dict[str, str]]) -> str:
        raise ConfigError(
            "a conversation must be rendered as text with the tokenizer's chat template (render: chat_template): "
            "pass --tokenizer / tokenizer=, or set render: plain"
        )

    return missing


def _no_rows(stats: SourceStats) -> DataError:
    drops = ", ".join(f"{k}: {v}" for k, v in stats.dropped.most_common()) or "none dropped"
    return DataError(
        f"source '{stats.name}' has no rows left for training after validation, filters and dedup "
        f"({stats.rows_read} read; {drops})"
    )


def _in_fraction(key: bytes, seed: int, fraction: float) -> bool:
    """Deterministic per content: a streamed row goes to validation when its keyed hash falls under fraction."""
    digest = hashlib.blake2b(key, key=str(seed).encode()[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class _Sink:
    """Where a streamed source's rows go: a shard file in the work folder, or nowhere (plan)."""

    def __init__(self, path: Path | None):
        self.path, self.count = path, 0
        # Stays open across write() calls; close() ends it (the work folder is removed on any error).
        self.handle = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, row: Row) -> None:
        self.count += 1
        if self.handle:
            self.handle.write(to_line(row.data))

    def close(self) -> Stream:
        if self.handle:
            self.handle.close()
            return _shard(self.path, self.count)
        return _memory([])


def _add(total: int | None, tokens: int | None) -> int | None:
    return None if tokens is None else (total or 0) + tokens


def _stream_source(
    rows: Iterator[Row],
    stats: SourceStats,
    quota: float,
    config: MixtureConfig,
    src: SourceConfig,
    workdir: Path | None,
    index: int,
    sides: dict[bytes, bool],
) -> tuple[Stream, Stream]:
    """Read a streamed source until its quota is met, writing rows to shard files as they come."""
    spec = config.validation_for(src)
    train = _Sink(workdir / f"{index}.train.jsonl" if workdir else None)
    val = _Sink(workdir / f"{index}.val.jsonl" if workdir else None)
    drawn = 0.0
    stats.exhausted = True
    for row in rows:
        to_val = sides.get(row.key)
        if to_val is None:
            if spec.fraction:
                to_val = _in_fraction(row.key, config.seed, spec.fraction)
            else:
                to_val = stats.val_rows < (spec.count or 0)  # count: the first rows of the stream
            if not config.dedup:  # with dedup on a key never comes back: no need to remember its side
                sides[row.key] = to_val
        if to_val:
            val.write(row)
            stats.val_rows += 1
            stats.val_tokens = _add(stats.val_tokens, row.tokens)
            continue
        train.write(row)
        stats.drawn_rows += 1
        stats.drawn_tokens = _add(stats.drawn_tokens, row.tokens)
        drawn += 1 if config.unit == "samples" else (row.tokens or 0)
        if drawn >= quota:
            stats.exhausted = False
            break  # budget met: stop reading the source
    stats.available_rows, stats.available_tokens = stats.drawn_rows, stats.drawn_tokens
    stats.repeat = 1.0 if stats.drawn_rows else None
    return train.close(), val.close()


def _split_pool(
    pool: list[Row],
    stats: SourceStats,
    config: MixtureConfig,
    src: SourceConfig,
    counted: bool,
    sides: dict[bytes, bool],
    result: MixtureBuild,
) -> list[Row]:
    """Hold out this source's validation rows (before mixing); return its training pool."""
    spec = config.validation_for(src)
    count = validation_count(spec.fraction, spec.count, len(pool))
    if pool and count >= len(pool):
        raise DataError(
            f"source '{src.name}': validation takes {count} of its {len(pool)} rows, none left to train"
        )
    rng = rng_for(config.seed, src.name, "val")
    val_idx, train_idx = split_validation([r.key for r in pool], count, rng, sides)
    val_rows, train_rows = [pool[j] for j in val_idx], [pool[j] for j in train_idx]
    if not train_rows:
        raise _no_rows(stats)
    stats.val_rows, stats.available_rows = len(val_rows), len(train_rows)
    if counted:
        stats.val_tokens = sum(r.tokens for r in val_rows)
        stats.available_tokens = sum(r.tokens for r in train_rows)
    result.val.append(_memory([to_line(r.data) for r in val_rows]))
    result.train.append(_memory([]))  # filled once every quota is known
    return train_rows


def build_mixture(
    config: MixtureConfig,
    opened: list[OpenedSource],
    counter: TokenCounter | None,
    workdir: Path | None = None,
) -> MixtureBuild:
    """Read, split, mix. ``workdir`` receives streamed shards; None (plan) discards streamed rows."""
    missing = needs_tokenizer(config)
    if missing and counter is None:
        raise ConfigError(
            f"{', '.join(missing)} count tokens, which needs a tokenizer: pass --tokenizer PATH "
            "(or tokenizer= in Python) or set tokenizer: in the mixture config"
        )
    processor = RowProcessor(config, counter, make_renderer(config, counter))
    shares = normalise([s.weight for s in config.sources])
    zeros = [0] * len(shares)
    # Known before reading when the budget is in the mixing unit (always so with streamed sources).
    early = (
        quotas(shares, config.unit, config.budget, zeros, zeros)
        if config.budget.kind == config.unit
        else None
    )
    result = MixtureBuild(config, [])
    pools: dict[int, list[Row]] = {}
    sides: dict[bytes, bool] = {}  # content key → held out for validation (shared by all sources)
    for i, (src, source) in enumerate(zip(config.sources, opened, strict=True)):
        stats = SourceStats(src.name, source.origin, source.offline_sample, src.weight, shares[i])
        result.stats.append(stats)
        result.warnings.extend(source.warnings)
        rows = processor.rows(source, stats)
        if src.streaming:
            stats.streamed = True
            train, val = _stream_source(rows, stats, early[i], config, src, workdir, i, sides)
            if stats.drawn_rows == 0:
                raise _no_rows(stats)
            if stats.exhausted:
                result.warnings.append(
                    f"source '{src.name}' (streamed) ran out before its quota: all of it is used"
                )
            result.train.append(train)
            result.val.append(val)
            continue
        pools[i] = _split_pool(list(rows), stats, config, src, counter is not None, sides, result)
    _draw_pools(config, result, pools, shares, early)
    return result


def _draw_pools(
    config: MixtureConfig,
    result: MixtureBuild,
    pools: dict[int, list[Row]],
    shares: list[float],
    early: list[float] | None,
) -> None:
    if not pools:
        return
    stats = result.stats
    wanted = early or quotas(
        shares,
        config.unit,
        config.budget,
        [s.available_rows for s in stats],
        [s.available_tokens for s in stats],
    )
    for i, pool in pools.items():
        src, st = config.sources[i], stats[i]
        available = st.available_rows if config.unit == "samples" else st.available_tokens
        cap = config.max_repeat_for(src) * available
        quota = wanted[i]
        if quota > cap:
            st.capped, quota = True, cap
            need = wanted[i] / available
            result.warnings.append(
                f"source '{src.name}' would need {need:.2f}x repeats but max_repeat is "
                f"{config.max_repeat_for(src):g}: capped, so its share is below its weight"
            )
        picked = draw(
            len(pool), [r.tokens for r in pool], quota, config.unit, rng_for(config.seed, src.name, "draw")
        )
        st.drawn_rows = len(picked)
        st.drawn_tokens = None if st.available_tokens is None else sum(pool[j].tokens for j in picked)
        drawn_units = st.drawn_rows if config.unit == "samples" else st.drawn_tokens
        st.repeat = drawn_units / available if available else None
        lines = [to_line(r.data) for r in pool]  # serialised once; repeats share the same string
        result.train[i] = _memory([lines[j] for j in picked])
