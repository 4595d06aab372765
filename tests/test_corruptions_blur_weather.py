"""Blur and weather corruptions: shapes, determinism, and each step against an independent computation."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, zoom as scipy_zoom

import robustgsl.corruptions as corruptions
from corruption_helpers import image_rngs
from robustgsl.corruptions import blur, motion, textures, weather
from robustgsl.errors import InputError

FUNCTIONS = {**blur.FUNCTIONS, **weather.FUNCTIONS}
NAMES = sorted(FUNCTIONS)


def natural_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields with texture and a few flat patches: CIFAR-like statistics."""
    rs = np.random.RandomState(seed)
    base = gaussian_filter(rs.randn(n, 32, 32, 3), (0, 4, 4, 0)) * 240 + rs.randint(40, 200, (n, 1, 1, 3))
    base += gaussian_filter(rs.randn(n, 32, 32, 3), (0, 0.7, 0.7, 0)) * 12
    base[:, :8, :8] = rs.randint(0, 256, (n, 1, 1, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def run(name, images, severity, seed=0, indices=None):
    indices = range(len(images)) if indices is None else indices
    return FUNCTIONS[name](images, severity, image_rngs(seed, name, severity, indices))


@pytest.fixture(scope="module")
def images():
    return natural_images(6)


# ------------------------------------------------------------------ every corruption

@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_determinism_and_batch_split(name, images):
    for severity in (1, 5):
        whole = run(name, images, severity, seed=3)
        assert whole.dtype == np.uint8 and whole.shape == images.shape
        assert np.array_equal(whole, run(name, images, severity, seed=3)), "same seed, different bytes"
        halves = np.concatenate([run(name, images[:2], severity, seed=3, indices=range(0, 2)),
                                 run(name, images[2:], severity, seed=3, indices=range(2, 6))])
        assert np.array_equal(whole, halves), "output depends on how the batch is split"
        assert np.abs(whole.astype(int) - images).mean() > 0.2, "the corruption changed (almost) nothing"
    if name not in ("defocus_blur", "zoom_blur", "gaussian_blur"):  # random ones
        assert not np.array_equal(run(name, images, 5, seed=3), run(name, images, 5, seed=4))


def test_corrupt_entry_point_uses_these_functions(images):
    got = corruptions.corrupt(images, "snow", 2, seed=7, indices=range(10, 16))
    assert np.array_equal(got, run("snow", images, 2, seed=7, indices=range(10, 16)))


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "gaussian_blur", "glass_blur", "motion_blur", "fog"])
def test_severity_increases_the_change(name):
    imgs = natural_images(12, seed=5)
    change = [np.abs(run(name, imgs, s).astype(int) - imgs).mean() for s in range(1, 6)]
    if name == "glass_blur":
        # More blur partly hides the pixel shuffle, so within one iteration count the order is not
        # guaranteed (the reference behaves the same); two shuffles (4, 5) always beat one (1-3).
        assert max(change[:3]) < min(change[3:]), change
    else:
        assert all(a < b for a, b in zip(change, change[1:])), change


# ------------------------------------------------------------------ gaussian blur

def brute_gaussian_nearest(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian (truncate 4 sigma, edge pixels repeated) with explicit loops over taps."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.array([math.exp(-0.5 * k * k / (sigma * sigma)) for k in range(-radius, radius + 1)])
    taps /= taps.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for j, k in enumerate(range(-radius, radius + 1)):
            idx = np.clip(np.arange(size) + k, 0, size - 1)
            acc += taps[j] * np.take(out, idx, axis=axis)
        out = acc
    return out


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_against_direct_computation(images, severity):
    sigma = blur.SEVERITY_PARAMS["gaussian_blur"][severity - 1]
    got = run("gaussian_blur", images, severity).astype(int)
    for i, image in enumerate(images):
        scipy_ref = (np.clip(gaussian_filter(image / 255.0, (sigma, sigma, 0), mode="nearest"), 0, 1) * 255)
        assert np.array_equal(got[i], scipy_ref.astype(np.uint8))
        brute = np.clip(brute_gaussian_nearest(image / 255.0, sigma), 0, 1) * 255
        assert np.abs(got[i] - np.floor(brute)).max() <= 1


# ------------------------------------------------------------------ defocus blur

def test_defocus_kernel_shapes_and_sums():
    for radius, alias in blur.SEVERITY_PARAMS["defocus_blur"]:
        k = blur.disk_kernel(radius, alias).astype(np.float64)
        assert k.dtype == np.float64 and k.shape[0] % 2 == 1 and k.shape == k.shape[::-1]
        assert abs(k.sum() - 1) < 1e-6 and np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
        # disk of radius < 1 is one pixel, so the kernel is the 3x3 gaussian itself (outer product)
        if radius < 1:
            g = np.exp(-0.5 * (np.arange(3) - 1.0) ** 2 / alias ** 2)
            g /= g.sum()
            assert np.allclose(k, np.outer(g, g), rtol=1e-6)


def separable_float32_gaussian3(image: np.ndarray, sigma: float) -> np.ndarray:
    """A 3x3 gaussian blur by its definition in float32: getGaussianKernel(3, sigma) (double, normalised,
    stored as float32), a row pass then a column pass, each k0 a[x-1] + k1 a[x] + k2 a[x+1], REFLECT_101."""
    t = np.exp(-0.5 / (sigma * sigma) * (np.arange(3) - 1.0) ** 2)
    k = (t * (1.0 / t.sum())).astype(np.float32)

    def rows(a):
        p = np.pad(a, ((0, 0), (1, 1)), mode="reflect")
        return (k[0] * p[:, :-2] + k[1] * p[:, 1:-1]) + k[2] * p[:, 2:]

    return rows(rows(image).T).T


def test_defocus_kernel_is_the_reference_disk_bitwise():
    for radius, alias in blur.SEVERITY_PARAMS["defocus_blur"]:
        span = np.arange(-8, 9)
        xx, yy = np.meshgrid(span, span)
        disk = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
        disk /= disk.sum()
        ref = separable_float32_gaussian3(disk, alias)
        rows, cols = np.nonzero(ref)
        assert np.array_equal(blur.disk_kernel(radius, alias), ref[rows.min():rows.max() + 1, cols.min():cols.max() + 1])


@pytest.mark.parametrize("severity", [1, 4, 5])
def test_defocus_with_the_cropped_kernel_equals_the_reference_17x17_one(images, severity):
    radius, alias = blur.SEVERITY_PARAMS["defocus_blur"][severity - 1]
    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    full = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3), sigmaX=alias)
    expected = [np.stack([cv2.filter2D(image[:, :, d] / 255.0, -1, full) for d in range(3)], -1) for image in images]
    assert np.array_equal(run("defocus_blur", images, severity), blur.to_uint8(np.stack(expected)))


@pytest.mark.parametrize("severity", [1, 4, 5])
def test_defocus_against_direct_correlation(images, severity):
    radius, alias = blur.SEVERITY_PARAMS["defocus_blur"][severity - 1]
    k = blur.disk_kernel(radius, alias).astype(np.float64)
    r = k.shape[0] // 2
    got = run("defocus_blur", images, severity).astype(int)
    for i, image in enumerate(images[:3]):
        padded = np.pad(image / 255.0, ((r, r), (r, r), (0, 0)), mode="reflect")  # BORDER_REFLECT_101
        ref = np.zeros((32, 32, 3))
        for a in range(k.shape[0]):
            for b in range(k.shape[1]):
                ref += k[a, b] * padded[a:a + 32, b:b + 32]
        assert np.abs(got[i] - np.floor(np.clip(ref, 0, 1) * 255)).max() <= 1


@pytest.mark.parametrize("value", [0, 1, 77, 128, 254, 255])
def test_defocus_keeps_flat_images_flat(value):
    flat = np.full((2, 32, 32, 3), value, dtype=np.uint8)
    for severity in range(1, 6):
        assert np.array_equal(run("defocus_blur", flat, severity), flat)


# ------------------------------------------------------------------ glass blur

def reference_style_glass(image, sigma, max_delta, iterations, rng):
    """The reference's loop, literally: per-pixel randint draws and the tuple 'swap' of numpy views."""
    x = (np.clip(gaussian_filter(image / 255.0, (sigma, sigma, 0), mode="nearest"), None, None) * 255).astype(np.uint8)
    for _ in range(iterations):
        for h in range(32 - max_delta, max_delta, -1):
            for w in range(32 - max_delta, max_delta, -1):
                dx, dy = rng.randint(-max_delta, max_delta, size=(2,))
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return (np.clip(gaussian_filter(x / 255.0, (sigma, sigma, 0), mode="nearest"), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", [1, 4])
def test_glass_blur_against_the_literal_loop(images, severity):
    sigma, max_delta, iterations = blur.SEVERITY_PARAMS["glass_blur"][severity - 1]
    got = run("glass_blur", images[:2], severity, seed=11)
    for i, rng in enumerate(image_rngs(11, "glass_blur", severity, range(2))):
        assert np.array_equal(got[i], reference_style_glass(images[i], sigma, max_delta, iterations, rng))


def test_glass_shuffle_only_copies_values_from_up_left_neighbours():
    rs = np.random.RandomState(0)
    x = rs.randint(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    before = x.copy()
    draws = rs.randint(-1, 1, size=(1, 30 * 30, 2))
    blur._glass_shuffle(x, draws, 1, 1)
    assert np.array_equal(x[0, :2], before[0, :2]) and np.array_equal(x[0, :, :2], before[0, :, :2])
    k = 0
    for h in range(31, 1, -1):
        for w in range(31, 1, -1):
            dx, dy = draws[0, k]
            k += 1
            assert np.array_equal(x[0, h, w], before[0, h + dy, w + dx])


# ------------------------------------------------------------------ motion blur (ImageMagick model)

def test_motion_kernel_is_one_sided_normalised_gaussian():
    for radius, sigma in [(6, 1), (9, 2.5), (14, 12), (0.5, 1)]:
        k = motion.motion_kernel(radius, sigma)
        assert len(k) == 2 * math.ceil(radius) + 1
        assert abs(k.sum() - 1) < 1e-12 and np.all(np.diff(k) < 0)
        expected = np.exp(-np.arange(len(k)) ** 2 / (2 * sigma ** 2))
        assert np.allclose(k, expected / expected.sum(), rtol=1e-12)


def test_motion_kernel_width_from_sigma_alone():
    # radius 0: widest odd width whose edge weight is still >= 1/65535 (ImageMagick's rule)
    for sigma in (0.5, 1.0, 2.0, 4.0):
        width = motion.kernel_width(0, sigma)
        j = (width - 1) // 2
        taps = np.exp(-np.arange(-j - 1, j + 2) ** 2 / (2 * sigma ** 2))
        assert taps[1] / taps[1:-1].sum() >= 1 / 65535 > taps[0] / taps.sum()


def test_motion_offsets_follow_the_angle():
    dx, dy = motion.motion_offsets(5, 0.0)
    assert list(dx) == [0, 1, 2, 3, 4] and list(dy) == [0] * 5
    dx, dy = motion.motion_offsets(5, 90.0)
    assert list(dx) == [0] * 5 and list(dy) == [0, 1, 2, 3, 4]
    dx, dy = motion.motion_offsets(5, -45.0)
    assert list(dx) == [0, 1, 1, 2, 3] and list(dy) == [0, -1, -1, -2, -3]


def test_motion_blur_against_direct_formula():
    rs = np.random.RandomState(2)
    imgs = rs.randint(0, 256, (2, 12, 10, 3)).astype(np.uint8)
    angles = [17.0, -130.0]
    got = motion.motion_blur_images(imgs, 3, 1.5, angles)
    k = np.exp(-np.arange(7) ** 2 / (2 * 1.5 ** 2))
    k /= k.sum()
    for n, angle in enumerate(angles):
        a = math.radians(angle)
        for y in range(12):
            for x in range(10):
                acc = np.zeros(3)
                for i in range(7):
                    ox = math.ceil(i * math.cos(a) - 0.5)
                    oy = math.ceil(i * math.sin(a) - 0.5)
                    acc += k[i] * 257.0 * imgs[n, min(max(y + oy, 0), 11), min(max(x + ox, 0), 9)]
                expected = np.floor(np.floor(acc + 0.5) / 257)
                assert np.array_equal(got[n, y, x], expected.astype(np.uint8)), (n, y, x)


def test_motion_blur_keeps_flat_images_flat():
    flat = np.full((3, 32, 32, 3), 200, dtype=np.uint8)
    assert np.array_equal(motion.motion_blur_images(flat, 9, 2.5, [0, 33, -80]), flat)


# ------------------------------------------------------------------ zoom blur

def reference_style_zoom_blur(image, factors):
    x = (image / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for f in factors:
        ch = int(np.ceil(32 / f))
        top = (32 - ch) // 2
        z = scipy_zoom(x[top:top + ch, top:top + ch], (f, f, 1), order=1)
        trim = (z.shape[0] - 32) // 2
        out += z[trim:trim + 32, trim:trim + 32]
    x = (x + out) / (len(factors) + 1)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def test_zoom_factor_lists_have_the_reference_lengths():
    # np.arange's float rounding keeps the stop value in the first two lists only
    assert [len(blur.zoom_factors(s)) for s in range(1, 6)] == [7, 12, 16, 21, 26]
    assert np.allclose([blur.zoom_factors(s)[-1] for s in range(1, 6)], [1.06, 1.11, 1.15, 1.20, 1.25])


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_zoom_blur_against_scipy_zoom(images, severity):
    got = run("zoom_blur", images[:3], severity)
    for i in range(3):
        assert np.array_equal(got[i], reference_style_zoom_blur(images[i], blur.zoom_factors(severity)))


def test_clipped_zoom_float64_against_scipy():
    x = np.random.RandomState(1).rand(2, 32, 32, 1)
    for f in (1.0, 1.25, 1.75, 2.25):
        ch = int(np.ceil(32 / f))
        top = (32 - ch) // 2
        for i in range(2):
            z = scipy_zoom(x[i, top:top + ch, top:top + ch], (f, f, 1), order=1)
            trim = (z.shape[0] - 32) // 2
            assert np.array_equal(blur.clipped_zoom(x, f)[i], z[trim:trim + 32, trim:trim + 32])


def test_zoom_blur_on_flat_image_is_flat():
    flat = np.full((1, 32, 32, 3), 90, dtype=np.uint8)
    for severity in (1, 5):
        out = run("zoom_blur", flat, severity)
        assert np.ptp(out) <= 1 and abs(int(out[0, 0, 0, 0]) - 90) <= 1


# ------------------------------------------------------------------ weather

def test_snow_and_frost_brighten_dark_images():
    dark = np.full((8, 32, 32, 3), 20, dtype=np.uint8)
    for name in ("snow", "frost"):
        for severity in (1, 5):
            assert run(name, dark, severity).mean() > dark.mean() + 1, (name, severity)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_fog_on_flat_image_spans_the_expected_range(severity):
    # fog adds c * plasma (plasma in [0, 1], min 0 and max 1) and rescales by max / (max + c): on a flat
    # image of value v the output runs from v * v' / (v' + c) to v, with v' = v / 255.
    strength = weather.SEVERITY_PARAMS["fog"][severity - 1][0]
    value = 128
    out = run("fog", np.full((4, 32, 32, 3), value, dtype=np.uint8), severity).astype(int)
    v = value / 255
    low = value * v / (v + strength)
    for image in out:
        assert abs(image.max() - value) <= 1 and abs(image.min() - low) <= 1


def test_snow_severity_order():
    imgs = natural_images(16, seed=9)
    change = {s: np.abs(run("snow", imgs, s).astype(int) - imgs).mean() for s in (1, 2, 4, 5)}
    assert change[1] < change[2] < change[4] < change[5], change


def test_rgb_to_gray_weights():
    x = np.random.RandomState(0).rand(50, 3).astype(np.float32)
    expected = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(weather.rgb_to_gray_float32(x), expected, atol=1e-6)
    img = np.random.RandomState(1).rand(64, 64, 3).astype(np.float32)
    assert np.array_equal(weather.rgb_to_gray_float32(img), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))


def test_opencv_gray_bytes_depend_on_its_code_path_so_the_copy_stays():
    img = np.random.RandomState(2).rand(64, 64, 3).astype(np.float32)
    try:
        cv2.setUseOptimized(False)
        generic = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    finally:
        cv2.setUseOptimized(True)
    ours = weather.rgb_to_gray_float32(img)
    assert not np.array_equal(ours, generic) and np.allclose(ours, generic, rtol=2**-22, atol=0)


def test_frost_is_a_weighted_sum_with_a_window_of_frost1_to_5():
    black = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    severity = 3
    weight = weather.SEVERITY_PARAMS["frost"][severity - 1][1]
    out = run("frost", black, severity, seed=5)
    windows = [np.lib.stride_tricks.sliding_window_view(textures.frost_texture(i), (32, 32, 3))[..., 0, :, :, :]
               for i in range(5)]
    for image in out:
        found = any(np.any(np.all(np.floor(weight * w.astype(np.float64)) == image, axis=(-3, -2, -1)))
                    for w in windows)
        assert found, "frost output is not weight * (a 32x32 window of frost1..frost5)"


def test_plasma_fractal_against_pointwise_diamond_square():
    mapsize, decay = 8, 2.0
    uniforms = np.random.RandomState(3).rand(2, weather._plasma_draw_count(mapsize))
    got = weather.plasma_fractal(uniforms, mapsize, decay)
    for n in range(2):
        m = np.zeros((mapsize, mapsize))
        u = iter(uniforms[n])
        step, wibble = mapsize, 100.0

        def noise():
            return wibble * (-wibble + 2 * wibble * next(u))

        while step >= 2:
            half = step // 2
            for i in range(0, mapsize, step):  # squares, row-major
                for j in range(0, mapsize, step):
                    corners = (m[i, j] + m[(i + step) % mapsize, j]) + (m[i, (j + step) % mapsize]
                                                                        + m[(i + step) % mapsize, (j + step) % mapsize])
                    m[i + half, j + half] = corners / 4 + noise()
            fills = []
            for i in range(0, mapsize, step):  # diamonds between horizontal neighbours
                for j in range(0, mapsize, step):
                    s = (m[i + half, j + half] + m[(i - half) % mapsize, j + half]) + (m[i, j] + m[i, (j + step) % mapsize])
                    fills.append((i, j + half, s / 4 + noise()))
            for i, j, v in fills:
                m[i, j] = v
            fills = []
            for i in range(0, mapsize, step):  # diamonds between vertical neighbours
                for j in range(0, mapsize, step):
                    s = (m[i + half, j + half] + m[i + half, (j - half) % mapsize]) + (m[i, j] + m[(i + step) % mapsize, j])
                    fills.append((i + half, j, s / 4 + noise()))
            for i, j, v in fills:
                m[i, j] = v
            step //= 2
            wibble /= decay
        m -= m.min()
        assert np.allclose(got[n], m / m.max(), atol=1e-12)


def test_fog_draws_the_reference_number_of_uniforms():
    assert weather._plasma_draw_count(32) == 1023
    rng = image_rngs(0, "fog", 1, [0])[0]
    weather.fog(np.zeros((1, 32, 32, 3), np.uint8), 1, [rng])
    fresh = image_rngs(0, "fog", 1, [0])[0]
    fresh.random_sample(1023)
    assert rng.random_sample() == fresh.random_sample()


# ------------------------------------------------------------------ spatter's OpenCV steps

def spatter_layers(n: int, severity: int, seed: int = 4) -> np.ndarray:
    """The uint8 liquid layers spatter (severities 1-3) hands to its OpenCV steps."""
    loc, scale, sigma, threshold, _, _ = weather.SEVERITY_PARAMS["spatter"][severity - 1]
    rs = np.random.RandomState(seed)
    layer = gaussian_filter(rs.normal(loc, scale, (n, 32, 32)), (0, sigma, sigma), mode="nearest")
    layer[layer < threshold] = 0
    return (np.clip(layer, 0, 1) * 255).astype(np.uint8)


def chamfer_5x5_fixed_point(src: np.ndarray) -> np.ndarray:
    """OpenCV's generic 5x5 DIST_L2 chamfer: steps 1, 1.4, 2.1969 rounded to 1/65536, integer sums."""
    one = 1 << 16
    steps = {1: round(1.0 * one), 2: round(1.4 * one), 5: round(2.1969 * one)}  # by squared offset
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx in steps]
    h, w = src.shape
    far = 1 << 40
    t = np.where(src == 0, 0, far).astype(np.int64)
    for order in (1, -1):  # forward: neighbours before (y, x) in scan order; backward: after it
        ys, xs = (range(h), range(w)) if order == 1 else (range(h - 1, -1, -1), range(w - 1, -1, -1))
        for y in ys:
            for x in xs:
                for dy, dx in offsets:
                    if (dy, dx) > (0, 0) if order == -1 else (dy, dx) < (0, 0):
                        if 0 <= y + dy < h and 0 <= x + dx < w:
                            t[y, x] = min(t[y, x], t[y + dy, x + dx] + steps[dy * dy + dx * dx])
    return (t * np.float32(1.0 / one)).astype(np.float32)


def test_distance_transform_is_opencvs_ipp_result_on_every_build():
    """The copy equals OpenCV's IPP path (x86 builds), while OpenCV's generic path (other builds, or with
    optimisations off) rounds the steps to 1/65536: the reason it stays."""
    layers = spatter_layers(12, 3)
    ipp = cv2.ipp.useIPP()
    for layer in layers:
        inverse = 255 - cv2.Canny(layer, 50, 150)
        ours = weather.distance_transform_5x5(inverse)
        if ipp:
            assert np.array_equal(ours, cv2.distanceTransform(inverse, cv2.DIST_L2, 5))
        try:
            cv2.setUseOptimized(False)
            generic = cv2.distanceTransform(inverse, cv2.DIST_L2, 5)
        finally:
            cv2.setUseOptimized(True)
        assert np.array_equal(generic, chamfer_5x5_fixed_point(inverse))
        assert np.allclose(ours, generic, atol=1e-3)
    assert not np.array_equal(ours, generic)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_liquid_relief_is_the_reference_opencv_chain(severity):
    for layer in spatter_layers(20, severity, seed=severity):
        edges = cv2.Canny(layer, 50, 150)
        assert edges.dtype == np.uint8 and set(np.unique(edges)) <= {0, 255}
        dist = weather.distance_transform_5x5(255 - edges)
        dist = np.minimum(dist, np.float32(20))  # the reference's cv2.threshold(THRESH_TRUNC, 20)
        padded = np.pad(dist.astype(np.float64), 1, mode="reflect")  # box blur by hand, BORDER_REFLECT_101
        dist = (sum(padded[i:i + 32, j:j + 32] for i in range(3) for j in range(3)) / 9).astype(np.float32)
        dist = cv2.equalizeHist(dist.astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, weather.SPATTER_KERNEL)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        np.testing.assert_array_equal(weather.liquid_relief(layer), dist)


def test_mud_spatter_only_darkens_towards_brown():
    white = np.full((4, 32, 32, 3), 255, dtype=np.uint8)
    out = run("spatter", white, 5).astype(int)
    changed = np.any(out != 255, axis=-1)
    assert changed.any()
    assert np.all(out[changed][:, 0] >= out[changed][:, 2])  # brown: red >= blue


# ------------------------------------------------------------------ frost textures

def test_frost_textures_found_without_importing_the_package():
    sys.modules.pop("imagecorruptions", None)
    assert textures.frost_directory().is_dir()
    t = textures.frost_texture(0)
    assert t.dtype == np.uint8 and t.shape == (120, 180, 3) and not t.flags.writeable
    assert "imagecorruptions" not in sys.modules


def test_frost_texture_is_every_fifth_pixel_of_the_decoded_file():
    # cv2.resize by 0.2 samples the source at (d + 0.5) / 0.2 - 0.5 = 5 d + 2, a pixel centre: pure sampling.
    for i in range(6):
        with Image.open(textures.frost_path(i)) as image:  # Pillow's decoder, independent of OpenCV's
            rgb = np.asarray(image.convert("RGB"))
        height, width = round(rgb.shape[0] * 0.2), round(rgb.shape[1] * 0.2)
        expected = rgb[5 * np.arange(height) + 2][:, 5 * np.arange(width) + 2]
        assert np.array_equal(textures.frost_texture(i), expected)


def test_missing_frost_package_is_a_clear_input_error(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install imagecorruptions"):
        textures.frost_directory()


def test_missing_frost_file_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setattr(textures, "frost_directory", lambda: tmp_path)
    textures.frost_texture.cache_clear()
    try:
        with pytest.raises(InputError, match="frost1.png") as info:
            textures.frost_texture(0)
        assert str(tmp_path) in str(info.value) and "pip install imagecorruptions" in str(info.value)
    finally:
        textures.frost_texture.cache_clear()
