"""Language-model workloads: pretraining (project stage, TRL SFTTrainer defaults, plain eager loop) and
packed SFT against pretraining on the same model.

tokens/s counts non-padding input tokens in the timed steps. Pretraining data fills every block, so each
step of each implementation is ``batch × seq`` tokens; packed SFT blocks are shorter than ``seq`` where the
next conversation does not fit, and that padding is not counted.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from minigpt.perf.context import BenchContext, logged_throughput
from minigpt.perf.measure import Row, TokenCounter, WindowClock, clock, mfu
from minigpt.perf.spec import LMShape
from minigpt.perf.synth import SynthTokenizer, as_text, conversations, pack_docs, pretrain_docs, write_jsonl

PROJECT = "project"
TRL_SFT = "trl-sft"
PLAIN = "plain-eager"
PROJECT_SFT = "project-sft-packed"
PROJECT_PRETRAIN = "project-pretrain"


def _row(
    ctx: BenchContext,
    workload: str,
    implementation: str,
    shape: LMShape,
    tokens: int,
    seconds: float,
    probe: Any,
    flops_token: float,
    settings: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Row:
    tps = tokens / seconds
    value, note = mfu(ctx.device, tps, flops_token)
    return Row(
        workload=workload,
        implementation=implementation,
        tokens_per_second=tps,
        tokens=tokens,
        seconds=seconds,
        warmup_steps=shape.warmup,
        timed_steps=shape.steps,
        peak_memory_bytes=probe.peak_bytes(),
        memory_kind=probe.kind,
        mfu_percent=value,
        mfu_note=note,
        settings=settings,
        extra=extra or {},
    )


def project_stage(
    ctx: BenchContext,
    workload: str,
    implementation: str,
    shape: LMShape,
    tok: SynthTokenizer,
    stage: str,
    data_path: Path,
    flops_token: float,
) -> Row:
    """The project's stage through the shared runner (``minigpt train`` with this config)."""
    compile_ = ctx.compile_project and ctx.device.kind == "cuda"
    train = {
        "max_steps": shape.total_steps,
        "batch_size": shape.batch,
        "warmup_steps": 0,
        "compile": compile_,
        "loss": ctx.project_loss,
    }
    cfg = {
        "stage": stage,
        "output_dir": str(ctx.work_dir / f"{workload}-{implementation}"),
        "model": {"init": shape.preset, "tokenizer": str(tok.path), "overrides": dict(shape.overrides)},
        "data": {"train": [str(data_path)], "max_length": shape.seq, "packing": True},
        "train": train,
    }
    counter = TokenCounter()
    timer = WindowClock(ctx.device, shape.warmup, shape.steps, counter)
    ctx.note(f"{workload}: {implementation} (minigpt.runner.run_stage, stage {stage})")
    probe = ctx.probe()
    out = ctx.run_project(cfg, [timer])
    tokens = counter.window(shape.warmup, shape.total_steps)
    settings = {
        "path": "minigpt.runner.run_stage",
        "stage": stage,
        "data.packing": True,
        "train": train,
        "precision": "auto (bf16 on GPU, fp32 on CPU)",
        "optim": "auto (adamw_torch_fused on GPU, adamw_torch on CPU)",
    }
    extra = {"runner_logged_tokens_per_second": logged_throughput(out, shape.warmup, shape.total_steps)}
    row = _row(
        ctx, workload, implementation, shape, tokens, timer.seconds(), probe, flops_token, settings, extra
    )
    ctx.release()
    return row


def trl_sft(
    ctx: BenchContext,
    workload: str,
    shape: LMShape,
    tok: SynthTokenizer,
    blocks: list[list[int]],
    flops: float,
) -> Row:
    """TRL's SFTTrainer with SFTConfig defaults, changed only where it must be to run here."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    changed: dict[str, Any] = {
        "max_steps": shape.total_steps,
        "per_device_train_batch_size": shape.batch,
        "max_length": shape.seq,
        "report_to": "none",
    }
    if ctx.device.kind == "cpu":  # SFTConfig defaults to bf16, which it refuses on a CPU
        changed.update({"use_cpu": True, "bf16": False})
    tokenizer = tok.load()
    ctx.note(f"{workload}: {TRL_SFT} (trl.SFTTrainer, SFTConfig defaults)")
    probe = ctx.probe()
    model = ctx.fresh_model(shape.preset, shape.overrides, tok, tokenizer)
    counter = TokenCounter()
    timer = WindowClock(ctx.device, shape.warmup, shape.steps)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(ctx.work_dir / f"{workload}-trl"), **changed),
        train_dataset=Dataset.from_dict({"input_ids": blocks}),  # pre-tokenized: TRL only truncates
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.data_collator = counter.wrap(trainer.data_collator)
    trainer.train()
    args = trainer.args
    settings = {
        "path": "trl.SFTTrainer",
        "changed_from_defaults": {**changed, "output_dir": "<work dir>"},
        "kept_defaults": {
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16,
            "optim": str(getattr(args.optim, "value", args.optim)),
            "packing": args.packing,
            "padding_free": args.padding_free,
            "logging_steps": args.logging_steps,
        },
        "data": "the project's packed blocks as input_ids (no position_ids: attention crosses documents)",
    }
    tokens = counter.window(shape.warmup, shape.total_steps)
    row = _row(ctx, workload, TRL_SFT, shape, tokens, timer.seconds(), probe, flops, settings)
    del trainer, model
    ctx.release()
    return row


def plain_eager(
    ctx: BenchContext,
    workload: str,
    shape: LMShape,
    tok: SynthTokenizer,
    blocks: list[list[int]],
    flops: float,
) -> Row:
    """A MiniMind-style loop: bf16 autocast on GPU, AdamW, clip 1.0, no compile, no Trainer."""
    dev = ctx.device.torch_device
    ctx.note(f"{workload}: {PLAIN} (plain PyTorch loop, eager)")
    probe = ctx.probe()
    model = ctx.fresh_model(shape.preset, shape.overrides, tok, tok.load()).to(dev)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    data = torch.tensor(blocks, dtype=torch.long)
    if dev.type == "cuda":
        data = data.pin_memory()
    start = 0.0
    for step in range(shape.total_steps):
        if step == shape.warmup:
            start = clock(ctx.device)
        batch = data[step * shape.batch : (step + 1) * shape.batch].to(dev, non_blocking=True)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = clock(ctx.device) - start
    settings = {
        "path": "plain loop",
        "precision": "bf16 autocast" if dev.type == "cuda" else "fp32",
        "optimizer": "torch.optim.AdamW (default foreach), lr 3e-4, clip 1.0",
        "compile": False,
    }
    tokens = shape.steps * shape.batch * shape.seq
    row = _row(ctx, workload, PLAIN, shape, tokens, seconds, probe, flops, settings)
    del model, optimizer
    ctx.release()
    return row


def pretrain_data(ctx: BenchContext, shape: LMShape, tok: SynthTokenizer, name: str):
    """(JSONL of text documents for the project, the same tokens as packed blocks for the baselines)."""
    n_blocks = shape.batch * shape.total_steps  # one epoch is exactly the run: no short tail block
    docs = pretrain_docs(ctx.rng(), tok, n_blocks, shape.seq)
    path = write_jsonl(ctx.work_dir / f"{name}.jsonl", [{"text": as_text(d)} for d in docs])
    blocks = pack_docs(docs, tok, shape.seq)
    if len(blocks) != n_blocks or any(len(b) != shape.seq for b in blocks):
        raise RuntimeError(f"synthetic pretraining data: expected {n_blocks} full blocks of {shape.seq}")
    return path, blocks


def run_pretrain(ctx: BenchContext, workload: str, shape: LMShape) -> list[Row]:
    tok = ctx.tokenizer(shape.preset, shape.overrides)
    flops = ctx.flops_per_token(shape.preset, shape.overrides, tok, shape.seq)
    path, blocks = pretrain_data(ctx, shape, tok, f"{workload}-text")
    return [
        ctx.attempt(
            workload, PROJECT, project_stage, ctx, workload, PROJECT, shape, tok, "pretrain", path, flops
        ),
        ctx.attempt(workload, TRL_SFT, trl_sft, ctx, workload, shape, tok, blocks, flops),
        ctx.attempt(workload, PLAIN, plain_eager, ctx, workload, shape, tok, blocks, flops),
    ]


def run_sft_packed(ctx: BenchContext, workload: str, shape: LMShape) -> list[Row]:
    tok = ctx.tokenizer(shape.preset, shape.overrides)
    flops = ctx.flops_per_token(shape.preset, shape.overrides, tok, shape.seq)
    rows = conversations(ctx.rng(1), tok, shape.batch * shape.total_steps, shape.seq)
    conv_path = write_jsonl(ctx.work_dir / f"{workload}-conversations.jsonl", rows)
    text_path, _ = pretrain_data(ctx, shape, tok, f"{workload}-text")
    sft = (ctx, workload, PROJECT_SFT, shape, tok, "sft", conv_path, flops)
    pretrain = (ctx, workload, PROJECT_PRETRAIN, shape, tok, "pretrain", text_path, flops)
    return [
        ctx.attempt(workload, PROJECT_SFT, project_stage, *sft),
        ctx.attempt(workload, PROJECT_PRETRAIN, project_stage, *pretrain),
    ]
