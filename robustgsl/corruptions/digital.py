"""Digital corruptions: brightness, contrast, saturate, elastic_transform, pixelate, jpeg_compression.

Each follows the reference's arithmetic (float64 unless the reference uses float32, clip to [0, 1],
``* 255``, truncation to uint8), vectorised over the batch. brightness and saturate go through HSV with
scikit-image's ``rgb2hsv`` / ``hsv2rgb`` formulas, run per pixel (compiled with numba). elastic_transform
takes its affine maps from OpenCV and reimplements OpenCV 4's ``warpAffine`` (bilinear, BORDER_REFLECT_101,
1/32-pixel fixed-point coordinates) and SciPy's ``map_coordinates`` (order 1, mode 'reflect') for a batch,
their per-pixel loops compiled with numba. pixelate and jpeg_compression run Pillow once per image, as the
reference does.
"""

from __future__ import annotations

import math
from io import BytesIO

import cv2
import numba
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from robustgsl.corruptions.noise import to_uint8

_BOX = getattr(Image, "Resampling", Image).BOX  # Pillow >= 9.1 moved the filter names
_IMSIZE = 32  # the reference's elastic_transform constants are fractions of the CIFAR image size

# CIFAR severity constants (severities 1..5) from hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py (Apache-2.0, 2019). These are the CIFAR values, not ImageNet-C's.
SEVERITY_PARAMS: dict[str, tuple] = {
    # added to HSV value (V), then clipped to [0, 1]
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    # factor on the deviation from the per-image, per-channel mean
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (factor, offset) on HSV saturation (S), then clipped to [0, 1]
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    # (alpha: displacement scale in pixels, sigma: smoothing of the displacement field in pixels,
    #  affine jitter: max shift of each of the 3 anchor points in pixels), written as in the
    #  reference as multiples of the image size 32
    "elastic_transform": (
        (_IMSIZE * 0, _IMSIZE * 0, _IMSIZE * 0.08),
        (_IMSIZE * 0.05, _IMSIZE * 0.2, _IMSIZE * 0.07),
        (_IMSIZE * 0.08, _IMSIZE * 0.06, _IMSIZE * 0.06),
        (_IMSIZE * 0.1, _IMSIZE * 0.04, _IMSIZE * 0.05),
        (_IMSIZE * 0.1, _IMSIZE * 0.03, _IMSIZE * 0.03),
    ),
    # side of the intermediate image as a fraction of the side: int(32 * c), Pillow BOX both ways
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    # Pillow JPEG quality
    "jpeg_compression": (80, 65, 58, 50, 40),
}

# elastic_transform's constants and anchor points are tied to 32x32; the others work on any size
# (pixelate scales its intermediate size with the image).
ANY_SIZE = frozenset({"brightness", "contrast", "saturate", "pixelate", "jpeg_compression"})


def _unit(images: np.ndarray) -> np.ndarray:
    return images / 255.0


# ---------------------------------------------------------------- HSV (scikit-image's formulas)


@numba.njit(cache=True, nogil=True)
def _hsv_adjust(images, s_factor, s_offset, v_offset, out):
    """Per pixel: ``skimage.color.rgb2hsv``, S = clip(S * s_factor + s_offset), V = clip(V + v_offset),
    ``hsv2rgb``, ``to_uint8``: scikit-image's float64 operations in its order, without its (N, H, W)-sized
    temporaries; an adjustment of (1, 0) or 0 is skipped, as the reference does not make it either.
    Kept for speed: benchmarks/corruption_kernels.py times it against scikit-image (same bytes)."""
    n_images, height, width, _ = images.shape
    adjust_s = not (s_factor == 1.0 and s_offset == 0.0)
    adjust_v = v_offset != 0.0
    for n in range(n_images):
        for y in range(height):
            for x in range(width):
                r = images[n, y, x, 0] / 255.0
                g = images[n, y, x, 1] / 255.0
                b = images[n, y, x, 2] / 255.0
                v = max(max(r, g), b)
                delta = v - min(min(r, g), b)
                if delta == 0.0:
                    h = 0.0
                    s = 0.0
                else:
                    s = delta / v
                    if b == v:
                        h = 4.0 + (r - g) / delta
                    elif g == v:
                        h = 2.0 + (b - r) / delta
                    else:
                        h = (g - b) / delta
                    h = np.fmod(h / 6.0, 1.0)  # numpy's float remainder by 1: fmod, then into [0, 1)
                    if h < 0.0:
                        h += 1.0
                    elif h == 0.0:
                        h = 0.0
                if adjust_s:
                    s = min(max(s * s_factor + s_offset, 0.0), 1.0)
                if adjust_v:
                    v = min(max(v + v_offset, 0.0), 1.0)
                sector = math.floor(h * 6)
                f = h * 6 - sector
                p = v * (1 - s)
                q = v * (1 - f * s)
                t = v * (1 - (1 - f) * s)
                k = int(sector) % 6
                if k == 0:
                    r, g, b = v, t, p
                elif k == 1:
                    r, g, b = q, v, p
                elif k == 2:
                    r, g, b = p, v, t
                elif k == 3:
                    r, g, b = p, q, v
                elif k == 4:
                    r, g, b = t, p, v
                else:
                    r, g, b = v, p, q
                out[n, y, x, 0] = np.uint8(min(max(r, 0.0), 1.0) * 255)
                out[n, y, x, 1] = np.uint8(min(max(g, 0.0), 1.0) * 255)
                out[n, y, x, 2] = np.uint8(min(max(b, 0.0), 1.0) * 255)


def brightness(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    # == to_uint8(hsv2rgb(hsv)) after hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1), hsv = rgb2hsv(x)
    c = SEVERITY_PARAMS["brightness"][severity - 1]
    out = np.empty_like(images)
    _hsv_adjust(images, 1.0, 0.0, float(c), out)
    return out


def saturate(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    # == to_uint8(hsv2rgb(hsv)) after hsv[..., 1] = np.clip(hsv[..., 1] * factor + offset, 0, 1)
    factor, offset = SEVERITY_PARAMS["saturate"][severity - 1]
    out = np.empty_like(images)
    _hsv_adjust(images, float(factor), float(offset), 0.0, out)
    return out


def contrast(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    c = SEVERITY_PARAMS["contrast"][severity - 1]
    x = _unit(images)
    means = np.mean(x, axis=(1, 2), keepdims=True)  # per image and channel
    return to_uint8((x - means) * c + means)


# ---------------------------------------------------------------- pixelate, JPEG (Pillow per image)


def pixelate(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    c = SEVERITY_PARAMS["pixelate"][severity - 1]
    height, width = images.shape[1:3]
    small = (int(width * c), int(height * c))  # Pillow sizes are (width, height)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        shrunk = Image.fromarray(image).resize(small, _BOX)
        out[i] = np.asarray(shrunk.resize((width, height), _BOX))
    return out


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """One uint8 RGB image encoded by Pillow at ``quality`` (Pillow's default 4:2:0 subsampling)."""
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_compression(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    quality = SEVERITY_PARAMS["jpeg_compression"][severity - 1]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        with Image.open(BytesIO(jpeg_bytes(image, quality))) as decoded:
            out[i] = np.asarray(decoded)
    return out


# ---------------------------------------------------------------- elastic transform

# OpenCV's warpAffine works in fixed point: coordinates scaled by 2**10, then reduced to 1/32 pixel
# (INTER_BITS = 5) with round-half-to-even (cvRound), and bilinear weights from a float table of
# those 1/32 steps.
_AB_BITS, _INTER_BITS = 10, 5
_AB_SCALE, _INTER_TAB = 1 << _AB_BITS, 1 << _INTER_BITS


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform for each of a batch of float32 (N, 3, 2) point triples: (N, 2, 3) src -> dst."""
    matrices = [cv2.getAffineTransform(a, b) for a, b in zip(np.float32(src), np.float32(dst))]
    return np.array(matrices, dtype=np.float64).reshape(-1, 2, 3)


def warp_affine_reflect101(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(image, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_REFLECT_101) per image, OpenCV 4.

    ``images``: float32 (N, H, W, C); ``matrices``: (N, 2, 3) forward maps (source -> destination).
    Each destination pixel samples the source at the inverse map of its coordinates, quantised as
    OpenCV does, and blends the 4 neighbours in float32 in OpenCV's order.
    Kept: OpenCV 5.0 changed this warp; these are OpenCV 4.x's bytes (tested with 4.10), as in the reference.
    """
    n, height, width, _ = images.shape
    inv = np.array([cv2.invertAffineTransform(m) for m in matrices], dtype=np.float64).reshape(-1, 2, 3)
    cols, rows = np.arange(width), np.arange(height)
    adelta = np.rint(inv[:, 0, 0, None] * cols * _AB_SCALE).astype(np.int64)  # (N, W)
    bdelta = np.rint(inv[:, 1, 0, None] * cols * _AB_SCALE).astype(np.int64)
    round_delta = _AB_SCALE // _INTER_TAB // 2
    x0 = np.rint((inv[:, 0, 1, None] * rows + inv[:, 0, 2, None]) * _AB_SCALE).astype(np.int64) + round_delta
    y0 = np.rint((inv[:, 1, 1, None] * rows + inv[:, 1, 2, None]) * _AB_SCALE).astype(np.int64) + round_delta
    out = np.empty(images.shape, dtype=np.float32)
    _warp_bilinear(np.ascontiguousarray(images, dtype=np.float32), x0, y0, adelta, bdelta, out)
    return out


@numba.njit(cache=True, nogil=True)
def _reflect101_index(i, n):
    """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba) of one index: -1 -> 1, n -> n - 2."""
    if n == 1:
        return 0
    period = 2 * n - 2
    i = abs(i) % period
    return period - i if i >= n else i


@numba.njit(cache=True, nogil=True)
def _reflect_half_index(i, n):
    """SciPy mode 'reflect' (dcba|abcd|dcba) of one index: -1 -> 0, n -> n - 1 (Python's modulo:
    never negative)."""
    i = i % (2 * n)
    return 2 * n - 1 - i if i >= n else i


@numba.njit(cache=True, nogil=True)
def _warp_bilinear(images, x0, y0, adelta, bdelta, out):
    """The per-pixel part of ``warp_affine_reflect101``: fixed-point source position, 1/32-pixel
    bilinear weights and the float32 blend of the 4 neighbours, in OpenCV's order."""
    n_images, height, width, channels = images.shape
    shift = _AB_BITS - _INTER_BITS
    mask = _INTER_TAB - 1
    one = np.float32(1)
    tab = np.float32(_INTER_TAB)
    for n in range(n_images):
        for y in range(height):
            for x in range(width):
                sx = (x0[n, y] + adelta[n, x]) >> shift  # in 1/32 pixel
                sy = (y0[n, y] + bdelta[n, x]) >> shift
                fx = np.float32(sx & mask) / tab
                fy = np.float32(sy & mask) / tab
                sx >>= _INTER_BITS
                sy >>= _INTER_BITS
                w00 = (one - fy) * (one - fx)
                w01 = (one - fy) * fx
                w10 = fy * (one - fx)
                w11 = fy * fx
                xa, xb = _reflect101_index(sx, width), _reflect101_index(sx + 1, width)
                ya, yb = _reflect101_index(sy, height), _reflect101_index(sy + 1, height)
                for c in range(channels):
                    v = images[n, ya, xa, c] * w00
                    v = v + images[n, ya, xb, c] * w01
                    v = v + images[n, yb, xa, c] * w10
                    v = v + images[n, yb, xb, c] * w11
                    out[n, y, x, c] = v


def map_coordinates_reflect(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """scipy.ndimage.map_coordinates(image, (rows, cols, channel), order=1, mode='reflect') per image.

    ``images``: (N, H, W, C); ``rows``, ``cols``: float64 (N, H, W) sample positions. Computes in
    float64 and returns the input's dtype, as SciPy does.
    Kept for speed: benchmarks/corruption_kernels.py times it against SciPy (same bytes).
    """
    out = np.empty(images.shape, dtype=images.dtype)
    _map_bilinear(np.ascontiguousarray(images), np.ascontiguousarray(rows, dtype=np.float64),
                  np.ascontiguousarray(cols, dtype=np.float64), out)
    return out


@numba.njit(cache=True, nogil=True)
def _map_bilinear(images, rows, cols, out):
    """The per-pixel loop of ``map_coordinates_reflect``: float64 weights and sum in numpy's order
    ((1 - tr) * (1 - tc) * v00 + (1 - tr) * tc * v01 + ...), stored in ``out``'s dtype."""
    n_images, height, width, channels = images.shape
    for n in range(n_images):
        for y in range(height):
            for x in range(width):
                r0 = np.floor(rows[n, y, x])
                c0 = np.floor(cols[n, y, x])
                tr = rows[n, y, x] - r0
                tc = cols[n, y, x] - c0
                ri, ci = np.int64(r0), np.int64(c0)
                ra, rb = _reflect_half_index(ri, height), _reflect_half_index(ri + 1, height)
                ca, cb = _reflect_half_index(ci, width), _reflect_half_index(ci + 1, width)
                for c in range(channels):
                    v = (1 - tr) * (1 - tc) * np.float64(images[n, ra, ca, c])
                    v = v + (1 - tr) * tc * np.float64(images[n, ra, cb, c])
                    v = v + tr * (1 - tc) * np.float64(images[n, rb, ca, c])
                    v = v + tr * tc * np.float64(images[n, rb, cb, c])
                    out[n, y, x, c] = v


def elastic_transform(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    """Random affine warp of 3 anchor points, then a smooth random displacement field.

    Per image the draws are the reference's: uniform(-jitter, jitter, (3, 2)) for the anchors, then
    uniform(-1, 1, (H, W)) for dx, then for dy.
    """
    alpha, sigma, jitter = SEVERITY_PARAMS["elastic_transform"][severity - 1]
    n, height, width, _ = images.shape
    if n == 0:
        return images.copy()
    x = np.asarray(images, dtype=np.float32) / 255.0  # float32, as the reference

    # Anchor points: the corners of a square of side 2 * (size // 3) around the centre, in (x, y).
    centre = np.float32([height, width]) // 2
    half = min(height, width) // 3
    anchors = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])

    draws = [(rng.uniform(-jitter, jitter, size=anchors.shape), rng.uniform(-1, 1, size=(height, width)),
              rng.uniform(-1, 1, size=(height, width))) for rng in (rngs[i] for i in range(n))]
    moved = anchors + np.stack([d[0] for d in draws]).astype(np.float32)  # float32 sum, as the reference
    matrices = affine_from_points(np.broadcast_to(anchors, moved.shape), moved)
    warped = warp_affine_reflect101(x, matrices)

    # Smoothed displacement fields (skimage.filters.gaussian == scipy's gaussian_filter here).
    def field(k: int) -> np.ndarray:
        noise = np.stack([d[k] for d in draws])
        return (gaussian_filter(noise, sigma=(0, sigma, sigma), mode="reflect", truncate=3) * alpha).astype(np.float32)

    dx, dy = field(1), field(2)
    rows = np.arange(height)[None, :, None] + dy.astype(np.float64)
    cols = np.arange(width)[None, None, :] + dx.astype(np.float64)
    return to_uint8(map_coordinates_reflect(warped, rows, cols))


FUNCTIONS = {
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
