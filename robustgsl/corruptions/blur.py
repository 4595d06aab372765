"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur.

Each follows its function in make_cifar_c.py (hendrycks/robustness), step by step and in the same
floating-point type, so that the final truncation to uint8 lands on the same integer:

- gaussian_blur / glass_blur: skimage ``gaussian(x, sigma, multichannel=True)`` is
  ``scipy.ndimage.gaussian_filter`` with sigma (s, s, 0), mode 'nearest', truncate 4; here one call
  with sigma (0, s, s, 0) does the whole batch (scipy filters each line alone: identical bytes).
- glass_blur's pixel "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views is a copy, not a
  swap (the second assignment writes back the value just copied), so pixel (h, w) takes the value of
  its neighbour and the neighbour keeps its own. The loop runs over h, w = H - d .. d + 1 downwards,
  drawing (dx, dy) = randint(-d, d, size=2) per pixel; compiled with numba, in the same order.
- defocus_blur: a disk kernel anti-aliased by ``cv2.GaussianBlur`` (ksize 3, float32), applied with
  ``cv2.filter2D`` (border BORDER_REFLECT_101) in float64, as the reference (which filters each channel
  alone; one call per image filters its three the same way).
- motion_blur: ImageMagick's MotionBlurImage (see ``motion.py``) at a uniform(-45, 45) angle.
- zoom_blur: the mean of the image and its ``clipped_zoom`` for each factor of ``np.arange`` lists,
  in float32; ``clipped_zoom`` (scipy ``zoom``, order 1, of the centre crop) is computed here with
  scipy's own coordinate and weight formulas and order of operations (see ``clipped_zoom``).
"""

from __future__ import annotations

import cv2
import numba
import numpy as np
from scipy.ndimage import gaussian_filter

from robustgsl.corruptions.motion import motion_blur_images

# CIFAR severity constants (severities 1..5) from hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py (Apache-2.0, 2019). These are the CIFAR values, not ImageNet-C's.
SEVERITY_PARAMS: dict[str, tuple] = {
    # (disk radius, sigma of the anti-aliasing gaussian) in pixels
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (gaussian sigma, max pixel displacement d, iterations of the local shuffle)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (ImageMagick radius, ImageMagick sigma); the angle is uniform(-45, 45) degrees per image
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # zoom factors np.arange(start, stop, step); note the lengths np.arange gives: 7, 12, 16, 21, 26
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    # gaussian sigma in pixels
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
}

# These work on any image size (zoom_blur's centre crop assumes a square image: 32x32 only).
ANY_SIZE = frozenset({"defocus_blur", "glass_blur", "motion_blur", "gaussian_blur"})


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The reference's final step: clip to [0, 1], scale to [0, 255], truncate to uint8."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def skimage_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage ``gaussian(image, sigma, multichannel=True)`` on each image of a float batch (N, H, W, C)."""
    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def gaussian_blur(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    sigma = SEVERITY_PARAMS["gaussian_blur"][severity - 1]
    return to_uint8(skimage_gaussian(images / 255.0, sigma))


# ---------------------------------------------------------------- glass blur

@numba.njit(cache=True, nogil=True)
def _glass_shuffle(x, draws, max_delta, iterations):
    """In place: for each image, the reference's loop ``x[h, w] = x[h + dy, w + dx]`` (see module doc)."""
    n_images, height, width, channels = x.shape
    for n in range(n_images):
        k = 0
        for _ in range(iterations):
            for h in range(height - max_delta, max_delta, -1):
                for w in range(width - max_delta, max_delta, -1):
                    dx = draws[n, k, 0]
                    dy = draws[n, k, 1]
                    k += 1
                    for c in range(channels):
                        x[n, h, w, c] = x[n, h + dy, w + dx, c]


def glass_blur(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    sigma, max_delta, iterations = SEVERITY_PARAMS["glass_blur"][severity - 1]
    n, height, width, _ = images.shape
    x = (skimage_gaussian(images / 255.0, sigma) * 255).astype(np.uint8)
    per_pass = len(range(height - max_delta, max_delta, -1)) * len(range(width - max_delta, max_delta, -1))
    # One randint call per image gives the same numbers as the reference's randint(size=(2,)) per pixel:
    # legacy randint draws each value from its own 32-bit words, with no state kept between calls.
    draws = np.empty((n, iterations * per_pass, 2), dtype=np.int64)
    for i in range(n):
        draws[i] = rngs[i].randint(-max_delta, max_delta, size=(iterations * per_pass, 2))
    _glass_shuffle(x, draws, max_delta, iterations)
    return to_uint8(skimage_gaussian(x / 255.0, sigma))


# ---------------------------------------------------------------- defocus blur

def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's ``disk(radius, alias_blur)`` (anti-aliased by ``cv2.GaussianBlur``, float32),
    cropped to its non-zero support."""
    if radius > 8:
        raise ValueError("radii above 8 use the reference's 5x5 anti-aliasing; the CIFAR constants stay below")
    span = np.arange(-8, 8 + 1)
    xx, yy = np.meshgrid(span, span)
    disk = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float32)
    disk /= np.sum(disk)
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
    rows, cols = np.nonzero(kernel)
    return kernel[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def defocus_blur(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    radius, alias_blur = SEVERITY_PARAMS["defocus_blur"][severity - 1]
    kernel = disk_kernel(radius, alias_blur)
    x = images / 255.0
    out = np.empty_like(x)
    for i, image in enumerate(x):  # cv2.filter2D of the reference: correlation, BORDER_REFLECT_101, float64
        out[i] = cv2.filter2D(image, -1, kernel)
    return to_uint8(out)


# ---------------------------------------------------------------- motion blur

def motion_blur(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    radius, sigma = SEVERITY_PARAMS["motion_blur"][severity - 1]
    angles = [rngs[i].uniform(-45, 45) for i in range(len(images))]
    # The reference round-trips through 8-bit PNGs and returns uint8 directly (greyscale PNGs, which
    # ImageMagick writes when R = G = B, come back as three equal channels: same values).
    return motion_blur_images(images, radius, sigma, angles)


# ---------------------------------------------------------------- zoom blur

def _zoom_taps(size: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For ``clipped_zoom`` of a (size x size) image: per output row, the two source rows and weights.

    clipped_zoom crops the centre ``ch = ceil(size / factor)`` rows (from ``top``), zooms them with
    ``scipy.ndimage.zoom(order=1)`` to ``round(ch * factor)`` rows and keeps ``size`` rows from
    ``trim``. scipy maps output row k to input coordinate ``k * ((ch - 1) / (out - 1))``, starts at
    ``floor``, and weighs the two taps ``w0 = 1 - frac``, ``w1 = 1 - w0`` (ni_splines.c). A tap past
    the last row has weight 0 (scipy reads a mirrored row there; any row gives the same sum).
    """
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    out_len = int(round(crop * factor))
    step = (crop - 1) / (out_len - 1) if out_len != 1 else 1.0
    trim = (out_len - size) // 2
    coords = np.arange(trim, trim + size, dtype=np.float64) * step
    start = np.floor(coords)
    w0 = 1.0 - (coords - start)
    w1 = 1.0 - w0
    r0 = start.astype(np.int64)
    r1 = np.minimum(r0 + 1, crop - 1)
    return r0 + top, r1 + top, w0, w1


@numba.njit(cache=True, nogil=True)
def _zoom_into(x, r0, r1, w0, w1, out, accumulate):
    """out (+)= the separable linear zoom of x, summed as scipy does: ((v * w_row) * w_col) tap by tap.

    The double sum is first stored in x's dtype (scipy's output), then added in out's dtype.
    """
    n_images, height, width, channels = out.shape
    cell = np.empty(1, dtype=x.dtype)
    for n in range(n_images):
        for y in range(height):
            a, b = r0[y], r1[y]
            wa, wb = w0[y], w1[y]
            for xx in range(width):
                c0, c1 = r0[xx], r1[xx]
                v0, v1 = w0[xx], w1[xx]
                for c in range(channels):
                    t = 0.0
                    t += (np.float64(x[n, a, c0, c]) * wa) * v0
                    t += (np.float64(x[n, a, c1, c]) * wa) * v1
                    t += (np.float64(x[n, b, c0, c]) * wb) * v0
                    t += (np.float64(x[n, b, c1, c]) * wb) * v1
                    cell[0] = t
                    if accumulate:
                        out[n, y, xx, c] = out[n, y, xx, c] + cell[0]
                    else:
                        out[n, y, xx, c] = cell[0]


def clipped_zoom(x: np.ndarray, factor: float, out: np.ndarray | None = None) -> np.ndarray:
    """The reference's ``clipped_zoom`` for each square image of a float batch (N, S, S, C).

    Kept for speed: benchmarks/corruption_kernels.py times zoom_blur against scipy.ndimage.zoom (same bytes).

    Returns the same dtype as ``x`` (scipy's output dtype); with ``out`` given, adds to it instead,
    in its dtype (``out += clipped_zoom(...)`` rounded per addition as numpy would).
    """
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"clipped_zoom needs square images, got {x.shape[1]}x{x.shape[2]}")
    r0, r1, w0, w1 = _zoom_taps(x.shape[1], float(factor))
    if out is None:
        result = np.empty_like(x)
        _zoom_into(x, r0, r1, w0, w1, result, False)
        return result
    if out.dtype != x.dtype:
        raise ValueError("out must have the dtype of x")
    _zoom_into(x, r0, r1, w0, w1, out, True)
    return out


def zoom_factors(severity: int) -> np.ndarray:
    start, stop, step = SEVERITY_PARAMS["zoom_blur"][severity - 1]
    return np.arange(start, stop, step)


@numba.njit(cache=True, nogil=True)
def _zoom_blur_sum(x, r0, r1, w0, w1, out):
    """out = float32 sum over factors f of clipped_zoom(x, f), added factor by factor as the reference.

    ``x`` and ``out`` are float32 (H, W, C, N): images last, so that the innermost loop runs over
    the images of the batch with the same operations for each (the compiler vectorises it; every
    value still sees the same floating-point operations in the same order). Tables (factors, size)
    from ``_zoom_taps``. Each zoomed value is scipy's double sum ((v * w_row) * w_col) over the four
    taps, rounded to float32 (scipy's output dtype) before the float32 addition, so the bytes equal
    ``out += clipped_zoom(x, f)``. The products v * w_row are computed once per source pixel and row
    (same values, fewer multiplications).
    """
    height, width, channels, n_images = x.shape
    n_factors = r0.shape[0]
    pa = np.empty((width, channels, n_images))
    pb = np.empty((width, channels, n_images))
    out[:] = 0.0
    for f in range(n_factors):
        for y in range(height):
            a, b = r0[f, y], r1[f, y]
            wa, wb = w0[f, y], w1[f, y]
            for xs in range(width):
                for c in range(channels):
                    for n in range(n_images):
                        pa[xs, c, n] = np.float64(x[a, xs, c, n]) * wa
                        pb[xs, c, n] = np.float64(x[b, xs, c, n]) * wb
            for xx in range(width):
                c0, c1 = r0[f, xx], r1[f, xx]
                v0, v1 = w0[f, xx], w1[f, xx]
                for c in range(channels):
                    for n in range(n_images):
                        t = pa[c0, c, n] * v0
                        t += pa[c1, c, n] * v1
                        t += pb[c0, c, n] * v0
                        t += pb[c1, c, n] * v1
                        out[y, xx, c, n] = np.float32(out[y, xx, c, n] + np.float32(t))


def zoom_blur(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    factors = zoom_factors(severity)
    x = (images / 255.0).astype(np.float32)
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"zoom_blur needs square images, got {x.shape[1]}x{x.shape[2]}")
    taps = [_zoom_taps(x.shape[1], float(factor)) for factor in factors]
    r0, r1, w0, w1 = (np.ascontiguousarray(np.stack(column)) for column in zip(*taps))
    images_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    total = np.empty_like(images_last)
    _zoom_blur_sum(images_last, r0, r1, w0, w1, total)
    x = (x + total.transpose(3, 0, 1, 2)) / np.float32(len(factors) + 1)
    return (np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8)


FUNCTIONS = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
}
