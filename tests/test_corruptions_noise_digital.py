"""Strength of the noise and digital corruptions against their CIFAR constants, each checked by an
independent computation (statistics of flat images, colorsys, scikit-image, plain loops, scipy, OpenCV,
the IJG formula)."""

import colorsys
from io import BytesIO

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image
from skimage.color import hsv2rgb, rgb2hsv

from corruption_helpers import image_rng, photo_crops as natural_images
from robustgsl.corruptions import corrupt
from robustgsl.corruptions import digital, noise


IMAGES = natural_images(6)


def flat(value: int, n: int = 16) -> np.ndarray:
    return np.full((n, 32, 32, 3), value, dtype=np.uint8)


def test_constants_are_the_cifar_ones():
    # make_cifar_c.py values (ImageNet-C's are larger: e.g. gaussian 0.08..0.38, shot 60..3).
    assert noise.SEVERITY_PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert noise.SEVERITY_PARAMS["shot_noise"] == (500, 250, 100, 75, 50)
    assert noise.SEVERITY_PARAMS["impulse_noise"] == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert digital.SEVERITY_PARAMS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert digital.SEVERITY_PARAMS["pixelate"] == (0.95, 0.9, 0.85, 0.75, 0.65)
    assert digital.SEVERITY_PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_std_on_flat_images(severity):
    c = noise.SEVERITY_PARAMS["gaussian_noise"][severity - 1]
    out = corrupt(flat(128), "gaussian_noise", severity).astype(float)
    # Truncation to uint8 shifts the mean by about -0.5 level and adds 1/12 level^2 of variance.
    assert abs(out.mean() - (128 - 0.5)) < 0.5
    std = np.sqrt(out.var() - 1 / 12) / 255
    assert abs(std - c) < 0.03 * c


@pytest.mark.parametrize("severity", range(1, 6))
@pytest.mark.parametrize("value", [40, 120])  # low enough that clipping at 1 is negligible
def test_shot_noise_variance_is_intensity_over_lambda(severity, value):
    lam = noise.SEVERITY_PARAMS["shot_noise"][severity - 1]
    x = value / 255
    out = corrupt(flat(value), "shot_noise", severity).astype(float) / 255
    assert abs(out.mean() + 0.5 / 255 - x) < 0.01 * x
    expected_var = x / lam + (1 / 12) / 255**2  # Poisson(x * lam) / lam, plus truncation
    assert abs(out.var() / expected_var - 1) < 0.06


@pytest.mark.parametrize("severity", range(1, 6))
def test_impulse_noise_fraction_and_balance(severity):
    amount = noise.SEVERITY_PARAMS["impulse_noise"][severity - 1]
    out = corrupt(flat(100, n=32), "impulse_noise", severity)
    n = out.size
    salt, pepper = (out == 255).mean(), (out == 0).mean()
    sigma = np.sqrt(amount * (1 - amount) / n)
    assert abs(salt + pepper - amount) < 4 * sigma
    assert abs(salt - amount / 2) < 4 * np.sqrt(amount / 2 / n)
    assert np.all((out == 0) | (out == 100) | (out == 255))  # every other value is untouched


def test_impulse_noise_draws_two_uniform_arrays_like_legacy_choice():
    # skimage 0.14 s&p: flipped ~ choice([T, F], p=[a, 1-a]), salt ~ choice([T, F], p=[.5, .5]), in order.
    image = IMAGES[:1]
    out = corrupt(image, "impulse_noise", 4, seed=3, indices=[11])[0]
    rng = image_rng(3, "impulse_noise", 4, 11)
    flipped = rng.choice([True, False], size=image.shape[1:], p=[0.05, 0.95])
    salted = rng.choice([True, False], size=image.shape[1:], p=[0.5, 0.5])
    expected = image[0].copy()
    expected[flipped & salted] = 255
    expected[flipped & ~salted] = 0
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("severity", [1, 5])
def test_speckle_noise_std_scales_with_intensity(severity):
    c = noise.SEVERITY_PARAMS["speckle_noise"][severity - 1]
    for value in (60, 120):  # low enough that clipping at 1 is negligible
        out = corrupt(flat(value), "speckle_noise", severity).astype(float)
        std = np.sqrt(out.var() - 1 / 12) / 255
        assert abs(std - c * value / 255) < 0.04 * c * value / 255


def test_gaussian_noise_is_the_reference_stream_and_truncates():
    out = corrupt(IMAGES[:2], "gaussian_noise", 2, seed=5, indices=[0, 1])
    for i in range(2):
        noise_i = image_rng(5, "gaussian_noise", 2, i).normal(size=(32, 32, 3), scale=0.06)
        expected = np.floor(np.clip(IMAGES[i] / 255 + noise_i, 0, 1) * 255)
        np.testing.assert_array_equal(out[i], expected)


# ---------------------------------------------------------------- contrast, brightness, saturate


@pytest.mark.parametrize("severity", range(1, 6))
def test_contrast_against_plain_loops(severity):
    c = digital.SEVERITY_PARAMS["contrast"][severity - 1]
    images = IMAGES[:2]
    out = corrupt(images, "contrast", severity).astype(int)
    for i in range(len(images)):
        for ch in range(3):
            values = [images[i, y, x, ch] / 255 for y in range(32) for x in range(32)]
            mean = sum(values) / len(values)
            expected = np.array([int(min(max((v - mean) * c + mean, 0), 1) * 255) for v in values]).reshape(32, 32)
            diff = np.abs(out[i, :, :, ch] - expected)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def _hsv_loop(image, change):
    """Per pixel with the standard library's colorsys, an independent HSV implementation."""
    out = np.empty((32, 32, 3), dtype=int)
    for y in range(32):
        for x in range(32):
            h, s, v = colorsys.rgb_to_hsv(*(image[y, x] / 255))
            r, g, b = colorsys.hsv_to_rgb(*change(h, s, v))
            out[y, x] = [int(min(max(t, 0), 1) * 255) for t in (r, g, b)]
    return out


@pytest.mark.parametrize("severity", range(1, 6))
def test_brightness_against_colorsys(severity):
    c = digital.SEVERITY_PARAMS["brightness"][severity - 1]
    out = corrupt(IMAGES[:2], "brightness", severity).astype(int)
    for i in range(2):
        expected = _hsv_loop(IMAGES[i], lambda h, s, v: (h, s, min(max(v + c, 0), 1)))
        diff = np.abs(out[i] - expected)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


@pytest.mark.parametrize("severity", range(1, 6))
def test_saturate_against_colorsys(severity):
    factor, offset = digital.SEVERITY_PARAMS["saturate"][severity - 1]
    out = corrupt(IMAGES[:2], "saturate", severity).astype(int)
    for i in range(2):
        expected = _hsv_loop(IMAGES[i], lambda h, s, v: (h, min(max(s * factor + offset, 0), 1), v))
        diff = np.abs(out[i] - expected)  # colorsys rounds differently: truncation can flip by 1
        assert diff.max() <= 1 and (diff == 0).mean() > 0.97


def test_hsv_round_trip_and_grey_pixels():
    # scikit-image's conversion, whose formulas the compiled brightness / saturate kernel runs per pixel.
    rgb = np.random.RandomState(0).rand(500, 3)
    rgb[:50] = rgb[:50, :1]  # grey: hue and saturation 0
    hsv = rgb2hsv(rgb)
    assert np.all(hsv[:50, :2] == 0)
    np.testing.assert_allclose(hsv2rgb(hsv), rgb, atol=1e-12)
    expected = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    np.testing.assert_allclose(hsv, expected, atol=1e-12)


# ---------------------------------------------------------------- pixelate, JPEG


def _box_pass_loop(image, out_size, axis):
    """One pass of Pillow's BOX resampling along ``axis``, by its definition: output pixel o, centred at
    c = (o + 0.5) * scale in input coordinates, averages the input pixels j with
    c - 0.5 - f / 2 < j <= c - 0.5 + f / 2, f = max(scale, 1); then rounds to an integer level."""
    image = np.moveaxis(image, axis, 0)
    n_in = image.shape[0]
    scale = n_in / out_size
    f = max(scale, 1.0)
    out = np.empty((out_size,) + image.shape[1:])
    for o in range(out_size):
        centre = (o + 0.5) * scale
        members = [j for j in range(n_in) if centre - 0.5 - f / 2 < j <= centre - 0.5 + f / 2]
        out[o] = np.floor(np.mean([image[j] for j in members], axis=0) + 0.5)
    return np.moveaxis(out, 0, axis)


def _box_resize_loop(image, size):
    """Pillow's resize: horizontal pass, then vertical pass, each rounded (skipped when unchanged)."""
    if size != image.shape[1]:
        image = _box_pass_loop(image, size, axis=1)
    if size != image.shape[0]:
        image = _box_pass_loop(image, size, axis=0)
    return image


@pytest.mark.parametrize("severity", range(1, 6))
def test_pixelate_against_box_averages(severity):
    c = digital.SEVERITY_PARAMS["pixelate"][severity - 1]
    small = int(32 * c)
    out = corrupt(IMAGES[:2], "pixelate", severity).astype(float)
    for i in range(2):
        expected = _box_resize_loop(_box_resize_loop(IMAGES[i].astype(float), small), 32)
        # Pillow's fixed-point weights may still round an exact half differently.
        diff = np.abs(out[i] - expected)
        assert diff.max() <= 1 and diff.mean() < 0.01


def _ijg_table(base, quality):
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((np.asarray(base) * scale + 50) // 100, 1, 255)


# The standard luminance quantisation table (JPEG Annex K.1), in natural order.
LUMINANCE = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


@pytest.mark.parametrize("severity", range(1, 6))
def test_jpeg_uses_the_quality_constant(severity):
    quality = digital.SEVERITY_PARAMS["jpeg_compression"][severity - 1]
    encoded = Image.open(BytesIO(digital.jpeg_bytes(IMAGES[0], quality)))
    # Pillow reports the luminance table in natural order.
    np.testing.assert_array_equal(np.asarray(encoded.quantization[0]), _ijg_table(LUMINANCE, quality))
    out = corrupt(IMAGES[:1], "jpeg_compression", severity)[0]
    np.testing.assert_array_equal(out, np.asarray(encoded.convert("RGB")))


def test_jpeg_error_grows_as_quality_falls():
    errors = [np.abs(corrupt(IMAGES, "jpeg_compression", s).astype(float) - IMAGES).mean() for s in range(1, 6)]
    assert errors == sorted(errors) and errors[0] > 0


# ---------------------------------------------------------------- elastic transform pieces


def test_warp_integer_translation_is_a_reflect101_shift():
    image = IMAGES[:1].astype(np.float32) / 255
    tx, ty = 3, -2
    matrix = np.array([[[1.0, 0, tx], [0, 1.0, ty]]])
    out = digital.warp_affine_reflect101(image, matrix)[0]
    padded = np.pad(image[0], ((8, 8), (8, 8), (0, 0)), mode="reflect")  # numpy 'reflect' == REFLECT_101
    np.testing.assert_array_equal(out, padded[8 - ty:8 - ty + 32, 8 - tx:8 - tx + 32])


def test_warp_is_opencv_4s_fixed_point_warp():
    """The copy is OpenCV 4.x's warpAffine (the reference's): identical to it there; OpenCV 5.0 changed the
    warp (so the copy stays), though still within one 1/32-pixel step of ours."""
    rs = np.random.RandomState(3)
    images = IMAGES.astype(np.float32) / 255
    anchors = np.float32([[26, 26], [26, 6], [6, 6]])
    moved = anchors + rs.uniform(-2.5, 2.5, (len(images), 3, 2)).astype(np.float32)
    matrices = digital.affine_from_points(np.broadcast_to(anchors, moved.shape), moved)
    ours = digital.warp_affine_reflect101(images, matrices)
    opencv = np.stack([cv2.warpAffine(image, m, (32, 32), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                       for image, m in zip(images, matrices)])
    if cv2.__version__.startswith("4."):
        np.testing.assert_array_equal(ours, opencv)
    else:
        assert not np.array_equal(ours, opencv)
        assert np.abs(ours - opencv).max() < 0.05


def test_affine_maps_are_opencvs():
    anchors = np.float32([[26, 26], [26, 6], [6, 6]])
    moved = anchors + np.random.RandomState(5).uniform(-2, 2, (4, 3, 2)).astype(np.float32)
    matrices = digital.affine_from_points(np.broadcast_to(anchors, moved.shape), moved)
    for m, target in zip(matrices, moved):
        np.testing.assert_array_equal(m, cv2.getAffineTransform(anchors, target))
    assert digital.affine_from_points(np.zeros((0, 3, 2)), np.zeros((0, 3, 2))).shape == (0, 2, 3)


def test_warp_matches_scipy_affine_transform_up_to_fixed_point():
    rs = np.random.RandomState(0)
    images = IMAGES[:3].astype(np.float32) / 255
    anchors = np.float32([[26, 26], [26, 6], [6, 6]])
    moved = anchors + rs.uniform(-2.5, 2.5, (3, 3, 2)).astype(np.float32)
    matrices = digital.affine_from_points(np.broadcast_to(anchors, moved.shape), moved)
    # The matrices map each anchor to its moved point.
    homogeneous = np.concatenate([anchors, np.ones((3, 1))], 1)
    np.testing.assert_allclose(np.einsum("nij,kj->nki", matrices, homogeneous), moved, atol=1e-4)
    out = digital.warp_affine_reflect101(images, matrices)
    for i in range(3):
        inverse = np.linalg.inv(np.vstack([matrices[i], [0, 0, 1]]))
        # scipy works in (row, col): swap x and y; mode 'mirror' is OpenCV's REFLECT_101.
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
        rc = swap @ inverse @ swap
        expected = np.stack([ndi.affine_transform(images[i, :, :, ch], rc[:2, :2], rc[:2, 2], order=1, mode="mirror")
                             for ch in range(3)], -1)
        # OpenCV rounds source positions to 1/32 pixel: at most 1/64 px away, so small differences.
        assert np.abs(out[i] - expected).max() < 0.05 and np.abs(out[i] - expected).mean() < 0.005


def test_map_coordinates_matches_scipy_reflect():
    rs = np.random.RandomState(1)
    images = IMAGES[:2].astype(np.float32) / 255
    rows = rs.uniform(-3, 35, (2, 32, 32))
    cols = rs.uniform(-3, 35, (2, 32, 32))
    out = digital.map_coordinates_reflect(images, rows, cols)
    for i in range(2):
        for ch in range(3):
            expected = ndi.map_coordinates(images[i, :, :, ch], [rows[i].ravel(), cols[i].ravel()], order=1,
                                           mode="reflect").reshape(32, 32)
            np.testing.assert_allclose(out[i, :, :, ch], expected, atol=1e-6)


def test_elastic_severity_1_is_the_affine_warp_of_the_first_draws():
    # Severity 1 has alpha = 0 (no displacement field): the output is the affine warp alone, with
    # the anchors moved by the image's first 6 uniform draws.
    jitter = digital.SEVERITY_PARAMS["elastic_transform"][0][2]
    image = IMAGES[:1]
    out = corrupt(image, "elastic_transform", 1, seed=2, indices=[4])
    anchors = np.float32([[26, 26], [26, 6], [6, 6]])
    moved = anchors + image_rng(2, "elastic_transform", 1, 4).uniform(-jitter, jitter, (3, 2)).astype(np.float32)
    matrix = digital.affine_from_points(anchors[None], moved[None])
    expected = np.floor(np.clip(digital.warp_affine_reflect101(image.astype(np.float32) / 255, matrix), 0, 1) * 255)
    np.testing.assert_array_equal(out, expected)


def test_elastic_displacement_grows_with_alpha_over_sigma():
    # Beyond the affine warp, the smoothed field moves pixels by about alpha / sigma (times a
    # constant): 1.6/6.4, 2.56/1.92, 3.2/1.28, 3.2/0.96 for severities 2..5, so the change over the
    # affine-only image (same draws) must grow with severity.
    images = IMAGES
    anchors = np.float32([[26, 26], [26, 6], [6, 6]])
    extra = []
    for severity in range(2, 6):
        jitter = digital.SEVERITY_PARAMS["elastic_transform"][severity - 1][2]
        moved = np.stack([anchors + image_rng(0, "elastic_transform", severity, i).uniform(-jitter, jitter, (3, 2))
                          .astype(np.float32) for i in range(len(images))])
        matrices = digital.affine_from_points(np.broadcast_to(anchors, moved.shape), moved)
        affine_only = np.floor(np.clip(digital.warp_affine_reflect101(images.astype(np.float32) / 255, matrices), 0, 1) * 255)
        extra.append(np.abs(corrupt(images, "elastic_transform", severity).astype(float) - affine_only).mean())
    assert extra == sorted(extra) and extra[0] > 0, extra


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_compiled_hsv_paths_equal_scikit_image_on_edge_and_natural_pixels(severity):
    rng = np.random.default_rng(severity)
    images = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    images[2, ..., 1] = images[2, ..., 0]  # two equal channels
    images[3, ..., :] = images[3, ..., :1]  # grey
    images[4, ..., 2] = images[4, ..., 0]  # blue == red: the maximum is found in scikit-image's order
    images[5, ..., 1] = images[5, ..., 2]
    images = np.concatenate([images, np.ascontiguousarray(IMAGES[:, :8, :8])])
    hsv = rgb2hsv(images.astype(np.float64) / 255)
    bright = hsv.copy()
    bright[..., 2] = np.clip(bright[..., 2] + digital.SEVERITY_PARAMS["brightness"][severity - 1], 0, 1)
    factor, offset = digital.SEVERITY_PARAMS["saturate"][severity - 1]
    saturated = hsv.copy()
    saturated[..., 1] = np.clip(saturated[..., 1] * factor + offset, 0, 1)
    as_uint8 = lambda x: (np.clip(hsv2rgb(x), 0, 1) * 255).astype(np.uint8)  # noqa: E731
    np.testing.assert_array_equal(digital.brightness(images, severity), as_uint8(bright))
    np.testing.assert_array_equal(digital.saturate(images, severity), as_uint8(saturated))


def test_workers_keep_freed_memory_on_glibc():
    import platform

    from robustgsl.corruptions.schedule import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
