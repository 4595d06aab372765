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
from robustgsl.evaluate import BOOTSTRAP_LEVEL, summarise, write_tables
from robustgsl.io import save_npz_atomic, write_json_atomic
from robustgsl.metrics import CLEAN
from robustgsl.schema.evaluation import EMBEDDINGS_FILE, EXAMPLES_FILE, RECORD_FILE, embedding_array
from robustgsl.schema.run import EpochMetrics

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
HEADS = {"ce": ("argmax", "10nn"), "gsl": ("1nn", "10nn", "svc")}
N_BOOTSTRAP = 200


def _config(name: str, loss: str, dataset: str):
    return make_config(loss, "demo", dataset=dataset, name=name, epochs=12, batch_size=128, optimizer="sgd",
                       lr=0.1 if loss == "ce" else 0.05, nesterov=False, weight_decay=5e-4, milestones=[6, 9],
                       k=None if loss == "ce" else 10, alpha=1.0, embedding_dim=None if loss == "ce" else 2,
                       width=1.0, val_size=500, amp=False, channels_last=False)


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


def _wrong(keys, rows, n_test: int, ce_name: str, flat_baseline, rng) -> dict:
    """Per model/head, whether each test image is misclassified under each (corruption, severity) row."""
    difficulty = dict(zip(CORRUPTIONS, rng.uniform(0.05, 0.12, size=len(CORRUPTIONS))))
    wrong = {}
    for index, (name, head) in enumerate(keys):
        robust = 1.0 if name == ce_name else 0.85
        clean_rate = 0.05 + 0.01 * index + 0.004 * rng.random()
        clean = rng.random(n_test) < clean_rate
        array = np.empty((len(rows), n_test), dtype=bool)
        for r, (corruption, severity) in enumerate(rows):
            if corruption == CLEAN or (index == 0 and corruption in flat_baseline):
                array[r] = clean  # exactly the clean error, so the baseline's relative CE_c is 0 / 0
                continue
            rate = min(robust * difficulty[corruption] * severity * (0.9 + 0.2 * rng.random()), 0.9)
            array[r] = clean | (rng.random(n_test) < rate)
        wrong[(name, head)] = array
    return wrong


def _embeddings(models, names: dict, rng) -> dict:
    n = 300
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    arrays = {"labels": labels, "embedding_corruption": np.array("gaussian_noise")}
    for model in models:
        d = 10 if model == "ce" else 2
        centres = rng.normal(0, 4, size=(10, d))
        clean = centres[labels] + rng.normal(0, 0.7, size=(n, d))
        arrays[embedding_array(names.get(model, model), "clean")] = clean.astype(np.float32)
        arrays[embedding_array(names.get(model, model), "corrupted")] = \
            (clean * 0.6 + rng.normal(0, 1.6, size=(n, d))).astype(np.float32)
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
    severities: tuple[int, ...] = SEVERITIES,
) -> Path:
    """Write ``root/reports/demo`` (the evaluation) and ``root/runs/demo/<model>``; return the evaluation folder.

    ``names`` renames models (e.g. to a name with markup); ``models`` picks which of "ce" and "gsl" exist;
    ``baseline`` False evaluates without one (as `robustgsl evaluate` does without a CE argmax row).
    ``flat_baseline`` names corruptions under which the baseline's error stays at its clean error, so
    their relative CE_c is undefined (0 / 0) and relative MCE averages fewer corruptions, as happens on
    small test sets.
    """
    rng = np.random.default_rng(seed)
    names = names or {}
    eval_dir = root / "reports" / "demo"
    eval_dir.mkdir(parents=True)
    model_entries, wall_times = [], {}
    for model in models:
        name = names.get(model, model)
        config = _config(name, "ce" if model == "ce" else "gsl", dataset)
        run_dir = root / "runs" / "demo" / model
        record = runs.config_record(config, world_size=1)
        model_entries.append({"name": name, "kind": "run", "run_dir": str(run_dir), "loss": config.loss,
                              "config": record, "weights_sha256": hashlib.sha256(name.encode()).hexdigest(),
                              "architecture": "PreActResNet18", "parameters": 11_173_962,
                              "embedding": "penultimate features" if config.loss == "ce" else "outputs"})
        wall_times[name] = round(float(600 + 300 * rng.random()), 2)
        if run_folders:
            _write_run_folder(run_dir, config, record, metrics, wall_times[name], rng)

    keys = [(names.get(model, model), head) for model in models for head in HEADS[model]]
    rows = [(CLEAN, 0)] + [(c, s) for c in CORRUPTIONS for s in severities]
    wrong = _wrong(keys, rows, n_test, names.get("ce", "ce"), flat_baseline, rng)
    write_tables(eval_dir, summarise(wrong, rows, keys[0] if baseline else None, CORRUPTIONS, N_BOOTSTRAP, seed))
    corruption_dir = root / "corruptions" / dataset
    write_json_atomic(eval_dir / RECORD_FILE, {
        "models": model_entries,
        "heads": sorted({head for _, head in keys}),
        "baseline": "/".join(keys[0]) if baseline else None,
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
        save_npz_atomic(eval_dir / EMBEDDINGS_FILE, _embeddings(models, names, rng))
    if examples:
        save_npz_atomic(eval_dir / EXAMPLES_FILE, _examples(rng))
    return eval_dir
