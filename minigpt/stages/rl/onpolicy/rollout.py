"""Rollouts of the on-policy loop: the batch container, sampling, decoding, reward scoring and per-token
log-probabilities (``minigpt.stages.rl.onpolicy.onpolicy_loop`` drives them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig

from minigpt.stages.rl.generation_settings import static_cache_kwargs
from minigpt.stages.rl.onpolicy.onpolicy_ops import (
    completion_mask,
    pad_left_2d,
    pad_right,
    position_ids,
    token_logps,
)
from minigpt.stages.rl.rl_params import SamplingParams

INDEX_COLUMN = "_minigpt_index"
"""A column the loop adds to the training prompts (their position in the dataset): the SPO tracker's key.
Never passed to reward functions."""
HIDDEN_COLUMNS = ("prompt", INDEX_COLUMN)


def keep_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collator: a micro-batch is the list of prompt rows itself (tokenized when it is sampled)."""
    return list(rows)


@dataclass
class Rollout:
    """One optimizer step's samples: left-padded prompts and right-padded completions (the mask includes the
    end token), plus named tensors: ``token`` ones are ``[n, L]`` per completion token (``old_logps``,
    ``ref_logps``, an algorithm's ``advantages``...), ``sample`` ones are indexed by sample first
    (``rewards``, ``reward_parts``, ...)."""

    rows: list[dict[str, Any]]
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    pad_id: int
    token: dict[str, Tensor] = field(default_factory=dict)
    sample: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def _new(self, rows, prompt_ids, prompt_mask, completion_ids, completion_mask, token, sample) -> Rollout:
        return Rollout(
            rows, prompt_ids, prompt_mask, completion_ids, completion_mask, self.pad_id, token, sample
        )

    def select(self, index: Tensor) -> Rollout:
        """The samples at ``index`` (a 1-D tensor of positions), in that order."""
        index = index.to(self.prompt_ids.device)
        return self._new(
            [self.rows[i] for i in index.tolist()],
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.completion_ids[index],
            self.completion_mask[index],
            {k: v[index] for k, v in self.token.items()},
            {k: v[index] for k, v in self.sample.items()},
        )

    def trimmed(self) -> Rollout:
        """Drop prompt columns that are padding in every row and completion columns past the longest one."""
        used = self.prompt_mask.sum(0).nonzero()
        first = int(used.min()) if len(used) else 0
        width = max(int(self.completion_mask.sum(1).max()), 1)
        if first == 0 and width == self.completion_ids.shape[1]:
            return self
        return self._new(
            self.rows,
            self.prompt_ids[:, first:],
            self.prompt_mask[:, first:],
            self.completion_ids[:, :width],
            self.completion_mask[:, :width],
            {k: v[:, :width] for k, v in self.token.items()},
            dict(self.sample),
        )

    @staticmethod
    def cat(parts: list[Rollout]) -> Rollout:
        """One rollout from several (the micro-steps of one optimizer step), re-padded to common widths."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return first._new(
            [row for p in parts for row in p.rows],
            pad_left_2d([p.prompt_ids for p in parts], first.pad_id),
            pad_left_2d([p.prompt_mask for p in parts], 0),
            pad_right([p.completion_ids for p in parts], first.pad_id),
            pad_right([p.completion_mask for p in parts], 0),
            {k: pad_right([p.token[k] for p in parts], 0.0) for k in first.token},
            {k: torch.cat([p.sample[k] for p in parts]) for k in first.sample},
        )

    def sequences(self) -> tuple[Tensor, Tensor, Tensor]:
        """(input_ids, attention_mask, position_ids) of prompt + completion."""
        ids = torch.cat([self.prompt_ids, self.completion_ids], dim=1)
        mask = torch.cat([self.prompt_mask, self.completion_mask], dim=1)
        return ids, mask, position_ids(mask)


# ---------------------------------------------------------------- sampling and decoding


def encode_prompts(tokenizer: Any, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each prompt rendered with the chat template and the assistant header."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def build_generation_config(
    params: SamplingParams, sample: bool, eos_id: int, pad_id: int
) -> GenerationConfig:
    """How the loop samples (``sample``: the ``algo`` temperature/top-p/top-k; else greedy), with the
    ``algo.cache_implementation`` KV cache. A fresh config per call: the model's own ``generation_config``
    (saved with the exported folder) is never touched."""
    kwargs: dict[str, Any] = {"do_sample": False}
    if sample:
        kwargs = {
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
        }
    return GenerationConfig(
        max_new_tokens=params.max_completion_length,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
        **kwargs,
        **static_cache_kwargs(params),
    )


@torch.no_grad()
def sample_completions(
    policy: Any, prompt_ids: Tensor, prompt_mask: Tensor, generation_config: Any, eos_id: int
) -> tuple[Tensor, Tensor]:
    """(completion ids ``[n, L]``, mask up to and including the first end token) sampled from ``policy``."""
    was_training = policy.training
    policy.eval()
    try:
        out = policy.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation_config
        )
    finally:
        policy.train(was_training)
    completions = out[:, prompt_ids.shape[1] :]
    if completions.shape[1] == 0:  # cannot happen with max_new_tokens ≥ 1; keep shapes valid anyway
        completions = torch.full_like(prompt_ids[:, :1], eos_id)
    return completions, completion_mask(completions, eos_id)


def decode_completions(
    tokenizer: Any, completion_ids: Tensor, mask: Tensor, drop: set[int]
) -> tuple[list[str], list[list[int]]]:
    """(texts, id lists). Texts keep special tokens other than end/padding (``<think>`` is special in our
    tokenizers and a format reward must see it); id lists are the generated ids, end token included."""
    ids = [row[: int(m.sum())].tolist() for row, m in zip(completion_ids, mask, strict=True)]
    texts = [tokenizer.decode([t for t in seq if t not in drop], skip_special_tokens=False) for seq in ids]
    return texts, ids


def sequence_logps(
    model: Any, rollout: Rollout, temperature: float, keep_logits: bool, chunk: int | None = None
) -> Tensor:
    """Per-token log-probs ``[n, L]`` of the completions under ``model`` (0 where masked); gradients flow
    unless called under ``torch.no_grad``. ``chunk`` splits the batch to bound memory."""
    n = len(rollout)
    chunk = chunk or n
    outs = []
    width = rollout.completion_ids.shape[1]
    for start in range(0, n, chunk):
        part = rollout.select(torch.arange(start, min(n, start + chunk)))
        ids, mask, pos = part.sequences()
        kwargs = {"logits_to_keep": width + 1} if keep_logits else {}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kwargs).logits
        logits = logits[:, -(width + 1) : -1]
        outs.append(token_logps(logits, part.completion_ids, temperature) * part.completion_mask)
    return torch.cat(outs)


# ---------------------------------------------------------------- rewards


def reward_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every dataset column but the prompt (and the loop's own index), as keyword lists."""
    return {k: [row.get(k) for row in rows] for k in rows[0] if k not in HIDDEN_COLUMNS}


def to_tensor(values: list[Any], n: int, name: str) -> Tensor:
    """Rewards as a float tensor. ``NamedReward`` has checked them: finite numbers, or NaN for every sample
    when the reward failed and the step is to be skipped (``train.max_bad_steps`` > 0)."""
    if len(values) != n:
        raise ValueError(f"reward '{name}' returned {len(values)} values for {n} completions")
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)


def score_with_functions(
    funcs: list[Any],
    rows: list[dict[str, Any]],
    prompts: list[list[dict[str, str]]],
    texts: list[str],
    id_lists: list[list[int]],
    trainer_state: Any,
) -> dict[str, Tensor]:
    """label → reward per completion, called with the keyword arguments TRL's trainers pass: prompts as
    message lists, completions as ``[{"role": "assistant", "content": text}]``, ``completion_ids``,
    ``trainer_state`` and every dataset column."""
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = reward_columns(rows)
    out = {}
    for fn in funcs:
        values = fn(
            prompts=prompts,
            completions=completions,
            completion_ids=id_lists,
            trainer_state=trainer_state,
            **columns,
        )
        out[fn.__name__] = to_tensor(list(values), len(texts), fn.__name__)
    return out


def weighted_total(parts: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Σ weight × reward per completion; a NaN (a failed reward of a step that is skipped, or evaluated
    with ``train.max_bad_steps`` > 0) counts as 0, as TRL's nansum does."""
    total = torch.zeros_like(next(iter(parts.values())))
    for label, values in parts.items():
        total = total + torch.nan_to_num(values * weights[label], nan=0.0)
    return total
