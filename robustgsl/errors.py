"""Exceptions for bad input. The CLI turns them into a one-line message and a non-zero exit."""


class InputError(ValueError):
    """Bad input from the user: an unknown name, a value out of range, a missing or corrupt file.

    The message names the bad value and, where there is one, how to fix it.
    """


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); the message says what was kept and how to go on."""
