"""The int8 variant of the ONNX model: ONNX Runtime's static quantization (QDQ format, per-channel
int8 weights), calibrated on real images preprocessed exactly as the manifest says. Paddle-free
(a CIFAR-format tarball is read through `cnnexport.cifar`, which imports Paddle).

The settings are data (`QuantSettings`, `SETTINGS`), chosen by measurement on an AVX-512 VNNI CPU in
ONNX Runtime and OpenVINO (README, "int8", and benchmarks/cpu_runtimes.py, which sweeps alternatives).
The calibration set is bounded and a seeded choice, so an export is reproducible.
"""
from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput
from .images import decode_files, image_files, in_batches, preprocess, sample_photos

OPTION = "--calib-data"
MAX_CALIBRATION_SAMPLES = 256
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 16          # images per calibration run (a dynamic-batch model)
# Calibration runs this many batches at a time (at most) and folds their ranges in, so that memory
# stays bounded at any input size. (ONNX Runtime's CalibMaxIntermediateOutputs is not this: in 1.32
# it discards the outputs it has held, unmeasured, and calibrates on the remainder only.)
HELD_BATCHES = 4
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class QuantSettings:
    """How the int8 model is made: ONNX Runtime's `quantize_static` arguments, by name (QuantType,
    CalibrationMethod). Why each value of SETTINGS: README, "int8"."""

    method: str = "MinMax"
    activation_type: str = "QUInt8"             # U8S8: S8S8 is 3x slower on 3x3 convs in ONNX Runtime 1.32
    weight_type: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False                  # 7-bit weights: for CPUs without VNNI only
    activation_symmetric: bool = False          # zero points fitted to the calibrated range
    # The ops with int8 kernels that hold the compute (pools etc. stay fp32); (): every op ONNX Runtime quantizes.
    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    fp32_first_last: bool = False               # True: the first and last of those ops stay fp32
    preprocess: bool = True                     # ONNX Runtime's quant_pre_process (optimisation, shapes) first

    def to_dict(self) -> dict:
        return {**asdict(self), "op_types": list(self.op_types)}


SETTINGS = QuantSettings()


@dataclass(frozen=True)
class Calibration:
    """The images to calibrate on (HWC uint8 RGB, by name) and where they come from, in words."""

    images: dict[str, np.ndarray]
    source: str


def seeded_subset(count: int, limit: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """All of `count` indices when there are at most `limit`, otherwise a seeded choice of `limit`, in order."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


@functools.lru_cache(maxsize=1)
def calibration_images(path: str | None) -> Calibration:
    """What `--calib-data` names: a folder of images or a CIFAR-format tarball (its training split),
    up to MAX_CALIBRATION_SAMPLES of it; without it, the parity photographs. Anything unreadable is
    BadInput, naming the option. Read once per process: the export's validation reads it before
    any work, and the export (or each of `--all`'s) uses what was read."""
    if path is None:
        return Calibration(sample_photos(), "the parity photographs (scikit-image)")
    source = Path(path)
    if source.is_dir():
        files = image_files(source, OPTION)
        chosen = [files[i] for i in seeded_subset(len(files), MAX_CALIBRATION_SAMPLES)]
        return Calibration(decode_files(chosen, OPTION), f"{len(chosen)} of the {len(files)} images in {source}")
    if not source.is_file():
        raise BadInput(f"{OPTION} {path} does not exist: give a folder of images or a CIFAR-format tarball")
    from .cifar import read_cifar_tarball

    try:
        data = read_cifar_tarball(source)
    except BadInput as err:
        raise BadInput(f"{OPTION}: {err}") from None
    chosen = seeded_subset(len(data.train_images), MAX_CALIBRATION_SAMPLES)
    return Calibration({f"train-{i}": data.train_images[i] for i in chosen},
                       f"{len(chosen)} of the {len(data.train_images)} training images of {source}")


def calibration_batches(calibration: Calibration, input_spec: dict) -> list[np.ndarray]:
    """The calibration images as model inputs, in batches the model takes."""
    return in_batches(preprocess(calibration.images, input_spec), input_spec["shape"][0] or CALIBRATION_BATCH)


def settings(calibration: Calibration, chosen: QuantSettings = SETTINGS) -> dict:
    """What the manifest records of how the int8 model was made."""
    return {"source": calibration.source, "samples": len(calibration.images), "seed": CALIBRATION_SEED,
            "format": "QDQ", **chosen.to_dict()}


def quantized_ops(model) -> dict[str, int]:
    """Op type -> nodes that take a dequantized int8 value as their data input: what ONNX Runtime
    runs as int8 kernels (it fuses DequantizeLinear -> op -> QuantizeLinear)."""
    dequantized = {name for node in model.graph.node if node.op_type == "DequantizeLinear" for name in node.output}
    return dict(sorted(Counter(node.op_type for node in model.graph.node
                               if node.op_type not in QDQ_OPS and node.input and node.input[0] in dequantized).items()))


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input batches, in strides."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.feeds = [{input_name: batch} for batch in batches]
        self.pending = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pending = iter(self.feeds[start_index:end_index])

    def get_next(self):
        return next(self.pending, None)


def _stride(batches: int) -> int:
    """The most batches, up to HELD_BATCHES, that divide `batches` (ONNX Runtime's strides must)."""
    return max(d for d in range(1, HELD_BATCHES + 1) if batches % d == 0)


def quantize(onnx_path: str, int8_path: str, batches: list[np.ndarray], scratch: str,
             chosen: QuantSettings = SETTINGS) -> dict:
    """`onnx_path` quantized to `int8_path` (fp32 input and output kept), calibrated on `batches`.
    ONNX Runtime's pre-processing (shape inference, graph optimisation) writes into `scratch`; its
    own temporary directories go to $TMPDIR, which the caller points into the staging directory.
    Runs in a child: the quantizer is native code."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_tools import op_counts

    source = onnx.load(onnx_path)
    prepared = onnx_path
    if chosen.preprocess:
        prepared = str(Path(scratch) / "prepared.onnx")
        quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
    ends = ([node.name for node in onnx.load(prepared).graph.node if node.op_type in chosen.op_types]
            if chosen.fp32_first_last else [])
    quantize_static(prepared, int8_path, _Batches(source.graph.input[0].name, batches),
                    quant_format=QuantFormat.QDQ, per_channel=chosen.per_channel, reduce_range=chosen.reduce_range,
                    activation_type=QuantType[chosen.activation_type], weight_type=QuantType[chosen.weight_type],
                    calibrate_method=CalibrationMethod[chosen.method], op_types_to_quantize=list(chosen.op_types) or None,
                    nodes_to_exclude=[ends[0], ends[-1]] if ends else None,
                    extra_options={"CalibStridedMinMax": _stride(len(batches)),
                                   "ActivationSymmetric": chosen.activation_symmetric})
    model = onnx.load(int8_path)
    # The description of the fp32 model still holds (interface, normalisation, weights), plus how it was made.
    model.producer_name, model.producer_version = source.producer_name, source.producer_version
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    model.metadata_props.add(key="precision", value=f"int8: static {chosen.method} calibration on {len(batches)} "
                                                    f"batches, QDQ, {chosen.activation_type} activations, "
                                                    f"{'per-channel' if chosen.per_channel else 'per-tensor'} "
                                                    f"{chosen.weight_type} weights, fp32 input and output")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, int8_path)
    return {"ops": op_counts(model), "quantized_ops": quantized_ops(model), "size": os.path.getsize(int8_path)}
