"""Fit each model's heads on its training embeddings, then classify the clean and corrupted test sets.

For every model the training images (no augmentation, eval mode) give the reference embeddings of the
k-NN and SVC heads (cached in a run's folder, keyed by the weights' and the images' content and verified:
robustgsl/cache.py; an external model has no folder and no cache). The clean test set and each corruption
file (streamed with ``mmap_mode``, one at a time) go through the model once; every head classifies the same
outputs. Per-image correctness is kept so the paired bootstrap can resample test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from robustgsl import cache
from robustgsl.corruptions.source import open_corruption_file
from robustgsl.device import infer
from robustgsl.errors import WriteError
from robustgsl.evaluate.inputs import EvalData, Inputs
from robustgsl.evaluate.models import EvaluatedModel
from robustgsl.heads import KnnHead, make_head
from robustgsl.io import remove_stale_temporaries
from robustgsl.schema.evaluation import embedding_array
from robustgsl.schema.run import CACHE_DIR
from robustgsl.summary import Tables

Log = Callable[[str], None]
# Outputs and embeddings of the clean and corrupted test sets are cached per checkpoint when the
# embedding is this small (GSL: d = classes); the 512-d CE features would take 1.5 GB per model.
CACHE_MAX_DIM = 64
Wrong = dict[tuple[str, str], np.ndarray]  # (run, head) -> bool (rows, n_test): misclassified


@dataclass
class Scores:
    """An evaluation before it is written: what was read, per-image results, tables, embedding views."""

    inputs: Inputs
    wrong: Wrong  # scored here
    tables: Tables
    embeddings: dict[str, np.ndarray]
    started: float


@dataclass(frozen=True)
class HeadSettings:
    """How the heads are fitted (EvalConfig's svc_train_size and seed), and whether to show progress."""

    svc_train_size: int | None
    seed: int
    quiet: bool


def fit_heads(item: EvaluatedModel, data: EvalData, settings: HeadSettings, log: Log) -> None:
    num_classes = data.data_set.num_classes
    if item.heads == ["argmax"]:  # reads the outputs: no training embeddings needed
        item.fitted["argmax"] = make_head("argmax", num_classes)
        return
    reference = _reference_embeddings(item, data, settings.quiet, log)
    shared_index = None  # 1-NN and 10-NN search the same references: build the index once
    for head_name in item.heads:
        head = make_head(head_name, num_classes, device=data.device, svc_train_size=settings.svc_train_size,
                         seed=settings.seed)
        if isinstance(head, KnnHead) and shared_index is not None:
            head.index = shared_index
        else:
            head.fit(reference, data.train.labels)
            if isinstance(head, KnnHead):
                shared_index = head.index
        item.fitted[head_name] = head


def score_clean(item: EvaluatedModel, data: EvalData, quiet: bool, log: Log) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per head, whether each clean test image is misclassified (shape (1, n_test)); and the clean embeddings."""
    per_head = {h: np.zeros((1, len(data.test)), dtype=bool) for h in item.heads}
    outputs, embedded = _cached_infer(item, data.test.images, f"clean-{data.test.digest}", data, quiet,
                                      f"{item.name} clean", log)
    _classify(item, outputs, embedded, data.test.labels, per_head, 0)
    log(f"[{item.name}] clean: " + _error_line(per_head, [0]))
    return per_head, embedded


def score_model(item: EvaluatedModel, inputs: Inputs, quiet: bool, embeddings: dict, log: Log) -> Wrong:
    """Per head, whether each test image is misclassified under each row; adds the model's embedding view."""
    data, corrupted, view, rows = inputs.data, inputs.corrupted, inputs.view, inputs.rows
    clean, embedded = score_clean(item, data, quiet, log)
    per_head = {h: np.zeros((len(rows), len(data.test)), dtype=bool) for h in item.heads}
    for head, array in clean.items():
        per_head[head][0] = array[0]
    has_view = embedded.shape[1] > 0  # a model without an embedding has no 2-D view
    if has_view:
        embeddings[embedding_array(item.name, "clean")] = embedded[view.sample]
    for name in corrupted.corruptions:
        row_index = [rows.index((name, s)) for s in corrupted.severities]
        at_view_severity = _score_corruption(item, inputs, name, row_index, per_head, quiet, log)
        if has_view and name == view.corruption:
            embeddings[embedding_array(item.name, "corrupted")] = at_view_severity[view.sample]
        log(f"[{item.name}] {name}: " + _error_line(per_head, row_index))
    return {(item.name, head_name): array for head_name, array in per_head.items()}


def _score_corruption(item: EvaluatedModel, inputs: Inputs, name: str, row_index: list[int], per_head: dict,
                      quiet: bool, log: Log) -> np.ndarray:
    """One corruption file, severity by severity, into ``per_head``; returns the embeddings at the embedding
    view's severity (the highest evaluated)."""
    data, corrupted = inputs.data, inputs.corrupted
    n_test = len(data.test)
    # Cache keys name the test images: a first-N subset is not the full set.
    subset = "" if n_test == data.n_full else f"-first{n_test}"
    images = open_corruption_file(corrupted.folder / f"{name}.npy")
    for severity, row in zip(corrupted.severities, row_index):
        start = (severity - 1) * data.n_full
        outputs, embedded = _cached_infer(item, images[start:start + n_test],
                                          f"{name}-s{severity}-{corrupted.file_digests[name]}{subset}", data, quiet,
                                          f"{item.name} {name} s{severity}", log)
        _classify(item, outputs, embedded, data.test.labels, per_head, row)
        if severity == inputs.view.severity:
            at_view_severity = embedded
    del images
    return at_view_severity


def _classify(item: EvaluatedModel, outputs, embeddings, labels, per_head, row: int) -> None:
    for head_name, head in item.fitted.items():
        predictions = head.predict(outputs if head_name == "argmax" else embeddings)
        per_head[head_name][row] = predictions != labels


def _error_line(per_head: dict, rows: list[int]) -> str:
    return "  ".join(f"{h} " + " ".join(f"{array[r].mean():.1%}" for r in rows) for h, array in per_head.items())


def log_summary(summary: pd.DataFrame, corruptions, log: Log) -> None:
    averaged = summary["relative_mce_corruptions"].min() if "relative_mce_corruptions" in summary else len(corruptions)
    if averaged < len(corruptions):
        log(f"note: under some corruptions the baseline's errors average out to its clean error (too few test "
            f"images or too robust a baseline), so their relative CE is undefined and left out of relative MCE: "
            f"averaged over {int(averaged)} of {len(corruptions)} corruptions")
    for record in summary.to_dict("records"):
        mce = "" if pd.isna(record.get("mce")) else f"  MCE {record['mce']:.2f}  relative MCE {record['relative_mce']:.2f}"
        log(f"{record['model']}/{record['head']}: clean error {record['clean_error']:.2%}{mce}")


# --- the run folder's cache -------------------------------------------------------------------------

def _cache_dir(item: EvaluatedModel, device: torch.device) -> Path | None:
    """Cache folder of one checkpoint on one kind of device (CUDA runs in bf16, the CPU in float32); an
    external model has none."""
    if item.run_dir is None:
        return None
    return item.run_dir / CACHE_DIR / f"{item.weights_sha256[:16]}-{device.type}"


def _infer(item: EvaluatedModel, images: np.ndarray, data: EvalData, quiet: bool, desc: str):
    outputs, embeddings = infer(item.model, images, data.device, amp=item.amp, batch_size=data.batch_size,
                                quiet=quiet, desc=desc)
    return outputs.numpy(), embeddings.numpy()


def _remember(item: EvaluatedModel, path: Path | None, arrays: dict, log: Log) -> None:
    """Write a cache entry; a run folder that cannot be written (read-only) only turns the cache off."""
    if item.cache_off or path is None:
        return
    try:
        remove_stale_temporaries(path.parent)
        cache.write_entry(path, arrays)
    except WriteError as error:
        item.cache_off = True
        log(f"[{item.name}] not caching outputs: {error}")


def _recall(item: EvaluatedModel, path: Path | None, n: int, log: Log) -> dict | None:
    """A verified cache entry of ``n`` rows, or None (no cache, no entry, or a damaged one: said in the log)."""
    if path is None:
        return None
    cached, problem = cache.read_entry(path, n)
    if problem:
        log(f"[{item.name}] cached {path} cannot be used ({problem}); computing it again")
    return cached


def _reference_embeddings(item: EvaluatedModel, data: EvalData, quiet: bool, log: Log) -> np.ndarray:
    """Training-set embeddings, cached in the run folder under the weights' and the images' digests."""
    folder = _cache_dir(item, data.device)
    path = folder / f"train_embeddings-{data.train.digest}.npz" if folder is not None else None
    cached = _recall(item, path, len(data.train), log)
    if cached is not None and "embeddings" in cached:
        return cached["embeddings"]
    _, embeddings = _infer(item, data.train.images, data, quiet, f"{item.name} train embeddings")
    _remember(item, path, {"embeddings": embeddings}, log)
    return embeddings


def _cached_infer(item: EvaluatedModel, images: np.ndarray, key: str, data: EvalData, quiet: bool, desc: str,
                  log: Log):
    """Outputs and embeddings, remembered in <run>/cache/<weights hash>/<key>.npz when the embedding is small."""
    folder = _cache_dir(item, data.device)
    path = folder / f"{key}.npz" if folder is not None else None
    cached = _recall(item, path, len(images), log)
    if cached is not None and {"outputs", "embeddings"} <= set(cached):
        return cached["outputs"], cached["embeddings"]
    outputs, embeddings = _infer(item, images, data, quiet, desc)
    if embeddings.shape[1] <= CACHE_MAX_DIM:
        _remember(item, path, {"outputs": outputs, "embeddings": embeddings}, log)
    return outputs, embeddings
