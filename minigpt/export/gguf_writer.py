"""Write a stage folder (a Hugging Face model folder) as one GGUF file for llama.cpp and ollama.

The model is loaded with transformers (so a LoRA adapter folder is merged and any checkpoint format
transformers reads is covered), its weights are renamed for llama.cpp (:mod:`minigpt.export.gguf_tensors`)
and the tokenizer becomes GGUF metadata (:mod:`minigpt.export.gguf_vocab`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from minigpt.errors import ModelError
from minigpt.export.gguf_tensors import ARCHITECTURES, gguf_tensors, shape_of
from minigpt.export.gguf_vocab import vocab_of

DTYPES = ("f16", "f32")
# Kept in float32 at f16 as well, as llama.cpp's converter does: tiny, and the router decides which
# experts run, so its rounding would change more than a weight's.
_F32_ALWAYS = ("ffn_gate_inp.weight",)


def load_for_export(checkpoint: Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(float32 model on the CPU, tokenizer) from a stage folder, merged or LoRA adapter."""
    import torch

    from minigpt.lora import is_adapter_folder, load_adapter_folder
    from minigpt.models.loading import ALLOW_ON_CLI, check_model_folder, load_causal_lm, load_tokenizer

    if not checkpoint.is_dir():
        raise ModelError(f"{checkpoint}: no such checkpoint folder")
    tokenizer = load_tokenizer(str(checkpoint), trust_remote_code=trust_remote_code, allow=ALLOW_ON_CLI)
    if is_adapter_folder(checkpoint):
        return load_adapter_folder(checkpoint, torch.float32, "eager", trust_remote_code), tokenizer
    check_model_folder(checkpoint)
    model = load_causal_lm(checkpoint, torch.float32, trust_remote_code)
    return model, tokenizer


def _rope_theta(config: Any, where: str) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    kind = rope.get("rope_type", "default")
    if kind != "default":
        raise ModelError(f"{where}: rope_type '{kind}' (rope scaling) is not supported by the GGUF export")
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ModelError(f"{where}: config.json has no rope_theta")
    return float(theta)


def check_exportable(config: Any, where: str) -> None:
    """Refuse what llama.cpp's architecture would compute differently from transformers."""
    if config.model_type not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(
            f"{where}: model_type '{config.model_type}' cannot be exported to GGUF (only {known})"
        )
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ModelError(
            f"{where}: hidden_act '{config.hidden_act}' (llama.cpp's {config.model_type} is SiLU)"
        )
    if getattr(config, "use_sliding_window", False):
        raise ModelError(f"{where}: use_sliding_window is on; the GGUF export supports full attention only")
    if config.model_type == "qwen3_moe":
        if not getattr(config, "norm_topk_prob", False):
            raise ModelError(f"{where}: norm_topk_prob is false; llama.cpp's qwen3moe renormalises top-k")
        if getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1:
            raise ModelError(f"{where}: dense layers between MoE layers are not supported by qwen3moe")
    _rope_theta(config, where)


def _metadata(writer: Any, config: Any, vocab_size: int, dtype: str, name: str, where: str) -> None:
    import gguf

    shape = shape_of(config)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(shape.num_heads)
    writer.add_head_count_kv(shape.num_kv_heads)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(_rope_theta(config, where))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(vocab_size)
    if config.model_type == "qwen3_moe":
        writer.add_expert_count(int(config.num_experts))
        writer.add_expert_used_count(int(config.num_experts_per_tok))
        writer.add_expert_feed_forward_length(int(config.moe_intermediate_size))


def _vocab_metadata(writer: Any, tokenizer: Any, vocab_size: int, where: str) -> None:
    vocab = vocab_of(tokenizer, vocab_size, where)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for add, value in (
        (writer.add_bos_token_id, vocab.bos_id),
        (writer.add_eos_token_id, vocab.eos_id),
        (writer.add_pad_token_id, vocab.pad_id),
    ):
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _stored(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32" or array.ndim == 1 or name.endswith(_F32_ALWAYS):
        return np.ascontiguousarray(array, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float16)


def write_gguf(
    model: Any,
    tokenizer: Any,
    output: Path,
    dtype: str = "f16",
    name: str = "model",
    where: str | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` to ``output`` (through a temporary file beside it, so a failed
    export leaves no half-written file under the final name). 2-D weights in ``dtype``, norms in f32."""
    import gguf

    from minigpt.disk import writing

    if dtype not in DTYPES:
        raise ModelError(f"--dtype '{dtype}': choose one of {', '.join(DTYPES)}")
    config = model.config
    where = where or name
    check_exportable(config, where)
    state = {key: value.detach().float().cpu().numpy() for key, value in model.state_dict().items()}
    vocab_size = int(state["model.embed_tokens.weight"].shape[0])
    tensors = [(key, _stored(key, value, dtype)) for key, value in gguf_tensors(state, shape_of(config))]
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with writing(output, "writing the GGUF file"):
        writer = gguf.GGUFWriter(partial, ARCHITECTURES[config.model_type])
        try:
            _metadata(writer, config, vocab_size, dtype, name, where)
            _vocab_metadata(writer, tokenizer, vocab_size, where)
            for key, array in tensors:
                writer.add_tensor(key, array)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, output)
    return output


def export_gguf(checkpoint: Path, output: Path, dtype: str = "f16", trust_remote_code: bool = False) -> Path:
    """The ``minigpt export --format gguf`` writer: a stage folder to one GGUF file."""
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelError("the GGUF export needs the gguf package: pip install 'minigpt[gguf]'") from exc
    model, tokenizer = load_for_export(checkpoint, trust_remote_code)
    return write_gguf(model, tokenizer, output, dtype, name=checkpoint.resolve().name, where=str(checkpoint))
