"""The errors cnnexport raises for its user to act on, all `CnnexportError`s: bad input (exit 2 on
the command line) and a failed export or check (exit 1). The message is one line that says what
was wrong and what to do; the command line prints it as it is."""


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
