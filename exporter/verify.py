"""`cnnexport verify`: integrity -> reference -> plan -> run -> judge -> localise -> report.

Importable and runnable without Paddle (`python -m cnnexport.verify --device gpu ARTIFACT` on a
machine with only numpy, onnx, onnxruntime-gpu and click: the same command as `cnnexport
verify`): the eager model and Paddle Inference rows need Paddle and are left out without it, and
parity is then checked against the artifact's reference bundle (`cnnexport.reference`).

Every runtime runs in its own child process (`cnnexport.run`): a native crash becomes that
runtime's failure (with its signal), and the other runtimes are still verified.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from . import accuracy, console
from .artifact import (ONNX_FILE, PADDLE_PARAMS, VERIFY_REPORT, Manifest, finished_artifacts, integrity_problems, locked,
                       sweep_leftovers, write_json)
from .bench import BenchPlan
from .device import paddle_available, paddle_has_gpu, resolve_device
from .divergence import changed_weights, localise
from .errors import BadInput
from .images import folder_photos
from .plan import DEFAULT_BATCH_SIZES, VerifyOptions, verify_plan
from .reference import reference_for, stored_reference
from .report import summary_lines, write_report
from .results import VerifyReport
from .run import judge_row, run_row
from .runtimes import default_threads, paddle_has_tensorrt

# A weights file that fails integrity has its stored weights compared with the model's, by name.
WEIGHT_FILES = (PADDLE_PARAMS, ONNX_FILE)


def verify_artifact(root: Path, opts: VerifyOptions, device: str,
                    progress: Callable[[str], None] = lambda step: None, eval_set=None) -> VerifyReport:
    """Verify one artifact directory; returns the report (also written to <root>/verify.json).
    With `eval_set` (`accuracy.read_eval_set`: opts.eval_data read), top-1 accuracy is measured too.

    The artifact is locked while verify writes into it (its bundle, manifest and report), and the
    temporary files of a verify that was killed are swept first.
    """
    root = Path(root)
    with locked(root, on_wait=progress):
        sweep_leftovers(root)
        return _verify_locked(root, opts, device, progress, eval_set)


def _verify_locked(root: Path, opts: VerifyOptions, device: str, progress: Callable[[str], None],
                   eval_set) -> VerifyReport:
    manifest = Manifest.load(root)
    progress("integrity")
    problems = integrity_problems(root, manifest)
    progress("reference")
    ref = reference_for(root, manifest, opts.images, problems)
    bench_plan = (BenchPlan(manifest.img_size, tuple(opts.batch_sizes or DEFAULT_BATCH_SIZES[device]),
                            static_batch=manifest.static_batch) if opts.bench else None)
    eager = ref.eager_model is not None
    paddle_device = "gpu" if device == "gpu" and eager and paddle_has_gpu() else "cpu"
    rows = verify_plan(root, device, opts, ref.inputs, eager=eager, imported=manifest.imported, paddle_device=paddle_device,
                       tensorrt=paddle_device == "gpu" and paddle_has_tensorrt())

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

    measured, notes = None, list(ref.notes)
    if eval_set is not None and eager:
        progress("accuracy")
        measured = accuracy.measure(root, manifest, eval_set, opts.eval_data, ref.eager_model, opts.threads)
    elif eval_set is not None:
        notes.append(f"accuracy not measured: no eager model ({ref.source})")
    report = VerifyReport(
        artifact=str(root), model=manifest.model, device=device, threads=default_threads(opts.threads),
        paddle=paddle_available(), integrity=list(problems.values()), changed_weights=weight_changes,
        notes=notes, reference=ref.source, inputs={k: list(v.shape) for k, v in ref.inputs.items()},
        bench_plan=dataclasses.asdict(bench_plan) if bench_plan else None, rows=results, divergence=divergences,
        timings=[dataclasses.replace(t, model=manifest.name, fused=manifest.fused) for t in timings],
        passed=not problems and all(r.passed for r in results), verified=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        accuracy=measured)
    write_json(root / VERIFY_REPORT, report.to_dict())
    return report


def _batch_sizes(ctx, param, value):
    if not value:
        return ()
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if any(s < 1 for s in sizes):
        raise click.BadParameter("batch sizes must be 1 or more")
    return sizes


@click.command("verify")
@click.argument("artifacts", nargs=-1, type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="auto", show_default=True)
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="A folder of extra real images.")
@click.option("--batch-sizes", callback=_batch_sizes, help="Batch sizes to time (default 1,8 on CPU; 1,8,64 on GPU).")
@click.option("--bench/--no-bench", default=True, show_default=True, help="Time each runtime.")
@click.option("--threads", type=int, default=0, help="CPU threads for every runtime (default: all cores).")
@click.option("--rtol", type=float, help="Relative L2 tolerance (default 1e-5 on CPU, 1e-3 for TF32 on GPU).")
@click.option("--atol", type=float, help="Also bound the max absolute error.")
@click.option("--reference-evaluator/--no-reference-evaluator", default=True, show_default=True,
              help="Also run onnx.reference (slow, shares no code with the other runtimes).")
@click.option("--eval-data", help="A CIFAR-format tarball: also measure top-1 accuracy against its labels (eager, "
                                  "ONNX, int8; the first 1000 test images). Needs Paddle.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def verify_command(artifacts, device, images, batch_sizes, bench, threads, rtol, atol, reference_evaluator, eval_data,
                   as_json):
    """Check artifacts: file integrity, parity across runtimes, first divergence, speed.

    ARTIFACTS default to every finished artifact under artifacts/. Writes verify.json into each,
    and REPORT.md with latency.png beside them. Exit 1 if any check fails.
    """
    console.load_paddle()
    opts = VerifyOptions(device, images, batch_sizes, bench, rtol, atol, threads, reference_evaluator,
                         eval_data=eval_data)
    opts.validate()
    paths = [Path(a) for a in artifacts] or finished_artifacts(Path("artifacts"))
    if not paths:
        raise BadInput("no finished artifacts under artifacts/: export one first, e.g. `cnnexport vanillanet_5 --fuse --onnx`")
    if eval_data is not None and not paddle_available():
        raise BadInput("--eval-data measures the eager model too, which needs Paddle: run it where Paddle is installed")
    eval_set = accuracy.read_eval_set(eval_data) if eval_data is not None else None
    for path in paths:  # exit 2 before any work: not an artifact, an unfinished or malformed one, or no reference
        manifest = Manifest.load(path)
        if not paddle_available():
            stored_reference(path, manifest)
        elif manifest.model.get("source") == "callable":  # its module must import here to rebuild the model
            from .models.external import resolve
            resolve(manifest.name)
        if eval_set is not None:
            accuracy.check_classes(eval_set, manifest, eval_data)
    if images:
        folder_photos(images)  # unreadable images: exit 2 before any work
    device = resolve_device(device)
    reports = []
    with console.progress(len(paths), "verify", "artifact") as (show, advance):
        for path in paths:
            reports.append(verify_artifact(path, opts, device, progress=lambda step, p=path: show(p.name, step),
                                           eval_set=eval_set))
            advance()
    written = [write_report(root) for root in sorted({p.resolve().parent for p in paths})]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for report in reports:
            click.echo("\n".join(summary_lines(report)))
        for path in filter(None, written):
            click.echo(f"report: {path}")
    return 0 if all(r.passed for r in reports) else console.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """`python -m cnnexport.verify`: `cnnexport verify` where only this package's Paddle-free part is needed."""
    return console.run(verify_command, argv, "python -m cnnexport.verify")


if __name__ == "__main__":
    sys.exit(main())
