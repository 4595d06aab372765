"""Bring-your-own data set: torchvision's ImageFolder layout, read into robustgsl's arrays.

    DIR/train/<class>/*.png      (any of torchvision's image extensions; sub-folders are read too)
    DIR/test/<class>/*.png

The same arrays as ``robustgsl.data.load_dataset``: images uint8 (N, 32, 32, 3) RGB, labels int64 (N,).
Classes, files and their order are torchvision's ``ImageFolder``'s (class folders sorted by name, label
= position; files sorted), and images are converted to RGB as its loader does. train and test must hold
the same class folders. Images must be 32x32; with ``resize=True`` others are resized to 32x32 with PIL's
bicubic filter (antialiased when shrinking, aspect ratio not kept), and ``ImageFolderInfo`` says how many
and from which sizes, for the results to state.

``imagefolder_record`` is what a run's config.json and an evaluation.json keep of a folder (its classes,
channel statistics, resize; robustgsl/schema/run.py ``IMAGE_FOLDER_FIELDS``): enough to rebuild a model
trained on it (``robustgsl.vocabulary.record_dataset_info``) and to check that it is evaluated on the same classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustgsl.errors import InputError
from robustgsl.progress import progress
from robustgsl.vocabulary import IMAGEFOLDER, DatasetInfo

SPLITS = ("train", "test")
IMAGE_SIZE = (32, 32)
RESIZE_METHOD = "PIL bicubic to 32x32, aspect ratio not kept"
# Distinct original sizes an ImageFolderInfo lists.
LISTED_SIZES = 5
# The last folder read, per split, keyed by its files' paths, sizes and modification times: training reads
# the training images' statistics (for config.json) before its data, and evaluation the record and both
# splits, so an unchanged folder is decoded once per process.
_LAST_READ: dict[str, tuple[tuple, tuple]] = {}


@dataclass(frozen=True)
class ImageFolderInfo:
    """What was read: the classes, and which images were resized (for the results to say)."""

    root: str
    split: str
    classes: tuple[str, ...]
    num_images: int
    num_resized: int
    # (width, height) of the resized images' originals, the first LISTED_SIZES distinct ones.
    original_sizes: tuple[tuple[int, int], ...]

    def describe(self) -> str:
        text = f"image folder {self.root} ({self.split}: {self.num_images} images, {len(self.classes)} classes)"
        if self.num_resized:
            sizes = ", ".join(f"{w}x{h}" for w, h in self.original_sizes)
            text += f", {self.num_resized} resized ({RESIZE_METHOD}) from {sizes}"
        return text


def imagefolder_classes(root: str | Path) -> list[str]:
    """The class names (sorted as torchvision's ImageFolder sorts them), the same in train and test."""
    return _listings(Path(root))["train"].classes


def _listings(root: Path) -> dict:
    """torchvision's ImageFolder of each split (file lists only), checked to hold the same classes."""
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    listings = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise InputError(f"image folder {root} has no {split}/ folder; expected {root}/{split}/<class>/<image>")
        try:
            listings[split] = ImageFolder(str(root / split))
        except FileNotFoundError as error:  # no class folders, or a class folder without images
            raise InputError(f"image folder {root / split}: {error}") from None
    train, test = listings["train"].classes, listings["test"].classes
    if train != test:
        raise InputError(
            f"image folder {root}: train and test must hold the same class folders; only in train: "
            f"{sorted(set(train) - set(test)) or 'none'}, only in test: {sorted(set(test) - set(train)) or 'none'}"
        )
    return listings


def load_imagefolder(root: str | Path, split: str, resize: bool = False, quiet: bool = True):
    """Return (images uint8 (N, 32, 32, 3), labels int64 (N,), ImageFolderInfo) of ``split``."""
    if split not in SPLITS:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    folder = _listings(root)[split]
    key = (str(root.resolve()), bool(resize),
           tuple((path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path, _ in folder.samples))
    if split in _LAST_READ and _LAST_READ[split][0] == key:
        images, labels, info = _LAST_READ[split][1]
        return images.copy(), labels.copy(), info
    images = np.empty((len(folder.samples), *IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.asarray([label for _, label in folder.samples], dtype=np.int64)
    resized_sizes = []
    for i, (path, _) in enumerate(progress(folder.samples, quiet=quiet, desc=f"reading {split} images")):
        images[i], original_size = _read_image(Path(path), resize)
        if original_size is not None:
            resized_sizes.append(original_size)
    info = ImageFolderInfo(
        root=str(root), split=split, classes=tuple(folder.classes), num_images=len(labels),
        num_resized=len(resized_sizes), original_sizes=tuple(dict.fromkeys(resized_sizes))[:LISTED_SIZES],
    )
    _LAST_READ[split] = (key, (images.copy(), labels.copy(), info))
    return images, labels, info


def _read_image(path: Path, resize: bool) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(32x32x3 uint8 RGB, the original size if it was resized)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
            if size != IMAGE_SIZE and not resize:
                raise InputError(
                    f"{path} is {size[0]}x{size[1]}; image folders must hold 32x32 images "
                    f"(or pass --resize to resize them: {RESIZE_METHOD})"
                )
            rgb = image.convert("RGB")  # as torchvision's loader: grey replicated, alpha dropped
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path} is not a readable image ({type(error).__name__}: {error})") from None
    if size == IMAGE_SIZE:
        return np.asarray(rgb), None
    return np.asarray(rgb.resize(IMAGE_SIZE, Image.BICUBIC)), size


def imagefolder_dataset_info(root: str | Path, train_images: np.ndarray, classes: list[str] | tuple[str, ...],
                             flip: bool = True) -> DatasetInfo:
    """A DatasetInfo for an image folder, its channel statistics computed from its training images.

    ``flip``: horizontal flips in training, as for CIFAR; pass False where mirroring changes the class.
    """
    mean, std = _channel_statistics(train_images)
    return DatasetInfo(IMAGEFOLDER, len(classes), mean, std, flip, f"image folder {Path(root).name}")


def _channel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1], exact from 256-bin histograms."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(3):
        counts = np.bincount(images[..., channel].ravel(), minlength=256).astype(np.float64)
        mean = float(counts @ values / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return tuple(means), tuple(stds)


def imagefolder_record(root: str | Path, resize: bool = False) -> dict:
    """What config.json and evaluation.json keep of an image folder (robustgsl/schema/run.py IMAGE_FOLDER_FIELDS)."""
    train_images, _, train = load_imagefolder(root, "train", resize)
    test = load_imagefolder(root, "test", resize)[2]
    info = imagefolder_dataset_info(root, train_images, train.classes)
    return {
        "root": str(Path(root).resolve()), "classes": list(train.classes), "mean": list(info.mean),
        "std": list(info.std), "flip": info.flip, "resize": bool(resize),
        "resize_method": RESIZE_METHOD if resize else None, "train_images": train.num_images,
        "test_images": test.num_images, "resized_images": train.num_resized + test.num_resized,
        "original_sizes": [list(size) for size in dict.fromkeys(train.original_sizes + test.original_sizes)],
        "description": f"{train.describe()}; {test.describe()}",
    }


