"""`cnnexport verify`: integrity, a parity matrix across runtimes, first divergence, and speed.

Importable and runnable without Paddle (`python -m exporter.verify --device gpu ARTIFACT` on a
machine with only numpy, onnx and onnxruntime-gpu): the eager model and Paddle Inference rows
need Paddle and are skipped without it, and parity is then checked against the artifact's
reference bundle (`reference.npz`: inputs and the eager model's outputs, written by a verify
run that had Paddle, and covered by the manifest's hashes).

Every runtime runs in its own child process: a native crash becomes that runtime's failure
(with its signal), and the other runtimes are still verified.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

from . import isolate, runtimes
from .artifact import (REFERENCE_FILE, VERIFY_REPORT, ArtifactError, atomic_write, integrity_problems, load_manifest,
                       locked, sha256, sweep_leftovers, write_json)
from .bench import BenchPlan
from .compare import CPU_FP32, GPU_TF32, Tolerance, agreement
from .errors import BadInput

FP16_FILE = "model.fp16.onnx"
FP16_TOLERANCE = Tolerance(rel_l2=float("inf"), top1_agreement=0.99)  # fp16: rel L2 is reported, not bounded
MULTI_BATCH = 4
DEFAULT_BATCH_SIZES = {"cpu": (1, 8), "gpu": (1, 8, 64)}
MAX_BATCH, MAX_THREADS = 512, 1024
# Stored weights whose file failed integrity are compared with the model's, by name, to say which changed.
WEIGHT_FILES = {"paddle/inference.pdiparams": "paddle-inference", "model.onnx": "onnxruntime"}


@dataclass
class VerifyOptions:
    device: str = "auto"
    images: str | None = None
    batch_sizes: tuple[int, ...] = ()      # () -> DEFAULT_BATCH_SIZES[device]
    bench: bool = True
    rtol: float | None = None
    atol: float | None = None
    threads: int = 0
    reference_evaluator: bool = True
    extra_runtimes: tuple[runtimes.RuntimeSpec, ...] = ()

    def tolerance(self, default: Tolerance) -> Tolerance:
        """`default`, with the user's --rtol and --atol where given."""
        return Tolerance(self.rtol or default.rel_l2, self.atol)

    def validate(self) -> None:
        """Bad options are exit 2 before any work (a NaN tolerance would fail everything, slowly)."""
        for option, value in (("--rtol", self.rtol), ("--atol", self.atol)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadInput(f"{option} must be a finite number above 0, not {value}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise BadInput(f"--threads must be between 0 (all cores) and {MAX_THREADS}, not {self.threads}")
        if any(not 1 <= b <= MAX_BATCH for b in self.batch_sizes):
            raise BadInput(f"--batch-sizes must be between 1 and {MAX_BATCH}, not {','.join(map(str, self.batch_sizes))}")


def paddle_available() -> bool:
    try:
        import paddle  # noqa: F401
    except ImportError:
        return False
    return True


def _gpu_available() -> bool:
    """ONNX Runtime's CUDA provider, or a CUDA build of Paddle that sees a device."""
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return True
    if paddle_available():
        import paddle
        return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    return False


def resolve_device(device: str) -> str:
    """auto: the GPU where one can be used; gpu without one is bad input, found before any work."""
    if device == "cpu":
        return device
    if _gpu_available():
        return "gpu"
    if device == "gpu":
        raise BadInput("--device gpu: neither ONNX Runtime's CUDA provider (onnxruntime-gpu) nor a CUDA build of "
                       "Paddle with a visible GPU is installed here; use --device cpu")
    return "cpu"


def _chunks(batch: np.ndarray, size: int | None) -> list[np.ndarray]:
    """Split into batches of a static size, the last one padded by repeating its samples."""
    if not size:
        return [batch]
    out = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        out.append(np.concatenate([chunk, chunk[np.arange(size - len(chunk)) % len(chunk)]]) if len(chunk) < size else chunk)
    return out


def parity_inputs(manifest: dict, images_dir: str | None = None) -> dict[str, np.ndarray]:
    """Seeded random images at batch 1 and at a batch of different images; real photographs."""
    from .images import folder_photos, preprocess, sample_photos

    static, size = manifest["input"]["shape"][0], manifest["input"]["shape"][-1]
    rng = np.random.default_rng(1)
    inputs = {}
    if static in (None, 1):
        inputs["random-b1"] = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    inputs[f"random-b{static or MULTI_BATCH}"] = rng.standard_normal((static or MULTI_BATCH, 3, size, size),
                                                                     dtype=np.float32)
    photos = sample_photos()
    if images_dir:
        photos.update(folder_photos(images_dir))
    for i, chunk in enumerate(_chunks(preprocess(photos, manifest["input"]), static)):
        inputs["photos" if not static else f"photos-{i}"] = chunk
    return inputs


class StaleWeights(Exception):
    """The weights file named in the manifest is gone or has changed since the export."""


def eager_outputs(manifest: dict, inputs: dict[str, np.ndarray]) -> tuple[dict, dict, object]:
    """The trained model's outputs (unfused, as loaded) and its fused form's, rebuilt from the manifest."""
    import paddle

    from .export import build_model
    from .rewrite import fuse

    weights = manifest["weights"]
    if weights["path"]:
        path = Path(weights["path"])
        if not path.is_file():
            raise StaleWeights(f"weights file {path} named in the manifest is missing")
        if sha256(path) != weights["sha256"]:
            raise StaleWeights(f"weights file {path} has changed since the export (sha256 mismatch)")
    model = build_model(manifest["model"]["name"], manifest["model"]["kwargs"], weights["path"])
    fused, _ = fuse(model)
    with paddle.no_grad():
        plain = {k: model(paddle.to_tensor(v)).numpy() for k, v in inputs.items()}
        folded = {k: fused(paddle.to_tensor(v)).numpy() for k, v in inputs.items()}
    return plain, folded, fused if manifest["model"]["fused"] else model


def _bundle_arrays(path: Path, manifest: dict) -> tuple[dict, dict]:
    """The bundle's inputs and outputs, each checked: float32, finite, the manifest's image shape,
    and one [N, classes] output per input batch. Anything else is ArtifactError (exit 2)."""
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{path} is not a valid reference bundle ({what}): run `cnnexport verify` with Paddle "
                             "to write it again")

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise bad(" ".join(str(err).split())) from None
    inputs = {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}
    outputs = {k.removeprefix("output:"): v for k, v in arrays.items() if k.startswith("output:")}
    if not inputs or inputs.keys() != outputs.keys() or len(arrays) != 2 * len(inputs):
        raise bad("its entries must be pairs input:NAME, output:NAME")
    image = manifest["input"]["shape"][1:]
    for name, batch in inputs.items():
        out = outputs[name]
        if batch.dtype != np.float32 or out.dtype != np.float32:
            raise bad(f"{name} is {batch.dtype}/{out.dtype}, not float32")
        if batch.ndim != 4 or list(batch.shape[1:]) != image or out.ndim != 2 or out.shape[0] != batch.shape[0]:
            raise bad(f"{name} has shapes {list(batch.shape)} -> {list(out.shape)}, not [N, {', '.join(map(str, image))}]"
                      " -> [N, classes]")
        if not (np.isfinite(batch).all() and np.isfinite(out).all()):
            raise bad(f"{name} holds NaN or Inf")
    return inputs, outputs


def write_bundle(root: Path, manifest: dict, inputs: dict, outputs: dict) -> None:
    """Store parity inputs and eager outputs, and cover the file with the manifest's hashes."""
    import paddle

    path = root / REFERENCE_FILE
    arrays = {**{f"input:{k}": v for k, v in inputs.items()}, **{f"output:{k}": v for k, v in outputs.items()}}

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
            np.savez_compressed(f, **arrays)

    atomic_write(path, save)
    manifest["reference"] = {"file": REFERENCE_FILE, "batches": {k: list(v.shape) for k, v in inputs.items()},
                             "source": f"eager model, unfused (paddle {paddle.__version__})",
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest["files"][REFERENCE_FILE] = {"size": path.stat().st_size, "sha256": sha256(path)}
    write_json(root / "manifest.json", manifest)


@dataclass
class Row:
    """One runtime of the parity matrix."""

    spec: runtimes.RuntimeSpec
    tolerance: Tolerance
    batches: tuple[str, ...] | None = None   # None: every parity batch
    bench: bool = False


def runtime_rows(root: Path, device: str, opts: VerifyOptions, inputs: dict[str, np.ndarray]) -> list[Row]:
    tol = opts.tolerance(CPU_FP32)
    gpu_tol = opts.tolerance(GPU_TF32)
    onnx_path = root / "model.onnx"
    rows: list[Row] = []
    if onnx_path.is_file():
        cpu = runtimes.RuntimeSpec("onnxruntime", str(onnx_path), "cpu", opts.threads)
        rows.append(Row(cpu, tol, bench=device == "cpu"))
        if device == "gpu":
            # The deployment setting: TF32 and NHWC kernels (about 20% faster on an H100, same accuracy).
            gpu = runtimes.RuntimeSpec("onnxruntime", str(onnx_path), "gpu", tf32=True, prefer_nhwc=True)
            rows.append(Row(gpu, gpu_tol, bench=True))
            # TF32 off must meet the fp32 CPU tolerance: it separates TF32 rounding from a conversion error.
            rows.append(Row(runtimes.RuntimeSpec("onnxruntime", str(onnx_path), "gpu", tf32=False), tol))
        if opts.reference_evaluator:  # slow: the smallest batch only
            smallest = min(inputs, key=lambda k: len(inputs[k]))
            rows.append(Row(runtimes.RuntimeSpec("onnx-reference", str(onnx_path)), tol, (smallest,)))
    fp16_path = root / FP16_FILE
    if fp16_path.is_file():
        photos = tuple(k for k in inputs if k.startswith("photos"))
        for dev in ("cpu", "gpu") if device == "gpu" else ("cpu",):
            spec = runtimes.RuntimeSpec("onnxruntime", str(fp16_path), dev, opts.threads if dev == "cpu" else 0,
                                        prefer_nhwc=dev == "gpu", precision="fp16")
            rows.append(Row(spec, FP16_TOLERANCE, photos, bench=dev == device))
    rows += [Row(spec, tol) for spec in opts.extra_runtimes]
    return rows


def _evaluate(label: str, reference: dict, outputs: dict, tol: Tolerance) -> dict:
    per_batch = {name: agreement(reference[name], out) for name, out in outputs.items()}
    failures = [f"{name}: {why}" for name, a in per_batch.items() for why in a.failures(tol)]
    worst = {"rel_l2": max(a.rel_l2 for a in per_batch.values()),
             "max_abs": max(a.max_abs for a in per_batch.values()),
             "cosine": min(a.cosine for a in per_batch.values()),
             "top1": min(a.top1 for a in per_batch.values()),
             "top5": min(a.top5 for a in per_batch.values())}
    return {"runtime": label, "passed": not failures, "failures": failures, "tolerance": tol.__dict__,
            "worst": worst, "batches": {k: a.to_dict() for k, a in per_batch.items()}}


def _run_row(row: Row, inputs: dict, plan: BenchPlan | None) -> tuple[dict | None, dict]:
    names = list(row.batches) if row.batches is not None else list(inputs)
    try:
        job = isolate.call_isolated(runtimes.run_job, row.spec, [inputs[n] for n in names],
                                    plan if row.bench else None, what=row.spec.label)
    except isolate.ChildCrashed as err:
        return None, {"error": str(err), "signal": err.signal, "log_tail": err.log_tail[-2000:]}
    except isolate.ChildFailed as err:
        return None, {"error": str(err)}
    return dict(zip(names, job.outputs)), {"timings": job.timings}


def _divergence_for(row_label: str, spec: runtimes.RuntimeSpec, manifest: dict, eager_model, batch: np.ndarray) -> dict:
    """Where a failed row parts from its reference: activations and weights against the eager model,
    or, without Paddle, a GPU run's values against the same graph on the CPU."""
    from models.weights import state_dict_arrays

    from .divergence import (eager_layer_outputs, first_differing_value, first_divergence, onnx_intermediates,
                             onnx_weights, paddle_weights, weight_differences)

    names = manifest.get("paddle_param_names", {})
    sample = batch[:1] if manifest["input"]["dynamic_batch"] else batch
    ort_spec = spec if spec.kind == "onnxruntime" else runtimes.RuntimeSpec("onnxruntime", spec.model_path)
    result: dict = {"runtime": row_label}
    try:
        if eager_model is None:
            cpu = runtimes.RuntimeSpec("onnxruntime", spec.model_path)
            reference = isolate.call_isolated(onnx_intermediates, cpu, sample, what="onnxruntime/cpu intermediates")
            values = isolate.call_isolated(onnx_intermediates, spec, sample, what=f"{spec.label} intermediates")
            result["against_cpu"] = first_differing_value(reference, values)
            return result
        weights = state_dict_arrays(eager_model)
        if spec.kind == "paddle-inference":
            stored = isolate.call_isolated(paddle_weights, spec.model_path, list(names), what="read inference.pdiparams")
            result["weights"] = weight_differences(stored, names, weights)
        else:
            values = isolate.call_isolated(onnx_intermediates, ort_spec, sample, what=f"{ort_spec.label} intermediates")
            result["activation"] = first_divergence(eager_layer_outputs(eager_model, sample), values)
            result["weights"] = weight_differences(onnx_weights(spec.model_path), names, weights)
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        result["error"] = str(err)
    return result


@dataclass
class Reference:
    """What the runtimes are compared with: the eager model's outputs on the parity inputs."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    source: str
    eager_model: object = None          # the eager model in the artifact's form, when Paddle is here
    rows: tuple[dict, ...] = ()         # checks made on the way: eager fused, the stored bundle
    notes: tuple[str, ...] = ()         # what was repaired on the way (a stale bundle rewritten)


def reference_for(root: Path, manifest: dict, opts: VerifyOptions, problems: dict[str, str]) -> Reference:
    """The eager model's outputs, or, without Paddle, the stored bundle.

    With Paddle the bundle is a cache of the eager outputs: one that is missing, stale or damaged
    (a verify killed between writing it and the manifest leaves it so) is written again, and is
    no problem of the artifact's; a good one is compared with the eager outputs. Without Paddle
    the bundle is the reference, so it must pass integrity.
    """
    bundle = root / REFERENCE_FILE
    usable = REFERENCE_FILE in manifest["files"] and REFERENCE_FILE not in problems
    why_not_eager = "Paddle is not installed"
    if paddle_available():
        inputs = parity_inputs(manifest, opts.images)
        try:
            plain, folded, eager_model = eager_outputs(manifest, inputs)
        except StaleWeights as err:
            problems["weights"] = why_not_eager = str(err)
        else:
            rows, notes = [_evaluate("eager-fused/cpu", plain, folded, CPU_FP32)], []
            stale = problems.pop(REFERENCE_FILE, None)
            try:
                stored = _bundle_arrays(bundle, manifest) if usable else None
            except ArtifactError as err:
                stored, stale = None, str(err)
            if stored and stored[0].keys() == inputs.keys() and all(np.array_equal(stored[0][k], v)
                                                                    for k, v in inputs.items()):
                rows.append(_evaluate("reference-bundle", plain, stored[1], CPU_FP32))
            elif not problems:  # never bless a tampered artifact by hashing it into the manifest
                write_bundle(root, manifest, inputs, plain)
                if stale:
                    notes.append(f"{REFERENCE_FILE} was rewritten from the eager model ({stale})")
            return Reference(inputs, plain, "eager (unfused)", eager_model, tuple(rows), tuple(notes))
    if not usable:
        why = problems.get(REFERENCE_FILE, f"there is no {REFERENCE_FILE}")
        raise ArtifactError(f"{root}: no reference to verify against ({why_not_eager}, and {why}): "
                            "run `cnnexport verify` once on a machine with Paddle")
    inputs, outputs = _bundle_arrays(bundle, manifest)
    return Reference(inputs, outputs, f"reference bundle ({manifest.get('reference', {}).get('source', REFERENCE_FILE)})")


def changed_weights(root: Path, rel: str, manifest: dict, eager_model) -> dict:
    """A weights file failed integrity: which of its stored weights differ from the model's, by name,
    whether or not parity notices (a flipped low-order bit may not)."""
    from models.weights import state_dict_arrays

    from .divergence import onnx_weights, paddle_weights, weight_differences

    names = manifest["paddle_param_names"]
    result: dict = {"file": rel}
    try:
        if rel.startswith("paddle/"):
            stored = isolate.call_isolated(paddle_weights, str(root / "paddle"), list(names), what=f"read {rel}")
        else:
            stored = isolate.call_isolated(onnx_weights, str(root / rel), what=f"read {rel}")
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        result["error"] = str(err)
        return result
    # Exact: the stored weights are bit for bit what the export saved from this same model.
    result["weights"] = weight_differences(stored, names, state_dict_arrays(eager_model), rtol=0.0)
    return result


def _paddle_row(root: Path, ref: Reference, device: str, opts: VerifyOptions, plan: BenchPlan | None):
    """Paddle Inference (GPU where Paddle has CUDA), with its configuration fallbacks."""
    paddle_device = "gpu" if device == "gpu" and _paddle_has_cuda() else "cpu"
    spec = runtimes.RuntimeSpec("paddle-inference", str(root / "paddle"), paddle_device)
    try:
        run = runtimes.run_paddle_inference(spec.model_path, list(ref.inputs.values()), paddle_device,
                                            plan if paddle_device == device else None, opts.threads)
    except runtimes.AllConfigsFailed as err:
        return spec, {"runtime": spec.label, "passed": False, "failures": [str(err)], "crashes": err.attempts}, []
    row = _evaluate(run.record["runtime"], ref.outputs, dict(zip(ref.inputs, run.result.outputs)),
                    opts.tolerance(CPU_FP32))
    row.update(config=run.record["config"], failed_configs=run.record["failed_configs"])
    return spec, row, run.result.timings


def verify_artifact(root: Path, opts: VerifyOptions, device: str, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Verify one artifact directory; returns the report (also written to <root>/verify.json).

    The artifact is locked while verify writes into it (its bundle, manifest and report), and the
    temporary files of a verify that was killed are swept first.
    """
    root = Path(root)
    with locked(root, on_wait=progress):
        sweep_leftovers(root)
        return _verify_locked(root, opts, device, progress)


def _verify_locked(root: Path, opts: VerifyOptions, device: str, progress: Callable[[str], None]) -> dict:
    manifest = load_manifest(root)
    progress("integrity")
    problems = integrity_problems(root, manifest)
    progress("reference")
    ref = reference_for(root, manifest, opts, problems)
    plan = None
    if opts.bench:
        plan = BenchPlan(manifest["input"]["shape"][-1], tuple(opts.batch_sizes or DEFAULT_BATCH_SIZES[device]),
                         static_batch=manifest["input"]["shape"][0])

    ran: list[tuple[runtimes.RuntimeSpec | None, dict]] = [(None, row) for row in ref.rows]
    timings: list[dict] = []
    if ref.eager_model is not None:
        progress("paddle-inference")
        spec, row, times = _paddle_row(root, ref, device, opts, plan)
        ran.append((spec, row))
        timings += times
    for row in runtime_rows(root, device, opts, ref.inputs):
        progress(row.spec.label)
        outputs, extra = _run_row(row, ref.inputs, plan)
        if outputs is None:
            ran.append((row.spec, {"runtime": row.spec.label, "passed": False, "failures": [extra["error"]],
                                   "crash": extra}))
        else:
            ran.append((row.spec, _evaluate(row.spec.label, ref.outputs, outputs, row.tolerance)))
            timings += extra["timings"]

    divergences = []
    for spec, result in ran:
        comparable = ref.eager_model is not None or (spec is not None and spec.device == "gpu")
        # fp16 values never match fp32 ones to alignment tolerance: those rows are not localised.
        if (comparable and spec is not None and not result["passed"] and "crash" not in result
                and spec.kind in runtimes.BUILT_IN_KINDS and spec.precision == "fp32"):
            progress(f"divergence {result['runtime']}")
            divergences.append(_divergence_for(result["runtime"], spec, manifest, ref.eager_model,
                                               next(iter(ref.inputs.values()))))
    weight_changes = []
    if ref.eager_model is not None:
        for rel in WEIGHT_FILES:
            if rel in problems and (root / rel).is_file():
                progress(f"changed weights in {rel}")
                weight_changes.append(changed_weights(root, rel, manifest, ref.eager_model))
    rows = [dict(result, spec=spec.to_dict()) if spec else result for spec, result in ran]
    report = {"artifact": str(root), "model": manifest["model"], "device": device,
              "threads": runtimes.default_threads(opts.threads), "paddle": paddle_available(),
              "integrity": list(problems.values()), "changed_weights": weight_changes, "notes": list(ref.notes),
              "reference": ref.source, "inputs": {k: list(v.shape) for k, v in ref.inputs.items()},
              "bench_plan": plan.__dict__ if plan else None, "rows": rows, "divergence": divergences,
              "timings": [dict(t, model=manifest["model"]["name"], fused=manifest["model"]["fused"]) for t in timings],
              "passed": not problems and all(r["passed"] for r in rows),
              "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(root / VERIFY_REPORT, report)
    return report


def _paddle_has_cuda() -> bool:
    import paddle
    return paddle.is_compiled_with_cuda()


def summary_lines(report: dict) -> list[str]:
    """A plain-text summary (no table library needed on a bare GPU machine)."""
    lines = [f"{report['artifact']}: {'PASS' if report['passed'] else 'FAIL'} (reference: {report['reference']})"]
    lines += [f"  integrity: {p}" for p in report["integrity"]]
    for change in report.get("changed_weights", []):
        named = ", ".join(w["weight"] for w in change.get("weights", [])[:3]) or change.get("error", "none by name")
        lines.append(f"  changed weights in {change['file']}: {named}")
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    for row in report["rows"]:
        worst = row.get("worst")
        figures = (f"rel L2 {worst['rel_l2']:.1e}  max abs {worst['max_abs']:.1e}  top-1 {worst['top1']:.0%}"
                   if worst else "")
        lines.append(f"  {'ok  ' if row['passed'] else 'FAIL'} {row['runtime']:<40} {figures}")
        lines += [f"       {f}" for f in row["failures"][:3]]
    for d in report["divergence"]:
        lines.append(f"  first divergence ({d['runtime']}): {json.dumps({k: v for k, v in d.items() if k != 'runtime'})}")
    for t in report["timings"]:
        lines.append(f"  speed {t['label']:<34} {t['mode']:<20} bs {t['batch']:<3} p50 {t['p50_ms']:8.2f} ms  "
                     f"{t['images_per_s']:9.1f} img/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m exporter.verify`: the same verification, without the click CLI (for bare GPU machines)."""
    parser = argparse.ArgumentParser(prog="python -m exporter.verify", description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto")
    parser.add_argument("--batch-sizes", default="")
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--no-reference-evaluator", action="store_true")
    parser.add_argument("--rtol", type=float)
    args = parser.parse_args(argv)
    opts = VerifyOptions(device=args.device, bench=not args.no_bench, rtol=args.rtol,
                         batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",") if b),
                         reference_evaluator=not args.no_reference_evaluator)
    device = resolve_device(opts.device)
    passed = True
    for path in args.artifacts:
        try:
            report = verify_artifact(Path(path), opts, device)
        except ArtifactError as err:
            print(f"verify: error: {err}", file=sys.stderr)
            return 2
        print("\n".join(summary_lines(report)))
        passed &= report["passed"]
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
