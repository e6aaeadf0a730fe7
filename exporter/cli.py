"""The `cnnexport` command line, a thin layer over the Python API (`cnnexport.api`).

    cnnexport list                          # the zoo
    cnnexport vanillanet_5 --fuse --onnx    # rewrite + export one model into artifacts/
    cnnexport verify                        # parity + speed for what is in artifacts/
    cnnexport train MODEL --data cifar-10-python.tar.gz

Paddle is imported inside the commands that need it, so `--help` is instant and `verify` runs on
a machine without Paddle (`python -m cnnexport verify --device gpu ARTIFACT` with only numpy, onnx,
onnxruntime-gpu and click): the eager model and Paddle Inference rows are then left out, and
parity is checked against the artifact's reference bundle.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import click

from . import console
from .api import check_export, check_verify, export, list_models, verify
from .artifact import finished_artifacts
from .errors import BadInput, ExportFailed
from .report import summary_lines, write_reports


class _Cli(click.Group):
    """A group whose default command is `export`: `cnnexport MODEL ...` and `cnnexport --all ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["export", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnnexport")
def cli():
    """Rewrite, export and verify PaddlePaddle CNNs of the zoo (Paddle inference format and ONNX).

    `cnnexport MODEL [OPTIONS]` is `cnnexport export MODEL [OPTIONS]`.
    """


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_command(pattern, as_json):
    """The zoo: name, family, input size, classes, parameters and GFLOPs (multiply-accumulates).

    PATTERN keeps the names containing it (or a family name).
    """
    from tabulate import tabulate

    console.load_paddle()
    rows = [{"name": i.name, "family": i.family, "input_size": i.input_size, "num_classes": i.num_classes,
             "params": i.params, "flops": i.macs} for i in list_models(pattern)]
    if not rows:
        raise BadInput(f"no model matches {pattern!r}: run `cnnexport list` for the zoo")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(tabulate(
        [[r["name"], r["family"], r["input_size"], r["num_classes"], f"{r['params']:,}", f"{r['flops'] / 1e9:.2f}"]
         for r in rows],
        headers=["model", "family", "input", "classes", "params", "GFLOPs"], colalign=("left", "left")))


def _json_object(ctx, param, value):
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as err:
        raise click.BadParameter(f"{_short(value)} is not JSON ({err})") from None
    except RecursionError:
        raise click.BadParameter(f"{_short(value)} is nested deeper than JSON is read: pass the callable's "
                                 "arguments as they are") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{_short(value)} is not a JSON object of keyword arguments")
    return parsed


def _short(text: str, limit: int = 80) -> str:
    """A value quoted in a one-line error, cut where it is long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _three_numbers(ctx, param, value):
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or (param.name == "std" and min(numbers) <= 0):
        raise click.BadParameter(f"{value!r} is not three finite numbers R,G,B"
                                 + (" above 0" if param.name == "std" else ""))
    return numbers


@cli.command("export")
@click.argument("model", required=False)
@click.option("--all", "all_models", is_flag=False, flag_value="all", default=None, metavar="[NAMES]",
              help="Export every registered model, or a comma-separated list of names.")
@click.option("--weights", type=click.Path(dir_okay=False), help=".pdparams or .safetensors with the notebook's keys.")
@click.option("--num-classes", type=int, help="Classifier size (default: the zoo's, 10).")
@click.option("--img-size", help="Input size: a side in pixels (default: the model's), HxW, or several to check a "
                                 "model of dynamic height and width at, e.g. 320,640x480.")
@click.option("--seed-compat", is_flag=True, help="Reproduce the seed notebook's quirks (see README).")
@click.option("--fuse", is_flag=True, help="Apply every exact rewrite first (BN folding, VanillaNet deploy form, ...).")
@click.option("--onnx", "to_onnx", is_flag=True, help="Also write inference.onnx (paddle2onnx).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (7..21).")
@click.option("--static-batch", type=int, help="Fix the batch axis to N instead of leaving it dynamic.")
@click.option("--fp16", is_flag=True, help="Also write inference.fp16.onnx (fp16 where top-1 agreement allows, fp32 I/O).")
@click.option("--int8", is_flag=True, help="Also write inference.int8.onnx (static int8 quantization, fp32 I/O).")
@click.option("--calib-data", help="What --int8 calibrates on: a folder of images or a CIFAR-format tarball "
                                   "(up to 256 images, a seeded choice; default: the parity photographs).")
@click.option("--out", type=click.Path(file_okay=False), help="Artifact directory (default artifacts/<model>[-fused]).")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names for inference.yml, one per line (default: the training run's, if the weights come from one).")
@click.option("--model-kwargs", callback=_json_object, metavar="JSON",
              help='module:callable models: the callable\'s keyword arguments, e.g. \'{"num_classes": 10}\'.')
@click.option("--mean", callback=_three_numbers, metavar="R,G,B",
              help="module:callable models: the input normalisation's mean on 0..1 RGB (default ImageNet's).")
@click.option("--std", callback=_three_numbers, metavar="R,G,B",
              help="module:callable models: the input normalisation's std (default ImageNet's).")
@click.option("--rtol", type=float, help="The smoke check's relative L2 tolerance (default 1e-5, or a few times "
                                         "the eager model's own fp32 rounding where that is larger); verify uses it too.")
@click.option("--atol", type=float, help="Also bound the smoke check's max absolute error; verify uses it too.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (step lines go to stderr).")
def export_command(model, all_models, weights, num_classes, img_size, seed_compat, fuse, to_onnx, opset,
                   static_batch, fp16, int8, calib_data, out, labels, model_kwargs, mean, std, rtol, atol, as_json):
    """Rewrite (--fuse) and export MODEL to Paddle's inference format (and ONNX with --onnx).

    MODEL is a zoo name (`cnnexport list`) or `module.path:callable`, any importable callable that
    returns a paddle.nn.Layer (importing it runs its code).
    """
    console.load_paddle()
    if bool(model) == bool(all_models):
        raise BadInput("name one MODEL, or use --all (see `cnnexport list`)")
    names = ([model] if model else [i.name for i in list_models()] if all_models == "all"
             else all_models.split(","))
    if len(names) > 1 and (weights or img_size or out or labels):
        raise BadInput("--weights, --img-size, --out and --labels apply to one model: export models one by one for those")
    options = dict(weights=weights, num_classes=num_classes, img_size=img_size, seed_compat=seed_compat, fuse=fuse,
                   onnx=to_onnx, opset=opset, static_batch=static_batch, fp16=fp16, out=out, labels=labels,
                   model_kwargs=model_kwargs, mean=mean, std=std, int8=int8, calib_data=calib_data, rtol=rtol, atol=atol)
    if len(names) > 1:  # an unknown name or a target that may not be replaced fails before any export
        for name in names:
            check_export(name, **options)
    failures = []
    report = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    for name in names:
        if len(names) > 1:
            click.echo(f"== {name}", err=as_json)
        try:
            # --json: the document alone on stdout, whatever the model's code prints
            with console.stdout_to_stderr() if as_json else contextlib.nullcontext():
                artifact = export(name, **options, report=report)
        except ExportFailed as err:
            if len(names) == 1:
                raise
            failures.append(name)
            click.echo(f"cnnexport: failed: {name}: {err}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(artifact.manifest.to_dict(), indent=2))
    if failures:
        raise ExportFailed(f"{len(failures)} of {len(names)} exports failed: {', '.join(failures)}")


def _batch_sizes(ctx, param, value):
    if not value:
        return ()
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if any(s < 1 for s in sizes):
        raise click.BadParameter("batch sizes must be 1 or more")
    return sizes


@cli.command("verify")
@click.argument("artifacts", nargs=-1, type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="auto", show_default=True)
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="A folder of extra real images.")
@click.option("--batch-sizes", callback=_batch_sizes, help="Batch sizes to time (default 1,8 on CPU; 1,8,64 on GPU).")
@click.option("--bench/--no-bench", default=True, show_default=True, help="Time each runtime.")
@click.option("--threads", type=int, default=0, help="CPU threads for every runtime (default: all cores).")
@click.option("--rtol", type=float, help="Relative L2 tolerance (default 1e-5 on CPU, 1e-3 for TF32 on GPU).")
@click.option("--atol", type=float, help="Also bound the max absolute error.")
@click.option("--reference-evaluator/--no-reference-evaluator", default=True, show_default=True,
              help="Also run onnx.reference (slow, shares no code with the other runtimes).")
@click.option("--eval-data", help="A CIFAR-format tarball: also measure top-1 accuracy against its labels (eager, "
                                  "ONNX, int8; the first 1000 test images). Needs Paddle.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def verify_command(artifacts, device, images, batch_sizes, bench, threads, rtol, atol, reference_evaluator, eval_data,
                   as_json):
    """Check artifacts: file integrity, parity across runtimes, first divergence, speed.

    ARTIFACTS default to every finished artifact under artifacts/. Writes verify.json into each,
    and REPORT.md with latency.png beside them where those names are cnnexport's (else into each
    artifact). Exit 1 if any check fails.
    """
    console.load_paddle()
    options = dict(device=device, images=images, batch_sizes=batch_sizes, bench=bench, threads=threads, rtol=rtol,
                   atol=atol, reference_evaluator=reference_evaluator, eval_data=eval_data)
    paths = [Path(a) for a in artifacts] or finished_artifacts(Path("artifacts"))
    if not paths:
        raise BadInput("no finished artifacts under artifacts/: export one first, e.g. `cnnexport vanillanet_5 --fuse --onnx`")
    reports = []
    # --json: the document alone on stdout, whatever the models' code prints (a module imported to rebuild one)
    with console.stdout_to_stderr() if as_json else contextlib.nullcontext():
        for path in paths:  # exit 2 before any work
            check_verify(path, **options)
        with console.progress(len(paths), "verify", "artifact") as (show, advance):
            for path in paths:
                reports.append(verify(path, **options, progress=lambda step, p=path: show(p.name, step)))
                advance()
    written = write_reports(paths)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for report in reports:
            click.echo("\n".join(summary_lines(report)))
        for path, why in written:
            click.echo(f"report: {path}" + (f" ({why})" if why else ""))
    return 0 if all(r.passed for r in reports) else console.EXIT_FAILED


@cli.command("train")
@click.argument("model")
@click.option("--data", required=True, help="cifar-10-python.tar.gz, or a tarball in its format. Nothing is downloaded.")
@click.option("--epochs", type=int, help="Default: the family's notebook recipe.")
@click.option("--batch-size", type=int, help="Global batch (split across GPUs under paddle.distributed.launch).")
@click.option("--lr", type=float, help="Default: the family's notebook recipe.")
@click.option("--img-size", type=int, help="Default: the model's input size.")
@click.option("--out", help="Run directory (default runs/<model>-<time>).")
@click.option("--resume", help="A run directory or its last_checkpoint.pdckpt, to continue where it stopped.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="auto", show_default=True)
def train_command(model, data, epochs, batch_size, lr, img_size, out, resume, seed, device):
    """Train MODEL with its seed notebook's recipe (docs/TRAINING.md); export it with --weights."""
    console.load_paddle()
    from .train import run_training

    run_dir = run_training(model, data, epochs=epochs, batch_size=batch_size, lr=lr, img_size=img_size,
                           out=out, resume=resume, seed=seed, device=device,
                           progress="bar" if sys.stderr.isatty() else "lines")
    click.echo(f"run directory: {run_dir}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends in one line on stderr and exit code 2, never a traceback."""
    return console.run(cli, argv, "cnnexport")


if __name__ == "__main__":
    sys.exit(main())
