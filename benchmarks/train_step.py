"""Time of one training step with the graph smoothness loss against cross-entropy, in one process.

    python benchmarks/train_step.py                       # full-width PreActResNet-18, batch 100, CPU or GPU
    python benchmarks/train_step.py --device cuda --compile
    python benchmarks/train_step.py --width 0.25 --steps 5   # quick look on a laptop

The paper says both losses cost the same; the target is GSL / CE step time <= 1.05. Steps are timed in
alternating rounds (CE, GSL, CE, GSL, ...) on the same synthetic CIFAR-shaped uint8 data held on the
device, augmented there, through robustgsl.train.train_step (the code the trainer runs), so drift of
the machine hits both losses alike. Also printed: seconds per CIFAR-10 epoch (50,000 images) and the
cost of the loss alone (forward + backward on a (100, d) batch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustgsl.config import make_config
from robustgsl.data import augment_batch
from robustgsl.distributed import DistributedContext
from robustgsl.losses import GraphSmoothnessLoss
from robustgsl.runs import build_model_from_config
from robustgsl.train import Criterion, build_optimizer, train_step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_stepper(loss: str, args, device, images, labels):
    config = make_config(loss, "paper", dataset="cifar10", width=args.width, batch_size=args.batch_size,
                         compile=args.compile)
    torch.manual_seed(0)
    model = build_model_from_config(config.to_dict() | {"num_classes": 10}).to(device)
    fast = device.type == "cuda" and not args.no_fast
    if fast:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    optimizer = build_optimizer(config, model)
    criterion = Criterion(config, DistributedContext())
    generator = torch.Generator(device=device).manual_seed(0)
    n_batches = len(labels) // args.batch_size

    def run(steps: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            index = slice((step % n_batches) * args.batch_size, (step % n_batches + 1) * args.batch_size)
            batch = augment_batch(images[index], generator, flip=True)
            train_step(step_model, criterion, optimizer, batch, labels[index], amp=fast, channels_last=fast)
        synchronize(device)
        return (time.perf_counter() - start) / steps

    return run


def loss_only_cost(device, dim: int, batch: int, repeats: int) -> dict:
    generator = torch.Generator(device="cpu").manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=1).to(device)
    labels = torch.randint(0, dim, (batch,), generator=generator).to(device)
    timings = {}
    for name, function in (("ce", lambda e: torch.nn.functional.cross_entropy(e, labels)),
                           ("gsl", lambda e: GraphSmoothnessLoss()(e, labels))):
        leaf = embeddings.clone().requires_grad_(True)
        for _ in range(3):
            function(leaf).backward()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            function(leaf).backward()
        synchronize(device)
        timings[name] = (time.perf_counter() - start) / repeats
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="steps per round [CPU 3, GPU 100]")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds [CPU 3, GPU 5]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per loss [CPU 1, GPU 30]")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-fast", action="store_true", help="on CUDA: no bf16 autocast / channels_last")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    steps = args.steps or (100 if on_gpu else 3)
    rounds = args.rounds or (5 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (30 if on_gpu else 1)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    generator = torch.Generator().manual_seed(0)
    n_images = args.batch_size * 20
    images = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (n_images,), generator=generator).to(device)
    steppers = {loss: make_stepper(loss, args, device, images, labels) for loss in ("ce", "gsl")}
    for stepper in steppers.values():
        stepper(warmup)
    times = {loss: [] for loss in steppers}
    for _ in range(rounds):
        for loss, stepper in steppers.items():
            times[loss].append(stepper(steps))

    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; PreActResNet-18 width {args.width}, batch {args.batch_size}, "
          f"{'bf16 + channels_last' if on_gpu and not args.no_fast else 'fp32'}"
          f"{', torch.compile' if args.compile else ''}; {rounds} rounds x {steps} steps")
    medians = {loss: statistics.median(values) for loss, values in times.items()}
    steps_per_epoch = 50_000 // args.batch_size
    for loss, median in medians.items():
        print(f"  {loss.upper():4s} step {median * 1e3:9.2f} ms   {args.batch_size / median:9.0f} images/s   "
              f"CIFAR-10 epoch {median * steps_per_epoch:8.2f} s   (rounds: "
              + ", ".join(f"{t * 1e3:.1f}" for t in times[loss]) + " ms)")
    print(f"  GSL / CE step time ratio: {medians['gsl'] / medians['ce']:.3f}  (target <= 1.05)")
    loss_cost = loss_only_cost(device, dim=10, batch=args.batch_size, repeats=200 if on_gpu else 50)
    print(f"  loss alone, forward + backward on ({args.batch_size}, 10): CE {loss_cost['ce'] * 1e6:.1f} us, "
          f"GSL {loss_cost['gsl'] * 1e6:.1f} us")


if __name__ == "__main__":
    main()
