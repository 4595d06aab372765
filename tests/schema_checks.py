"""Check a run folder or an evaluation folder against robustgsl/schema: every name, column, field and array.

Each function returns a list of problems (empty: the folder follows the schema). Tests run them on what
the real writers produce and on the report's fixture, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from robustgsl.corruptions import CORRUPTION_FAMILIES, OTHER_FAMILY
from robustgsl.schema import names
from robustgsl.schema import evaluation as ev
from robustgsl.schema import run as rs


def _keys(what: str, found, expected, ordered: bool = False) -> list[str]:
    found, expected = list(found), list(expected)
    if (found if ordered else sorted(found)) == (expected if ordered else sorted(expected)):
        return []
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    return [f"{what}: missing {missing}, unexpected {extra}" + ("" if missing or extra else f", order {found}")]


def _iso_utc(what: str, text) -> list[str]:
    try:
        stamp = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return [f"{what}: {text!r} is not an ISO 8601 time"]
    return [] if stamp.utcoffset() is not None and not stamp.utcoffset() else [f"{what}: {text!r} is not in UTC"]


def config_problems(config: dict, what: str = rs.CONFIG_FILE) -> list[str]:
    optional = [f.name for f in rs.DERIVED_CONFIG_FIELDS if not f.required]
    problems = _keys(what, [key for key in config if key not in optional],
                     [name for name in rs.CONFIG_FIELDS if name not in optional])
    if "image_folder" in config:
        problems += _keys(f"{what} image_folder", config["image_folder"], names(rs.IMAGE_FOLDER_FIELDS))
    if (config.get("dataset") == "imagefolder") != ("image_folder" in config):
        problems.append(f"{what}: image_folder must be present exactly for dataset imagefolder")
    return problems


def versions_problems(versions, what: str) -> list[str]:
    if not isinstance(versions, dict):
        return [f"{what}: versions is {type(versions).__name__}, not an object"]
    return _keys(f"{what} versions", versions, rs.VERSION_PACKAGES)


def run_folder_problems(run_dir: Path) -> list[str]:
    run_dir = Path(run_dir)
    problems = config_problems(json.loads((run_dir / rs.CONFIG_FILE).read_text()))
    environment = json.loads((run_dir / rs.ENVIRONMENT_FILE).read_text())
    required = [f.name for f in rs.ENVIRONMENT_FIELDS if f.required]
    finished = (run_dir / rs.WEIGHTS_FILE).is_file()
    if finished:
        required += ["finished_at", "wall_time_s"]
    problems += [f"{rs.ENVIRONMENT_FILE}: missing {name}" for name in required if name not in environment]
    problems += [f"{rs.ENVIRONMENT_FILE}: unexpected {name}" for name in environment
                 if name not in names(rs.ENVIRONMENT_FIELDS)]
    problems += versions_problems(environment.get("versions"), rs.ENVIRONMENT_FILE)
    for name in ("started_at", "finished_at"):
        if name in environment:
            problems += _iso_utc(f"{rs.ENVIRONMENT_FILE} {name}", environment[name])
    for number, line in enumerate((run_dir / rs.METRICS_FILE).read_text().splitlines(), 1):
        row = json.loads(line)
        problems += _keys(f"{rs.METRICS_FILE} line {number}", row, rs.METRIC_FIELDS, ordered=True)
        if not isinstance(row.get("epoch"), int) or row.get("epoch") != number:
            problems.append(f"{rs.METRICS_FILE} line {number}: epoch {row.get('epoch')!r}")
        for name in ("train_error", "val_error"):
            if not 0 <= row.get(name, -1) <= 1:
                problems.append(f"{rs.METRICS_FILE} line {number}: {name} {row.get(name)!r} is not a fraction")
    return problems


def _tables_problems(eval_dir: Path, with_baseline: bool) -> list[str]:
    errors = pd.read_csv(eval_dir / ev.ERRORS_FILE, keep_default_na=False, dtype={"model": str, "head": str})
    problems = _keys(ev.ERRORS_FILE, errors.columns, names(ev.ERRORS_COLUMNS), ordered=True)
    if not errors["error"].between(0, 1).all():
        problems.append(f"{ev.ERRORS_FILE}: an error outside [0, 1]")
    clean = errors["corruption"] == ev.CLEAN
    if not ((errors["severity"] == 0) == clean).all() or not errors.loc[~clean, "severity"].between(1, 5).all():
        problems.append(f"{ev.ERRORS_FILE}: severity must be 0 exactly on {ev.CLEAN!r} rows, else 1..5")
    summary = pd.read_csv(eval_dir / ev.SUMMARY_FILE)
    problems += _keys(ev.SUMMARY_FILE, summary.columns, ev.summary_columns(with_baseline), ordered=True)
    seed_summary = pd.read_csv(eval_dir / ev.SEED_SUMMARY_FILE)
    problems += _keys(ev.SEED_SUMMARY_FILE, seed_summary.columns, ev.columns(ev.SEED_SUMMARY_COLUMNS, with_baseline),
                      ordered=True)
    if summary["n_seeds"].sum() != len(seed_summary):
        problems.append(f"{ev.SUMMARY_FILE}: n_seeds add up to {summary['n_seeds'].sum()}, "
                        f"{ev.SEED_SUMMARY_FILE} has {len(seed_summary)} rows")
    corruption_summary = pd.read_csv(eval_dir / ev.CORRUPTION_SUMMARY_FILE)
    problems += _keys(ev.CORRUPTION_SUMMARY_FILE, corruption_summary.columns,
                      names(ev.CORRUPTION_SUMMARY_COLUMNS), ordered=True)
    for name, frame in ((ev.SUMMARY_FILE, summary), (ev.CORRUPTION_SUMMARY_FILE, corruption_summary),
                        (ev.SEED_SUMMARY_FILE, seed_summary)):
        for column in ev.booleans(ev.SUMMARY_COLUMNS + ev.CORRUPTION_SUMMARY_COLUMNS):
            if column in frame and not frame[column].isin([True, False]).all():
                problems.append(f"{name}: {column} holds something other than True/False")
    curves = pd.read_csv(eval_dir / ev.SEVERITY_FILE, keep_default_na=False, dtype={"model": str, "head": str})
    problems += _keys(ev.SEVERITY_FILE, curves.columns, names(ev.SEVERITY_COLUMNS), ordered=True)
    if not ((curves["error_low"] <= curves["error"] + 1e-12) & (curves["error"] <= curves["error_high"] + 1e-12)).all():
        problems.append(f"{ev.SEVERITY_FILE}: an error outside its interval")
    if set(curves["family"]) - {ev.ALL_FAMILIES, *CORRUPTION_FAMILIES, OTHER_FAMILY}:
        problems.append(f"{ev.SEVERITY_FILE}: unknown families {sorted(set(curves['family']))}")
    problems += robustbench_problems(eval_dir, errors, len(summary))
    accuracy = pd.read_csv(eval_dir / ev.ROBUSTBENCH_SUMMARY_FILE, keep_default_na=False, dtype={"model": str, "head": str})
    problems += _keys(ev.ROBUSTBENCH_SUMMARY_FILE, accuracy.columns, names(ev.ROBUSTBENCH_SUMMARY_COLUMNS), ordered=True)
    return problems


def robustbench_problems(eval_dir: Path, errors: pd.DataFrame, n_rows: int) -> list[str]:
    """robustbench.csv as RobustBench reads unaggregated_results.csv: two header rows, no index name, no clean
    column, RobustBench's corruption order."""
    path = eval_dir / ev.ROBUSTBENCH_FILE
    lines = path.read_text().splitlines()
    problems = []
    if len(lines) < 3 or not (lines[0].startswith(",") and lines[1].startswith(",")) or lines[2].startswith(","):
        problems.append(f"{ev.ROBUSTBENCH_FILE}: not two header rows without names, then the rows")
    wide = pd.read_csv(path, header=[0, 1], index_col=0)
    corrupted = [(c, s) for c, s in dict.fromkeys(zip(errors["corruption"], errors["severity"])) if c != ev.CLEAN]
    order = [c for c in ev.ROBUSTBENCH_CORRUPTIONS if c in dict(corrupted)] + \
        [c for c in dict.fromkeys(c for c, _ in corrupted) if c not in ev.ROBUSTBENCH_CORRUPTIONS]
    expected = sorted(((c, str(s)) for c, s in corrupted), key=lambda cs: (order.index(cs[0]), int(cs[1])))
    problems += _keys(ev.ROBUSTBENCH_FILE + " columns", list(wide.columns), expected, ordered=True)
    if len(wide) != n_rows or not ((wide >= 0) & (wide <= 1)).all().all():
        problems.append(f"{ev.ROBUSTBENCH_FILE}: {len(wide)} rows for {n_rows} model/heads, or a bad accuracy")
    return problems


def record_problems(record: dict) -> list[str]:
    problems = _keys(ev.RECORD_FILE, record, names(ev.RECORD_FIELDS))
    for index, model in enumerate(record.get("models", [])):
        kind = model.get("kind")
        if kind not in ev.MODEL_KINDS:
            problems.append(f"{ev.RECORD_FILE} models[{index}]: kind {kind!r}")
            continue
        problems += _keys(f"{ev.RECORD_FILE} models[{index}]", model,
                          names(ev.MODEL_FIELDS) + names(ev.KIND_FIELDS[kind]))
        if kind == "run":
            problems += config_problems(model.get("config", {}), f"{ev.RECORD_FILE} models[{index}] config")
    if record.get("image_folder") is not None:
        problems += _keys(f"{ev.RECORD_FILE} image_folder", record["image_folder"], names(rs.IMAGE_FOLDER_FIELDS))
    problems += _keys(f"{ev.RECORD_FILE} corruption_source", record.get("corruption_source", {}),
                      names(ev.SOURCE_FIELDS))
    problems += _keys(f"{ev.RECORD_FILE} bootstrap", record.get("bootstrap", {}), ev.BOOTSTRAP_FIELDS)
    problems += versions_problems(record.get("versions"), ev.RECORD_FILE)
    problems += _iso_utc(f"{ev.RECORD_FILE} created_at", record.get("created_at"))
    timed = [model.get("name") for model in record.get("models", []) if model.get("kind") != "reference"]
    problems += _keys(f"{ev.RECORD_FILE} wall_times", record.get("wall_times", {}), timed + ["total"])
    return problems


def snapshot_problems(eval_dir: Path, record: dict) -> list[str]:
    """Every snapshot folder evaluation.json names holds epoch_NNNN.npz files with SNAPSHOT_ARRAYS."""
    problems = []
    for model in record.get("models", []):
        folder = model.get("snapshots")
        if folder is None:
            continue
        files = sorted((eval_dir / folder).glob("*")) if (eval_dir / folder).is_dir() else []
        if not files:
            problems.append(f"{ev.RECORD_FILE}: {model['name']}'s snapshot folder {folder} is empty or missing")
        for path in files:
            epoch = rs.snapshot_epoch(path.name)
            with np.load(path) as archive:
                found = list(archive.files)
                epoch_value = int(archive["epoch"]) if "epoch" in found else None
            problems += _keys(f"{folder}/{path.name}", found, names(rs.SNAPSHOT_ARRAYS))
            if epoch is None or epoch != epoch_value:
                problems.append(f"{folder}/{path.name}: name and epoch {epoch_value} disagree")
    return problems


def _arrays_problems(eval_dir: Path, record: dict) -> list[str]:
    problems = []
    if (eval_dir / ev.EMBEDDINGS_FILE).is_file():
        with np.load(eval_dir / ev.EMBEDDINGS_FILE) as archive:
            arrays = {name: archive[name] for name in archive.files}
        views = [ev.embedding_array(m["name"], view) for m in record["models"] if m.get("embedding")
                 for view in ev.EMBEDDING_VIEWS]
        problems += _keys(ev.EMBEDDINGS_FILE, arrays, names(ev.EMBEDDING_ARRAYS) + tuple(views))
        n = len(arrays.get("labels", []))
        if arrays.get("labels", np.zeros(0)).dtype != np.int64 or arrays["embedding_corruption"].ndim != 0:
            problems.append(f"{ev.EMBEDDINGS_FILE}: labels must be int64, embedding_corruption 0-d")
        problems += [f"{ev.EMBEDDINGS_FILE}: {name} is {arrays[name].dtype} {arrays[name].shape}, not float32 (n={n}, d)"
                     for name in views if name in arrays
                     and (arrays[name].dtype != np.float32 or arrays[name].ndim != 2 or len(arrays[name]) != n)]
    if (eval_dir / ev.EXAMPLES_FILE).is_file():
        with np.load(eval_dir / ev.EXAMPLES_FILE) as archive:
            arrays = {name: archive[name] for name in archive.files}
        problems += _keys(ev.EXAMPLES_FILE, arrays, names(ev.EXAMPLE_ARRAYS))
        shape = (len(record["corruptions"]), 5) + arrays["clean"].shape
        if arrays["corrupted"].shape != shape or arrays["corrupted"].dtype != np.uint8 \
                or list(arrays["corruptions"]) != record["corruptions"]:
            problems.append(f"{ev.EXAMPLES_FILE}: corrupted {arrays['corrupted'].shape}, expected uint8 {shape} "
                            f"in the order of evaluation.json's corruptions")
    return problems


def evaluation_folder_problems(eval_dir: Path) -> list[str]:
    eval_dir = Path(eval_dir)
    record = json.loads((eval_dir / ev.RECORD_FILE).read_text())
    return (record_problems(record) + _tables_problems(eval_dir, record.get("baseline") is not None)
            + _arrays_problems(eval_dir, record) + snapshot_problems(eval_dir, record))
