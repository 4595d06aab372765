"""Progress bars that stay quiet under ``--quiet`` and when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def progress(iterable=None, *, quiet: bool = False, **kwargs):
    """A tqdm bar over ``iterable``, disabled when ``quiet`` or when not writing to a TTY."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not progress_enabled(quiet), **kwargs)
