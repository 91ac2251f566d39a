"""Tolerant readers of the files in a stage folder (stage.json, config.yaml, evaluation results) for the
report card, the model card and the evaluation reader: a missing or damaged file reads as an empty mapping,
because those views describe whatever a run left behind, half-finished ones included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_mapping(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
