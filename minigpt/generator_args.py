"""Arguments for a registered data generator, from the command line (``key=value``) or a config mapping.

A generator declares its arguments as a typed Python signature (``tictactoe_sft(seats: str = "both",
sample: int | None = None, ...)``). Values are read as YAML scalars, as in a config file (``sample=100`` is
an int, ``reasoning=lines`` a string, ``kinds=[open]`` a list), then checked against those types, so a typo
or a wrong type fails before any data is generated, with the argument's name.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from minigpt.errors import ConfigError
from minigpt.typed_config import SafeLoader


def parse_generator_args(items: list[str], option: str = "--generator-arg") -> dict[str, Any]:
    """``["sample=100", "kinds=[open]"]`` → ``{"sample": 100, "kinds": ["open"]}``, read like ``--set``
    values; a key given twice is an error (the second would silently win)."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} '{item}': expected key=value")
        if key in args:
            raise ConfigError(f"{option} '{item}': '{key}' is given twice")
        try:
            args[key] = yaml.load(raw, Loader=SafeLoader) if raw.strip() else ""
        except yaml.YAMLError:
            args[key] = raw  # not YAML (e.g. an unbalanced bracket): the text itself
    return args


def check_generator_args(name: str, generator: Callable[..., Any], args: dict[str, Any]) -> dict[str, Any]:
    """``args`` converted to the types of ``generator``'s parameters; an unknown name or a value of the
    wrong type is a ConfigError naming the generator, the argument and what it accepts."""
    params = inspect.signature(generator).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        hints = typing.get_type_hints(generator)
    except Exception:  # an annotation that does not resolve: check names only
        hints = {}
    checked: dict[str, Any] = {}
    for key, value in args.items():
        if key not in known:
            if takes_any:
                checked[key] = value
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"generator '{name}' has no argument '{key}'.{hint} Its arguments: {', '.join(known)}"
            )
        if key not in hints:
            checked[key] = value
            continue
        try:
            checked[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            expected = inspect.formatannotation(hints[key])
            raise ConfigError(
                f"generator '{name}' argument '{key}': {value!r} is not a valid {expected} ({reason})"
            ) from None
    return checked
