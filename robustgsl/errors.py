"""Exceptions for bad input. The CLI turns them into a one-line message and a non-zero exit."""


class InputError(ValueError):
    """Bad input from the user: an unknown name, a value out of range, a missing or corrupt file.

    The message names the bad value and, where there is one, how to fix it.
    """


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); the message says what was kept and how to go on."""


class WriteError(OSError):
    """A file or folder could not be written (full disk, read-only file system, no permission).

    The message names the path and the cause; the earlier version of the file, if any, is unchanged.
    """
