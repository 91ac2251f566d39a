"""What every benchmark run measures with: the device, synchronised clocks, token counters, peak memory, MFU,
and the result row.

Clocks synchronise the GPU only at the edges of the timed window (end of the last warm-up step, end of the
last timed step): a synchronisation inside every step would stop the CPU from queueing the next step's
kernels while the GPU works, and slow down exactly the small-model runs this harness is about.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from minigpt.metrics import flops_per_token, mfu_percent, peak_flops

CUDA_MEMORY = "cuda_max_allocated"
RSS_MEMORY = "process_rss_peak"
MEMORY_LABELS = {CUDA_MEMORY: "CUDA max allocated", RSS_MEMORY: "process peak RSS"}


@dataclass(frozen=True)
class Device:
    kind: str
    """"cuda" or "cpu"."""
    name: str
    peak_flops: float | None
    """Dense bf16 peak from the project's table; None on CPU or an unknown GPU (MFU is then n/a)."""

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda" if self.kind == "cuda" else "cpu")


def current_device() -> Device:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Device("cuda", name, peak_flops(name))
    return Device("cpu", _cpu_name(), None)


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: Device) -> None:
    if device.kind == "cuda":
        torch.cuda.synchronize()


def clock(device: Device) -> float:
    """A timestamp taken after all queued GPU work has finished."""
    synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------- memory


class MemoryProbe:
    """Peak memory of one implementation's run: CUDA max allocated on GPU; on CPU the process's peak resident
    set (VmHWM), reset before each run through /proc/self/clear_refs where the kernel allows it. On CPU the
    figure is the whole process (Python, torch, libraries included), not just the model's tensors."""

    def __init__(self, device: Device):
        self.device = device
        self.kind = CUDA_MEMORY if device.kind == "cuda" else RSS_MEMORY
        self.reset_ok = True

    def start(self) -> None:
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
        except OSError:  # not Linux, or not allowed: the peak is then the process's lifetime peak
            self.reset_ok = False

    def peak_bytes(self) -> int | None:
        if self.device.kind == "cuda":
            return int(torch.cuda.max_memory_allocated())
        try:
            status = Path("/proc/self/status").read_text(encoding="utf-8")
        except OSError:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        match = re.search(r"VmHWM:\s+(\d+)\s*kB", status)
        return int(match.group(1)) * 1024 if match else None


# ---------------------------------------------------------------- tokens and time


class TokenCounter:
    """Non-padding tokens of every batch a collator builds, in the order built. Counted from the features
    (Python lists on the CPU) so that counting costs no GPU synchronisation; batch i is micro-step i even
    when the data loader prefetches ahead of the training loop."""

    def __init__(self) -> None:
        self.per_batch: list[int] = []

    def wrap(self, collate: Callable[[list[dict[str, Any]]], Any]) -> Callable[[list[dict[str, Any]]], Any]:
        def counting(features: list[dict[str, Any]]) -> Any:
            self.per_batch.append(sum(len(f["input_ids"]) for f in features))
            return collate(features)

        return counting

    def install(self, dataloader: Any) -> None:
        """Wrap the collate function of a prepared training data loader (accelerate wraps torch's loader
        and iterates its ``base_dataloader``); takes effect at the next ``iter()``, i.e. the epoch start."""
        loader = getattr(dataloader, "base_dataloader", dataloader)
        if not isinstance(loader, torch.utils.data.DataLoader):
            raise RuntimeError(f"cannot count tokens: unexpected data loader {type(dataloader).__name__}")
        if loader.num_workers:
            raise RuntimeError("cannot count tokens with data loader workers (train.num_workers must be 0)")
        loader.collate_fn = self.wrap(loader.collate_fn)

    def window(self, start: int, stop: int) -> int:
        if len(self.per_batch) < stop:
            raise RuntimeError(f"token counter saw {len(self.per_batch)} batches, the window needs {stop}")
        return sum(self.per_batch[start:stop])


class WindowClock(TrainerCallback):
    """Synchronised timestamps at the end of optimizer steps ``warmup`` and ``warmup + steps`` (the timed
    window), and a token counter installed on the trainer's data loader when training starts."""

    def __init__(self, device: Device, warmup: int, steps: int, counter: TokenCounter | None = None):
        self.device = device
        self.warmup = warmup
        self.steps = steps
        self.counter = counter
        self.marks: dict[int, float] = {}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if self.counter is not None and train_dataloader is not None:
            self.counter.install(train_dataloader)
        if self.warmup == 0:
            self.marks[0] = clock(self.device)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.warmup, self.warmup + self.steps):
            self.marks[state.global_step] = clock(self.device)

    def seconds(self) -> float:
        stop = self.warmup + self.steps
        if self.warmup not in self.marks or stop not in self.marks:
            raise RuntimeError(f"training stopped before step {stop}: no timed window")
        return self.marks[stop] - self.marks[self.warmup]


# ---------------------------------------------------------------- flops


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """docs/design.md §5 (PaLM appendix B): 6·N + 12·L·d·T, N with a tied embedding counted once."""
    from minigpt.models.loading import parameter_counts

    config = model.config
    active = parameter_counts(model)["active"]
    return flops_per_token(active, config.num_hidden_layers, config.hidden_size, seq_len)


def mfu(device: Device, tokens_per_second: float, flops_token: float | None) -> tuple[float | None, str]:
    """(MFU percent or None, why None). Never a number on CPU: the peak table is for GPUs."""
    if device.kind != "cuda":
        return None, "n/a on CPU"
    if device.peak_flops is None:
        return None, f"n/a: no peak FLOP/s for '{device.name}' in minigpt.metrics.PEAK_BF16_FLOPS"
    if flops_token is None:
        return None, "n/a: not a training-throughput figure"
    return mfu_percent(tokens_per_second, flops_token, device.peak_flops, 1), ""


# ---------------------------------------------------------------- results


@dataclass
class Row:
    workload: str
    implementation: str
    tokens_per_second: float
    tokens: int
    """Tokens counted in the timed window (the workload says which tokens)."""
    seconds: float
    warmup_steps: int
    timed_steps: int
    peak_memory_bytes: int | None
    memory_kind: str
    mfu_percent: float | None = None
    mfu_note: str = ""
    ratio: float | None = None
    ratio_basis: str = ""
    """The implementation the ratio divides by."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What this implementation ran with (for TRL: exactly what differs from its defaults)."""
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Set when this implementation failed; its figures are then zero and excluded from ratios."""
    shape: str = ""
    """The shape it really ran (``spec.shape_label``): the name the row is printed under."""
