"""``minigpt bench``: the project's training paths against baselines (TRL with its defaults, a plain PyTorch
loop) on the same model and data, in one process. See benchmarks/README.md for the workloads and
benchmarks/RESULTS.md for measured numbers.

Importing this package is cheap; torch, transformers and TRL load when a benchmark runs.
"""

from __future__ import annotations

from minigpt.perf.spec import WORKLOADS

__all__ = ["WORKLOADS"]
