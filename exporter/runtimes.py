"""The runtimes an artifact is checked in, behind one interface: `open_runtime(spec)` gives a
`Runtime` that infers (`runtime.infer(batch) -> outputs`, the model's outputs in order) and lists
how it can be timed.

Importing this module imports neither Paddle nor paddle2onnx (GPU machines may have neither);
each runtime imports its own library when opened. Runtimes are opened in a child process
(`cnnexport.job`, through `isolate.call_isolated`), so that a native crash is contained. Adding a
runtime is one opener here (or a "package.module:function" kind of one's own) and a row in
`cnnexport.plan`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .artifact import LEGACY_PROGRAM, PADDLE_PARAMS, PADDLE_PROGRAM

Infer = Callable[[np.ndarray], list[np.ndarray]]  # a batch -> the model's outputs, in order


@dataclass(frozen=True)
class PaddleConfig:
    """One Paddle Inference configuration; `apply` sets it on a `paddle.inference.Config`."""

    name: str
    device: str = "cpu"
    onednn: bool = False
    ir_optim: bool = True
    tensorrt: bool = False
    program: str = PADDLE_PROGRAM   # which program of the model directory: Paddle 3's, or the legacy .pdmodel
    memory_optim: bool = False

    def apply(self, config, threads: int) -> None:
        if self.device == "gpu":
            config.enable_use_gpu(256, 0)
            if self.tensorrt:
                from paddle.inference import PrecisionType
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=64, min_subgraph_size=3,
                                              precision_mode=PrecisionType.Float32, use_static=False,
                                              use_calib_mode=False)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)
            if self.onednn:
                config.set_mkldnn_cache_capacity(10)  # as PaddleClas's deploy predictor: bounded shape cache
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
        config.switch_ir_optim(self.ir_optim)
        if self.memory_optim:
            config.enable_memory_optim()


# Tried in order until one runs. Paddle Inference 3.3's default CPU path (oneDNN) is reported to
# segfault on some graphs of this zoo; the documented fallback is oneDNN off, then no IR optimisation.
CPU_PADDLE_CONFIGS = (
    PaddleConfig("cpu-onednn", onednn=True),
    PaddleConfig("cpu-native"),
    PaddleConfig("cpu-native-no-ir-optim", ir_optim=False),
)
GPU_PADDLE_CONFIGS = (
    PaddleConfig("gpu-tensorrt", "gpu", tensorrt=True),
    PaddleConfig("gpu", "gpu"),
    PaddleConfig("gpu-no-ir-optim", "gpu", ir_optim=False),
)


# Paddle Inference as PaddleClas's deploy predictor (deploy/utils/predictor.py) configures it on a
# CPU: oneDNN, IR optimisation, memory optimisation. On Paddle 3.3 memory optimisation fails on a
# Paddle 3 program (`inference.json`: "Not find predictor_id 0 and pass_name memory_optimize_pass")
# and works on the legacy one, which PaddleClas 2.6 loads when FLAGS_enable_pir_api=0.
PADDLECLAS_DEPLOY_CONFIG = PaddleConfig("paddleclas-deploy", onednn=True, program=LEGACY_PROGRAM, memory_optim=True)


def paddle_configs(device: str, tensorrt: bool = False) -> tuple[PaddleConfig, ...]:
    """The configurations to try for `device`, best first (TensorRT only where Paddle was built with it)."""
    if device == "gpu":
        return GPU_PADDLE_CONFIGS if tensorrt else GPU_PADDLE_CONFIGS[1:]
    return CPU_PADDLE_CONFIGS


def paddle_has_tensorrt() -> bool:
    from paddle.inference import get_trt_compile_version
    return any(get_trt_compile_version())


@dataclass(frozen=True)
class RuntimeSpec:
    """Which runtime runs which file on which device, and how. Plain data: it crosses processes."""

    kind: str                   # "paddle-inference" | "onnxruntime" | "onnx-reference" | "openvino"
    model_path: str             # the model directory (Paddle), the .onnx file, or (OpenVINO) the .pdmodel
    device: str = "cpu"
    threads: int = 0            # 0: all cores
    paddle_config: PaddleConfig | None = None
    tf32: bool = True           # ONNX Runtime CUDA: TensorFloat-32 matmuls and convs
    cuda_graph: bool = False
    prefer_nhwc: bool = False
    precision: str = "fp32"     # what it computes in: the model file's ("fp16", "int8"), or "bf16": the fp32
                                # file run in bf16 (OpenVINO's inference precision hint)

    @property
    def config_name(self) -> str | None:
        """The fallback configuration this spec is, for rows that try several (Paddle Inference)."""
        return self.paddle_config.name if self.paddle_config else None

    @property
    def label(self) -> str:
        extra = ""
        if self.kind == "paddle-inference" and self.paddle_config:
            extra = f" [{self.paddle_config.name}]"
        elif self.kind == "onnxruntime" and self.device == "gpu" and self.precision == "fp32":
            extra = " [tf32]" if self.tf32 else " [fp32]"
        elif self.kind == "openvino" and self.model_path.endswith(LEGACY_PROGRAM):
            extra = " [paddle-frontend]"
        return f"{self.kind}/{self.device}{extra}" + (f" {self.precision}" if self.precision != "fp32" else "")

    def to_dict(self) -> dict:
        return asdict(self)


def default_threads(threads: int) -> int:
    return threads or os.cpu_count() or 1


def paddle_model_files(model_dir: str | Path, program: str = PADDLE_PROGRAM) -> tuple[Path, Path]:
    """(program, params) of a Paddle inference directory: `program` where it is there, or the other
    format (inference.json on Paddle 3, inference.pdmodel before)."""
    model_dir = Path(model_dir)
    for name in dict.fromkeys((program, PADDLE_PROGRAM, LEGACY_PROGRAM)):
        if (model_dir / name).is_file():
            return model_dir / name, model_dir / PADDLE_PARAMS
    raise FileNotFoundError(f"no {PADDLE_PROGRAM} or {LEGACY_PROGRAM} in {model_dir}")


@dataclass
class Runtime:
    """An opened runtime: `infer`, the ways it can be timed on a given batch, and the model's
    input and output names as this runtime sees them."""

    infer: Infer
    # Timing modes beyond a plain `infer` call (IO binding on a GPU), made for one batch.
    extra_modes: Callable[[np.ndarray], dict[str, Callable[[], object]]] | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def timing_modes(self, batch: np.ndarray) -> dict[str, Callable[[], object]]:
        modes = {"run": lambda: self.infer(batch)}
        if self.extra_modes is not None:
            modes.update(self.extra_modes(batch))
        return modes


def _open_paddle(spec: RuntimeSpec) -> Runtime:
    from paddle import inference

    program, params = paddle_model_files(spec.model_path, spec.paddle_config.program)
    config = inference.Config(str(program), str(params))
    config.disable_glog_info()
    spec.paddle_config.apply(config, default_threads(spec.threads))
    predictor = inference.create_predictor(config)
    (input_name,), output_names = predictor.get_input_names(), tuple(predictor.get_output_names())

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        handle = predictor.get_input_handle(input_name)
        handle.reshape(batch.shape)
        handle.copy_from_cpu(np.ascontiguousarray(batch))
        predictor.run()
        return [predictor.get_output_handle(name).copy_to_cpu() for name in output_names]

    return Runtime(infer, inputs=(input_name,), outputs=output_names)


def ort_providers(spec: RuntimeSpec) -> list:
    if spec.device != "gpu":
        return ["CPUExecutionProvider"]
    cuda = {"use_tf32": "1" if spec.tf32 else "0", "prefer_nhwc": "1" if spec.prefer_nhwc else "0",
            "enable_cuda_graph": "1" if spec.cuda_graph else "0"}
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def ort_session(spec: RuntimeSpec, model=None):
    """An ONNX Runtime session for `spec` (or for `model`, bytes of another graph, with its options)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the CLI's output stays readable
    options.intra_op_num_threads = default_threads(spec.threads)
    session = ort.InferenceSession(model if model is not None else spec.model_path, options,
                                   providers=ort_providers(spec))
    if spec.device == "gpu" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"ONNX Runtime did not enable CUDA (providers: {session.get_providers()})")
    return session


def iobinding_call(spec: RuntimeSpec, batch: np.ndarray, cuda_graph: bool = False):
    """(call, outputs): ONNX Runtime with input and outputs bound to device memory (the GPU for a GPU
    spec), so that a call moves no data between host and device. With `cuda_graph`, the first call
    captures the graph and later calls replay it (shapes and buffers must then stay fixed)."""
    import onnxruntime as ort

    device = "cuda" if spec.device == "gpu" else "cpu"
    session = ort_session(dataclasses.replace(spec, cuda_graph=cuda_graph))
    x = ort.OrtValue.ortvalue_from_numpy(batch, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x)
    outputs = []
    for meta, shape in zip(session.get_outputs(), _output_shapes(spec, session, batch)):
        outputs.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0))
        binding.bind_ortvalue_output(meta.name, outputs[-1])

    def call():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    call.buffers = (x, outputs)  # CUDA-graph replays read and write these addresses: keep them alive
    return call, outputs


def _output_shapes(spec: RuntimeSpec, session, batch: np.ndarray) -> list[list[int]]:
    """The outputs' shapes on `batch`: the graph's, with the batch size put in; where other sizes are
    dynamic too (a dense output of an input of dynamic size), as one plain run gives them."""
    shapes = [[batch.shape[0] if i == 0 else d for i, d in enumerate(meta.shape)] for meta in session.get_outputs()]
    if all(isinstance(d, int) for shape in shapes for d in shape):
        return shapes
    plain = ort_session(dataclasses.replace(spec, cuda_graph=False))
    return [list(out.shape) for out in plain.run(None, {plain.get_inputs()[0].name: batch})]


def _open_onnxruntime(spec: RuntimeSpec) -> Runtime:
    """On a GPU, also timed with device-resident input and output (IO binding) and with CUDA-graph
    replay, so that host copies are not what is measured; the plain run is kept beside them, to
    show what those copies cost."""
    session = ort_session(spec)
    input_name = session.get_inputs()[0].name
    extra = None
    if spec.device == "gpu":
        def extra(batch):
            return {"iobinding": iobinding_call(spec, batch)[0],
                    "iobinding+cudagraph": iobinding_call(spec, batch, cuda_graph=True)[0]}
    return Runtime(lambda batch: session.run(None, {input_name: batch}), extra, (input_name,),
                   tuple(o.name for o in session.get_outputs()))


def _open_reference(spec: RuntimeSpec) -> Runtime:
    """onnx's own Python evaluator: slow, but it shares no code with ONNX Runtime or Paddle."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(spec.model_path)
    _drop_empty_resize_roi(model)
    evaluator = ReferenceEvaluator(model)
    input_name = model.graph.input[0].name
    return Runtime(lambda batch: evaluator.run(None, {input_name: batch}), inputs=(input_name,),
                   outputs=tuple(o.name for o in model.graph.output))


def _drop_empty_resize_roi(model) -> None:
    """Pass a Resize's empty `roi` tensor (paddle2onnx writes one for bilinear and nearest upsampling)
    as the absent input it means: onnx.reference 1.17 indexes it whatever its size (IndexError), and
    the ONNX spec reads roi only for coordinate_transformation_mode tf_crop_and_resize."""
    from onnx import numpy_helper

    empty = {init.name for init in model.graph.initializer if numpy_helper.to_array(init).size == 0}
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) > 1 and node.input[1] in empty:
            node.input[1] = ""


def openvino_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("openvino") is not None


def _import_openvino():
    import sys

    # `import openvino` also imports its model-conversion tool, whose telemetry writes
    # ~/intel/openvino_ga_cid and sends usage data; only the runtime is used here.
    sys.modules.setdefault("openvino.tools.ovc", None)
    import openvino
    return openvino


def openvino_cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU ("FP32", "INT8", "BF16" where it has avx512_bf16 or
    AMX, ...). Native code: the plan calls it in a child."""
    return tuple(_import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


# OpenVINO's inference precision by the row's precision. fp32 is asked for explicitly: on CPUs with
# bf16 or fp16 units OpenVINO would otherwise pick the lower precision itself. A quantized (QDQ)
# file runs its quantized ops in int8 under the fp32 hint, and the rest in fp32.
OPENVINO_PRECISION_HINTS = {"bf16": "bf16"}


def _open_openvino(spec: RuntimeSpec) -> Runtime:
    """OpenVINO on the CPU, reading the ONNX file or (its Paddle frontend) the legacy program."""
    ov = _import_openvino()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(spec.model_path), "CPU", {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS.get(spec.precision, "f32"),
        "INFERENCE_NUM_THREADS": default_threads(spec.threads)})
    request = compiled.create_infer_request()

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        results = request.infer({0: batch})
        return [results[output].copy() for output in compiled.outputs]

    return Runtime(infer,
                   inputs=tuple(i.get_any_name() for i in compiled.inputs),
                   outputs=tuple(o.get_any_name() for o in compiled.outputs))


_OPENERS = {"paddle-inference": _open_paddle, "onnxruntime": _open_onnxruntime, "onnx-reference": _open_reference,
            "openvino": _open_openvino}


def open_runtime(spec: RuntimeSpec) -> Runtime:
    """A built-in kind, or "package.module:function" for a runtime of one's own: a function of the
    spec that returns a `Runtime` or just the infer callable (which may return one array for a model
    of one output)."""
    if ":" in spec.kind:
        import importlib
        module, _, function = spec.kind.partition(":")
        opened = getattr(importlib.import_module(module), function)(spec)
        return opened if isinstance(opened, Runtime) else Runtime(opened)
    return _OPENERS[spec.kind](spec)
