"""Latency and throughput of a runtime: warm-up, then timed runs, percentiles. Paddle-free.

On a GPU, ONNX Runtime is also timed with device-resident inputs and outputs (IO binding with
OrtValues on the GPU) and with CUDA-graph replay, so that host copies are not what is measured;
the plain `session.run` from numpy is reported beside them, to show what those copies cost.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

from .runtimes import default_threads, ort_session


@dataclass(frozen=True)
class BenchPlan:
    img_size: int
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
    for _ in range(plan.warmup):
        call()
    seconds: list[float] = []
    deadline = time.perf_counter() + plan.max_seconds
    while len(seconds) < plan.iters and (len(seconds) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds, batch)


def _inputs(plan: BenchPlan, batch: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, 3, plan.img_size, plan.img_size), dtype=np.float32)


def iobinding_call(spec, batch: np.ndarray, cuda_graph: bool = False):
    """(call, output): ONNX Runtime with input and output bound to device memory (the GPU for a GPU
    spec), so that a call moves no data between host and device. With `cuda_graph`, the first call
    captures the graph and later calls replay it (shapes and buffers must then stay fixed)."""
    import onnxruntime as ort

    device = "cuda" if spec.device == "gpu" else "cpu"
    session = ort_session(dataclasses.replace(spec, cuda_graph=cuda_graph))
    x = ort.OrtValue.ortvalue_from_numpy(batch, device, 0)
    out_meta = session.get_outputs()[0]
    y = ort.OrtValue.ortvalue_from_shape_and_type([batch.shape[0], out_meta.shape[1]], np.float32, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x)
    binding.bind_ortvalue_output(out_meta.name, y)

    def call():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    call.buffers = (x, y)  # CUDA-graph replays read and write these addresses: keep them alive
    return call, y


def benchmark(spec, infer: Callable[[np.ndarray], np.ndarray], plan: BenchPlan) -> list[dict]:
    """One row per (batch size, mode): the spec's runtime, device and timing percentiles."""
    rows = []
    for batch_size in plan.sizes():
        batch = _inputs(plan, batch_size)
        calls = {"run": lambda batch=batch: infer(batch)}
        if spec.kind == "onnxruntime" and spec.device == "gpu":
            calls["iobinding"] = iobinding_call(spec, batch)[0]
            calls["iobinding+cudagraph"] = iobinding_call(spec, batch, cuda_graph=True)[0]
        for mode, call in calls.items():
            rows.append({"runtime": spec.kind, "device": spec.device, "label": spec.label, "precision": spec.precision,
                         "mode": mode, "batch": batch_size, "threads": default_threads(spec.threads),
                         **time_calls(call, plan, batch_size)})
    return rows
