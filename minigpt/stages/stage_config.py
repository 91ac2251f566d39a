"""The config of one training stage: model, data, training loop, and ``algo``, the stage's own fields.

One typed config per stage: validating a mapping as ``StageConfig`` picks the class of its ``stage`` (a
subclass whose ``algo`` is that stage's Params, from ``minigpt.stages.catalog``), so a mistake in ``algo`` is
reported in the same pass as every other field, with its file and line. Torch-free."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from minigpt.lora_config import LoRAConfig
from minigpt.models.model_config import ModelConfig
from minigpt.tasks.eval_spec import EvaluationSpec
from minigpt.typed_config import Strict, apply_overrides, read_yaml, typed_variant, validate


class DataSpec(Strict):
    train: list[str] = []
    """JSONL files already in the stage's schema (see docs/design.md §4)."""
    validation: list[str] = []
    data_config: str | None = None
    """A mixture YAML (config/data/...): prepared into ``prepared_dir`` before training."""
    use_prepared: bool = False
    """Reuse a prepared mixture when its fingerprint matches (sources, converters, tokenizer, seed, ...)."""
    prepared_dir: str | None = None
    """Where a mixture is prepared; default ``<output_dir>/data``."""
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Without validation files, hold out this fraction of ``train`` (seeded, before any packing)."""
    max_length: int = Field(512, gt=1)
    packing: bool | None = None
    """Pack sequences to ``max_length``: default on for pretrain/midtrain text, off for conversations."""
    overlong: Literal["truncate", "drop", "error"] = "truncate"
    """Rows longer than ``max_length`` (conversations): truncated (counted), dropped (counted), or refused."""
    pad_to_multiple_of: int | None = Field(None, gt=0)
    """Causal-LM stages: pad each batch's length up to a multiple of this (capped at ``max_length``), so a
    compiled model (``train.compile``) sees a few shapes instead of one per batch length and does not keep
    recompiling; the padding is computed but not counted or trained on."""


class TrainConfig(Strict):
    max_steps: int = -1
    """Optimizer steps; -1 = run ``epochs`` epochs."""
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(8, gt=0)
    """Sequences per device per micro-step."""
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(3e-4, gt=0)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr"] = (
        "cosine"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """For ``cosine_with_min_lr``: the final learning rate as a fraction of ``lr``."""
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = Field(1.0, ge=0)
    max_bad_steps: int = Field(0, ge=0)
    """Optimizer steps whose loss or gradient norm is NaN/inf that may be skipped (gradients dropped, weights
    untouched, counted as ``train/skipped_steps``) before the stage stops; 0: stop at the first one."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, fp32 on CPU."""
    gradient_checkpointing: bool = False
    compile: bool = False
    """torch.compile the model (GPU)."""
    loss: Literal["plain", "chunked"] = "plain"
    """Causal-LM stages (pretrain, midtrain, sft): ``chunked`` fuses the output head with the cross-entropy,
    a chunk of tokens at a time, so the ``[tokens, vocab]`` logits are never held in full and positions
    without a label (SFT prompts, padding) are skipped; same loss and gradients as ``plain``."""
    loss_chunk_elements: int = Field(1 << 25, gt=0)
    """For ``loss: chunked``: logit elements (tokens × vocab) computed at once."""
    optim: str = "auto"
    """auto: fused AdamW on GPU, AdamW on CPU; or any transformers optim name."""
    log_interval: int = Field(10, gt=0)
    eval_interval: int = Field(0, ge=0)
    """Evaluate every N steps (0: only at the end)."""
    eval_batches: int | None = Field(None, gt=0)
    """Cap on batches per evaluation."""
    eval_batch_size: int | None = Field(None, gt=0)
    save_interval: int = Field(0, ge=0)
    """Checkpoint every N steps (0: no intermediate checkpoints)."""
    save_total_limit: int = Field(2, gt=0)
    report_to: list[str] = []
    """Any of wandb, tensorboard, trackio."""
    num_workers: int = Field(0, ge=0)
    """Data-loader worker processes that collate batches ahead of the training step (0: in the training
    process). Batches are copied to the GPU from pinned memory either way."""
    prefetch_factor: int | None = Field(None, gt=0)
    """Batches each worker prepares ahead (needs ``num_workers`` > 0; PyTorch's default is 2)."""

    @model_validator(mode="after")
    def _check_prefetch(self) -> TrainConfig:
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise ValueError("prefetch_factor needs num_workers > 0 (batches are prefetched by workers)")
        return self


class StageConfig(Strict):
    stage: str
    output_dir: str
    seed: int = 42
    model: ModelConfig
    data: DataSpec = DataSpec()
    train: TrainConfig = TrainConfig()
    algo: Any = None
    """The stage's own fields (e.g. DPO's beta): an instance of the stage's Params class."""
    lora: LoRAConfig | None = None
    """Train a LoRA adapter instead of every weight (any stage); absent or null: full fine-tuning."""
    resume: bool = False
    """Continue from the newest complete checkpoint in ``<output_dir>/checkpoints``."""
    task_eval: EvaluationSpec | None = None
    """A task evaluation run on the model while it trains: at the start, every ``train.eval_interval`` steps
    and at the end, logged as ``eval/task/<metric>`` (docs/design.md §5). In a recipe it comes from the
    ``evaluation`` entry with ``during_training``, for the stages with ``train.eval_interval`` > 0."""

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, value: str) -> str:
        from minigpt.registry import STAGES, registered

        return registered(STAGES, value)

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        if not self.data.train and not self.data.data_config:
            raise ValueError("data: give 'train' files or a 'data_config' mixture")
        if type(self) is StageConfig:  # built as StageConfig(...), which cannot pick the stage's class
            raise ValueError("build a stage config with StageConfig.model_validate(...)")
        from minigpt.registry import STAGES

        if not isinstance(self.algo, STAGES.get(self.stage).params):  # e.g. stage changed by assignment
            raise ValueError(f"algo is not the fields of stage '{self.stage}': validate the config again")
        if self.task_eval is not None:
            from minigpt.registry import EVAL_TASKS

            if not STAGES.get(self.stage).generates_text:
                raise ValueError(
                    f"task_eval: stage '{self.stage}' trains a model that does not answer prompts"
                )
            if EVAL_TASKS.get(self.task_eval.task).during_training is None:
                raise ValueError(f"task_eval: task '{self.task_eval.task}' has no evaluation during training")
        return self

    @classmethod
    def resolve_model(cls, data: Any) -> type[StageConfig]:
        """The config class that validates ``data``: the class of its ``stage`` when that is a known name."""
        from minigpt.registry import STAGES

        if cls is StageConfig and isinstance(data, dict):
            name = data.get("stage")
            if isinstance(name, str) and name in STAGES:
                return stage_config_class(name)
        return cls

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> StageConfig:
        model = cls.resolve_model(obj)
        if model is not cls:
            return model.model_validate(obj, **kwargs)
        return super().model_validate(obj, **kwargs)


@cache
def stage_config_class(name: str) -> type[StageConfig]:
    """``StageConfig`` with ``algo`` typed as the Params of stage ``name``."""
    from minigpt.registry import STAGES

    return typed_variant(StageConfig, "algo", STAGES.get(name).params, "StageConfig")


def load_stage_config(
    path: str | Path, overrides: list[str] | None = None, defaults: dict[str, Any] | None = None
) -> StageConfig:
    """Load and validate a stage config, its ``algo`` against the stage's own fields, in one pass."""
    from minigpt.config_paths import canonical, resolve_stage_paths

    raw, lines = read_yaml(path)
    if defaults:
        raw = {**defaults, **raw}
    # The file's paths are relative to its folder; the --set values, given on the command line, to the
    # working directory (minigpt.config_paths).
    raw = resolve_stage_paths(raw, Path(canonical(path, Path.cwd())).parent, source=str(path), lines=lines)
    written = copy.deepcopy(raw)
    raw = apply_overrides(raw, overrides)
    raw = resolve_stage_paths(raw, Path.cwd(), previous=written, source="--set")
    return validate(StageConfig, raw, str(path), lines)
