"""The errors cnnexport raises for its user to act on, all `CnnexportError`s: bad input (exit 2 on
the command line) and a failed export or check (exit 1). The message is one line that says what
was wrong and what to do; the command line prints it as it is."""
from __future__ import annotations

import errno

# The machine's, not the input's: a full disk, a quota, a file too large, a file system gone read-only.
MACHINE_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class CnnexportError(Exception):
    """The base of every error cnnexport raises on purpose; anything else is a bug."""


class BadInput(CnnexportError, ValueError):
    """Something the user asked for that cannot be done as asked (exit 2)."""


class ExportFailed(CnnexportError, RuntimeError):
    """An export step failed or its outputs disagree with the eager model (exit 1)."""


class Terminated(BaseException):
    """SIGTERM arrived (what `timeout`, CI and service managers send): unwind as for Ctrl-C (exit 143).

    A BaseException, so that no `except Exception` swallows it and every `finally` (staging
    directories, locks, child processes) still runs.
    """


class ModelExited(BadInput):
    """A model's own code ended the process (sys.exit, os._exit, a signal) while being imported, built
    or run: bad input, not the end of the caller's program with no word said (exit 2)."""

    def __init__(self, name: str, how: str):
        super().__init__(f"{name}: the model's code {how} while being imported, built or run: cnnexport can only "
                         "export a model whose import, construction and forward return; remove the exit")

    @classmethod
    def called_exit(cls, name: str, err: SystemExit) -> ModelExited:
        return cls(name, f"called sys.exit({err.code!r})")
