"""Latency and throughput of a call: warm-up, then timed runs, percentiles. Knows no runtime.

What to time (a runtime's timing modes: a plain run; on a GPU, IO binding and CUDA-graph replay)
is the runtime's to say (`runtimes.Runtime.timing_modes`); `cnnexport.job` puts the two together.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BenchPlan:
    img_size: int | tuple[int, int]   # the first size the artifact is checked at: a side, or (height, width)
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 3
    iters: int = 20
    max_seconds: float = 20.0   # per batch size and mode: big models stop early (>= 3 timed runs)
    static_batch: int | None = None

    def sizes(self) -> tuple[int, ...]:
        return (self.static_batch,) if self.static_batch else self.batch_sizes


def percentiles(seconds: list[float], batch: int) -> dict:
    ms = np.asarray(seconds) * 1e3
    p50 = float(np.percentile(ms, 50))
    return {"runs": len(ms), "p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "images_per_s": batch / p50 * 1e3}


def time_calls(call: Callable[[], object], plan: BenchPlan, batch: int) -> dict:
    """Percentiles of `call`, which processes `batch` images, after the plan's warm-up."""
    for _ in range(plan.warmup):
        call()
    seconds: list[float] = []
    deadline = time.perf_counter() + plan.max_seconds
    while len(seconds) < plan.iters and (len(seconds) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds, batch)
