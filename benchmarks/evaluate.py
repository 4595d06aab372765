"""Evaluation throughput: images/s of one model over clean + corrupted test images, heads included.

    python benchmarks/evaluate.py --device cuda                 # N = 10,000: the full 760,000 images
    python benchmarks/evaluate.py --n-test 200 --width 0.25     # quick CPU look

Target on one H100: >= 30,000 images/s for a full-width PreActResNet-18 over the 15 x 5 x N corrupted
images plus the N clean ones. Synthetic CIFAR-shaped uint8 data stand in for the corruption files (the
model's cost does not depend on pixel values); the heads are the GSL model's 1-NN and 10-NN over
50,000 references (d = 10). Printed: inference alone, heads alone, and the whole, with the time the
full CIFAR-10-C evaluation (760,000 images) would take at that rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robustgsl.device import infer
from robustgsl.heads import make_head
from robustgsl.models import PreActResNet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-test", type=int, default=None, help="test images per file [GPU 10000, CPU 100]")
    parser.add_argument("--files", type=int, default=16, help="clean + 15 corruptions")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--references", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    n_test = args.n_test or (10_000 if on_gpu else 100)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    model = PreActResNet18(out_dim=10, normalization="l2", width=args.width).to(device).eval()
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(5 * n_test, 32, 32, 3), dtype=np.uint8)  # one corruption file
    reference = rng.standard_normal((args.references, 10)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    reference_labels = rng.integers(0, 10, size=args.references)
    heads = [make_head(name, 10, device=device).fit(reference, reference_labels) for name in ("1nn", "10nn")]

    infer(model, block[:min(len(block), 4096)], device, batch_size=args.batch_size)  # warm-up (cudnn autotune)
    inference_time = heads_time = 0.0
    n_images = 0
    for file_index in range(args.files):
        images = block[:n_test] if file_index == 0 else block  # clean: N images, each corruption: 5N
        start = time.perf_counter()
        _, embeddings = infer(model, images, device, batch_size=args.batch_size)
        embeddings = embeddings.numpy()
        inference_time += time.perf_counter() - start
        start = time.perf_counter()
        for head in heads:
            predictions = head.predict(embeddings)
            assert predictions.shape == (len(images),)
        heads_time += time.perf_counter() - start
        n_images += len(images)

    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    total = inference_time + heads_time
    print(f"device: {name}; PreActResNet-18 width {args.width}; {n_images:,} images "
          f"(clean + {args.files - 1} x 5 x {n_test:,})")
    print(f"  inference       {n_images / inference_time:10.0f} images/s")
    print(f"  1nn + 10nn      {n_images / heads_time:10.0f} images/s  ({args.references:,} references, d = 10)")
    print(f"  whole           {n_images / total:10.0f} images/s  (target >= 30,000 on an H100); "
          f"760,000 images would take {760_000 / (n_images / total):.1f} s")


if __name__ == "__main__":
    main()
