"""The mixture config: which sources, how they are converted, weighted, split, filtered and budgeted.

Every field is documented in docs/data.md. Relative paths resolve against the folder of the config file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from minigpt.errors import ConfigError
from minigpt.registry import CONVERTERS
from minigpt.typed_config import Strict, apply_overrides, read_yaml, validate

SchemaName = Literal["text", "conversations", "preference", "prompt_only"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names end up in file names: keep them plain


class ValidationSpec(Strict):
    """Held-out rows taken from each source before mixing (never repeated, never in train)."""

    fraction: float | None = Field(default=None, ge=0, lt=1)
    count: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> ValidationSpec:
        if self.fraction is not None and self.count is not None:
            raise ValueError("give either fraction or count, not both")
        return self


class BudgetSpec(Strict):
    """How much training data to draw in total: exactly one of samples, tokens or epochs."""

    samples: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        given = [k for k in ("samples", "tokens", "epochs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of samples, tokens, epochs (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("samples", "tokens", "epochs") if getattr(self, k) is not None)

    @property
    def amount(self) -> float:
        return float(getattr(self, self.kind))

    def describe(self) -> str:
        amount = self.amount
        return f"{self.kind}={amount:,.0f}" if amount.is_integer() else f"{self.kind}={amount:g}"


class FilterSpec(Strict):
    max_tokens: int | None = Field(default=None, gt=0)
    # "error": an empty turn (or empty text) is bad input, handled by on_error; "drop": filter it, counted.
    empty_turns: Literal["error", "drop"] = "error"


class SourceConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    path: str | None = None
    hub: str | None = None
    offline_path: str | None = None
    config: str | None = None
    data_dir: str | None = None
    split: str | None = None
    revision: str | None = None
    streaming: bool = False
    generator: str | None = None
    generator_args: dict[str, Any] = Field(default_factory=dict)
    converter: str | None = None
    converter_args: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, gt=0)
    max_repeat: float | None = Field(default=None, gt=0)
    validation: ValidationSpec | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> SourceConfig:
        origins = [k for k in ("path", "hub", "generator") if getattr(self, k) is not None]
        if len(origins) != 1:
            raise ValueError(f"give exactly one of path, hub, generator (got {', '.join(origins) or 'none'})")
        hub_only = [
            k for k in ("offline_path", "config", "data_dir", "split", "revision") if getattr(self, k)
        ]
        if self.hub is None and hub_only:
            raise ValueError(f"{', '.join(hub_only)} only apply to hub sources")
        if self.generator is None and self.generator_args:
            raise ValueError("generator_args only apply to generator sources")
        if self.generator is not None and (self.converter or self.converter_args):
            raise ValueError("generator sources yield rows in the target schema: no converter")
        if self.converter is None and self.converter_args:
            raise ValueError("converter_args given without a converter")
        return self

    @property
    def kind(self) -> str:
        return "path" if self.path is not None else "hub" if self.hub is not None else "generator"


with warnings.catch_warnings():
    # "schema" is the documented key; it shadows pydantic's deprecated BaseModel.schema(), which we never use.
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class MixtureConfig(Strict):
        name: str = Field(pattern=NAME_PATTERN)
        stage: str = Field(pattern=NAME_PATTERN)
        schema: SchemaName
        description: str = ""
        seed: int = 0
        tokenizer: str | None = None
        trust_remote_code: bool = False
        """Let the tokenizer folder run Python code it ships (``auto_map``); such a folder is refused
        otherwise. It changes whether the set can be prepared, never what is in it: not fingerprinted."""
        unit: Literal["samples", "tokens"] = "samples"
        budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(epochs=1))
        max_repeat: float = Field(default=4.0, gt=0)
        validation: ValidationSpec = Field(default_factory=ValidationSpec)
        dedup: bool = True
        filters: FilterSpec = Field(default_factory=FilterSpec)
        render: Literal["chat_template", "plain"] = "chat_template"
        on_error: Literal["raise", "skip"] = "raise"
        num_proc: int | None = Field(default=None, ge=1)
        """Processes that convert rows and count tokens (null: one per CPU core, at most 8). The prepared
        files are the same for any value, so it is not part of the fingerprint."""
        sources: list[SourceConfig] = Field(min_length=1)

        @model_validator(mode="after")
        def _unique_and_streaming(self) -> MixtureConfig:
            names = [s.name for s in self.sources]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"source names must be unique: {', '.join(dupes)}")
            for s in self.sources:
                # A streamed source is never read whole, so its quota must be known before reading it.
                if s.streaming and self.budget.kind != self.unit:
                    raise ValueError(
                        f"source '{s.name}' is streamed: the budget must be given in the mixing unit "
                        f"(budget.{self.unit}), not budget.{self.budget.kind}"
                    )
            return self

        def validation_for(self, source: SourceConfig) -> ValidationSpec:
            return source.validation if source.validation is not None else self.validation

        def max_repeat_for(self, source: SourceConfig) -> float:
            return source.max_repeat if source.max_repeat is not None else self.max_repeat

        @property
        def stem(self) -> str:
            return f"{self.stage}_{self.name}"


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None or os.path.isabs(value):
        return value
    return str((base / value).resolve())


def _looks_local(value: str, base: Path) -> bool:
    """A tokenizer given as ./x, ../x, an absolute path, or an existing folder is local; else a hub id."""
    return value.startswith((".", "/", "~")) or (base / value).exists()


def resolve_paths(config: MixtureConfig, base: Path) -> MixtureConfig:
    """Make relative paths absolute against ``base`` (the config file's folder)."""
    for source in config.sources:
        source.path = _resolve(source.path, base)
        source.offline_path = _resolve(source.offline_path, base)
    if config.tokenizer and _looks_local(config.tokenizer, base):
        config.tokenizer = _resolve(os.path.expanduser(config.tokenizer), base)
    return config


def _check_converters(config: MixtureConfig, source: str, lines: dict[tuple, int]) -> None:
    """Fail at load time (with the config line) on an unknown converter, not halfway through a run."""
    for i, src in enumerate(config.sources):
        if src.converter is None:
            continue
        try:
            CONVERTERS.get(src.converter)
        except ConfigError as exc:
            line = lines.get(("sources", i, "converter"))
            where = f"{source}:{line}" if line else source
            raise ConfigError(f"{where}: key 'sources.{i}.converter': {exc}") from None


def load_mixture(
    config_or_path: MixtureConfig | dict[str, Any] | str | os.PathLike,
    overrides: list[str] | None = None,
) -> MixtureConfig:
    """Load, override, validate and resolve a mixture config from a file, a dict or a config object."""
    lines: dict[tuple, int] = {}
    if isinstance(config_or_path, MixtureConfig):
        data, source, base = config_or_path.model_dump(mode="json"), "<mixture config>", Path.cwd()
    elif isinstance(config_or_path, dict):
        data, source, base = dict(config_or_path), "<mixture config>", Path.cwd()
    else:
        path = Path(config_or_path)
        data, lines = read_yaml(path)
        source, base = str(path), path.resolve().parent
    data = apply_overrides(data, overrides)
    config = validate(MixtureConfig, data, source, lines)
    _check_converters(config, source, lines)
    return resolve_paths(config, base)
