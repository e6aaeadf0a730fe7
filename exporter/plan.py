"""The verification matrix as data: the rows verify runs for an artifact, and the rows of the
export's smoke check. Paddle-free.

A row names its runtime (with the fallback configurations to try in order, so Paddle Inference's
oneDNN -> native -> no-IR-optimisation chain is ordinary data), the parity inputs it runs, its
tolerance, whether it is timed, and where a failure is traced. `cnnexport.run` runs a row and
judges it; nothing downstream asks what kind of runtime a row is.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import FP16_FILE, INT8_FILE, LEGACY_PROGRAM, ONNX_FILE
from . import isolate
from .compare import BF16, CPU_FP32, FP16, GPU_TF32, INT8, Tolerance
from .errors import BadInput
from .runtimes import (PADDLECLAS_DEPLOY_CONFIG, RuntimeSpec, openvino_available, openvino_cpu_capabilities,
                       paddle_configs)

DEFAULT_BATCH_SIZES = {"cpu": (1, 8), "gpu": (1, 8, 64)}
MAX_BATCH, MAX_THREADS = 512, 1024


@dataclass(frozen=True)
class Row:
    """One runtime of the matrix."""

    spec: RuntimeSpec                          # what the row is; its label when nothing could run
    tolerance: Tolerance
    inputs: tuple[str, ...] | None = None      # the parity inputs it runs; None: all of them
    timed: bool = False                        # timed when verify benchmarks
    localise: str | None = None                # where a failure is traced: "onnx" (the graph's values and
                                               # initializers), "paddle" (inference.pdiparams), "stored-weights"
                                               # (an imported program's parameters against the ONNX
                                               # initializers); None: not
    fallbacks: tuple[RuntimeSpec, ...] = ()    # tried in order in place of `spec`, until one runs

    @property
    def attempts(self) -> tuple[RuntimeSpec, ...]:
        return self.fallbacks or (self.spec,)


@dataclass
class VerifyOptions:
    """What the user asked of `cnnexport verify`."""

    device: str = "auto"
    images: str | None = None
    batch_sizes: tuple[int, ...] = ()      # () -> DEFAULT_BATCH_SIZES[device]
    bench: bool = True
    rtol: float | None = None
    atol: float | None = None
    threads: int = 0
    reference_evaluator: bool = True
    extra_rows: tuple[Row, ...] = ()       # runtimes of one's own (a "package.module:function" spec kind)
    eval_data: str | None = None           # a CIFAR-format tarball to measure top-1 accuracy on
    export_rtol: float | None = None       # the bars the export checked the artifact at (manifest model.tolerance)
    export_atol: float | None = None

    def tolerance(self, default: Tolerance) -> Tolerance:
        """`default`, with the user's --rtol and --atol where given (else those the export recorded, the
        relative one as a floor: it never tightens TF32's)."""
        return Tolerance(self.rtol or max(default.rel_l2, self.export_rtol or 0.0),
                         self.atol if self.atol is not None else self.export_atol)

    def validate(self) -> None:
        """Bad options are exit 2 before any work (a NaN tolerance would fail everything, slowly)."""
        check_tolerances(self.rtol, self.atol)
        if not 0 <= self.threads <= MAX_THREADS:
            raise BadInput(f"--threads must be between 0 (all cores) and {MAX_THREADS}, not {self.threads}")
        if any(not 1 <= b <= MAX_BATCH for b in self.batch_sizes):
            raise BadInput(f"--batch-sizes must be between 1 and {MAX_BATCH}, not {','.join(map(str, self.batch_sizes))}")


def check_tolerances(rtol: float | None, atol: float | None) -> None:
    """--rtol and --atol (export's and verify's) are finite numbers above 0, or not given."""
    for option, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise BadInput(f"{option} must be a finite number above 0, not {value}")


def paddle_row(model_dir: Path, device: str, threads: int, tolerance: Tolerance, *, timed: bool,
               tensorrt: bool = False, inputs: tuple[str, ...] | None = None) -> Row:
    """Paddle Inference with its configuration fallbacks, best first."""
    spec = RuntimeSpec("paddle-inference", str(model_dir), device, threads)
    fallbacks = tuple(RuntimeSpec("paddle-inference", str(model_dir), device, threads, config)
                      for config in paddle_configs(device, tensorrt))
    return Row(spec, tolerance, inputs, timed, "paddle", fallbacks)


def paddleclas_row(model_dir: Path, threads: int, tolerance: Tolerance, inputs: tuple[str, ...] | None = None) -> Row:
    """The legacy program in Paddle Inference as PaddleClas's deploy predictor configures it."""
    spec = RuntimeSpec("paddle-inference", str(model_dir), "cpu", threads, PADDLECLAS_DEPLOY_CONFIG)
    return Row(spec, tolerance, inputs, localise="paddle")


def verify_plan(root: Path, device: str, opts: VerifyOptions, inputs: dict[str, np.ndarray], *,
                eager: bool, imported: bool = False, paddle_device: str = "cpu", tensorrt: bool = False) -> list[Row]:
    """Every row for the artifact at `root` on `device`. Without the eager model (`eager` False: no
    Paddle here, or an imported program, whose Paddle Inference run is the reference) there is no
    Paddle row; an imported program's failing rows are traced to its stored weights, and otherwise
    only GPU rows can be localised (against the CPU)."""
    tol, gpu_tol = opts.tolerance(CPU_FP32), opts.tolerance(GPU_TF32)
    rows: list[Row] = []
    if eager:
        rows.append(paddle_row(root, paddle_device, opts.threads, tol, tensorrt=tensorrt, timed=paddle_device == device))
        if (root / LEGACY_PROGRAM).is_file():
            rows.append(paddleclas_row(root, opts.threads, tol))
    onnx_path = str(root / ONNX_FILE)
    if (root / ONNX_FILE).is_file():
        def onnx_row(spec, tolerance, timed=False, only=None):
            localised = "onnx" if eager or spec.device == "gpu" else "stored-weights" if imported else None
            return Row(spec, tolerance, only, timed, localised)

        rows.append(onnx_row(RuntimeSpec("onnxruntime", onnx_path, "cpu", opts.threads), tol, device == "cpu"))
        if device == "gpu":
            # The deployment setting: TF32 and NHWC kernels (about 20% faster on an H100, same accuracy).
            rows.append(onnx_row(RuntimeSpec("onnxruntime", onnx_path, "gpu", tf32=True, prefer_nhwc=True), gpu_tol,
                                 True))
            # TF32 off must meet the fp32 CPU tolerance: it separates TF32 rounding from a conversion error.
            rows.append(onnx_row(RuntimeSpec("onnxruntime", onnx_path, "gpu", tf32=False), tol))
        if opts.reference_evaluator and not reference_evaluator_skipped(root / ONNX_FILE):  # slow: the smallest batch only
            smallest = min(inputs, key=lambda k: len(inputs[k]))
            rows.append(onnx_row(RuntimeSpec("onnx-reference", onnx_path), tol, only=(smallest,)))
    if openvino_available():
        if (root / ONNX_FILE).is_file():
            rows.append(Row(RuntimeSpec("openvino", onnx_path, "cpu", opts.threads), tol, timed=device == "cpu"))
        if (root / LEGACY_PROGRAM).is_file():  # OpenVINO's Paddle frontend reads only the legacy program
            rows.append(Row(RuntimeSpec("openvino", str(root / LEGACY_PROGRAM), "cpu", opts.threads), tol))
    photos = tuple(k for k in inputs if k.startswith("photos"))
    if (root / FP16_FILE).is_file():
        # fp16 values never match fp32 ones to alignment tolerance: these rows are not localised.
        for dev in ("cpu", "gpu") if device == "gpu" else ("cpu",):
            spec = RuntimeSpec("onnxruntime", str(root / FP16_FILE), dev, opts.threads if dev == "cpu" else 0,
                               prefer_nhwc=dev == "gpu", precision="fp16")
            rows.append(Row(spec, FP16, photos, dev == device))
    rows += [Row(spec, tolerance, photos, device == "cpu")
             for spec, tolerance in reduced_cpu_specs(root, opts.threads).values()]
    return rows + list(opts.extra_rows)


# Ops onnx.reference computes element by element in Python: one small map takes it many minutes.
SLOW_IN_REFERENCE_EVALUATOR = ("Resize",)


def reference_evaluator_skipped(onnx_path: Path) -> str | None:
    """Why the onnx.reference row is left out for this graph (None: it is run)."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    slow = sorted(ops & set(SLOW_IN_REFERENCE_EVALUATOR))
    if slow:
        return (f"onnx-reference/cpu not run: the graph has {', '.join(slow)}, which onnx.reference interpolates "
                "pixel by pixel in Python (many minutes for one small image); the other runtimes check it")
    return None


def reduced_cpu_specs(root: Path, threads: int = 0) -> dict[str, tuple[RuntimeSpec, Tolerance]]:
    """The CPU deploy variants in reduced precision, by name, each judged by the class it predicts: the
    int8 file in ONNX Runtime and in OpenVINO, and, where the artifact was exported for reduced precision
    (an fp16 or int8 file) and the CPU computes bf16 (avx512_bf16 or AMX), the fp32 file in OpenVINO in bf16."""
    specs = {}
    int8, openvino = (root / INT8_FILE).is_file(), openvino_available()
    if int8:
        specs["onnx-int8"] = int8_spec(root / INT8_FILE, threads), INT8
        if openvino:
            specs["openvino-int8"] = RuntimeSpec("openvino", str(root / INT8_FILE), "cpu", threads, precision="int8"), INT8
    if (int8 or (root / FP16_FILE).is_file()) and (root / ONNX_FILE).is_file() and openvino_has_bf16():
        specs["openvino-bf16"] = RuntimeSpec("openvino", str(root / ONNX_FILE), "cpu", threads, precision="bf16"), BF16
    return specs


def int8_spec(path: Path, threads: int = 0) -> RuntimeSpec:
    return RuntimeSpec("onnxruntime", str(path), "cpu", threads, precision="int8")


@functools.lru_cache(maxsize=1)
def openvino_has_bf16() -> bool:
    """Whether OpenVINO computes bf16 on this CPU (asked once per process, in a child: native code)."""
    if not openvino_available():
        return False
    try:
        return "BF16" in isolate.call_isolated(openvino_cpu_capabilities, what="OpenVINO's CPU capabilities")
    except (isolate.ChildCrashed, isolate.ChildFailed):
        return False


def smoke_plan(stage: Path, legacy: bool, onnx: bool, fp16: bool, int8: bool, smoke: tuple[str, ...],
               photos: tuple[str, ...], paddle: bool = True, tolerance: Tolerance = CPU_FP32) -> dict[str, Row]:
    """The export's check before an artifact is written, by format: every file it would hold that
    computes, on the smoke batches (one per size) against the eager model (the fp16 and int8 variants on the
    photographs, with the top-1 agreement verify asks of them), with every reduced-precision CPU row
    verify will judge (OpenVINO on the int8 file, and in bf16): nothing is written that verify would
    fail. `paddle` False: the reference is Paddle Inference on the programs themselves (an imported
    model), so they are not checked against it. `tolerance`: the fp32 rows' (export's --rtol, --atol, or
    the bar grounded in the model's own rounding, `cnnexport.precision`)."""
    rows = {"paddle": paddle_row(stage, "cpu", 0, tolerance, timed=False, inputs=smoke)} if paddle else {}
    if legacy and paddle:
        rows["paddle-legacy"] = paddleclas_row(stage, 0, tolerance, inputs=smoke)
    if onnx:
        rows["onnx"] = Row(RuntimeSpec("onnxruntime", str(stage / ONNX_FILE)), tolerance, smoke)
    if fp16:
        rows["onnx-fp16"] = Row(RuntimeSpec("onnxruntime", str(stage / FP16_FILE), precision="fp16"), FP16, photos)
    if fp16 or int8:
        rows.update((name, Row(spec, tolerance, photos)) for name, (spec, tolerance) in reduced_cpu_specs(stage).items())
    return rows
