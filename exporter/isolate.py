"""Run a function in a child process, so that a native crash is a reported failure, not our death.

Paddle Inference (its oneDNN CPU path), paddle2onnx (an opset it does not support) and other
native runtimes can abort or segfault the process that calls them. `call_isolated` runs the
call in a fresh interpreter (spawn: no inherited threads or runtime state), returns its result,
and turns a death by signal into `ChildCrashed` carrying the signal and the tail of the child's
stderr (which goes to a file, so that native logs stay out of the CLI's output).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import traceback
from typing import Any
from collections.abc import Callable


class ChildCrashed(RuntimeError):
    """The child died (a signal, a non-zero exit) or was killed at its time limit."""

    def __init__(self, message: str, exitcode: int | None, log_tail: str):
        self.exitcode = exitcode
        self.signal = signal.Signals(-exitcode).name if exitcode is not None and exitcode < 0 else None
        self.log_tail = log_tail
        super().__init__(message)


class ChildFailed(RuntimeError):
    """The function raised in the child; the message carries the child's exception."""

    def __init__(self, message: str, log_tail: str):
        self.log_tail = log_tail
        super().__init__(message)


def _child_main(conn, log_path: str, fn: Callable, args: tuple, kwargs: dict) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as err:  # reported to the parent, which decides
        conn.send(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
    finally:
        conn.close()


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def call_isolated(fn: Callable, *args, what: str | None = None, timeout: float | None = None, **kwargs) -> Any:
    """fn(*args, **kwargs) in a spawned child; `fn` and its arguments must be picklable."""
    what = what or getattr(fn, "__name__", "child")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="cnnexport-child-", suffix=".log", delete=False) as log:
        log_path = log.name
    proc = ctx.Process(target=_child_main, args=(sender, log_path, fn, args, kwargs), daemon=True)
    try:
        proc.start()
        sender.close()
        try:
            if timeout is not None and not receiver.poll(timeout):
                proc.kill()
                raise ChildCrashed(f"{what} did not finish within {timeout:.0f}s", None, _tail(log_path))
            message = receiver.recv()
        except EOFError:  # the child died before it could answer
            proc.join()
            code = proc.exitcode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            raise ChildCrashed(f"{what} crashed ({how})", code, _tail(log_path)) from None
        proc.join()
        if message[0] == "error":
            raise ChildFailed(f"{what}: {message[1]}", _tail(log_path))
        return message[1]
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        os.unlink(log_path)
