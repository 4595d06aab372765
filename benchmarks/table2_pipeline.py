"""The Table 2 pipeline for a short schedule, timed: train CE and GSL, corrupt, evaluate every head.

    python benchmarks/table2_pipeline.py --out /tmp/t2                      # GPU: full width, 2 epochs
    python benchmarks/table2_pipeline.py --out /tmp/t2 --width 0.0625 --n-train 1000 --n-test 200 --epochs 1

Without --data-dir it writes a synthetic CIFAR-10 folder (random images and labels in the released
`cifar-10-batches-py` layout, --n-train / --n-test images): the cost of every step does not depend on the
pixel values, so the times hold for real CIFAR-10, the errors mean nothing. With --data-dir (a real
CIFAR-10 folder, e.g. shared/tools/cifar10_dev_split.py's) the errors are real too, at this short schedule.
Printed and written to <out>/timings.json: seconds per epoch and training images/s per model (epoch 1,
which includes torch.compile, apart), seconds to generate the 15 x 5 corrupted test sets, and the
evaluation's images/s (clean + 75 corrupted sets per model, heads included).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from robustgsl import runs
from robustgsl.config import EvalConfig, make_config
from robustgsl.corruptions import CORRUPTIONS, SEVERITIES
from robustgsl.corruptions.dataset import write_corruption_dataset
from robustgsl.data import load_dataset
from robustgsl.evaluate import evaluate
from robustgsl.train import train_both


def write_synthetic_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random images in the released layout robustgsl.data reads (5 training batches and test_batch)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {f"data_batch_{i + 1}": len(part) for i, part in enumerate(np.array_split(np.arange(n_train), 5))}
    for name, size in (sizes | {"test_batch": n_test}).items():
        rows = rng.integers(0, 256, size=(size, 3072), dtype=np.uint8)  # 1024 red, green, blue bytes per image
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, size).tolist(), b"data": rows,
                 b"filenames": [b"synthetic.png"] * size}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return root


def training_rates(run_dir: Path, n_train: int) -> dict:
    times = [row["epoch_time_s"] for row in runs.read_metrics(run_dir)]
    steady = times[1:] or times
    seconds = float(np.median(steady))
    return {"first_epoch_s": round(times[0], 2), "s_per_epoch": round(seconds, 2),
            "train_images_per_s": round(n_train / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=None, help="a CIFAR-10 folder [synthetic]")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=50_000, help="synthetic training images")
    parser.add_argument("--n-test", type=int, default=10_000, help="synthetic test images")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="corruption worker processes")
    args = parser.parse_args()
    data_dir = args.data_dir or write_synthetic_cifar10(args.out / "data", args.n_train, args.n_test)
    n_train, n_test = (len(load_dataset("cifar10", split, data_dir=data_dir, download=False)[1])
                       for split in ("train", "test"))

    configs = {loss: make_config(loss, epochs=args.epochs, width=args.width) for loss in ("ce", "gsl")}
    pair = args.out / "runs" / "pair"
    train_both(configs, pair, data_dir=data_dir, download=False, device=args.device, quiet=True)
    timings = {"device": args.device, "width": args.width, "epochs": args.epochs, "n_train": n_train,
               "n_test": n_test, "synthetic": args.data_dir is None,
               "training": {loss: training_rates(pair / loss, n_train) for loss in configs}}

    images, labels = load_dataset("cifar10", "test", data_dir=data_dir, download=False)
    started = time.perf_counter()
    write_corruption_dataset(images, labels, args.out / "CIFAR-10-C", CORRUPTIONS, SEVERITIES, seed=0,
                             workers=args.workers, dataset_name="cifar10", quiet=True)
    timings["corrupt_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    out = evaluate([pair / "ce", pair / "gsl"], EvalConfig(
        out_dir=str(args.out / "evaluation"), corruption_dir=str(args.out / "CIFAR-10-C"), data_dir=str(data_dir),
        download=False, device=args.device, quiet=True))
    seconds = time.perf_counter() - started
    scored = 2 * n_test * (1 + len(CORRUPTIONS) * len(SEVERITIES))
    timings["evaluate"] = {"s": round(seconds, 1), "images_per_s": round(scored / seconds, 1),
                           "summary": str(out / "summary.csv")}
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
