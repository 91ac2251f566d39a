"""The plan table (what `minigpt data plan` prints) and the per-source records kept in the manifest."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from minigpt.data.build import MixtureBuild
from minigpt.data.row_pipeline import SourceStats

NA = "n/a"


def _num(value: int | None, streamed_open: bool = False) -> str:
    if value is None:
        return NA
    return f"≥{value}" if streamed_open else str(value)


def realised_shares(stats: list[SourceStats], unit: str) -> list[float | None]:
    """Each source's share of the drawn training data, in the mixing unit."""
    units = [s.drawn_rows if unit == "samples" else s.drawn_tokens for s in stats]
    if any(u is None for u in units) or not sum(units):
        return [None] * len(stats)
    total = sum(units)
    return [u / total for u in units]


def source_records(build: MixtureBuild) -> list[dict[str, Any]]:
    shares = realised_shares(build.stats, build.config.unit)
    records = []
    for stats, share in zip(build.stats, shares, strict=True):
        record = asdict(stats)
        record["dropped"] = dict(stats.dropped.most_common())
        record["normalised_weight"] = record.pop("share")
        record["realised_share"] = share
        records.append(record)
    return records


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if c == 0 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def _total(values: list[int | None]) -> str:
    return NA if any(v is None for v in values) else str(sum(values))


def format_plan(build: MixtureBuild, source_label: str, tokenizer_label: str | None, offline: bool) -> str:
    cfg, stats = build.config, build.stats
    val = cfg.validation
    val_text = (
        f"fraction {val.fraction:g}"
        if val.fraction is not None
        else f"count {val.count}"
        if val.count is not None
        else "none"
    )
    lines = [
        f"Mixture {cfg.stage}/{cfg.name} (schema {cfg.schema}) from {source_label}",
        f"seed {cfg.seed} · unit {cfg.unit} · budget {cfg.budget.describe()} · max_repeat {cfg.max_repeat:g} · "
        f"dedup {'on' if cfg.dedup else 'off'} · on_error {cfg.on_error} · validation {val_text} per source",
        f"tokenizer: {tokenizer_label}" if tokenizer_label else "tokenizer: none (token counts n/a)",
        "weights normalised to sum to 1: "
        + ", ".join(f"{s.name} {s.weight:g} → {s.share:.3f}" for s in stats),
    ]
    if offline:
        lines.append(
            "offline: hub sources read their local offline_path samples (MINIGPT_OFFLINE / HF_HUB_OFFLINE)"
        )
    header = ["source", "rows", "tokens", "val", "val tok", "drawn", "drawn tok", "repeat", "weight", "share"]
    table = [header]
    shares = realised_shares(stats, cfg.unit)
    for s, share in zip(stats, shares, strict=True):
        open_stream = s.streamed and not s.exhausted  # rows beyond what was read were never counted
        table.append(
            [
                s.name + (" (sample)" if s.offline_sample else ""),
                _num(s.available_rows, open_stream),
                _num(s.available_tokens, open_stream),
                str(s.val_rows),
                _num(s.val_tokens),
                str(s.drawn_rows),
                _num(s.drawn_tokens),
                NA if s.repeat is None else f"{s.repeat:.2f}x" + (" cap" if s.capped else ""),
                f"{s.share:.3f}",
                NA if share is None else f"{100 * share:.1f}%",
            ]
        )
    table.append(
        [
            "total",
            "",
            "",
            str(sum(s.val_rows for s in stats)),
            _total([s.val_tokens for s in stats]),
            str(sum(s.drawn_rows for s in stats)),
            _total([s.drawn_tokens for s in stats]),
            "",
            "",
            "",
        ]
    )
    lines += [
        "",
        *_table(table),
        "",
        f"share = realised share of the drawn training {cfg.unit}; "
        "rows/tokens = training pool after validation split, filters and dedup",
        "sources:",
    ]
    lines += [f"  {s.name}: {s.origin}" + (" [streamed]" if s.streamed else "") for s in stats]
    dropped = [s for s in stats if s.dropped]
    lines.append("dropped rows:" + ("" if dropped else " none"))
    for s in dropped:
        reasons = ", ".join(f"{k}: {v}" for k, v in s.dropped.most_common())
        lines.append(f"  {s.name}: {sum(s.dropped.values())} ({reasons})")
        lines += [f"    e.g. {example}" for example in s.examples]
    if build.warnings:
        lines.append("warnings:")
        lines += [f"  {w}" for w in build.warnings]
    return "\n".join(lines)
