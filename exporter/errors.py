"""The errors the command line maps to exit codes: bad input is 2, a failed export or check is 1."""


class BadInput(ValueError):
    """Something the user asked for that cannot be done as asked (exit 2)."""


class ExportFailed(RuntimeError):
    """An export step failed or its outputs disagree with the eager model (exit 1)."""


class Terminated(BaseException):
    """SIGTERM arrived (what `timeout`, CI and service managers send): unwind as for Ctrl-C (exit 143).

    A BaseException, so that no `except Exception` swallows it and every `finally` (staging
    directories, locks, child processes) still runs.
    """
