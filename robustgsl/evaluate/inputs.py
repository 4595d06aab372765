"""What an evaluation reads before it scores: the data set, its images, the corrupted test sets, the
baseline, and the test images of the report's embedding view; typed, one object per concept."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from robustgsl import runs
from robustgsl.config import EvalConfig
from robustgsl.corruptions.source import CorruptionRequest, CorruptionSource, prepare_corruptions
from robustgsl.data import load_dataset
from robustgsl.device import resolve_device
from robustgsl.errors import InputError
from robustgsl.evaluate.baseline import ReferenceScores, check_reference_covers, choose_baseline, reference_named
from robustgsl.evaluate.models import EvaluatedModel, check_outputs, load_models
from robustgsl.external import ExternalModel, ExternalSpec
from robustgsl.imagefolder import imagefolder_record
from robustgsl.metrics import CLEAN
from robustgsl.vocabulary import IMAGEFOLDER, dataset_info

Log = Callable[[str], None]
# The data set evaluated when only external models are given and no --dataset (RobustBench's default).
DEFAULT_EXTERNAL_DATASET = "cifar10"
# Test images kept for the report's 2-D embedding view, and the corruption shown there.
EMBEDDING_SAMPLE = 2000
EMBEDDING_CORRUPTION = "gaussian_noise"


@dataclass(frozen=True)
class DataSet:
    """The data set all the models are evaluated on."""

    name: str
    num_classes: int
    data_dir: str | None
    resize: bool
    image_folder: dict | None  # robustgsl.imagefolder.imagefolder_record, for dataset imagefolder


@dataclass(frozen=True)
class Images:
    """One split's images (uint8 NHWC) and labels, with a short digest of the images (cache keys)."""

    images: np.ndarray
    labels: np.ndarray
    digest: str

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray) -> "Images":
        return cls(images, labels, hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()[:16])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class EvalData:
    """The images every model goes through: training images (the k-NN and SVC references) and test images."""

    data_set: DataSet
    train: Images
    test: Images  # the first n_examples test images (all by default)
    n_full: int  # test images in the data set (and in each severity block of a corruption file)
    device: torch.device
    batch_size: int | None


@dataclass(frozen=True)
class CorruptedSets:
    """The corrupted test sets: where they are, which corruptions and severities are scored."""

    source: CorruptionSource
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    file_digests: dict[str, str]  # short content digest per corruption file (cache keys)

    @property
    def folder(self) -> Path:
        return self.source.path


@dataclass(frozen=True)
class EmbeddingView:
    """The test images of the report's 2-D embedding view and the corruption shown beside the clean ones."""

    sample: np.ndarray
    corruption: str
    severity: int


@dataclass
class Inputs:
    """Everything an evaluation scores."""

    models: list[EvaluatedModel]
    data: EvalData
    corrupted: CorruptedSets
    baseline: tuple[str, str] | None
    reference: ReferenceScores | None
    view: EmbeddingView

    @property
    def rows(self) -> list[tuple[str, int]]:
        """(corruption, severity) per row of the per-image arrays; (CLEAN, 0) first."""
        return evaluation_rows(self.corrupted.corruptions, self.corrupted.severities)


def evaluation_rows(corruptions: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    return [(CLEAN, 0)] + [(name, s) for name in corruptions for s in severities]


def load_inputs(run_dirs: Sequence[Path], external: Sequence[ExternalSpec | ExternalModel], config: EvalConfig,
                reference: ReferenceScores | None, log: Log) -> Inputs:
    """Models, images, corrupted test sets and baseline; bad input is refused before the long work."""
    if reference is not None:  # before any model, data or corruption is read
        check_reference_covers(reference, evaluation_rows(config.corruptions, config.severities))
    device = evaluation_device(config)
    models = load_models(run_dirs, external, config.heads, device)
    reference = reference_named(reference, models)
    baseline = choose_baseline(models, config.baseline, reference)
    data, full_test = load_eval_data(models, config, device)
    if config.grid_image_index >= len(data.test):
        raise InputError(f"grid image index {config.grid_image_index} is outside the test images evaluated "
                         f"({len(data.test)})")
    check_outputs(models, data.test.images[:2], data.data_set.name, data.data_set.num_classes, device)
    corrupted = load_corrupted(data.data_set, full_test, config, log)
    return Inputs(models, data, corrupted, baseline, reference, _embedding_view(len(data.test), config))


def evaluation_device(config: EvalConfig) -> torch.device:
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def load_eval_data(models: list[EvaluatedModel], config: EvalConfig, device: torch.device) -> tuple[EvalData, Images]:
    """The evaluation's images, and the whole test set (which a corruption folder is made from)."""
    data_set = choose_data_set(models, config)
    train, test = (Images.of(*load_dataset(data_set.name, split, data_dir=data_set.data_dir, download=config.download,
                                           resize=data_set.resize)) for split in ("train", "test"))
    n_test = min(config.n_examples or len(test), len(test))
    evaluated = test if n_test == len(test) else Images.of(test.images[:n_test], test.labels[:n_test])
    return EvalData(data_set, train, evaluated, len(test), device, config.batch_size), test


def load_corrupted(data_set: DataSet, test: Images, config: EvalConfig, log: Log) -> CorruptedSets:
    request = CorruptionRequest(
        dataset=data_set.name, num_classes=data_set.num_classes, names=config.corruptions,
        folder=None if config.corruption_dir is None else Path(config.corruption_dir), data_dir=data_set.data_dir,
        seed=config.corruption_seed, workers=config.workers, quiet=config.quiet)
    source = prepare_corruptions(request, test.images, test.labels, log)
    return CorruptedSets(source, config.corruptions, config.severities, source.digests(config.corruptions))


def _embedding_view(n_test: int, config: EvalConfig) -> EmbeddingView:
    names = config.corruptions
    return EmbeddingView(sample=np.sort(np.random.RandomState(config.seed).permutation(n_test)[:EMBEDDING_SAMPLE]),
                         corruption=EMBEDDING_CORRUPTION if EMBEDDING_CORRUPTION in names else names[0],
                         severity=max(config.severities))


def choose_data_set(models: list[EvaluatedModel], config: EvalConfig) -> DataSet:
    """The runs' data set (they must agree, and with --dataset), else --dataset, else cifar10."""
    trained = [m for m in models if m.run_dir is not None]
    first = trained[0].entry["config"] if trained else None
    for item in trained[1:]:
        other = item.entry["config"]
        if _data_identity(other) != _data_identity(first):
            raise InputError(
                f"{item.run_dir} was trained on {other['dataset']} ({other['num_classes']} classes) but "
                f"{trained[0].run_dir} on {first['dataset']} ({first['num_classes']} classes); evaluate them "
                f"separately")
    name = first["dataset"] if first else config.dataset or DEFAULT_EXTERNAL_DATASET
    if first and config.dataset not in (None, name):
        raise InputError(f"--dataset {config.dataset}, but the run folders were trained on {name}")
    if name != IMAGEFOLDER:
        return DataSet(name, dataset_info(name).num_classes, config.data_dir, False, None)
    return _image_folder(first, trained[0].run_dir if trained else None, config)


def _image_folder(first: dict | None, first_dir: Path | None, config: EvalConfig) -> DataSet:
    recorded = first.get("image_folder") if first else None
    data_dir = config.data_dir or (recorded["root"] if recorded else None)
    if data_dir is None:
        raise InputError("--dataset imagefolder needs --data-dir DIR, the folder holding train/<class>/ and test/<class>/")
    resize = config.resize or bool(recorded and recorded["resize"])
    record = imagefolder_record(data_dir, resize)
    if recorded is not None and record["classes"] != recorded["classes"]:
        raise InputError(f"the image folder {data_dir} holds the classes {record['classes']}, but "
                         f"{first_dir} was trained on {recorded['classes']}")
    return DataSet(IMAGEFOLDER, len(record["classes"]), str(data_dir), resize, record)


def _data_identity(config: dict) -> tuple:
    folder = config.get("image_folder")
    return config["dataset"], config["num_classes"], tuple(folder["classes"]) if folder else None


def run_folders(run_dirs: Sequence[str | Path] | None, external: Sequence) -> list[Path]:
    """The run folders asked for; none given and no external model: the last train-both pair."""
    if run_dirs:
        return [Path(p) for p in run_dirs]
    return [] if external else runs.find_last_pair()
