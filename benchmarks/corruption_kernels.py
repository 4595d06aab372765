"""The corruption code's own versions of library calls, kept for speed, timed against the library in one process.

    python benchmarks/corruption_kernels.py [--n 100] [--repeat 5]

Each row: the library call that gives the same bytes (checked on every run: identical=True), our version,
best of ``--repeat`` wall times on ``--n`` images (one writer chunk by default) and the ratio library/ours:

- brightness / saturate: the compiled per-pixel HSV kernel vs scikit-image ``rgb2hsv`` / ``hsv2rgb``
- elastic_transform's resampling: the compiled bilinear loop vs ``scipy.ndimage.map_coordinates`` (one
  call over the batch; the reference calls it per image)
- zoom_blur: the compiled zoom sum vs ``scipy.ndimage.zoom`` per image and factor (the reference's loop)
- per-image generators: ``RandomState`` built from a fixed seed source, and a kept one reseeded, vs
  ``RandomState(seed)`` (the reference's way), for ``--n`` images

Copies kept for exactness rather than speed (OpenCV 4's warpAffine, the distance transform, the float32
grey conversion) are tested in tests/ instead. The images are CIFAR-like crops of scikit-learn's two
bundled photographs (tests/corruption_helpers.py). Figures are noisy when other processes share the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
from skimage.color import hsv2rgb, rgb2hsv

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from corruption_helpers import photo_crops  # noqa: E402
from robustgsl.corruptions import _FIXED, ImageRngs, blur, digital  # noqa: E402
from robustgsl.corruptions.noise import to_uint8  # noqa: E402
from robustgsl.corruptions.rng import image_seed  # noqa: E402


def best_time(function, repeat: int):
    """Best wall time of ``repeat`` calls after one untimed call (imports, compilation), and the result."""
    result = function()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def row(what: str, library, ours, repeat: int) -> None:
    t_library, expected = best_time(library, repeat)
    t_ours, got = best_time(ours, repeat)
    identical = all(np.array_equal(a, b) for a, b in zip(expected, got)) if isinstance(got, list) \
        else np.array_equal(expected, got)
    print(f"{what:44s} library {1e3 * t_library:9.2f} ms   ours {1e3 * t_ours:8.2f} ms   "
          f"ratio {t_library / t_ours:6.1f}   identical={identical}", flush=True)


def skimage_hsv(images: np.ndarray, v_offset: float = 0.0, s_factor: float = 1.0, s_offset: float = 0.0):
    hsv = rgb2hsv(images / 255.0)
    if v_offset:
        hsv[..., 2] = np.clip(hsv[..., 2] + v_offset, 0, 1)
    if (s_factor, s_offset) != (1.0, 0.0):
        hsv[..., 1] = np.clip(hsv[..., 1] * s_factor + s_offset, 0, 1)
    return to_uint8(hsv2rgb(hsv))


def scipy_map_coordinates(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One 4-D call: integer image and channel coordinates, so only rows and columns are interpolated."""
    shape = images.shape
    n_index = np.broadcast_to(np.arange(shape[0])[:, None, None, None], shape)
    c_index = np.broadcast_to(np.arange(shape[3]), shape)
    coordinates = [n_index, np.broadcast_to(rows[..., None], shape), np.broadcast_to(cols[..., None], shape), c_index]
    return ndi.map_coordinates(images, coordinates, order=1, mode="reflect")


def scipy_zoom_blur(images: np.ndarray, severity: int) -> np.ndarray:
    """The reference's zoom_blur loop: clipped_zoom with scipy.ndimage.zoom, per image and factor."""
    factors = blur.zoom_factors(severity)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        x = (image / 255.0).astype(np.float32)
        total = np.zeros_like(x)
        for factor in factors:
            crop = int(np.ceil(32 / factor))
            top = (32 - crop) // 2
            zoomed = ndi.zoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
            trim = (zoomed.shape[0] - 32) // 2
            total += zoomed[trim:trim + 32, trim:trim + 32]
        out[i] = (np.clip((x + total) / (len(factors) + 1), 0, 1) * 255).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="images per timing (default: one writer chunk)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N")
    args = parser.parse_args()
    images = photo_crops(args.n)
    print(f"{args.n} images of 32x32, best of {args.repeat}")

    c = digital.SEVERITY_PARAMS["brightness"][2]
    row("brightness 3: HSV kernel vs scikit-image", lambda: skimage_hsv(images, v_offset=c),
        lambda: digital.brightness(images, 3), args.repeat)
    factor, offset = digital.SEVERITY_PARAMS["saturate"][4]
    row("saturate 5: HSV kernel vs scikit-image", lambda: skimage_hsv(images, s_factor=factor, s_offset=offset),
        lambda: digital.saturate(images, 5), args.repeat)

    rs = np.random.RandomState(0)
    unit = images.astype(np.float32) / 255
    rows = np.arange(32)[None, :, None] + rs.uniform(-3, 3, (args.n, 32, 32))
    cols = np.arange(32)[None, None, :] + rs.uniform(-3, 3, (args.n, 32, 32))
    row("elastic resampling vs map_coordinates", lambda: scipy_map_coordinates(unit, rows, cols),
        lambda: digital.map_coordinates_reflect(unit, rows, cols), args.repeat)

    row("zoom_blur 5 vs scipy.ndimage.zoom loop", lambda: scipy_zoom_blur(images, 5),
        lambda: blur.zoom_blur(images, 5), args.repeat)

    seeds = [image_seed(0, "gaussian_noise", 1, i) for i in range(args.n)]
    draw = lambda rngs: [rng.random_sample(4) for rng in rngs]  # noqa: E731
    row("generators: fixed seed source vs RandomState", lambda: draw(np.random.RandomState(s) for s in seeds),
        lambda: draw(_seeded(np.random.RandomState(np.random.MT19937(_FIXED)), s) for s in seeds), args.repeat)
    kept = [np.random.RandomState(np.random.MT19937(_FIXED)) for _ in seeds]
    row("generators: kept and reseeded vs RandomState", lambda: draw(np.random.RandomState(s) for s in seeds),
        lambda: draw(_seeded(rng, s) for rng, s in zip(kept, seeds)), args.repeat)
    rngs = ImageRngs(0, "gaussian_noise", 1, np.arange(args.n))  # what corrupt() uses: the same streams
    print(f"ImageRngs draws the same numbers: {all(np.array_equal(a, b) for a, b in zip(draw(rngs), draw(np.random.RandomState(s) for s in seeds)))}")


def _seeded(rng: np.random.RandomState, seed) -> np.random.RandomState:
    rng.seed(seed)
    return rng


if __name__ == "__main__":
    main()
