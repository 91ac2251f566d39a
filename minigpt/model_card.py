"""The model card (``README.md``) of a stage folder, built from the files the stage left there.

Front matter the hub reads (library, pipeline tag, base model, tags, datasets) and a body that says which
stage trained the weights, on what data, with which settings, to which final metrics, and the recipe's task
evaluations once their result files are there. Everything comes from the folder (``config.yaml``,
``stage.json``, ``metrics.jsonl``, the prepared mixture's manifest, the evaluation results), so the card
can be rebuilt at any time: the runner writes it before ``stage.json``, the recipe and ``minigpt eval``
refresh it after an evaluation.

Only hub ids are named as a base model or a dataset; local files and folders appear by their name alone (a
machine-local path means nothing to a reader of the card, and may say more about the machine than it should).
Torch-free.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from minigpt.models.model_origin import ModelOrigin, describe_origin, is_stage_folder, model_origin
from minigpt.secrets import redact_text
from minigpt.stage_files import read_json_mapping, read_yaml_mapping

CARD_FILE = "README.md"
# How fast this machine ran, not how good the model is: left out of the card's metrics.
_SPEED = re.compile(r"runtime|per_second|flos")

_PRECISION = {"auto": "auto (bf16 on a GPU that supports it, else fp32)"}
_STAGE_TEXT = {
    "pretrain": "next-token pretraining on plain text",
    "midtrain": "continued next-token training on plain text",
    "sft": "supervised fine-tuning on conversations (loss on the assistant turns)",
    "distill": "distillation from a teacher model",
    "reasoning_distill": "distillation of a teacher's reasoning traces",
    "dpo": "direct preference optimisation on chosen / rejected pairs",
    "reward": "a reward model (a scoring head) trained on chosen / rejected pairs",
    "grpo": "GRPO reinforcement learning from reward functions",
    "rloo": "RLOO reinforcement learning from reward functions",
    "ppo": "PPO reinforcement learning with a value head",
    "spo": "SPO reinforcement learning",
}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | dict):
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    return "—" if value is None else str(value)


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return lines + [f"| {a} | {b.replace('|', chr(92) + '|')} |" for a, b in rows]


def _is_classifier(folder: Path) -> bool:
    architectures = read_json_mapping(folder / "config.json").get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return True
    return read_json_mapping(folder / "adapter_config.json").get("task_type") == "SEQ_CLS"


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def _prepared_manifest(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the mixture the stage trained on (``data.prepared_dir``, default ``<folder>/data``)."""
    data = config.get("data") or {}
    if not data.get("data_config"):
        return {}
    prepared = Path(data["prepared_dir"]) if data.get("prepared_dir") else folder / "data"
    mixture = read_yaml_mapping(Path(data["data_config"]))
    if mixture.get("stage") and mixture.get("name"):
        named = read_json_mapping(prepared / f"{mixture['stage']}_{mixture['name']}_manifest.json")
        if named:
            return named
    found = sorted(prepared.glob("*_manifest.json")) if prepared.is_dir() else []
    return read_json_mapping(found[0]) if len(found) == 1 else {}


def _hub_datasets(manifest: dict[str, Any]) -> list[str]:
    """Hub datasets the mixture really read (an offline sample read instead is not that dataset)."""
    configured = {s.get("name"): s for s in (manifest.get("config") or {}).get("sources") or []}
    found = []
    for record in manifest.get("sources") or []:
        source = configured.get(record.get("name")) or {}
        if source.get("hub") and not record.get("offline_sample") and source["hub"] not in found:
            found.append(source["hub"])
    return found


def _origin(config: dict[str, Any]) -> ModelOrigin | None:
    model = config.get("model") or {}
    if not isinstance(model.get("init"), str):
        return None
    return model_origin(model["init"], model.get("revision"))


def front_matter(folder: Path, config: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML metadata (https://huggingface.co/docs/hub/model-cards#model-card-metadata)."""
    adapter = _is_adapter(folder)
    meta: dict[str, Any] = {
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-classification" if _is_classifier(folder) else "text-generation",
    }
    origin = _origin(config)
    # An adapter only works on its very base weights; a full model descends from the first hub model of
    # its chain of stages, however many stages ago.
    base = (origin.hub_id if adapter else origin.root_hub_id) if origin else None
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "adapter" if adapter else "finetune"
    stage = config.get("stage")
    meta["tags"] = ["minigpt", *([stage] if stage else []), *(["lora"] if config.get("lora") else [])]
    datasets = _hub_datasets(manifest)
    if datasets:
        meta["datasets"] = datasets
    return meta


def _stage_section(folder: Path, config: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    stage = config.get("stage") or summary.get("stage") or "?"
    lines = [f"# {folder.name}", ""]
    what = _STAGE_TEXT.get(stage, f"the `{stage}` stage")
    lines.append(f"Trained by miniGPT's `{stage}` stage: {what}.")
    origin = _origin(config)
    if origin is not None:
        lines += ["", f"Started from {describe_origin(origin)}."]
    lora = config.get("lora")
    if isinstance(lora, dict):
        targets = lora.get("target_modules")
        targets = ", ".join(targets) if isinstance(targets, list) else targets
        how = (
            "merged into the weights of this folder (the adapter alone is in `adapter/`)"
            if lora.get("merge", True)
            else "this folder holds the adapter alone, to be loaded on its base model"
        )
        lines += ["", f"LoRA (r={lora.get('r')}, alpha={lora.get('alpha')}, on {targets}): {how}."]
    if _is_adapter(folder) or (folder / "adapter" / "adapter_config.json").exists():
        lines += ["", *_adapter_base_note(origin)]
    return lines


def _adapter_base_note(origin: ModelOrigin | None) -> list[str]:
    """Whether others can resolve the adapter's base model (``adapter_config.json``)."""
    if origin is None:
        return []
    if origin.hub_id:
        return [
            f"The adapter's base model is the hub model `{origin.hub_id}`"
            + (f" (revision `{origin.revision}`)" if origin.revision else "")
            + "; `minigpt export --format hf` names it so in `adapter_config.json`."
        ]
    if origin.kind == "preset":
        return ["The adapter's base is a preset's random weights, which exist only merged into this folder."]
    return [
        f"The adapter's base model is the local folder `{origin.name}`, which is not on the hub: "
        "`adapter_config.json` names it by its path on the training machine. To share the adapter, upload "
        "that base first and point `base_model_name_or_path` at its hub id."
    ]


def _data_section(config: dict[str, Any], summary: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    lines = ["## Data", ""]
    data = config.get("data") or {}
    if manifest:
        train, val = manifest.get("train") or {}, manifest.get("val") or {}
        lines.append(
            f"The mixture `{manifest.get('name')}` (schema `{manifest.get('schema')}`): "
            f"{_value(train.get('rows'))} training rows ({_value(train.get('tokens'))} tokens), "
            f"{_value(val.get('rows'))} validation rows."
        )
        lines += ["", "| source | from | weight | rows drawn | tokens drawn |", "|---|---|---|---|---|"]
        for s in manifest.get("sources") or []:
            origin = str(s.get("origin", ""))
            if origin.startswith("file "):  # a local file: its name, not the machine's path
                origin = f"file {Path(origin[5:]).name}"
            elif origin.startswith("OFFLINE SAMPLE "):
                origin = "offline sample " + origin.split(" (instead of ", 1)[-1].rstrip(")")
            lines.append(
                f"| {s.get('name')} | {origin} | {_value(s.get('normalised_weight'))} | "
                f"{_value(s.get('drawn_rows'))} | {_value(s.get('drawn_tokens'))} |"
            )
    elif data.get("train"):
        names = ", ".join(f"`{Path(p).name}`" for p in data["train"])
        lines.append(f"Training rows from {names}: {_value(summary.get('train_rows'))} rows.")
        if data.get("validation"):
            held = ", ".join(f"`{Path(p).name}`" for p in data["validation"])
            lines.append(f"Validation rows from {held}: {_value(summary.get('val_rows'))} rows.")
        elif data.get("val_fraction"):
            lines.append(
                f"Validation: {_value(summary.get('val_rows'))} rows held out of the training files "
                f"(fraction {data['val_fraction']:g})."
            )
        else:
            lines.append("No validation rows.")
    else:
        lines.append("Not recorded.")
    return lines


def _training_section(config: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    train, data = config.get("train") or {}, config.get("data") or {}
    params = summary.get("parameters") or {}
    steps = train.get("max_steps")
    planned = f"{steps:,} steps" if isinstance(steps, int) and steps > 0 else f"{train.get('epochs')} epochs"
    schedule = f"{_value(train.get('lr'))} ({train.get('scheduler')}, {train.get('warmup_steps')} warmup)"
    rows = [
        ("optimizer steps run", _value(summary.get("global_step"))),
        ("planned", planned),
        ("batch size per device × accumulation", f"{train.get('batch_size')} × {train.get('grad_accum')}"),
        ("learning rate", schedule),
        ("weight decay", _value(train.get("weight_decay"))),
        ("precision", _PRECISION.get(train.get("precision"), str(train.get("precision")))),
        ("max length", _value(data.get("max_length"))),
        ("seed", _value(config.get("seed"))),
        ("tokens seen", _value(summary.get("num_tokens"))),
        ("training time", f"{_value(summary.get('train_seconds'))} s"),
        (
            "parameters (total / trainable)",
            f"{_value(params.get('total'))} / {_value(params.get('trainable'))}",
        ),
    ]
    algo = config.get("algo")
    if isinstance(algo, dict) and algo:
        rows.append((f"`{config.get('stage')}` settings", _value(algo)))
    return ["## Training", "", *_table(("setting", "value"), rows)]


def _metrics_section(folder: Path, summary: dict[str, Any]) -> list[str]:
    from minigpt.metrics import read_metrics

    final = summary.get("final_metrics") or {}
    rows = [(f"`{k}`", _value(v)) for k, v in sorted(final.items()) if not _SPEED.search(k)]
    try:
        records = read_metrics(folder / "metrics.jsonl")
    except ValueError:  # a malformed log: the summary's numbers stand alone
        records = []
    for key in ("train/loss", "eval/loss"):
        logged = [r for r in records if isinstance(r.get(key), int | float)]
        if logged:
            rows.append((f"last logged `{key}` (step {logged[-1].get('step')})", _value(logged[-1][key])))
    if not rows:
        return ["## Final metrics", "", "None recorded."]
    return ["## Final metrics", "", *_table(("metric", "value"), rows)]


def _demoted(markdown: str) -> str:
    """A task's own markdown under the card's headings (its ``##`` becomes ``####``)."""
    return "\n".join(f"##{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _evaluation_section(folder: Path) -> list[str]:
    """Every evaluation result file in the folder (``minigpt.tasks.eval_runner``), rendered by its task."""
    from minigpt.registry import EVAL_TASKS
    from minigpt.tasks.eval_runner import read_evaluations

    results = read_evaluations(folder)
    if not results:
        return []
    lines = ["## Task evaluation"]
    for label, result in results.items():
        task = EVAL_TASKS.get(result["task"])
        title = task.title if label == task.name else f"{task.title} (`{label}`)"
        lines += ["", f"### {title}", ""]
        try:
            scores = task.function("headline")(result)
            text = task.function("describe")(result)
        except (KeyError, TypeError, ValueError, AttributeError):  # a result file edited or cut short
            lines.append("The result file could not be read.")
            continue
        if scores:
            rows = [(name, f"{100 * value:.1f}%") for name, value in scores.items()]
            lines += [*_table(("score", "value"), rows), ""]
        lines.append(_demoted(text).strip())
    return lines


def _usage_section(folder: Path) -> list[str]:
    auto = "AutoModelForSequenceClassification" if _is_classifier(folder) else "AutoModelForCausalLM"
    note = ["", "With `peft` installed, transformers loads the adapter on its base model."]
    return [
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        "",
        f'model = {auto}.from_pretrained("{folder.name}")  # this folder, or its hub id once uploaded',
        f'tokenizer = AutoTokenizer.from_pretrained("{folder.name}")',
        "```",
        *(note if _is_adapter(folder) else []),
    ]


def build_model_card(folder: str | Path, summary: dict[str, Any] | None = None) -> str:
    """The card text for a stage folder; ``summary``: the stage's summary (default: its ``stage.json``)."""
    folder = Path(folder)
    config = read_yaml_mapping(folder / "config.yaml")
    summary = summary if summary is not None else read_json_mapping(folder / "stage.json")
    manifest = _prepared_manifest(folder, config)
    meta = yaml.safe_dump(front_matter(folder, config, manifest), sort_keys=False, allow_unicode=True)
    sections = [
        _stage_section(folder, config, summary),
        _data_section(config, summary, manifest),
        _training_section(config, summary),
        _metrics_section(folder, summary),
        _evaluation_section(folder),
        _usage_section(folder),
    ]
    body = "\n\n".join("\n".join(s) for s in sections if s)
    return redact_text(f"---\n{meta}---\n\n{body}\n")


def write_model_card(folder: str | Path, summary: dict[str, Any] | None = None) -> Path:
    """Write (or rebuild) ``<folder>/README.md`` in one rename, secrets redacted."""
    from minigpt.checkpoints import write_text_atomic

    path = Path(folder) / CARD_FILE
    write_text_atomic(path, build_model_card(folder, summary))
    return path


def refresh_model_card(folder: str | Path) -> Path | None:
    """Rebuild the card of a finished stage folder (after a task evaluation); a folder that no stage wrote
    (an outside model someone evaluates) is left alone."""
    folder = Path(folder)
    if not is_stage_folder(folder):
        return None
    return write_model_card(folder)
