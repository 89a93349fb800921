"""The errors diffedu raises for input a user can fix. Each message says what was wrong and what to do.

The command line turns these (and OSError) into one `error:` line and exit code 2; anything else is
a bug, and keeps its traceback.
"""


class DiffeduError(ValueError):
    """Bad input: a wrong name, size, shape, value or file. The message says how to fix it."""


class CheckpointError(DiffeduError):
    """A checkpoint that is missing, damaged, or made for another model."""


class DataError(DiffeduError):
    """A data set file that is missing or not in the layout the reader expects."""
