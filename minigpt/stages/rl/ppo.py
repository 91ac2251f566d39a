"""PPO with a learned critic, on the hand-written on-policy loop (``minigpt.stages.rl.onpolicy.onpolicy_loop``).

Not TRL's PPOTrainer: it is experimental in TRL 1.16, requires a reward model (no reward functions) and
cannot resume from a checkpoint. Here rewards come from the reward registry (``algo.rewards``), from a
reward-model folder written by our ``reward`` stage (``algo.reward_model``), or both, weighted.

Per token: reward ``−beta·(log π_old − log π_ref)``, plus the sequence score on the completion's last token;
token-level GAE (``gamma``, ``lam``) over the critic's values; advantages whitened over the rollout; then
``ppo_epochs`` passes over ``num_minibatches`` shuffled minibatches with the clipped policy loss (``epsilon``)
and the clipped value loss (``cliprange_value``, weighted by ``vf_coef``), stopping the passes early once a
minibatch's approximate KL to the rollout policy exceeds ``target_kl``. The critic is the policy's network
body (or a reward model's) with a one-output linear head, trained with its own optimizer, learning rate,
schedule and gradient clipping, and saved in every checkpoint; the exported folder holds the actor only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

from minigpt.errors import ConfigError
from minigpt.models.loading import remote_code
from minigpt.stages.preference.reward import score
from minigpt.stages.rl.onpolicy.onpolicy_loop import OnPolicyTrainer, disable_dropout
from minigpt.stages.rl.onpolicy.onpolicy_ops import (
    clipped_policy_losses,
    clipped_value_losses,
    explained_variance,
    gae,
    last_token_index,
    masked_whiten,
)
from minigpt.stages.rl.onpolicy.onpolicy_stage import OnPolicyStage
from minigpt.stages.rl.onpolicy.rollout import Rollout, sequence_logps
from minigpt.stages.rl.rl_params import PPOParams
from minigpt.stages.trainer_hooks import hooked

REWARD_MODEL_LABEL = "reward_model"


class ValueModel(nn.Module):
    """A network body (any ``AutoModel``) with a one-output linear head: one value per position."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return self.head(out.last_hidden_state).squeeze(-1).float()


def _load_classifier(path: str, key: str, trust_remote_code: bool) -> Any:
    folder = Path(path).expanduser()
    if not (folder / "config.json").exists():
        raise ConfigError(f"algo.{key}: {folder} is not a model folder (no config.json)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), use_safetensors=True, trust_remote_code=remote_code(folder, trust_remote_code)
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"algo.{key}: cannot load {folder} as a sequence classifier: {exc}") from None
    if model.config.num_labels != 1:
        raise ConfigError(f"algo.{key}: {folder} has {model.config.num_labels} outputs; a reward model has 1")
    return model


def build_critic(policy: Any, init: str | None, vocab: int, trust_remote_code: bool = False) -> ValueModel:
    """The critic: a copy of the policy's body with a zero head (it starts predicting 0 everywhere), or a
    reward model's body and head (``init``), which must read the policy's token ids. ``trust_remote_code``
    is the stage's ``model.trust_remote_code``."""
    if init is None:
        policy = (
            policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        )  # a LoRA-wrapped one
        body = copy.deepcopy(getattr(policy, policy.base_model_prefix))
        critic = ValueModel(body, policy.config.hidden_size)
        nn.init.zeros_(critic.head.weight)
        nn.init.zeros_(critic.head.bias)
        return critic.to(policy.dtype)
    rm = _load_classifier(init, "critic_init", trust_remote_code)
    if rm.get_input_embeddings().weight.shape[0] < vocab:
        raise ConfigError(f"algo.critic_init: {init} has a smaller vocabulary than the policy's tokenizer")
    critic = ValueModel(getattr(rm, rm.base_model_prefix), rm.config.hidden_size)
    with torch.no_grad():
        critic.head.weight.copy_(rm.score.weight)
        if getattr(rm.score, "bias", None) is not None:
            critic.head.bias.copy_(rm.score.bias)
        else:
            critic.head.bias.zero_()
    return critic


class PPOAlgorithm(OnPolicyTrainer):
    """Actor-critic PPO on the shared loop (see the module docstring)."""

    def __init__(
        self, *, critic: ValueModel, reward_model: Any = None, reward_tokenizer: Any = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.update_epochs = self.params.ppo_epochs
        self.critic = critic.to(self.args.device)
        disable_dropout(self.critic)
        self.reward_model = reward_model
        if reward_model is not None:
            self.reward_model = reward_model.to(self.args.device).eval().requires_grad_(False)
        self.reward_tokenizer = reward_tokenizer
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self.critic_scheduler: Any = None
        self._critic_norms: list[Tensor] = []

    # ------------------------------------------------------------ critic optimizer and schedule

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.critic_optimizer is None:
            decay = set(self.get_decay_parameter_names(self.critic))
            named = [(n, p) for n, p in self.critic.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            self.critic_optimizer = torch.optim.AdamW(
                groups,
                lr=self.params.critic_lr or self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.critic_scheduler is None:
            self.critic_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=self.critic_optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return scheduler

    # ------------------------------------------------------------ rewards, values, advantages

    def extra_rewards(
        self, rows: list[dict[str, Any]], prompts: list[list[dict[str, str]]], texts: list[str]
    ) -> dict[str, tuple[float, Tensor]]:
        if self.reward_model is None:
            return {}
        conversations = [
            p + [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts, strict=True)
        ]
        with self.compute_loss_context_manager():
            values = score(self.reward_model, self.reward_tokenizer, conversations)
        return {REWARD_MODEL_LABEL: (self.params.reward_model_weight, values)}

    def _values(self, rollout: Rollout) -> Tensor:
        ids, mask, pos = rollout.sequences()
        width = rollout.completion_ids.shape[1]
        values = self.critic(ids, mask, pos)[:, -(width + 1) : -1]  # V(prompt + completion[:t])
        return values * rollout.completion_mask

    @torch.no_grad()
    def prepare_update(self, rollout: Rollout) -> None:
        p, mask = self.params, rollout.completion_mask.float()
        size = self.args.per_device_train_batch_size
        with self.compute_loss_context_manager():
            values = torch.cat(
                [
                    self._values(rollout.select(torch.arange(i, min(i + size, len(rollout)))))
                    for i in range(0, len(rollout), size)
                ]
            )
        rewards = torch.zeros_like(mask)
        if "ref_logps" in rollout.token:
            kl = (rollout.token["old_logps"] - rollout.token["ref_logps"]) * mask
            rewards = rewards - p.beta * kl
            self.minigpt_state.accumulate("train/kl_ref", float(kl.sum(1).mean()))
        rows = torch.arange(len(rollout), device=mask.device)
        rewards[rows, last_token_index(mask)] += rollout.sample["rewards"].to(rewards.dtype)
        advantages, returns = gae(rewards, values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        rollout.token.update(values=values, advantages=advantages, returns=returns)
        self.minigpt_state.accumulate(
            "train/value_explained_variance", float(explained_variance(values, returns, mask))
        )

    # ------------------------------------------------------------ losses and steps

    def minibatch_loss(self, model, chunk: Rollout, n_tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p, mask, tok = self.params, chunk.completion_mask.float(), chunk.token
        logps = sequence_logps(model, chunk, p.temperature, self._keep_logits)
        losses, clipped, approx_kl = clipped_policy_losses(
            logps, tok["old_logps"], tok["advantages"], p.epsilon, p.epsilon_high or p.epsilon
        )
        actor = (losses * mask).sum() / n_tokens
        values = self._values(chunk)
        value_losses = clipped_value_losses(values, tok["values"], tok["returns"], p.cliprange_value)
        critic = (value_losses * mask).sum() / n_tokens
        stats = {
            "actor_loss": actor.detach(),
            "critic_loss": critic.detach(),
            "clipfrac": (clipped * mask).sum() / n_tokens,
            "approx_kl": (approx_kl * mask).sum() / n_tokens,
        }
        return actor + p.vf_coef * critic, stats

    def stop_early(self, stats: dict[str, Tensor]) -> bool:
        target = self.params.target_kl
        return target is not None and float(stats["approx_kl"]) > target

    def after_backward(self, final: bool) -> None:
        """One critic step per minibatch (the actor's last step is the Trainer's)."""
        params = [p for p in self.critic.parameters() if p.grad is not None]
        if self.accelerator.num_processes > 1:  # the critic is not wrapped for data parallelism
            for param in params:
                param.grad = self.accelerator.reduce(param.grad, reduction="mean")
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:  # fp16: accelerator.backward scaled the loss for the actor's optimizer
            for param in params:
                param.grad.div_(scaler.get_scale())
        limit = self.params.critic_max_grad_norm
        limit = self.args.max_grad_norm if limit is None else limit
        norm = torch.nn.utils.clip_grad_norm_(params, limit if limit > 0 else float("inf"))
        if self.check_finite({"train/critic_grad_norm": norm}):
            self.critic_optimizer.step()
            self._critic_norms.append(norm.detach().float())
        self.critic_optimizer.zero_grad(set_to_none=True)

    def finish_update(self) -> None:
        state = self.minigpt_state
        state.accumulate("train/actor_lr", self._get_learning_rate())
        state.accumulate("train/critic_lr", self.critic_scheduler.get_last_lr()[0])
        if self._critic_norms:
            state.accumulate("train/critic_grad_norm", float(torch.stack(self._critic_norms).mean()))
        self._critic_norms = []
        self.critic_scheduler.step()

    # ------------------------------------------------------------ checkpoints

    def algo_state(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "critic_scheduler": self.critic_scheduler.state_dict(),
        }

    def load_algo_state(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.critic_scheduler.load_state_dict(state["critic_scheduler"])


class PPOStage(OnPolicyStage):
    name = "ppo"
    trainer_class = hooked(PPOAlgorithm)

    def trainer_kwargs(self, train_ds) -> dict[str, Any]:
        p: PPOParams = self.ctx.params
        tokenizer = self.ctx.tokenizer
        reward_model = reward_tokenizer = None
        if p.reward_model is not None:
            trust = self.ctx.cfg.model.trust_remote_code
            reward_model = _load_classifier(p.reward_model, "reward_model", trust)
            folder = Path(p.reward_model).expanduser()
            has_tokenizer = (folder / "tokenizer_config.json").exists()
            reward_tokenizer = (
                AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote_code(folder, trust))
                if has_tokenizer
                else tokenizer
            )
            if reward_tokenizer.pad_token is None:
                reward_tokenizer.pad_token = reward_tokenizer.eos_token
            self.ctx.state.log.note(f"reward model {folder} × {p.reward_model_weight:g}")
        critic = build_critic(
            self.ctx.model, p.critic_init, len(tokenizer), self.ctx.cfg.model.trust_remote_code
        )
        lr = p.critic_lr or self.ctx.cfg.train.lr
        self.ctx.state.log.note(f"critic: {p.critic_init or 'the policy body'} + a value head, lr {lr:g}")
        return {"critic": critic, "reward_model": reward_model, "reward_tokenizer": reward_tokenizer}
