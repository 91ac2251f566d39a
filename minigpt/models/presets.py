"""Model presets: standard Hugging Face configs (Qwen3 family; MoE through Qwen3-MoE).

Each preset is a plain dict of HF config fields, so a saved model is an ordinary HF folder. Any field can be
overridden from a stage config (``model.overrides``). ``vocab_size`` follows the tokenizer unless overridden.
"""

from __future__ import annotations

from typing import Any

from minigpt.registry import PRESETS


def _dense(
    hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int, **extra: Any
) -> dict:
    return {
        "model_type": "qwen3",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        **extra,
    }


# ~1M parameters with a 1K vocab: for tests and the tic-tac-toe task on a laptop CPU.
PRESETS.register("tiny")(_dense(128, 4, 4, 2, 384, 1024, max_position_embeddings=512))
# MiniMind2-small shape: 512 x 8, 8 heads / 2 KV heads, vocab 6400 (~26M).
PRESETS.register("minimind-26m")(_dense(512, 8, 8, 2, 1408, 6400))
# MiniMind2 shape: 768 x 16, vocab 6400 (~104M).
PRESETS.register("minimind-104m")(_dense(768, 16, 8, 2, 2048, 6400))
# A GPT-2-small-sized dense model with a 32K vocab (~110M with tied embeddings).
PRESETS.register("base-100m")(_dense(768, 12, 12, 4, 2048, 32768, max_position_embeddings=4096))
# Mixture of experts: 4 experts, 2 active per token, on the Qwen3-MoE config (~145M total).
PRESETS.register("moe-145m")(
    _dense(
        640,
        8,
        8,
        2,
        2176,
        6400,
        model_type="qwen3_moe",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=2176,
        decoder_sparse_step=1,
        norm_topk_prob=True,
        router_aux_loss_coef=0.01,
        output_router_logits=False,
    )
)


def preset_config(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    config = dict(PRESETS.get(name))
    config.update(overrides or {})
    return config
