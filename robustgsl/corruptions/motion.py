"""ImageMagick's motion blur, reimplemented so that CIFAR-10-C needs no ImageMagick.

make_cifar_c.py (hendrycks/robustness) blurs ``motion_blur`` images and ``snow``'s snow layer with
Wand's ``MagickMotionBlurImage(wand, radius, sigma, angle)``, i.e. ImageMagick 6
``MotionBlurImage`` (magick/effect.c) on an 8-bit PNG, read back from an 8-bit PNG. What that does:

- kernel width ``GetOptimalKernelWidth1D(radius, sigma)`` (magick/gem.c): ``2*ceil(radius)+1`` when
  radius > MagickEpsilon, else grown from sigma until the edge weight drops below 1/QuantumRange;
- a ONE-SIDED gaussian, ``k[i] = exp(-i^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)`` for i = 0..width-1,
  divided by its sum (summed in order i = 0, 1, ...);
- tap i reads the pixel at (x + ox[i], y + oy[i]) with
  ``ox[i] = ceil(i*cos(a)*width/hypot - 0.5)``, ``oy[i] = ceil(i*sin(a)*width/hypot - 0.5)``, a the angle
  in radians: integer offsets, no interpolation; pixels outside the image repeat the nearest edge pixel
  (the default "edge" virtual-pixel method);
- accumulation in double on 16-bit quanta (8-bit value v is 257 v), tap by tap in order i = 0, 1, ...;
  the sum is clamped to [0, 65535] and rounded half up to a 16-bit quantum (Q16, no HDRI); the 8-bit
  PNG then stores floor(quantum / 257).

The last step was established by comparison with ImageMagick 6.9.11 Q16 through Wand
(tests/test_motion_blur_imagemagick.py checks the whole function against it). The pixel loop is
compiled with numba; it does the same double operations in the same order as ImageMagick, so the
output bytes are identical.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Constants of ImageMagick 6 (magick/image-private.h, magick/magick-type.h), Q16 build.
MAGICK_PI = 3.14159265358979323846264338327950288419716939937510
MAGICK_SQ2PI = 2.50662827463100024161235523934010416269302368164062
MAGICK_EPSILON = 1.0e-12
QUANTUM_RANGE = 65535.0


def kernel_width(radius: float, sigma: float) -> int:
    """ImageMagick's GetOptimalKernelWidth1D: the number of taps for this radius and sigma."""
    if radius > MAGICK_EPSILON:
        return int(2.0 * math.ceil(radius) + 1.0)
    gamma = abs(sigma)
    if gamma <= MAGICK_EPSILON:
        return 3
    alpha = 1.0 / (2.0 * gamma * gamma)
    beta = 1.0 / (MAGICK_SQ2PI * gamma)
    width = 5
    while True:
        j = (width - 1) // 2
        normalize = 0.0
        for i in range(-j, j + 1):
            normalize += math.exp(-float(i * i) * alpha) * beta
        value = math.exp(-float(j * j) * alpha) * beta / normalize
        if value < 1.0 / QUANTUM_RANGE or value < MAGICK_EPSILON:
            return width - 2
        width += 2


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """The normalised one-sided gaussian weights (float64, length ``kernel_width``); tap 0 is the pixel itself."""
    width = kernel_width(radius, sigma)
    s = sigma if abs(sigma) >= MAGICK_EPSILON else MAGICK_EPSILON
    weights = [math.exp(-float(i * i) / (2.0 * s * s)) / (MAGICK_SQ2PI * s) for i in range(width)]
    total = 0.0
    for w in weights:  # summed in tap order, as ImageMagick does
        total += w
    return np.array([w / total for w in weights], dtype=np.float64)


def motion_offsets(width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dx, dy) of each tap for a blur at ``angle`` degrees (0 = towards +x, 90 = towards +y)."""
    radians = MAGICK_PI * angle / 180.0
    px = width * math.sin(radians)
    py = width * math.cos(radians)
    length = math.hypot(px, py)
    dx = np.array([math.ceil(i * py / length - 0.5) for i in range(width)], dtype=np.int64)
    dy = np.array([math.ceil(i * px / length - 0.5) for i in range(width)], dtype=np.int64)
    return dx, dy


@numba.njit(cache=True, nogil=True)
def _blur_loop(images, kernel, dx, dy, out):
    n_images, height, width, channels = images.shape
    taps = kernel.shape[0]
    acc = np.empty((height, width, channels))
    cols = np.empty(width, dtype=np.int64)
    for n in range(n_images):
        acc[:] = 0.0
        for t in range(taps):  # tap by tap: each pixel's sum is still added in tap order
            k = kernel[t]
            for x in range(width):
                cols[x] = min(max(x + dx[n, t], 0), width - 1)
            for y in range(height):
                yy = min(max(y + dy[n, t], 0), height - 1)
                for x in range(width):
                    xx = cols[x]
                    for c in range(channels):
                        acc[y, x, c] += k * (257.0 * images[n, yy, xx, c])
        for y in range(height):
            for x in range(width):
                for c in range(channels):
                    value = acc[y, x, c]
                    if value <= 0.0:
                        quantum = 0
                    elif value >= 65535.0:
                        quantum = 65535
                    else:
                        quantum = int(value + 0.5)
                    out[n, y, x, c] = quantum // 257


def motion_blur_images(images: np.ndarray, radius: float, sigma: float, angles) -> np.ndarray:
    """Blur each uint8 image (N, H, W, C) along its own angle (degrees), as ImageMagick's MotionBlurImage.

    Returns uint8 (N, H, W, C), byte-identical to Wand's ``motion_blur(radius, sigma, angle)`` on an
    8-bit PNG of the image read back from an 8-bit PNG (ImageMagick 6, Q16).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if images.ndim != 4 or angles.shape[0] != images.shape[0]:
        raise ValueError(f"expected images (N, H, W, C) and N angles, got {images.shape} and {angles.shape[0]} angles")
    kernel = motion_kernel(radius, sigma)
    dx = np.empty((len(angles), len(kernel)), dtype=np.int64)
    dy = np.empty_like(dx)
    for n, angle in enumerate(angles):
        dx[n], dy[n] = motion_offsets(len(kernel), float(angle))
    out = np.empty_like(images)
    _blur_loop(images, kernel, dx, dy, out)
    return out
