"""The errors the command line maps to exit codes: bad input is 2, a failed export or check is 1."""


class BadInput(ValueError):
    """Something the user asked for that cannot be done as asked (exit 2)."""


class ExportFailed(RuntimeError):
    """An export step failed or its outputs disagree with the eager model (exit 1)."""
