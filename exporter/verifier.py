"""What `cnnexport verify` does to one artifact: integrity -> reference -> plan -> run -> judge ->
localise -> verify.json. (`cnnexport.verify` is the command; `cnnexport.verify()` the API.)

Importable and runnable without Paddle: the eager model and Paddle Inference rows need Paddle and
are left out without it, and parity is then checked against the artifact's reference bundle
(`cnnexport.reference`).

Every runtime runs in its own child process (`cnnexport.run`): a native crash becomes that
runtime's failure (with its signal), and the other runtimes are still verified.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from . import accuracy
from .artifact import ONNX_FILE, PADDLE_PARAMS, VERIFY_REPORT, Manifest, integrity_problems, locked, sweep_leftovers, write_json
from .bench import BenchPlan
from .blame import deploy_rows
from .device import paddle_available, paddle_has_gpu
from .divergence import changed_weights, localise
from .plan import DEFAULT_BATCH_SIZES, VerifyOptions, reference_evaluator_skipped, verify_plan
from .precision import recorded_tolerance
from .reference import reference_for
from .results import VerifyReport, recommend
from .run import judge_row, run_row
from .runtimes import default_threads, paddle_has_tensorrt

# A weights file that fails integrity has its stored weights compared with the model's, by name.
WEIGHT_FILES = (PADDLE_PARAMS, ONNX_FILE)


def verify_artifact(root: Path, opts: VerifyOptions, device: str,
                    progress: Callable[[str], None] = lambda step: None, eval_set=None, layer=None) -> VerifyReport:
    """Verify one artifact directory; returns the report (also written to <root>/verify.json).
    With `eval_set` (`accuracy.read_eval_set`: opts.eval_data read), top-1 accuracy is measured too.
    `layer`: the Layer object an artifact of one was exported from, the eager reference.

    The artifact is locked while verify writes into it (its bundle, manifest and report), and the
    temporary files of a verify that was killed are swept first.
    """
    root = Path(root)
    with locked(root, on_wait=progress):
        sweep_leftovers(root)
        return _verify_locked(root, opts, device, progress, eval_set, layer)


def _verify_locked(root: Path, opts: VerifyOptions, device: str, progress: Callable[[str], None],
                   eval_set, layer) -> VerifyReport:
    manifest = Manifest.load(root)
    export_rtol, export_atol = recorded_tolerance(manifest)
    opts = dataclasses.replace(opts, export_rtol=export_rtol, export_atol=export_atol)
    progress("integrity")
    problems = integrity_problems(root, manifest)
    progress("reference")
    ref = reference_for(root, manifest, opts.images, problems, layer)
    bench_plan = (BenchPlan(manifest.img_size, tuple(opts.batch_sizes or DEFAULT_BATCH_SIZES[device]),
                            static_batch=manifest.static_batch) if opts.bench else None)
    eager = ref.eager_model is not None
    paddle_device = "gpu" if device == "gpu" and eager and paddle_has_gpu() else "cpu"
    rows = verify_plan(root, device, opts, ref.inputs, eager=eager, imported=manifest.imported or manifest.from_object,
                       paddle_device=paddle_device,
                       tensorrt=paddle_device == "gpu" and paddle_has_tensorrt())
    rows, deploy_notes = deploy_rows(rows, manifest)  # the Paddle Inference configuration the artifact is deployed in

    results, timings, failed = list(ref.rows), [], []
    for row in rows:
        progress(row.spec.label)
        outcome = run_row(row, ref.inputs, bench_plan)
        result = judge_row(row, outcome, ref.outputs)
        results.append(result)
        timings += outcome.timings
        if result.localise:
            failed.append((row, result))
    divergences = []
    for row, result in failed:
        progress(f"divergence {result.runtime}")
        divergences.append(localise(row, result.runtime, manifest, ref.eager_model, next(iter(ref.inputs.values()))))
    weight_changes = []
    for rel in WEIGHT_FILES if eager else ():
        if rel in problems and (root / rel).is_file():
            progress(f"changed weights in {rel}")
            weight_changes.append(changed_weights(root, rel, manifest, ref.eager_model))

    measured, notes = None, list(ref.notes) + deploy_notes
    left_out = not any(row.spec.kind == "onnx-reference" for row in rows)
    if opts.reference_evaluator and (root / ONNX_FILE).is_file() and left_out:
        notes.append(reference_evaluator_skipped(root / ONNX_FILE))  # why the plan left the row out
    if eval_set is not None and eager:
        progress("accuracy")
        measured = accuracy.measure(root, manifest, eval_set, opts.eval_data, ref.eager_model, opts.threads)
    elif eval_set is not None:
        notes.append(f"accuracy not measured: no eager model ({ref.source})")
    timings = [dataclasses.replace(t, model=manifest.name, fused=manifest.fused) for t in timings]
    report = VerifyReport(
        artifact=str(root), model=manifest.model, device=device, threads=default_threads(opts.threads),
        paddle=paddle_available(), integrity=list(problems.values()), changed_weights=weight_changes,
        notes=notes, reference=ref.source, inputs={k: list(v.shape) for k, v in ref.inputs.items()},
        bench_plan=dataclasses.asdict(bench_plan) if bench_plan else None, rows=results, divergence=divergences,
        timings=timings, passed=not problems and all(r.passed for r in results if r.counted),
        verified=time.strftime("%Y-%m-%dT%H:%M:%S%z"), accuracy=measured, outputs=manifest.outputs,
        sizes=[list(size) for size in manifest.sizes],
        recommendation=recommend(results, timings) if bench_plan else None)
    write_json(root / VERIFY_REPORT, report.to_dict())
    return report
