"""Measuring cost on this machine: FLOPs of a forward pass, wall-clock time, peak memory.

Timings are only ever printed (benchmarks, lessons), never asserted: machines are shared and noisy.
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(module: torch.nn.Module, *inputs) -> int:
    """FLOPs of one call (a multiply-add counts 2), counted operator by operator."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    return counter.get_total_flops()


def synchronize(device) -> None:
    """Wait for queued GPU work, so that a clock read after it is the work's end."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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
    """Peak memory above the level at the start, in MiB, while the block runs: the CUDA allocator's
    statistics on a GPU; on a CPU, the process's resident memory, sampled every 10 ms."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.mib = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil

            process, self.stop = psutil.Process(), threading.Event()
            self.base = self.peak = process.memory_info().rss

            def watch():
                while not self.stop.wait(0.01):
                    self.peak = max(self.peak, process.memory_info().rss)

            self.watcher = threading.Thread(target=watch, daemon=True)
            self.watcher.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.watcher.join()
        self.mib = max(0, self.peak - self.base) / 2**20
