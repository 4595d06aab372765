"""Digital corruptions: brightness, contrast, saturate, elastic_transform, pixelate, jpeg_compression.

Each follows the reference's arithmetic (float64 unless the reference uses float32, clip to [0, 1],
``* 255``, truncation to uint8), vectorised over the batch. brightness and saturate go through HSV
with scikit-image's conversion formulas, reimplemented here for a batch. elastic_transform
reimplements OpenCV's ``warpAffine`` (bilinear, BORDER_REFLECT_101, 1/32-pixel fixed-point
coordinates) and SciPy's ``map_coordinates`` (order 1, mode 'reflect') for a batch. pixelate and
jpeg_compression run Pillow once per image, as the reference does.
"""

from __future__ import annotations

from io import BytesIO

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


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv for float arrays (..., 3) in [0, 1], any leading shape.

    Hue takes the blue formula where blue is the maximum, else green's, else red's (scikit-image
    assigns red, then green, then blue, each overwriting the previous).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = np.maximum(np.maximum(r, g), b)  # == rgb.max(-1), much faster than a reduction over 3 values
    delta = v - np.minimum(np.minimum(r, g), b)  # == np.ptp(rgb, -1)
    flat = delta == 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        h = np.where(b == v, 4.0 + (r - g) / delta, np.where(g == v, 2.0 + (b - r) / delta, (g - b) / delta))
    h = (h / 6.0) % 1.0
    h[flat] = 0.0
    s[flat] = 0.0
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb for float arrays (..., 3), any leading shape."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = sector.astype(np.uint8) % 6
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def brightness(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    c = SEVERITY_PARAMS["brightness"][severity - 1]
    hsv = rgb_to_hsv(_unit(images))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return to_uint8(hsv_to_rgb(hsv))


def saturate(images: np.ndarray, severity: int, rngs=None) -> np.ndarray:
    factor, offset = SEVERITY_PARAMS["saturate"][severity - 1]
    hsv = rgb_to_hsv(_unit(images))
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + offset, 0, 1)
    return to_uint8(hsv_to_rgb(hsv))


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


def _reflect101_formula(index: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(index)
    period = 2 * n - 2
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def _reflect_half_formula(index: np.ndarray, n: int) -> np.ndarray:
    index = index % (2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _fold(index: np.ndarray, n: int, formula) -> np.ndarray:
    """Map out-of-range indices back into 0..n-1 with ``formula``; a lookup table covers the usual
    range (integer modulo over whole arrays is slow)."""
    low, high = -2 * n, 3 * n
    if index.size and (index.min() < low or index.max() >= high):
        return formula(index, n)
    table = formula(np.arange(low, high), n)
    return table[index - low]


def _reflect101(index: np.ndarray, n: int) -> np.ndarray:
    """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba): -1 -> 1, n -> n - 2."""
    return _fold(index, n, _reflect101_formula)


def _reflect_half(index: np.ndarray, n: int) -> np.ndarray:
    """SciPy mode 'reflect' (dcba|abcd|dcba): -1 -> 0, n -> n - 1."""
    return _fold(index, n, _reflect_half_formula)


def _gather(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """images[i, rows[i], cols[i]] for (N, H, W) index arrays, through one flat take (faster than
    fancy indexing on three axes)."""
    n, height, width, channels = images.shape
    flat = (np.arange(n)[:, None, None] * height + rows) * width + cols
    return np.take(images.reshape(-1, channels), flat, axis=0)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform for a batch: (N, 3, 2) point pairs -> (N, 2, 3) matrices mapping src to dst."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    design = np.concatenate([src, np.ones(src.shape[:-1] + (1,))], axis=-1)  # (N, 3, 3): rows [x, y, 1]
    return np.linalg.solve(design, dst).transpose(0, 2, 1)


def _invert_affine(m: np.ndarray) -> np.ndarray:
    """cv2.invertAffineTransform's formulas, for (N, 2, 3) matrices."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = a * e - b * d
    det = np.where(det != 0, 1.0 / np.where(det != 0, det, 1.0), 0.0)
    a2, b2, d2, e2 = e * det, -b * det, -d * det, a * det
    c2 = -a2 * c - b2 * f
    f2 = -d2 * c - e2 * f
    return np.stack([np.stack([a2, b2, c2], -1), np.stack([d2, e2, f2], -1)], 1)


def warp_affine_reflect101(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(image, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_REFLECT_101) per image.

    ``images``: float32 (N, H, W, C); ``matrices``: (N, 2, 3) forward maps (source -> destination).
    Each destination pixel samples the source at the inverse map of its coordinates, quantised as
    OpenCV does, and blends the 4 neighbours in float32 in OpenCV's order.
    """
    n, height, width, _ = images.shape
    inv = _invert_affine(matrices)
    cols, rows = np.arange(width), np.arange(height)
    adelta = np.rint(inv[:, 0, 0, None] * cols * _AB_SCALE).astype(np.int64)  # (N, W)
    bdelta = np.rint(inv[:, 1, 0, None] * cols * _AB_SCALE).astype(np.int64)
    round_delta = _AB_SCALE // _INTER_TAB // 2
    x0 = np.rint((inv[:, 0, 1, None] * rows + inv[:, 0, 2, None]) * _AB_SCALE).astype(np.int64) + round_delta
    y0 = np.rint((inv[:, 1, 1, None] * rows + inv[:, 1, 2, None]) * _AB_SCALE).astype(np.int64) + round_delta
    shift = _AB_BITS - _INTER_BITS
    x = (x0[:, :, None] + adelta[:, None, :]) >> shift  # (N, H, W) in 1/32 pixel
    y = (y0[:, :, None] + bdelta[:, None, :]) >> shift
    fx = (x & (_INTER_TAB - 1)).astype(np.float32) / np.float32(_INTER_TAB)
    fy = (y & (_INTER_TAB - 1)).astype(np.float32) / np.float32(_INTER_TAB)
    x, y = x >> _INTER_BITS, y >> _INTER_BITS
    one = np.float32(1)
    weights = [(one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx]
    xs = (_reflect101(x, width), _reflect101(x + 1, width))
    ys = (_reflect101(y, height), _reflect101(y + 1, height))
    corners = [_gather(images, ys[0], xs[0]), _gather(images, ys[0], xs[1]),
               _gather(images, ys[1], xs[0]), _gather(images, ys[1], xs[1])]
    out = corners[0] * weights[0][..., None]
    for corner, weight in zip(corners[1:], weights[1:]):
        out = out + corner * weight[..., None]
    return out


def map_coordinates_reflect(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """scipy.ndimage.map_coordinates(image, (rows, cols, channel), order=1, mode='reflect') per image.

    ``images``: (N, H, W, C); ``rows``, ``cols``: float64 (N, H, W) sample positions. Computes in
    float64 and returns the input's dtype, as SciPy does.
    """
    n, height, width, _ = images.shape
    r0, c0 = np.floor(rows), np.floor(cols)
    tr, tc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    rs = (_reflect_half(r0, height), _reflect_half(r0 + 1, height))
    cs = (_reflect_half(c0, width), _reflect_half(c0 + 1, width))
    out = ((1 - tr) * (1 - tc) * _gather(images, rs[0], cs[0]) + (1 - tr) * tc * _gather(images, rs[0], cs[1])
           + tr * (1 - tc) * _gather(images, rs[1], cs[0]) + tr * tc * _gather(images, rs[1], cs[1]))
    return out.astype(images.dtype)


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
