"""Stages under two CPU processes (gloo), launched the way a user launches them: ``torchrun -m minigpt`` and
``accelerate launch`` with the shipped ``config/accelerate/ddp.yaml``. Each two-process run is compared with a
one-process run of the same global batch (1 × 2b against 2 × b):

(a) the loss curve matches: accelerate shards one seeded sampler's batches over the processes, so step k
    trains on the same samples either way; measured differences are 0 (pretrain) and ≤ 2e-6 absolute (SFT,
    float summation order), checked at a relative 1e-4;
(b) one set of outputs: one metrics.jsonl without repeated steps, one log, one stage.json, one model folder,
    prepared data written once, and the second process writes nothing but its own RNG state in checkpoints;
(c) a two-process run resumes with one process and continues the step count and the loss curve;
(d) token counts are global: train/num_tokens of the two-process run equals the one-process run's;
plus: no sample is trained on twice in an epoch, and GRPO's group statistics span both processes.

About 60 s on a 2-core machine (three launches of two processes, four one-process runs).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_support import read_records, sample_digest
from support import SMALL, write_jsonl
from transformers import AutoTokenizer

from minigpt.metrics import read_metrics
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOSS_RTOL = 1e-4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    args: list[str],
    config: Path,
    record: Path | None = None,
    watch: Path | None = None,
    command: str = "train",
) -> str:
    """Run ``<launcher args> train --config CONFIG`` (or ``run RECIPE``) with two CPU processes; returns the
    output."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key, value in (("MINIGPT_TEST_RECORD", record), ("MINIGPT_TEST_WATCH", watch)):
        if value is not None:
            env[key] = str(value)
    cmd = [*args, "train", "--config", str(config)] if command == "train" else [*args, "run", str(config)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def torchrun(module: str = "minigpt") -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        module,
    ]


def accelerate_ddp(module: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "config/accelerate/ddp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        "-m",
        module,
    ]


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


def base_config(out: Path, tok: Path, stage: str, data: dict, **train) -> dict:
    return {
        "stage": stage,
        "output_dir": str(out),
        "model": {"init": "tiny", "tokenizer": str(tok), "overrides": SMALL},
        "data": {"max_length": 64, **data},
        "train": {"log_interval": 1, "scheduler": "constant", "lr": 3e-3, **train},
    }


def run_here(data: dict) -> dict:
    cfg = StageConfig.model_validate(data)
    return run_stage(cfg, console=False)


def train_records(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def assert_curves_match(two: list[dict], one: list[dict]) -> None:
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=LOSS_RTOL), (a["step"], a, b)
        assert a["train/num_tokens"] == b["train/num_tokens"], a["step"]  # (d) global, exact


def assert_single_outputs(out: Path, stage: str, runs: int = 1) -> None:
    """(b): one log per run (not per process), one metrics file without repeated steps, one summary, one
    model, nothing half-done."""
    assert len(list(out.glob(f"{stage}_training_logs_*.txt"))) == runs
    steps = [r["step"] for r in train_records(out)]
    assert len(steps) == len(set(steps)), steps
    assert json.loads((out / "stage.json").read_text())["status"] == "done"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    leftovers = [
        p.name for p in out.rglob("*") if re.search(r"\.(tmp|del)-|^\.export-|^\.minigpt\.lock$", p.name)
    ]
    assert not leftovers, leftovers


def test_pretrain_two_processes_match_one_and_resume_with_one(tmp_path, tiny_tokenizer_dir):
    from support import synthetic_sentences

    text = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in synthetic_sentences(600, seed=1)])
    data = {"train": [str(text)]}
    two = tmp_path / "two"
    cfg = base_config(two, tiny_tokenizer_dir, "pretrain", data, max_steps=6, batch_size=4, save_interval=3)
    launch(torchrun(), write_config(tmp_path / "two.yaml", cfg))
    ref = tmp_path / "one"
    run_here(base_config(ref, tiny_tokenizer_dir, "pretrain", data, max_steps=10, batch_size=8))
    reference = train_records(ref)
    assert_curves_match(train_records(two), reference[:6])  # (a), (d)
    assert_single_outputs(two, "pretrain")
    ckpt = two / "checkpoints" / "checkpoint-6"
    assert {p.name for p in ckpt.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (
        json.loads((ckpt / "trainer_state.json").read_text())["num_input_tokens_seen"]
        == (reference[5]["train/num_tokens"])
    )  # the checkpoint holds the global count, so a resume with any number of processes continues it

    # (c) one process continues the two-process run (same global batch); rng_state.pth is absent and
    # transformers goes on without it (data order comes from the seeded sampler, not the RNG state).
    resumed = base_config(two, tiny_tokenizer_dir, "pretrain", data, max_steps=10, batch_size=8)
    summary = run_here({**resumed, "resume": True})
    assert summary["global_step"] == 10
    assert_curves_match(train_records(two), reference)
    assert summary["num_tokens"] == reference[-1]["train/num_tokens"]
    assert_single_outputs(two, "pretrain", runs=2)


def unique_conversations(n: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        turns = [
            {"role": "user", "content": f"What is {a} plus {b}? ({i})"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
        rows.append({"conversations": turns})
    return rows


def test_sft_with_accelerate_launch_shards_every_sample_once(tmp_path, tiny_tokenizer_dir):
    from minigpt.data.training.lm_tokens import conversation_ids

    rows = unique_conversations(64)  # 64 = 8 steps × global batch 8: an epoch without a padded last batch
    conv = write_jsonl(tmp_path / "conv.jsonl", rows)
    mixture = {
        "name": "conv",
        "stage": "sft",
        "schema": "conversations",
        "sources": [{"name": "c", "path": str(conv)}],
    }
    mix = write_config(tmp_path / "mix.yaml", mixture)
    two, record = tmp_path / "two", tmp_path / "record"
    record.mkdir()
    data = {"data_config": str(mix)}
    # The two processes also use the fused head + cross-entropy (its head patch inside DDP's forward, its
    # gradients all-reduced like any other): the curves must still match the plain single process.
    cfg = base_config(
        two, tiny_tokenizer_dir, "sft", data, epochs=1, batch_size=4, save_interval=4, loss="chunked"
    )
    launch(accelerate_ddp("distributed_support"), write_config(tmp_path / "two.yaml", cfg), record, two)
    ref = tmp_path / "one"
    run_here(base_config(ref, tiny_tokenizer_dir, "sft", data, epochs=1, batch_size=8))
    assert_curves_match(train_records(two), train_records(ref))  # (a), (d)
    two_acc = [r["train/mean_token_accuracy"] for r in train_records(two)]
    one_acc = [r["train/mean_token_accuracy"] for r in train_records(ref)]
    assert two_acc == pytest.approx(one_acc, abs=1e-6)  # averaged over both processes' tokens
    assert_single_outputs(two, "sft")

    # Every sample once per epoch: the two processes' batches are disjoint and cover the data.
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    expected = {sample_digest(conversation_ids(r["conversations"], tok)[0]) for r in rows}
    assert len(expected) == 64
    seen = read_records(record, "samples")
    assert sorted(seen) == [0, 1]
    per_rank = {rank: [d for batch in batches for d in batch["digests"]] for rank, batches in seen.items()}
    assert all(len(batch["digests"]) == 4 for batches in seen.values() for batch in batches)
    assert not set(per_rank[0]) & set(per_rank[1])
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)) == 64 and set(everything) == expected

    # Prepared data: written once by the main process, only reused (never written) by the other.
    prepare = read_records(record, "prepare")
    assert prepare[0] == [{"reused": False, "reuse_only": False}]
    assert prepare[1] == [{"reused": True, "reuse_only": True}]
    assert sorted(p.name for p in (two / "data").iterdir()) == [
        "sft_conv_manifest.json",
        "sft_conv_train.jsonl",
        "sft_conv_val.jsonl",
    ]
    # The second process writes nothing in the output folder but its share of each checkpoint (its RNG
    # state, inside the staging folder the main process then publishes).
    writes = read_records(record, "writes")
    assert writes[0], "the write probe saw nothing on the main process"
    staged = re.compile(r"^checkpoints/checkpoint-\d+\.tmp-\d+/checkpoint-\d+(/rng_state_1\.pth)?$")
    assert all(staged.match(w["path"]) for w in writes.get(1, [])), writes[1]


def test_grpo_two_processes_complete_groups_and_global_tokens(tmp_path, tiny_tokenizer_dir):
    prompts = [
        {"prompt": [{"role": "user", "content": f"Count to {i % 7}"}], "tag": str(i)} for i in range(32)
    ]
    data = {"train": [str(write_jsonl(tmp_path / "prompts.jsonl", prompts))]}
    algo = {
        "rewards": ["distributed_support:tag_reward", "distributed_support:rank_reward"],
        "num_generations": 4,
        "max_completion_length": 6,
    }
    two, record_two = tmp_path / "two", tmp_path / "record_two"
    record_two.mkdir()
    # 2 completions per process and step: each prompt's group of 4 is split over the two processes.
    cfg = {**base_config(two, tiny_tokenizer_dir, "grpo", data, max_steps=4, batch_size=2), "algo": algo}
    launch(torchrun(), write_config(tmp_path / "two.yaml", cfg), record_two)
    ref, record_one = tmp_path / "one", tmp_path / "record_one"
    record_one.mkdir()
    os.environ["MINIGPT_TEST_RECORD"] = str(record_one)
    try:
        run_here(
            {**base_config(ref, tiny_tokenizer_dir, "grpo", data, max_steps=4, batch_size=4), "algo": algo}
        )
    finally:
        del os.environ["MINIGPT_TEST_RECORD"]
    two_rec, one_rec = train_records(two), train_records(ref)
    assert [r["step"] for r in two_rec] == [1, 2, 3, 4]
    # The same prompts in the same order (tag_reward depends on the prompt only).
    assert [r["train/reward/tag_reward"] for r in two_rec] == [r["train/reward/tag_reward"] for r in one_rec]
    # Group statistics over complete groups: rewards [0, 0, 1, 1] from the two processes → std 0.577.
    for r in two_rec:
        assert r["train/reward_std"] == pytest.approx((1 / 3) ** 0.5, abs=1e-4), r
        assert r["train/frac_reward_zero_std"] == 0.0
        assert r["train/generation_seconds"] > 0 and r["train/update_seconds"] > 0
        assert r["train/tokens_per_second"] > 0
    assert all(r["train/reward_std"] == 0.0 for r in one_rec)  # one process: rank_reward is always 0
    # (d) global token counts: both runs see the same prompts, so prompt tokens (num_tokens minus the
    # completion tokens every process recorded) agree, and the two-process count includes both processes.
    completions_two = read_records(record_two, "completions")
    assert sorted(completions_two) == [0, 1]
    two_completion_tokens = sum(sum(c["lengths"]) for recs in completions_two.values() for c in recs)
    one_completion_tokens = sum(sum(c["lengths"]) for c in read_records(record_one, "completions")[0])
    prompt_two = two_rec[-1]["train/num_tokens"] - two_completion_tokens
    prompt_one = one_rec[-1]["train/num_tokens"] - one_completion_tokens
    assert prompt_two == prompt_one > 0
    assert_single_outputs(two, "grpo")
    assert json.loads((two / "stage.json").read_text())["num_tokens"] == two_rec[-1]["train/num_tokens"]


def test_recipe_under_torchrun_runs_each_stage_once_on_both_processes(tmp_path, lm_data):
    """``minigpt run`` launched on two processes: the main process alone trains the tokenizer, writes the
    manifest and the report; both train every stage, the second starting only once the first is exported."""
    import yaml

    run_dir, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    recipe = {
        "name": "t",
        "output_dir": str(run_dir),
        "defaults": {
            "model": {"overrides": SMALL},
            "train": {"batch_size": 4, "lr": 3e-3, "log_interval": 2},
        },
        "stages": [
            {
                "name": "tokenizer",
                "kind": "tokenizer",
                "config": {"files": [str(lm_data["text"]), str(lm_data["conv"])], "vocab_size": 400},
            },
            {
                "name": "pretrain",
                "config": {
                    "stage": "pretrain",
                    "model": {"init": "tiny"},
                    "data": {"train": [str(lm_data["text"])], "max_length": 64},
                    "train": {"max_steps": 4},
                },
            },
            {
                "name": "sft",
                "config": {
                    "stage": "sft",
                    "data": {"train": [str(lm_data["conv"])], "max_length": 64},
                    "train": {"max_steps": 4, "save_interval": 2},
                },
            },
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    output = launch(torchrun("distributed_support"), path, record, run_dir, command="run")
    assert output.count("tokenizer    run") == 1 and output.count("report: ") == 1  # printed once
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"].values()] == ["done"] * 3
    for stage in ("pretrain", "sft"):
        assert_single_outputs(run_dir / stage, stage)
        assert json.loads((run_dir / stage / "stage.json").read_text())["global_step"] == 4
    assert (run_dir / "report.md").is_file()
    # every stage checkpoints its last step (pretrain too, before its export): rank 1 writes only there
    staged = re.compile(
        r"^(pretrain|sft)/checkpoints/checkpoint-\d+\.tmp-\d+/checkpoint-\d+(/rng_state_1\.pth)?$"
    )
    assert all(staged.match(w["path"]) for w in read_records(record, "writes").get(1, []))
