"""GRPO workloads: one GRPO step (the project's stage against TRL's GRPOTrainer with its defaults) and a
decode micro-benchmark (plain ``generate``).

A GRPO step's tokens/s counts completion tokens (EOS included, padding not) over the whole step, generation
and update together. Both implementations score completions with :func:`bench_reward`, which also records
when scoring starts: "generation" is step start → scoring (sampling plus any log-prob passes before it),
"update" is scoring → step end (rewards, advantages, forward/backward, optimizer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from minigpt.perf.context import BenchContext
from minigpt.perf.measure import Device, Row, clock
from minigpt.perf.spec import DecodeShape, GRPOShape
from minigpt.perf.synth import SynthTokenizer, prompt_ids, prompts, write_jsonl

PROJECT_GRPO = "project-grpo"
TRL_GRPO = "trl-grpo"
_REWARD_CALLS: list[tuple[float, int]] = []
"""(time scoring started, completion tokens scored) per reward call, in call order."""


def bench_reward(completions: list[Any], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """A cheap reward with some spread (so advantages are not all zero): completion length modulo 7. It
    records the completion tokens of each call; the trainers hand it ids with padding removed."""
    if torch.cuda.is_available():  # the ids are already on the CPU; this only pins the timestamp down
        torch.cuda.synchronize()
    _REWARD_CALLS.append((time.perf_counter(), sum(len(ids) for ids in completion_ids)))
    return [float(len(ids) % 7) for ids in completion_ids]


class StepSplits(TrainerCallback):
    """Synchronised start and end of every optimizer step (a GRPO step synchronises many times anyway)."""

    def __init__(self, device: Device):
        self.device = device
        self.begin: list[float] = []
        self.end: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin.append(clock(self.device))

    def on_step_end(self, args, state, control, **kwargs):
        self.end.append(clock(self.device))


def _grpo_row(
    ctx: BenchContext, implementation: str, shape: GRPOShape, splits: StepSplits, probe: Any, settings: dict
) -> Row:
    first, stop = shape.warmup, shape.total_steps
    calls = list(_REWARD_CALLS)
    if len(calls) != stop or len(splits.end) != stop:
        raise RuntimeError(
            f"{implementation}: expected one generation per step over {stop} steps, saw {len(calls)} "
            f"reward calls and {len(splits.end)} steps"
        )
    window = splits.end[stop - 1] - (splits.end[first - 1] if first else splits.begin[0])
    tokens = sum(n for _, n in calls[first:stop])
    generation = [calls[i][0] - splits.begin[i] for i in range(first, stop)]
    update = [splits.end[i] - calls[i][0] for i in range(first, stop)]
    steps = [splits.end[i] - splits.begin[i] for i in range(first, stop)]
    return Row(
        workload="grpo-step",
        implementation=implementation,
        tokens_per_second=tokens / window,
        tokens=tokens,
        seconds=window,
        warmup_steps=shape.warmup,
        timed_steps=shape.steps,
        peak_memory_bytes=probe.peak_bytes(),
        memory_kind=probe.kind,
        mfu_note="n/a: GRPO step mixes decoding and training",
        settings=settings,
        extra={
            "generation_seconds_per_step": sum(generation) / len(generation),
            "update_seconds_per_step": sum(update) / len(update),
            "completions_per_step": shape.prompts * shape.generations,
            "step_seconds": steps,
            # Every timed step does the same work: a spread well above 1 means the machine, not the code,
            # set the figure (see perf_table.UNSTEADY).
            "step_spread": max(steps) / min(steps),
        },
    )


def project_grpo(ctx: BenchContext, shape: GRPOShape, tok: SynthTokenizer, data_path: Path) -> Row:
    # The project's default log interval, as TRL keeps its own: a log (metrics, run log line) every step
    # would be work in the timed window that TRL's side, logging every 10 steps, does not do.
    train = {"max_steps": shape.total_steps, "batch_size": shape.prompts * shape.generations}
    algo = {
        "rewards": [f"{__name__}:bench_reward"],
        "num_generations": shape.generations,
        "max_completion_length": shape.completion,
    }
    if ctx.device.kind == "cuda":
        # A static KV cache, so transformers compiles the decoding step (the warm-up step pays the compile).
        # The bench's prompts all have one length, so the cache has one size without max_prompt_length. On
        # a CPU nothing is compiled and static is no faster: the stage's default (dynamic) stays.
        algo["cache_implementation"] = "static"
    cfg = {
        "stage": "grpo",
        "output_dir": str(ctx.work_dir / "grpo-step-project"),
        "model": {"init": shape.preset, "tokenizer": str(tok.path), "overrides": dict(shape.overrides)},
        "data": {"train": [str(data_path)], "max_length": shape.prompt_words + 8 + shape.completion},
        "train": train,
        "algo": algo,
    }
    splits = StepSplits(ctx.device)
    ctx.note(f"grpo-step: {PROJECT_GRPO} (minigpt.runner.run_stage, stage grpo)")
    _REWARD_CALLS.clear()
    probe = ctx.probe()
    ctx.run_project(cfg, [splits])
    settings = {"path": "minigpt.runner.run_stage", "stage": "grpo", "train": train, "algo": algo}
    row = _grpo_row(ctx, PROJECT_GRPO, shape, splits, probe, settings)
    ctx.release()
    return row


def trl_grpo(ctx: BenchContext, shape: GRPOShape, tok: SynthTokenizer, rows: list[dict]) -> Row:
    """TRL's GRPOTrainer with GRPOConfig defaults except the step's shape (prompts × generations, completion
    length) and what a CPU requires."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    changed: dict[str, Any] = {
        "max_steps": shape.total_steps,
        # TRL's batch counts completions: prompts × generations per step, one generation per step
        "per_device_train_batch_size": shape.prompts * shape.generations,
        "num_generations": shape.generations,
        "max_completion_length": shape.completion,
        "report_to": "none",
    }
    if ctx.device.kind == "cpu":
        changed.update({"use_cpu": True, "bf16": False})
    tokenizer = tok.load()
    ctx.note(f"grpo-step: {TRL_GRPO} (trl.GRPOTrainer, GRPOConfig defaults)")
    _REWARD_CALLS.clear()
    probe = ctx.probe()
    model = ctx.fresh_model(shape.preset, shape.overrides, tok, tokenizer)
    splits = StepSplits(ctx.device)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[bench_reward],
        args=GRPOConfig(output_dir=str(ctx.work_dir / "grpo-step-trl"), **changed),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[splits],
    )
    trainer.train()
    args = trainer.args
    settings = {
        "path": "trl.GRPOTrainer",
        "changed_from_defaults": {**changed, "output_dir": "<work dir>"},
        "kept_defaults": {
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16,
            "beta": args.beta,
            "loss_type": args.loss_type,
            "use_vllm": args.use_vllm,
            "cache_implementation": args.cache_implementation,
            "learning_rate": args.learning_rate,
        },
    }
    row = _grpo_row(ctx, TRL_GRPO, shape, splits, probe, settings)
    del trainer, model
    ctx.release()
    return row


def run_grpo_step(ctx: BenchContext, workload: str, shape: GRPOShape) -> list[Row]:
    tok = ctx.tokenizer(shape.preset, shape.overrides)
    rows = prompts(ctx.rng(2), tok, shape.prompts * shape.total_steps, shape.prompt_words)
    path = write_jsonl(ctx.work_dir / "grpo-prompts.jsonl", rows)
    return [
        ctx.attempt(workload, PROJECT_GRPO, project_grpo, ctx, shape, tok, path),
        ctx.attempt(workload, TRL_GRPO, trl_grpo, ctx, shape, tok, rows),
    ]


def decode_name(n_seq: int, cache: str) -> str:
    """``generate-<n>seq`` (dynamic KV cache) or ``generate-<n>seq-static``."""
    return f"generate-{n_seq}seq" + ("-static" if cache == "static" else "")


_CACHE_NOTES = {
    "dynamic": "dynamic (transformers default)",
    "static": "static (preallocated; decoding step compiled by transformers on GPU, not on CPU)",
}


def decode_once(
    ctx: BenchContext,
    workload: str,
    shape: DecodeShape,
    tok: SynthTokenizer,
    n_seq: int,
    cache: str = "dynamic",
) -> Row:
    """``model.generate`` with sampling on ``n_seq`` prompts, every sequence forced to ``new_tokens``
    (min_new_tokens), bf16 weights on GPU; tokens/s counts generated tokens only. ``cache``: ``dynamic`` or
    ``static`` (on GPU transformers compiles the decoding step; the untimed warm-up calls pay the compile)."""
    dev = ctx.device.torch_device
    name = decode_name(n_seq, cache)
    ctx.note(f"{workload}: {name} (model.generate, {cache} KV cache)")
    probe = ctx.probe()
    model = ctx.fresh_model(shape.preset, shape.overrides, tok, tok.load()).to(dev)
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    model.eval()
    ids = torch.tensor(prompt_ids(ctx.rng(3), tok, n_seq, shape.prompt_len), device=dev)
    kwargs = {
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": shape.new_tokens,
        "min_new_tokens": shape.new_tokens,
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "pad_token_id": tok.pad_id,
        "eos_token_id": tok.eos_id,
    }
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    with torch.inference_mode():
        for _ in range(shape.warmup):
            model.generate(ids, **kwargs)
        start = clock(ctx.device)
        for _ in range(shape.steps):
            model.generate(ids, **kwargs)
        seconds = clock(ctx.device) - start
    tokens = n_seq * shape.new_tokens * shape.steps
    row = Row(
        workload=workload,
        implementation=name,
        tokens_per_second=tokens / seconds,
        tokens=tokens,
        seconds=seconds,
        warmup_steps=shape.warmup,
        timed_steps=shape.steps,
        peak_memory_bytes=probe.peak_bytes(),
        memory_kind=probe.kind,
        mfu_note="n/a: decoding, not training",
        settings={
            "sequences": n_seq,
            "prompt_tokens": shape.prompt_len,
            "new_tokens": shape.new_tokens,
            "dtype": "bfloat16" if dev.type == "cuda" else "float32",
            "cache": _CACHE_NOTES[cache],
            "sampling": "temperature 1.0, top_k 0, top_p 1.0",
        },
    )
    del model
    ctx.release()
    return row


def run_decode(ctx: BenchContext, workload: str, shape: DecodeShape) -> list[Row]:
    tok = ctx.tokenizer(shape.preset, shape.overrides)
    return [
        ctx.attempt(workload, decode_name(n, cache), decode_once, ctx, workload, shape, tok, n, cache)
        for n in shape.sequences
        for cache in ("dynamic", "static")
    ]
