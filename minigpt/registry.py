"""Named registries: one each for stages, converters, rewards, data generators, model presets and evaluation
tasks.

Adding an algorithm, converter or reward is one new file plus one ``@REGISTRY.register("name")`` line.
Each registry imports the modules that fill it on first use.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from minigpt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: tuple[str, ...], allow_import_path: bool = False):
        self.kind = kind
        self.allow_import_path = allow_import_path
        self.plugins = plugins
        self._items: dict[str, T] = {}
        self._loaded = False

    def load_plugins(self) -> None:
        """Import the modules that register this registry's built-in entries (lazily, and only those, so
        looking up a converter does not import torch)."""
        if self._loaded:
            return
        self._loaded = True
        for name in self.plugins:
            importlib.import_module(name)

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self.load_plugins()
        return name in self._items

    def get(self, name: str) -> T:
        self.load_plugins()
        if name in self._items:
            return self._items[name]
        if self.allow_import_path and ":" in name:
            return import_object(name, self.kind)
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(self._items))
        extra = " or 'package.module:function'" if self.allow_import_path else ""
        raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Known: {known}{extra}.")


def registered(registry: Registry[Any], value: str) -> str:
    """``value`` when it names an entry of ``registry``; else a ValueError with the registry's message (the
    close match and the known names), for a pydantic validator to report at its field."""
    if value not in registry:
        try:
            registry.get(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def import_object(path: str, kind: str) -> Any:
    """Import ``module:attr``. Only ever called for a name a user wrote in a config (never implicitly)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} '{path}' must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} '{path}': cannot import module '{module_name}': {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{kind} '{path}': module '{module_name}' has no attribute '{attr}'") from exc


STAGES: Registry[Any] = Registry("stage", ("minigpt.stages.catalog",))
CONVERTERS: Registry[Any] = Registry("converter", ("minigpt.data.converters",), allow_import_path=True)
REWARDS: Registry[Any] = Registry(
    "reward function", ("minigpt.rewards", "minigpt.tasks.tictactoe"), allow_import_path=True
)
GENERATORS: Registry[Any] = Registry("data generator", ("minigpt.tasks.tictactoe",))
PRESETS: Registry[Any] = Registry("model preset", ("minigpt.models.presets",))
# What a recipe's ``evaluation:`` and ``minigpt eval --task`` name (torch-free entries: minigpt/tasks/eval_catalog.py).
EVAL_TASKS: Registry[Any] = Registry("evaluation task", ("minigpt.tasks.eval_catalog",))


def load_plugins() -> None:
    """Import every built-in plugin module."""
    for registry in (STAGES, CONVERTERS, REWARDS, GENERATORS, PRESETS, EVAL_TASKS):
        registry.load_plugins()
