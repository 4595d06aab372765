"""Check a corruption folder against robustgsl/schema/corruption.py: file names, manifest fields, arrays.

``corruption_folder_problems`` returns a list of problems (empty: the folder follows the schema); the
tests run it on what the real writer produces.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

from robustgsl.schema import corruption as schema


def manifest_problems(manifest) -> list[str]:
    if not isinstance(manifest, dict):
        return [f"manifest is a {type(manifest).__name__}, not an object"]
    fields = schema.names(schema.MANIFEST_FIELDS)
    problems = [f"missing field {name!r}" for name in fields if name not in manifest]
    problems += [f"unknown field {name!r}" for name in manifest if name not in fields]
    if manifest.get("generator", schema.GENERATOR) != schema.GENERATOR:
        problems.append(f"generator is {manifest['generator']!r}, not {schema.GENERATOR!r}")
    severities = manifest.get("severities", [])
    if list(severities) != sorted(set(severities)) or not set(severities) <= {1, 2, 3, 4, 5}:
        problems.append(f"severities {severities} are not distinct, ascending values in 1..5")
    exactness = manifest.get("exactness", {})
    if sorted(exactness) != sorted(schema.names(schema.EXACTNESS_FIELDS)):
        problems.append(f"exactness has {sorted(exactness)}, the schema {sorted(schema.names(schema.EXACTNESS_FIELDS))}")
    for field in ("created_at", "updated_at"):
        if field in manifest and datetime.fromisoformat(manifest[field]).utcoffset() is None:
            problems.append(f"{field}: {manifest[field]!r} has no time zone")
    for file_name, entry in (manifest.get("files") or {}).items():
        wanted = schema.names(schema.FILE_FIELDS)
        if file_name != schema.LABELS_FILE:
            wanted += schema.names(schema.DATA_FILE_FIELDS)
        if sorted(entry) != sorted(wanted):
            problems.append(f"files[{file_name!r}] has {sorted(entry)}, the schema {sorted(wanted)}")
    return problems


def array_problems(array: np.ndarray, file_name: str, manifest: dict) -> list[str]:
    """The layout: uint8 (S*N, H, W, 3) images, uint8 (S*N,) labels, C order."""
    n, severities = manifest["n_images"], manifest["severities"]
    if file_name == schema.LABELS_FILE:
        dtype, shape = schema.LABEL_DTYPE, (len(severities) * n,)
    else:
        dtype, shape = schema.IMAGE_DTYPE, schema.data_shape(n, manifest["image_shape"], len(severities))
    problems = []
    if array.dtype != dtype or array.shape != shape:
        problems.append(f"{file_name}: {array.dtype} {array.shape}, the layout says {dtype} {shape}")
    if not array.flags.c_contiguous:
        problems.append(f"{file_name}: not in C order")
    return problems


def corruption_folder_problems(folder: Path) -> list[str]:
    manifest = json.loads((folder / schema.MANIFEST_FILE).read_text())
    problems = manifest_problems(manifest)
    for file_name, entry in manifest["files"].items():
        if file_name != schema.LABELS_FILE and file_name != schema.data_file(entry.get("corruption")):
            problems.append(f"{file_name}: holds {entry.get('corruption')!r}, whose file is "
                            f"{schema.data_file(entry.get('corruption'))}")
        array = np.load(folder / file_name, mmap_mode="r")
        problems += array_problems(array, file_name, manifest)
        if entry.get("shape") != list(array.shape):
            problems.append(f"{file_name}: shape {array.shape}, manifest says {entry.get('shape')}")
    return problems
