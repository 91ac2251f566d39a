"""The stage and trainer layer the TRL group stages (grpo, rloo) share: datasets, checks, the TRL config built
from the ``algo`` fields, and the trainer hooks between ours and TRL's (fields: ``rl_params``; rewards:
``reward_wiring``; cache: ``generation_settings``; timing: ``step_timing``; reference: ``reference_model``).

A stage built on this is a few lines: its TRL trainer and config classes and its own extra fields.

Batch semantics follow TRL: ``train.batch_size`` counts completions per device and micro-step, so a step
sees ``batch_size × grad_accum × devices / num_generations`` prompts, each sampled ``num_generations`` times.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from datasets import Dataset

from minigpt.data.training.prompt_rows import prompt_dataset
from minigpt.errors import ConfigError
from minigpt.lora import check_adapter_reference
from minigpt.rewards import NamedReward, build_rewards
from minigpt.stages.rl.generation_settings import apply_generation_compile, static_cache_kwargs
from minigpt.stages.rl.reference_model import reference_model_source
from minigpt.stages.rl.reward_wiring import check_reward_columns, describe_rewards, reward_metric_renames
from minigpt.stages.rl.rl_params import RLParams
from minigpt.stages.rl.step_timing import StepTimer
from minigpt.stages.stage import RunState, Stage


def trl_kwargs(params: RLParams, weights: list[float]) -> dict[str, Any]:
    """TRL config keyword arguments for the shared ``algo`` fields and the reward weights: every shared
    field is a GRPOConfig/RLOOConfig field of the same name, except those handled here (the cache goes to
    TRL's ``cache_implementation`` and ``generation_kwargs``; compiling is set on the built trainer, see
    :func:`apply_generation_compile`)."""
    out = {**params.trl_kwargs(), "reward_weights": weights}
    cache = static_cache_kwargs(params)
    if cache:
        out["cache_implementation"] = cache["cache_implementation"]
        if "max_cache_len" in cache:
            out["generation_kwargs"] = {"max_cache_len": cache["max_cache_len"]}
    return out


# TRL log keys → docs/design.md §5 names. ``reward``, ``reward_std``, ``kl``, ``entropy`` become ``train/...`` (and
# ``eval_reward`` → ``eval/reward``) by the general rule; keys with a "/" would be kept as they are, so the
# training ones get a ``train/`` prefix here. ``eval_loss`` is the policy loss on held-out completions, not a
# language-model loss: it must not become ``eval/loss`` (which would get a meaningless ``eval/ppl``).
_COMPLETION_STATS = (
    "min_length",
    "max_length",
    "clipped_ratio",
    "mean_terminated_length",
    "min_terminated_length",
    "max_terminated_length",
)
_CLIP_STATS = ("low_mean", "low_min", "high_mean", "high_max", "region_mean")
RL_METRIC_RENAMES: dict[str, str] = {
    "completions/mean_length": "train/avg_response_len",
    "eval_completions/mean_length": "eval/avg_response_len",
    "eval_loss": "eval/policy_loss",
    **{f"completions/{k}": f"train/completions/{k}" for k in _COMPLETION_STATS},
    **{f"clip_ratio/{k}": f"train/clip_ratio/{k}" for k in _CLIP_STATS},
}


class RLTrainerMixin:
    """Between ``MiniGPTTrainerMixin`` and a TRL RL trainer: times generation, counts prompt + completion
    tokens for throughput, and decodes completions keeping special tokens other than end/padding."""

    completions_index: ClassVar[int]
    """Position of the decoded completions in the tuple the TRL trainer's ``_generate`` returns."""
    minigpt_timer: StepTimer
    minigpt_state: RunState
    minigpt_stage: Stage

    def __init__(self, *args: Any, **kwargs: Any):
        # MiniGPTTrainerMixin (before this class in the bases) has set minigpt_stage already.
        self.minigpt_timer = StepTimer(self.minigpt_stage.ctx.state)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.minigpt_timer]
        super().__init__(*args, **kwargs)
        apply_generation_compile(self, self.minigpt_stage.ctx.params)

    def _generate(self, prompts):
        out = super()._generate(prompts)
        return self._keep_special_tokens(out)

    def _keep_special_tokens(self, out: tuple) -> tuple:
        # TRL decodes with skip_special_tokens=True, which deletes tokens such as <think> that our tokenizers
        # mark special, so a format reward could never see them. Re-decode, dropping only end/pad tokens.
        tok = self.processing_class
        if (
            getattr(self, "tools", None)
            or getattr(tok, "response_schema", None) is not None
            or getattr(tok, "response_template", None) is not None
        ):
            return out  # TRL parsed the response (tool calls): keep its messages
        out = list(out)
        ids, completions = out[1], out[self.completions_index]
        if len(ids) != len(completions):
            raise RuntimeError(f"{type(self).__name__}: unexpected _generate output (TRL version change?)")
        drop = {*self.eos_token_ids, tok.pad_token_id}
        new = []
        for seq, old in zip(ids, completions, strict=True):
            text = tok.decode([t for t in seq if t not in drop], skip_special_tokens=False)
            if isinstance(old, str):
                new.append(text)
            elif isinstance(old, list) and len(old) == 1 and isinstance(old[0], dict):
                new.append([{**old[0], "content": text}])
            else:
                new.append(old)
        out[self.completions_index] = new
        return tuple(out)

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        start = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)
        self.minigpt_timer.generation += time.perf_counter() - start
        # TRL itself adds the same count to state.num_input_tokens_seen
        tokens = int(output["prompt_mask"].sum()) + int(output["completion_mask"].sum())
        self.minigpt_state.throughput.add(tokens, int(output["completion_mask"].shape[0]))
        return output


class RLStage(Stage):
    """Base of the TRL RL stages: subclasses set ``trainer_class``, ``config_class``, ``Params`` and may add
    TRL config fields in :meth:`algo_kwargs`."""

    schema = "prompt_only"
    metric_renames = RL_METRIC_RENAMES
    trainer_class: ClassVar[type]
    config_class: ClassVar[type]

    def _eval_generations(self) -> int:
        p = self.ctx.params
        return p.num_generations_eval or p.num_generations

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        cfg, p = self.ctx.cfg, self.ctx.params
        train_src, val_src = self.ctx.data_sources
        note = self.ctx.state.log.note
        args = (self.ctx.tokenizer, p.max_prompt_length, cfg.data.overlong, note)
        train = prompt_dataset(self.ctx.train_rows, train_src, *args)
        val_rows = self.ctx.val_rows
        if val_rows and cfg.train.eval_batches:
            # eval_batches caps batches of completions; each prompt yields num_generations_eval of them
            eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
            val_rows = val_rows[: max(1, cfg.train.eval_batches * eval_bs // self._eval_generations())]
        val = prompt_dataset(val_rows, val_src, *args) if val_rows else None
        return train, val

    def count_batch(self, inputs: Any) -> tuple[int, int]:
        # A training step receives prompt rows before generation; prompt + completion tokens are counted
        # after generation, in RLTrainerMixin._generate_and_score_completions.
        return 0, 0

    def _check(self, train_ds: Dataset, eval_ds: Dataset | None, funcs: list[NamedReward]) -> None:
        cfg, p, world = self.ctx.cfg, self.ctx.params, self.ctx.state.n_devices
        per_step = cfg.train.batch_size * cfg.train.grad_accum * world
        if per_step % p.num_generations:
            raise ConfigError(
                f"train.batch_size × train.grad_accum × devices = {per_step} completions per step must be a "
                f"multiple of algo.num_generations ({p.num_generations}): every prompt's group must fit in a step"
            )
        eval_bs = (cfg.train.eval_batch_size or cfg.train.batch_size) * world
        if eval_ds is not None and eval_bs % self._eval_generations():
            raise ConfigError(
                f"train.eval_batch_size × devices = {eval_bs} must be a multiple of the generations per eval "
                f"prompt ({self._eval_generations()}: algo.num_generations_eval or algo.num_generations)"
            )
        check_reward_columns(funcs, train_ds.column_names)

    def build_trainer(
        self, args_kwargs: dict[str, Any], train_ds: Dataset, eval_ds: Dataset | None, callbacks: list
    ) -> Any:
        p = self.ctx.params
        funcs, weights = build_rewards(p.rewards)
        self._check(train_ds, eval_ds, funcs)
        if p.beta:
            check_adapter_reference(self.ctx.model, self.name)
        self.ctx.state.renames.update(reward_metric_renames([fn.__name__ for fn in funcs]))
        self.ctx.state.log.note(describe_rewards(funcs, weights))
        try:
            args = self.config_class(**args_kwargs, **trl_kwargs(p, weights))
        except ValueError as exc:  # TRL's own consistency checks
            raise ConfigError(f"stage {self.name}: {exc}") from None
        with reference_model_source(self.ctx, p.beta):
            return self.trainer_class(
                model=self.ctx.model,
                reward_funcs=funcs,
                args=args,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                processing_class=self.ctx.tokenizer,
                callbacks=callbacks,
                minigpt_stage=self,
                minigpt_rewards=funcs,
            )
