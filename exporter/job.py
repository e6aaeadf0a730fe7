"""What one child process does for one runtime: open it, run the parity batches, time it.

`run_job` is the entry point that `cnnexport.run` hands to `isolate.call_isolated`; keeping it here
lets `runtimes` (how to open and call a runtime) and `bench` (how to time a call) know nothing of
each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bench import BenchPlan, time_calls
from .images import random_batch
from .results import Timing
from .runtimes import RuntimeSpec, default_threads, open_runtime


@dataclass
class JobResult:
    outputs: list[list[np.ndarray]]  # per batch, the model's outputs in order
    timings: list[Timing] = field(default_factory=list)
    names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # the model's input and output names, as run


def as_outputs(result) -> list[np.ndarray]:
    """A runtime's result as the list of the model's outputs (a runtime of one's own may return the
    one array of a model of one output)."""
    return [np.asarray(result)] if isinstance(result, np.ndarray) else [np.asarray(out) for out in result]


def run_job(spec: RuntimeSpec, batches: list[np.ndarray], bench_plan: BenchPlan | None = None) -> JobResult:
    """Outputs for `batches`, then, with a bench plan, one timing per batch size and timing mode."""
    runtime = open_runtime(spec)
    result = JobResult([as_outputs(runtime.infer(b)) for b in batches], names=(runtime.inputs, runtime.outputs))
    for size in bench_plan.sizes() if bench_plan else ():
        batch = random_batch(size, bench_plan.img_size, seed=size)
        for mode, call in runtime.timing_modes(batch).items():
            result.timings.append(Timing(spec.kind, spec.device, spec.label, spec.precision, mode, size,
                                         default_threads(spec.threads), **time_calls(call, bench_plan, size)))
    return result
