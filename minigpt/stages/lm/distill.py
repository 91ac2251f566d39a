"""Knowledge distillation (``distill``) and reasoning distillation (``reasoning_distill``): thin adapters over
the causal-LM stage and its ``LMTrainer``.

``distill`` is white-box KD from a teacher checkpoint on fixed data (teacher forcing):

    loss = α·CE(student, labels) + (1 − α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T))

both terms averaged over the label tokens (assistant tokens of conversations, every token of text) exactly as
the CE of the SFT stage is, so α = 1 is plain SFT. T² keeps the soft term's gradient scale independent of T
(Hinton et al. 2015). ``eval/loss`` stays the CE (so ``eval/ppl`` means what it means for SFT) and evaluation adds
``eval/kl_to_teacher``, KL(teacher ‖ student) at T = 1: the distance to the teacher's actual distribution.

TRL's trainers are not used. TRL 1.16's ``DistillationTrainer`` (and the experimental ``GKDTrainer``) are
on-policy: every step they sample completions from the student for prompt-only rows and fit a generalized JSD on
them. That is another algorithm (generation dominates its cost, and it has no CE-on-labels mix); it also
tokenizes rows itself, so it would bypass the shared conversation encoding (assistant masks, packing) and the
LMTrainer hooks the runner relies on. Off-policy KD on the stage's own data needs only a teacher forward in
``compute_loss``.

``reasoning_distill`` is SFT on ``<think>…</think>`` traces (e.g. a teacher's), with the per-token CE of the tag
tokens multiplied by ``tag_loss_weight``; see :class:`TagWeightedTrainer`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from minigpt.data.training.lm_tokens import IGNORE, NUM_TOKENS_KEY
from minigpt.errors import ConfigError, MiniGPTError
from minigpt.models.loading import build_model, load_tokenizer
from minigpt.models.model_config import ModelConfig
from minigpt.registry import PRESETS
from minigpt.stages.lm.causal_lm import LMTrainer
from minigpt.stages.lm.lm_params import DistillParams, ReasoningParams
from minigpt.stages.lm.sft import SFTStage
from minigpt.stages.stage import StageContext

_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def kd_per_token(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) for each row (one token's logits), in float32."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return temperature**2 * (teacher.exp() * (teacher - student)).sum(-1)


def token_factor(trainer: Any, n_tokens: torch.Tensor, num_items_in_batch: Any) -> Any:
    """What transformers' Trainer makes of a micro-batch's per-token mean: a causal LM's own CE is summed and
    divided by ``num_items_in_batch`` (label tokens of the whole accumulated, all-device batch), then multiplied
    by the number of processes it is averaged over. A loss term of ours multiplied by this factor is on the
    same scale as that CE under gradient accumulation and on several devices."""
    if num_items_in_batch is None or not trainer.model_accepts_loss_kwargs:
        return 1.0
    factor = n_tokens / num_items_in_batch
    if trainer.args.average_tokens_across_devices:
        n_gpu = trainer.args.n_gpu
        factor = factor * (
            trainer.accelerator.num_processes // trainer.get_tp_size() if n_gpu <= 1 else n_gpu
        )
    return factor


# ---------------------------------------------------------------- distill


class DistillTrainer(LMTrainer):
    """LMTrainer plus a frozen teacher: the loss mixes the labels' CE with the KD term (module docstring)."""

    track_accuracy = True
    teacher: torch.nn.Module | None = None
    alpha: float = 0.5
    temperature: float = 2.0

    def set_teacher(self, teacher: torch.nn.Module, alpha: float, temperature: float) -> None:
        self.teacher = teacher.to(self.accelerator.device).eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ce, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        targets = inputs["labels"][:, 1:]
        mask = targets != IGNORE
        with torch.no_grad(), self.accelerator.autocast():
            teacher_logits = self.teacher(**{k: inputs[k] for k in _MODEL_INPUTS if k in inputs}).logits
        student, teacher = outputs.logits[:, :-1][mask], teacher_logits[:, :-1][mask]
        n = mask.sum()
        count = int(n)  # one sync per micro-batch, as for the token accuracy
        if model.training:
            kd_mean = kd_per_token(student, teacher, self.temperature).sum() / n.clamp(min=1)
            factor = token_factor(self, n, num_items_in_batch)
            loss = self.alpha * ce + (1.0 - self.alpha) * kd_mean * factor
            if count:
                self.minigpt_state.accumulate("train/kd_loss", float(kd_mean.detach()), count)
                self.minigpt_state.accumulate("train/ce_loss", float(ce.detach() / factor), count)
        else:
            loss = ce  # eval/loss stays the labels' CE
            if count:
                with torch.no_grad():
                    kl = kd_per_token(student, teacher, 1.0).mean()
                self.minigpt_state.accumulate("eval/kl_to_teacher", float(kl), count)
        return (loss, outputs) if return_outputs else loss


def load_teacher(
    source: str, student: Any, tokenizer: Any, trust_remote_code: bool = False
) -> torch.nn.Module:
    """The teacher model, refused (naming ``algo.teacher``) unless it shares the student's tokenizer and
    output vocabulary: the KD term compares the two next-token distributions id by id. The stage's
    ``model.trust_remote_code`` applies to it too."""
    where = f"algo.teacher '{source}'"
    if source in PRESETS:
        raise ConfigError(
            f"{where} is a model preset (random weights): give a trained model folder or hub id"
        )
    try:
        teacher_tok = load_tokenizer(source, trust_remote_code=trust_remote_code)
    except MiniGPTError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"{where}: its tokenizer differs from the student's ({len(teacher_tok)} vs {len(tokenizer)} tokens, "
            "or the same size with other ids); distillation compares next-token distributions id by id, so "
            "teacher and student must share one tokenizer"
        )
    try:
        teacher = build_model(
            ModelConfig(init=source, trust_remote_code=trust_remote_code),
            tokenizer,
            torch.device("cpu"),
            dtype=student.dtype,
        )
    except MiniGPTError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    rows_t = teacher.get_output_embeddings().weight.shape[0]
    rows_s = student.get_output_embeddings().weight.shape[0]
    if rows_t != rows_s:
        raise ConfigError(f"{where}: {rows_t} output logits, the student has {rows_s}; they must be equal")
    return teacher


class DistillStage(SFTStage):
    name = "distill"
    trainer_class = DistillTrainer

    def __init__(self, ctx: StageContext):
        super().__init__(ctx)
        self.schema = self.row_schema(ctx.params)  # how rows are encoded (CausalLMStage._encode)

    @classmethod
    def row_schema(cls, params: DistillParams) -> str:
        return params.data_schema

    def build_trainer(
        self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list
    ) -> DistillTrainer:
        p: DistillParams = self.ctx.params
        teacher = load_teacher(
            p.teacher, self.ctx.model, self.ctx.tokenizer, self.ctx.cfg.model.trust_remote_code
        )
        trainer = super().build_trainer(args_kwargs, train_ds, eval_ds, callbacks)
        trainer.set_teacher(teacher, p.alpha, p.temperature)
        self.ctx.state.log.note(
            f"distill: teacher {p.teacher}, alpha {p.alpha:g}, temperature {p.temperature:g}"
        )
        return trainer


# ---------------------------------------------------------------- reasoning distillation


def tag_mask(targets: torch.Tensor, tags: list[list[int]]) -> torch.Tensor:
    """True at every position of ``targets`` (batch × length) covered by an occurrence of a tag's ids."""
    mask = torch.zeros_like(targets, dtype=torch.bool)
    length = targets.shape[1]
    for ids in tags:
        k = len(ids)
        if k > length:
            continue
        hits = (targets.unfold(1, k, 1) == torch.tensor(ids, device=targets.device)).all(-1)
        for offset in range(k):
            mask[:, offset : offset + length - k + 1] |= hits
    return mask


class TagWeightedTrainer(LMTrainer):
    """Token CE with weight ``tag_loss_weight`` on tag tokens and 1 elsewhere, normalised by the sum of the
    weights: loss = Σ wᵢ·CEᵢ / Σ wᵢ over a micro-batch's label tokens (micro-batches of an accumulated step are
    combined by their label-token counts, as transformers does for plain CE). Evaluation returns the unweighted
    CE, so ``eval/loss`` and ``eval/ppl`` compare with SFT; ``train/tag_loss`` and ``eval/tag_loss`` are the
    mean CE of the tag tokens."""

    track_accuracy = True
    tag_ids: list[list[int]] = []
    tag_loss_weight: float = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop(NUM_TOKENS_KEY, None)
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        targets = labels[:, 1:]
        valid = targets != IGNORE
        ce = F.cross_entropy(outputs.logits[:, :-1][valid].float(), targets[valid], reduction="none")
        tagged = tag_mask(targets, self.tag_ids)[valid]
        n = valid.sum()
        if model.training:
            weights = torch.where(tagged, self.tag_loss_weight, 1.0)
            loss = (weights * ce).sum() / weights.sum().clamp(min=1e-12)
            loss = loss * token_factor(self, n, num_items_in_batch)
        else:
            loss = ce.sum() / n.clamp(min=1)
        n_tags = int(tagged.sum())
        if n_tags:
            prefix = "train/" if model.training else "eval/"
            self.minigpt_state.accumulate(prefix + "tag_loss", float(ce.detach()[tagged].mean()), n_tags)
        if self.track_accuracy:
            self.accumulate_accuracy(labels, outputs.logits, model.training)
        return (loss, outputs) if return_outputs else loss


class ReasoningDistillStage(SFTStage):
    name = "reasoning_distill"

    def build_trainer(self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list) -> LMTrainer:
        p: ReasoningParams = self.ctx.params
        if p.tag_loss_weight == 1.0:
            return super().build_trainer(args_kwargs, train_ds, eval_ds, callbacks)  # plain SFT
        tok = self.ctx.tokenizer
        ids = [tok(tag, add_special_tokens=False)["input_ids"] for tag in p.tags]
        self.trainer_class = TagWeightedTrainer
        trainer = super().build_trainer(args_kwargs, train_ds, eval_ds, callbacks)
        trainer.tag_ids, trainer.tag_loss_weight = ids, p.tag_loss_weight
        shown = ", ".join(f"{tag} {i}" for tag, i in zip(p.tags, ids, strict=True))
        self.ctx.state.log.note(f"reasoning_distill: tag tokens ({shown}) weighted {p.tag_loss_weight:g}")
        return trainer
