"""Running a click command as cnnexport does: exit codes, one-line errors, SIGTERM, progress lines.

Every command of `cnnexport` (cnnexport.cli; `python -m cnnexport` is the same) runs through `run`,
so that all answer bad input, failures and signals the same way. Paddle-free.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

import click

from .errors import MACHINE_WRITE_ERRORS, BadInput, ExportFailed, Terminated

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def _terminate(signum, frame):
    raise Terminated()


def load_paddle() -> None:
    """Import Paddle (where installed) before any work, then take SIGTERM back: Paddle's import
    installs a handler that prints a C++ "FatalError" banner and skips every cleanup."""
    with contextlib.suppress(ImportError):
        import paddle  # noqa: F401
    signal.signal(signal.SIGTERM, _terminate)


@contextlib.contextmanager
def stdout_to_stderr():
    """Everything written to stdout in the block goes to stderr instead, Python's and native code's
    alike (file descriptor 1 itself is pointed at stderr)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str):
    """(show(name, step), advance()): a bar on a terminal, one plain line per step otherwise
    (a log gets no carriage returns)."""
    if not sys.stderr.isatty():
        yield (lambda name, step: click.echo(f"{desc} {name}: {step}", err=True)), (lambda: None)
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False) as bar:
        yield (lambda name, step: bar.set_postfix_str(f"{name}: {step}")), bar.update

def run(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run `command`; bad input ends in one line on stderr and exit code 2, never a traceback."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("cnnexport: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        click.echo("cnnexport: terminated", err=True)
        return EXIT_TERMINATED
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else prog_name
        click.echo(f"cnnexport: error: {err.format_message()} (see `{where} --help`)", err=True)
        return EXIT_USAGE
    except ExportFailed as err:
        click.echo(f"cnnexport: failed: {err}", err=True)
        return EXIT_FAILED
    except BadInput as err:  # the zoo's, the weights', an artifact's and the options' errors alike
        click.echo(f"cnnexport: error: {err}", err=True)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in MACHINE_WRITE_ERRORS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        click.echo(f"cnnexport: failed: {err.strerror}{where}: free space or give a writable place, then run "
                   "it again", err=True)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code if isinstance(code, int) else 0
