"""Fused LM head + cross-entropy, computed in row chunks: the ``[tokens, vocab]`` logits are never held in full.

The plain path (transformers' ``ForCausalLMLoss``) materialises fp32 logits for every position, then their
softmax and its gradient: for a 151K vocabulary and 32K tokens that is ~19 GB per copy, for the 26M preset
(vocab 6,400) ~0.8 GB, and positions whose label is ignored (SFT prompts, padding) pay the same. Here the
head's matmul, the log-softmax and its gradient are done together, a chunk of label rows at a time, and only
the gradients (``[rows, hidden]`` and ``[vocab, hidden]``) are kept for the backward pass. Rows whose label is
ignored are not computed at all.

Written by hand because liger-kernel's fused linear cross-entropy needs Triton (GPU only) and is not on
our GPU machine's Python; this works on any device, under DDP and with a compiled body (the loss itself
runs eagerly: its chunk loop is excluded from ``torch.compile``).

How it reaches the model: the stage's trainer calls the model without ``labels`` while the head module's
``forward`` is replaced (:func:`head_computes_loss`) by one that returns the loss instead of logits. The model
call itself is unchanged, so DDP's hooks, FSDP's unsharding and ``torch.compile`` wrap it as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from minigpt.errors import ConfigError

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 25
"""Logit elements per chunk by default (32M: 128 MB in fp32), whatever the vocabulary size."""

# Config fields with which a model transforms the head's output before the loss: the fused path would skip
# that transformation, so such models are refused rather than trained on a different loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ CE(hidden @ weightᵀ (+ bias), labels) / denominator over the given rows (every label valid).

    The gradients are computed in the forward pass, chunk by chunk, since the loss is a scalar at the end of
    the graph; backward only scales them by the incoming gradient. Logits and softmax are fp32; the matmuls
    run in ``dtype`` (bf16 under autocast), with the weight gradient accumulated in fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, denominator, chunk_rows, dtype):
        rows = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        w = weight.to(dtype)
        for start in range(0, rows, chunk_rows):
            h = hidden[start : start + chunk_rows].to(dtype)
            y = labels[start : start + chunk_rows]
            logits = (h @ w.T).float()
            if bias is not None:
                logits = logits + bias.float()
            log_z = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, y[:, None]).squeeze(1)
            total += (log_z - picked).sum()
            correct += (logits.argmax(-1) == y).sum()
            # d(CE)/d(logits) = softmax − one-hot, scaled here by 1/denominator; in place over the logits
            grad = logits.sub_(log_z[:, None]).exp_()
            grad[torch.arange(len(y), device=y.device), y] -= 1.0
            grad.div_(denominator)
            g = grad.to(dtype)
            grad_hidden[start : start + chunk_rows] = (g @ w).to(hidden.dtype)
            if dtype == torch.float32:
                grad_weight.addmm_(g.T, h)  # no [vocab, hidden] temporary per chunk
            else:
                grad_weight += (g.T @ h).float()
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return total / denominator, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        g_bias = None if grad_bias is None else (grad_bias * grad_loss).to(ctx.weight_dtype)
        return (
            grad_hidden * grad_loss.to(grad_hidden.dtype),
            (grad_weight * grad_loss).to(ctx.weight_dtype),
            g_bias,
            None,
            None,
            None,
            None,
        )


@dataclass
class Targets:
    """The shifted labels of a batch's valid positions, found before the forward pass: ``nonzero`` makes the
    host wait for the device, which right after the batch's copy costs nothing, but inside the head (after
    the whole body's kernels were queued) would stall the launch of the backward pass."""

    rows: Tensor
    """Flat positions (batch × seq) whose next-token label is not ignored."""
    labels: Tensor
    count: int


def shifted_targets(labels: Tensor) -> Targets:
    """Next-token targets as transformers' ``ForCausalLMLoss`` shifts them (the last position has none)."""
    shifted = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    rows = (shifted != IGNORE_INDEX).nonzero().squeeze(1)
    return Targets(rows, shifted[rows], int(rows.numel()))


@torch.compiler.disable
def linear_cross_entropy(
    hidden: Tensor,
    head: nn.Linear,
    targets: Targets,
    num_items: Tensor | int | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy of ``head(hidden)`` (``hidden``: ``[batch, seq, dim]``), equal to
    transformers' ``ForCausalLMLoss``: the sum over valid positions divided by ``num_items`` when given
    (gradient accumulation over a global token count), else their mean.

    Returns (loss, number of valid positions whose argmax is the label)."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    device = hidden.device
    if num_items is None:
        denominator = torch.tensor(float(targets.count), device=device)
    else:
        denominator = torch.as_tensor(num_items, device=device).float()
    if targets.count == 0:  # as the plain path: 0 / num_items, or the NaN mean of nothing; zero gradients
        zero = (flat.sum() + head.weight.sum()).float() * 0.0
        return zero / denominator, torch.zeros((), dtype=torch.long, device=device)
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
    chunk_rows = max(1, chunk_elements // head.weight.shape[0])
    with torch.autocast(device.type, enabled=False):
        return _LinearCrossEntropy.apply(
            flat.index_select(0, targets.rows),
            head.weight,
            head.bias,
            targets.labels,
            denominator,
            chunk_rows,
            dtype,
        )


def check_supported(model: Any) -> nn.Linear:
    """The model's output head, or a ConfigError naming ``train.loss`` when the fused path cannot match the
    model's own loss (a head that is not a plain linear layer, e.g. LoRA on ``lm_head``, or a model that
    rescales its logits)."""
    config = getattr(model, "config", None)
    for field in _LOGIT_TRANSFORMS:
        value = getattr(config, field, None)
        if value not in (None, 1, 1.0):
            raise ConfigError(
                f"train.loss: chunked: this model transforms its logits ({field}={value}), which the fused "
                "head + cross-entropy does not; use train.loss: plain"
            )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not nn.Linear:
        raise ConfigError(
            f"train.loss: chunked needs the output head to be a plain torch.nn.Linear, found "
            f"{type(head).__name__} (e.g. LoRA on lm_head); use train.loss: plain"
        )
    return head


@contextmanager
def head_computes_loss(
    head: nn.Linear, targets: Targets, num_items: Tensor | int | None, chunk_elements: int
) -> Iterator[dict[str, Any]]:
    """While active, ``head(hidden)`` returns the cross-entropy against ``targets`` instead of logits; the
    result dict gets ``loss`` and ``correct``. The patch is an instance attribute, so the module,
    its parameters and its state dict are untouched and removing it restores the class's ``forward``."""
    result: dict[str, Any] = {}

    def forward(hidden: Tensor) -> Tensor:
        loss, correct = linear_cross_entropy(hidden, head, targets, num_items, chunk_elements)
        result.update(loss=loss, correct=correct)
        return loss

    head.forward = forward
    try:
        yield result
    finally:
        del head.forward
