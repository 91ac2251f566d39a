"""YAML → typed, validated config objects.

Errors name the file, the line, the key path and, for a typo, the closest valid key. YAML is always loaded
with the safe loader (no arbitrary object construction).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from minigpt.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ---------------------------------------------------------------- YAML with line numbers


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads ``3e-4`` as a float (YAML 1.1 needs a dot: ``3.0e-4``)."""


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _LineLoader(SafeLoader):
    """SafeLoader that remembers the line of every mapping key, by key path."""


def _compose_lines(node: yaml.Node, path: tuple, out: dict[tuple, int], seen: set[int] | None = None) -> None:
    # An alias reuses its anchor's node: walk each node once, or nested aliases cost 9^depth visits.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _compose_lines(value_node, path + (key,), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _compose_lines(item, path + (i,), out, seen)


def read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[tuple, int]]:
    """Read a YAML mapping; return (data, {key_path: line})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=SafeLoader)
    except RecursionError:
        raise _nesting_error(path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    lines: dict[tuple, int] = {}
    if node is not None:
        try:
            _compose_lines(node, (), lines)
        except RecursionError:
            raise _nesting_error(path) from None
    return data, lines


def _nesting_error(path: Path) -> ConfigError:
    return ConfigError(f"{path}: the YAML is nested too deeply to be a config")


# ---------------------------------------------------------------- overrides (--set a.b=c)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key.sub=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{item}': empty key")
    try:
        value = yaml.load(raw, Loader=SafeLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; a numeric part indexes a list (``sources.0.weight=2``)."""
    for item in overrides or []:
        parts, value = parse_override(item)
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set '{item}': '{part}' is not an index of a {len(node)}-item list")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{item}': '{parts[depth - 1]}' is not a section")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


# ---------------------------------------------------------------- validation with readable errors


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``loc`` (to suggest close keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    if get_origin(annotation) is None:
        return None
    return None


# Names users bring from transformers/TRL, mapped to ours, so a suggestion can bridge the two vocabularies.
KEY_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "logging_steps": "log_interval",
    "eval_steps": "eval_interval",
    "save_steps": "save_interval",
    "lr_scheduler_type": "scheduler",
    "max_seq_length": "max_length",
    "model_name_or_path": "init",
    "rank": "r",  # peft's LoraConfig names
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
}


def suggest_key(key: str, valid: list[str]) -> str | None:
    candidates = {name: name for name in valid}
    candidates.update({alias: target for alias, target in KEY_ALIASES.items() if target in valid})
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return candidates[close[0]] if close else None


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], source: str, lines: dict[tuple, int], prefix: tuple = ()
) -> str:
    messages = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_for(lines, loc)
        where = f"{source}:{line}" if line else source
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[len(prefix) :])
            valid = list(owner.model_fields) if owner else []
            close = suggest_key(str(loc[-1]), valid)
            hint = f" Did you mean '{close}'?" if close else ""
            messages.append(f"{where}: unknown key '{key}'.{hint} Valid keys here: {', '.join(valid)}")
        elif err["type"] == "missing":
            messages.append(f"{where}: missing required key '{key}'")
        else:
            got = err.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
            messages.append(f"{where}: key '{key}': {msg}{got_text}")
    return "\n".join(messages)


def validate(
    model: type[M],
    data: dict[str, Any],
    source: str = "<config>",
    lines: dict[tuple, int] | None = None,
    prefix: tuple = (),
) -> M:
    # A config class whose fields depend on one of its keys (a stage's ``algo`` on ``stage``) names the class
    # that validates ``data``, so that close-key suggestions look at the right fields.
    model = model.resolve_model(data) if hasattr(model, "resolve_model") else model
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source, lines or {}, prefix)) from None


def load_config(model: type[M], path: str | os.PathLike, overrides: list[str] | None = None) -> M:
    data, lines = read_yaml(path)
    data = apply_overrides(data, overrides)
    return validate(model, data, str(path), lines)


def dump_config(config: BaseModel, path: str | os.PathLike) -> None:
    """Write the fully resolved config (every default filled in) as YAML, secrets redacted."""
    from minigpt.secrets import redact

    data = redact(config.model_dump(mode="json"))
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def typed_variant(base: type[M], field: str, params: type[BaseModel], suffix: str) -> type[M]:
    """``base`` with ``field`` typed as ``params`` (a config whose fields depend on one of its keys: a stage's
    ``algo``, an evaluation's ``args``). An absent ``field`` is validated as ``{}``, so required fields are
    named; the class is registered in ``base``'s module under its name, so instances pickle."""
    cls = create_model(
        f"{params.__name__}{suffix}",
        __base__=base,
        __module__=base.__module__,
        **{field: (params, Field(default={}, validate_default=True))},
    )
    setattr(sys.modules[base.__module__], cls.__name__, cls)
    return cls
