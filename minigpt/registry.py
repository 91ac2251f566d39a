"""Named registries: one each for stages, converters, rewards, data generators and model presets.

Adding an algorithm, converter or reward is one new file plus one ``@REGISTRY.register("name")`` line.
Registries that live in other modules are filled on import of ``minigpt.plugins``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from minigpt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, allow_import_path: bool = False):
        self.kind = kind
        self.allow_import_path = allow_import_path
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items

    def get(self, name: str) -> T:
        load_plugins()
        if name in self._items:
            return self._items[name]
        if self.allow_import_path and ":" in name:
            return import_object(name, self.kind)
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(self._items))
        extra = " or 'package.module:function'" if self.allow_import_path else ""
        raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Known: {known}{extra}.")


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


STAGES: Registry[Any] = Registry("stage")
CONVERTERS: Registry[Any] = Registry("converter", allow_import_path=True)
REWARDS: Registry[Any] = Registry("reward function", allow_import_path=True)
GENERATORS: Registry[Any] = Registry("data generator")
PRESETS: Registry[Any] = Registry("model preset")

_PLUGIN_MODULES = (
    "minigpt.models.presets",
    "minigpt.stages",
    "minigpt.data.converters",
    "minigpt.rewards",
    "minigpt.tasks.tictactoe",
)
_loaded = False


def load_plugins() -> None:
    """Import the modules that register built-in entries (lazily, so importing a registry stays cheap)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in _PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A module listed here that does not exist yet is tolerated; a broken import inside one is not.
            if exc.name != name:
                raise
