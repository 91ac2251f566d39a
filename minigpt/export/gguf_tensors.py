"""Hugging Face weights → GGUF tensors for the architectures miniGPT trains (Qwen3, Qwen3-MoE) and Llama.

GGUF names follow llama.cpp (``blk.N.attn_q`` ...). The one change to the numbers themselves is Llama's
query/key permutation: Hugging Face's rotary embedding rotates the two halves of each head
(``rotate_half``), while llama.cpp's ``llama`` architecture rotates adjacent pairs; permuting the rows of
``q_proj``/``k_proj`` makes the pair rotation compute the same attention. llama.cpp runs ``qwen3`` and
``qwen3moe`` with the half rotation (NeoX style), so their weights are written as they are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from minigpt.errors import ModelError

# Hugging Face model_type → llama.cpp architecture name.
ARCHITECTURES = {"qwen3": "qwen3", "qwen3_moe": "qwen3moe", "llama": "llama"}
# Architectures whose rotary embedding llama.cpp applies to adjacent pairs (needs the permutation).
PAIRWISE_ROPE = {"llama"}

_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",  # MoE router
    "mlp.experts.down_proj": "ffn_down_exps.weight",
}
_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")
_FUSED_EXPERTS = "mlp.experts.gate_up_proj"  # [experts, 2 * intermediate, hidden]: gate rows, then up rows


@dataclass(frozen=True)
class Shape:
    """The config numbers the tensor conversion needs."""

    model_type: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied: bool


def shape_of(config: Any) -> Shape:
    heads = int(config.num_attention_heads)
    return Shape(
        model_type=config.model_type,
        num_heads=heads,
        num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )


def pairwise_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorder each head's output rows from halves (0..d/2-1 | d/2..d-1) to pairs (0, d/2, 1, d/2+1, ...):
    rotating pair (2i, 2i+1) of the result equals rotating (i, i + d/2) of the input."""
    rows = weight.shape[0]
    if rows % num_heads or (rows // num_heads) % 2:
        raise ModelError(f"cannot split {rows} projection rows into {num_heads} heads of even size")
    half = rows // num_heads // 2
    by_head = weight.reshape(num_heads, 2, half, *weight.shape[1:])
    return by_head.swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(state: dict[str, np.ndarray], shape: Shape) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight in ``state`` (Hugging Face names, float32 arrays); a weight
    with no GGUF counterpart (a bias, an unknown module) is an error rather than silently dropped."""
    pairwise = shape.model_type in PAIRWISE_ROPE
    for key, value in state.items():
        if key == "lm_head.weight" and shape.tied:
            continue  # llama.cpp reuses token_embd when output is absent
        if key in _GLOBAL:
            yield _GLOBAL[key], value
            continue
        match = _LAYER_KEY.fullmatch(key)
        if match is None or (match.group(2) not in _LAYER and match.group(2) != _FUSED_EXPERTS):
            raise ModelError(
                f"weight '{key}' {tuple(value.shape)} has no GGUF counterpart for a {shape.model_type} "
                "model: this checkpoint cannot be exported to GGUF"
            )
        block, name = match.group(1), match.group(2)
        if name == _FUSED_EXPERTS:
            gate, up = np.split(value, 2, axis=1)
            yield f"blk.{block}.ffn_gate_exps.weight", gate
            yield f"blk.{block}.ffn_up_exps.weight", up
            continue
        if pairwise and name == "self_attn.q_proj.weight":
            value = pairwise_rope_rows(value, shape.num_heads)
        elif pairwise and name == "self_attn.k_proj.weight":
            value = pairwise_rope_rows(value, shape.num_kv_heads)
        yield f"blk.{block}.{_LAYER[name]}", value
