"""Where an evaluation's corrupted test sets come from, and the checks that they fit its test set.

A folder given with ``--corruption-dir`` is either robustgsl's (a manifest.json, verified against the test
images) or a released one (CIFAR-10-C's layout: one .npy per corruption, 5 severities x the test set, and
labels.npy; checked for shape, dtype and labels). Without one, robustgsl's own folder for the data set is
verified against its manifest and generated where it is missing or incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgsl.corruptions import CONSTANTS_SOURCE, SEVERITIES
from robustgsl.corruptions.dataset import (
    array_sha256, default_out_dir, read_manifest, verify_corruption_dataset, write_corruption_dataset,
)
from robustgsl.errors import InputError
from robustgsl.io import sha256_file
from robustgsl.schema import corruption as corruption_schema

Log = Callable[[str], None]


def open_corruption_file(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable .npy file ({error}); regenerate or re-download it") from None


def file_digests(folder: Path, names: Sequence[str], manifest: dict | None) -> dict[str, str]:
    """A short content digest per corruption file: from the manifest, else hashed once here."""
    digests = {}
    for name in names:
        entry = (manifest or {}).get("files", {}).get(f"{name}.npy")
        digests[name] = (entry["sha256"] if entry else sha256_file(folder / f"{name}.npy"))[:16]
    return digests


def _check_released_folder(folder: Path, names: Sequence[str], n_test: int, test_labels: np.ndarray,
                           num_classes: int) -> list[str]:
    """Problems of a corruption folder in the released layout (no manifest to trust)."""
    problems = []
    labels_path = folder / corruption_schema.LABELS_FILE
    if not labels_path.is_file():
        problems.append(f"{labels_path}: missing")
    for name in names:
        path = folder / f"{name}.npy"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        array = open_corruption_file(path)
        if array.dtype != np.uint8 or array.shape != (5 * n_test, 32, 32, 3):
            problems.append(f"{path}: {array.dtype} {array.shape}, expected uint8 {(5 * n_test, 32, 32, 3)} "
                            f"(5 severities x {n_test} test images)")
    labels = _load_labels(labels_path, problems) if labels_path.is_file() else None
    if labels is not None:
        if labels.shape != (5 * n_test,):
            problems.append(f"{labels_path}: shape {labels.shape}, expected ({5 * n_test},)")
        elif labels.max() >= num_classes or not np.array_equal(labels.astype(np.int64), np.tile(test_labels, 5)):
            problems.append(f"{labels_path}: labels disagree with the test set's labels (another data set, or "
                            f"another order?)")
    return problems


def _load_labels(path: Path, problems: list[str]) -> np.ndarray | None:
    """labels.npy of a released folder, or None with a problem added when it is not a .npy of integers."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        problems.append(f"{path}: not a readable .npy file of labels ({error})")
        return None
    if labels.dtype.kind not in "iu":
        problems.append(f"{path}: dtype {labels.dtype}, expected integer labels")
        return None
    return labels


@dataclass(frozen=True)
class CorruptionRequest:
    """The corruption data an evaluation needs, and where to look for it."""

    dataset: str  # robustgsl.data.DATASETS name (names the default folder and the released layout's checks)
    num_classes: int
    names: tuple[str, ...]  # corruptions, each with all 5 severities
    folder: Path | None = None  # --corruption-dir; None: robustgsl's own folder, generated where missing
    data_dir: str | None = None  # an image folder's root, which names its default folder
    seed: int = 0  # of the data generated when robustgsl's folder is missing or incomplete
    workers: int | None = None
    quiet: bool = False


@dataclass(frozen=True)
class CorruptionSource:
    """Where the corrupted test sets came from (evaluation.json's corruption_source: ``record()``)."""

    kind: str  # generated (robustgsl's, with a manifest) or released
    path: Path  # resolved
    manifest: dict | None
    seed: int | None
    constants: str

    def record(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "manifest": self.manifest, "seed": self.seed,
                "constants": self.constants}

    def digests(self, names: Sequence[str]) -> dict[str, str]:
        return file_digests(self.path, names, self.manifest)


def prepare_corruptions(request: CorruptionRequest, test_images, test_labels, log: Log) -> CorruptionSource:
    """Find (or generate) the corruption data of these test images."""
    # A folder made from other test images (an image folder since changed) is refused, not reused.
    images_sha256 = array_sha256(test_images)
    if request.folder is not None:
        folder, kind = request.folder, _check_given_folder(request, test_labels, images_sha256)
        log(f"corruption data: {folder} ({kind})")
    else:
        folder, kind = default_out_dir(request.dataset, request.data_dir), "generated"
        _generate_if_needed(folder, request, test_images, test_labels, images_sha256, log)
    manifest = read_manifest(folder)
    return CorruptionSource(
        kind=kind, path=folder.resolve(), manifest=manifest, seed=manifest.get("seed") if manifest else None,
        constants=manifest.get("constants_source", CONSTANTS_SOURCE) if manifest else
        "released files (Hendrycks & Dietterich, 2019)")


def _check_given_folder(request: CorruptionRequest, test_labels, images_sha256: str) -> str:
    """'generated' (a manifest, verified) or 'released' (the released layout, checked); else InputError."""
    folder = request.folder
    if not folder.is_dir():
        raise InputError(f"corruption folder {folder} does not exist")
    if read_manifest(folder) is not None:
        kind = "generated"
        problems = verify_corruption_dataset(folder, request.names, SEVERITIES, dataset=request.dataset,
                                             n_images=len(test_labels), images_sha256=images_sha256)
    else:
        kind = "released"
        problems = _check_released_folder(folder, request.names, len(test_labels), test_labels, request.num_classes)
    if problems:
        raise InputError(f"corruption folder {folder} cannot be used: " + "; ".join(problems))
    return kind


def _generate_if_needed(folder: Path, request: CorruptionRequest, test_images, test_labels, images_sha256: str,
                        log: Log) -> None:
    problems = verify_corruption_dataset(folder, request.names, SEVERITIES, seed=request.seed, dataset=request.dataset,
                                         n_images=len(test_labels), images_sha256=images_sha256)
    if not problems:
        log(f"corruption data: {folder} (verified against its manifest)")
        return
    log(f"corruption data in {folder} missing or incomplete ({len(problems)} problem(s), e.g. {problems[0]}); "
        f"generating it with robustgsl's CIFAR-10-C generator (seed {request.seed})")
    write_corruption_dataset(test_images, test_labels, folder, corruptions=request.names, severities=SEVERITIES,
                             seed=request.seed, workers=request.workers, dataset_name=request.dataset,
                             quiet=request.quiet, log=log)
