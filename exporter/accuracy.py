"""Top-1 accuracy against labels (`cnnexport verify --eval-data TARBALL`): the eager model, the
ONNX model and its int8 variant on the test split of a CIFAR-format tarball, preprocessed as the
manifest says. Agreement with the eager model says a conversion is faithful; accuracy says what
quantization costs on the user's own data.

The eager model's logits are computed in this process (where verify has the eager reference), each
ONNX file's in a child through the runner, as verify's rows are.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .artifact import INT8_FILE, ONNX_FILE, Manifest
from .compare import CPU_FP32
from .errors import BadInput
from .images import in_batches, preprocess
from .plan import Row, int8_spec
from .reference import eager_run
from .run import run_row
from .runtimes import RuntimeSpec

OPTION = "--eval-data"
MAX_EVAL_SAMPLES = 1000   # the first ones of the test split, in the file's order
EVAL_CHUNK = 50           # images per inference call: bounded memory at any input size


def read_eval_set(path: str):
    """The CIFAR-format tarball `--eval-data` names (cnnexport.cifar.CifarData); BadInput naming the option.
    Read once while the file stays as it is: verify checks it before any work, then measures on it."""
    if not Path(path).is_file():
        raise BadInput(f"{OPTION} {path} is not a file: give a CIFAR-format tarball (cifar-10-python.tar.gz)")
    stat = os.stat(path)
    return _read_eval_set(str(path), (stat.st_size, stat.st_mtime_ns, stat.st_ino))


@functools.lru_cache(maxsize=1)
def _read_eval_set(path: str, stamp: tuple):
    from .cifar import read_cifar_tarball

    try:
        return read_cifar_tarball(path)
    except BadInput as err:
        raise BadInput(f"{OPTION}: {err}") from None


def check_classes(data, manifest: Manifest, path: str) -> None:
    if not manifest.classifier:
        shapes = ", ".join(str(out["shape"]) for out in manifest.outputs)
        raise BadInput(f"{OPTION} measures an image classifier's top-1 accuracy; {manifest.name} outputs {shapes}, "
                       "not one [N, classes]: leave --eval-data out")
    classes = manifest.num_classes
    if len(data.label_names) != classes:
        raise BadInput(f"{OPTION} {path} has {len(data.label_names)} classes, {manifest.name} has {classes}: give "
                       "the labelled set the model was trained for")


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.argmax(logits, axis=1) == labels).mean())


def measure(root: Path, manifest: Manifest, data, source: str, eager_model, threads: int) -> dict:
    """Top-1 accuracy of each model on the first MAX_EVAL_SAMPLES test images: `eager`, and each ONNX
    file by its runtime label; a file that fails to run is listed under `errors`."""
    images, labels = data.test_images[:MAX_EVAL_SAMPLES], data.test_labels[:MAX_EVAL_SAMPLES]
    batch = preprocess({str(i): image for i, image in enumerate(images)}, manifest.input)
    chunks = {f"eval-{i}": chunk for i, chunk in enumerate(in_batches(batch, manifest.static_batch or EVAL_CHUNK))}

    def joined(outputs: dict[str, list[np.ndarray]]) -> np.ndarray:  # a static batch pads the last chunk
        return np.concatenate([outputs[name][0] for name in chunks])[:len(labels)]

    result = {"data": source, "split": "test", "samples": len(labels),
              "selection": f"the first {len(labels)} images of the test split",
              "top1": {"eager": top1(joined(eager_run(eager_model, chunks)), labels)}, "errors": {}}
    specs = [RuntimeSpec("onnxruntime", str(root / ONNX_FILE), "cpu", threads), int8_spec(root / INT8_FILE, threads)]
    for spec in specs:
        if not Path(spec.model_path).is_file():
            continue
        outcome = run_row(Row(spec, CPU_FP32), chunks, None)
        if outcome.ran is None:
            result["errors"][spec.label] = outcome.failed[0]["error"]
        else:
            result["top1"][spec.label] = top1(joined(outcome.outputs), labels)
    return result
