"""Build or load a model and its tokenizer from a preset, a local HF folder or (online) a hub id."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from minigpt.errors import ModelError
from minigpt.models.model_config import ModelConfig
from minigpt.registry import PRESETS

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# Files in which a folder names its own Python classes (``auto_map``) for transformers to import and run.
_CODE_MAPS = ("config.json", "tokenizer_config.json")
ALLOW_IN_STAGE = "set model.trust_remote_code: true in the stage config"
ALLOW_ON_CLI = "pass --trust-remote-code (trust_remote_code=True from Python)"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_attn(name: str, device: torch.device) -> str:
    return "sdpa" if name == "auto" else name


def _is_local(init: str) -> bool:
    return Path(init).expanduser().exists()


def remote_code(source: str | os.PathLike, trust_remote_code: bool, allow: str = ALLOW_IN_STAGE) -> bool:
    """The ``trust_remote_code`` value to give a ``from_pretrained`` call that loads ``source``; every such
    call in the package takes it from here (a test checks), so none can forget the check.

    Always a bool: ``None`` (transformers' default) makes transformers ask on the terminal whether to run the
    folder's code. A local folder whose ``config.json`` or ``tokenizer_config.json`` names its own classes
    (``auto_map``) is refused unless ``trust_remote_code`` is on: otherwise transformers either refuses with
    a long message or, for a model type it knows, silently swaps in its own class, so what would run would
    depend on the installed version. ``allow`` says how the user switches it on where this load happens.
    A hub id is passed through; with False, transformers never runs its code."""
    if trust_remote_code:
        return True
    folder = Path(source).expanduser()
    for name in _CODE_MAPS:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent (a hub id) or unreadable: transformers reports the latter
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if auto_map:
            classes = ", ".join(sorted(map(str, auto_map))) if isinstance(auto_map, dict) else str(auto_map)
            raise ModelError(
                f"{folder}: {name} has an auto_map ({classes}): the folder ships Python code that loading it "
                f"would run; miniGPT does not run it unless you allow it: {allow} if you trust this folder"
            )
    return False


def load_causal_lm(
    path: str | os.PathLike, dtype: torch.dtype, trust_remote_code: bool = False, allow: str = ALLOW_ON_CLI
) -> Any:
    """A model folder's causal LM for inference or export: safetensors only, remote code only as
    :func:`remote_code` allows; a folder transformers cannot load is a ModelError naming it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=remote_code(path, trust_remote_code, allow),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the model: {exc}") from exc


def load_tokenizer(
    path: str, revision: str | None = None, trust_remote_code: bool = False, allow: str = ALLOW_IN_STAGE
):
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    if (
        local.exists()
        and not (local / "tokenizer.json").exists()
        and not (local / "tokenizer_config.json").exists()
    ):
        raise ModelError(
            f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json) in this folder"
        )
    try:
        return AutoTokenizer.from_pretrained(
            str(local) if local.exists() else path,
            revision=revision,
            trust_remote_code=remote_code(path, trust_remote_code, allow),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer '{path}': {exc}") from exc


def check_model_folder(path: Path) -> None:
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any((path / name).exists() for name in _WEIGHT_FILES):
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise ModelError(f"{path}: only pickle weights (.bin/.pt) found; miniGPT loads safetensors only")
        raise ModelError(f"{path}: the model folder has no weights (model.safetensors)")


def build_model(cfg: ModelConfig, tokenizer, device: torch.device, dtype: torch.dtype | None = None):
    """Random-init from a preset, or load pretrained weights (safetensors only)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = dtype or resolve_dtype(cfg.dtype, device)
    attn = resolve_attn(cfg.attn_implementation, device)
    if cfg.init in PRESETS:
        fields = dict(PRESETS.get(cfg.init))
        fields["vocab_size"] = len(tokenizer)
        fields.update(cfg.overrides)
        model_type = fields.pop("model_type")
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        fields.setdefault("eos_token_id", tokenizer.eos_token_id)
        fields.setdefault("bos_token_id", tokenizer.bos_token_id)
        config = AutoConfig.for_model(model_type, **fields)
        if config.vocab_size < len(tokenizer):
            raise ModelError(
                f"model.overrides.vocab_size {config.vocab_size} < tokenizer size {len(tokenizer)}"
            )
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    else:
        source = cfg.init
        if _is_local(source):
            from minigpt.lora import is_adapter_folder, load_adapter_folder

            if is_adapter_folder(Path(source).expanduser()):  # a stage trained with lora.merge: false
                model = load_adapter_folder(Path(source).expanduser(), dtype, attn, cfg.trust_remote_code)
                if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                    model.resize_token_embeddings(len(tokenizer))
                return model.to(device)
            check_model_folder(Path(source).expanduser())
            source = str(Path(source).expanduser())
        elif "/" not in source:
            presets = ", ".join(PRESETS.names())
            raise ModelError(f"model.init '{cfg.init}' is not a preset ({presets}), a folder, or a hub id")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source,
                revision=cfg.revision,
                trust_remote_code=remote_code(source, cfg.trust_remote_code),
                use_safetensors=True,
                dtype=dtype,
                attn_implementation=attn,
                **cfg.overrides,
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model '{cfg.init}': {exc}") from exc
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
    return model.to(device)


def tokenizer_source(cfg: ModelConfig) -> str:
    if cfg.tokenizer:
        return cfg.tokenizer
    if cfg.init in PRESETS:
        raise ModelError(f"model.init is the preset '{cfg.init}': set model.tokenizer to a tokenizer folder")
    return cfg.init


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total (tied weights once), trainable, and active-per-token parameters (MoE: top-k of E experts)."""
    seen: set[int] = set()
    total = trainable = expert = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
        if ".experts." in name or name.endswith(".experts"):
            expert += param.numel()
    config = getattr(model, "config", None)
    num_experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    active = total
    if expert and num_experts and top_k:
        active = total - expert + expert * top_k // num_experts
    return {"total": total, "trainable": trainable, "active": active}
