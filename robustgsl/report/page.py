"""What the evaluation page and the sweep page share: the template environment (autoescaped: every value
from a file is untrusted text), relative links that cannot read as a URL scheme, readable time stamps."""

from __future__ import annotations

import functools
import os
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2


@functools.cache  # one environment per process, so each template is compiled once
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("robustgsl.report", "templates"),
        autoescape=True,  # every value from a file is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def href(target: Path, page_dir: Path) -> str:
    # Percent-quote everything but "/" so no path can read as a URL scheme ("javascript:", "http:").
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return quote(Path(relative).as_posix(), safe="/")


def readable_time(value: Any) -> Any:
    """An ISO time stamp as "2024-05-02 09:30:00 UTC" (no "T", named zone); anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = stamp.strftime("%Y-%m-%d %H:%M:%S")
    offset = stamp.utcoffset()
    if offset is None:
        return text
    return text + (" UTC" if not offset else f" UTC{stamp.strftime('%z')[:3]}:{stamp.strftime('%z')[3:]}")
