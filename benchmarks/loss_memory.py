"""Peak memory and time of the LM head + cross-entropy, plain against ``train.loss: chunked``.

Run one variant per process (peak RSS is per process), e.g.::

    python benchmarks/loss_memory.py plain 151936 2048 896
    python benchmarks/loss_memory.py chunked 151936 2048 896 --ignore-half

Prints ms per forward + backward and the peak RSS above the process's start (CPU) or the peak CUDA memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn

from minigpt.stages.lm.chunked_loss import linear_cross_entropy, shifted_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("plain", "chunked"))
    parser.add_argument("vocab", type=int)
    parser.add_argument("tokens", type=int)
    parser.add_argument("hidden", type=int)
    parser.add_argument("--ignore-half", action="store_true", help="label the first half -100 (SFT prompts)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    head = nn.Linear(args.hidden, args.vocab, bias=False, device=device)
    hidden = torch.randn(1, args.tokens, args.hidden, device=device, requires_grad=True)
    labels = torch.randint(0, args.vocab, (1, args.tokens), device=device)
    if args.ignore_half:
        labels[:, : args.tokens // 2] = -100
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    start = time.perf_counter()
    for _ in range(args.steps):
        if args.mode == "plain":
            shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            logits = head(hidden).float()
            loss = nn.functional.cross_entropy(logits.view(-1, args.vocab), shifted.reshape(-1))
        else:
            loss, _ = linear_cross_entropy(hidden, head, shifted_targets(labels))
        loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    ms = (time.perf_counter() - start) / args.steps * 1000
    print(
        f"{args.mode} vocab {args.vocab} tokens {args.tokens} hidden {args.hidden}"
        f"{' half ignored' if args.ignore_half else ''}: {ms:.0f} ms/step, peak {peak:.0f} MiB, loss {loss.item():.4f}"
    )


if __name__ == "__main__":
    main()
