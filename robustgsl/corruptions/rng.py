"""Per-image random generators for the corruptions.

Each image gets its own legacy ``numpy.random.RandomState`` seeded from
(seed, corruption name, severity, image index). The output then depends neither on batch size,
worker count nor order, and the same seed gives the same bytes on every machine. A legacy
``RandomState`` (Mersenne Twister) is used, not ``Generator``, because the reference script
(hendrycks/robustness, make_cifar_c.py) draws from ``np.random``'s legacy stream: a reference
function fed the same stream draws the same numbers.
"""

from __future__ import annotations

import zlib

import numpy as np


def image_seed(seed: int, name: str, severity: int, index: int) -> np.ndarray:
    """The 128-bit seed (four uint32 words) of one image's generator."""
    entropy = [int(seed), zlib.crc32(name.encode("utf-8")), int(severity), int(index)]
    return np.random.SeedSequence(entropy).generate_state(4, dtype=np.uint32)
