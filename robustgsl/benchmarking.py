"""``robustgsl.benchmark`` and ``robustgsl.load_corruptions``: RobustBench's Python calls on robustgsl's pipeline.

    >>> import robustgsl, torchvision
    >>> model = torchvision.models.resnet18(num_classes=10)          # any nn.Module taking [0, 1] NCHW images
    >>> result = robustgsl.benchmark(model, dataset="digits", corruptions="contrast,fog", severities=(1, 5))
    >>> result.clean_accuracy, result.robust_accuracy                  # RobustBench's two numbers
    >>> result.errors                                                   # error per (corruption, severity) and head

``benchmark`` mirrors RobustBench's ``robustbench.eval.benchmark(model, n_examples, dataset,
threat_model="corruptions", ...)``, which returns the clean accuracy and the mean accuracy over corruptions
x severities. It runs ``robustgsl evaluate``'s own steps (``robustgsl.evaluate.score``) and, given
``out_dir``, writes the same evaluation folder (``robustgsl report`` reads it). Where it differs:

- the corrupted images come from ``corruption_dir`` (a folder made by ``robustgsl corrupt`` or a released
  CIFAR-10-C / CIFAR-100-C folder) or, without one, from corruptions/<DATASET>-C, generated there when
  missing, as ``evaluate`` does; RobustBench downloads the released files;
- ``n_examples`` takes the first N test images, clean and under every corruption x severity, as
  RobustBench's ``corruptions_evaluation`` does (it loads each corruption separately), but also for the
  clean accuracy, which RobustBench measures on the whole test set; default: all;
- heads: besides ``argmax`` (RobustBench's only one), ``1nn``, ``10nn`` and ``svc`` read a feature layer
  (``ExternalModel(model, feature_layer=...)``) or the model's ``features()``;
- the model runs in float32 and in eval mode (its mode is restored afterwards; it is left on ``device``,
  as RobustBench leaves it).

A baseline for MCE and relative MCE is another ``BenchmarkResult`` (then the bootstrap intervals are
paired on the same test images, when they are the same) or an errors table in errors.csv's columns
(robustgsl/schema/evaluation.py ``ERRORS_COLUMNS``) of one model/head, e.g. read from an earlier
evaluation folder (then the intervals are left empty: they need its per-image results).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustgsl.config import EvalConfig
from robustgsl.corruptions import SEVERITIES, check_severity, parse_severities, resolve_corruptions
from robustgsl.corruptions.dataset import default_out_dir, read_manifest, verify_corruption_dataset
from robustgsl.errors import InputError
from robustgsl.evaluate import Log, ReferenceScores, Scores, score, write_evaluation
from robustgsl.external import ExternalModel
from robustgsl.metrics import ERROR_COLUMNS  # errors.csv's columns but the seed (one model, one seed here)
from robustgsl.schema import corruption as corruption_schema
from robustgsl.vocabulary import validate_head_name


@dataclass(frozen=True)
class PerImageResults:
    """Which test images a model misclassified: what pairs another evaluation's bootstrap with this one."""

    rows: tuple[tuple[str, int], ...]  # (corruption, severity) per row; (CLEAN, 0) first
    wrong: dict[str, np.ndarray]  # head -> bool (len(rows), n_examples)
    test_digest: str  # of the test images evaluated
    entry: dict  # the model's entry in evaluation.json


@dataclass(frozen=True)
class BenchmarkResult:
    """One model's results. The headline numbers are those of ``head``, the first head asked for."""

    model: str
    head: str
    heads: tuple[str, ...]
    dataset: str
    n_examples: int  # test images evaluated
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    clean_accuracy: float
    robust_accuracy: float  # mean accuracy over corruptions x severities (RobustBench's corruptions_acc)
    errors: pd.DataFrame  # index (corruption, severity), ("clean", 0) first; one column of error rates per head
    summary: pd.DataFrame  # index head; summary.csv's columns (clean_error, mce, relative_mce, intervals, ...)
    mce: float | None  # of ``head``, % of the baseline's; None without a baseline
    relative_mce: float | None
    baseline: str | None  # "MODEL/HEAD"
    out_dir: Path | None  # the evaluation folder written, if any
    per_image: PerImageResults = field(repr=False, compare=False)

    def errors_table(self) -> pd.DataFrame:
        """The errors in errors.csv's long layout (model, head, corruption, severity, error)."""
        long = self.errors.rename_axis(columns="head").stack().rename("error").reset_index()
        return long.assign(model=self.model)[list(ERROR_COLUMNS)]


def benchmark(model: nn.Module | str | os.PathLike, dataset: str = "cifar10", corruptions: str | Iterable[str] = "all",
              severities: Iterable[int] | str = SEVERITIES, heads: Iterable[str] | str = ("argmax",),
              n_examples: int | None = None, data_dir: str | os.PathLike | None = None,
              corruption_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
              device: str | torch.device | None = None, batch_size: int | None = None,
              baseline: "BenchmarkResult | pd.DataFrame | None" = None, *, model_name: str | None = None,
              seed: int = 0, n_bootstrap: int = 1000, workers: int = 1, report: bool = True, quiet: bool = True,
              log: Log | None = None) -> BenchmarkResult:
    """Clean and corrupted accuracy of ``model``: an ``nn.Module`` taking images in [0, 1], NCHW (wrap it in
    ``robustgsl.external.ExternalModel`` for input normalisation or a feature layer), or a robustgsl run
    folder. ``corruptions``: 'all' (the 15), 'extra', a family or names; ``heads``: argmax, 1nn, 10nn, svc.
    With ``out_dir``, the evaluation folder of ``robustgsl evaluate`` is written there (and its report,
    unless ``report=False``). See the module's docstring for how it differs from RobustBench's.

    ``workers``: processes that generate missing corruption data. The default, 1, computes it in this
    process; more start worker processes, which re-import the calling script: it then needs an
    ``if __name__ == "__main__":`` guard. ``robustgsl corrupt`` (all cores) can make the data beforehand.
    """
    config = EvalConfig(
        out_dir=None if out_dir is None else str(out_dir),
        corruption_dir=None if corruption_dir is None else str(corruption_dir),
        corruptions=resolve_corruptions(corruptions), severities=parse_severities(severities),
        heads=_heads(heads), n_bootstrap=n_bootstrap, seed=seed,
        data_dir=None if data_dir is None else str(data_dir), device=None if device is None else str(device),
        dataset=dataset, n_examples=n_examples, batch_size=batch_size, workers=workers, report=report, quiet=quiet)
    log = log or (lambda message: None)
    run_dirs, external, module = _models(model, model_name)
    was_training = module.training if module is not None else None
    try:
        scores = score(run_dirs, config, log, external, reference=_reference(baseline, dataset))
    finally:
        if module is not None:
            module.train(was_training)
    written = write_evaluation(scores, config, log) if out_dir is not None else None
    return _result(scores, written)


def _heads(heads: Iterable[str] | str) -> tuple[str, ...]:
    chosen = tuple(h.strip() for h in heads.split(",")) if isinstance(heads, str) else tuple(heads)
    if not chosen:
        raise InputError("heads must name at least one of argmax, 1nn, 10nn, svc")
    return chosen


def _models(model, model_name: str | None):
    """(run folders, external models, the user's module whose mode to restore)."""
    if isinstance(model, (str, os.PathLike)):
        if model_name is not None:
            raise InputError("model_name names a module; a run folder's name comes from its config")
        return [Path(model)], [], None
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module or a run folder, got {type(model).__name__}")
    if isinstance(model, ExternalModel):
        wrapped = copy.copy(model)  # shares the weights; only the name is its own
        wrapped.name = model_name or model.name
        return [], [wrapped], model
    return [], [ExternalModel(model, name=model_name)], model


def _reference(baseline, dataset: str) -> ReferenceScores | None:
    """A baseline as the evaluation's reference: another result, or an errors table of one model/head."""
    if baseline is None:
        return None
    if isinstance(baseline, BenchmarkResult):
        if baseline.dataset != dataset:
            raise InputError(f"the baseline was evaluated on {baseline.dataset}, this benchmark on {dataset}")
        errors = baseline.errors_table()
        images = baseline.per_image
        entry = _reference_entry(baseline.model, "benchmark result", images.entry)
        return ReferenceScores(baseline.model, baseline.head, errors[errors["head"] == baseline.head], entry,
                               wrong=images.wrong[baseline.head], rows=images.rows, test_digest=images.test_digest)
    if isinstance(baseline, pd.DataFrame):
        missing = [column for column in ERROR_COLUMNS if column not in baseline.columns]
        if missing:
            raise InputError(f"a baseline errors table needs the columns {list(ERROR_COLUMNS)} (errors.csv's); "
                             f"it lacks {missing}")
        keys = list(dict.fromkeys(zip(baseline["model"], baseline["head"])))
        if len(keys) != 1:
            raise InputError(f"a baseline errors table must hold one model/head, got {len(keys)}: "
                             f"{', '.join(f'{m}/{h}' for m, h in keys[:5])}; select one, e.g. "
                             f"errors[(errors.model == 'ce') & (errors['head'] == 'argmax')]")
        name, head = str(keys[0][0]), validate_head_name(str(keys[0][1]))
        return ReferenceScores(name, head, baseline[list(ERROR_COLUMNS)].assign(model=name, head=head),
                               _reference_entry(name, "errors table", None))
    raise InputError(f"baseline must be a BenchmarkResult or an errors table (DataFrame), got {type(baseline).__name__}")


def _reference_entry(name: str, source: str, evaluated_as: dict | None) -> dict:
    """Its evaluation.json entry (kind reference, robustgsl/schema/evaluation.py REFERENCE_MODEL_FIELDS)."""
    known = evaluated_as or {}
    return {"name": name, "kind": "reference", "weights_sha256": known.get("weights_sha256"),
            "architecture": known.get("architecture"), "parameters": known.get("parameters"),
            "embedding": None, "source": source, "evaluated_as": evaluated_as}


def _result(scores: Scores, out_dir: Path | None) -> BenchmarkResult:
    inputs, tables = scores.inputs, scores.tables
    item = inputs.models[0]
    own = tables.errors[tables.errors["model"] == item.name]
    errors = own.pivot(index=["corruption", "severity"], columns="head", values="error")
    errors = errors.reindex(index=pd.MultiIndex.from_tuples(inputs.rows, names=["corruption", "severity"]),
                            columns=pd.Index(item.heads, name=None))
    summary = tables.summary[tables.summary["model"] == item.name].drop(columns="model").set_index("head")
    head = item.heads[0]
    accuracy = tables.robustbench_summary.set_index(["model", "head"]).loc[(item.name, head)]
    baseline = "/".join(inputs.baseline) if inputs.baseline else None
    return BenchmarkResult(
        model=item.name, head=head, heads=tuple(item.heads), dataset=inputs.data.data_set.name,
        n_examples=len(inputs.data.test), corruptions=inputs.corrupted.corruptions,
        severities=inputs.corrupted.severities,
        clean_accuracy=float(accuracy["clean_accuracy"]), robust_accuracy=float(accuracy["robust_accuracy"]),
        errors=errors, summary=summary,
        mce=float(summary.loc[head, "mce"]) if baseline else None,
        relative_mce=float(summary.loc[head, "relative_mce"]) if baseline else None,
        baseline=baseline, out_dir=out_dir,
        per_image=PerImageResults(rows=tuple(inputs.rows), wrong={h: scores.wrong[(item.name, h)] for h in item.heads},
                                  test_digest=inputs.data.test.digest, entry=item.entry),
    )


# --- load_corruptions ----------------------------------------------------------------------------

def load_corruptions(dataset: str = "cifar10", corruption: str | Iterable[str] = "all", severity: int = 5,
                     n_examples: int | None = None, corruption_dir: str | os.PathLike | None = None, *,
                     shuffle: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): corrupted test images as float32 (N, 3, H, W) in [0, 1] and their labels as int64 (N,),
    like RobustBench's ``load_cifar10c(n_examples, severity, data_dir, shuffle, corruptions)``.

    As there: each corruption (one name, a list, 'all', 'extra' or a family) contributes its first
    ceil(n_examples / number of corruptions) images at ``severity``, in test-set order, concatenated in the
    order given, optionally shuffled, then cut to ``n_examples`` (default: all of them). The shuffle is
    seeded (``seed``); RobustBench's draws from NumPy's global generator. Images are divided by 255 in
    float32, as there. ``corruption_dir`` defaults to corruptions/<DATASET>-C; a folder with a manifest is
    verified against it, a released folder (no manifest) is read as is.
    """
    names_ = resolve_corruptions(corruption)
    severity = check_severity(severity)
    if n_examples is not None and n_examples < 1:
        raise InputError(f"n_examples must be >= 1, got {n_examples}")
    folder = Path(corruption_dir) if corruption_dir is not None else default_out_dir(dataset)
    rows, labels = _severity_rows(folder, names_, severity, dataset)
    per_corruption = math.ceil(n_examples / len(names_)) if n_examples is not None else rows.stop - rows.start
    images, targets = [], []
    for name in names_:
        data = np.load(folder / corruption_schema.data_file(name), mmap_mode="r")
        images.append(np.asarray(data[rows][:per_corruption]))
        targets.append(labels[rows][:per_corruption])
    x, y = np.concatenate(images), np.concatenate(targets).astype(np.int64)
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(x))
        x, y = x[order], y[order]
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32) / 255)
    return x[:n_examples], torch.from_numpy(y)[:n_examples]


def _severity_rows(folder: Path, names_: tuple[str, ...], severity: int, dataset: str) -> tuple[slice, np.ndarray]:
    """The rows of ``severity`` in the folder's files, and its labels.npy; refuses a folder that cannot serve."""
    if not folder.is_dir():
        raise InputError(f"corruption folder {folder} does not exist: make it with `robustgsl corrupt --dataset "
                         f"{dataset}`, or pass corruption_dir (a released CIFAR-10-C folder works too)")
    manifest = read_manifest(folder)
    if manifest is not None:
        problems = verify_corruption_dataset(folder, names_, [severity], dataset=dataset)
        if problems:
            raise InputError(f"corruption folder {folder} cannot be used: " + "; ".join(problems))
        labels = np.load(folder / corruption_schema.LABELS_FILE)
        return corruption_schema.severity_rows(manifest["severities"], severity, manifest["n_images"]), labels
    missing = [name for name in (corruption_schema.LABELS_FILE, *map(corruption_schema.data_file, names_))
               if not (folder / name).is_file()]
    if missing:
        raise InputError(f"corruption folder {folder} lacks {', '.join(missing)}")
    labels = np.load(folder / corruption_schema.LABELS_FILE)
    if len(labels) % len(SEVERITIES):
        raise InputError(f"{folder / corruption_schema.LABELS_FILE} holds {len(labels)} labels, not 5 severity blocks")
    n = len(labels) // len(SEVERITIES)  # the released layout: severities 1..5, n images each
    return slice((severity - 1) * n, severity * n), labels
