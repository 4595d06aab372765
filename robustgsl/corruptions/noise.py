"""Noise corruptions: gaussian, shot, impulse (salt & pepper) and speckle noise.

Each image draws its noise from its own generator, with the same calls (shape, distribution, order)
as the reference draws from ``np.random``, so a reference function fed the same legacy stream
makes the same image. The arithmetic is the reference's, in float64, ending in a clip to [0, 1],
``* 255`` and truncation to uint8 (``np.uint8`` of a float array truncates; it does not round).
"""

from __future__ import annotations

import numpy as np

# CIFAR severity constants (severities 1..5) from hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py (Apache-2.0, 2019). These are the CIFAR values, smaller than
# ImageNet-C's.
SEVERITY_PARAMS: dict[str, tuple] = {
    # standard deviation of the additive noise, in units of the [0, 1] intensity range
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    # photon count at full intensity: pixel ~ Poisson(x * lambda) / lambda
    "shot_noise": (500, 250, 100, 75, 50),
    # fraction of channel values replaced by 0 or 1 (skimage random_noise mode='s&p', amount=c)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    # standard deviation of the multiplicative noise: x + x * N(0, c)
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
}

# Every noise here acts on each channel value on its own, so any image size works.
ANY_SIZE = frozenset(SEVERITY_PARAMS)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The reference's final step: clip to [0, 1], scale to [0, 255], truncate to uint8."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _unit(images: np.ndarray) -> np.ndarray:
    # ``np.array(pil_image) / 255.``: float64 in [0, 1]
    return images / 255.0


def gaussian_noise(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    scale = SEVERITY_PARAMS["gaussian_noise"][severity - 1]
    x = _unit(images)
    noise = np.stack([rngs[i].normal(size=x.shape[1:], scale=scale) for i in range(len(x))]) if len(x) else 0.0
    return to_uint8(x + noise)


def shot_noise(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    lam = SEVERITY_PARAMS["shot_noise"][severity - 1]
    x = _unit(images)
    counts = np.stack([rngs[i].poisson(x[i] * lam) for i in range(len(x))]) if len(x) else x
    return to_uint8(counts / lam)


# skimage.util.random_noise(mode='s&p') as the reference ran it (scikit-image <= 0.17, 2019): two
# ``np.random.choice([True, False], size=image.shape, p=[p, 1 - p])`` calls, the first choosing the
# flipped values (p = amount), the second salt (1) versus pepper (0) with salt_vs_pepper = 0.5.
# Legacy ``choice`` with probabilities draws ``random_sample(shape)`` and picks the first option where
# u < cdf[0], with cdf = cumsum(p) / sum(p). (scikit-image >= 0.18 draws from its own fresh PCG64
# generator instead, so that version cannot be replayed from a seed at all.)
SALT_VS_PEPPER = 0.5


def _choice_true_threshold(p: float) -> float:
    """cdf[0] of ``choice([True, False], p=[p, 1 - p])``, computed as numpy's legacy choice does."""
    cdf = np.cumsum([p, 1 - p])
    cdf /= cdf[-1]
    return float(cdf[0])


def impulse_noise(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    amount = SEVERITY_PARAMS["impulse_noise"][severity - 1]
    flip_below = _choice_true_threshold(amount)
    salt_below = _choice_true_threshold(SALT_VS_PEPPER)
    out = _unit(images)
    if len(out) == 0:
        return images.copy()
    shape = out.shape[1:]
    draws = np.stack([np.stack([rngs[i].random_sample(shape), rngs[i].random_sample(shape)]) for i in range(len(out))])
    flipped = draws[:, 0] < flip_below
    salted = draws[:, 1] < salt_below
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return to_uint8(out)


def speckle_noise(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    scale = SEVERITY_PARAMS["speckle_noise"][severity - 1]
    x = _unit(images)
    noise = np.stack([rngs[i].normal(size=x.shape[1:], scale=scale) for i in range(len(x))]) if len(x) else 0.0
    return to_uint8(x + x * noise)


FUNCTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}
