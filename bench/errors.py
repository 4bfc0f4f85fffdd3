"""Project-wide error type: the CLI prints any BenchError as one line and exits non-zero."""


class BenchError(Exception):
    """A user-facing error (bad value, missing file, corrupt checkpoint). Its message is one line."""
