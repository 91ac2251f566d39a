"""``minigpt bench`` at tiny sizes on the CPU: every workload × implementation row is printed and written to
JSON with tokens/s > 0, a ratio, peak memory, and MFU as n/a (never a number on CPU); token accounting is
exact; TRL's changes from its defaults are recorded; targets are "owed" off an H100. Plus the pieces that
only matter on a GPU (MFU, target judging, error rows), checked with made-up figures."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch

from minigpt.cli import main
from minigpt.errors import ConfigError
from minigpt.perf.measure import Device, Row, TokenCounter, mfu
from minigpt.perf.perf_table import build_report, check_targets, format_table
from minigpt.perf.spec import SIZES, WORKLOADS, GRPOShape, LMShape, parse_workloads, shape_for, shape_label

EXPECTED = {
    "pretrain-26m": ["project", "trl-sft", "plain-eager"],
    "pretrain-100m": ["project", "trl-sft", "plain-eager"],
    "sft-packed": ["project-sft-packed", "project-pretrain"],
    "grpo-step": ["project-grpo", "trl-grpo"],
    "decode": ["generate-4seq", "generate-4seq-static", "generate-16seq", "generate-16seq-static"],
}
_RATIO = re.compile(r"^\d+\.\d\dx ")
LABELS = {w: shape_label(w, shape_for(w, "tiny")) for w in WORKLOADS}
"""The printed name of each workload at tiny size."""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny run of every workload: (exit code, printed text, JSON report)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is two shared cores
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["bench", "--size", "tiny", "--output", str(out), "--quiet"])
    finally:
        torch.set_num_threads(previous)
    return code, buffer.getvalue(), json.loads(out.read_text(encoding="utf-8"))


def _table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(workload, implementation) → cells of the printed table (a blank workload cell repeats the last)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-----")) + 1
    rows, workload = {}, ""
    for line in lines[start:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        if not line.startswith(" "):
            workload, cells = cells[0], cells[1:]
        rows[(workload, cells[0])] = cells[1:]
    return rows


@pytest.mark.slow
def test_every_row_is_printed_with_its_figures(bench):
    code, text, _ = bench
    assert code == 0, text
    table = _table_rows(text)
    expected = {(LABELS[w], impl) for w, impls in EXPECTED.items() for impl in impls}
    assert set(table) == expected
    for key, (tps, mfu_cell, memory, ratio) in table.items():
        assert float(tps.replace(",", "")) > 0, key
        assert mfu_cell == "n/a", key  # CPU: never a number
        assert re.fullmatch(r"\d+(\.\d+)? (MiB|GiB)", memory), key
        assert _RATIO.match(ratio), key
    assert "peak memory (process peak RSS)" in text
    assert "not a performance claim" in text
    assert "generation +" in text and "update per step" in text  # GRPO split printed
    assert text.count("[owed]") == 6


@pytest.mark.slow
def test_json_has_the_same_figures(bench):
    _, _, report = bench
    rows = {(r["workload"], r["implementation"]): r for r in report["rows"]}
    assert set(rows) == {(w, impl) for w, impls in EXPECTED.items() for impl in impls}
    for key, row in rows.items():
        assert row["error"] is None, key
        assert row["tokens_per_second"] > 0 and row["seconds"] > 0, key
        assert row["mfu_percent"] is None and "n/a" in row["mfu_note"], key
        assert row["ratio"] is not None and row["ratio_basis"], key
        assert row["peak_memory_bytes"] > 0 and row["memory_kind"] == "process_rss_peak", key
    meta = report["meta"]
    assert meta["size"] == "tiny" and meta["device"] == "cpu" and meta["peak_flops"] is None
    assert meta["command"].startswith("minigpt bench --size tiny --output ")
    assert {"torch", "transformers", "trl"} <= set(meta["versions"]) and meta["date"]
    assert [t["status"] for t in report["targets"]] == ["owed"] * 6


@pytest.mark.slow
def test_token_accounting_is_exact(bench):
    _, _, report = bench
    rows = {(r["workload"], r["implementation"]): r for r in report["rows"]}
    for workload in ("pretrain-26m", "pretrain-100m"):
        shape = shape_for(workload, "tiny")
        for impl in EXPECTED[workload]:  # every block full: the same tokens for every implementation
            assert rows[(workload, impl)]["tokens"] == shape.steps * shape.batch * shape.seq
    sft = shape_for("sft-packed", "tiny")
    full = sft.steps * sft.batch * sft.seq
    assert rows[("sft-packed", "project-pretrain")]["tokens"] == full
    assert 0 < rows[("sft-packed", "project-sft-packed")]["tokens"] < full  # packing padding not counted
    grpo = shape_for("grpo-step", "tiny")
    for impl in EXPECTED["grpo-step"]:
        row = rows[("grpo-step", impl)]
        assert 0 < row["tokens"] <= grpo.steps * grpo.prompts * grpo.generations * grpo.completion
        assert row["extra"]["generation_seconds_per_step"] > 0 and row["extra"]["update_seconds_per_step"] > 0
        steps = row["extra"]["step_seconds"]
        assert len(steps) == grpo.steps and sum(steps) <= row["seconds"]  # the window adds the gaps
        assert row["extra"]["step_spread"] == pytest.approx(max(steps) / min(steps))
    decode = shape_for("decode", "tiny")
    for impl in ("generate-16seq", "generate-16seq-static"):
        assert rows[("decode", impl)]["tokens"] == 16 * decode.new_tokens * decode.steps
    assert rows[("decode", "generate-16seq-static")]["settings"]["cache"].startswith("static")
    assert rows[("decode", "generate-4seq-static")]["ratio_basis"] == "generate-4seq"  # the dynamic row


@pytest.mark.slow
def test_trl_baselines_record_what_was_changed(bench):
    _, _, report = bench
    rows = {(r["workload"], r["implementation"]): r for r in report["rows"]}
    sft = rows[("pretrain-26m", "trl-sft")]["settings"]
    assert sft["changed_from_defaults"]["use_cpu"] is True and sft["changed_from_defaults"]["bf16"] is False
    assert sft["kept_defaults"]["gradient_checkpointing"] is True  # TRL's default, kept
    grpo = rows[("grpo-step", "trl-grpo")]["settings"]
    assert grpo["changed_from_defaults"]["per_device_train_batch_size"] == 8
    assert rows[("pretrain-26m", "project")]["settings"]["path"] == "minigpt.runner.run_stage"
    # On a CPU the project's GRPO row keeps the dynamic KV cache (the static one is compiled on GPU only).
    assert "cache_implementation" not in rows[("grpo-step", "project-grpo")]["settings"]["algo"]
    # Both GRPO sides log at their own defaults: no per-step log in the project's timed window only.
    assert "log_interval" not in rows[("grpo-step", "project-grpo")]["settings"]["train"]
    assert "logging_steps" not in grpo["changed_from_defaults"]


@pytest.mark.slow
def test_rows_are_printed_under_the_shapes_they_ran(bench):
    _, text, report = bench
    table = _table_rows(text)
    printed = {workload for workload, _ in table}
    assert printed == set(LABELS.values())
    for name in printed:  # the tiny preset cut to 2 layers, whatever the workload's id says
        assert "L2 d128 v1024" in name and "26m" not in name and "100m" not in name, name
    assert "pretrain L2 d128 v1024 seq64 b4" in printed and "pretrain L2 d128 v1024 seq128 b2" in printed
    assert "grpo-step L2 d128 v1024 2px4g prompt8 compl16" in printed
    for row in report["rows"]:  # the JSON keeps the id (what --workloads selects) and the shape run
        assert row["shape"] == LABELS[row["workload"]]
        assert report["meta"]["shapes"][row["workload"]]["label"] == row["shape"]
    assert "pretrain L2 d128 v1024 seq64 b4 (--workloads pretrain-26m):" in text
    assert "(this run, pretrain L2 d128 v1024 seq64 b4: " in text  # a target's tiny figure names its shape


def test_shape_labels_name_layers_hidden_vocab_and_sizes():
    real = {w: shape_label(w, shape_for(w, "real")) for w in WORKLOADS}
    assert real["pretrain-26m"] == "pretrain L8 d512 v6400 seq512 b64"
    assert real["pretrain-100m"] == "pretrain L12 d768 v32768 seq1024 b32"
    assert real["sft-packed"] == "sft-packed L8 d512 v6400 seq512 b64"
    assert real["grpo-step"] == "grpo-step L8 d512 v6400 8px8g prompt32 compl256"
    assert real["decode"] == "decode L8 d512 v6400 prompt32 new256"
    for size in SIZES:  # one printed name per workload
        names = [shape_label(w, shape_for(w, size)) for w in WORKLOADS]
        assert len(set(names)) == len(names), size
    # the label follows the model actually built (overrides), not the preset's name
    grown = LMShape("tiny", seq=32, batch=2, warmup=0, steps=1, overrides={"num_hidden_layers": 3})
    assert shape_label("pretrain-100m", grown) == "pretrain L3 d128 v1024 seq32 b2"


def test_unsteady_grpo_rows_are_flagged():
    def grpo(impl: str, steps: list[float]) -> Row:
        extra = {
            "generation_seconds_per_step": 0.1,
            "update_seconds_per_step": 0.1,
            "step_seconds": steps,
            "step_spread": max(steps) / min(steps),
        }
        return _row(
            "grpo-step", impl, 100.0, extra=extra, shape="grpo-step L2 d128 v1024 2px4g prompt8 compl16"
        )

    meta = {
        "size": "tiny",
        "device": "cpu",
        "device_name": "cpu",
        "versions": dict.fromkeys(("torch", "transformers", "trl"), "v"),
    }
    report = build_report([grpo("project-grpo", [0.2, 0.2, 0.21]), grpo("trl-grpo", [0.2, 1.5, 0.2])], meta)
    text = format_table(report)
    flagged = [line for line in text.splitlines() if "UNSTEADY" in line]
    assert len(flagged) == 1 and "trl-grpo" in flagged[0] and "7.5x the fastest" in flagged[0]


def test_cpu_bench_defaults_to_one_thread(monkeypatch):
    import minigpt.perf.harness as harness

    seen = []

    def fake_run_bench(**kwargs):
        seen.append(torch.get_num_threads())
        meta = {
            "size": "tiny",
            "device": "cpu",
            "device_name": "cpu",
            "versions": dict.fromkeys(("torch", "transformers", "trl"), "v"),
        }
        return build_report([], meta)

    monkeypatch.setattr(harness, "run_bench", fake_run_bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["bench", "--workloads", "decode"]) == 0
            assert main(["bench", "--workloads", "decode", "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(previous)
    assert seen == [1, 2]


def test_real_shapes_are_the_design_shapes():
    assert shape_for("pretrain-26m", "real") == LMShape("minimind-26m", seq=512, batch=64, warmup=5, steps=20)
    assert shape_for("pretrain-100m", "real") == LMShape("base-100m", seq=1024, batch=32, warmup=5, steps=20)
    grpo = shape_for("grpo-step", "real")
    assert isinstance(grpo, GRPOShape) and (grpo.prompts, grpo.generations, grpo.completion) == (8, 8, 256)
    assert shape_for("decode", "real").sequences == (64, 512)
    assert shape_for("pretrain-26m", "real", steps=7, warmup=2).steps == 7


def test_unknown_workload_is_named(capsys):
    with pytest.raises(ConfigError, match="Did you mean 'grpo-step'"):
        parse_workloads("pretrain-26m,grpo-stp")
    assert parse_workloads(None) == list(WORKLOADS)
    assert main(["bench", "--workloads", "nope"]) == 2
    assert "unknown workload 'nope'" in capsys.readouterr().err


def _row(workload: str, impl: str, tps: float, **kw) -> Row:
    return Row(workload, impl, tps, 1000, 1.0, 5, 20, 2**31, "cuda_max_allocated", **kw)


def test_gpu_report_shows_mfu_and_judges_targets():
    h100 = Device("cuda", "NVIDIA H100 80GB HBM3", 989e12)
    value, note = mfu(h100, 1.5e6, 1.9e8)
    assert value == pytest.approx(100 * 1.5e6 * 1.9e8 / 989e12) and note == ""
    assert mfu(Device("cpu", "x", None), 1e6, 1e8)[0] is None
    rows = [
        _row("pretrain-26m", "project", 1.6e6, mfu_percent=30.0),
        _row("pretrain-26m", "trl-sft", 0.31e6, mfu_percent=5.6),
        _row("pretrain-100m", "project", 0.5e6, mfu_percent=40.0),
        _row("pretrain-100m", "trl-sft", 0.0, error="RuntimeError: boom"),
    ]
    meta = {
        "size": "real",
        "device": "cuda",
        "device_name": h100.name,
        "versions": {"torch": "t", "transformers": "x", "trl": "y"},
    }
    report = build_report(rows, meta)
    status = {t["text"]: t["status"] for t in report["targets"]}
    assert status["26M preset pretraining >= 1.5M tokens/s"] == "pass"
    assert status["26M preset pretraining >= 4.5x TRL SFTTrainer defaults"] == "pass"  # 5.16x
    assert status["100M preset pretraining >= 45% MFU"] == "fail"
    assert status["decode >= 100K tokens/s at 512 sequences (26M preset)"] == "not run"
    text = format_table(report)
    assert "30.0%" in text and "error" in text and "RuntimeError: boom" in text
    assert "smoke numbers" not in text
    # a failed baseline leaves its workload without a ratio rather than with a made-up one
    assert report["rows"][2]["ratio"] is None
    off = check_targets(rows, "real", "NVIDIA A100-SXM4-80GB", "cuda")
    assert {t["status"] for t in off} == {"owed"}


def test_token_counter_counts_features_in_order():
    counter = TokenCounter()
    collate = counter.wrap(lambda features: len(features))
    collate([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    collate([{"input_ids": [5, 6]}])
    assert counter.per_batch == [4, 2] and counter.window(1, 2) == 2
    with pytest.raises(RuntimeError):
        counter.window(0, 3)
