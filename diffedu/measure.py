"""Measuring cost on this machine: FLOPs of a forward pass, wall-clock time, peak GPU memory.

Timings are only ever printed (benchmarks, lessons), never asserted: machines are shared and noisy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(module: torch.nn.Module, *inputs) -> int:
    """FLOPs of one call (a multiply-add counts 2), counted operator by operator."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    return counter.get_total_flops()


def synchronize(device) -> None:
    """Wait for queued GPU work (CUDA's or MPS's), so that a clock read after it is the work's end."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], repeats: int = 3, device="cpu", warmup: bool = True) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after one untimed warm-up call."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int = 3, device="cpu", warmup: bool = True) -> float:
    return statistics.median(timed(fn, repeats, device, warmup))


class PeakMemory:
    """Peak GPU memory above the level at the start, in MiB, while the block runs: the CUDA allocator's
    statistics. Elsewhere `mib` stays None: on a CPU the process's resident memory follows the allocator's caching
    and what ran before, not what the block needs, so it would be a number that measures nothing; on Apple's MPS
    PyTorch keeps no peak statistics."""

    def __init__(self, device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = max(0, torch.cuda.max_memory_allocated() - self.base) / 2**20
