"""Metric names (docs/design.md §5), throughput / MFU, and the run log: metrics.jsonl, the human log file,
console lines and report_to backends.

Written by hand rather than through transformers' reporter callbacks because those rewrite metric names
(``train/loss`` would reach wandb as ``train/train/loss``) and run before any callback could add metrics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from minigpt.secrets import redact_text

# Dense bf16 peak FLOP/s by device name (substring match, most specific first).
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)

# transformers' own summary keys at the end of train(): kept, under summary/.
_SUMMARY_KEYS = {
    "train_runtime": "summary/runtime_seconds",
    "train_samples_per_second": "summary/samples_per_second",
    "train_steps_per_second": "summary/steps_per_second",
    "train_loss": "summary/train_loss",
    "total_flos": "summary/total_flos",
}


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS:
        if key in device_name:
            return value
    return None


def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int) -> float:
    """PaLM appendix B: 6N + 12·L·d·T (N counts a tied embedding once; MoE: active parameters)."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


def mfu_percent(tokens_per_second: float, flops_token: float, peak: float, n_devices: int) -> float:
    return 100.0 * tokens_per_second * flops_token / (peak * n_devices)


def rename(logs: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Map transformers/TRL log keys to the docs/design.md §5 names."""
    out: dict[str, Any] = {}
    extra = extra or {}
    for key, value in logs.items():
        if key in extra:
            new = extra[key]
        elif key in _SUMMARY_KEYS:
            new = _SUMMARY_KEYS[key]
        elif key.startswith("eval_"):
            new = "eval/" + key[len("eval_") :]
        elif "/" in key:
            new = key
        else:
            new = "train/" + key
        out[new] = value
    return out


class Throughput:
    """Tokens/samples/steps per second over the window since the last log step, and the ETA.

    Time spent not training (an evaluation, a checkpoint write) is left out of the window's clock with
    ``mark`` / ``exclude_since_mark`` while the window keeps counting its steps, tokens and samples from the
    previous log: restarting the clock alone would divide the whole window's tokens by part of its time."""

    def __init__(self) -> None:
        self.tokens = 0
        self.samples = 0
        self._last_time = time.perf_counter()
        self._mark = self._last_time
        self._last_tokens = 0
        self._last_samples = 0
        self._last_step: int | None = None

    def add(self, tokens: int, samples: int) -> None:
        self.tokens += tokens
        self.samples += samples

    def window(
        self, step: int, max_steps: int, reduce: Callable[[list[float]], list[float]] | None = None
    ) -> dict[str, float]:
        """Rates since the previous call; empty when no optimizer step was taken since then. Each process
        counts only its own batches: ``reduce`` (every process calls it, e.g.
        ``minigpt.distributed.sum_over_processes``) sums the window's tokens and samples over the processes, so
        the rates are the whole job's; steps are the same on every process."""
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        steps = step - (self._last_step if self._last_step is not None else 0)
        tokens, samples = self.tokens - self._last_tokens, self.samples - self._last_samples
        if reduce is not None:
            tokens, samples = reduce([float(tokens), float(samples)])
        out = {}
        if steps > 0:
            out = {
                "train/tokens_per_second": tokens / elapsed,
                "train/samples_per_second": samples / elapsed,
                "train/steps_per_second": steps / elapsed,
            }
            if max_steps > 0:
                out["train/eta_minutes"] = max(max_steps - step, 0) * (elapsed / steps) / 60.0
        self._open(step, now)
        return out

    def start(self, step: int) -> None:
        """Opens the first window where training begins or resumes: building the trainer, tokenizing the data
        and the steps of a resumed run before ``step`` are not in it."""
        self._open(step, time.perf_counter())

    def _open(self, step: int, now: float) -> None:
        self._last_time = self._mark = now
        self._last_tokens, self._last_samples, self._last_step = self.tokens, self.samples, step

    def mark(self) -> None:
        """Training time runs up to here (called at the end of every optimizer step)."""
        self._mark = time.perf_counter()

    def exclude_since_mark(self) -> float:
        """Leaves the time since the mark (or since the window began, if later) out of the window: it was
        spent evaluating or saving. Returns the seconds left out."""
        now = time.perf_counter()
        paused = now - max(self._mark, self._last_time)
        self._last_time += paused
        self._mark = now
        return paused


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.4g}"
        return f"{value:.4f}"
    return str(value)


class RunLog:
    """metrics.jsonl + ``<stage>_training_logs_<time>.txt`` + console + report_to backends (main process)."""

    def __init__(
        self,
        output_dir: str | Path,
        stage: str,
        report_to: list[str] | None = None,
        enabled: bool = True,
        run_name: str | None = None,
        config: dict | None = None,
        console: bool = True,
    ):
        from minigpt.trackers import open_backends

        self.enabled = enabled
        self.console = console
        self.output_dir = Path(output_dir)
        self.backends = []
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.now()
        self.jsonl_path = self.output_dir / "metrics.jsonl"
        self.text_path = self.output_dir / f"{stage}_training_logs_{started:%Y%m%d_%H%M%S}.txt"
        self._text = self.text_path.open("a", encoding="utf-8")
        self._text.write(f"{stage} started {started.isoformat(timespec='seconds')}\n")
        self._text.flush()
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self.backends = open_backends(report_to or [], run_name or stage, config or {}, self.output_dir)

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        message = redact_text(message)
        self._text.write(message + "\n")
        self._text.flush()
        if self.console:
            _console(message)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        record = {"step": step, "time": round(time.time(), 3), **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        line = f"step {step}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in clean.items())
        self._text.write(line + "\n")
        self._text.flush()
        if self.console:
            _console(line)
        numeric = {k: v for k, v in clean.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for backend in self.backends:
            backend.log(numeric, step)

    def close(self) -> None:
        if not self.enabled:
            return
        for backend in self.backends:
            backend.close()
        self._text.write(f"finished {datetime.now().isoformat(timespec='seconds')}\n")
        self._text.close()
        self._jsonl.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _console(line: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(line)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(line, flush=True)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return parse_jsonl_tolerant(path.read_text(encoding="utf-8"))


def parse_jsonl_tolerant(text: str) -> list[dict[str, Any]]:
    """Records of a JSONL log; a torn LAST line (a crash or a full disk mid-write) is dropped, any other
    malformed line is an error."""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return records
