"""The evaluation folder (its files: robustgsl/schema/evaluation.py), written as a whole.

Its files go into a temporary sibling folder (robustgsl.io.atomic_folder), which replaces the old folder
only once complete: the folder holds one evaluation's files, never a mix of two, and a failed evaluation
changes nothing. A given ``--out`` is checked before the long work starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgsl import runs
from robustgsl.config import EvalConfig
from robustgsl.corruptions import SEVERITIES
from robustgsl.evaluate.inputs import Inputs
from robustgsl.evaluate.models import EvaluatedModel, pair_name
from robustgsl.evaluate.scoring import Scores
from robustgsl.io import atomic_folder, save_npz_atomic, write_csv_atomic, write_json_atomic
from robustgsl.report import write_report
from robustgsl.schema.evaluation import (
    CORRUPTION_SUMMARY_FILE, EMBEDDINGS_FILE, ERRORS_FILE, EXAMPLES_FILE, FILES, RECORD_FILE, REPORT_FILE,
    ROBUSTBENCH_FILE, ROBUSTBENCH_SUMMARY_FILE, SEED_SUMMARY_FILE, SEVERITY_FILE, SNAPSHOTS_DIR, SUMMARY_FILE,
    snapshot_folder,
)
from robustgsl.snapshots import copy_snapshots
from robustgsl.summary import BOOTSTRAP_LEVEL, Tables
from robustgsl.vocabulary import HEADS

Log = Callable[[str], None]


def write_evaluation(scores: Scores, config: EvalConfig, log: Log | None = None) -> Path:
    """Write an evaluation folder (``config.out_dir``, default reports/<name>) and, if asked, its report."""
    log = log or (lambda message: None)
    out_dir = Path(config.out_dir) if config.out_dir is not None else _default_out_dir(scores.inputs)
    with atomic_folder(out_dir, may_replace=is_evaluation_folder) as staging:
        _write(staging, scores, config)
        if config.report:
            write_report(staging, folder_name=Path(os.path.abspath(out_dir)).name)
    if config.report:
        log(f"Report written to {out_dir / REPORT_FILE}")
    return out_dir


def is_evaluation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an evaluation (which a new one may replace as a whole) and nothing else
    of value: its evaluation.json, or only files of robustgsl/schema/evaluation.py."""
    return (folder / RECORD_FILE).is_file() or all(path.name in FILES for path in folder.iterdir())


def planned_out_dir(run_dirs: Sequence[Path], config: EvalConfig) -> Path | None:
    """The evaluation folder, when it is known before the models are loaded (``run_dirs`` as resolved)."""
    if config.out_dir is not None:
        return Path(config.out_dir)
    return Path("reports") / pair_name(run_dirs[0]) if run_dirs else None


def _default_out_dir(inputs: Inputs) -> Path:
    """reports/<the first run's parent folder>, or reports/<the first external model's name>."""
    first = inputs.models[0]
    return Path("reports") / (pair_name(first.run_dir) if first.run_dir is not None else first.name)


def write_tables(out_dir: Path, tables: Tables) -> None:
    """The CSV files, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / ERRORS_FILE, tables.errors, index=False)
    write_csv_atomic(out_dir / SUMMARY_FILE, tables.summary, index=False)
    write_csv_atomic(out_dir / SEED_SUMMARY_FILE, tables.seed_summary, index=False)
    write_csv_atomic(out_dir / CORRUPTION_SUMMARY_FILE, tables.corruption_summary, index=False)
    write_csv_atomic(out_dir / SEVERITY_FILE, tables.severity_curves, index=False)
    write_csv_atomic(out_dir / ROBUSTBENCH_FILE, tables.robustbench)
    write_csv_atomic(out_dir / ROBUSTBENCH_SUMMARY_FILE, tables.robustbench_summary, index=False)


def copy_run_snapshots(out_dir: Path, models: Sequence[EvaluatedModel]) -> list[str | None]:
    """Each run's embedding snapshots copied into <out>/snapshots/<folder>/; per model its folder or None."""
    folders = []
    for index, item in enumerate(models):
        folder = f"{SNAPSHOTS_DIR}/{snapshot_folder(index, item.name)}"
        copied = item.run_dir is not None and copy_snapshots(item.run_dir, out_dir / folder)
        folders.append(folder if copied else None)
    return folders


def example_arrays(inputs: Inputs, index: int) -> dict[str, np.ndarray]:
    """example_images.npz: test image ``index``, clean and under every corruption and severity."""
    folder, names, test, n_full = inputs.corrupted.folder, inputs.corrupted.corruptions, inputs.data.test, \
        inputs.data.n_full
    corrupted = np.stack([
        np.stack([np.load(folder / f"{name}.npy", mmap_mode="r")[(s - 1) * n_full + index] for s in SEVERITIES])
        for name in names])
    return {"clean": test.images[index], "corrupted": corrupted, "corruptions": np.array(list(names)),
            "label": np.int64(test.labels[index]), "index": np.int64(index)}


def _write(out_dir: Path, scores: Scores, config: EvalConfig) -> None:
    write_tables(out_dir, scores.tables)
    save_npz_atomic(out_dir / EMBEDDINGS_FILE, scores.embeddings)
    save_npz_atomic(out_dir / EXAMPLES_FILE, example_arrays(scores.inputs, config.grid_image_index))
    snapshot_folders = copy_run_snapshots(out_dir, scores.inputs.models)
    write_json_atomic(out_dir / RECORD_FILE, _record(scores, config, snapshot_folders))


def _record(scores: Scores, config: EvalConfig, snapshot_folders: list[str | None]) -> dict:
    """evaluation.json (RECORD_FIELDS)."""
    inputs = scores.inputs
    models, reference, data_set = inputs.models, inputs.reference, inputs.data.data_set
    entries = [m.entry | {"name": m.name, "model": m.group, "seed": m.seed_run.seed if m.seed_run else None,
                          "snapshots": folder} for m, folder in zip(models, snapshot_folders)]
    if reference is not None:
        entries.append(reference.entry | {"model": reference.name, "seed": None, "snapshots": None})
    heads = {h for m in models for h in m.heads} | ({reference.head} if reference is not None else set())
    return {
        "models": entries,
        "heads": sorted(heads, key=HEADS.index),
        "baseline": "/".join(inputs.baseline) if inputs.baseline else None,
        "dataset": data_set.name, "num_classes": data_set.num_classes, "n_test": len(inputs.data.test),
        "n_examples": config.n_examples, "image_folder": data_set.image_folder,
        "corruptions": list(inputs.corrupted.corruptions), "severities": list(inputs.corrupted.severities),
        "corruption_source": inputs.corrupted.source.record(),
        "svc_train_size": config.svc_train_size,
        "bootstrap": {"n_resamples": config.n_bootstrap, "seed": config.seed, "level": BOOTSTRAP_LEVEL},
        "created_at": runs.now_iso(), "git_sha": runs.git_sha(), "versions": runs.versions(),
        "device": runs.device_name(inputs.data.device),
        "wall_times": {m.name: round(m.wall_time_s, 2) for m in models}
        | {"total": round(time.time() - scores.started, 2)},
        "grid_image_index": config.grid_image_index,
    }
