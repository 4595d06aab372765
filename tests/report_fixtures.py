"""A small synthetic evaluation folder and its two run folders, written by robustgsl's own writers.

The per-image results are random but plausible (errors rise with severity; GSL a little more robust);
everything derived from them (errors.csv, summary.csv with real bootstrap intervals, corruption_summary.csv,
robustbench.csv) is computed and written by robustgsl.evaluate, and the run folders by robustgsl.runs, so
the fixture has the writers' formats. The parts without a writer of their own here (evaluation.json, the
.npz arrays) are checked against robustgsl/schema by ``tests/schema_checks.py`` (test_report.py). Tests
compare the page against these files, never against hard-coded numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from robustgsl import runs
from robustgsl.config import make_config
from robustgsl.corruptions import CONSTANTS_SOURCE
from robustgsl.evaluate import write_tables
from robustgsl.summary import BOOTSTRAP_LEVEL, summarise
from robustgsl.io import save_npz_atomic, write_json_atomic
from robustgsl.metrics import CLEAN
from robustgsl.schema.evaluation import (
    EMBEDDINGS_FILE, EXAMPLES_FILE, RECORD_FILE, SNAPSHOTS_DIR, embedding_array, snapshot_folder,
)
from robustgsl.schema.run import EpochMetrics
from robustgsl.seeds import SeedRun
from robustgsl.snapshots import copy_snapshots, write_snapshot

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
HEADS = {"ce": ("argmax", "10nn"), "gsl": ("1nn", "10nn", "svc")}
N_BOOTSTRAP = 200


SNAPSHOT_EPOCHS = (1, 4, 12)


def _config(name: str, loss: str, dataset: str, seed: int, optimizer: str, snapshots: bool):
    return make_config(loss, "demo", dataset=dataset, name=name, epochs=12, batch_size=128, optimizer=optimizer,
                       lr=0.1 if loss == "ce" else 0.05, nesterov=False, weight_decay=5e-4, milestones=[6, 9],
                       k=None if loss == "ce" else 10, alpha=1.0, embedding_dim=None if loss == "ce" else 2,
                       width=1.0, val_size=500, amp=False, channels_last=False, seed=seed,
                       bottleneck=2 if loss == "ce" and snapshots else None,
                       embedding_snapshots=list(SNAPSHOT_EPOCHS) if snapshots else [])


def _write_snapshots(run_dir: Path, rng) -> None:
    """Class clouds that tighten over the epochs, in 2-D (GSL d = 2, CE bottleneck 2)."""
    labels = rng.integers(0, 10, size=400)
    centres = rng.normal(0, 5, size=(10, 2))
    for step, epoch in enumerate(SNAPSHOT_EPOCHS):
        spread = 3.0 / (1 + 2 * step)
        points = centres[labels] * (step + 1) / len(SNAPSHOT_EPOCHS) + rng.normal(0, spread, size=(len(labels), 2))
        write_snapshot(run_dir, epoch, points.astype(np.float32), labels, np.arange(len(labels)) * 3)


def _write_run_folder(run_dir: Path, config, record: dict, metrics: bool, wall_time_s: float, rng) -> None:
    run_dir.mkdir(parents=True)
    runs.write_config(run_dir, record)
    runs.start_environment(run_dir, config, torch.device("cpu"), 1, "held-out training slice",
                           ["robustgsl", "train", "--loss", config.loss, "--name", config.name], previous=None)
    if metrics:
        rows = []
        for epoch in range(1, config.epochs + 1):
            decay = np.exp(-epoch / 4)
            rows.append(dataclasses.asdict(EpochMetrics(
                epoch=epoch, loss=float((2.0 if config.loss == "ce" else 40.0) * decay + 0.05 * rng.random()),
                lr=config.lr, train_error=float(0.7 * decay + 0.02), val_error=float(0.7 * decay + 0.06),
                epoch_time_s=float(50 + rng.random()))))
        runs.write_metrics(run_dir, rows)
    runs.finish_environment(run_dir, wall_time_s)


def _wrong(keys, rows, n_test: int, ce_runs: set, flat_baseline, tiny_baseline, rng) -> dict:
    """Per run/head, whether each test image is misclassified under each (corruption, severity) row."""
    difficulty = dict(zip(CORRUPTIONS, rng.uniform(0.05, 0.12, size=len(CORRUPTIONS))))
    heads = list(dict.fromkeys(head for _, head in keys))
    wrong = {}
    for name, head in keys:
        robust = 1.0 if name in ce_runs else 0.85
        index = heads.index(head) + (0 if name in ce_runs else 1)
        clean_rate = 0.05 + 0.01 * index + 0.004 * rng.random()
        clean = rng.random(n_test) < clean_rate
        array = np.empty((len(rows), n_test), dtype=bool)
        for r, (corruption, severity) in enumerate(rows):
            if corruption == CLEAN or (name in ce_runs and head == "argmax" and corruption in flat_baseline):
                array[r] = clean  # exactly the clean error, so the baseline's relative CE_c is 0 / 0
                continue
            if corruption in tiny_baseline:
                # The baseline errs on one image more than on the clean set (a denominator far inside the
                # noise); the others err less than on the clean set: a huge negative relative CE_c.
                array[r] = clean.copy()
                if name in ce_runs and head == "argmax":
                    array[r][np.flatnonzero(~clean)[:1]] = True
                else:
                    array[r][np.flatnonzero(clean)[: max(1, clean.sum() // 4)]] = False
                continue
            rate = min(robust * difficulty[corruption] * severity * (0.9 + 0.2 * rng.random()), 0.9)
            array[r] = clean | (rng.random(n_test) < rate)
        wrong[(name, head)] = array
    return wrong


def _embeddings(run_models: dict, rng) -> dict:
    n = 300
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    arrays = {"labels": labels, "embedding_corruption": np.array("gaussian_noise")}
    for run, model in run_models.items():
        d = 10 if model == "ce" else 2
        centres = rng.normal(0, 4, size=(10, d))
        clean = centres[labels] + rng.normal(0, 0.7, size=(n, d))
        arrays[embedding_array(run, "clean")] = clean.astype(np.float32)
        arrays[embedding_array(run, "corrupted")] = (clean * 0.6 + rng.normal(0, 1.6, size=(n, d))).astype(np.float32)
    return arrays


def _examples(rng) -> dict:
    """One picture under noise that grows with severity."""
    y, x = np.mgrid[0:32, 0:32]
    clean = np.stack([8 * x, 8 * y, 255 - 4 * (x + y)], axis=-1)
    clean[(x - 16) ** 2 + (y - 14) ** 2 < 60] = (240, 200, 40)
    clean = clean.clip(0, 255).astype(np.uint8)
    corrupted = np.empty((len(CORRUPTIONS), 5, 32, 32, 3), dtype=np.uint8)
    for c in range(len(CORRUPTIONS)):
        for s in range(5):
            noise = rng.normal(0, 12 * (s + 1), size=clean.shape)
            corrupted[c, s] = (clean * (1 - 0.08 * s) + noise + 10 * c).clip(0, 255).astype(np.uint8)
    return {"clean": clean, "corrupted": corrupted, "corruptions": np.array(CORRUPTIONS), "label": np.int64(3),
            "index": np.int64(7)}


def make_evaluation(
    root: Path,
    *,
    models: tuple[str, ...] = ("ce", "gsl"),
    names: dict[str, str] | None = None,
    baseline: bool = True,
    metrics: bool = True,
    embeddings: bool = True,
    examples: bool = True,
    run_folders: bool = True,
    dataset: str = "cifar10",
    n_test: int = 1000,
    seed: int = 0,
    flat_baseline: tuple[str, ...] = (),
    tiny_baseline: tuple[str, ...] = (),
    severities: tuple[int, ...] = SEVERITIES,
    seeds: tuple[int, ...] = (0,),
    optimizer: str = "sgd",
    snapshots: bool = False,
) -> Path:
    """Write ``root/reports/demo`` (the evaluation) and ``root/runs/demo/<model>``; return the evaluation folder.

    ``names`` renames models (e.g. to a name with markup); ``models`` picks which of "ce" and "gsl" exist;
    ``baseline`` False evaluates without one (as `robustgsl evaluate` does without a CE argmax row).
    ``flat_baseline`` names corruptions under which the baseline's error stays at its clean error, so
    their relative CE_c is undefined (0 / 0) and relative MCE averages fewer corruptions, as happens on
    small test sets. ``tiny_baseline`` names corruptions under which the baseline errs on one image more than
    on the clean test set (a denominator inside the noise: flagged) while the other models err less than on
    their clean test set, so their relative CE_c, and relative MCE, are hugely negative.
    With several ``seeds`` every model has one run per seed, in runs/demo/seed<N>/<model>.
    ``snapshots`` gives the runs embedding snapshots (in 2-D), copied into the evaluation folder.
    """
    rng = np.random.default_rng(seed)
    names = names or {}
    eval_dir = root / "reports" / "demo"
    eval_dir.mkdir(parents=True)
    model_entries, wall_times, seed_runs = [], {}, []
    for model in models:
        name = names.get(model, model)
        for run_seed in seeds:
            run = name if len(seeds) == 1 else f"{name}-seed{run_seed}"
            config = _config(name, "ce" if model == "ce" else "gsl", dataset, run_seed, optimizer, snapshots)
            run_dir = root / "runs" / "demo" / (model if len(seeds) == 1 else f"seed{run_seed}/{model}")
            record = runs.config_record(config, world_size=1)
            seed_runs.append(SeedRun(run, name, run_seed))
            wall_times[run] = round(float(600 + 300 * rng.random()), 2)
            if run_folders:
                _write_run_folder(run_dir, config, record, metrics, wall_times[run], rng)
            folder = None
            if snapshots:
                _write_snapshots(run_dir, rng)
                folder = f"{SNAPSHOTS_DIR}/{snapshot_folder(len(model_entries), run)}"
                copy_snapshots(run_dir, eval_dir / folder)
            model_entries.append({"name": run, "model": name, "seed": run_seed, "kind": "run", "run_dir": str(run_dir),
                                  "loss": config.loss, "config": record,
                                  "weights_sha256": hashlib.sha256(run.encode()).hexdigest(),
                                  "architecture": "PreActResNet18", "parameters": 11_173_962,
                                  "embedding": "penultimate features" if config.loss == "ce" else "outputs",
                                  "snapshots": folder})

    by_model = {model: [r.run for r in seed_runs if r.model == names.get(model, model)] for model in models}
    keys = [(run, head) for model in models for run in by_model[model] for head in HEADS[model]]
    rows = [(CLEAN, 0)] + [(c, s) for c in CORRUPTIONS for s in severities]
    wrong = _wrong(keys, rows, n_test, set(by_model.get("ce", [])), flat_baseline, tiny_baseline, rng)
    base = (names.get(models[0], models[0]), HEADS[models[0]][0])
    write_tables(eval_dir, summarise(wrong, rows, base if baseline else None, CORRUPTIONS, N_BOOTSTRAP, seed,
                                     seed_runs))
    corruption_dir = root / "corruptions" / dataset
    write_json_atomic(eval_dir / RECORD_FILE, {
        "models": model_entries,
        "heads": sorted({head for _, head in keys}),
        "baseline": "/".join(base) if baseline else None,
        "dataset": dataset, "num_classes": 10, "n_test": n_test, "n_examples": None, "image_folder": None,
        "corruptions": list(CORRUPTIONS), "severities": list(severities),
        "corruption_source": {"kind": "generated", "path": str(corruption_dir), "manifest": {"seed": 1234},
                              "seed": 1234, "constants": CONSTANTS_SOURCE},
        "svc_train_size": 5000,
        "bootstrap": {"n_resamples": N_BOOTSTRAP, "seed": seed, "level": BOOTSTRAP_LEVEL},
        "created_at": "2024-05-02T09:30:00+00:00", "git_sha": "abc1234def", "versions": runs.versions(),
        "device": "cpu", "wall_times": wall_times | {"total": round(sum(wall_times.values()) + 12.5, 2)},
        "grid_image_index": 7,
    })
    if embeddings:
        run_models = {r.run: model for model in models for r in seed_runs if r.model == names.get(model, model)}
        save_npz_atomic(eval_dir / EMBEDDINGS_FILE, _embeddings(run_models, rng))
    if examples:
        save_npz_atomic(eval_dir / EXAMPLES_FILE, _examples(rng))
    return eval_dir
