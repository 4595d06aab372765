"""Entries of the evaluation cache (``<run>/cache/``, robustgsl/schema/run.py): arrays computed from a
checkpoint and a set of images, kept so that the next evaluation need not compute them again.

An entry is named by its caller after what it was computed from (the weights' and the images' content
digests, the kind of device), and is two files: ``<entry>.npz``, an uncompressed archive of named
arrays with one row per image, and ``<entry>.npz.json``, its record: the archive's SHA-256 and each
array's shape and dtype. An entry is used only when its record verifies; a truncated, damaged or
changed entry (or one without a record) is recomputed by the caller and written again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robustgsl.io import save_npz_atomic, sha256_file, write_json_atomic

RECORD_SUFFIX = ".json"


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _describe(arrays: dict[str, np.ndarray]) -> dict:
    return {name: {"shape": list(array.shape), "dtype": array.dtype.str} for name, array in sorted(arrays.items())}


def read_entry(path: Path, n_rows: int) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(arrays, None) when the entry verifies and holds ``n_rows`` rows per array; (None, None) when
    there is no entry; (None, why) when there is one that cannot be used."""
    path = Path(path)
    record_file = record_path(path)
    if not path.exists() and not record_file.exists():
        return None, None
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        digest = sha256_file(path)
    except (OSError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    if not isinstance(record, dict) or digest != record.get("sha256"):
        return None, "its SHA-256 differs from its record (changed or damaged)"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as error:
        return None, f"not a readable .npz archive ({error})"
    if _describe(arrays) != record.get("arrays"):
        return None, "its arrays' shapes or dtypes differ from its record"
    if any(array.shape[:1] != (n_rows,) for array in arrays.values()):
        return None, f"it holds other than {n_rows} rows"
    return arrays, None


def write_entry(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the archive, then its record (a kill between the two leaves an entry without a record,
    which is recomputed). Raises robustgsl.errors.WriteError when the folder cannot be written."""
    save_npz_atomic(path, arrays)
    write_json_atomic(record_path(path), {"sha256": sha256_file(path), "arrays": _describe(arrays)})
