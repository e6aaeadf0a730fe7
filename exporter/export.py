"""`cnnexport MODEL`: build, (fuse), save the Paddle inference model, convert to ONNX, smoke-check, write the manifest.

Each step is timed and reported in one line. Everything is written into a staging directory that
replaces `artifacts/<model>[-fused]/` only once the smoke parity check has passed.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from collections.abc import Callable

from . import isolate
from .artifact import (Manifest, artifact_name, check_replaceable, describe_files, sha256, staged_directory,
                       writable_directory)
from .errors import BadInput, ExportFailed
from .images import random_batch
from .plan import FP16_FILE, ONNX_FILE, PADDLE_DIR, smoke_plan
from .run import judge_row, run_row
from .runtimes import paddle_model_files

MIN_OPSET, MAX_OPSET = 7, 21  # what paddle2onnx 2.x converts; outside it the converter aborts the process
MAX_STATIC_BATCH = 1024       # a larger fixed batch is a memory error in the smoke check, not an artifact
DEFAULT_OPSET = 17
INIT_SEED = 0                 # models exported without --weights are built after paddle.seed(INIT_SEED)
SMOKE_BATCH = 2
SMOKE_SEED = 0


@dataclass
class ExportOptions:
    model: str
    weights: str | None = None
    num_classes: int | None = None
    img_size: int | None = None
    seed_compat: bool = False
    fuse: bool = False
    onnx: bool = False
    opset: int = DEFAULT_OPSET
    static_batch: int | None = None
    fp16: bool = False
    out: str | None = None
    artifacts_root: str = "artifacts"

    def target(self) -> Path:
        return Path(self.out) if self.out else Path(self.artifacts_root) / artifact_name(self.model, self.fuse)


def validate(opts: ExportOptions) -> None:
    """Reject bad input before any work: one clear reason each."""
    import models
    from models.registry import MAX_CLASSES, MAX_INPUT_SIZE

    models.model_info(opts.model)  # an unknown name, with close matches
    _check_range("--img-size", opts.img_size, 1, MAX_INPUT_SIZE)
    _check_range("--num-classes", opts.num_classes, 1, MAX_CLASSES)
    _check_range("--static-batch", opts.static_batch, 1, MAX_STATIC_BATCH)
    if opts.onnx and not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise BadInput(f"--opset {opts.opset} is outside what paddle2onnx converts ({MIN_OPSET}..{MAX_OPSET})")
    if opts.fp16 and not opts.onnx:
        raise BadInput("--fp16 makes an fp16 variant of the ONNX model: add --onnx")
    if opts.weights is not None and not Path(opts.weights).is_file():
        raise BadInput(f"--weights {opts.weights} does not exist or is not a file")
    target = opts.target().absolute()
    check_replaceable(target)
    existing = next(p for p in [target.parent, *target.parents] if p.exists())
    if not writable_directory(existing):
        raise BadInput(f"cannot write {opts.target()}: {existing} is not a writable directory; choose another --out")


def _check_range(option: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise BadInput(f"{option} must be between {low} and {high}, not {value}")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("cnnexport", "paddlepaddle", "paddlepaddle-gpu", "paddle2onnx", "onnx", "onnxruntime",
                 "onnxruntime-gpu", "onnxslim"):
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


def build_model(name: str, kwargs: dict, weights: str | None):
    """The eager model as the manifest describes it, in eval mode."""
    import paddle

    import models

    paddle.seed(INIT_SEED)
    model = models.create(name, **kwargs)
    if weights:
        models.load_weights(model, weights)
    model.eval()
    return model


def save_paddle(model, directory: Path, input_shape: list) -> dict[str, str]:
    """paddle.jit.save as the deployment suites expect it; returns Paddle's param name -> state-dict name."""
    import paddle

    spec = paddle.static.InputSpec(input_shape, "float32", "x")
    paddle.jit.save(model, str(directory / "inference"), input_spec=[spec])
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {tensor.name: name for name, tensor in named}


def inference_yml(info, name: str, kwargs: dict) -> str:
    """A PaddleClas/PaddleX-style deploy config: preprocessing, input and postprocessing."""
    import yaml

    size = kwargs["img_size"]
    config = {
        "Global": {"model_name": name, "family": info.family},
        "Input": {"name": "x", "layout": "NCHW", "dtype": "float32", "shape": [None, 3, size, size],
                  "color": "RGB"},
        "PreProcess": {"transform_ops": [
            {"ResizeImage": {"size": [size, size]}},
            {"NormalizeImage": {"scale": "1.0/255.0", "mean": list(info.mean), "std": list(info.std), "order": "hwc"}},
            {"ToCHWImage": None},
        ]},
        "PostProcess": {"Topk": {"topk": min(5, kwargs["num_classes"]), "class_num": kwargs["num_classes"]}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def convert_to_onnx(program: str, params: str, out_path: str, opset: int, metadata: dict,
                    fp16_path: str | None = None) -> dict:
    """paddle2onnx, then `onnx_tools.finalize` (and the fp16 variant). Runs in a child: the converter
    can abort its process."""
    import os

    import onnx
    import paddle2onnx

    from . import onnx_tools

    try:
        raw = paddle2onnx.export(program, params, None, opset_version=opset, auto_upgrade_opset=False,
                                 enable_onnx_checker=True)
    except UnboundLocalError:  # paddle2onnx logs its own failure, then returns an unbound variable
        raw = None
    if not isinstance(raw, bytes):
        raise RuntimeError("paddle2onnx produced no model")
    model = onnx_tools.finalize(onnx.load_from_string(raw), metadata)
    onnx.save(model, out_path)
    info = {"opset": model.opset_import[0].version, "ops": onnx_tools.op_counts(model), "size": os.path.getsize(out_path)}
    if fp16_path:
        half = onnx_tools.to_fp16(model)
        half.metadata_props.add(key="precision", value="fp16 weights and compute, fp32 input and output")
        onnx.save(half, fp16_path)
        info["fp16_size"] = os.path.getsize(fp16_path)
    return info


def smoke_parity(stage: Path, batch, reference, onnx: bool, fp16: bool) -> list[dict]:
    """Paddle Inference and ONNX Runtime on one batch against the eager model (`plan.smoke_plan`),
    through the runner and the judge that verify uses; raise if they disagree."""
    inputs, expected = {"smoke": batch}, {"smoke": reference}
    results = [judge_row(row, run_row(row, inputs, None), expected) for row in smoke_plan(stage, onnx, fp16)]
    failed = [f"{r.runtime}: {'; '.join(r.failures)}" for r in results if not r.passed]
    if failed:
        raise ExportFailed("smoke parity against the eager model failed: " + " | ".join(failed))
    return [{"runtime": r.runtime, **({"config": r.config, "failed_configs": r.failed_configs} if r.config else {}),
             **r.batches["smoke"]} for r in results]


def onnx_metadata(opts: ExportOptions, info, kwargs: dict, weights_sha: str | None) -> dict[str, str]:
    """What the ONNX file says about itself (metadata_props), for whoever deploys it."""
    size = kwargs["img_size"]
    return {"model": opts.model, "family": info.family, "fused": str(opts.fuse).lower(),
            "input": f"x float32 NCHW [{opts.static_batch or 'batch'},3,{size},{size}]",
            "input_size": str(size), "num_classes": str(kwargs["num_classes"]),
            "normalisation": f"x = (rgb/255 - mean) / std; mean={list(info.mean)} std={list(info.std)}",
            "seed_compat": str(opts.seed_compat).lower(), "weights_sha256": weights_sha or "none (fresh init)",
            **{f"version.{k}": v for k, v in versions().items()}}


def export(opts: ExportOptions, report: Callable[[str], None]) -> Manifest:
    """Run the export; returns the manifest. Raises BadInput, WeightsError, ExportFailed."""
    import paddle

    import models
    from .rewrite import fuse as fuse_model

    validate(opts)
    info = models.model_info(opts.model)
    kwargs = {"num_classes": info.num_classes if opts.num_classes is None else opts.num_classes,
              "img_size": info.input_size if opts.img_size is None else opts.img_size,
              "seed_compat": opts.seed_compat}
    size, batch_dim = kwargs["img_size"], opts.static_batch
    steps = _Steps(report)
    model = steps.run("build", build_model, opts.model, kwargs, opts.weights,
                      detail=lambda m: f"{opts.model} ({_params(m):,} params, "
                                       f"{'weights ' + str(opts.weights) if opts.weights else 'fresh weights, seed 0'})")
    deploy_model, summary = model, None
    if opts.fuse:
        deploy_model, summary = steps.run("fuse", fuse_model, model, size, detail=lambda r: r[1].lines()[0])
        for line in summary.lines()[1:]:
            report(f"{'':<22}{line}")
    batch = random_batch(batch_dim or SMOKE_BATCH, size, SMOKE_SEED)
    with paddle.no_grad():
        reference = model(paddle.to_tensor(batch)).numpy()
    weights_sha = sha256(Path(opts.weights)) if opts.weights else None

    target = opts.target()
    with staged_directory(target, on_wait=report) as stage:
        paddle_dir = stage / PADDLE_DIR
        names = steps.run("paddle-save", save_paddle, deploy_model, paddle_dir, [batch_dim, 3, size, size],
                          detail=lambda _: f"paddle/ ({'batch ' + str(batch_dim) if batch_dim else 'dynamic batch'})")
        (paddle_dir / "inference.yml").write_text(inference_yml(info, opts.model, kwargs))
        onnx_path = stage / ONNX_FILE if opts.onnx else None
        fp16_path = stage / FP16_FILE if opts.fp16 else None
        onnx_info = None
        if onnx_path:
            program, params = paddle_model_files(paddle_dir)
            onnx_info = steps.run(
                "onnx", _convert, str(program), str(params), str(onnx_path), opts.opset,
                onnx_metadata(opts, info, kwargs, weights_sha), str(fp16_path) if fp16_path else None,
                detail=lambda i: f"model.onnx (opset {i['opset']}, {sum(i['ops'].values())} nodes, "
                                 f"{i['size'] / 2**20:.1f} MiB)"
                                 + (f", model.fp16.onnx ({i['fp16_size'] / 2**20:.1f} MiB)" if fp16_path else ""))
        parity = steps.run("smoke-parity", smoke_parity, stage, batch, reference, opts.onnx, opts.fp16,
                           detail=lambda rs: ", ".join(f"{r['runtime']} rel {r['rel_l2']:.1e}" for r in rs))
        manifest = Manifest(
            model={"name": opts.model, "family": info.family, "kwargs": kwargs, "fused": opts.fuse},
            weights={"path": str(Path(opts.weights).resolve()) if opts.weights else None, "sha256": weights_sha,
                     "init_seed": None if opts.weights else INIT_SEED},
            input={"name": "x", "shape": [batch_dim, 3, size, size], "dtype": "float32", "layout": "NCHW",
                   "color": "RGB", "scale": 1 / 255, "mean": list(info.mean), "std": list(info.std),
                   "dynamic_batch": batch_dim is None},
            output={"name": "logits", "shape": [batch_dim, kwargs["num_classes"]]},
            rewrite=summary.to_dict() if summary else None, paddle_param_names=names, onnx=onnx_info,
            smoke_parity=parity, versions=versions(), timings=steps.timings,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), files=describe_files(stage))
        manifest.write(stage)
    report(f"{'written':<14}{'':8}{target}/ ({'dynamic batch' if batch_dim is None else f'static batch {batch_dim}'})")
    return manifest


def _params(model) -> int:
    from models.fusion import count_params
    return count_params(model)


def _convert(program, params, out_path, opset, meta, fp16_path) -> dict:
    try:
        return isolate.call_isolated(convert_to_onnx, program, params, out_path, opset, meta, fp16_path,
                                     what="paddle2onnx")
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        errors = [line for line in err.log_tail.splitlines() if "rror" in line]
        raise ExportFailed(f"ONNX conversion failed: {err}" + (f" ({errors[-1].strip()})" if errors else "")) from None
