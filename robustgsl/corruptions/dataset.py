"""Write a corrupted test set in the released CIFAR-10-C layout: resumable, verified, on all cores.

The folder format (``<corruption>.npy``, ``labels.npy``, ``manifest.json``) is robustgsl/schema/corruption.py.
Every file is written to a temporary file and renamed, and the manifest is updated after each corruption
(``manifest.CorruptionManifest``), so an interrupted run leaves only whole files and resumes by skipping
the files whose manifest entry verifies. A folder made from another seed, data set, image set or severity
list is refused unless ``overwrite``. The chunks of work run in this process or on worker processes
(``schedule``); since each image draws from its own generator, the bytes do not depend on either.

    write_corruption_dataset(images, labels, out_dir) = check the job -> open the folder (refuse, overwrite
    or resume) -> labels.npy -> each corruption not yet verified: compute, save, record
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from robustgsl import __version__
from robustgsl.corruptions import (
    ALL_CORRUPTIONS,
    CONSTANTS_SOURCE,
    CORRUPTIONS,
    GENERATOR_VERSION,
    SEVERITIES,
    check_images,
    check_seed,
    parse_severities,
    resolve_corruptions,
    severity_params,
)
from robustgsl.corruptions.faithfulness import exactness
from robustgsl.corruptions.manifest import CorruptionManifest, file_problem, identity_differences, read_manifest
from robustgsl.corruptions.schedule import DEFAULT_CHUNK_SIZE, make_scheduler
from robustgsl.errors import InputError
from robustgsl.io import check_writable_folder, remove_stale_temporaries, save_npy_atomic
from robustgsl.schema import corruption as schema

__all__ = ["array_sha256", "default_out_dir", "read_manifest", "verify_corruption_dataset", "write_corruption_dataset"]

# Folder names of the released data sets; other data sets get their name in capitals.
DATASET_FOLDERS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "DIGITS", "svhn": "SVHN"}


def default_out_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``corruptions/<DATASET>-C`` relative to the current folder, e.g. corruptions/CIFAR-10-C; an image
    folder's (``data_dir``) is ``corruptions/<its name>-C``."""
    if dataset == "imagefolder" and data_dir is not None:
        return Path("corruptions") / f"{Path(data_dir).resolve().name}-C"
    return Path("corruptions") / f"{DATASET_FOLDERS.get(dataset, dataset.upper())}-C"


def verify_corruption_dataset(
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] | str = CORRUPTIONS,
    severities: Iterable[int] | str = SEVERITIES,
    *,
    seed: int | None = None,
    dataset: str | None = None,
    n_images: int | None = None,
    check_hashes: bool = True,
    images_sha256: str | None = None,
) -> list[str]:
    """Problems that keep ``out_dir`` from serving these corruptions and severities; [] when it does.

    Checks the manifest, that it covers the severities (and, when given, the seed, data set, image
    count and clean images' ``array_sha256``), and that labels.npy and each ``<corruption>.npy`` exist
    and match their recorded size and SHA-256. Each problem is one line naming the file or field.
    """
    out_dir = Path(out_dir)
    names = resolve_corruptions(corruptions)
    wanted = parse_severities(severities)
    if not out_dir.is_dir():
        return [f"{out_dir}: folder does not exist"]
    try:
        manifest = read_manifest(out_dir)
    except InputError as error:
        return [str(error)]
    if manifest is None:
        return [f"{out_dir / schema.MANIFEST_FILE}: missing (not made by robustgsl corrupt, or interrupted before "
                "start)"]
    problems = []
    missing = sorted(set(wanted) - set(manifest.get("severities", [])))
    if missing:
        problems.append(f"severities {missing} not in the folder (it holds {manifest.get('severities')})")
    for field, expected in (("seed", seed), ("dataset", dataset), ("n_images", n_images)):
        if expected is not None and manifest.get(field) != expected:
            problems.append(f"{field}: folder has {manifest.get(field)!r}, expected {expected!r}")
    if images_sha256 is not None and manifest.get("images_sha256") != images_sha256:
        problems.append("images_sha256: the folder was made from other clean test images")
    for file_name in [schema.LABELS_FILE] + [schema.data_file(name) for name in names]:
        problem = file_problem(out_dir, manifest, file_name, check_hashes)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------- writer


@dataclass(frozen=True)
class CorruptionJob:
    """One call of ``write_corruption_dataset``, its arguments checked (``CorruptionJob.checked``)."""

    images: np.ndarray
    labels: np.ndarray
    out_dir: Path
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int = 0
    workers: int = 1
    dataset_name: str = "cifar10"
    overwrite: bool = False
    quiet: bool = False
    log: Callable[[str], None] = lambda message: None
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @classmethod
    def checked(cls, images, labels, out_dir, corruptions, severities, seed, workers, dataset_name, overwrite,
                quiet, log, chunk_size) -> "CorruptionJob":
        """InputError now, before anything is written, for any bad argument."""
        names = resolve_corruptions(corruptions)
        severities = parse_severities(severities)
        seed = check_seed(seed)
        for name in names:
            severity_params(name)
            check_images(images, name)
        labels = _check_labels(labels, len(images))
        if len(images) == 0:
            raise InputError("no images to corrupt (got an empty batch)")
        workers = (os.cpu_count() or 1) if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise InputError(f"workers must be a positive integer, got {workers!r}")
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        out_dir = Path(out_dir)
        check_writable_folder(out_dir, "output folder")
        return cls(images, labels, out_dir, names, severities, seed, int(workers), dataset_name, overwrite, quiet,
                   log or (lambda message: None), int(chunk_size))

    def identity(self) -> dict:
        """The manifest's identity fields for this job's data."""
        return {
            "generator_version": GENERATOR_VERSION,
            "dataset": self.dataset_name,
            "seed": self.seed,
            "n_images": int(len(self.images)),
            "image_shape": list(self.images.shape[1:]),
            "severities": list(self.severities),
            "images_sha256": array_sha256(self.images),
            "labels_sha256": array_sha256(self.labels),
        }


def write_corruption_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] | str = CORRUPTIONS,
    severities: Iterable[int] | str = SEVERITIES,
    seed: int = 0,
    workers: int | None = None,
    dataset_name: str = "cifar10",
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict:
    """Corrupt ``images`` with every corruption and severity and write the folder; returns the manifest.

    ``workers``: processes (default: all local cores, ``os.cpu_count()``); 1 runs in this process.
    Files whose manifest entry verifies are skipped (resume). A folder holding data from another
    seed, data set, image set or severity list, or .npy files without a manifest, is refused
    unless ``overwrite``, which deletes this writer's files there first.
    """
    job = CorruptionJob.checked(images, labels, out_dir, corruptions, severities, seed, workers, dataset_name,
                                overwrite, quiet, log, chunk_size)
    manifest = _open_folder(job)
    _write_labels(job, manifest)
    todo = _unverified_corruptions(job, manifest)
    if todo:
        _write_corruptions(job, manifest, todo)
    return manifest.data


def _open_folder(job: CorruptionJob) -> CorruptionManifest:
    """The folder's manifest to resume, or a new one; refuses another data set's folder unless overwrite."""
    identity = job.identity()
    existing = read_manifest(job.out_dir) if not job.overwrite else None
    if existing is not None:
        differences = identity_differences(existing, identity)
        if differences:
            raise InputError(
                f"{job.out_dir} holds a corruption data set made differently ({'; '.join(differences)}); choose "
                "another --out or pass --overwrite to replace it")
    elif not job.overwrite and job.out_dir.is_dir():
        _refuse_stray_arrays(job.out_dir)
    if job.overwrite:
        _remove_own_files(job)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    # Temporaries of a killed writer; other jobs writing into the same folder keep theirs (robustgsl.io).
    remove_stale_temporaries(job.out_dir, names=_own_file_names())
    manifest = (CorruptionManifest(job.out_dir, existing) if existing is not None
                else CorruptionManifest.new(job.out_dir, identity, CONSTANTS_SOURCE))
    manifest.data.update(robustgsl_version=__version__, versions=_library_versions(),
                         constants_source=CONSTANTS_SOURCE, exactness=exactness())
    return manifest


def _refuse_stray_arrays(out_dir: Path) -> None:
    strays = sorted(p.name for p in out_dir.glob(f"*{schema.DATA_SUFFIX}"))
    if strays:
        raise InputError(
            f"{out_dir} holds .npy files but no {schema.MANIFEST_FILE} ({', '.join(strays[:4])}"
            f"{', ...' if len(strays) > 4 else ''}), e.g. a downloaded CIFAR-10-C; choose another --out or "
            "pass --overwrite to replace them")


def _own_file_names() -> list[str]:
    """The files this writer may put in a folder (data, labels, manifest)."""
    return [schema.data_file(name) for name in ALL_CORRUPTIONS] + [schema.LABELS_FILE, schema.MANIFEST_FILE]


def _remove_own_files(job: CorruptionJob) -> None:
    removed = [job.out_dir / name for name in _own_file_names() if (job.out_dir / name).exists()]
    for path in removed:
        path.unlink()
    if removed:
        job.log(f"--overwrite: removed {len(removed)} files from {job.out_dir}")


def _write_labels(job: CorruptionJob, manifest: CorruptionManifest) -> None:
    """labels.npy unless it verifies; the manifest (with this writer's versions) is saved either way."""
    if manifest.problem(schema.LABELS_FILE) is None:
        manifest.save()
        return
    stacked = np.tile(job.labels.astype(schema.LABEL_DTYPE), len(job.severities))
    save_npy_atomic(job.out_dir / schema.LABELS_FILE, stacked)
    manifest.record(schema.LABELS_FILE, shape=list(stacked.shape))


def _unverified_corruptions(job: CorruptionJob, manifest: CorruptionManifest) -> list[str]:
    todo = []
    for name in job.corruptions:
        if manifest.problem(schema.data_file(name)) is None:
            job.log(f"{name}: {job.out_dir / schema.data_file(name)} verifies, skipped")
        else:
            todo.append(name)
    return todo


def _write_corruptions(job: CorruptionJob, manifest: CorruptionManifest, todo: list[str]) -> None:
    """Compute each corruption in ``todo`` into one buffer, then save and record it."""
    # One output buffer for every corruption: a fresh 150 MB array per corruption would be page-faulted
    # in again each time. Every chunk of it is rewritten before each save (the chunks cover all rows).
    n = len(job.images)
    out = np.empty(schema.data_shape(n, job.images.shape[1:], len(job.severities)), dtype=schema.IMAGE_DTYPE)
    with make_scheduler(job.images, job.severities, job.seed, job.chunk_size, job.quiet, job.workers) as scheduler:
        started = time.perf_counter()
        for name in scheduler.fill(todo, out):
            path = job.out_dir / schema.data_file(name)
            save_npy_atomic(path, out)
            seconds = time.perf_counter() - started  # since the previous file was written
            started = time.perf_counter()
            manifest.record(schema.data_file(name), shape=list(out.shape), corruption=name,
                            constants=_jsonable(severity_params(name)), seconds=round(seconds, 2))
            job.log(f"{name}: wrote {path} {tuple(out.shape)} in {seconds:.1f} s "
                    f"({len(out) / max(seconds, 1e-9):,.0f} images/s)")


def _check_labels(labels: object, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be {n} integers (one per image), got dtype {labels.dtype} and shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() > 255):
        raise InputError(f"labels must be in 0..255 to be stored as uint8, got {labels.min()}..{labels.max()}")
    return labels


def array_sha256(array: np.ndarray) -> str:
    """The manifest's images_sha256 / labels_sha256 of an array: dtype, shape, then its C-order bytes."""
    digest = sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _library_versions() -> dict:
    """Versions of what computes the bytes (NumPy, SciPy, Pillow, OpenCV) and of Python."""
    import cv2
    import PIL
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__, "pillow": PIL.__version__,
            "opencv": cv2.__version__, "python": sys.version.split()[0]}
