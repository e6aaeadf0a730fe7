"""The Python API, which `cnnexport` re-exports and the command line is a thin layer over:

    import cnnexport
    art = cnnexport.export(my_layer, img_size=64, out="artifacts/mynet")   # or "vanillanet_5", "pkg.mod:build", a dir
    report = cnnexport.verify(art, model=my_layer, bench=False)
    assert report.passed

Each option is the command line's, by its Python name (`--img-size` is `img_size`), and bad input
raises `BadInput` with the very line `cnnexport` prints for it (which names the command line's
option). Nothing is printed: `report` (export) and `progress` (verify) receive the step lines.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import accuracy
from .artifact import Manifest
from .device import paddle_available, resolve_device
from .errors import BadInput, ModelExited
from .exporting import DEFAULT_OPSET, ExportOptions, run_export, validate
from .images import folder_photos
from .plan import VerifyOptions
from .reference import stored_reference
from .results import VerifyReport
from .verifier import verify_artifact

if TYPE_CHECKING:
    from .models.registry import ModelInfo

PathLike = str | os.PathLike


def _ignore(line: str) -> None:
    pass


@dataclass(frozen=True)
class Artifact:
    """An exported artifact: its directory and its manifest (docs/FORMATS.md)."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: PathLike) -> Artifact:
        """The artifact in `path`; BadInput if it is not a finished one."""
        return cls(Path(path), Manifest.load(Path(path)))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def files(self) -> dict[str, Path]:
        """Each deploy format written ("paddle", "paddle-legacy", "onnx", "onnx-fp16", "onnx-int8") and its
        model file."""
        return {fmt: self.path / (spec.get("file") or spec["program"])
                for fmt, spec in self.manifest.formats.items() if "not_written" not in spec}


def list_models(pattern: str | None = None) -> list[ModelInfo]:
    """The zoo, as registry data (nothing is built): the names containing `pattern`, or its family."""
    from . import models

    infos = [models.model_info(name) for name in models.list_models()]
    return [i for i in infos if not pattern or pattern in i.name or pattern == i.family]


def _export_options(model, *, img_size: int | str | Sequence | None = None, out: PathLike | None = None,
                    fuse: bool = True,
                    onnx: bool = True, fp16: bool = False, int8: bool = False, calib_data: PathLike | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    labels: PathLike | None = None, weights: PathLike | None = None, num_classes: int | None = None,
                    model_kwargs: dict | None = None, opset: int = DEFAULT_OPSET, static_batch: int | None = None,
                    seed_compat: bool = False, rtol: float | None = None, atol: float | None = None) -> ExportOptions:
    """`export`'s arguments (with its defaults) as the export's options."""
    def text(path):
        return None if path is None else os.fspath(path)

    return ExportOptions(os.fspath(model) if isinstance(model, os.PathLike) else model, weights=text(weights),
                         num_classes=num_classes, img_size=img_size, seed_compat=seed_compat, fuse=fuse, onnx=onnx,
                         opset=opset, static_batch=static_batch, fp16=fp16, out=text(out), labels=text(labels),
                         model_kwargs=model_kwargs, mean=None if mean is None else tuple(mean),
                         std=None if std is None else tuple(std), int8=int8, calib_data=text(calib_data), rtol=rtol,
                         atol=atol)


def check_export(model: Any, **options) -> None:
    """Raise BadInput if `export(model, **options)` would refuse its arguments, without doing any work."""
    validate(_export_options(model, **options))


def export(model: Any, *, img_size: int | str | Sequence | None = None, out: PathLike | None = None,
           fuse: bool = True, onnx: bool = True, fp16: bool = False, int8: bool = False, calib_data: PathLike | None = None,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None, labels: PathLike | None = None,
           weights: PathLike | None = None, num_classes: int | None = None, model_kwargs: dict | None = None,
           opset: int = DEFAULT_OPSET, static_batch: int | None = None, seed_compat: bool = False,
           rtol: float | None = None, atol: float | None = None, report: Callable[[str], None] | None = None) -> Artifact:
    """Rewrite (`fuse`) and export `model` into `out` (default artifacts/<name>[-fused]); returns the artifact.

    `model` is a zoo name (`list_models`), a "module.path:callable" string, a Paddle inference
    directory, or a `paddle.nn.Layer` object (exported from a copy: the object is left as it is;
    give `img_size`, and `mean`/`std` if not ImageNet's). `img_size` is a side, a (height, width)
    pair, or several of them (or "320,640x480") to check a model of dynamic height and width at.
    Every file is checked against the eager model before the artifact is swapped in. `labels` is a
    text file, one class name per line.
    `report` receives one line per step. Raises BadInput (bad arguments or files) and ExportFailed
    (a step failed, or a file disagrees with the eager model).
    """
    opts = _export_options(model, img_size=img_size, out=out, fuse=fuse, onnx=onnx, fp16=fp16, int8=int8,
                           calib_data=calib_data, mean=mean, std=std, labels=labels, weights=weights,
                           num_classes=num_classes, model_kwargs=model_kwargs, opset=opset,
                           static_batch=static_batch, seed_compat=seed_compat, rtol=rtol, atol=atol)
    with _user_exits_refused(opts.name):
        run_export(opts, report or _ignore)
    return Artifact.open(opts.target())


@contextlib.contextmanager
def _user_exits_refused(name: str):
    """A model's own code that calls sys.exit (on import, construction or in its forward) is bad
    input, not the end of the caller's program with no word said."""
    try:
        yield
    except SystemExit as err:
        raise ModelExited.called_exit(name, err) from None


def _verify_options(*, device: str = "auto", images: PathLike | None = None, batch_sizes: Sequence[int] = (),
                    bench: bool = True, rtol: float | None = None, atol: float | None = None, threads: int = 0,
                    reference_evaluator: bool = True, eval_data: PathLike | None = None) -> VerifyOptions:
    """`verify`'s arguments (with its defaults) as verify's options, checked."""
    opts = VerifyOptions(device, None if images is None else os.fspath(images), tuple(batch_sizes), bench, rtol, atol,
                         threads, reference_evaluator, eval_data=None if eval_data is None else os.fspath(eval_data))
    opts.validate()
    return opts


def _artifact_path(artifact: Artifact | PathLike) -> Path:
    return artifact.path if isinstance(artifact, Artifact) else Path(artifact)


def check_verify(artifact: Artifact | PathLike, *, model: Any = None, **options) -> None:
    """Raise BadInput if `verify(artifact, **options)` would refuse its arguments, without doing any work:
    not an artifact (or an unfinished or malformed one), no reference to judge against, a module
    that does not import here, unreadable images or evaluation data."""
    opts = _verify_options(**options)
    if opts.eval_data is not None and not paddle_available():
        raise BadInput("--eval-data measures the eager model too, which needs Paddle: run it where Paddle is installed")
    path = _artifact_path(artifact)
    manifest = Manifest.load(path)
    if not paddle_available():
        stored_reference(path, manifest)
    elif manifest.model.get("source") == "callable":  # its module must import here to rebuild the model
        from .models.external import resolve
        resolve(manifest.name)
    if model is not None and not manifest.from_object:
        raise BadInput(f"{path} was exported from {manifest.name}, not from a Layer object: verify rebuilds its model "
                       "itself, leave out model=")
    if opts.eval_data is not None:
        accuracy.check_classes(accuracy.read_eval_set(opts.eval_data), manifest, opts.eval_data)
    if opts.images:
        folder_photos(opts.images)
    resolve_device(opts.device)


def verify(artifact: Artifact | PathLike, *, device: str = "auto", images: PathLike | None = None,
           batch_sizes: Sequence[int] = (), bench: bool = True, rtol: float | None = None, atol: float | None = None,
           threads: int = 0, reference_evaluator: bool = True, eval_data: PathLike | None = None,
           model: Any = None, progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Verify one artifact: file integrity, parity of every runtime with the eager model, the first
    divergence of any that fails, and speed (`bench`). Returns the typed report (also written to
    the artifact's verify.json); `report.passed` says whether every check passed.

    An artifact exported from a Layer object is judged against that object when it is handed back
    as `model` (its weights must be the exported ones); without it, Paddle Inference on the
    artifact's own program is the reference, as for an imported directory. `eval_data`: a
    CIFAR-format tarball to measure top-1 accuracy on. `progress` receives each step's name.
    """
    options = dict(device=device, images=images, batch_sizes=batch_sizes, bench=bench, rtol=rtol, atol=atol,
                   threads=threads, reference_evaluator=reference_evaluator, eval_data=eval_data)
    check_verify(artifact, model=model, **options)
    opts = _verify_options(**options)
    eval_set = accuracy.read_eval_set(opts.eval_data) if opts.eval_data is not None else None
    with _user_exits_refused(str(_artifact_path(artifact))):
        return verify_artifact(_artifact_path(artifact), opts, resolve_device(device), progress or _ignore, eval_set,
                               layer=model)
