"""The `cnnexport` command line.

    cnnexport list                          # the zoo
    cnnexport vanillanet_5 --fuse --onnx    # rewrite + export one model into artifacts/
    cnnexport verify                        # parity + speed for what is in artifacts/
    cnnexport train MODEL --data cifar-10-python.tar.gz

Paddle is imported inside the commands that need it, so `--help` is instant and `verify` can run
its ONNX Runtime side on a machine without Paddle.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path

import click

from .errors import BadInput, ExportFailed, Terminated

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def _terminate(signum, frame):
    raise Terminated()


def _load_paddle() -> None:
    """Import Paddle (where installed) before any work, then take SIGTERM back: Paddle's import
    installs a handler that prints a C++ "FatalError" banner and skips every cleanup."""
    with contextlib.suppress(ImportError):
        import paddle  # noqa: F401
    signal.signal(signal.SIGTERM, _terminate)


@contextlib.contextmanager
def _progress(total: int, desc: str, unit: str):
    """(show(name, step), advance()): a bar on a terminal, one plain line per step otherwise
    (a log gets no carriage returns)."""
    if not sys.stderr.isatty():
        yield (lambda name, step: click.echo(f"{desc} {name}: {step}", err=True)), (lambda: None)
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False) as bar:
        yield (lambda name, step: bar.set_postfix_str(f"{name}: {step}")), bar.update


def _bad_input_types() -> tuple[type[Exception], ...]:
    types: list[type[Exception]] = [BadInput]  # ArtifactError is one
    if "models" in sys.modules:  # only if a command got as far as importing the zoo
        import models
        types += [models.UnknownModelError, models.InputSizeError, models.WeightsError]
    return tuple(types)


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

    _load_paddle()
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


@cli.command("export")
@click.argument("model", required=False)
@click.option("--all", "all_models", is_flag=False, flag_value="all", default=None, metavar="[NAMES]",
              help="Export every registered model, or a comma-separated list of names.")
@click.option("--weights", type=click.Path(dir_okay=False), help=".pdparams or .safetensors with the notebook's keys.")
@click.option("--num-classes", type=int, help="Classifier size (default: the zoo's, 10).")
@click.option("--img-size", type=int, help="Input side in pixels (default: the model's).")
@click.option("--seed-compat", is_flag=True, help="Reproduce the seed notebook's quirks (see README).")
@click.option("--fuse", is_flag=True, help="Apply every exact rewrite first (BN folding, VanillaNet deploy form, ...).")
@click.option("--onnx", "to_onnx", is_flag=True, help="Also write model.onnx (paddle2onnx).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (7..21).")
@click.option("--static-batch", type=int, help="Fix the batch axis to N instead of leaving it dynamic.")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (fp16 weights and compute, fp32 I/O).")
@click.option("--out", type=click.Path(file_okay=False), help="Artifact directory (default artifacts/<model>[-fused]).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (step lines go to stderr).")
def export_command(model, all_models, weights, num_classes, img_size, seed_compat, fuse, to_onnx, opset,
                   static_batch, fp16, out, as_json):
    """Rewrite (--fuse) and export MODEL to Paddle's inference format (and ONNX with --onnx)."""
    _load_paddle()
    import models

    from .export import ExportOptions, export, validate

    if bool(model) == bool(all_models):
        raise BadInput("name one MODEL, or use --all (see `cnnexport list`)")
    names = [model] if model else models.list_models() if all_models == "all" else all_models.split(",")
    if len(names) > 1 and (weights or img_size or out):
        raise BadInput("--weights, --img-size and --out apply to one model: export models one by one for those")
    plan = [ExportOptions(name, weights, num_classes, img_size, seed_compat, fuse, to_onnx, opset, static_batch,
                          fp16, out) for name in names]
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
            click.echo(json.dumps(manifest, indent=2))
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
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def verify_command(artifacts, device, images, batch_sizes, bench, threads, rtol, atol, reference_evaluator, as_json):
    """Check artifacts: file integrity, parity across runtimes, first divergence, speed.

    ARTIFACTS default to every finished artifact under artifacts/. Writes verify.json into each,
    and artifacts/REPORT.md with latency.png. Exit 1 if any check fails.
    """
    _load_paddle()
    from .artifact import finished_artifacts, load_manifest
    from .images import folder_photos
    from .report import write_report
    from .verify import VerifyOptions, resolve_device, summary_lines, verify_artifact

    opts = VerifyOptions(device, images, batch_sizes, bench, rtol, atol, threads, reference_evaluator)
    opts.validate()
    paths = [Path(a) for a in artifacts] or finished_artifacts(Path("artifacts"))
    if not paths:
        raise BadInput("no finished artifacts under artifacts/: export one first, e.g. `cnnexport vanillanet_5 --fuse --onnx`")
    for path in paths:
        load_manifest(path)  # not an artifact, or an unfinished or malformed one: exit 2 before any work
    if images:
        folder_photos(images)  # unreadable images: exit 2 before any work
    device = resolve_device(device)
    reports = []
    with _progress(len(paths), "verify", "artifact") as (show, advance):
        for path in paths:
            reports.append(verify_artifact(path, opts, device, progress=lambda step, p=path: show(p.name, step)))
            advance()
    roots = {p.resolve().parent for p in paths}
    written = [write_report(root) for root in sorted(roots)]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        for report in reports:
            click.echo("\n".join(summary_lines(report)))
        for path in filter(None, written):
            click.echo(f"report: {path}")
    return 0 if all(r["passed"] for r in reports) else EXIT_FAILED


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
    _load_paddle()
    from .train import run_training

    run_dir = run_training(model, data, epochs=epochs, batch_size=batch_size, lr=lr, img_size=img_size,
                           out=out, resume=resume, seed=seed, device=device,
                           progress="bar" if sys.stderr.isatty() else "lines")
    click.echo(f"run directory: {run_dir}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends in one line on stderr and exit code 2, never a traceback."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = cli.main(args=argv, prog_name="cnnexport", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("cnnexport: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        click.echo("cnnexport: terminated", err=True)
        return EXIT_TERMINATED
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else "cnnexport"
        click.echo(f"cnnexport: error: {err.format_message()} (see `{where} --help`)", err=True)
        return EXIT_USAGE
    except ExportFailed as err:
        click.echo(f"cnnexport: failed: {err}", err=True)
        return EXIT_FAILED
    except Exception as err:
        if isinstance(err, _bad_input_types()):
            click.echo(f"cnnexport: error: {err}", err=True)
            return EXIT_USAGE
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
