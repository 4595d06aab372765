"""Test images and generators for the corruption tests (benchmarks/corruptions.py imports it by path too)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from robustgsl.corruptions.rng import image_seed

# The corruptions in the digits corruption folder that conftest.py's digits_corruptions fixture shares.
DIGITS_C_CORRUPTIONS = ("gaussian_noise", "contrast")


def photo_crops(n: int, seed: int = 0) -> np.ndarray:
    """n CIFAR-like 32x32 RGB uint8 crops of scikit-learn's two bundled photographs (seeded).

    Natural-image statistics without a download, for tests and benchmarks of the corruptions.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rs = np.random.RandomState(seed)
    photos = load_sample_images().images
    crops = []
    for i in range(n):
        photo = photos[i % 2]
        side = rs.randint(40, 200)
        y, x = rs.randint(0, photo.shape[0] - side), rs.randint(0, photo.shape[1] - side)
        crops.append(np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((32, 32), Image.BILINEAR)))
    return np.stack(crops)


def image_rng(seed: int, name: str, severity: int, index: int) -> np.random.RandomState:
    """The generator ``corrupt`` gives test-set image ``index``, built the plain way."""
    return np.random.RandomState(image_seed(seed, name, severity, index))


def image_rngs(seed: int, name: str, severity: int, indices: Iterable[int]) -> list[np.random.RandomState]:
    """One generator per image index, in the order given."""
    return [image_rng(seed, name, severity, index) for index in indices]
