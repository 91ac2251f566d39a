"""Ratios, the docs/design.md §7 target check, the printed table and the JSON document."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from minigpt.perf.measure import MEMORY_LABELS, Row

# The row each workload's ratio divides by (the decode micro-benchmark has no baseline implementation: its
# ratio shows how throughput scales from the smallest batch of sequences).
REFERENCES = {
    "pretrain-26m": "trl-sft",
    "pretrain-100m": "trl-sft",
    "sft-packed": "project-pretrain",
    "grpo-step": "trl-grpo",
}
UNITS = {
    "pretrain-26m": "input tokens (every block full); ratio ÷ TRL SFTTrainer defaults",
    "pretrain-100m": "input tokens (every block full); ratio ÷ TRL SFTTrainer defaults",
    "sft-packed": "non-padding tokens; ratio = packed SFT ÷ pretraining, same model and shape",
    "grpo-step": "completion tokens over whole steps (generation + update); ratio ÷ TRL GRPOTrainer defaults",
    "decode": "generated tokens; ratio ÷ the smallest batch of sequences",
}


@dataclass(frozen=True)
class Target:
    text: str
    workload: str
    implementation: str
    metric: str
    """"tokens_per_second", "ratio" or "mfu_percent"."""
    threshold: float


TARGETS = (
    Target("26M preset pretraining >= 1.5M tokens/s", "pretrain-26m", "project", "tokens_per_second", 1.5e6),
    Target("26M preset pretraining >= 4.5x TRL SFTTrainer defaults", "pretrain-26m", "project", "ratio", 4.5),
    Target("100M preset pretraining >= 45% MFU", "pretrain-100m", "project", "mfu_percent", 45.0),
    Target(
        "packed SFT on variable-length conversations within 10% of pretraining tokens/s",
        "sft-packed",
        "project-sft-packed",
        "ratio",
        0.90,
    ),
    Target(
        "GRPO completion tokens/s over a whole step >= 5x TRL GRPOTrainer defaults",
        "grpo-step",
        "project-grpo",
        "ratio",
        5.0,
    ),
    Target(
        "decode >= 100K tokens/s at 512 sequences (26M preset)",
        "decode",
        "generate-512seq-static",  # the project's fast generation path (algo.cache_implementation: static)
        "tokens_per_second",
        1e5,
    ),
)
TARGET_DEVICE = "H100"
UNSTEADY = 2.0
"""Slowest ÷ fastest timed step above which a GRPO row is flagged: its steps do the same work, so such a
spread comes from the machine (other jobs, threads descheduled) or a recompile inside the timed window, and
the row's ratio is not to be trusted."""


def set_ratios(rows: list[Row]) -> None:
    by_workload: dict[str, list[Row]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, []).append(row)
    for workload, group in by_workload.items():
        ok = [r for r in group if r.error is None and r.tokens_per_second > 0]
        name = REFERENCES.get(workload)
        if name is None:  # decode: the smallest batch of sequences
            sized = [r for r in ok if "sequences" in r.settings]
            name = min(sized, key=lambda r: r.settings["sequences"]).implementation if sized else None
        reference = next((r for r in ok if r.implementation == name), None)
        if reference is None:
            continue
        for row in ok:
            row.ratio = row.tokens_per_second / reference.tokens_per_second
            row.ratio_basis = reference.implementation


def check_targets(rows: list[Row], size: str, device_name: str, device_kind: str) -> list[dict[str, Any]]:
    """Each docs/design.md §7 target with its measured value; judged only at real size on an H100."""
    out = []
    judged = size == "real" and device_kind == "cuda" and TARGET_DEVICE in device_name
    for target in TARGETS:
        row = next(
            (r for r in rows if r.workload == target.workload and r.implementation == target.implementation),
            None,
        )
        value = getattr(row, target.metric) if row is not None else None
        if not judged:
            status = "owed"
        elif row is None:
            status = "not run"
        elif value is None:
            status = "no value"
        else:
            status = "pass" if value >= target.threshold else "fail"
        shape = row.shape if row is not None else ""
        out.append({**asdict(target), "value": value, "status": status, "shape": shape})
    return out


def _tps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _memory(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "n/a"
    if row.implementation == row.ratio_basis:
        return f"{row.ratio:.2f}x (ref)"
    return f"{row.ratio:.2f}x {row.ratio_basis}"


def format_table(report: dict[str, Any]) -> str:
    meta = report["meta"]
    rows = [Row(**r) for r in report["rows"]]
    kind = rows[0].memory_kind if rows else ""
    header = [
        "workload",
        "implementation",
        "tokens/s",
        "MFU",
        f"peak memory ({MEMORY_LABELS.get(kind, kind)})",
        "ratio",
    ]
    body = []
    notes = []
    for row in rows:
        mfu = f"{row.mfu_percent:.1f}%" if row.mfu_percent is not None else "n/a"
        if row.error:
            notes.append(f"  {row.workload} {row.implementation} FAILED: {row.error}")
        name = row.shape or row.workload
        body.append(
            [
                name,
                row.implementation,
                "error" if row.error else _tps(row.tokens_per_second),
                mfu,
                _memory(row.peak_memory_bytes),
                _ratio(row),
            ]
        )
        split = row.extra.get("generation_seconds_per_step")
        if split is not None:
            notes.append(
                f"  {name} {row.implementation}: {split:.3f} s generation + "
                f"{row.extra['update_seconds_per_step']:.3f} s update per step"
            )
        spread = row.extra.get("step_spread")
        if spread is not None and spread > UNSTEADY:
            notes.append(
                f"  UNSTEADY {name} {row.implementation}: slowest timed step {spread:.1f}x the fastest (same "
                "work each step: a busy machine, or a recompile on GPU); do not trust this ratio"
            )
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [
        f"minigpt bench: size {meta['size']} on {meta['device']} ({meta['device_name']}); "
        f"torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}, "
        f"trl {meta['versions']['trl']}",
    ]
    if meta["size"] == "tiny" or meta["device"] != "cuda":
        lines.append("smoke numbers: tiny shapes and/or CPU; not a performance claim")
    sep = "  "
    lines.append(sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append(sep.join("-" * w for w in widths))
    previous = None
    for line in body:
        shown = [line[0] if line[0] != previous else "", *line[1:]]
        previous = line[0]
        aligned = [
            cell.rjust(w) if i in (2, 3) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(shown, widths, strict=True))
        ]
        lines.append(sep.join(aligned).rstrip())
    lines.append("")
    lines.append("tokens/s counts:")
    for workload, name in dict.fromkeys((r.workload, r.shape or r.workload) for r in rows):
        selected = f" (--workloads {workload})" if name != workload else ""
        lines.append(f"  {name}{selected}: {UNITS.get(workload, '')}")
    lines.extend(notes)
    lines.append("")
    lines.append(f"docs/design.md §7 targets (judged at --size real on an {TARGET_DEVICE}):")
    for target in report["targets"]:
        value = target["value"]
        shown = "-" if value is None else (f"{value:,.2f}" if value < 100 else f"{value:,.0f}")
        if target["status"] == "owed":
            ran = f", {target['shape']}" if target.get("shape") and value is not None else ""
            lines.append(f"  [owed] {target['text']} (this run{ran}: {shown}; not judged)")
        else:
            lines.append(f"  [{target['status']}] {target['text']}: measured {shown}")
    return "\n".join(lines)


def build_report(rows: list[Row], meta: dict[str, Any]) -> dict[str, Any]:
    set_ratios(rows)
    targets = check_targets(rows, meta["size"], meta["device_name"], meta["device"])
    return {"meta": meta, "rows": [asdict(r) for r in rows], "targets": targets}
