"""`cnnexport MODEL`: build, (fuse), save the Paddle programs, convert to ONNX (and fp16, int8), write the
deploy config, smoke-check every file against the eager model, write the manifest.

Each step is timed and reported in one line. Everything is written into a staging directory that
replaces `artifacts/<model>[-fused]/` only once the smoke parity check has passed.
"""
from __future__ import annotations

import copy
import filecmp
import functools
import json
import os
import pickle
import platform
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import int8 as int8_variant
from . import isolate
from .artifact import (DEPLOY_CONFIG, FP16_FILE, INT8_FILE, LEGACY_PROGRAM, ONNX_FILE, PADDLE_PARAMS, PADDLE_PROGRAM, Manifest,
                       artifact_name, check_replaceable, describe_files, classifier_classes, input_section,
                       output_names, sha256, shape_text, staged_directory, writable_directory)
from .blame import deploy_config_with, paddle2onnx_refusal, paddle_until_right, recorded_workaround
from .compare import CPU_FP32, FP16, Tolerance
from .errors import MACHINE_WRITE_ERRORS, BadInput, ExportFailed, ModelExited
from .images import photo_inputs, random_batch, sample_photos, size_name, sized_inputs
from .plan import check_tolerances, smoke_plan
from .run import judge_row, run_row
from .runtimes import paddle_model_files

MIN_OPSET, MAX_OPSET = 7, 21  # what paddle2onnx 2.x converts; outside it the converter aborts the process
MAX_STATIC_BATCH = 1024       # a larger fixed batch is a memory error in the smoke check, not an artifact
MAX_LABELS_BYTES = 1 << 20
DEFAULT_OPSET = 17
INIT_SEED = 0                 # models exported without --weights are built after paddle.seed(INIT_SEED)
SMOKE_BATCH = 2
SMOKE_SEED = 0
TOPK = 5
EXTERNAL_FAMILY = "external"  # the manifest's family for a module:callable model or a Layer object


@dataclass
class ExportOptions:
    model: str | Any  # a zoo name, module:callable, an inference directory, or a paddle.nn.Layer object
    weights: str | None = None
    num_classes: int | None = None
    img_size: int | str | Sequence | None = None  # a side, "320,640x480", or a sequence of sides and (H, W) pairs
    seed_compat: bool = False
    fuse: bool = False
    onnx: bool = False
    opset: int = DEFAULT_OPSET
    static_batch: int | None = None
    fp16: bool = False
    out: str | None = None
    labels: str | None = None   # a text file, one class name per line
    model_kwargs: dict | None = None                  # module:callable models: the callable's arguments
    mean: tuple[float, float, float] | None = None    # module:callable models, Layer objects: the input normalisation
    std: tuple[float, float, float] | None = None
    int8: bool = False
    calib_data: str | None = None  # a folder of images or a CIFAR-format tarball; None: the photographs
    artifacts_root: str = "artifacts"
    rtol: float | None = None      # the smoke check's bars (default: grounded in the model's rounding, precision.py)
    atol: float | None = None

    @property
    def in_memory(self) -> bool:
        """A paddle.nn.Layer object handed to the Python API (validate checks that it is one)."""
        return not isinstance(self.model, str)

    @property
    def external(self) -> bool:
        """A module:callable model."""
        from .models.external import is_callable_spec
        return not self.in_memory and is_callable_spec(self.model)

    @property
    def imported(self) -> bool:
        """A directory holding a Paddle inference model (or a path that is meant to be one)."""
        return not self.in_memory and not self.external and ("/" in self.model or Path(self.model).exists())

    @property
    def sizes(self) -> list[tuple[int, int]] | None:
        """--img-size's (height, width) sizes; None where it is not given."""
        return parse_sizes(self.img_size)

    @property
    def name(self) -> str:
        """The model's name in the manifest and the step lines: a Layer object's is its class's."""
        return type(self.model).__name__ if self.in_memory else self.model

    def target(self) -> Path:
        if self.out:
            return Path(self.out)
        if self.imported:
            stem = Path(self.model).resolve().name
        else:
            stem = self.model.rpartition(":")[2].rpartition(".")[2] if self.external else self.name
        return Path(self.artifacts_root) / artifact_name(stem, self.fuse)


MAX_SIZES = 8  # sizes a dynamic-size model is checked at: each one is a set of parity batches in every runtime


def parse_sizes(value: int | str | Sequence | None) -> list[tuple[int, int]] | None:
    """--img-size as (height, width) sizes: a side (`64`), a height and width (`96x64`), or several of
    them separated by commas (`320,640x480`); through the API also a sequence of sides and pairs."""
    from .models.registry import MAX_INPUT_SIZE

    if value is None:
        return None
    items = str(value).replace(" ", "").split(",") if isinstance(value, (int, str)) else list(value)
    sizes = [_size(item) for item in items]
    for item, size in zip(items, sizes):
        if size is None:
            raise BadInput(f"--img-size {value!s:.60}: {item!s:.30} is not a size; give a side (64), a height x width "
                           "(96x64), or several separated by commas (320,640x480)")
        for side in size:
            _check_range("--img-size", side, 1, MAX_INPUT_SIZE)
    if not 1 <= len(sizes) <= MAX_SIZES or len(set(sizes)) != len(sizes):
        raise BadInput(f"--img-size {value!s:.60}: give 1 to {MAX_SIZES} different sizes")
    return sizes


def _size(item) -> tuple[int, int] | None:
    """One size: a side, "HxW" (or "S"), or a (height, width) pair; None where it is none of them."""
    if isinstance(item, int) and not isinstance(item, bool):
        return item, item
    parts = item.split("x") if isinstance(item, str) else list(item) if isinstance(item, (tuple, list)) else []
    parts = parts * 2 if len(parts) == 1 else parts
    dims = [d if isinstance(d, int) and not isinstance(d, bool) else int(d) if isinstance(d, str) and d.isdigit()
            else None for d in parts]
    return (dims[0], dims[1]) if len(dims) == 2 and None not in dims else None


def validate(opts: ExportOptions) -> None:
    """Reject bad input before any work: one clear reason each."""
    from . import models
    from .models.registry import MAX_CLASSES

    if opts.out is not None and not str(opts.out).strip():
        raise BadInput("--out is empty: give the artifact's directory, or leave --out out for artifacts/<model>")
    sizes = opts.sizes  # a malformed --img-size is refused whatever the model
    if opts.in_memory:
        _validate_layer(opts)
    elif opts.imported:
        from .imported import validate_import
        validate_import(opts)
    elif opts.external:
        if opts.img_size is None:
            raise BadInput(f"{opts.model} is not a zoo model: give the input side it takes with --img-size")
        if opts.num_classes is not None or opts.seed_compat:
            raise BadInput("--num-classes and --seed-compat are for the zoo's models: pass your callable's own "
                           "arguments with --model-kwargs")
    else:
        models.model_info(opts.model)  # an unknown name, with close matches
        if opts.model_kwargs is not None or opts.mean or opts.std:
            raise BadInput("--model-kwargs, --mean and --std are for module:callable models; the zoo's models take "
                           "--num-classes and --img-size")
        if sizes and (len(sizes) > 1 or sizes[0][0] != sizes[0][1]):
            raise BadInput(f"--img-size {opts.img_size}: the zoo's models take one square size (a side, e.g. 64)")
    _check_range("--num-classes", opts.num_classes, 1, MAX_CLASSES)
    _check_range("--static-batch", opts.static_batch, 1, MAX_STATIC_BATCH)
    check_tolerances(opts.rtol, opts.atol)
    if opts.onnx and not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise BadInput(f"--opset {opts.opset} is outside what paddle2onnx converts ({MIN_OPSET}..{MAX_OPSET})")
    if opts.fp16 and not opts.onnx:
        raise BadInput("--fp16 makes an fp16 variant of the ONNX model: add --onnx")
    if opts.int8 and not opts.onnx:
        raise BadInput("--int8 makes an int8 variant of the ONNX model: add --onnx")
    if opts.calib_data is not None and not opts.int8:
        raise BadInput("--calib-data is what --int8 calibrates on: add --int8")
    for option, path in (("--weights", opts.weights), ("--labels", opts.labels)):
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{option} {path} does not exist or is not a file")
    target = opts.target().absolute()
    check_replaceable(target)
    existing = next(p for p in [target.parent, *target.parents] if p.exists())
    if not writable_directory(existing):
        raise BadInput(f"cannot write {opts.target()}: {existing} is not a writable directory; choose another --out")
    if opts.model_kwargs is not None:
        check_model_kwargs(opts.model_kwargs)
    if opts.mean or opts.std:
        from .models.registry import IMAGENET_MEAN, IMAGENET_STD
        check_normalisation(opts.mean or IMAGENET_MEAN, opts.std or IMAGENET_STD, 1 / 255, "--mean/--std")
    if opts.int8:
        int8_variant.calibration_images(opts.calib_data)  # unreadable calibration data: exit 2 before any work
    if opts.external:  # last: it runs the user's code (in a child), the slowest check
        probe_callable(opts.model, dict(opts.model_kwargs or {}), opts.static_batch or SMOKE_BATCH, sizes)


def _validate_layer(opts: ExportOptions) -> None:
    """A paddle.nn.Layer object: it is the model as it stands, so the options that build one do not apply."""
    from paddle import nn

    if not isinstance(opts.model, nn.Layer):
        raise BadInput(f"model must be a zoo name, 'module.path:callable', a Paddle inference directory or a "
                       f"paddle.nn.Layer, not a {type(opts.model).__name__}")
    if opts.img_size is None:
        raise BadInput(f"{opts.name} is a Layer object: give the input side it takes with img_size")
    unused = [name for name, value in (("weights", opts.weights), ("num_classes", opts.num_classes),
                                       ("seed_compat", opts.seed_compat), ("model_kwargs", opts.model_kwargs)) if value]
    if unused:
        raise BadInput(f"{', '.join(unused)} build a model; {opts.name} is a Layer object already built: load its "
                       "weights into it (set_state_dict) before exporting")


MAX_KWARGS_DEPTH = 32          # nesting of --model-kwargs: far beyond any constructor's, far below Python's recursion limit
MAX_NORMALISED = 1e4          # |(pixel - mean) / std| for pixels in 0..1; ImageNet's normalisation gives at most 2.7


def check_model_kwargs(kwargs) -> None:
    """A JSON object of keyword arguments: string keys, JSON values, nested at most MAX_KWARGS_DEPTH deep
    (the manifest and the ONNX metadata write them as JSON; json and pickle recurse on them)."""
    def depth(value, level: int) -> int:
        if level > MAX_KWARGS_DEPTH:
            return level
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        return max((depth(child, level + 1) for child in children), default=level)

    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise BadInput("--model-kwargs must be a JSON object of keyword arguments (string keys)")
    if depth(kwargs, 1) > MAX_KWARGS_DEPTH:
        raise BadInput(f"--model-kwargs is nested more than {MAX_KWARGS_DEPTH} levels deep: pass the callable's "
                       "arguments as they are, not a deep structure")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BadInput(f"--model-kwargs must hold only JSON values ({err}): the manifest records them") from None


def check_normalisation(mean, std, scale: float, where: str) -> None:
    """The input normalisation must keep 0..255 pixels representable and ordinary in float32: a std
    that underflows (1e-300 is 0 in float32) or a mean that overflows would make every input Inf
    or NaN, which no runtime can be judged on."""
    f32 = np.finfo(np.float32)
    values = np.asarray([*mean, *std, scale], np.float64)
    pixels = np.array([[0.0], [255.0 * scale]])  # the darkest and the brightest, per channel
    reach = np.abs((pixels - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)).max()
    if (not np.isfinite(values).all() or np.abs(values).max() > f32.max or min(*std, scale) < f32.tiny
            or reach > MAX_NORMALISED):
        raise BadInput(f"{where}: mean {list(mean)}, std {list(std)} (scale {scale:g}) map pixel values to "
                       f"{reach:.3g}, beyond the ±{MAX_NORMALISED:g} of any "
                       "input normalisation: give the mean and std of 0..1 RGB values, e.g. ImageNet's "
                       "0.485,0.456,0.406 and 0.229,0.224,0.225")


def _check_range(option: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise BadInput(f"{option} must be between {low} and {high}, not {value}")


def class_names(opts: ExportOptions, num_classes: int | None) -> tuple[list[str] | None, str]:
    """The class names for the deploy config, and where they came from: `--labels` (one per line,
    exactly one per class), or the training run the weights come from (its config.json names the
    data set's classes), or none. `num_classes` None: the model is no classifier, and has none."""
    if num_classes is None:
        if opts.labels:
            raise BadInput(f"--labels names a classifier's classes for its top-k; {opts.name} is no classifier (it has "
                           "other outputs than one [N, classes]): leave --labels out")
        return None, "none (not a classifier)"
    if opts.labels:
        try:
            raw = Path(opts.labels).read_bytes()[:MAX_LABELS_BYTES + 1]
            names = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"--labels {opts.labels} is not a readable UTF-8 text file ({err})") from None
        if len(raw) > MAX_LABELS_BYTES or len(names) != num_classes:
            raise BadInput(f"--labels {opts.labels} names {len(names)} classes (one per line), the model has "
                           f"{num_classes}: give one name per class")
        first_line: dict[str, int] = {}
        for line, name in enumerate(names, 1):
            if name in first_line:  # the deploy config's top-k would print one name for two classes
                raise BadInput(f"--labels {opts.labels} names {name!r} twice (non-blank lines {first_line[name]} and "
                               f"{line}): give each class its own name")
            first_line[name] = line
        return names, f"--labels {opts.labels}"
    run_config = Path(opts.weights).parent / "config.json" if opts.weights else None
    try:
        names = json.loads(run_config.read_text())["data"]["label_names"] if run_config else None
    except (OSError, ValueError, KeyError, TypeError):
        names = None
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return names, f"the training run's {run_config}"
    return None, "none (give --labels FILE to name the classes)"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("cnnexport", "paddlepaddle", "paddlepaddle-gpu", "paddle2onnx", "onnx", "onnxruntime",
                 "onnxruntime-gpu", "onnxslim", "onnxconverter-common", "openvino"):
        try:
            out[dist] = pkg_metadata.version(dist)
        except pkg_metadata.PackageNotFoundError:
            pass
    return out


class _Steps:
    """Times each step and reports it in one line."""

    def __init__(self, report: Callable[[str], None]):
        self.report, self.timings = report, {}

    def run(self, name: str, fn: Callable, *args, detail: Callable[[object], str] | None = None, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 3)
        note = f"  {detail(result)}" if detail else ""
        self.report(f"{name:<14}{self.timings[name]:7.1f}s{note}")
        return result


def build_model(name: str, kwargs: dict, weights: str | None, fused: bool = False, img_size: int | None = None):
    """The eager model as the manifest describes it (a zoo name or module:callable, and the keyword
    arguments it is built with), in eval mode; fused if asked, tracing a forward pass at `img_size`."""
    import paddle

    from . import models
    from .models import external
    from .rewrite import fuse

    paddle.seed(INIT_SEED)
    model = external.build(name, kwargs) if external.is_callable_spec(name) else models.create(name, **kwargs)
    if weights:
        models.load_weights(model, weights)
    model.eval()
    return fuse(model, img_size)[0] if fused else model


def checked_outputs(model, batch: np.ndarray, name: str) -> list[np.ndarray]:
    """The model's outputs on `batch`, float32 each: one tensor, or a tuple or list of them. A forward
    that fails or returns anything else is bad input (a module:callable model may not take the size
    given)."""
    import paddle

    from .artifact import MAX_OUTPUTS

    try:
        with paddle.no_grad():
            out = model(paddle.to_tensor(batch))
    except Exception as err:
        raise BadInput(f"{name}: the forward pass fails on a {list(batch.shape)} input ({type(err).__name__}: "
                       f"{_error_line(str(err), 200)}): {_forward_fix(str(err))}") from None
    tensors = list(out) if isinstance(out, (tuple, list)) else [out]
    if not 1 <= len(tensors) <= MAX_OUTPUTS or not all(isinstance(t, paddle.Tensor) for t in tensors):
        what = f"a {type(out).__name__}" + (f" of {len(tensors)}" if isinstance(out, (tuple, list)) else "")
        raise BadInput(f"{name}: the forward pass returns {what}; cnnexport exports a model whose forward returns a "
                       f"tensor, or a tuple or list of 1 to {MAX_OUTPUTS} tensors")
    outputs = [t.numpy() for t in tensors]
    for i, output in enumerate(outputs):
        what = f"{name}: the forward pass returns" + (f" (output {i})" if len(outputs) > 1 else "")
        outputs_problem(output, len(batch), what, "make the forward return float32 tensors [N, ...] (e.g. "
                        "x.astype('float32'))", classifier=len(outputs) == 1)
    return outputs


# Paddle's words for an op given another dtype than it holds ("The type of data we are trying to retrieve
# (float32) does not match the type of data (float64) currently contained in the container").
_DTYPE_ERROR = re.compile(r"type of data|dtype|data ?type", re.IGNORECASE)


def _forward_fix(error: str) -> str:
    """What to do about a forward pass that fails: a dtype mismatch is the forward's own (it is given
    float32), anything else most often an input size the architecture cannot take."""
    if _DTYPE_ERROR.search(error):
        mismatch = next((line.strip() for line in error.splitlines() if _DTYPE_ERROR.search(line)), "")[:160]
        return (f"a dtype mismatch inside the forward ({mismatch}); cnnexport feeds float32 [N, 3, H, W]: make the "
                "forward compute in the dtypes its layers hold")
    return "give the --img-size it takes"


def shape_probe(input_spec: dict) -> dict[str, np.ndarray]:
    """For an input of dynamic height and width, one more input at twice the first size checked: an
    output axis that keeps its size there too is fixed (the sizes checked may all share a width)."""
    if input_spec["shape"][2] is not None:
        return {}
    height, width = input_spec["sizes"][0]
    return {"shape-probe": random_batch(input_spec["shape"][0] or 1, (2 * height, 2 * width), SMOKE_SEED)}


def output_shapes(outputs: dict[str, list[np.ndarray]], static_batch: int | None, name: str) -> list[list]:
    """The shape of each output, as the manifest and the ONNX file declare it, from the model's outputs
    on every parity input (and the `shape_probe`): the batch axis static or None, each other axis its
    size where that is the same on every input, else None (it follows the input's size). A model that
    gives a different number of outputs, or of another rank, on another input is bad input."""
    shapes = [[list(out.shape) for out in outs] for outs in outputs.values()]
    first = shapes[0]
    for key, these in zip(outputs, shapes):
        if [len(s) for s in these] != [len(s) for s in first]:
            raise BadInput(f"{name} gives outputs of shapes {these} on the {key} input but {first} on another: "
                           "cnnexport exports models whose outputs keep their number and rank")
    return [[static_batch, *(dims[0] if len(set(dims)) == 1 else None for dims in zip(*(s[i][1:] for s in shapes)))]
            for i in range(len(first))]


def outputs_problem(output: np.ndarray, batch: int, what: str, fix: str, classifier: bool) -> None:
    """Refuse an output that no artifact can be: not float32 (every runtime row and variant is judged
    on float32 outputs, and an fp16 or int8 variant keeps float32 I/O), without the batch axis first,
    empty, or of a rank over MAX_OUTPUT_RANK; a model's only output of shape [N, classes] is a
    classifier's logits, of 1 to MAX_CLASSES classes."""
    from .artifact import MAX_OUTPUT_RANK
    from .models.registry import MAX_CLASSES

    if output.dtype != np.float32:
        kind = "logits" if classifier and output.ndim == 2 else "outputs"
        raise BadInput(f"{what} {output.dtype} values, not float32 {kind}: {fix}")
    if not 1 <= output.ndim <= MAX_OUTPUT_RANK or output.shape[0] != batch:
        raise BadInput(f"{what} a tensor of shape {list(output.shape)} for a batch of {batch}: cnnexport exports outputs "
                       f"[N, ...] of rank 1 to {MAX_OUTPUT_RANK}, the batch axis first")
    if classifier and output.ndim == 2 and not 1 <= output.shape[1] <= MAX_CLASSES:
        raise BadInput(f"{what} {output.shape[1]:,} classes per image; a classifier has 1 to {MAX_CLASSES:,}: {fix}")
    if output.size == 0:
        raise BadInput(f"{what} an empty tensor of shape {list(output.shape)}: {fix}")


def _probe(spec: str, kwargs: dict, batch: int, sizes: list) -> str | None:
    """In a child: import, build and run `spec` once per size; the BadInput line for what is wrong
    with it, or None."""
    try:
        model = build_model(spec, kwargs, None)
        output_shapes({size_name(size): checked_outputs(model, random_batch(batch, size, SMOKE_SEED), spec)
                       for size in sizes}, batch, spec)
    except BadInput as err:
        return str(err)
    except SystemExit as err:
        return str(ModelExited.called_exit(spec, err))
    return None


def probe_callable(spec: str, kwargs: dict, batch: int, sizes: list) -> None:
    """Check a module:callable model by importing, building and running it in a child process first:
    its code may end the process (os._exit), crash it or print, none of which may reach ours."""
    try:
        problem = isolate.call_isolated(_probe, spec, kwargs, batch, sizes, what=spec)
    except isolate.ChildCrashed as err:
        how = f"crashed the process ({err.signal})" if err.signal else f"ended the process (exit status {err.exitcode})"
        raise ModelExited(spec, how) from None
    except isolate.ChildFailed as err:
        raise ExportFailed(f"checking {spec} in a child process failed: {err}") from None
    if problem:
        raise BadInput(problem)


def save_paddle(model, directory: Path, input_shape: list) -> dict[str, str]:
    """paddle.jit.save as the deployment suites expect it; returns Paddle's param name -> state-dict name."""
    import paddle

    spec = paddle.static.InputSpec(input_shape, "float32", "x")
    paddle.jit.save(model, str(directory / "inference"), input_spec=[spec])
    return {tensor.name: name for name, tensor in _named_tensors(model)}


def save_legacy_program(deploy_model: Callable, directory: str, input_shape: list) -> None:
    """The same model saved as a legacy program (inference.pdmodel) into `directory`. Runs in a child
    started with FLAGS_enable_pir_api=0: Paddle chooses the program format once, when it is imported."""
    save_paddle(deploy_model(), Path(directory), input_shape)


def _named_tensors(model) -> list:
    return list(model.named_parameters()) + list(model.named_buffers())


def _given(model, names: dict[str, str]):
    """A Layer object as `save_legacy_program` takes a model: pickled into the child (a model built
    from the manifest is rebuilt there instead). Unpickled tensors are named anew, and the parameters
    file orders tensors by name: give them back the names they had in the Paddle 3 program."""
    for key, tensor in _named_tensors(model):
        tensor.name = names[key]
    return model


def add_legacy_program(deploy_model: Callable, stage: Path, input_shape: list) -> str | None:
    """Write inference.pdmodel beside inference.json when Paddle can save the model in the legacy
    format with the very same parameters file; returns why not otherwise (Paddle 3.3's legacy
    exporter no longer handles some ops: GELU, exp, sum over a tensor method). `deploy_model` is a
    picklable callable that gives the model to save, in the child."""
    try:
        pickle.dumps(deploy_model)
    except Exception as err:  # a Layer object holding a lambda, a lock, an open file: whatever pickle refuses
        return f"the model cannot be pickled into the child process that writes it ({type(err).__name__}: {err})"
    scratch = stage / ".legacy"
    try:
        try:
            isolate.call_isolated(save_legacy_program, deploy_model, str(scratch), input_shape,
                                  what="legacy program", env={"FLAGS_enable_pir_api": "0"})
        except (isolate.ChildCrashed, isolate.ChildFailed) as err:
            return legacy_limit(_error_line(str(err)))
        if not (scratch / LEGACY_PROGRAM).is_file():
            return f"Paddle wrote no {LEGACY_PROGRAM} (FLAGS_enable_pir_api=0 did not take effect)"
        if not filecmp.cmp(scratch / PADDLE_PARAMS, stage / PADDLE_PARAMS, shallow=False):
            return "its parameters file differs from the Paddle 3 program's"
        os.replace(scratch / LEGACY_PROGRAM, stage / LEGACY_PROGRAM)
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# Paddle 3.3's legacy (static-graph) exporter rejects some ops' PIR values: "(InvalidType) gelu(): argument
# (position 1) must be Value, but got Variable".
_LEGACY_REJECTED_OP = re.compile(r"\(InvalidType\) (\w+)\(\): argument .* must be Value, but got Variable")


def legacy_limit(error: str) -> str:
    """Why there is no legacy program, and what that means for the deploy stacks that need one."""
    import paddle

    op = _LEGACY_REJECTED_OP.search(error)
    cause = f"Paddle {paddle.__version__}'s legacy exporter cannot write {op.group(1)} ({error})" if op else error
    return (f"{cause}; PaddleClas 2.6's deploy predictor, which can load only a legacy program, cannot load this "
            "artifact (PaddleX, Paddle Inference, ONNX Runtime and OpenVINO on the ONNX file can)")


def _last_error_line(text: str) -> str | None:
    """The last line of a child's error or log that names an error: Paddle's dy2static errors open
    with "In transformed code:" and end with the exception; converters log theirs last (paddle2onnx
    as "[ERROR] Failed to convert ...", in colour)."""
    lines = (re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in reversed(text.splitlines()))
    return next((line for line in lines if "error" in line.lower()), None)


def _error_line(text: str, limit: int = 240) -> str:
    """What went wrong, in one line of at most `limit` characters."""
    line = _last_error_line(text) or next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[:limit] + "..."


def inference_yml(input_spec: dict, shapes: list[list], labels: list[str] | None, model: str) -> str:
    """The deploy config in the schema PaddleClas (deploy/python/preprocess.py, postprocess.py) and
    PaddleX (image_classification processors) read, computing exactly what verify checks: a PIL
    bilinear resize to the (first) size checked, x * scale - mean over std on HWC, CHW; for a
    classifier, top-k with the class names (a model of other outputs has no post-processing here)."""
    import yaml

    height, width = input_spec["sizes"][0]
    classes = classifier_classes(shapes)
    config = {
        "PreProcess": {"transform_ops": [
            # PaddleClas's ResizeImage takes [width, height]
            {"ResizeImage": {"size": [width, height], "backend": "pil", "interpolation": "bilinear"}},
            {"NormalizeImage": {"scale": input_spec["scale"], "mean": input_spec["mean"], "std": input_spec["std"],
                                "order": "", "channel_num": 3}},
            {"ToCHWImage": None},
        ]},
        **({"PostProcess": {"Topk": {"topk": min(TOPK, classes), **({"label_list": labels} if labels else {})}}}
           if classes else {}),
        # Not read by PaddleClas or PaddleX (a Global.model_name would have to be one of PaddleX's own).
        "cnnexport": {"model": model, "input": {k: input_spec[k] for k in ("name", "shape", "layout", "color", "sizes")},
                      "outputs": [{"name": name, "shape": shape} for name, shape in zip(output_names(shapes), shapes)]},
    }
    return yaml.safe_dump(config, sort_keys=False)


def convert_to_onnx(program: str, params: str, out_path: str, opset: int, metadata: dict, outputs: list[str]) -> dict:
    """paddle2onnx, then `onnx_tools.simplify` (or, where onnxslim fails, the graph as converted, and why,
    under `unsimplified`) and `finalize` (naming the outputs `outputs`). Runs in a child: the converter
    can abort its process."""
    import onnx

    from . import onnx_tools

    model, unsimplified = onnx_tools.simplify(onnx_tools.converted(program, params, opset))
    model = onnx_tools.finalize(model, metadata, outputs)
    onnx.save(model, out_path)
    return {"opset": model.opset_import[0].version, "ops": onnx_tools.op_counts(model), "size": os.path.getsize(out_path),
            **({"unsimplified": unsimplified} if unsimplified else {})}


def make_fp16(onnx_path: str, fp16_path: str, photos: np.ndarray, expected: list[np.ndarray]) -> dict:
    """The fp16 variant of the ONNX model, as `onnx_tools.to_fp16` makes it. Runs in a child."""
    import onnx

    from . import onnx_tools

    half, info = onnx_tools.to_fp16(onnx.load(onnx_path), photos, expected, FP16.top1_agreement)
    half.metadata_props.add(key="precision", value=f"{info['precision']}: fp16 weights and compute where argmax "
                                                   "agreement allows, fp32 input and outputs")
    onnx.save(half, fp16_path)
    return {**info, "size": os.path.getsize(fp16_path)}


def add_int8(stage: Path, calibration: int8_variant.Calibration, input_spec: dict) -> dict:
    """inference.int8.onnx from the staged inference.onnx, quantized in a child whose temporary files
    (ONNX Runtime's calibration models) stay inside the staging directory, and are removed with it."""
    scratch = stage / ".int8"
    scratch.mkdir()
    try:
        info = _in_child(int8_variant.quantize, str(stage / ONNX_FILE), str(stage / INT8_FILE),
                         int8_variant.calibration_batches(calibration, input_spec), str(scratch),
                         what="int8 quantization", env={"TMPDIR": str(scratch)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"calibration": int8_variant.settings(calibration), **info}


def smoke_parity(stage: Path, inputs: dict, expected: dict, legacy: bool, onnx: bool, fp16: bool, int8: bool,
                 paddle: bool = True, tolerance: Tolerance = CPU_FP32, eager_model=None):
    """Every file of the artifact that computes, against the reference (`plan.smoke_plan`; the Paddle
    programs only when the reference is not Paddle Inference on them), through the runner and the
    judge that verify uses; raise if one disagrees. Returns the records and, per format, the input
    and output names its runtime saw."""
    photos = tuple(k for k in inputs if k.startswith("photos"))
    smoke = tuple(k for k in inputs if k.startswith("smoke"))
    records, names, wrong = [], {}, []
    for fmt, row in smoke_plan(stage, legacy, onnx, fp16, int8, smoke, photos, paddle, tolerance).items():
        if row.spec.kind == "paddle-inference":  # a configuration that computes wrongly is passed over, and recorded
            outcome, result = paddle_until_right(row, inputs, expected, wrong)
        else:
            outcome = run_row(row, inputs, None)
            result = judge_row(row, outcome, expected)
        if not result.passed and fmt == "onnx" and paddle and result.worst:  # Paddle Inference agreed: the converter
            raise ExportFailed(paddle2onnx_refusal(result, records, eager_model, row.spec.model_path, inputs[smoke[0]],
                                                   expected[smoke[0]][0]))
        if not result.passed:
            raise ExportFailed(f"smoke parity against the {'eager model' if paddle else 'Paddle program'} failed: "
                               f"{result.runtime}: "
                               + "; ".join(result.failures))
        names[fmt] = io_names(outcome)
        records.append({"runtime": result.runtime, "inputs": list(result.batches), **result.worst,
                        **({"config": result.config, "failed_configs": result.failed_configs} if result.config else {}),
                        **({"wrong_configs": wrong} if fmt == "paddle" and wrong else {})})
    return records, names


def onnx_metadata(opts: ExportOptions, prepared: Prepared, outputs: list[dict]) -> dict[str, str]:
    """What the ONNX file says about itself (metadata_props), for whoever deploys it."""
    spec, model = prepared.input_spec, prepared.model
    height, width = ("height", "width") if spec["shape"][2] is None else spec["shape"][2:]
    classes = classifier_classes([o["shape"] for o in outputs])
    return {"model": model["name"], "family": model["family"], "fused": str(model["fused"]).lower(),
            "input": f"x float32 NCHW [{opts.static_batch or 'batch'},3,{height},{width}]",
            "input_size": ",".join(size_name(size) for size in spec["sizes"]),
            **({"num_classes": str(classes)} if classes else {}),
            "outputs": "; ".join(f"{o['name']} {shape_text(o['shape'])}" for o in outputs),
            "normalisation": f"x = (rgb/255 - mean) / std; mean={spec['mean']} std={spec['std']}",
            **{f"kwargs.{k}": json.dumps(v) for k, v in model["kwargs"].items()},
            "weights_sha256": prepared.weights["sha256"] or "none (fresh init)",
            **{f"version.{k}": v for k, v in versions().items()}}


def model_description(opts: ExportOptions) -> tuple[str, dict, list[tuple[int, int]], tuple, tuple]:
    """(family, the keyword arguments the model is built with, input sizes, mean, std): the zoo's
    registry data, or for a module:callable model (or a Layer object, built with none) the user's
    --model-kwargs, --img-size, --mean and --std (ImageNet's normalisation by default, as
    paddle.vision.models and PaddleClas use)."""
    from . import models
    from .models.registry import IMAGENET_MEAN, IMAGENET_STD

    if opts.external or opts.in_memory:
        return (EXTERNAL_FAMILY, dict(opts.model_kwargs or {}), opts.sizes, opts.mean or IMAGENET_MEAN,
                opts.std or IMAGENET_STD)
    info = models.model_info(opts.model)
    kwargs = {"num_classes": info.num_classes if opts.num_classes is None else opts.num_classes,
              "img_size": info.input_size if opts.sizes is None else opts.sizes[0][0],
              "seed_compat": opts.seed_compat}
    return info.family, kwargs, [(kwargs["img_size"], kwargs["img_size"])], info.mean, info.std


@dataclass
class Prepared:
    """What a front end (a model built here, or an imported Paddle inference directory) hands
    `write_artifact`: the manifest's description of the model, the parity inputs and what the
    artifact must compute on them, and how to put the Paddle programs into the staging directory."""

    model: dict                        # the manifest's `model` section
    weights: dict                      # the manifest's `weights` section
    input_spec: dict
    inputs: dict[str, np.ndarray]
    # (Paddle name -> state-dict name, why no legacy program or None) for a staging directory
    write_programs: Callable[[Path], tuple[dict[str, str], str | None]]
    # the deploy config's text for the staging directory, and where its class names come from
    deploy_config: Callable[[list[list]], tuple[str, str]]  # given the outputs' shapes
    expected: dict[str, list[np.ndarray]] | None = None  # None: Paddle Inference on the written programs is the reference
    shapes: list[list] | None = None    # the outputs' shapes (`output_shapes`); None: from the reference
    labels: list[str] | None = None
    rewrite: dict | None = None
    tolerance: Tolerance = CPU_FP32     # the smoke check's fp32 bars
    # the bars grounded in the eager model's own rounding, and their record, for a smoke row that misses those
    grounded: Callable[[], tuple[Tolerance, dict | None]] | None = None
    eager_model: Any = None             # the eager reference (None: imported), to locate a converter's error in


def run_export(opts: ExportOptions, report: Callable[[str], None]) -> Manifest:
    """Run the export (`cnnexport.export` is the API over it); returns the manifest. Raises BadInput
    (WeightsError among them) and ExportFailed."""
    validate(opts)
    steps = _Steps(report)
    prepared = prepare_import(opts, steps) if opts.imported else prepare_model(opts, steps, report)
    try:
        return write_artifact(opts, prepared, steps, report)
    except OSError as err:  # the staging directory is gone, the target as it was
        if err.errno not in MACHINE_WRITE_ERRORS:
            raise
        raise ExportFailed(f"writing {opts.target()} failed ({err.strerror or err}): free space there or choose "
                           "another --out") from None


def prepare_import(opts: ExportOptions, steps: _Steps) -> Prepared:
    """An imported Paddle inference directory: its files copied in as they are, Paddle Inference on
    them the reference, its own deploy config kept (or one written from the options)."""
    from .imported import copy_programs, describe_import

    found = describe_import(opts)
    config, spec, name = found["config"], found["input_spec"], found["model"]["name"]
    check_normalisation(spec["mean"], spec["std"], spec["scale"],
                        f"{opts.model}'s {config['file']} NormalizeImage" if config else "--mean/--std")

    def deploy_config(shapes: list[list]) -> tuple[str, str]:
        labels, classes = config.get("labels"), classifier_classes(shapes)
        if labels is not None and len(labels) != classes:  # its top-k would name the wrong classes, or none
            raise BadInput(f"{opts.model}'s inference.yml names {len(labels)} classes (PostProcess.Topk.label_list), "
                           f"the program outputs {classes if classes else 'no classifier logits'}: fix its label_list")
        if "text" in config:
            return config["text"], f"{opts.model}'s own inference.yml (copied as it is)"
        made_from = f"the preprocessing of its {config['file']}" if config else "the directory has no deploy config"
        return inference_yml(spec, shapes, None, name), f"none ({made_from})"

    return Prepared(model=found["model"], weights=found["weights"], input_spec=spec, inputs=parity_batches(spec),
                    write_programs=lambda stage: steps.run(
                        "paddle-import", copy_programs, found["program"], found["params"], stage,
                        detail=lambda _: f"{found['program'].name}, {found['params'].name} from {opts.model}"),
                    deploy_config=deploy_config, labels=config.get("labels"),
                    tolerance=Tolerance(opts.rtol or CPU_FP32.rel_l2, opts.atol))


def own_copy(layer):
    """A Layer object's copy in eval mode, which the export works on: the caller's object keeps its
    mode and its weights, whatever the rewrites do."""
    model = copy.deepcopy(layer)
    model.eval()
    return model


def _weights_detail(opts: ExportOptions) -> str:
    if opts.in_memory:
        return "the Layer object's weights"
    return f"weights {opts.weights}" if opts.weights else "fresh weights, seed 0"


def _legacy_model_maker(opts: ExportOptions, kwargs: dict, size: int, deploy_model) -> Callable:
    """What the legacy program's child builds its model with (see `add_legacy_program`): the
    manifest's recipe, or a Layer object itself, pickled (its class must be importable there)."""
    if opts.in_memory:
        return functools.partial(_given, deploy_model, {key: tensor.name for key, tensor in _named_tensors(deploy_model)})
    return functools.partial(build_model, opts.model, kwargs, opts.weights, opts.fuse, size)


def prepare_model(opts: ExportOptions, steps: _Steps, report: Callable[[str], None]) -> Prepared:
    """A zoo or module:callable model, built (and fused) here, or a Layer object, copied; its eager
    outputs are the reference."""
    from .converter import adaptive_pool_problem, spell_out_leaky_relus
    from .models.registry import MAX_INPUT_SIZE
    from .models.weights import state_dict_sha256
    from .precision import given_tolerance, grounded_tolerance
    from .rewrite import FuseError, fuse as fuse_model

    family, kwargs, sizes, mean, std = model_description(opts)
    batch_dim, size = opts.static_batch, sizes[0] if sizes[0][0] != sizes[0][1] else sizes[0][0]
    input_spec = input_section(batch_dim, sizes, mean, std)
    model = steps.run("build", *((own_copy, opts.model) if opts.in_memory else
                                 (build_model, opts.model, kwargs, opts.weights)),
                      detail=lambda m: f"{opts.name} ({_params(m):,} params, {_weights_detail(opts)})")
    inputs = parity_batches(input_spec)
    expected = {k: checked_outputs(model, v, opts.name) for k, v in inputs.items()}
    # (the smallest side checked: a pool that shrinks its map there does at every size)
    if opts.onnx and (problem := adaptive_pool_problem(model, min(min(size) for size in sizes), MAX_INPUT_SIZE)):
        raise BadInput(problem)
    probed = {k: checked_outputs(model, v, opts.name) for k, v in shape_probe(input_spec).items()}
    shapes = output_shapes({**expected, **probed}, batch_dim, opts.name)
    labels, labels_from = class_names(opts, classifier_classes(shapes))
    deploy_model, summary = model, None
    if opts.fuse:
        try:
            deploy_model, summary = steps.run("fuse", fuse_model, model, size, detail=lambda r: r[1].lines()[0])
        except FuseError as err:
            raise ExportFailed(f"--fuse: {err}") from None
        for line in summary.lines()[1:]:
            report(f"{'':<22}{line}")
    broken = [k for k, outs in expected.items() if not all(np.isfinite(v).all() for v in outs)]
    if broken:  # every runtime would be judged against NaN: say where the fault is
        raise ExportFailed(f"the eager model itself outputs NaN or Inf on the {', '.join(broken)} inputs with these "
                           "weights: check the weights (or the input size) before exporting")
    weights_sha = sha256(Path(opts.weights)) if opts.weights else None
    # The model's own rounding is measured (in float64) where the fold check needed it, else only if a
    # smoke row misses the default bar; an --rtol of the user's is taken as it is.
    grounded = None if opts.rtol else functools.partial(grounded_tolerance, model, inputs, input_spec, opts.atol)
    tolerance, recorded_tolerance = (grounded() if grounded and summary and summary.fp32_rounding is not None
                                     else given_tolerance(opts.rtol, opts.atol))

    def write_programs(stage: Path) -> tuple[dict[str, str], str | None]:
        shape = list(input_spec["shape"])  # paddle.jit.save's InputSpec writes -1 into the list it is given
        if opts.onnx and (spelt := spell_out_leaky_relus(deploy_model)):
            report(f"{'leaky-relu':<22}{len(spelt)} nn.LeakyReLU written as max(x, slope*x) for paddle2onnx "
                   f"(it writes LeakyRelu with alpha 0): {', '.join(spelt[:4])}{' ...' if len(spelt) > 4 else ''}")
        names = steps.run("paddle-save", save_paddle, deploy_model, stage, shape,
                          detail=lambda _: f"{PADDLE_PROGRAM} ({'batch ' + str(batch_dim) if batch_dim else 'dynamic batch'})")
        no_legacy = steps.run("paddle-legacy", add_legacy_program, _legacy_model_maker(opts, kwargs, size, deploy_model),
                              stage, shape,
                              detail=lambda why: f"{LEGACY_PROGRAM}" if why is None else f"not written: {why}")
        return names, no_legacy

    if opts.in_memory:
        described = {"source": "object", "class": f"{type(opts.model).__module__}.{type(opts.model).__qualname__}"}
        weights = {"path": None, "sha256": None, "init_seed": None, "state_dict_sha256": state_dict_sha256(model)}
    else:
        described = {"source": "callable" if opts.external else "zoo"}
        weights = {"path": str(Path(opts.weights).resolve()) if opts.weights else None, "sha256": weights_sha,
                   "init_seed": None if opts.weights else INIT_SEED}
    return Prepared(
        model={"name": opts.name, "family": family, "kwargs": kwargs, "fused": opts.fuse, **described,
               **({"tolerance": recorded_tolerance} if recorded_tolerance else {})},
        weights=weights, input_spec=input_spec, inputs=inputs, write_programs=write_programs,
        deploy_config=lambda shapes: (inference_yml(input_spec, shapes, labels, opts.name), labels_from),
        expected=expected, shapes=shapes, labels=labels, rewrite=summary.to_dict() if summary else None,
        tolerance=tolerance, grounded=grounded, eager_model=model)


def parity_batches(input_spec: dict) -> dict[str, np.ndarray]:
    """The export's check inputs: a seeded random batch and the photographs, at each size the artifact
    is checked at."""
    batch = input_spec["shape"][0] or SMOKE_BATCH
    return {**sized_inputs(input_spec, lambda size: {"smoke": random_batch(batch, size, SMOKE_SEED)}),
            **photo_inputs(sample_photos(), input_spec)}


def write_artifact(opts: ExportOptions, prepared: Prepared, steps: _Steps, report: Callable[[str], None]) -> Manifest:
    """The artifact, assembled in a staging directory that replaces the target only once every
    file that computes agrees with the reference (the eager model, or Paddle Inference on an
    imported program)."""
    inputs, input_spec, batch_dim = prepared.inputs, prepared.input_spec, prepared.input_spec["shape"][0]
    calibration = int8_variant.calibration_images(opts.calib_data) if opts.int8 else None
    target = opts.target()
    with staged_directory(target, on_wait=report) as stage:
        names, no_legacy = prepared.write_programs(stage)
        expected, shapes, reference_names = prepared.expected, prepared.shapes, None
        if expected is None:
            probe = shape_probe(input_spec)
            computed, reference_names = steps.run("reference", paddle_reference, stage, {**inputs, **probe},
                                                  detail=lambda r: "Paddle Inference on the imported program")
            shapes = output_shapes(computed, batch_dim, "the imported program")
            expected = {k: v for k, v in computed.items() if k not in probe}
        outputs = [{"name": name, "shape": shape} for name, shape in zip(output_names(shapes), shapes)]
        text, labels_from = prepared.deploy_config(shapes)
        (stage / DEPLOY_CONFIG).write_text(text)
        report(f"{'deploy-config':<22}{DEPLOY_CONFIG} (class names: {labels_from})")
        if len(outputs) > 1 or classifier_classes(shapes) is None:
            report(f"{'outputs':<22}" + ", ".join(f"{o['name']} {shape_text(o['shape'])}" for o in outputs))
        onnx_info = None
        if opts.onnx:
            program, params = paddle_model_files(stage)
            onnx_info = steps.run(
                "onnx", _in_child, convert_to_onnx, str(program), str(params), str(stage / ONNX_FILE), opts.opset,
                onnx_metadata(opts, prepared, outputs), [o["name"] for o in outputs], what="paddle2onnx",
                detail=lambda i: f"{ONNX_FILE} (opset {i['opset']}, {sum(i['ops'].values())} nodes, "
                                 f"{i['size'] / 2**20:.1f} MiB)" + (f"; {i['unsimplified']}" if "unsimplified" in i else ""))
        if opts.fp16:
            photos = next(k for k in inputs if k.startswith("photos"))
            onnx_info["fp16"] = steps.run(
                "fp16", _in_child, make_fp16, str(stage / ONNX_FILE), str(stage / FP16_FILE), inputs[photos],
                expected[photos], what="fp16 conversion",
                detail=lambda i: f"{FP16_FILE} ({i['precision']}, {i['size'] / 2**20:.1f} MiB)")
        if opts.int8:
            onnx_info["int8"] = steps.run("int8", add_int8, stage, calibration, input_spec,
                                          detail=lambda i: f"{INT8_FILE} ({sum(i['quantized_ops'].values())} int8 "
                                                           f"ops, {i['size'] / 2**20:.1f} MiB; calibrated on "
                                                           f"{i['calibration']['source']})")
        parity, io_names = _smoke_parity_grounded(
            prepared, steps, stage, inputs, expected, no_legacy is None, opts.onnx, opts.fp16, opts.int8,
            reference_names is None,
            detail=lambda r: ", ".join(f"{rec['runtime']} rel {rec['rel_l2']:.1e}" + "".join(
                f" ({w['config']} wrong: rel {w['rel_l2']:.1e})" for w in rec.get("wrong_configs", ())) for rec in r[0]))
        for fmt in ("paddle", "paddle-legacy"):  # an imported program's names, as its reference run saw them
            io_names.setdefault(fmt, reference_names)
        program = paddle_model_files(stage)[0].name
        formats = {"paddle": {"program": program, "params": PADDLE_PARAMS, **io_names["paddle"]},
                   "paddle-legacy": ({"program": LEGACY_PROGRAM, "params": PADDLE_PARAMS, **io_names["paddle-legacy"]}
                                     if no_legacy is None else {"not_written": no_legacy})}
        inference_config = recorded_workaround(parity)
        if inference_config:  # the configuration that computes the model right, for the deploy to use
            formats["paddle"]["inference_config"] = inference_config
            (stage / DEPLOY_CONFIG).write_text(deploy_config_with(text, inference_config))
        inference_config = formats["paddle"].get("inference_config")  # an imported program's: its reference run's
        if inference_config:
            report(f"{'':<22}{inference_config['why']}")
        if opts.onnx:
            formats["onnx"] = {"file": ONNX_FILE, **io_names["onnx"]}
        if opts.fp16:
            formats["onnx-fp16"] = {"file": FP16_FILE, "precision": onnx_info["fp16"]["precision"], **io_names["onnx-fp16"]}
        if opts.int8:
            formats["onnx-int8"] = {"file": INT8_FILE, **io_names["onnx-int8"]}
        manifest = Manifest(
            model=prepared.model, weights=prepared.weights, input=input_spec,
            output={"shape": shapes[0], "labels": prepared.labels, "outputs": outputs},
            rewrite=prepared.rewrite, paddle_param_names=names, formats=formats,
            onnx=onnx_info, smoke_parity=parity, versions=versions(), timings=steps.timings,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), files=describe_files(stage))
        manifest.write(stage)
    sizes = ", ".join(size_name(size) for size in input_spec["sizes"])
    report(f"{'written':<14}{'':8}{target}/ ({'dynamic batch' if batch_dim is None else f'static batch {batch_dim}'}, "
           f"{'dynamic size, checked at ' if input_spec['shape'][2] is None else 'size '}{sizes})")
    if input_spec["shape"][2] is None and len(input_spec["sizes"]) == 1:
        report(f"{'':<22}its height and width are dynamic: give --img-size two or more sizes (e.g. {sizes},"
               f"{2 * input_spec['sizes'][0][0]}x{input_spec['sizes'][0][1]}) to check it at others")
    return manifest


def _smoke_parity_grounded(prepared: Prepared, steps: _Steps, *args, detail: Callable):
    """The smoke check at the prepared bars; where a row misses them, or a Paddle Inference configuration
    was found wrong by them, and the eager model's own rounding was not yet measured, again at the bars
    grounded in it (recorded in the manifest's model section): no component is blamed for rounding."""
    can_ground = prepared.grounded is not None and "tolerance" not in prepared.model
    failure = None
    try:
        result = steps.run("smoke-parity", smoke_parity, *args, prepared.tolerance, prepared.eager_model, detail=detail)
        if not (can_ground and any(rec.get("wrong_configs") for rec in result[0])):
            return result
    except ExportFailed as err:
        if not can_ground:
            raise
        failure = err
    tolerance, record = prepared.grounded()
    if record is None or tolerance == prepared.tolerance:  # no larger bar: the first run's verdict stands
        if failure:
            raise failure
        return result
    prepared.model["tolerance"] = record
    return steps.run("smoke-parity", smoke_parity, *args, tolerance, prepared.eager_model, detail=detail)


def paddle_reference(stage: Path, inputs: dict) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Paddle Inference's outputs on the programs in `stage` (an imported model has no eager one) and
    its input and output names (and, where its default configuration computes otherwise than the
    program run as written, the configuration it ran in: `blame.literal_checked`); in a child."""
    from .blame import literal_checked
    from .plan import paddle_row

    outcome, inference_config = literal_checked(paddle_row(stage, "cpu", 0, CPU_FP32, timed=False), inputs)
    if outcome.ran is None:
        raise BadInput("Paddle Inference cannot run the imported program ("
                       + "; ".join(f"{f.get('config')}: {_error_line(f['error'], 160)}" for f in outcome.failed)
                       + "): check that the directory holds a complete Paddle inference model")
    for name, outputs in outcome.outputs.items():
        for i, output in enumerate(outputs):
            what = "the imported program returns" + (f" (output {i})" if len(outputs) > 1 else "")
            outputs_problem(output, len(inputs[name]), what, "cnnexport imports models with float32 outputs (a "
                            "PaddleSeg model exported with --output_op argmax returns labels: export it with "
                            "--output_op none)", classifier=len(outputs) == 1)
            if not np.isfinite(output).all():
                raise BadInput(f"{what} NaN or Inf on the {name} input: check its parameters "
                               f"({PADDLE_PARAMS}) and the input size")
    return outcome.outputs, {**io_names(outcome), **({"inference_config": inference_config} if inference_config else {})}


def io_names(outcome) -> dict:
    """A format's input and output names as its runtime saw them (`output`: the first output's)."""
    return {"input": outcome.names[0][0], "output": outcome.names[1][0], "outputs": list(outcome.names[1])}


def _params(model) -> int:
    from .models.fusion import count_params
    return count_params(model)


def _in_child(fn: Callable, *args, what: str, env: dict[str, str] | None = None):
    """A conversion step in a child process: a converter that aborts is a failed export, not our death."""
    try:
        return isolate.call_isolated(fn, *args, what=what, env=env)
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        logged = _last_error_line(err.log_tail)
        raise ExportFailed(f"{what} failed: {err}" + (f" ({logged})" if logged else "")) from None
