"""What every stage shares: its context, the Stage base class and the per-run state that feeds the log."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from minigpt.metrics import RunLog, Throughput
from minigpt.stages.stage_config import StageConfig


@dataclass
class RunState:
    """Shared between the trainer (which counts tokens and adds metrics) and the logging callback."""

    log: RunLog
    throughput: Throughput = field(default_factory=Throughput)
    flops_per_token: float | None = None
    peak_flops: float | None = None
    n_devices: int = 1
    renames: dict[str, str] = field(default_factory=dict)
    eval_loss_is_token_nll: bool = True
    """Whether ``eval/loss`` is a mean token negative log-likelihood, so ``eval/ppl`` = exp(loss) means
    something (not for a reward model's pairwise loss)."""
    _sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def accumulate(self, name: str, value: float, weight: int = 1) -> None:
        """Add a value to be averaged over the log interval (e.g. train/mean_token_accuracy)."""
        self._sums[name] += float(value) * weight
        self._counts[name] += weight

    def pop_means(self, prefix: str, merge: Any = None) -> dict[str, float]:
        """Means of the values accumulated under ``prefix`` since the last call. ``merge`` (with several
        processes: ``minigpt.distributed.merge_sums``; every process calls it) combines each process's
        ``{name: (sum, weight)}`` so the mean is over the whole job, not the main process's share."""
        pairs = {n: (self._sums[n], self._counts[n]) for n in list(self._sums) if n.startswith(prefix)}
        for name in pairs:
            del self._sums[name], self._counts[name]
        if merge is not None:
            pairs = merge(pairs)
        return {name: total / weight for name, (total, weight) in pairs.items() if weight}


@dataclass
class StageContext:
    cfg: StageConfig
    params: Any
    output_dir: Path
    device: torch.device
    tokenizer: Any
    model: Any
    train_rows: list[dict[str, Any]]
    val_rows: list[dict[str, Any]]
    data_sources: tuple[str, str]
    """Where train and validation rows came from (for error messages)."""
    state: RunState
    is_main: bool = True


class Stage(ABC):
    """A training stage: turns rows into datasets and builds a (transformers / TRL) trainer over them.

    The shared runner (``minigpt.runner``) does everything else: config, model, data loading, logging,
    checkpoints, resume, final export and evaluation.
    """

    name: ClassVar[str]
    schema: ClassVar[str]
    metric_renames: ClassVar[dict[str, str]] = {}
    default_packing: ClassVar[bool] = False
    eval_loss_is_token_nll: ClassVar[bool] = True

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    @classmethod
    def row_schema(cls, params: Any) -> str:
        """The schema of the rows this stage reads with ``params``, known before the stage is built (the
        runner checks the data against it): ``schema``, unless the params choose (distill)."""
        return cls.schema

    @abstractmethod
    def build_datasets(self) -> tuple[Any, Any | None]:
        """(train, eval-or-None) datasets in the form the stage's trainer takes."""

    @abstractmethod
    def build_trainer(self, args_kwargs: dict[str, Any], train_ds: Any, eval_ds: Any | None, callbacks: list):
        """The trainer, built with the shared training arguments ``args_kwargs`` and ``callbacks``."""

    def count_batch(self, inputs: dict[str, Any]) -> tuple[int, int]:
        """(tokens, samples) in a training micro-batch: non-padding tokens.

        The project's collators count on the CPU (``NUM_TOKENS_KEY``), which is exact for packed rows too and
        costs no device sync; other batches fall back to their attention mask.
        """
        from minigpt.data.training.lm_tokens import NUM_TOKENS_KEY

        ids = inputs.get("input_ids")
        if ids is None:
            return 0, 0
        if NUM_TOKENS_KEY in inputs:
            return int(inputs[NUM_TOKENS_KEY]), int(ids.shape[0])
        if "attention_mask" in inputs:
            return int(inputs["attention_mask"].sum()), int(ids.shape[0])
        return int(ids.numel()), int(ids.shape[0])

    def prepare_model(self, model: Any) -> Any:
        """The network this stage trains, made from the runner's causal LM before any LoRA adapter wraps it
        (the reward stage puts a scoring head on its backbone); the model itself by default."""
        return model

    def export_model(self, trainer: Any) -> Any:
        """The model to save as the stage's HF folder (LoRA stages merge their adapter here)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self.ctx.cfg.lora is not None:
            from minigpt.lora import export_lora

            return export_lora(model, self.ctx.cfg)  # also writes <output_dir>/adapter
        return model
