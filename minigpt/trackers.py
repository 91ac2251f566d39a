"""report_to backends: wandb, tensorboard, trackio. Each gets exactly the metric names of docs/design.md §5."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError

KNOWN_BACKENDS = ("wandb", "tensorboard", "trackio")


class _WandbLike:
    """wandb and trackio share the init/log/finish API."""

    def __init__(self, module_name: str, run_name: str, config: dict[str, Any], output_dir: Path):
        self.module = importlib.import_module(module_name)
        self.run = (
            self.module.init(name=run_name, config=config, dir=str(output_dir))
            if module_name == "wandb"
            else self.module.init(project="minigpt", name=run_name, config=config)
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.module.log(metrics, step=step)

    def close(self) -> None:
        self.module.finish()


class _TensorBoard:
    def __init__(self, run_name: str, config: dict[str, Any], output_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_backends(names: list[str], run_name: str, config: dict[str, Any], output_dir: Path) -> list[Any]:
    from minigpt.secrets import redact

    config = redact(config)
    backends = []
    for name in names:
        if name not in KNOWN_BACKENDS:
            raise ConfigError(
                f"train.report_to: unknown backend '{name}' (known: {', '.join(KNOWN_BACKENDS)})"
            )
        try:
            backends.append(
                _TensorBoard(run_name, config, output_dir)
                if name == "tensorboard"
                else _WandbLike(name, run_name, config, output_dir)
            )
        except ImportError as exc:
            raise ConfigError(
                f"train.report_to includes '{name}' but it is not installed: pip install 'minigpt[{name}]' ({exc})"
            ) from exc
    return backends
