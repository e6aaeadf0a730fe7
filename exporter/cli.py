"""The `cnnexport` command line.

    cnnexport list                          # the zoo
    cnnexport vanillanet_5 --fuse --onnx    # rewrite + export one model into artifacts/
    cnnexport verify                        # parity + speed for what is in artifacts/
    cnnexport train MODEL --data cifar-10-python.tar.gz

Paddle is imported inside the commands that need it, so `--help` is instant and `verify` can run
its ONNX Runtime side on a machine without Paddle.
"""
from __future__ import annotations

import json
import math
import sys

import click

from . import console
from .errors import BadInput, ExportFailed
from .verify import verify_command


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
    from .zoo import zoo_table

    rows = zoo_table(pattern)
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
        raise click.BadParameter(f"{value!r} is not JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value!r} is not a JSON object of keyword arguments")
    return parsed


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
@click.option("--img-size", type=int, help="Input side in pixels (default: the model's).")
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
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (step lines go to stderr).")
def export_command(model, all_models, weights, num_classes, img_size, seed_compat, fuse, to_onnx, opset,
                   static_batch, fp16, int8, calib_data, out, labels, model_kwargs, mean, std, as_json):
    """Rewrite (--fuse) and export MODEL to Paddle's inference format (and ONNX with --onnx).

    MODEL is a zoo name (`cnnexport list`) or `module.path:callable`, any importable callable that
    returns a paddle.nn.Layer (importing it runs its code).
    """
    console.load_paddle()
    from . import models
    from .export import ExportOptions, export, validate

    if bool(model) == bool(all_models):
        raise BadInput("name one MODEL, or use --all (see `cnnexport list`)")
    names = [model] if model else models.list_models() if all_models == "all" else all_models.split(",")
    if len(names) > 1 and (weights or img_size or out or labels):
        raise BadInput("--weights, --img-size, --out and --labels apply to one model: export models one by one for those")
    plan = [ExportOptions(name, weights, num_classes, img_size, seed_compat, fuse, to_onnx, opset, static_batch,
                          fp16, out, labels, model_kwargs, mean, std, int8=int8, calib_data=calib_data) for name in names]
    for opts in plan:
        validate(opts)  # an unknown name or a target that may not be replaced fails before any export starts
    failures = []
    for opts in plan:
        name = opts.model
        report = (lambda line: click.echo(line, err=True)) if as_json else click.echo
        if len(names) > 1:
            click.echo(f"== {name}", err=as_json)
        try:
            manifest = export(opts, report)
        except ExportFailed as err:
            if len(names) == 1:
                raise
            failures.append(name)
            click.echo(f"cnnexport: failed: {name}: {err}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(manifest.to_dict(), indent=2))
    if failures:
        raise ExportFailed(f"{len(failures)} of {len(names)} exports failed: {', '.join(failures)}")


cli.add_command(verify_command)


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
