"""Causal-LM stages share one implementation: pretrain and midtrain (packed text) and SFT (conversations,
loss on assistant tokens only). Each registered stage is a few lines over ``CausalLMStage``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from minigpt.data.training.lm_tokens import (
    IGNORE,
    NUM_TOKENS_KEY,
    PadCollator,
    encode_conversations,
    encode_texts,
    pack_examples,
)
from minigpt.errors import ConfigError, DataError
from minigpt.stages.lm.chunked_loss import check_supported, head_computes_loss, shifted_targets
from minigpt.stages.stage import Stage
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin


class LMTrainer(MiniGPTTrainerMixin, Trainer):
    """transformers' Trainer plus mean token accuracy (averaged over each log interval) and, with
    ``train.loss: chunked``, the fused head + cross-entropy of :mod:`minigpt.stages.lm.chunked_loss`."""

    track_accuracy = False
    chunked_head: torch.nn.Linear | None = None
    chunk_elements: int = 1 << 25

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop(NUM_TOKENS_KEY, None)  # evaluation batches still carry the collator's count
        if self.chunked_head is not None:
            return self._chunked_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if self.track_accuracy:
            self.accumulate_accuracy(inputs["labels"], outputs.logits, model.training)
        return (loss, outputs) if return_outputs else loss

    def _chunked_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The model is called without labels while its head returns the loss (see chunked_loss): the same
        value transformers' loss gives, with ``num_items_in_batch`` as the denominator when the Trainer
        counts tokens over the accumulated batch."""
        inputs = dict(inputs)
        targets = shifted_targets(inputs.pop("labels"))
        with head_computes_loss(self.chunked_head, targets, num_items_in_batch, self.chunk_elements) as out:
            outputs = model(**inputs)
        loss = out["loss"]
        aux = getattr(outputs, "aux_loss", None)  # MoE router balance, which the model adds only with labels
        if aux is not None:
            loss = loss + self.accelerator.unwrap_model(model).config.router_aux_loss_coef * aux.to(
                loss.device
            )
        if self.track_accuracy and targets.count:
            prefix = "train/" if model.training else "eval/"
            # one host read per micro-batch, as the plain path's accuracy
            self.minigpt_state.accumulate(
                prefix + "mean_token_accuracy", int(out["correct"]) / targets.count, targets.count
            )
        outputs.logits = None  # it held the loss; nothing downstream may read it as logits
        if (
            self.args.average_tokens_across_devices
            and self.model_accepts_loss_kwargs
            and num_items_in_batch is not None
        ):
            # As Trainer.compute_loss does: num_items_in_batch counts every process's tokens, and DDP averages
            # the gradients over processes, so each process's loss is scaled back up by their number.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def accumulate_accuracy(self, labels: torch.Tensor, logits: torch.Tensor, training: bool) -> None:
        """Add this batch's next-token accuracy on label tokens to the log interval's mean."""
        labels = labels[:, 1:]
        predicted = logits[:, :-1].argmax(-1)
        mask = labels != IGNORE
        n = int(mask.sum())
        if n:
            correct = float((predicted.eq(labels) & mask).sum()) / n
            prefix = "train/" if training else "eval/"
            self.minigpt_state.accumulate(prefix + "mean_token_accuracy", correct, n)


class CausalLMStage(Stage):
    track_accuracy: ClassVar[bool] = False
    trainer_class: ClassVar[type[LMTrainer]] = LMTrainer

    def _encode(self, rows: list[dict[str, Any]], source: str) -> list[dict[str, list[int]]]:
        cfg = self.ctx.cfg.data
        packing = self.default_packing if cfg.packing is None else cfg.packing
        if self.schema == "conversations":
            examples, stats = encode_conversations(
                rows, self.ctx.tokenizer, cfg.max_length, cfg.overlong, source
            )
            if packing:
                examples = pack_examples(examples, cfg.max_length)
        else:
            examples, stats = encode_texts(rows, self.ctx.tokenizer, cfg.max_length, packing, source)
        if stats.truncated or stats.dropped:
            self.ctx.state.log.note(
                f"{source}: {stats.truncated} rows truncated to {cfg.max_length} tokens, "
                f"{stats.dropped} dropped {stats.drop_reasons or ''}".rstrip()
            )
        if not examples:
            raise DataError("no training examples left after tokenization", file=source)
        return examples

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        train_src, val_src = self.ctx.data_sources
        train = Dataset.from_list(self._encode(self.ctx.train_rows, train_src))
        val = Dataset.from_list(self._encode(self.ctx.val_rows, val_src)) if self.ctx.val_rows else None
        return train, val

    def build_trainer(self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list) -> Trainer:
        trainer = self.trainer_class(
            model=self.ctx.model,
            args=TrainingArguments(**args_kwargs),
            data_collator=PadCollator(
                self.ctx.tokenizer.pad_token_id,
                self.ctx.cfg.data.pad_to_multiple_of,
                self.ctx.cfg.data.max_length,
            ),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=self.ctx.tokenizer,
            callbacks=callbacks,
            minigpt_stage=self,
        )
        trainer.track_accuracy = self.track_accuracy
        train = self.ctx.cfg.train
        if train.loss == "chunked":
            if trainer.args.n_gpu > 1:  # torch DataParallel replicas would share one head patch and batch
                raise ConfigError(
                    "train.loss: chunked needs one process per GPU: launch with torchrun or accelerate launch"
                )
            trainer.chunked_head = check_supported(self.ctx.model)
            trainer.chunk_elements = train.loss_chunk_elements
        return trainer
