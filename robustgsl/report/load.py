"""Read an evaluation folder (and the run folders it names) for the report.

The files follow the shared format contract: ``summary.csv``, ``errors.csv``, ``corruption_summary.csv``,
``evaluation.json``, ``embeddings.npz``, ``example_images.npz`` and, per model, a run folder with
``config.json``, ``environment.json`` and ``metrics.jsonl``.

A part that is absent becomes ``None`` plus a sentence in ``missing`` saying why, so the report can say
"not available because ..." instead of failing. A part that is present but malformed is bad input and
raises ``InputError`` naming the file, except inside run folders, which belong to training and may be
mid-write (a truncated last line of ``metrics.jsonl`` is skipped with a note).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustgsl.errors import InputError

# Columns each CSV must have; the others of the contract are optional here (filled with NaN).
ERRORS_COLUMNS = ("model", "head", "corruption", "severity", "error")
SUMMARY_COLUMNS = ("model", "head", "clean_error")
SUMMARY_NUMERIC = (
    "clean_error", "clean_error_low", "clean_error_high", "mean_corruption_error",
    "mce", "mce_low", "mce_high", "relative_mce", "relative_mce_low", "relative_mce_high",
    "clean_error_diff_low", "clean_error_diff_high", "n_test",
    "mce_corruptions", "relative_mce_corruptions",  # how many corruptions MCE / relative MCE average
)
CORRUPTION_SUMMARY_COLUMNS = ("model", "head", "corruption", "ce", "relative_ce", "mean_error")
TEXT_COLUMNS = ("model", "head", "corruption", "baseline")


@dataclass
class Run:
    """One trained model as the report sees it."""

    name: str
    loss: str | None = None
    run_dir_text: str | None = None  # as written in evaluation.json
    run_dir: Path | None = None  # the folder found on disk, or None
    config: dict | None = None
    environment: dict | None = None
    metrics: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    eval_dir: Path
    meta: dict[str, Any]
    summary: pd.DataFrame | None
    errors: pd.DataFrame | None
    corruption_summary: pd.DataFrame | None
    embeddings: dict[str, Any] | None
    examples: dict[str, Any] | None
    runs: list[Run]
    missing: dict[str, str]  # part name -> why it is not available
    keys: list[str]  # "model/head" in report order
    baseline: str | None  # "model/head" of the baseline, if any


def _read_csv(path: Path, required: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    # Read every cell as text first so that run names such as "NA" or "null" stay names.
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not a readable CSV file ({error}); rerun `robustgsl evaluate`.") from error
    absent = [column for column in required if column not in frame.columns]
    if absent:
        raise InputError(
            f"{path} lacks the column(s) {', '.join(absent)}; expected at least {', '.join(required)} "
            "(rerun `robustgsl evaluate` to rewrite it)."
        )
    for column in numeric:
        if column not in frame.columns:
            frame[column] = np.nan
            continue
        text = frame[column].str.strip()
        empty = text.str.lower().isin(("", "nan", "na", "null", "none"))  # how a missing number is written
        try:
            frame[column] = pd.to_numeric(text.where(~empty, None)).astype(float)
        except (ValueError, TypeError) as error:
            raise InputError(f"{path}: column {column!r} holds a non-number ({error}).") from error
    return frame


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}).") from error


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{path} is not a readable .npz archive ({error}).") from error


def read_metrics(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """metrics.jsonl -> one row per epoch, sorted by epoch; unparsable lines are skipped with a note."""
    rows, notes = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            notes.append(f"line {number} of {path.name} is not valid JSON and was skipped")
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    if not rows:
        return None, notes + [f"{path.name} holds no epochs yet"]
    frame = pd.DataFrame(rows)
    for column in ("epoch", "loss", "lr", "train_error", "val_error", "epoch_time_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    frame = frame.sort_values("epoch", kind="stable").drop_duplicates("epoch", keep="last")
    return frame.reset_index(drop=True), notes


def _find_run_dir(text: str, eval_dir: Path) -> Path | None:
    # evaluation.json may hold an absolute path, or one relative to the evaluation folder or to the
    # folder the evaluation was started from; take the first that exists.
    path = Path(text)
    candidates = [path] if path.is_absolute() else [eval_dir / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def _load_run(entry: dict, eval_dir: Path) -> Run:
    run = Run(name=str(entry.get("name")), loss=entry.get("loss"), run_dir_text=entry.get("run_dir"))
    if isinstance(entry.get("config"), dict):
        run.config = entry["config"]
    if not run.run_dir_text:
        run.notes.append("evaluation.json names no run folder for this model")
        return run
    run.run_dir = _find_run_dir(str(run.run_dir_text), eval_dir)
    if run.run_dir is None:
        run.notes.append(f"its run folder {run.run_dir_text} was not found")
        return run
    for attribute, filename in (("config", "config.json"), ("environment", "environment.json")):
        path = run.run_dir / filename
        if not path.is_file():
            run.notes.append(f"{filename} is missing from its run folder")
            continue
        try:
            setattr(run, attribute, json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            run.notes.append(f"{filename} in its run folder is not valid JSON")
    metrics_path = run.run_dir / "metrics.jsonl"
    if metrics_path.is_file():
        run.metrics, notes = read_metrics(metrics_path)
        run.notes.extend(notes)
    else:
        run.notes.append("its run folder has no metrics.jsonl")
    return run


def _ordered_keys(summary: pd.DataFrame | None, errors: pd.DataFrame | None) -> list[str]:
    keys: list[str] = []
    for frame in (summary, errors):
        if frame is None:
            continue
        for model, head in zip(frame["model"], frame["head"]):
            key = f"{model}/{head}"
            if key not in keys:
                keys.append(key)
    return keys


def load_evaluation(eval_dir: str | os.PathLike) -> Evaluation:
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputError(f"evaluation folder {eval_dir} does not exist; run `robustgsl evaluate` first.")
    missing: dict[str, str] = {}

    meta: dict[str, Any] = {}
    if (eval_dir / "evaluation.json").is_file():
        loaded = _read_json(eval_dir / "evaluation.json")
        if not isinstance(loaded, dict):
            raise InputError(f"{eval_dir / 'evaluation.json'} must hold a JSON object.")
        meta = loaded
    else:
        missing["evaluation.json"] = "evaluation.json is missing from the evaluation folder"

    def optional_csv(name: str, required: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame | None:
        path = eval_dir / name
        if not path.is_file():
            missing[name] = f"{name} is missing from the evaluation folder"
            return None
        return _read_csv(path, required, numeric)

    summary = optional_csv("summary.csv", SUMMARY_COLUMNS, SUMMARY_NUMERIC)
    errors = optional_csv("errors.csv", ERRORS_COLUMNS, ("severity", "error"))
    corruption_summary = optional_csv(
        "corruption_summary.csv", CORRUPTION_SUMMARY_COLUMNS, ("ce", "relative_ce", "mean_error")
    )
    if summary is None and errors is None:
        raise InputError(
            f"{eval_dir} holds neither summary.csv nor errors.csv; point at a folder written by "
            "`robustgsl evaluate`."
        )
    if errors is not None:
        errors["severity"] = errors["severity"].round().astype(int)

    embeddings = None
    if (eval_dir / "embeddings.npz").is_file():
        embeddings = _read_npz(eval_dir / "embeddings.npz")
    else:
        missing["embeddings.npz"] = "embeddings.npz is missing from the evaluation folder"
    examples = None
    if (eval_dir / "example_images.npz").is_file():
        examples = _read_npz(eval_dir / "example_images.npz")
    else:
        missing["example_images.npz"] = "example_images.npz is missing from the evaluation folder"

    keys = _ordered_keys(summary, errors)
    model_entries = meta.get("models")
    if isinstance(model_entries, list) and model_entries:
        runs = [_load_run(entry, eval_dir) for entry in model_entries if isinstance(entry, dict)]
    else:
        names = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in keys))
        runs = [Run(name=name, notes=["evaluation.json lists no run folder for it"]) for name in names]

    baseline = meta.get("baseline") or None
    if baseline is None and summary is not None and "baseline" in summary:
        named = [value for value in summary["baseline"] if value]
        baseline = named[0] if named else None
    if baseline is not None and baseline not in keys:
        missing["baseline"] = f"the baseline {baseline} is not among the evaluated models/heads"
    if baseline is None:
        missing["baseline"] = "this evaluation has no baseline"

    return Evaluation(
        eval_dir=eval_dir, meta=meta, summary=summary, errors=errors, corruption_summary=corruption_summary,
        embeddings=embeddings, examples=examples, runs=runs, missing=missing, keys=keys,
        baseline=str(baseline) if baseline is not None else None,
    )
