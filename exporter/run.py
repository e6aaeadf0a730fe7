"""Running a row of the plan, and judging what it gave. Paddle-free.

Each attempt of a row (its spec, or its fallback configurations in order) runs in its own child
process (`cnnexport.job.run_job` through `isolate.call_isolated`): a native crash is that attempt's
failure, with its signal, and the next attempt is tried.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from . import isolate
from .bench import BenchPlan
from .compare import judge
from .job import run_job
from .plan import Row
from .results import RowResult, Timing
from .runtimes import RuntimeSpec


@dataclass
class Outcome:
    """What running a row gave: the attempt that ran (None: none did), its outputs by parity input
    (each the model's outputs, in order), its timings, and one record per attempt that failed before it."""

    ran: RuntimeSpec | None
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # input and output names, as the runtime saw them


def _failure(spec: RuntimeSpec, err: Exception) -> dict:
    record = {"config": spec.config_name} if spec.config_name else {}
    record["error"] = str(err)
    if isinstance(err, isolate.ChildCrashed):
        record.update(signal=err.signal, log_tail=err.log_tail[-2000:])
    return record


def run_row(row: Row, inputs: dict[str, np.ndarray], bench_plan: BenchPlan | None) -> Outcome:
    names = list(row.inputs) if row.inputs is not None else list(inputs)
    failed = []
    for spec in row.attempts:
        try:
            job = isolate.call_isolated(run_job, spec, [inputs[n] for n in names],
                                        bench_plan if row.timed else None, what=spec.label)
        except (isolate.ChildCrashed, isolate.ChildFailed) as err:
            failed.append(_failure(spec, err))
            continue
        return Outcome(spec, dict(zip(names, job.outputs)), job.timings, failed, job.names)
    return Outcome(None, failed=failed)


# A runtime that cannot run an op of the graph says nothing about what the graph computes: its row is
# `unsupported`, not failed. onnx's ReferenceEvaluator (a second opinion, not a deploy runtime) raises a
# Python exception for what it does not implement ("AssertionError: ceil_mode is not supported with
# auto_pad", a ValueError inside SequenceMap); OpenVINO's ONNX frontend reports the ops it cannot
# convert (OpConversionFailure, "No conversion rule found for operations: SequenceMap-17, ...").
_OPENVINO_UNCONVERTED = re.compile(r"(?:No conversion rule found for operations|Conversion is failed for): (.+)")


def unsupported_reason(spec: RuntimeSpec, failure: dict) -> str | None:
    """Why `spec`'s runtime could not run the graph, where its error says that it lacks an op; None otherwise
    (a crash, with its signal, is a failure whatever the runtime)."""
    error = failure["error"]
    if "signal" in failure:
        return None
    if spec.kind == "onnx-reference":
        return error.removeprefix(f"{spec.label}: ").strip().splitlines()[0]
    if spec.kind == "openvino" and "OpConversionFailure" in error:
        ops = [op.strip() for found in _OPENVINO_UNCONVERTED.findall(error) for op in found.split(",")]
        return f"OpenVINO cannot convert {', '.join(dict.fromkeys(ops)) or 'an op of the graph'}"
    return None


def judge_row(row: Row, outcome: Outcome, reference: dict[str, list[np.ndarray]]) -> RowResult:
    """The row's result: the comparator's verdict on what ran, or why nothing did (a checker that lacks an
    op of the graph is `unsupported`: skipped, not failed)."""
    if outcome.ran is None:
        if row.fallbacks:
            tried = "; ".join(f"{f['config']}: {f['error']}" for f in outcome.failed)
            return RowResult(row.spec.label, False, [f"{row.spec.label} failed in every configuration: {tried}"],
                             crashes=outcome.failed, spec=row.spec.to_dict())
        (failure,) = outcome.failed
        return RowResult(row.spec.label, False, [failure["error"]], crash=failure, spec=row.spec.to_dict(),
                         unsupported=unsupported_reason(row.spec, failure))
    result = judge(outcome.ran.label, reference, outcome.outputs, row.tolerance)
    if row.fallbacks:
        result.config, result.failed_configs = outcome.ran.config_name, outcome.failed
    result.spec = row.spec.to_dict()
    result.localise = None if result.passed else row.localise
    return result
