"""A small synthetic evaluation folder, two run folders and the npz files, following the shared formats.

Numbers are random but plausible (errors rise with severity; GSL a little more robust), so the report
looks like a real one; tests compare the page against these files, never against hard-coded numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
HEADS = {"ce": ("argmax", "10nn"), "gsl": ("1nn", "10nn", "svc")}


def _config(name: str, loss: str, dataset: str) -> dict:
    return {
        "name": name, "loss": loss, "dataset": dataset, "num_classes": 10, "preset": "demo", "epochs": 12,
        "batch_size": 128, "optimizer": "sgd", "lr": 0.1 if loss == "ce" else 0.05, "momentum": 0.9,
        "nesterov": False, "weight_decay": 5e-4, "milestones": [6, 9], "gamma": 0.1,
        "k": None if loss == "ce" else 10, "alpha": 1.0, "embedding_dim": 10 if loss == "ce" else 2,
        "normalization": None if loss == "ce" else "l2", "width": 1.0, "seed": 0, "augment": True,
        "flip": True, "val_size": 500, "device": "cpu", "amp": False, "channels_last": False,
    }


def _bootstrap_interval(rng: np.random.Generator, value: float, spread: float) -> tuple[float, float]:
    return value - spread * (0.8 + 0.4 * rng.random()), value + spread * (0.8 + 0.4 * rng.random())


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
) -> Path:
    """Write ``root/reports/demo`` (the evaluation) and ``root/runs/demo/<model>``; return the evaluation folder.

    ``names`` renames models (e.g. to a name with markup); ``models`` picks which of "ce" and "gsl" exist.
    ``flat_baseline`` names corruptions under which the baseline's error stays at its clean error, so
    their relative CE_c is undefined (0 / 0) and relative MCE averages fewer corruptions, as happens on
    small test sets.
    """
    rng = np.random.default_rng(seed)
    names = names or {}
    eval_dir = root / "reports" / "demo"
    eval_dir.mkdir(parents=True)
    model_entries, wall_times = [], {}

    # --- run folders ----------------------------------------------------------------------
    for model in models:
        name = names.get(model, model)
        loss = "ce" if model == "ce" else "gsl"
        run_dir = root / "runs" / "demo" / model
        config = _config(name, loss, dataset)
        model_entries.append({"name": name, "run_dir": str(run_dir), "loss": loss, "config": config})
        wall_times[name] = float(600 + 300 * rng.random())
        if not run_folders:
            continue
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
        environment = {
            "python": "3.11.2", "torch": "2.4.0", "robustgsl": "0.1.0", "device": "cpu", "git_sha": "abc1234",
            "seed": 0, "command": f"robustgsl train --name {name}", "hostname": "fixture",
            "started_at": "2024-05-01T10:00:00", "finished_at": "2024-05-01T10:11:00",
            "wall_time_s": wall_times[name],
        }
        (run_dir / "environment.json").write_text(json.dumps(environment, indent=2))
        if metrics:
            lines = []
            for epoch in range(1, 13):
                decay = np.exp(-epoch / 4)
                lines.append(json.dumps({
                    "epoch": epoch, "loss": float((2.0 if loss == "ce" else 40.0) * decay + 0.05 * rng.random()),
                    "lr": 0.1, "train_error": float(0.7 * decay + 0.02), "val_error": float(0.7 * decay + 0.06),
                    "epoch_time_s": float(50 + rng.random()),
                }))
            (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (run_dir / "model.safetensors").write_bytes(b"")

    # --- errors.csv ---------------------------------------------------------------------
    keys = [(names.get(model, model), head) for model in models for head in HEADS[model]]
    difficulty = rng.uniform(0.05, 0.12, size=len(CORRUPTIONS))
    rows = []
    for index, (name, head) in enumerate(keys):
        robust = 1.0 if name == names.get("ce", "ce") else 0.85
        clean = 0.05 + 0.01 * index + 0.004 * rng.random()
        rows.append({"model": name, "head": head, "corruption": "clean", "severity": 0, "error": clean})
        for c, corruption in enumerate(CORRUPTIONS):
            for severity in SEVERITIES:
                error = round(float(min(clean + robust * difficulty[c] * severity * (0.9 + 0.2 * rng.random()),
                                        0.9)), 4)
                if index == 0 and corruption in flat_baseline:
                    error = clean  # exactly the clean error (not rounded), so the ratio is exactly 0 / 0
                rows.append({"model": name, "head": head, "corruption": corruption, "severity": severity,
                             "error": error})
    errors = pd.DataFrame(rows)
    errors.to_csv(eval_dir / "errors.csv", index=False)

    # --- corruption_summary.csv and summary.csv (Hendrycks' CE_c against the first key) ---------
    table = errors.set_index(["model", "head", "corruption", "severity"])["error"]
    base_name, base_head = keys[0]
    summary_rows, corruption_rows = [], []
    for name, head in keys:
        clean = table[(name, head, "clean", 0)]
        ce_values, rel_values = [], []
        for corruption in CORRUPTIONS:
            mine = np.array([table[(name, head, corruption, s)] for s in SEVERITIES])
            base = np.array([table[(base_name, base_head, corruption, s)] for s in SEVERITIES])
            base_clean = table[(base_name, base_head, "clean", 0)]
            ce = 100 * mine.sum() / base.sum() if baseline else np.nan
            rel_base = (base - base_clean).sum()
            rel = 100 * (mine - clean).sum() / rel_base if baseline and abs(rel_base) > 1e-12 else np.nan
            ce_values.append(ce)
            rel_values.append(rel)
            corruption_rows.append({"model": name, "head": head, "corruption": corruption, "ce": ce,
                                    "relative_ce": rel, "mean_error": mine.mean()})
        mce = float(np.nanmean(ce_values)) if baseline else np.nan
        relative_mce = float(np.nanmean(rel_values)) if baseline else np.nan
        clean_low, clean_high = _bootstrap_interval(rng, clean, 0.006)
        row = {
            "model": name, "head": head, "baseline": f"{base_name}/{base_head}" if baseline else "",
            "clean_error": clean, "clean_error_low": clean_low, "clean_error_high": clean_high,
            "mean_corruption_error": float(np.mean([table[(name, head, c, s)] for c in CORRUPTIONS for s in SEVERITIES])),
        }
        if baseline:
            mce_low, mce_high = _bootstrap_interval(rng, mce, 2.0)
            rel_low, rel_high = _bootstrap_interval(rng, relative_mce, 3.0)
            diff = clean - table[(base_name, base_head, "clean", 0)]
            diff_low, diff_high = _bootstrap_interval(rng, diff, 0.008)
        else:
            mce_low = mce_high = rel_low = rel_high = diff_low = diff_high = np.nan
        row.update({"mce": mce, "mce_low": mce_low, "mce_high": mce_high, "relative_mce": relative_mce,
                    "relative_mce_low": rel_low, "relative_mce_high": rel_high,
                    "clean_error_diff_low": diff_low, "clean_error_diff_high": diff_high,
                    # how many corruptions MCE and relative MCE average (those with a defined ratio)
                    "mce_corruptions": int(np.isfinite(ce_values).sum()),
                    "relative_mce_corruptions": int(np.isfinite(rel_values).sum()), "n_test": n_test})
        summary_rows.append(row)
    pd.DataFrame(summary_rows).to_csv(eval_dir / "summary.csv", index=False)
    pd.DataFrame(corruption_rows).to_csv(eval_dir / "corruption_summary.csv", index=False)

    # --- robustbench.csv: accuracies, two-level header -------------------------------------
    wide = errors[errors["corruption"] != "clean"].assign(
        key=lambda f: f["model"] + "/" + f["head"], accuracy=lambda f: 1 - f["error"])
    wide = wide.pivot_table(index="key", columns=["corruption", "severity"], values="accuracy")
    wide.index.name = "model/head"
    wide.to_csv(eval_dir / "robustbench.csv")

    # --- evaluation.json -------------------------------------------------------------------
    corruption_dir = root / "corruptions" / "cifar10"
    meta = {
        "models": model_entries,
        "heads": sorted({head for _, head in keys}),
        "baseline": f"{base_name}/{base_head}" if baseline else None,
        "dataset": dataset, "num_classes": 10, "n_test": n_test,
        "corruptions": list(CORRUPTIONS), "severities": list(SEVERITIES),
        "corruption_source": {"kind": "generated", "path": str(corruption_dir), "manifest": {"n": n_test},
                              "seed": 1234, "constants": {"gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10]}},
        "svc_train_size": 5000,
        "bootstrap": {"n_resamples": 1000, "seed": 0},
        "created_at": "2024-05-02T09:30:00", "git_sha": "abc1234def",
        "versions": {"python": "3.11.2", "torch": "2.4.0", "robustgsl": "0.1.0", "numpy": "1.26.4",
                     "sklearn": "1.4.2"},
        "device": "cpu", "wall_times": wall_times, "grid_image_index": 7,
    }
    (eval_dir / "evaluation.json").write_text(json.dumps(meta, indent=2))

    # --- embeddings.npz: class clusters, spread out further under corruption -------------------
    if embeddings:
        n = 300
        labels = rng.integers(0, 10, size=n)
        arrays = {"labels": labels, "embedding_corruption": np.array("gaussian_noise")}
        for model in models:
            d = 10 if model == "ce" else 2
            centres = rng.normal(0, 4, size=(10, d))
            clean = centres[labels] + rng.normal(0, 0.7, size=(n, d))
            arrays[f"{names.get(model, model)}__clean"] = clean.astype(np.float32)
            arrays[f"{names.get(model, model)}__corrupted"] = (clean * 0.6 + rng.normal(0, 1.6, size=(n, d))).astype(np.float32)
        np.savez(eval_dir / "embeddings.npz", **arrays)

    # --- example_images.npz: one picture under noise that grows with severity ----------------
    if examples:
        y, x = np.mgrid[0:32, 0:32]
        clean = np.stack([8 * x, 8 * y, 255 - 4 * (x + y)], axis=-1)
        clean[(x - 16) ** 2 + (y - 14) ** 2 < 60] = (240, 200, 40)
        clean = clean.clip(0, 255).astype(np.uint8)
        corrupted = np.empty((len(CORRUPTIONS), 5, 32, 32, 3), dtype=np.uint8)
        for c in range(len(CORRUPTIONS)):
            for s in range(5):
                noise = rng.normal(0, 12 * (s + 1), size=clean.shape)
                corrupted[c, s] = (clean * (1 - 0.08 * s) + noise + 10 * c).clip(0, 255).astype(np.uint8)
        np.savez(eval_dir / "example_images.npz", clean=clean, corrupted=corrupted,
                 corruptions=np.array(CORRUPTIONS), label=np.array(3), index=np.array(7))
    return eval_dir
