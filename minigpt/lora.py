"""LoRA / QLoRA as an option of any stage (the ``lora:`` section of a stage config).

The shared runner wraps the stage's model with peft once it is built (after ``Stage.prepare_model``, so the
reward stage's scoring head exists and is kept fully trainable), so every stage trains adapters through the
same code; transformers' Trainer then checkpoints only the adapter and resumes from it. At the end
``Stage.export_model`` calls :func:`export_lora`: the adapter goes to ``<output_dir>/adapter/`` and, by default,
is merged into the base weights so the stage folder is an ordinary HF model the next stage loads as is.

QLoRA loads the frozen base in 4-bit NF4 through bitsandbytes (CUDA only). bitsandbytes is imported only then,
so the package works without it. Merging into 4-bit weights would round the result to 4 bits, so the
full-precision base is kept in ``<output_dir>/.lora-base`` during training and the adapter is merged into it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from minigpt.errors import ConfigError, ModelError
from minigpt.lora_config import LoRAConfig
from minigpt.models.loading import remote_code

if TYPE_CHECKING:
    from minigpt.stages.stage_config import StageConfig

ADAPTER_DIR = "adapter"
"""Sub-folder of a stage folder holding the trained adapter (adapter_config.json + adapter_model.safetensors)."""
_QLORA_BASE_DIR = ".lora-base"
_TRAINED = "default"  # peft's name of the adapter it creates; TRL may add a frozen copy named "ref"


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency; without it nothing can be a peft model
        return False
    return isinstance(model, PeftModel)


def trains_adapter_only(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a peft model whose every trainable weight belongs to its adapter (LoRA matrices,
    ``modules_to_save`` copies): then the adapter-disabled model, or a frozen copy of the fresh adapter, is the
    initial policy. ``lora.bias: all`` or ``lora_only`` trains the base layers' own biases, which disabling the
    adapter does not undo; such a run needs a frozen copy as its reference."""
    if not is_peft(model):
        return False
    trainable = (name for name, param in model.named_parameters() if param.requires_grad)
    return all(".lora_" in name or ".modules_to_save." in name for name in trainable)


def check_adapter_reference(model: Any, stage: str) -> None:
    """For TRL's grpo/rloo, whose KL reference with LoRA is a frozen copy of the adapter on the same base
    model: refuse a run that also trains the base layers' biases, which that reference would share."""
    if is_peft(model) and not trains_adapter_only(model):  # a peft model that trains base weights too
        bias = model.peft_config["default"].bias
        raise ConfigError(
            f"lora.bias: {bias} trains the base model's biases, which TRL's {stage} reference (a frozen copy "
            "of the adapter on the same base model) shares, so the KL term would be measured against a moving "
            "reference; use lora.bias: none, algo.beta: 0, or the ppo/spo stages (which keep a frozen copy)"
        )


def check_qlora(cfg: LoRAConfig, device: torch.device) -> None:
    """QLoRA needs a CUDA device and bitsandbytes: say so before anything is loaded."""
    if not cfg.qlora:
        return
    if device.type != "cuda":
        raise ConfigError(
            f"lora.qlora: 4-bit QLoRA runs on CUDA GPUs only (bitsandbytes); this run is on {device.type}. "
            "Set lora.qlora: false to train a LoRA adapter on full-precision weights."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("lora.qlora needs the bitsandbytes package: pip install bitsandbytes")


def _task_type(model: Any) -> str:
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def peft_config(cfg: LoRAConfig, model: Any) -> Any:
    """The peft ``LoraConfig`` for a miniGPT ``lora:`` section and the model it will wrap."""
    from peft import LoraConfig as PeftLoraConfig

    task = _task_type(model)
    keep = list(cfg.modules_to_save)
    if task == "SEQ_CLS" and "score" not in keep:
        keep.append("score")  # a new head: training only an adapter next to it would leave it random
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        bias=cfg.bias,
        modules_to_save=keep or None,
        task_type=task,
    )


def _quantized(
    model: Any, folder: Path, device: torch.device, checkpointing: bool, trust_remote_code: bool
) -> Any:
    """The same weights reloaded in 4-bit NF4, the full-precision copy kept in ``folder`` for the merge."""
    from accelerate import PartialState
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    state = PartialState()
    if state.is_main_process:  # one writer; every process then loads the same copy
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(str(folder), safe_serialization=True)
    state.wait_for_everyone()
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    loaded = type(model).from_pretrained(
        str(folder),
        quantization_config=quant,
        dtype=compute,
        device_map={"": device.index or 0},
        trust_remote_code=remote_code(folder, trust_remote_code),
    )
    return prepare_model_for_kbit_training(loaded, use_gradient_checkpointing=checkpointing)


def apply_lora(
    model: Any, cfg: StageConfig, device: torch.device, note: Callable[[str], None] | None = None
) -> Any:
    """Wrap ``model`` with a fresh LoRA adapter per ``cfg.lora`` (base weights frozen; B = 0, so training
    starts from exactly the base model)."""
    from peft import get_peft_model

    lora = cfg.lora
    assert lora is not None
    check_qlora(lora, device)
    check_unmerged(lora, cfg.model.init)
    if lora.qlora:
        folder = Path(cfg.output_dir) / _QLORA_BASE_DIR
        model = _quantized(
            model, folder, device, cfg.train.gradient_checkpointing, cfg.model.trust_remote_code
        )
    try:
        wrapped = get_peft_model(model, peft_config(lora, model))
    except ValueError as exc:  # e.g. a target module name the model does not have
        raise ConfigError(f"lora.target_modules: {exc}") from None
    if note is not None:
        trainable, total = wrapped.get_nb_trainable_parameters()
        targets = (
            lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
        )
        note(
            f"lora: r={lora.r}, alpha={lora.alpha:g} on {targets}{' (4-bit base)' if lora.qlora else ''}: "
            f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
        )
    return wrapped


def _save_adapter(model: Any, folder: Path) -> None:
    """The trained adapter alone (TRL's frozen "ref" copy is left out), replacing ``folder`` in one rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=[_TRAINED])
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _full_precision_base(model: Any, folder: Path, trust_remote_code: bool) -> Any:
    """For QLoRA: the saved full-precision base with the trained adapter (and saved modules) loaded into it."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    base_cls = type(model.get_base_model())
    base = base_cls.from_pretrained(
        str(folder), dtype=torch.float32, trust_remote_code=remote_code(folder, trust_remote_code)
    )
    config = model.peft_config[_TRAINED]
    fresh = get_peft_model(base, config)
    state = {k: v.float().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=_TRAINED).items()}
    set_peft_model_state_dict(fresh, state)
    return fresh


def export_lora(model: Any, cfg: StageConfig) -> Any:
    """Save the adapter to ``<output_dir>/adapter`` and return what the stage folder holds: the merged plain
    model (``lora.merge: true``) or the adapter itself, naming its base model (``lora.merge: false``)."""
    lora, output_dir = cfg.lora, Path(cfg.output_dir)
    assert lora is not None
    trained = model.peft_config[_TRAINED]
    trained.base_model_name_or_path = adapter_base(cfg.model.init)
    if trained.base_model_name_or_path and not Path(cfg.model.init).expanduser().exists():
        trained.revision = cfg.model.revision  # a hub id: peft loads the base at this revision
    _save_adapter(model, output_dir / ADAPTER_DIR)
    for name in [n for n in model.peft_config if n != _TRAINED]:
        model.delete_adapter(name)
    base_copy = output_dir / _QLORA_BASE_DIR
    if not lora.merge:
        shutil.rmtree(base_copy, ignore_errors=True)
        return model
    if lora.qlora:
        model = _full_precision_base(model, base_copy, cfg.model.trust_remote_code)
    merged = model.merge_and_unload()
    shutil.rmtree(base_copy, ignore_errors=True)
    return merged


def _is_preset(init: str) -> bool:
    from minigpt.registry import PRESETS

    return init in PRESETS


def adapter_base(init: str) -> str:
    """What ``adapter_config.json`` names as the base model: an absolute folder or a hub id ("" for a preset,
    whose random weights exist nowhere else). A folder is machine-local: the stage folder's model card says
    whether its base is on the hub, and ``minigpt export --format hf`` names a cached hub snapshot by its
    hub id and commit (docs/design.md §2)."""
    if _is_preset(init):
        return ""
    path = Path(init).expanduser()
    return str(path.resolve()) if path.exists() else init


def check_unmerged(cfg: LoRAConfig, init: str) -> None:
    """An unmerged adapter is usable only if its base weights exist somewhere else than in this run."""
    if not cfg.merge and _is_preset(init):
        raise ConfigError(
            f"lora.merge: false needs model.init to be a model folder or hub id, not the preset '{init}': "
            "its random base weights would exist nowhere but in this run. Keep lora.merge: true."
        )


def is_adapter_folder(path: Path) -> bool:
    """A stage folder written with ``lora.merge: false``: adapter files, no model config."""
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def load_adapter_folder(path: Path, dtype: torch.dtype, attn: str, trust_remote_code: bool = False) -> Any:
    """Load an unmerged stage folder as a plain model: its base with the adapter merged in."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{path}: adapter_config.json names no base model (base_model_name_or_path)")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise ModelError(f"{path}: a {config.get('task_type')} adapter cannot start a causal-LM stage")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base,
            dtype=dtype,
            attn_implementation=attn,
            use_safetensors=True,
            trust_remote_code=remote_code(base, trust_remote_code),
        )
        # peft imports no code of its own from a folder (adapter_config.json names only library classes),
        # so the base model load above is the one that needs the check.
        merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the adapter folder {path} on its base '{base}': {exc}") from exc
    return merged.requires_grad_(True)  # peft froze the base weights; the next stage trains them
