"""Read an evaluation folder (and the run folders it names) for the report.

The files, their columns and fields are those of robustgsl/schema/evaluation.py (the evaluation
folder) and robustgsl/schema/run.py (each model's run folder: config.json, environment.json and
metrics.jsonl, read through robustgsl/runs.py).

A part that is absent becomes ``None`` plus a sentence in ``missing`` saying why, so the report can say
"not available because ..." instead of failing. A part that is present but malformed is bad input and
raises ``InputError`` naming the file, except inside run folders, which belong to training and may be
mid-write: there a bad file becomes a note (and metrics.jsonl follows the schema's rule for a bad line).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustgsl import runs
from robustgsl.errors import InputError
from robustgsl.schema import Field
from robustgsl.schema.evaluation import (
    CORRUPTION_SUMMARY_COLUMNS, CORRUPTION_SUMMARY_FILE, EMBEDDINGS_FILE, ERRORS_COLUMNS, ERRORS_FILE, EXAMPLES_FILE,
    RECORD_FILE, SEED_SUMMARY_COLUMNS, SEED_SUMMARY_FILE, SEVERITY_COLUMNS, SEVERITY_FILE, SUMMARY_COLUMNS,
    SUMMARY_FILE, booleans, numeric, required,
)
from robustgsl.schema.run import CONFIG_FILE, ENVIRONMENT_FILE, METRIC_FIELDS, METRICS_FILE, SNAPSHOT_DIR
from robustgsl.snapshots import read_snapshot, snapshot_paths


@dataclass
class Run:
    """One evaluated run (one seed of a model) as the report sees it: a robustgsl run, or (kind external /
    reference) a model robustgsl did not train, which has no run folder, training curves or config."""

    name: str  # the run's name (unique in the evaluation)
    model: str = ""  # the model it is a seed of (its name in the tables)
    seed: int | None = None
    kind: str = "run"
    entry: dict = field(default_factory=dict)  # its evaluation.json entry
    loss: str | None = None
    run_dir_text: str | None = None  # as written in evaluation.json
    run_dir: Path | None = None  # the folder found on disk, or None
    config: dict | None = None
    environment: dict | None = None
    metrics: pd.DataFrame | None = None
    snapshots: dict[int, dict[str, np.ndarray]] | None = None  # epoch -> arrays (robustgsl/schema/run.py)
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
    seed_summary: pd.DataFrame | None = None
    severity: pd.DataFrame | None = None

    def runs_of(self, model: str) -> list[Run]:
        return [run for run in self.runs if run.model == model]

    @property
    def models(self) -> list[str]:
        """The models (seed groups) in report order."""
        return list(dict.fromkeys([run.model for run in self.runs] + [key.rsplit("/", 1)[0] for key in self.keys]))


def _read_csv(path: Path, columns: tuple[Field, ...]) -> pd.DataFrame:
    """A CSV with at least the schema's required columns; its numeric columns as floats (absent ones NaN)."""
    # Read every cell as text first so that run names such as "NA" or "null" stay names.
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not a readable CSV file ({error}); rerun `robustgsl evaluate`.") from error
    absent = [column for column in required(columns) if column not in frame.columns]
    if absent:
        raise InputError(
            f"{path} lacks the column(s) {', '.join(absent)}; expected at least {', '.join(required(columns))} "
            "(rerun `robustgsl evaluate` to rewrite it)."
        )
    for column in booleans(columns):
        if column in frame.columns:
            text = frame[column].str.strip().str.lower()
            if not text.isin(("true", "false", "")).all():
                raise InputError(f"{path}: column {column!r} holds something other than True or False.")
            frame[column] = text.map({"true": True, "false": False, "": None})
    for column in numeric(columns):
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


def read_metrics(run_dir: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """metrics.jsonl -> one row per epoch (robustgsl.runs.read_metrics), plus notes on skipped lines."""
    notes: list[str] = []
    rows = runs.read_metrics(run_dir, notes)
    if not rows:
        return None, notes + [f"{METRICS_FILE} holds no epochs yet"]
    frame = pd.DataFrame(rows)
    for column in METRIC_FIELDS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame, notes


def _find_run_dir(text: str, eval_dir: Path) -> Path | None:
    # evaluation.json may hold an absolute path, or one relative to the evaluation folder or to the
    # folder the evaluation was started from; take the first that exists.
    path = Path(text)
    candidates = [path] if path.is_absolute() else [eval_dir / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def _snapshots(folder: Path, run: Run) -> dict[int, dict[str, np.ndarray]] | None:
    """The snapshots in ``folder`` (epoch -> arrays); an unreadable file becomes a note."""
    found = {}
    for epoch, path in snapshot_paths(folder).items():
        try:
            found[epoch] = read_snapshot(path)
        except InputError as error:
            run.notes.append(str(error))
    return found or None


def _copied_snapshots(entry: dict, eval_dir: Path) -> Path | None:
    """The folder of a model's snapshot copies in the evaluation folder, when it names one inside it."""
    folder = entry.get("snapshots")
    if not isinstance(folder, str) or not folder:
        return None
    path = (eval_dir / folder).resolve()
    return path if path.is_relative_to(eval_dir.resolve()) and path.is_dir() else None


def _load_run(entry: dict, eval_dir: Path) -> Run:
    name = str(entry.get("name"))
    seed = entry.get("seed")
    kind = str(entry.get("kind") or "run")  # evaluations before external models held runs only
    run = Run(name=name, model=str(entry.get("model") or name), kind=kind, entry=entry, loss=entry.get("loss"),
              seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
              run_dir_text=entry.get("run_dir"))
    if kind != "run":
        return run
    if isinstance(entry.get("config"), dict):
        run.config = entry["config"]
    copied = _copied_snapshots(entry, eval_dir)
    if copied is not None:
        run.snapshots = _snapshots(copied, run)
    if not run.run_dir_text:
        run.notes.append("evaluation.json names no run folder for this model")
        return run
    run.run_dir = _find_run_dir(str(run.run_dir_text), eval_dir)
    if run.run_dir is None:
        run.notes.append(f"its run folder {run.run_dir_text} was not found")
        return run
    if run.snapshots is None:  # an evaluation made before snapshots were copied: read the run's own
        run.snapshots = _snapshots(run.run_dir / SNAPSHOT_DIR, run)
    for attribute, filename in (("config", CONFIG_FILE), ("environment", ENVIRONMENT_FILE)):
        if not (run.run_dir / filename).is_file():
            run.notes.append(f"{filename} is missing from its run folder")
            continue
        try:
            setattr(run, attribute, runs.read_json(run.run_dir / filename))
        except InputError:
            run.notes.append(f"{filename} in its run folder is not valid JSON")
    if (run.run_dir / METRICS_FILE).is_file():
        run.metrics, notes = read_metrics(run.run_dir)
        run.notes.extend(notes)
    else:
        run.notes.append(f"its run folder has no {METRICS_FILE}")
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


class _Parts:
    """Reads the optional parts of an evaluation folder, noting in ``missing`` the absent ones."""

    def __init__(self, eval_dir: Path):
        self.eval_dir = eval_dir
        self.missing: dict[str, str] = {}

    def present(self, name: str) -> bool:
        if (self.eval_dir / name).is_file():
            return True
        self.missing[name] = f"{name} is missing from the evaluation folder"
        return False

    def csv(self, name: str, columns: tuple[Field, ...]) -> pd.DataFrame | None:
        return _read_csv(self.eval_dir / name, columns) if self.present(name) else None

    def npz(self, name: str) -> dict[str, np.ndarray] | None:
        return _read_npz(self.eval_dir / name) if self.present(name) else None

    def record(self) -> dict[str, Any]:
        if not self.present(RECORD_FILE):
            return {}
        loaded = _read_json(self.eval_dir / RECORD_FILE)
        if not isinstance(loaded, dict):
            raise InputError(f"{self.eval_dir / RECORD_FILE} must hold a JSON object.")
        return loaded


def _runs(meta: dict[str, Any], keys: list[str], eval_dir: Path) -> list[Run]:
    model_entries = meta.get("models")
    if isinstance(model_entries, list) and model_entries:
        return [_load_run(entry, eval_dir) for entry in model_entries if isinstance(entry, dict)]
    models = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in keys))
    return [Run(name=name, model=name, notes=["evaluation.json lists no run folder for it"]) for name in models]


def _baseline(meta: dict[str, Any], summary: pd.DataFrame | None, keys: list[str],
              missing: dict[str, str]) -> str | None:
    baseline = meta.get("baseline") or None
    if baseline is None and summary is not None and "baseline" in summary:
        named = [value for value in summary["baseline"] if value]
        baseline = named[0] if named else None
    if baseline is not None and baseline not in keys:
        missing["baseline"] = f"the baseline {baseline} is not among the evaluated models/heads"
    if baseline is None:
        missing["baseline"] = "this evaluation has no baseline"
    return str(baseline) if baseline is not None else None


def load_evaluation(eval_dir: str | os.PathLike) -> Evaluation:
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputError(f"evaluation folder {eval_dir} does not exist; run `robustgsl evaluate` first.")
    parts = _Parts(eval_dir)
    meta = parts.record()
    summary = parts.csv(SUMMARY_FILE, SUMMARY_COLUMNS)
    errors = parts.csv(ERRORS_FILE, ERRORS_COLUMNS)
    corruption_summary = parts.csv(CORRUPTION_SUMMARY_FILE, CORRUPTION_SUMMARY_COLUMNS)
    if summary is None and errors is None:
        raise InputError(
            f"{eval_dir} holds neither {SUMMARY_FILE} nor {ERRORS_FILE}; point at a folder written by "
            "`robustgsl evaluate`."
        )
    if errors is not None:
        errors["severity"] = errors["severity"].round().astype(int)
        # The report shows each model's mean over its seeds (seed_summary.csv and the hover text: each seed).
        errors = errors.groupby(["model", "head", "corruption", "severity"], sort=False, as_index=False)["error"].mean()
    seed_summary = parts.csv(SEED_SUMMARY_FILE, SEED_SUMMARY_COLUMNS)
    severity = parts.csv(SEVERITY_FILE, SEVERITY_COLUMNS)
    if severity is not None:
        severity["severity"] = severity["severity"].round().astype(int)
    embeddings, examples = parts.npz(EMBEDDINGS_FILE), parts.npz(EXAMPLES_FILE)
    keys = _ordered_keys(summary, errors)
    return Evaluation(
        eval_dir=eval_dir, meta=meta, summary=summary, errors=errors, corruption_summary=corruption_summary,
        embeddings=embeddings, examples=examples, runs=_runs(meta, keys, eval_dir), missing=parts.missing,
        keys=keys, baseline=_baseline(meta, summary, keys, parts.missing), seed_summary=seed_summary,
        severity=severity,
    )
