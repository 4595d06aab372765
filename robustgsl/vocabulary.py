"""The names every part of robustgsl shares, with no torch behind them: data sets (and what is known of
each without reading it), heads, output normalisations.

Configs (robustgsl/config.py), the command line (robustgsl/cli.py) and the report (robustgsl/report/)
read these without importing the modules that do the work (robustgsl/data.py, heads.py, models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robustgsl.errors import InputError

# --- data sets ------------------------------------------------------------------------------------

IMAGEFOLDER = "imagefolder"
BUILTIN_DATASETS = ("cifar10", "cifar100", "svhn", "digits")
DATASETS = BUILTIN_DATASETS + (IMAGEFOLDER,)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    # Per-channel mean and std of the training images in [0, 1]; stored in the model's buffers.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Horizontal flips change the meaning of digits, so SVHN and digits are not flipped.
    flip: bool
    display_name: str


# Channel statistics of the training splits (computed over all training pixels).
DATASET_INFO = {
    "cifar10": DatasetInfo("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, "CIFAR-10"),
    "cifar100": DatasetInfo("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, "CIFAR-100"),
    "svhn": DatasetInfo("svhn", 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, "SVHN"),
    "digits": DatasetInfo("digits", 10, (0.3050, 0.3050, 0.3050), (0.3236, 0.3236, 0.3236), False, "DIGITS"),
}


def dataset_info(name: str, image_folder: dict | None = None) -> DatasetInfo:
    """A built-in data set's DatasetInfo, or an image folder's from its record
    (robustgsl.imagefolder.imagefolder_record, kept in a run's config.json)."""
    if name == IMAGEFOLDER:
        if image_folder is None:
            raise InputError("an image folder's classes and statistics come from the folder: read its record with "
                             "robustgsl.imagefolder.imagefolder_record(DIR)")
        return record_dataset_info(image_folder)
    if name not in DATASET_INFO:
        raise InputError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    return DATASET_INFO[name]


def record_dataset_info(record: dict) -> DatasetInfo:
    """The DatasetInfo of an image folder from its record."""
    return DatasetInfo(IMAGEFOLDER, len(record["classes"]), tuple(record["mean"]), tuple(record["std"]),
                       bool(record["flip"]), f"image folder {Path(record['root']).name}")


# --- heads and embeddings -------------------------------------------------------------------------

HEADS = ("argmax", "1nn", "10nn", "svc")
EMBEDDING_HEADS = tuple(head for head in HEADS if head != "argmax")

# Training embeddings used to fit the SVC. libsvm's fit grows roughly quadratically with the number of
# samples (about a minute for 10,000 512-d embeddings on one CPU core); a seeded stratified subset of
# 10,000 out of CIFAR-10's 50,000 keeps 1,000 per class.
DEFAULT_SVC_TRAIN_SIZE = 10_000


def validate_head_name(name: str) -> str:
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; valid heads: {', '.join(HEADS)}.")
    return name


# GSL output normalisations (robustgsl.models.PreActResNet18): L2 onto the sphere, BatchNorm1d (the paper's
# d = 2 setting), or BatchNorm1d without affine parameters then L2.
NORMALIZATIONS = ("l2", "batchnorm", "bn-l2")
