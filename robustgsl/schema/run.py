"""A training run folder (written by robustgsl/train.py through robustgsl/runs.py):

    <run>/config.json        the resolved TrainConfig plus the derived fields below
    <run>/environment.json   versions, device, git SHA, seed, command line, times
    <run>/metrics.jsonl      one JSON object per finished epoch (METRIC_FIELDS, in that order)
    <run>/checkpoint.pt      resumable state (plain tensors and dicts: loads with weights_only=True)
    <run>/model.safetensors  final weights; its presence means the run finished
    <run>/cache/             evaluation's cached outputs and embeddings, keyed by the weights' and the images'
                             content and verified (robustgsl/cache.py)
    <run>/snapshots/         with --embedding-snapshots: epoch_NNNN.npz (SNAPSHOT_ARRAYS) after each asked epoch

and, in the runs root, LAST_PAIR: the absolute path of the folder of the last finished train-both pair
(with --seeds, the folder holding one pair per seed in seed<N>/, see ``seed_folder``).

Reading metrics.jsonl: a line that is not a JSON object with an integer "epoch" (a line torn by an
interrupted copy, a stray edit) is skipped and reported, and reading goes on; when an epoch appears
twice, its last line wins. Training writes the whole file atomically after each epoch, so a healthy run
folder has neither.
"""

from __future__ import annotations

import dataclasses

from robustgsl.config import TrainConfig
from robustgsl.schema import Field, names

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
# checkpoint.pt: a dict of these (epoch: the last finished epoch; the others: state_dict() of each).
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler")
WEIGHTS_FILE = "model.safetensors"
CACHE_DIR = "cache"
LAST_PAIR_FILE = "LAST_PAIR"
SNAPSHOT_DIR = "snapshots"
SEED_FOLDER_PREFIX = "seed"


def seed_folder(seed: int) -> str:
    """The folder of one seed's pair inside a `train-both --seeds` folder: seed0, seed1, ..."""
    return f"{SEED_FOLDER_PREFIX}{seed}"


def snapshot_file(epoch: int) -> str:
    """File name of the embedding snapshot taken after ``epoch`` (1-based), e.g. epoch_0010.npz."""
    return f"epoch_{epoch:04d}.npz"


def snapshot_epoch(name: str) -> int | None:
    """The epoch of a snapshot file name, or None for any other name."""
    stem, dot, suffix = name.partition(".")
    if suffix != "npz" or not stem.startswith("epoch_") or not stem[6:].isdigit():
        return None
    return int(stem[6:])


# snapshots/epoch_NNNN.npz: the model in eval mode after that epoch, on a fixed sample of training images
# (the same sample in every run on the same training images; robustgsl/snapshots.py draws it).
SNAPSHOT_ARRAYS = (
    Field("embeddings", "float32 (n, d)", "embeddings (GSL: the outputs; CE: the bottleneck's output, else the "
                                          "penultimate features) of the sampled training images, no augmentation"),
    Field("labels", "int64 (n,)", "their classes"),
    Field("indices", "int64 (n,)", "their positions in the training split as robustgsl.data.load_dataset reads it"),
    Field("epoch", "int64 0-d", "the epoch after which they were computed (1-based)"),
)

# config.json: every TrainConfig field (its help is in robustgsl/config.py), then these.
DERIVED_CONFIG_FIELDS = (
    Field("num_classes", "count", "classes of the data set (the CE model's outputs)"),
    # The world size is part of the recipe: it sets the global batch and the data each rank sees.
    Field("world_size", "count", "training processes (torchrun); the global batch is batch_size x world_size"),
    Field("paper_deviations", "list of text", "how the recipe differs from the paper's for this loss and data "
                                              "set: 'field: value (paper: value)' (robustgsl.config.paper_deviations)"),
    Field("image_folder", "object", "image-folder runs only (dataset imagefolder): IMAGE_FOLDER_FIELDS, what "
                                    "rebuilding the model and evaluating it need", required=False),
)
# What config.json (and evaluation.json) keep of an image folder (robustgsl.imagefolder.imagefolder_record).
IMAGE_FOLDER_FIELDS = (
    Field("root", "text", "absolute path of the folder (holding train/<class>/ and test/<class>/)"),
    Field("classes", "list of text", "class names; label i is classes[i] (torchvision's ImageFolder order)"),
    Field("mean", "list of 3 fractions", "per-channel mean of the training images in [0, 1] (the model's input "
                                         "normalisation)"),
    Field("std", "list of 3 fractions", "per-channel (population) std of the training images in [0, 1]"),
    Field("flip", "boolean", "whether training augmentation flips images horizontally"),
    Field("resize", "boolean", "whether images that are not 32x32 were resized (--resize) instead of refused"),
    Field("resize_method", "text", "how they were resized, or null"),
    Field("train_images", "count", "training images"),
    Field("test_images", "count", "test images"),
    Field("resized_images", "count", "images (both splits) that were resized"),
    Field("original_sizes", "list of [width, height]", "the first distinct sizes of the resized images"),
    Field("description", "text", "one line per split for the results to state"),
)
CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(TrainConfig)) + names(DERIVED_CONFIG_FIELDS)

VERSION_PACKAGES = ("python", "torch", "numpy", "sklearn", "robustgsl")
ENVIRONMENT_FIELDS = (
    Field("versions", "object", f"version of each of {', '.join(VERSION_PACKAGES)}"),
    Field("device", "text", "torch device of rank 0, e.g. cpu or cuda:0"),
    Field("device_name", "text", "GPU model, or the CPU and its core count"),
    Field("git_sha", "text", "commit of the robustgsl checkout (null outside git)"),
    Field("seed", "integer", "the run's seed"),
    Field("command_line", "list of text", "the command that started (or last resumed) the run"),
    Field("hostname", "text", "machine of rank 0"),
    Field("started_at", "ISO 8601 time, UTC", "first start of the run"),
    Field("world_size", "count", "training processes"),
    Field("augmentation_streams", "text", "how each rank seeds its data order and augmentation"),
    Field("sync_batchnorm", "boolean", "whether BatchNorm statistics were synchronised across ranks"),
    Field("validation_source", "text", "which images the per-epoch validation error uses"),
    Field("resumed_at", "list of ISO 8601 times", "each resumption", required=False),
    Field("finished_at", "ISO 8601 time, UTC", "end of training (finished runs)", required=False),
    Field("wall_time_s", "seconds", "wall time of all training processes, resumptions added (finished runs)",
          required=False),
)


@dataclasses.dataclass
class EpochMetrics:
    """One line of metrics.jsonl (JSON object keys in this order)."""

    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's steps (and ranks)
    lr: float  # learning rate during the epoch
    train_error: float  # fraction of training batch examples misclassified (CE argmax, GSL in-batch 1-NN)
    val_error: float  # fraction of the monitor images misclassified (CE argmax, GSL 1-NN vs training refs)
    epoch_time_s: float  # seconds: the epoch's steps plus its validation


METRIC_FIELDS = tuple(field.name for field in dataclasses.fields(EpochMetrics))
