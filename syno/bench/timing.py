"""Latency measurement: warm-up, then the median of repeated runs.

CUDA: each run is bracketed by CUDA events on the current stream and everything is synchronized
before the events are read (so asynchronous launches are counted where they execute). CPU: each
run is timed with ``time.perf_counter``. The number of warm-up and timed runs adapts to the
function's speed (like ``triton.testing.do_bench``): a few estimate runs, then enough warm-up to
fill ``warmup_ms`` and enough repeats to fill ``budget_ms``, clamped to ``[min_repeat, max_repeat]``.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

__all__ = ["Timing", "TimingOptions", "measure", "device_name", "synchronize"]


@dataclass(frozen=True)
class TimingOptions:
    warmup_ms: float = 100.0      #: warm-up wall time after the estimate runs
    budget_ms: float = 500.0      #: timed wall time
    min_warmup: int = 2
    min_repeat: int = 5
    max_repeat: int = 1000
    estimate_runs: int = 3


@dataclass(frozen=True)
class Timing:
    """Per-run latencies summarised in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_samples(cls, samples_ms: list[float], warmup: int) -> "Timing":
        if not samples_ms:
            raise ValueError("no samples")
        return cls(median_ms=statistics.median(samples_ms), mean_ms=statistics.fmean(samples_ms),
                   std_ms=statistics.pstdev(samples_ms) if len(samples_ms) > 1 else 0.0,
                   min_ms=min(samples_ms), max_ms=max(samples_ms), repeats=len(samples_ms), warmup=warmup)


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_timed(fn: Callable[[], object], device: torch.device, n: int) -> list[float]:
    if n <= 0:
        return []
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize(device)
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", *,
            options: TimingOptions | None = None, warmup: int | None = None,
            repeat: int | None = None) -> Timing:
    """Time ``fn()`` (no arguments; call it under ``torch.no_grad`` yourself) and return a :class:`Timing`.

    ``warmup``/``repeat`` fix the counts; otherwise they follow ``options`` (see module docstring).
    Compilation should already have happened (call ``fn`` once before) so it is not mistaken for
    the estimate.
    """
    o = options or TimingOptions()
    device = torch.device(device)
    if warmup is None or repeat is None:
        est = _run_timed(fn, device, max(1, o.estimate_runs))
        per_run = max(statistics.median(est), 1e-3)
        if warmup is None:
            warmup = max(o.min_warmup, math.ceil(o.warmup_ms / per_run))
        if repeat is None:
            repeat = min(o.max_repeat, max(o.min_repeat, math.ceil(o.budget_ms / per_run)))
    _run_timed(fn, device, warmup)
    samples = _run_timed(fn, device, max(1, repeat))
    return Timing.from_samples(samples, warmup)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device | str) -> str:
    """Human-readable device name: the GPU's name, or the CPU model with the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({torch.get_num_threads()} threads)"
