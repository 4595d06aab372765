"""Weather corruptions: snow, frost, fog, and the extra spatter.

Each follows its function in make_cifar_c.py (hendrycks/robustness), with the same random draws in
the same order from the image's own generator, and the same floating-point types, so that the
final truncation to uint8 lands on the same integer:

- snow: a normal(loc, scale) snow layer, ``clipped_zoom``, threshold, an 8-bit greyscale image,
  ImageMagick motion blur at a uniform(-135, -45) angle (``motion.py``), blend of the image with its
  brightened grey version (``cv2.cvtColor(RGB2GRAY)`` in float32), plus the layer and its 180 degree
  rotation.
- frost: texture ``randint(5)`` (frost1..frost5; frost6 is never drawn), shrunk x0.2, a random 32x32
  crop (row start then column start, each ``randint(0, size - 32)``), ``a * image + b * frost``.
- fog: the reference's diamond-square ``plasma_fractal(mapsize=32)``, for the whole batch at once.
- spatter: gaussian-smoothed normal noise; severities 1-3 "liquid" (the reference's OpenCV calls: edges,
  distance transform, equalisation, emboss), 4-5 "mud".
"""

from __future__ import annotations

import cv2
import numba
import numpy as np
from scipy.ndimage import gaussian_filter

from robustgsl.corruptions.blur import clipped_zoom, to_uint8
from robustgsl.corruptions.motion import motion_blur_images
from robustgsl.corruptions.textures import frost_texture

# CIFAR severity constants (severities 1..5) from hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py (Apache-2.0, 2019). These are the CIFAR values, not ImageNet-C's.
SEVERITY_PARAMS: dict[str, tuple] = {
    # (layer mean, layer std, zoom factor, threshold, blur radius, blur sigma, weight of the image)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (weight of the image, weight of the frost texture)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (fog strength, wibble decay of the plasma fractal)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # (layer mean, layer std, layer sigma, threshold, intensity or mud sigma, 0 = liquid / 1 = mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
}

FROST_CHOICES = 5  # the CIFAR script draws np.random.randint(5): frost1..frost5
PLASMA_MAPSIZE = 32  # plasma_fractal's default in make_cifar_c.py, cropped to the image

ANY_SIZE: frozenset[str] = frozenset()


def _float32_fma(a: np.ndarray, b: np.float32, c: np.ndarray) -> np.ndarray:
    # a*b of two float32 is exact in float64, so this rounds once (up to a double-rounding tie).
    return (a.astype(np.float64) * np.float64(b) + c).astype(np.float32)


def rgb_to_gray_float32(x: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(x, COLOR_RGB2GRAY)`` for float32 RGB (..., 3): 0.299 R + 0.587 G + 0.114 B.

    Evaluated as OpenCV's SIMD path (4.x/5.x, with FMA) does, fma(B, cb, fma(R, cr, G * cg)) in float32.
    Kept: OpenCV's float32 bytes depend on its code path (its generic one rounds twice, not once).
    """
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    cr, cg, cb = np.float32(0.299), np.float32(0.587), np.float32(0.114)
    return _float32_fma(b, cb, _float32_fma(r, cr, g * cg))


# ---------------------------------------------------------------- snow

def snow(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, keep = SEVERITY_PARAMS["snow"][severity - 1]
    n, height, width, _ = images.shape
    x = np.asarray(images, dtype=np.float32) / np.float32(255)
    layer = np.empty((n, height, width, 1), dtype=np.float64)
    angles = np.empty(n)
    for i in range(n):  # per image: the normal layer first, then the angle (the reference's order)
        layer[i, ..., 0] = rngs[i].normal(size=(height, width), loc=loc, scale=scale)
    layer = clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0
    layer_u8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    for i in range(n):
        angles[i] = rngs[i].uniform(-135, -45)
    snow_layer = motion_blur_images(layer_u8, radius, sigma, angles) / 255.0
    gray = rgb_to_gray_float32(x)[..., None] * np.float32(1.5) + np.float32(0.5)
    x = np.float32(keep) * x + np.float32(1 - keep) * np.maximum(x, gray)
    return to_uint8(x + snow_layer + snow_layer[:, ::-1, ::-1])


# ---------------------------------------------------------------- frost

def frost(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    image_weight, frost_weight = SEVERITY_PARAMS["frost"][severity - 1]
    n, height, width, _ = images.shape
    crops = np.empty_like(images)
    for i in range(n):
        texture = frost_texture(int(rngs[i].randint(FROST_CHOICES)))
        top = rngs[i].randint(0, texture.shape[0] - height)
        left = rngs[i].randint(0, texture.shape[1] - width)
        crops[i] = texture[top:top + height, left:left + width]
    mixed = image_weight * images.astype(np.float64) + frost_weight * crops.astype(np.float64)
    return np.clip(mixed, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- fog

def _plasma_draw_count(mapsize: int) -> int:
    count, stepsize = 0, mapsize
    while stepsize >= 2:
        count += 3 * (mapsize // stepsize) ** 2  # one square fill, two diamond fills
        stepsize //= 2
    return count


def plasma_fractal(uniforms: np.ndarray, mapsize: int, wibbledecay: float) -> np.ndarray:
    """The reference's diamond-square ``plasma_fractal`` for a batch: (N, mapsize, mapsize) in [0, 1].

    ``uniforms`` (N, draws) are each image's ``random_sample`` stream; the reference's
    ``np.random.uniform(-w, w, shape)`` calls are ``-w + 2w * u`` on consecutive slices of it, in the
    order square fill, diamond fill (rows), diamond fill (columns), for each step size.
    """
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    n = uniforms.shape[0]
    maparray = np.empty((n, mapsize, mapsize), dtype=np.float64)
    maparray[:, 0, 0] = 0
    stepsize = mapsize
    wibble = 100
    used = 0

    def wibbledmean(array):
        nonlocal used
        size = array.shape[1] * array.shape[2]
        u = uniforms[:, used:used + size].reshape(array.shape)
        used += size
        low = -wibble
        return array / 4 + wibble * (low + (wibble - low) * u)

    while stepsize >= 2:
        half = stepsize // 2
        # squares: middle of each square of corners stepsize apart
        corners = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=1)
        squares += np.roll(squares, shift=-1, axis=2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        # diamonds: midpoints of the edges
        centres = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        left_sum = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=2))
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(left_sum)
        top_sum = (centres + np.roll(centres, 1, axis=2)) + (corners + np.roll(corners, -1, axis=1))
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top_sum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    return maparray / maparray.max(axis=(1, 2), keepdims=True)


def fog(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    strength, decay = SEVERITY_PARAMS["fog"][severity - 1]
    n, height, width, _ = images.shape
    draws = _plasma_draw_count(PLASMA_MAPSIZE)
    uniforms = np.empty((n, draws))
    for i in range(n):
        uniforms[i] = rngs[i].random_sample(draws)
    plasma = plasma_fractal(uniforms, PLASMA_MAPSIZE, decay)[:, :height, :width, None]
    x = images / 255.0
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * plasma
    return to_uint8(x * max_val / (max_val + strength))


# ---------------------------------------------------------------- spatter

# cv2.distanceTransform(DIST_L2, 5): a 5x5 chamfer distance with steps 1 (edge), 1.4 (diagonal) and
# 2.1969 (knight's move), OpenCV's mask for DIST_L2; a forward and a backward pass over the image, pixels
# outside the image being infinitely far.
# Kept: OpenCV's bytes depend on its build (IPP adds the float32 steps in float32, as here; generic code rounds).
_DT_STEPS = (np.float32(1.0), np.float32(1.4), np.float32(2.1969))
_DT_FAR = np.finfo(np.float32).max  # what OpenCV returns when there is no zero pixel at all


@numba.njit(cache=True, nogil=True)
def distance_transform_5x5(src):
    h, w = src.shape
    hv, diag, knight = _DT_STEPS
    t = np.full((h + 4, w + 4), _DT_FAR, dtype=np.float32)
    for y in range(h):  # forward pass: neighbours above and to the left
        for x in range(w):
            yy, xx = y + 2, x + 2
            if src[y, x] == 0:
                t[yy, xx] = 0
                continue
            t0 = t[yy - 2, xx - 1] + knight
            t0 = min(t0, t[yy - 2, xx + 1] + knight)
            t0 = min(t0, t[yy - 1, xx - 2] + knight)
            t0 = min(t0, t[yy - 1, xx - 1] + diag)
            t0 = min(t0, t[yy - 1, xx] + hv)
            t0 = min(t0, t[yy - 1, xx + 1] + diag)
            t0 = min(t0, t[yy - 1, xx + 2] + knight)
            t0 = min(t0, t[yy, xx - 1] + hv)
            t[yy, xx] = t0
    for y in range(h - 1, -1, -1):  # backward pass: neighbours below and to the right
        for x in range(w - 1, -1, -1):
            yy, xx = y + 2, x + 2
            t0 = t[yy, xx]
            t0 = min(t0, t[yy + 2, xx + 1] + knight)
            t0 = min(t0, t[yy + 2, xx - 1] + knight)
            t0 = min(t0, t[yy + 1, xx + 2] + knight)
            t0 = min(t0, t[yy + 1, xx + 1] + diag)
            t0 = min(t0, t[yy + 1, xx] + hv)
            t0 = min(t0, t[yy + 1, xx - 1] + diag)
            t0 = min(t0, t[yy + 1, xx - 2] + knight)
            t0 = min(t0, t[yy, xx + 1] + hv)
            t[yy, xx] = t0
    return t[2:h + 2, 2:w + 2].copy()


# The reference's emboss kernel for the liquid's edge relief.
SPATTER_KERNEL = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
# Colours (RGB / 255): pale turquoise water, brown mud.
_WATER = (175, 238, 238)
_MUD = (63, 42, 20)


def liquid_relief(layer: np.ndarray) -> np.ndarray:
    """The reference's OpenCV steps for one uint8 liquid layer: distance to its edges, equalised, embossed."""
    dist = distance_transform_5x5(255 - cv2.Canny(layer, 50, 150))
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, SPATTER_KERNEL)
    return cv2.blur(dist, (3, 3)).astype(np.float32)


def spatter(images: np.ndarray, severity: int, rngs) -> np.ndarray:
    loc, scale, sigma, threshold, intensity, mud = SEVERITY_PARAMS["spatter"][severity - 1]
    n, height, width, _ = images.shape
    x = np.asarray(images, dtype=np.float32) / np.float32(255)
    liquid = np.empty((n, height, width), dtype=np.float64)
    for i in range(n):
        liquid[i] = rngs[i].normal(size=(height, width), loc=loc, scale=scale)
    liquid = gaussian_filter(liquid, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)
    liquid[liquid < threshold] = 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if mud == 0:
            layer = (liquid * 255).astype(np.uint8)
            m = layer * np.stack([liquid_relief(image) for image in layer])  # float32
            m = m / m.max(axis=(1, 2), keepdims=True)
            m = m * np.float32(intensity)
            color = np.array([c / 255.0 for c in _WATER], dtype=np.float32)
            out = np.clip(x + m[..., None] * color, 0, 1)
            return (out * np.float32(255)).astype(np.uint8)
        m = np.where(liquid > threshold, 1, 0).astype(np.float32)
        m = gaussian_filter(m, sigma=(0, intensity, intensity), mode="nearest", truncate=4.0)
        m[m < 0.8] = 0
        color = np.array([c / 255.0 for c in _MUD], dtype=np.float32) * m[..., None]
        x = x * (1 - m[..., None])
        return (np.clip(x + color, 0, 1) * np.float32(255)).astype(np.uint8)


FUNCTIONS = {
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "spatter": spatter,
}
