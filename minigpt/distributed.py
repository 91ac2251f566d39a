"""Several processes (``accelerate launch`` / ``torchrun``): who is the main process, barriers, and the sums
that turn per-process counts (tokens, samples) into global ones. Every helper is a no-op in a single process,
so the same code runs unchanged on one CPU and on many GPUs (docs/distributed.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def distributed_state() -> Any:
    """accelerate's ``PartialState``, initialised the way the trainer will initialise it.

    Without a GPU, ``PartialState()`` ignores torchrun's environment (it only takes the CPU path when asked),
    so every process would believe it is the only one and the main one; transformers later re-creates the
    state with ``cpu=True`` and the processes disagree. Asking for the CPU path here when there is no GPU (or
    when ``accelerate launch --cpu`` says so) makes the first answer the same as the trainer's.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def shutdown(wait: bool = True) -> None:
    """Tear the process group down before the interpreter exits. Left to interpreter shutdown, gloo's worker
    threads can abort a process that has finished its work ("terminate called without an active exception",
    SIGABRT: seen once in ~10 two-process CI runs). ``wait``: first let every process get here (on the
    success path; after an error another process may never arrive)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


def is_main_process() -> bool:
    return bool(distributed_state().is_main_process)


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    state = distributed_state()
    if state.num_processes > 1:
        state.wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (e.g. prepares data), then the others (which reuse its files)."""
    state = distributed_state()
    if state.num_processes == 1:
        yield
        return
    with state.main_process_first():
        yield


def broadcast_from_main(value: Any) -> Any:
    """The main process's ``value`` (any picklable object) on every process."""
    state = distributed_state()
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def sum_over_processes(values: Sequence[float], device: torch.device | str | None = None) -> list[float]:
    """Element-wise sum of ``values`` over all processes, in one collective call (every process must call).

    float64, so token counts stay exact far beyond 2**24. ``device`` must be where the backend communicates
    (the process's GPU for NCCL; the CPU for gloo); by default the state's device.
    """
    state = distributed_state()
    if state.num_processes == 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device or state.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.cpu().tolist()


def merge_sums(pairs: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``{name: (sum, weight)}`` added up over all processes (every process must call). Names may differ
    between processes (a process whose batches had no assistant token has no accuracy to report), so the
    dicts are exchanged as objects; this runs once per log step on a handful of numbers."""
    state = distributed_state()
    if state.num_processes == 1:
        return dict(pairs)
    gathered: list[Any] = [None] * state.num_processes
    torch.distributed.all_gather_object(gathered, dict(pairs))
    return combine_sums(gathered)


def combine_sums(parts: Sequence[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """The per-name sum of several ``{name: (sum, weight)}`` dicts (one per process), in name order."""
    out: dict[str, tuple[float, float]] = {}
    for part in parts:
        for name, (total, weight) in part.items():
            old_total, old_weight = out.get(name, (0.0, 0.0))
            out[name] = (old_total + total, old_weight + weight)
    return dict(sorted(out.items()))


def gather_full_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The trained model's full weights when they are sharded over the processes (FSDP, DeepSpeed): every
    process must call this (the shards are gathered collectively); the main process gets the tensors.

    None where the unwrapped model already holds every weight (one process, DDP): the export then saves the
    model as it is, exactly as before.
    """
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.distributed_type == DistributedType.FSDP:
        return accelerator.get_state_dict(trainer.model)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # ZeRO-3 needs zero3_save_16bit_model: true (config/accelerate/zero3.yaml) to gather the weights.
        return accelerator.get_state_dict(trainer.model_wrapped)
    return None


def export_state_dict(trainer: Any, exported: Any, gathered: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``save_pretrained`` should write for ``exported``: the gathered weights when ``exported`` is the
    trained model itself; None (its own weights) otherwise, e.g. a LoRA stage's merged copy."""
    if gathered is None or exported is not trainer.accelerator.unwrap_model(trainer.model):
        return None
    return gathered
