"""Tiny data sets in the released on-disk formats that robustgsl.data reads: CIFAR-10's and CIFAR-100's
pickled batches, SVHN's .mat files. Random images and labels, written by the tests themselves."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images as CIFAR rows: 1024 red, 1024 green, 1024 blue bytes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict:
    """cifar-10-batches-py/data_batch_1..5 and test_batch; returns name -> (images, labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": cifar_rows(images),
                         b"filenames": [b"x.png"] * per_batch}, handle, protocol=2)
        written[name] = (images, labels)
    return written


def write_cifar100(root: Path, sizes: dict[str, int], seed: int = 1) -> dict:
    """cifar-100-python/train and test; ``sizes`` per split; returns split -> (images, fine labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, size in sizes.items():
        images = rng.integers(0, 256, size=(size, 32, 32, 3), dtype=np.uint8)
        fine = (np.arange(size) % 100).tolist()  # every class present, as in the real splits
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": cifar_rows(images), b"fine_labels": fine, b"coarse_labels": [0] * size}, handle)
        written[name] = (images, fine)
    return written


def write_svhn(root: Path, labels: dict[str, np.ndarray], seed: int = 2) -> dict:
    """train_32x32.mat and test_32x32.mat with SVHN's labels 1..10 (10 is the digit 0); returns split -> images."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    written = {}
    for split, split_labels in labels.items():
        images = rng.integers(0, 256, size=(len(split_labels), 32, 32, 3), dtype=np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0),
                                              "y": np.asarray(split_labels, dtype=np.uint8).reshape(-1, 1)})
        written[split] = images
    return written
