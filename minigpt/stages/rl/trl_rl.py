"""What the TRL-based RL stages (grpo, rloo) share: the ``algo`` fields (their sampling part is also ppo's and
spo's), reward metric names, per-step generation/update timing, and the offline reference model (prompt
datasets: ``prompt_data``; reward config wiring: ``minigpt.rewards``).

A stage built on this is a few lines: its TRL trainer and config classes and its own extra fields.

Batch semantics follow TRL: ``train.batch_size`` counts completions per device and micro-step, so a step
sees ``batch_size × grad_accum × devices / num_generations`` prompts, each sampled ``num_generations`` times.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset
from transformers import TrainerCallback

from minigpt.data.training.prompt_rows import prompt_dataset
from minigpt.errors import ConfigError
from minigpt.lora import check_adapter_reference, is_peft
from minigpt.rewards import NamedReward, build_rewards
from minigpt.stages.rl.rl_params import RLParams, SamplingParams
from minigpt.stages.stage import RunState, Stage, StageContext

# ---------------------------------------------------------------- config


def check_reward_columns(funcs: list[NamedReward], columns: list[str]) -> None:
    """A reward's fixed ``args`` must not share a name with a dataset column (the column would win)."""
    for fn in funcs:
        clash = sorted(set(fn.args) & set(columns))
        if clash:
            raise ConfigError(
                f"algo.rewards '{fn.__name__}': args.{clash[0]} is also a dataset column "
                "(the column would silently win): rename one of them"
            )


def describe_rewards(funcs: list[NamedReward], weights: list[float]) -> str:
    """The log line naming the rewards in use and their weights."""
    return "rewards: " + ", ".join(f"{fn.__name__} × {w:g}" for fn, w in zip(funcs, weights, strict=True))


def static_cache_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``GenerationConfig`` keyword arguments for ``algo.cache_implementation`` / ``compile_generation``
    (none for the dynamic cache, so transformers' defaults stay as they are)."""
    if params.cache_implementation != "static":
        return {}
    kwargs: dict[str, Any] = {
        "cache_implementation": "static",
        "disable_compile": not params.compile_generation,
    }
    if params.max_prompt_length is not None:
        # One cache size for every step (longer prompts were dropped): a wider batch of prompts would
        # otherwise reallocate the cache and recompile the decoding step (measured on CPU with a forced
        # compile: a second graph, then a dynamic-shape one).
        kwargs["max_cache_len"] = params.max_prompt_length + params.max_completion_length
    return kwargs


_NOT_TRL = {"rewards", "max_prompt_length", "cache_implementation", "compile_generation"}


def trl_kwargs(params: RLParams, weights: list[float]) -> dict[str, Any]:
    """TRL config keyword arguments for the shared ``algo`` fields and the reward weights: every shared
    field is a GRPOConfig/RLOOConfig field of the same name, except those handled here (the cache goes to
    TRL's ``cache_implementation`` and ``generation_kwargs``; compiling is set on the built trainer, see
    :func:`apply_generation_compile`)."""
    out = {**params.model_dump(include=set(RLParams.model_fields) - _NOT_TRL), "reward_weights": weights}
    cache = static_cache_kwargs(params)
    if cache:
        out["cache_implementation"] = cache["cache_implementation"]
        if "max_cache_len" in cache:
            out["generation_kwargs"] = {"max_cache_len": cache["max_cache_len"]}
    return out


def apply_generation_compile(trainer: Any, params: SamplingParams) -> None:
    """TRL builds its ``GenerationConfig`` with ``disable_compile=True`` and refuses the key in
    ``generation_kwargs`` (a duplicate keyword): with a static cache, set it on the built config instead."""
    cache = static_cache_kwargs(params)
    if not cache:
        return
    config = getattr(trainer, "generation_config", None)
    if config is None:
        raise RuntimeError(f"{type(trainer).__name__} has no generation_config (TRL version change?)")
    config.disable_compile = cache["disable_compile"]


# ---------------------------------------------------------------- reward metric names


def reward_metric_renames(labels: list[str]) -> dict[str, str]:
    """TRL's per-reward keys → ours: ``rewards/<l>/mean`` → ``train/reward/<l>`` (std likewise)."""
    out: dict[str, str] = {}
    for label in labels:
        out[f"rewards/{label}/mean"] = f"train/reward/{label}"
        out[f"rewards/{label}/std"] = f"train/reward_std/{label}"
        out[f"eval_rewards/{label}/mean"] = f"eval/reward/{label}"
        out[f"eval_rewards/{label}/std"] = f"eval/reward_std/{label}"
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


# ---------------------------------------------------------------- timing and token counting


class StepTimer(TrainerCallback):
    """Per optimizer step: seconds spent generating (rollouts: sampling, rewards, old/ref log-probs) and the
    rest of the step (forward/backward over the micro-batches and the optimizer step). Evaluation and
    checkpointing run after ``on_step_end`` and are not counted."""

    def __init__(self, state: RunState):
        self.state = state
        self.generation = 0.0
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self.generation = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:
            return
        total = time.perf_counter() - self._start
        self.state.accumulate("train/generation_seconds", self.generation)
        self.state.accumulate("train/update_seconds", max(total - self.generation, 0.0))
        self._start = None


class RLTrainerMixin:
    """Between ``MiniGPTTrainerMixin`` and a TRL RL trainer: times generation, counts prompt + completion
    tokens for throughput, and decodes completions keeping special tokens other than end/padding."""

    completions_index: ClassVar[int]
    """Position of the decoded completions in the tuple the TRL trainer's ``_generate`` returns."""
    minigpt_timer: StepTimer | None = None

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
        if self.minigpt_timer is not None:
            self.minigpt_timer.generation += time.perf_counter() - start
        state = getattr(self, "minigpt_state", None)
        if state is not None:  # TRL itself adds the same count to state.num_input_tokens_seen
            tokens = int(output["prompt_mask"].sum()) + int(output["completion_mask"].sum())
            state.throughput.add(tokens, int(output["completion_mask"].shape[0]))
        return output


# ---------------------------------------------------------------- reference model


def _vocab_rows(model: Any) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@contextmanager
def reference_model_source(ctx: StageContext, beta: float) -> Iterator[None]:
    """While the TRL trainer is built, point ``model.config._name_or_path`` at a local folder holding the
    initial policy: TRL loads the reference model from that name and would otherwise look it up on the hub
    (a preset has no name at all). The stage's input folder is used when it holds exactly these weights;
    otherwise the weights are saved to ``<output_dir>/.reference`` and removed once loaded."""
    if beta == 0.0 or is_peft(ctx.model):  # with LoRA, TRL's reference is a frozen copy of the fresh adapter
        yield
        return
    from accelerate import PartialState

    init = Path(ctx.cfg.model.init).expanduser()
    folder, temporary = init, False
    same = False
    if init.is_dir() and not ctx.cfg.model.overrides and (init / "config.json").exists():
        saved = json.loads((init / "config.json").read_text(encoding="utf-8"))
        same = saved.get("vocab_size") == _vocab_rows(ctx.model)  # not resized on load
    if not same:
        folder, temporary = ctx.output_dir / ".reference", True
        if ctx.is_main:
            ctx.model.save_pretrained(str(folder), safe_serialization=True)
        PartialState().wait_for_everyone()
    config = ctx.model.config
    original = getattr(config, "_name_or_path", "")
    config._name_or_path = str(folder)
    try:
        yield
    finally:
        config._name_or_path = original
        if temporary:
            PartialState().wait_for_everyone()
            if ctx.is_main:
                shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the stage


class RLStage(Stage):
    """Base of the TRL RL stages: subclasses set ``trainer_class``, ``config_class``, ``Params`` and may add
    TRL config fields in :meth:`algo_kwargs`."""

    schema = "prompt_only"
    metric_renames = RL_METRIC_RENAMES
    trainer_class: ClassVar[type]
    config_class: ClassVar[type]

    def algo_kwargs(self) -> dict[str, Any]:
        """The stage's own TRL config fields (beyond :func:`trl_kwargs`)."""
        return {}

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
            args = self.config_class(**args_kwargs, **trl_kwargs(p, weights), **self.algo_kwargs())
        except ValueError as exc:  # TRL's own consistency checks
            raise ConfigError(f"stage {self.name}: {exc}") from None
        timer = StepTimer(self.ctx.state)
        with reference_model_source(self.ctx, p.beta):
            trainer = self.trainer_class(
                model=self.ctx.model,
                reward_funcs=funcs,
                args=args,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                processing_class=self.ctx.tokenizer,
                callbacks=[*callbacks, timer],
            )
        apply_generation_compile(trainer, p)
        trainer.minigpt_timer = timer
        return trainer
