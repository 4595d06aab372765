"""The manifest of a corruption folder (format: robustgsl/schema/corruption.py): reading it, checking a file
against it, and recording files in it.

Several jobs may write different corruptions into one folder (e.g. split across cluster jobs): every
write of the manifest, the one at start-up included, happens under the folder's lock, starts from the
manifest on disk (what the other jobs recorded, possibly since this job read it) and adds only the
entries this job recorded itself, and replaces the file atomically. So no job erases or rolls back
another's entry, and no reader sees half a manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from robustgsl.errors import InputError
from robustgsl.io import sha256_file, write_json_atomic
from robustgsl.schema import corruption as schema


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The folder's manifest, or None when there is none; InputError when it is unreadable."""
    path = Path(out_dir) / schema.MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}; delete it or pass --overwrite") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{path} is not a robustgsl corruption manifest; delete it or pass --overwrite")
    return manifest


def file_problem(out_dir: Path, manifest: dict, file_name: str, check_hash: bool = True) -> str | None:
    """Why ``file_name`` cannot be trusted, or None when its manifest entry verifies."""
    entry = manifest["files"].get(file_name)
    path = out_dir / file_name
    if entry is None:
        return f"{file_name}: not recorded in {schema.MANIFEST_FILE}" + (" (file present)" if path.exists() else "")
    if not path.exists():
        return f"{file_name}: missing"
    if path.stat().st_size != entry.get("bytes"):
        return f"{file_name}: size {path.stat().st_size} bytes, manifest says {entry.get('bytes')}"
    if check_hash and sha256_file(path) != entry.get("sha256"):
        return f"{file_name}: SHA-256 differs from the manifest (file changed or damaged)"
    return None


def identity_differences(manifest: dict, identity: dict) -> list[str]:
    """One line per identity field in which ``manifest`` differs from ``identity`` (another data set)."""
    differing = [f for f in schema.names(schema.IDENTITY_FIELDS) if manifest.get(f) != identity[f]]
    return [f"{f}: folder has {manifest.get(f)!r}, this run {identity[f]!r}" if "sha256" not in f
            else f"{f}: the {'images' if f.startswith('images') else 'labels'} differ" for f in differing]


@contextlib.contextmanager
def manifest_lock(out_dir: Path):
    """Serialise manifest updates of jobs that write different corruptions into one folder."""
    with open(out_dir / schema.LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CorruptionManifest:
    """The manifest of the folder ``out_dir`` as this writer holds it (``data``), kept in step with disk."""

    def __init__(self, out_dir: Path, data: dict):
        self.out_dir, self.data = Path(out_dir), data
        self.recorded: dict[str, dict] = {}  # the entries this writer made, which win over the disk's

    @classmethod
    def new(cls, out_dir: Path, identity: dict, constants_source: str) -> "CorruptionManifest":
        return cls(out_dir, {"generator": schema.GENERATOR, "layout": schema.LAYOUT, **identity,
                             "constants_source": constants_source, "created_at": now(), "files": {}})

    def problem(self, file_name: str) -> str | None:
        return file_problem(self.out_dir, self.data, file_name)

    def record(self, file_name: str, **extra) -> None:
        """Enter ``file_name`` (already written) with its SHA-256, size and ``extra``, then save."""
        path = self.out_dir / file_name
        self.save({file_name: {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}})

    def save(self, entries: dict | None = None) -> None:
        """Under the folder's lock: start from the files on disk, add what this writer recorded (``entries``
        now, and before), write. Another job's entries, even ones newer than this writer's copy, stay."""
        with manifest_lock(self.out_dir):
            on_disk = read_manifest(self.out_dir)
            identity = schema.names(schema.IDENTITY_FIELDS)
            self.recorded.update(entries or {})
            if on_disk is not None and all(on_disk.get(f) == self.data.get(f) for f in identity):
                self.data["files"] = {**on_disk["files"], **self.recorded}
            else:  # a new folder, or another data set's manifest this writer replaces (--overwrite)
                self.data["files"] = {**self.data["files"], **self.recorded}
            if entries:
                self.data["updated_at"] = now()
            write_json_atomic(self.out_dir / schema.MANIFEST_FILE, self.data)
