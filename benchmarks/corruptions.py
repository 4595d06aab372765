"""Corruption generator speed: images/s per corruption, and the wall time of a whole data set.

    python benchmarks/corruptions.py [--n 300] [--workers all] [--corruptions all,extra] [--repeat 1]

1. Per corruption (one process, all 5 severities): images/s in the writer's chunks, and the speed-up over the
   same function called one image at a time (the reference script's loop shape), measured in this
   process as the baseline.
2. The wall time of ``write_corruption_dataset`` for the 15 x 5 on N images with all cores
   (writing, hashing and worker start-up included), and on N/20 images to separate the fixed
   start-up cost, extrapolated to 10,000 images (CIFAR-10-C: 750,000 images) and set against the
   2-minute target and the reference's ~22 single-core minutes. With ``--repeat R`` both runs are
   repeated R times and the best and median extrapolations printed.

The table runs in this process with the workers' malloc setting (``keep_freed_memory``), so its
figures are what a worker computes.

The images are CIFAR-like 32x32 crops of scikit-learn's two bundled photographs (the tests' sampler,
tests/corruption_helpers.py). Figures are noisy when other processes share the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from corruption_helpers import photo_crops as natural_images  # noqa: E402
from robustgsl.corruptions import CORRUPTIONS, corrupt, resolve_corruptions  # noqa: E402
from robustgsl.corruptions.dataset import write_corruption_dataset  # noqa: E402
from robustgsl.corruptions.schedule import DEFAULT_CHUNK_SIZE, keep_freed_memory  # noqa: E402

REFERENCE_SINGLE_CORE_MINUTES = 22.0  # make_cifar_c.py on one core, as measured for issue 3
TARGET_MINUTES = 2.0
FULL_TEST_SET = 10_000


def per_corruption(images: np.ndarray, names, single: int) -> list[tuple[str, float, float]]:
    rows = []
    for name in names:
        corrupt(images[:2], name, 1)  # imports, texture loading, numba compilation
        started = time.perf_counter()
        for severity in range(1, 6):  # in the data set writer's chunks
            for start in range(0, len(images), DEFAULT_CHUNK_SIZE):
                stop = min(start + DEFAULT_CHUNK_SIZE, len(images))
                corrupt(images[start:stop], name, severity, indices=range(start, stop))
        batched = 5 * len(images) / (time.perf_counter() - started)
        started = time.perf_counter()
        for severity in range(1, 6):
            for i in range(single):
                corrupt(images[i:i + 1], name, severity, indices=[i])
        one_by_one = 5 * single / (time.perf_counter() - started)
        rows.append((name, batched, one_by_one))
        print(f"{name:18s} {batched:9,.0f} img/s   one at a time {one_by_one:8,.0f} img/s   "
              f"x{batched / one_by_one:5.1f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="test images (default 300)")
    parser.add_argument("--single", type=int, default=20, help="images for the one-at-a-time baseline")
    parser.add_argument("--workers", type=int, default=None, help="processes for the data set [all cores]")
    parser.add_argument("--corruptions", default="all,extra", help="names for the per-corruption table")
    parser.add_argument("--skip-dataset", action="store_true", help="only the per-corruption table")
    parser.add_argument("--skip-table", action="store_true", help="only the data set wall time")
    parser.add_argument("--repeat", type=int, default=1, help="data set timings to take (best and median)")
    args = parser.parse_args()

    keep_freed_memory()
    images = natural_images(args.n)
    names = resolve_corruptions(args.corruptions)
    print(f"{args.n} images, {os.cpu_count()} cores; per corruption, one process, severities 1-5")
    rows = [] if args.skip_table else per_corruption(images, names, min(args.single, args.n))
    fifteen = [r for r in rows if r[0] in CORRUPTIONS]
    if len(fifteen) == len(CORRUPTIONS):
        core_seconds = sum(5 * FULL_TEST_SET / batched for _, batched, _ in fifteen)
        print(f"sum over the 15 for 10,000 images x 5 severities: {core_seconds:.0f} core-seconds "
              f"(/{os.cpu_count()} cores = {core_seconds / (os.cpu_count() or 1):.0f} s)")
    if args.skip_dataset:
        return

    available = list(CORRUPTIONS)
    workers = args.workers or os.cpu_count()

    def timed_write(count: int) -> float:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            write_corruption_dataset(images[:count], np.zeros(count, int), folder, available, seed=0,
                                     workers=workers, dataset_name="benchmark", quiet=True)
            return time.perf_counter() - started

    # Fixed costs (worker start-up, imports, numba compilation, textures) do not grow with the
    # test set: time a tiny run too and extrapolate the per-image slope.
    small = max(10, args.n // 20)
    print()
    estimates = []
    for _ in range(max(1, args.repeat)):
        fixed = timed_write(small)
        seconds = timed_write(args.n)
        slope = (seconds - fixed) / (args.n - small)
        full = fixed + slope * (FULL_TEST_SET - small)
        estimates.append(full)
        print(f"write_corruption_dataset, {len(available)} corruptions x 5 severities, {workers} workers: "
              f"{args.n} images {seconds:.1f} s ({len(available) * 5 * args.n / seconds:,.0f} images/s); "
              f"{small} images {fixed:.1f} s", flush=True)
        print(f"extrapolated to 10,000 test images ({len(available) * 5 * FULL_TEST_SET:,} images): {full:.0f} s "
              f"= {full / 60:.2f} min ({slope * 1e3:.2f} ms per test image for all {len(available)} x 5); "
              f"target {TARGET_MINUTES:.0f} min: ratio {full / 60 / TARGET_MINUTES:.2f}; "
              f"reference ~{REFERENCE_SINGLE_CORE_MINUTES:.0f} single-core min: "
              f"x{REFERENCE_SINGLE_CORE_MINUTES * 60 / full:.1f}", flush=True)
    if len(estimates) > 1:
        best, median = min(estimates), statistics.median(estimates)
        print(f"over {len(estimates)} runs: best {best:.0f} s, median {median:.0f} s for 10,000 test images "
              f"(target {TARGET_MINUTES * 60:.0f} s: ratios {best / 60 / TARGET_MINUTES:.2f} / "
              f"{median / 60 / TARGET_MINUTES:.2f})")

if __name__ == "__main__":
    main()
