"""The runtimes an artifact is checked in, behind one interface: `open_runtime(spec)` gives a
`Runtime` that infers (`runtime.infer(batch) -> logits`) and lists how it can be timed.

Importing this module imports neither Paddle nor paddle2onnx (GPU machines may have neither);
each runtime imports its own library when opened. Runtimes are opened in a child process
(`exporter.job`, through `isolate.call_isolated`), so that a native crash is contained. Adding a
runtime is one opener here (or a "package.module:function" kind of one's own) and a row in
`exporter.plan`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PaddleConfig:
    """One Paddle Inference configuration; `apply` sets it on a `paddle.inference.Config`."""

    name: str
    device: str = "cpu"
    onednn: bool = False
    ir_optim: bool = True
    tensorrt: bool = False

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
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
        config.switch_ir_optim(self.ir_optim)


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

    kind: str                   # "paddle-inference" | "onnxruntime" | "onnx-reference"
    model_path: str             # the paddle/ directory or the .onnx file
    device: str = "cpu"
    threads: int = 0            # 0: all cores
    paddle_config: PaddleConfig | None = None
    tf32: bool = True           # ONNX Runtime CUDA: TensorFloat-32 matmuls and convs
    cuda_graph: bool = False
    prefer_nhwc: bool = False
    precision: str = "fp32"     # of the model file: "fp16" for model.fp16.onnx

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
        return f"{self.kind}/{self.device}{extra}" + (f" {self.precision}" if self.precision != "fp32" else "")

    def to_dict(self) -> dict:
        return asdict(self)


def default_threads(threads: int) -> int:
    return threads or os.cpu_count() or 1


def paddle_model_files(model_dir: str | Path) -> tuple[Path, Path]:
    """(program, params) of a Paddle inference directory: inference.json on Paddle 3, .pdmodel before."""
    model_dir = Path(model_dir)
    for program in ("inference.json", "inference.pdmodel"):
        if (model_dir / program).is_file():
            return model_dir / program, model_dir / "inference.pdiparams"
    raise FileNotFoundError(f"no inference.json or inference.pdmodel in {model_dir}")


@dataclass
class Runtime:
    """An opened runtime: `infer`, and the ways it can be timed on a given batch."""

    infer: Infer
    # Timing modes beyond a plain `infer` call (IO binding on a GPU), made for one batch.
    extra_modes: Callable[[np.ndarray], dict[str, Callable[[], object]]] | None = None

    def timing_modes(self, batch: np.ndarray) -> dict[str, Callable[[], object]]:
        modes = {"run": lambda: self.infer(batch)}
        if self.extra_modes is not None:
            modes.update(self.extra_modes(batch))
        return modes


def _open_paddle(spec: RuntimeSpec) -> Runtime:
    from paddle import inference

    program, params = paddle_model_files(spec.model_path)
    config = inference.Config(str(program), str(params))
    config.disable_glog_info()
    spec.paddle_config.apply(config, default_threads(spec.threads))
    predictor = inference.create_predictor(config)
    (input_name,), (output_name,) = predictor.get_input_names(), predictor.get_output_names()

    def infer(batch: np.ndarray) -> np.ndarray:
        handle = predictor.get_input_handle(input_name)
        handle.reshape(batch.shape)
        handle.copy_from_cpu(np.ascontiguousarray(batch))
        predictor.run()
        return predictor.get_output_handle(output_name).copy_to_cpu()

    return Runtime(infer)


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
    return Runtime(lambda batch: session.run(None, {input_name: batch})[0], extra)


def _open_reference(spec: RuntimeSpec) -> Runtime:
    """onnx's own Python evaluator: slow, but it shares no code with ONNX Runtime or Paddle."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(spec.model_path)
    evaluator = ReferenceEvaluator(model)
    input_name = model.graph.input[0].name
    return Runtime(lambda batch: evaluator.run(None, {input_name: batch})[0])


_OPENERS = {"paddle-inference": _open_paddle, "onnxruntime": _open_onnxruntime, "onnx-reference": _open_reference}


def open_runtime(spec: RuntimeSpec) -> Runtime:
    """A built-in kind, or "package.module:function" for a runtime of one's own: a function of the
    spec that returns a `Runtime` or just the infer callable."""
    if ":" in spec.kind:
        import importlib
        module, _, function = spec.kind.partition(":")
        opened = getattr(importlib.import_module(module), function)(spec)
        return opened if isinstance(opened, Runtime) else Runtime(opened)
    return _OPENERS[spec.kind](spec)
