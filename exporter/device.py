"""Which device a command runs on: one rule for every command. Paddle-free to import.

A framework "has a GPU" when it can use one here: Paddle built with CUDA that sees a device, or
ONNX Runtime with its CUDA provider. `auto` takes the GPU when a framework the command uses has
one; `gpu` where none has is bad input, said before any work.
"""
from __future__ import annotations

from .errors import BadInput

FRAMEWORKS = ("paddle", "onnxruntime")


def paddle_available() -> bool:
    try:
        import paddle  # noqa: F401
    except ImportError:
        return False
    return True


def paddle_has_gpu() -> bool:
    if not paddle_available():
        return False
    import paddle
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def onnxruntime_has_gpu() -> bool:
    import onnxruntime
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


_HAS_GPU = {"paddle": paddle_has_gpu, "onnxruntime": onnxruntime_has_gpu}
_INSTALL = {"paddle": "paddlepaddle-gpu", "onnxruntime": "onnxruntime-gpu"}


def resolve_device(requested: str, frameworks: tuple[str, ...] = FRAMEWORKS) -> str:
    """'cpu' or 'gpu' for `requested` ('cpu', 'gpu' or 'auto'), judged by `frameworks`."""
    if requested not in ("cpu", "gpu", "auto"):
        raise BadInput(f"--device must be cpu, gpu or auto, not {requested!r}")
    if requested == "cpu":
        return "cpu"
    if any(_HAS_GPU[name]() for name in frameworks):
        return "gpu"
    if requested == "gpu":
        wanted = " or ".join(_INSTALL[name] for name in frameworks)
        raise BadInput(f"--device gpu: no GPU is usable here (this needs {wanted} and a visible CUDA device); "
                       "use --device cpu")
    return "cpu"
