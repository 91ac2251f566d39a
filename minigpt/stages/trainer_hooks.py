"""The hooks every stage's trainer gets, as one layer between the stage and a transformers/TRL trainer: token
counting, metric naming, throughput/MFU/ETA, the non-finite loss / gradient and failed-reward guard (stop, or
skip up to ``train.max_bad_steps`` steps) and atomic checkpoint writes.

A stage builds its trainer as ``hooked(TRLTrainer)(..., minigpt_stage=self)`` (or subclasses a hooked class when
it adds behaviour of its own); the run state comes with the stage at construction. The private
transformers/TRL methods overridden here and in ``stages/rl/trl_group_stage.py`` are listed in
``PRIVATE_OVERRIDES``, whose signatures a test pins against the installed versions."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from minigpt.checkpoints import newest_checkpoint, publish_checkpoint, rotate_checkpoints, staging_dir
from minigpt.data.training.lm_tokens import NUM_TOKENS_KEY
from minigpt.disk import writing
from minigpt.distributed import sum_over_processes
from minigpt.errors import TrainingError
from minigpt.rewards import NamedReward, RewardFault
from minigpt.stages.stage import RunState, Stage
from minigpt.stages.trainer_logging import MetricsCallback, quiet_progress

# Written into every checkpoint next to transformers' trainer_state.json: what a resumed run must carry on.
MINIGPT_STATE = "minigpt_state.json"


class MiniGPTTrainerMixin:
    """First in the bases of a transformers/TRL trainer (see :func:`hooked`). Construction takes the stage
    (``minigpt_stage=``) and, for RL stages, the reward functions whose failures the guard handles."""

    minigpt_state: RunState
    minigpt_stage: Stage
    minigpt_rewards: tuple[NamedReward, ...] = ()
    minigpt_skipped_steps: int = 0
    """Optimizer steps skipped so far because their loss or gradient norm was not finite."""
    _minigpt_loss_sum: torch.Tensor | None = None
    _minigpt_fault: torch.Tensor | None = None
    _minigpt_step_t: torch.Tensor | None = None
    _minigpt_staging: Path | None = None
    _minigpt_token: str | None = None
    _minigpt_local_tokens: int = 0
    """Tokens this process trained on since the last ``minigpt_sync_tokens`` (not yet in the global count)."""
    _minigpt_reward_fault: RewardFault | None = None
    """The first reward fault of the optimizer step being taken (``train.max_bad_steps`` > 0): the step is
    skipped in ``_get_grad_norm``."""

    def __init__(self, *args: Any, minigpt_stage: Stage, minigpt_rewards: Sequence[Any] = (), **kwargs: Any):
        self.minigpt_stage = minigpt_stage
        self.minigpt_state = minigpt_stage.ctx.state
        self.minigpt_rewards = tuple(fn for fn in minigpt_rewards if isinstance(fn, NamedReward))
        skip = minigpt_stage.ctx.cfg.train.max_bad_steps > 0  # else a failed reward raises where it is called
        for fn in self.minigpt_rewards:
            fn.skip_faults = skip
        # Before the caller's callbacks: the project's log record is written first at each log step.
        self.minigpt_metrics = MetricsCallback(self)
        kwargs["callbacks"] = [self.minigpt_metrics, *(kwargs.get("callbacks") or [])]
        super().__init__(*args, **kwargs)
        quiet_progress(self)

    # ------------------------------------------------------------ non-finite loss / gradient guard

    def training_step(self, model, inputs, num_items_in_batch=None):
        tokens, samples = self.minigpt_stage.count_batch(inputs)
        if isinstance(inputs, dict):  # RL trainers get a list of prompt rows here
            inputs.pop(NUM_TOKENS_KEY, None)  # counted by the collator on the CPU; not a model input
        self.minigpt_state.throughput.add(tokens, samples)
        # Counted per process and folded into the global state.num_input_tokens_seen at log, checkpoint and
        # end (minigpt_sync_tokens): one collective per log step instead of one per micro-batch.
        self._minigpt_local_tokens += tokens
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except RewardFault as fault:  # train.max_bad_steps: 0 (NamedReward raises it then)
            # An earlier non-finite step, still unread on the device, comes first. Read locally: the other
            # processes are inside TRL's or DDP's collectives of this step, not in a matching gather.
            self._raise_if_faulted(everywhere=False)
            self.minigpt_skipped_steps += 1
            step = self.state.global_step + 1
            raise self._stop_error(f"{fault} at step {step}", "bad", "Fix the reward function") from None
        if self.minigpt_take_reward_faults():
            # The step will be skipped: a NaN keeps its loss out of the logged mean (logging_nan_inf_filter).
            loss = torch.full_like(loss, math.nan)
        # Summed on the device (NaN/inf propagate through a sum), read once per optimizer step in
        # _get_grad_norm: no extra host sync per micro-batch.
        step_loss = loss.detach().float().sum()
        self._minigpt_loss_sum = (
            step_loss if self._minigpt_loss_sum is None else self._minigpt_loss_sum + step_loss
        )
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        """transformers calls this once per optimizer step, after clipping and right before
        ``optimizer.step()`` and before any log, evaluation or checkpoint of that step.

        With ``train.max_bad_steps: 0`` (the default) the finiteness check stays on the device: the first
        bad step is recorded there and read at the next log, evaluation, checkpoint or the end of training
        (points that synchronise anyway), so a healthy step costs no host sync; the weights a bad step
        spoils are never saved. Skipping (``max_bad_steps > 0``) must decide before ``optimizer.step()``,
        which costs one scalar read per optimizer step.
        """
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        loss_sum, self._minigpt_loss_sum = self._minigpt_loss_sum, None
        reward_fault, self._minigpt_reward_fault = self._minigpt_reward_fault, None
        device = self.accelerator.device
        loss_t = loss_sum.to(device) if loss_sum is not None else torch.zeros((), device=device)
        norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
        norm_t = torch.as_tensor(norm if norm is not None else 0.0).to(device)
        values = torch.stack([loss_t.float(), norm_t.float()])
        if not self.minigpt_stage.ctx.cfg.train.max_bad_steps:
            self._record_fault(values)
            return grad_norm
        reward_flag = torch.full((1,), float(reward_fault is not None), device=device)
        bad = torch.cat([(~torch.isfinite(values)).float(), reward_flag])
        if self.accelerator.num_processes > 1:  # every process must take the same decision
            bad = self.accelerator.reduce(bad, reduction="sum")
        (loss_value, norm_value), (loss_bad, norm_bad, reward_bad) = values.tolist(), bad.tolist()  # one sync
        if not (loss_bad or norm_bad or reward_bad):
            return grad_norm
        self.minigpt_skipped_steps += 1
        over = self.minigpt_skipped_steps > self.minigpt_stage.ctx.cfg.train.max_bad_steps
        step = self.state.global_step + 1
        if reward_bad:  # named first: a failed reward is the cause of whatever else went wrong in the step
            what = str(reward_fault) if reward_fault is not None else "a reward failed on another process"
            if over:
                raise self._stop_error(f"{what} at step {step}", "bad", "Fix the reward function")
            self._skip_step(what)
            return None
        metric, value = ("train/loss", loss_value) if loss_bad else ("train/grad_norm", norm_value)
        if over:
            raise self._fault_error(metric, value, step)
        self._skip_step(f"{metric} is {value}")
        return None  # nothing was applied, so no gradient norm is logged for this step

    def _record_fault(self, values: torch.Tensor) -> None:
        """Keep (step, metric, value) of the first non-finite step on the device, without a host sync."""
        if self._minigpt_fault is None:
            # The only host-to-device copy: the step counter then advances on the device.
            self._minigpt_step_t = torch.full((), float(self.state.global_step), device=values.device)
            self._minigpt_fault = torch.full((3,), -1.0, device=values.device)
        self._minigpt_step_t += 1  # the step being taken (global_step counts finished ones)
        bad = ~torch.isfinite(values)
        first = bad.any() & (self._minigpt_fault[0] < 0)
        found = torch.stack(
            [self._minigpt_step_t, torch.where(bad[0], 0.0, 1.0), torch.where(bad[0], values[0], values[1])]
        )
        self._minigpt_fault = torch.where(first, found, self._minigpt_fault)

    def _raise_if_faulted(self, everywhere: bool = True) -> None:
        """Read the recorded fault (one sync) and stop the stage if a step was non-finite. ``everywhere``
        False: this process's record only, for a process that stops while the others are not in step."""
        if self._minigpt_fault is None:
            return
        fault = self._minigpt_fault
        if everywhere and self.accelerator.num_processes > 1:  # all stop together, on the earliest fault
            faults = self.accelerator.gather(fault[None]).tolist()
            fault_list = min((f for f in faults if f[0] >= 0), default=faults[0])
        else:
            fault_list = fault.tolist()
        step, metric, value = fault_list
        if step >= 0:
            self.minigpt_skipped_steps = 1
            raise self._fault_error(("train/loss", "train/grad_norm")[int(metric)], value, int(step))

    def _fault_error(self, metric: str, value: float, step: int) -> TrainingError:
        shown = f"{value}" if not math.isfinite(value) else "not finite on another process"
        return self._stop_error(
            f"{metric} is {shown} at step {step}", "non-finite", "Lower train.lr, check the data"
        )

    def _stop_error(self, what: str, kind: str, fix: str) -> TrainingError:
        limit = self.minigpt_stage.ctx.cfg.train.max_bad_steps
        return TrainingError(
            f"{what}: training stopped ({self.minigpt_skipped_steps} {kind} step(s), train.max_bad_steps is "
            f"{limit}); {self._kept_checkpoint()}. {fix}, or raise train.max_bad_steps to skip such steps, "
            "then resume."
        )

    def _kept_checkpoint(self) -> str:
        newest = newest_checkpoint(Path(self.args.output_dir))
        return f"the newest checkpoint ({newest}) is intact" if newest else "no checkpoint had been saved"

    def _skip_step(self, what: str) -> None:
        # Dropping the gradients (None, not zeros) makes the optimizer leave every weight and moment as it
        # is: AdamW skips parameters without a gradient, so weight decay and momentum do not move either.
        # The batch is consumed and the learning-rate schedule advances, as for any other step.
        self.optimizer.zero_grad(set_to_none=True)
        step, limit = self.state.global_step + 1, self.minigpt_stage.ctx.cfg.train.max_bad_steps
        self.minigpt_state.log.note(
            f"step {step}: {what}; optimizer step skipped "
            f"({self.minigpt_skipped_steps} of train.max_bad_steps {limit})"
        )

    # ------------------------------------------------------------ failed rewards (RL stages)

    def _minigpt_pop_reward_faults(self) -> list[RewardFault]:
        """The faults the reward functions recorded since the last call (``train.max_bad_steps`` > 0)."""
        faults: list[RewardFault] = []
        for fn in self.minigpt_rewards:
            if fn.faults:
                faults.extend(fn.faults)
                fn.faults.clear()
        return faults

    def minigpt_take_reward_faults(self) -> bool:
        """Whether a reward failed on this process in the optimizer step being taken (it is then skipped).
        The on-policy loop asks before it updates anything; TRL's trainers are asked after each micro-step."""
        faults = self._minigpt_pop_reward_faults()
        if faults and self._minigpt_reward_fault is None:
            self._minigpt_reward_fault = faults[0]
        return self._minigpt_reward_fault is not None

    def evaluate(self, *args, **kwargs):
        # Evaluation has no step to skip: with train.max_bad_steps: 0 a failed reward stops the stage; above
        # 0 the evaluation goes on with the failed values missing, and the log says so.
        step = self.state.global_step
        try:
            metrics = super().evaluate(*args, **kwargs)
        except RewardFault as fault:
            raise TrainingError(
                f"{fault} at the evaluation after step {step}: training stopped; {self._kept_checkpoint()}. "
                "Fix the reward function, or raise train.max_bad_steps to go on without such values, then "
                "resume."
            ) from None
        for fault in self._minigpt_pop_reward_faults():
            self.minigpt_state.log.note(
                f"evaluation after step {step}: {fault}; this evaluation's reward metrics are incomplete"
            )
        return metrics

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # Before anything reads, logs or saves the weights of this step: stop if a step was non-finite.
        control = self.control
        if (
            control.should_log
            or control.should_save
            or control.should_evaluate
            or control.should_training_stop
        ):
            self._raise_if_faulted()
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        self._raise_if_faulted()  # whatever ended the loop, spoiled weights are never exported
        self.minigpt_sync_tokens()  # the steps after the last log step
        return result

    def _run_epoch(self, *args, **kwargs):
        # transformers' epoch loop runs one optimizer step before it compares global_step with max_steps, so
        # a run resumed from the checkpoint of its last step (killed while exporting or evaluating) would
        # train one step more than the uninterrupted run. Pinned by tests/reliability/test_resume_exact.py.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    # ------------------------------------------------------------ global token count

    def minigpt_sync_tokens(self) -> int:
        """Add the tokens every process counted since the last call to ``state.num_input_tokens_seen`` and
        return it. Every process must call this (it is a collective with several processes).

        The count is kept global and identical on every process, so the checkpoint the main process writes
        holds the whole job's count and a resume with any number of processes continues it. (TRL's RL
        trainers add their already gathered counts to the same field directly.)"""
        local, self._minigpt_local_tokens = self._minigpt_local_tokens, 0
        if self.accelerator.num_processes > 1:
            (local,) = sum_over_processes([local], self.accelerator.device)
        self.state.num_input_tokens_seen += int(local)
        return int(self.state.num_input_tokens_seen)

    # ------------------------------------------------------------ atomic checkpoints

    def _get_output_dir(self, trial):
        # While a checkpoint is being written, transformers (and TRL's overrides) put "checkpoint-N" under
        # the staging folder instead of the real checkpoints folder; see _save_checkpoint.
        if self._minigpt_staging is not None:
            return str(self._minigpt_staging)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write ``checkpoints/checkpoint-N.tmp-<id>/checkpoint-N`` with transformers' own code, then publish it
        as ``checkpoints/checkpoint-N`` with one rename and only then delete old checkpoints: a kill at any
        moment leaves the previous complete checkpoint loadable, and a half-written one under a name that
        resume never picks. Rotation (``save_total_limit``) runs on complete checkpoints by step number;
        transformers' own rotation only ever sees the staging folder, which holds one checkpoint."""
        self._raise_if_faulted()  # never save weights a non-finite step has touched
        self.minigpt_sync_tokens()  # trainer_state.json must hold the global count up to this step
        ckpt_dir = Path(self._get_output_dir(trial))
        with writing(ckpt_dir, f"saving checkpoint-{self.state.global_step}"):
            self._save_checkpoint_atomically(model, trial, ckpt_dir)

    def _save_checkpoint_atomically(self, model, trial, ckpt_dir: Path) -> None:
        step = self.state.global_step
        staging = staging_dir(ckpt_dir, step, self._minigpt_run_token())
        final = ckpt_dir / f"checkpoint-{step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # a leftover of a killed run that had our id
            staging.mkdir(parents=True)
        self._minigpt_barrier()
        self._minigpt_staging = staging
        try:
            super()._save_checkpoint(model, trial)
            self._minigpt_barrier()  # every process has written its part (e.g. its RNG state)
            if self.args.should_save:
                staged = staging / final.name
                (staged / MINIGPT_STATE).write_text(
                    json.dumps({"skipped_steps": self.minigpt_skipped_steps}), encoding="utf-8"
                )
                publish_checkpoint(staged, final)
        finally:
            self._minigpt_staging = None
            if self.args.should_save:  # a failed save (a full disk) leaves no partial copy taking space
                shutil.rmtree(staging, ignore_errors=True)
        if self.args.should_save:
            best = self.state.best_model_checkpoint
            rotate_checkpoints(ckpt_dir, self.args.save_total_limit, protect=[Path(best)] if best else [])
        self._minigpt_barrier()

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / MINIGPT_STATE
        if path.exists():  # the bad-step budget is per run, not per process lifetime
            self.minigpt_skipped_steps = int(json.loads(path.read_text()).get("skipped_steps", 0))

    def _minigpt_run_token(self) -> str:
        """The staging folder's id: the main process's pid, the same on every process (all write into it)."""
        if self._minigpt_token is None:
            token = [os.getpid()]
            if self.accelerator.num_processes > 1:
                from accelerate.utils import broadcast_object_list

                broadcast_object_list(token, from_process=0)
            self._minigpt_token = str(token[0])
        return self._minigpt_token

    def _minigpt_barrier(self) -> None:
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()


@cache
def hooked(base: type, *mixins: type, **attributes: Any) -> type:
    """``base`` (a transformers/TRL trainer class) with the project's hooks first in its bases, then ``mixins``,
    and class ``attributes``; one class per combination."""
    bases = (MiniGPTTrainerMixin, *mixins, base)
    name = "Hooked" + "".join(m.__name__ for m in mixins) + base.__name__
    cls = type(name, bases, {**attributes, "__module__": __name__})
    globals()[cls.__name__] = cls  # found by name, so it pickles
    return cls


# The private methods of transformers/TRL that the project overrides, with the parameters it relies on; pinned
# against the installed versions by tests/stages/test_trainer_hooks.py (an upgrade that renames or reshapes
# one fails there, not silently mid-run).
PRIVATE_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "transformers:Trainer": {
        "_get_grad_norm": ("self", "model", "grad_norm"),
        "_maybe_log_save_evaluate": (
            "self",
            "tr_loss",
            "grad_norm",
            "model",
            "trial",
            "epoch",
            "ignore_keys_for_eval",
            "start_time",
            "learning_rate",
        ),
        "_run_epoch": (
            "self",
            "model",
            "epoch",
            "train_dataloader",
            "steps_in_epoch",
            "num_update_steps_per_epoch",
            "trial",
            "ignore_keys_for_eval",
            "start_time",
            "resume_from_checkpoint",
            "epochs_trained",
            "steps_trained_in_current_epoch",
        ),
        "_get_output_dir": ("self", "trial"),
        "_save_checkpoint": ("self", "model", "trial"),
        "_load_optimizer_and_scheduler": ("self", "checkpoint"),
    },
    "trl:GRPOTrainer": {
        "_generate": ("self", "prompts"),
        "_generate_and_score_completions": ("self", "inputs"),
    },
    "trl:RLOOTrainer": {
        "_generate": ("self", "prompts"),
        "_generate_and_score_completions": ("self", "inputs"),
    },
}
