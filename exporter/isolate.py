"""Run a function in a child process, so that a native crash is a reported failure, not our death.

Paddle Inference (its oneDNN CPU path), paddle2onnx (an opset it does not support) and other
native runtimes can abort or segfault the process that calls them. `call_isolated` runs the
call in a fresh interpreter (spawn: no inherited threads or runtime state), returns its result,
and turns a death by signal into `ChildCrashed` carrying the signal and the tail of the child's
stderr (which goes to an unnamed file, so that native logs stay out of the CLI's output). The
child dies with its parent, even when the parent is killed with SIGKILL.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import tempfile
import threading
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


_PR_SET_PDEATHSIG = 1
_QUIET_WARNING = "ignore:No ccache found:UserWarning"


def _die_with_parent(parent: int) -> None:
    """SIGKILL this child when its parent dies, however it dies (Linux); a child whose parent is
    already gone exits at once, so it never writes into a dead run's staging directory."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


class _InheritedFd:
    """An open file descriptor that a spawned child receives (multiprocessing passes it across)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup) -> int:
    return dup.detach()


def _child_main(conn, log_fd: int, parent: int, fn: Callable, args: tuple, kwargs: dict) -> None:
    _die_with_parent(parent)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as err:  # reported to the parent, which decides
        conn.send(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
    finally:
        conn.close()


def _tail(log, lines: int = 15, window: int = 1 << 16) -> str:
    size = os.fstat(log.fileno()).st_size
    text = os.pread(log.fileno(), window, max(0, size - window)).decode(errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:])


def _start_whole(proc) -> None:
    """Start the child with Ctrl-C and SIGTERM held back until it has all it needs: interrupted
    half-way, it would read a truncated start-up message and print a traceback into our stderr.

    Held back in Python, not with a signal mask: a mask covers only this thread, and the kernel
    hands a process's signal to any thread (Paddle's and ONNX Runtime's pools among them).
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread has handlers
        proc.start()
        return
    pending: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    handlers = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in held}
    try:
        proc.start()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """os.environ with `variables` set, restored on exit (a spawned child copies it when it starts)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def call_isolated(fn: Callable, *args, what: str | None = None, timeout: float | None = None,
                  env: dict[str, str] | None = None, **kwargs) -> Any:
    """fn(*args, **kwargs) in a spawned child; `fn` and its arguments must be picklable. `env`: variables
    the child's interpreter starts with (set before it imports anything, even the parent's __main__)."""
    what = what or getattr(fn, "__name__", "child")
    # The child imports the caller's __main__ again before it runs anything of ours (spawn does), and a
    # script that imports Paddle before cnnexport would print Paddle's import-time warning each time.
    quiet = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), _QUIET_WARNING)))
    env = {"PYTHONWARNINGS": quiet, **(env or {})}
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    # The child's stdout and stderr go to a file without a name: nothing is left in $TMPDIR,
    # whatever kills either process.
    with tempfile.TemporaryFile(prefix="cnnexport-child-") as log:
        proc = ctx.Process(target=_child_main, daemon=True,
                           args=(sender, _InheritedFd(log.fileno()), os.getpid(), fn, args, kwargs))
        try:
            with _environment(env):
                _start_whole(proc)
            sender.close()
            try:
                if timeout is not None and not receiver.poll(timeout):
                    proc.kill()
                    raise ChildCrashed(f"{what} did not finish within {timeout:.0f}s", None, _tail(log))
                message = receiver.recv()
            except EOFError:  # the child died before it could answer
                proc.join()
                code = proc.exitcode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
                raise ChildCrashed(f"{what} crashed ({how})", code, _tail(log)) from None
            proc.join()
            if message[0] == "error":
                raise ChildFailed(f"{what}: {message[1]}", _tail(log))
            return message[1]
        finally:
            receiver.close()
            if proc.is_alive():
                proc.kill()
                proc.join()
