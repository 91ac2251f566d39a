"""The shared runner: everything a training stage does besides its own datasets and trainer.

config → lock the output folder → seed → tokenizer, rows, model → stage datasets and trainer → train (or
resume) with the metrics callback → final evaluation → atomic export of the HF folder → stage.json.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from minigpt.checkpoints import (
    DONE_FILE,
    export_final,
    newest_checkpoint,
    resumable_checkpoint,
    write_json_atomic,
)
from minigpt.data.training.stage_rows import load_rows
from minigpt.disk import DiskError
from minigpt.distributed import barrier, broadcast_from_main, export_state_dict, gather_full_state_dict
from minigpt.lora import apply_lora
from minigpt.metrics import RunLog, flops_per_token, parse_jsonl_tolerant, peak_flops
from minigpt.model_card import write_model_card
from minigpt.models.loading import build_model, load_tokenizer, parameter_counts, tokenizer_source
from minigpt.models.tokenizer import check_chat_tokenizer
from minigpt.output_folder import (
    finished_summary,
    prepare_output_dir,
    remove_new_entries,
    restore_aside,
)
from minigpt.output_lock import OutputLock
from minigpt.registry import STAGES
from minigpt.stages.stage import RunState, StageContext
from minigpt.stages.stage_config import StageConfig
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin
from minigpt.typed_config import dump_config

_NEVER = 2**62  # a save interval no run reaches: only the end-of-training save happens


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        from accelerate import PartialState

        return PartialState().device
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def training_arguments(
    cfg: StageConfig, device: torch.device, output_dir: Path, has_eval: bool
) -> dict[str, Any]:
    """Keyword arguments for transformers.TrainingArguments (and TRL configs, which subclass it)."""
    t = cfg.train
    precision = resolve_precision(t.precision, device)
    optim = t.optim
    if optim == "auto":
        optim = "adamw_torch_fused" if device.type == "cuda" else "adamw_torch"
    eval_every = t.eval_interval if has_eval and t.eval_interval else 0
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir / "checkpoints"),
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.eval_batch_size or t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "max_steps": t.max_steps,
        "num_train_epochs": t.epochs,
        "learning_rate": t.lr,
        "lr_scheduler_type": t.scheduler,
        "warmup_steps": t.warmup_steps,
        "weight_decay": t.weight_decay,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "max_grad_norm": t.max_grad_norm,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": device.type == "cpu",
        "activation_checkpointing": t.gradient_checkpointing,
        "torch_compile": t.compile,
        "optim": optim,
        "logging_strategy": "steps",
        # a run shorter than the log interval still logs its last step (and appears in the report's plots)
        "logging_steps": min(t.log_interval, t.max_steps) if t.max_steps > 0 else t.log_interval,
        # Non-finite steps are caught before the optimizer by MiniGPTTrainerMixin (stop, or skip up to
        # train.max_bad_steps). With skipping allowed, a skipped step's NaN loss must not poison the logged
        # average, so transformers' filter replaces it; otherwise a NaN must surface, not be averaged away.
        "logging_nan_inf_filter": t.max_bad_steps > 0,
        "eval_strategy": "steps" if eval_every else "no",
        "eval_steps": eval_every or None,
        # The state at the last step is always checkpointed (transformers saves at the end under "steps"),
        # so a failed export loses no training; with save_interval 0 that is the only checkpoint, and it is
        # deleted once the final folder is complete.
        "save_strategy": "steps",
        "save_steps": t.save_interval or _NEVER,
        "save_total_limit": t.save_total_limit,
        "report_to": "none",  # reporting is done by minigpt.metrics (exact metric names)
        "disable_tqdm": False,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "dataloader_num_workers": t.num_workers,
        "dataloader_prefetch_factor": t.prefetch_factor,
        # workers kept between epochs and evaluations instead of being started again each time
        "dataloader_persistent_workers": t.num_workers > 0,
        "dataloader_pin_memory": device.type == "cuda",
        # with pinned batches the host-to-GPU copy can overlap the previous step's kernels
        "accelerator_config": {"non_blocking": device.type == "cuda"},
        "remove_unused_columns": False,
        "include_num_input_tokens_seen": "no",  # counted by the stage (knows its padding)
    }
    if t.scheduler == "cosine_with_min_lr":
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": t.min_lr_ratio}
    return kwargs


def _trim_metrics(path: Path, last_step: int) -> None:
    """On resume, drop log records written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = [
        r for r in parse_jsonl_tolerant(path.read_text(encoding="utf-8")) if r.get("step", 0) <= last_step
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


def run_stage(
    cfg: StageConfig,
    *,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    console: bool = True,
) -> dict[str, Any]:
    """Run one stage to completion; returns its summary (also written to ``<output_dir>/stage.json``)."""
    from minigpt.distributed import distributed_state

    stage_cls = STAGES.get(cfg.stage).load()
    params = cfg.algo
    output_dir = Path(cfg.output_dir)
    is_main = distributed_state().is_main_process  # the first call decides CPU vs GPU (see its docstring)
    with OutputLock(output_dir) if is_main else nullcontext():
        finished = broadcast_from_main(finished_summary(output_dir, cfg, console) if is_main else None)
        if finished is not None:
            return finished
        aside = prepare_output_dir(output_dir, cfg.resume, overwrite) if is_main else None
        before = set(output_dir.iterdir()) if output_dir.is_dir() else set()

        def started() -> None:  # every input is checked and training begins: the old run can go now
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)

        try:
            return _run_locked(cfg, params, stage_cls, output_dir, is_main, callbacks, console, started)
        except BaseException as exc:
            if is_main and not getattr(exc, "minigpt_training_started", False) and not cfg.resume:
                remove_new_entries(output_dir, before)  # refused before training: leave nothing behind
                if aside is not None:
                    restore_aside(output_dir, aside)
            raise


def _run_locked(
    cfg, params, stage_cls, output_dir: Path, is_main: bool, callbacks, console: bool, started
) -> dict[str, Any]:
    from accelerate import PartialState
    from transformers import set_seed

    set_seed(cfg.seed)
    device = pick_device()
    tok_src = tokenizer_source(cfg.model)
    tokenizer = load_tokenizer(tok_src, cfg.model.revision, cfg.model.trust_remote_code)
    schema = stage_cls.row_schema(params)
    if schema != "text":
        check_chat_tokenizer(tokenizer, tok_src)
    train_rows, val_rows, sources = load_rows(cfg, tokenizer, output_dir, schema)
    set_seed(cfg.seed)  # the same initial weights whatever data loading consumed
    model = build_model(
        cfg.model,
        tokenizer,
        torch.device("cpu"),
        dtype=torch.float32 if cfg.model.dtype == "auto" else None,
    )
    counts = parameter_counts(model)

    log = RunLog(
        output_dir,
        cfg.stage,
        cfg.train.report_to,
        enabled=is_main,
        console=console,
        run_name=f"{output_dir.name}-{cfg.stage}",
        config=cfg.model_dump(mode="json"),
    )
    if is_main:
        dump_config(cfg, output_dir / "config.yaml")
    world = PartialState().num_processes
    n_layers = getattr(model.config, "num_hidden_layers", 0)
    hidden = getattr(model.config, "hidden_size", 0)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    state = RunState(
        log=log,
        flops_per_token=flops_per_token(counts["active"], n_layers, hidden, cfg.data.max_length),
        peak_flops=peak,
        n_devices=world,
        renames=dict(stage_cls.metric_renames),
        eval_loss_is_token_nll=stage_cls.eval_loss_is_token_nll,
    )
    ctx = StageContext(
        cfg=cfg,
        params=params,
        output_dir=output_dir,
        device=device,
        tokenizer=tokenizer,
        model=model,
        train_rows=train_rows,
        val_rows=val_rows,
        data_sources=sources,
        state=state,
        is_main=is_main,
    )
    stage = stage_cls(ctx)
    ctx.model = stage.prepare_model(ctx.model)
    if cfg.lora is not None:  # any stage: base weights frozen, a LoRA adapter trained (minigpt.lora)
        ctx.model = apply_lora(ctx.model, cfg, device, log.note)
        counts["trainable"] = parameter_counts(ctx.model)["trainable"]
    log.note(
        f"model {cfg.model.init}: {counts['total']:,} parameters ({counts['active']:,} active, "
        f"{counts['trainable']:,} trainable); device {device}; {world} process(es)"
    )
    log.note(f"data: {len(train_rows)} train rows from {sources[0]}; {len(val_rows)} validation rows")
    train_ds, eval_ds = stage.build_datasets()
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
    if eval_ds is not None and cfg.train.eval_batches and len(eval_ds) > cfg.train.eval_batches * eval_bs:
        eval_ds = eval_ds.select(range(cfg.train.eval_batches * eval_bs))
    args_kwargs = training_arguments(cfg, device, output_dir, eval_ds is not None)
    task_eval = None
    if cfg.task_eval is not None:
        from minigpt.stages.task_evaluation import TaskEvalCallback

        task_eval = TaskEvalCallback(cfg.task_eval, tokenizer, state, cfg.train.eval_interval)
        log.note(f"task evaluation during training: {cfg.task_eval.task}, {_interval_text(cfg)}")
    extra = [task_eval] if task_eval is not None else []
    trainer = stage.build_trainer(args_kwargs, train_ds, eval_ds, [*callbacks, *extra])
    if not isinstance(trainer, MiniGPTTrainerMixin):  # a stage's contract: its trainer carries the hooks
        raise TypeError(
            f"stage {cfg.stage}: build_trainer must return a hooked trainer (trainer_hooks.hooked)"
        )

    checkpoint, damaged = resumable_checkpoint(output_dir / "checkpoints") if cfg.resume else (None, [])
    checkpoint = broadcast_from_main(checkpoint)  # every process resumes from the one the main process found
    for note in damaged:
        log.note(note)
    if checkpoint is not None:
        step = int(checkpoint.name.split("-")[-1])
        if is_main:
            _trim_metrics(output_dir / "metrics.jsonl", step)
        log.note(f"resuming from {checkpoint}")
    elif cfg.resume:
        if is_main:  # nothing to resume from: the earlier attempt's log records would repeat steps
            _trim_metrics(output_dir / "metrics.jsonl", 0)
        log.note("resume requested but no complete checkpoint found: starting from the beginning")
    started()
    start_time = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        final_metrics = dict(result.metrics)
        if eval_ds is not None:
            if trainer.minigpt_metrics.last_eval_step != trainer.state.global_step:
                trainer.evaluate()
            final_metrics.update(trainer.minigpt_metrics.last_eval)
        train_seconds = time.time() - start_time
        gathered = gather_full_state_dict(trainer)  # FSDP / DeepSpeed shards: every process takes part
        if is_main:
            exported = stage.export_model(trainer)
            # transformers' Trainer turns the KV cache off for training; the saved model is for inference.
            exported.config.use_cache = True
            try:
                export_final(exported, tokenizer, output_dir, export_state_dict(trainer, exported, gathered))
            except DiskError as exc:  # the trained weights are safe in the final checkpoint
                final = newest_checkpoint(output_dir / "checkpoints")
                raise DiskError(
                    f"{exc}. The trained weights are kept in {final}: free the space (or fix the "
                    "folder) and run the stage again with --resume to export them"
                ) from exc
    except BaseException as exc:
        exc.minigpt_training_started = True  # its checkpoints and logs are kept for --resume
        raise
    finally:
        log.close()
    summary = {
        "status": "done",
        "stage": cfg.stage,
        "output_dir": str(output_dir),
        "parameters": counts,
        "global_step": trainer.state.global_step,
        "num_tokens": int(trainer.state.num_input_tokens_seen),
        "train_seconds": round(train_seconds, 2),
        "final_metrics": {k: v for k, v in final_metrics.items() if isinstance(v, int | float)},
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
    }
    if task_eval is not None:
        summary["task_eval"] = task_eval.summary(train_seconds)
    if is_main:
        # The card before stage.json: a folder that counts as finished always has its card.
        write_model_card(output_dir, summary)
        write_json_atomic(output_dir / DONE_FILE, summary)
        if not cfg.train.save_interval:  # the final state was kept only until the export was complete
            shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    barrier()  # the next stage of a recipe reads this folder: no process may start it before it is written
    return summary


def _interval_text(cfg: StageConfig) -> str:
    every = cfg.train.eval_interval
    return f"at the start, every {every} steps and at the end" if every else "at the start and at the end"


def run_stage_file(
    path: str, overrides: list[str] | None = None, resume: bool = False, **kwargs
) -> dict[str, Any]:
    from minigpt.stages.stage_config import load_stage_config

    cfg = load_stage_config(path, overrides)
    if resume:
        cfg.resume = True
    return run_stage(cfg, **kwargs)
