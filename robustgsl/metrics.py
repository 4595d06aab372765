"""Corruption-robustness metrics: CE, mCE, relative mCE, and paired-bootstrap intervals.

Definitions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019, section 3), with E(s, c) the error rate at severity s of corruption c, E_clean
the clean error, and "base" the baseline model/head (the paper we reproduce uses the CE model's argmax):

    CE_c          = sum_s E(s, c) / sum_s E_base(s, c)
    relative CE_c = sum_s (E(s, c) - E_clean) / sum_s (E_base(s, c) - E_base_clean)
    mCE           = 100 * mean_c CE_c            relative mCE = 100 * mean_c relative CE_c

``errors`` tables are long: columns model, head, corruption, severity, error (a fraction), the clean test
set being corruption=CLEAN ("clean"), severity=0 (robustgsl/schema/evaluation.py defines every column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from robustgsl.errors import InputError
from robustgsl.schema import names
from robustgsl.schema.evaluation import (
    CLEAN, CORRUPTION_SUMMARY_COLUMNS, ERRORS_COLUMNS, ROBUSTBENCH_CORRUPTIONS, ROBUSTBENCH_SUMMARY_COLUMNS,
)

_ZERO = 1e-12
ERROR_COLUMNS = names(ERRORS_COLUMNS)


def _key_name(key) -> str:
    return f"{key[0]}/{key[1]}"


def _check_errors(errors: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ERROR_COLUMNS if c not in errors.columns]
    if missing:
        raise InputError(f"errors table lacks columns {missing}; it needs {list(ERROR_COLUMNS)}.")
    errors = errors.loc[:, list(ERROR_COLUMNS)].copy()
    errors["severity"] = errors["severity"].astype(int)
    errors["error"] = errors["error"].astype(float)
    bad = errors[~errors["error"].between(0.0, 1.0)]
    if len(bad):
        raise InputError(f"error rates must be fractions in [0, 1]; found {bad['error'].iloc[0]!r} "
                         f"for {_key_name(tuple(bad.iloc[0][['model', 'head']]))}.")
    duplicated = errors.duplicated(["model", "head", "corruption", "severity"])
    if duplicated.any():
        row = errors[duplicated].iloc[0]
        raise InputError(f"errors table has more than one row for {row['model']}/{row['head']} "
                         f"{row['corruption']} severity {row['severity']}.")
    return errors


def _keys(errors: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, head) pairs in order of first appearance."""
    return list(dict.fromkeys(zip(errors["model"], errors["head"])))


def _check_baseline(keys, baseline) -> tuple[str, str]:
    baseline = tuple(baseline)
    if baseline not in keys:
        raise InputError(f"baseline {_key_name(baseline)} is not among the evaluated rows "
                         f"({', '.join(_key_name(k) for k in keys)}); pick one of them with --baseline MODEL/HEAD.")
    return baseline


def _corruption_list(errors: pd.DataFrame, corruptions) -> list[str]:
    present = [c for c in dict.fromkeys(errors["corruption"]) if c != CLEAN]
    if corruptions is None:
        corruptions = present
    corruptions = list(corruptions)
    if not corruptions:
        raise InputError("the errors table has no corrupted rows (only 'clean').")
    unknown = [c for c in corruptions if c not in present]
    if unknown:
        raise InputError(f"corruptions {unknown} are not in the errors table (it has {present}).")
    return corruptions


def _error_grid(errors: pd.DataFrame, keys, corruptions) -> tuple[np.ndarray, np.ndarray, list]:
    """clean (K,) and corrupted (K, C, S) error arrays; every key must have the same severities."""
    lookup: dict = {}
    for model, head, corruption, severity, error in errors.itertuples(index=False):
        lookup.setdefault((model, head, corruption), {})[severity] = error
    severities = None
    clean = np.empty(len(keys))
    grid = np.empty((len(keys), len(corruptions), 0)).tolist()
    for k, key in enumerate(keys):
        if 0 not in lookup.get((*key, CLEAN), {}):
            raise InputError(f"{_key_name(key)} has no clean error (corruption='clean', severity=0).")
        clean[k] = lookup[(*key, CLEAN)][0]
        for c, corruption in enumerate(corruptions):
            per_severity = lookup.get((*key, corruption), {})
            if severities is None:
                severities = sorted(per_severity)
            if sorted(per_severity) != severities:
                raise InputError(
                    f"{_key_name(key)} has severities {sorted(per_severity)} for {corruption}, "
                    f"but {severities} elsewhere; every model/head needs the same severities.")
            grid[k][c] = [per_severity[s] for s in severities]
    return clean, np.asarray(grid, dtype=float), severities


def _ce_from_grids(clean, grid, base_clean, base_grid):
    """CE_c and relative CE_c (fractions, not %) for arrays of shape (..., C, S).

    Where the baseline's denominator is zero (it makes no error at any severity, or its summed
    error equals its clean error) the ratio is undefined: NaN, left out of the means (see ``_mean``).
    """
    denominator = base_grid.sum(axis=-1)
    relative_denominator = (base_grid - base_clean[..., None, None]).sum(axis=-1)
    # Error rates are multiples of 1/n_test: a sum this small is a zero up to float rounding.
    denominator = np.where(np.abs(denominator) <= _ZERO, np.nan, denominator)
    relative_denominator = np.where(np.abs(relative_denominator) <= _ZERO, np.nan, relative_denominator)
    ce = grid.sum(axis=-1) / denominator
    relative = (grid - clean[..., None, None]).sum(axis=-1) / relative_denominator
    return ce, relative


def _mean(values: np.ndarray) -> np.ndarray:
    """Mean over corruptions (last axis) of the defined ratios; NaN when none is defined."""
    defined = np.isfinite(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _corruption_ratios(errors: pd.DataFrame, baseline: tuple[str, str] | None, corruptions):
    """Validated inputs and the CE_c / relative CE_c arrays (model/head x corruption) shared by the tables;
    without a baseline the ratios are undefined (NaN)."""
    errors = _check_errors(errors)
    keys = _keys(errors)
    corruptions = _corruption_list(errors, corruptions)
    clean, grid, _ = _error_grid(errors, keys, corruptions)
    if baseline is None:
        undefined = np.full(grid.shape[:2], np.nan)
        return keys, None, corruptions, clean, grid, undefined, undefined
    baseline = _check_baseline(keys, baseline)
    b = keys.index(baseline)
    ce, relative = _ce_from_grids(clean, grid, clean[b], grid[b])
    return keys, baseline, corruptions, clean, grid, ce, relative


def corruption_error_table(errors: pd.DataFrame, baseline: tuple[str, str] | None, corruptions=None) -> pd.DataFrame:
    """Per model/head/corruption: ce and relative_ce (x100, baseline = 100; NaN without a baseline) and
    mean_error (over severities)."""
    keys, _, corruptions, _, grid, ce, relative = _corruption_ratios(errors, baseline, corruptions)
    records = [
        {"model": key[0], "head": key[1], "corruption": corruption, "ce": 100 * ce[k, c],
         "relative_ce": 100 * relative[k, c], "mean_error": grid[k, c].mean()}
        for k, key in enumerate(keys) for c, corruption in enumerate(corruptions)]
    return pd.DataFrame.from_records(records, columns=names(CORRUPTION_SUMMARY_COLUMNS))


def summary_table(errors: pd.DataFrame, baseline: tuple[str, str], corruptions=None) -> pd.DataFrame:
    """Per model/head: baseline ("model/head"), clean_error, mean_corruption_error, mce, relative_mce (%)."""
    keys, baseline, _, clean, grid, ce, relative = _corruption_ratios(errors, baseline, corruptions)
    return pd.DataFrame({
        "model": [k[0] for k in keys], "head": [k[1] for k in keys],
        "baseline": _key_name(baseline), "clean_error": clean,
        "mean_corruption_error": grid.mean(axis=(1, 2)),
        "mce": 100 * _mean(ce), "relative_mce": 100 * _mean(relative),
        # Corruptions whose ratio is defined (the baseline's denominator is not zero) and so averaged.
        "mce_corruptions": np.isfinite(ce).sum(axis=1),
        "relative_mce_corruptions": np.isfinite(relative).sum(axis=1)})


def robustbench_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Accuracies in RobustBench's unaggregated_results.csv layout (robustgsl/schema/evaluation.py): one row
    per "model/head", columns (corruption, severity) in RobustBench's corruption order, no clean column."""
    errors = _check_errors(errors)
    corrupted = errors[errors["corruption"] != CLEAN]
    present = list(dict.fromkeys(corrupted["corruption"]))
    order = [c for c in ROBUSTBENCH_CORRUPTIONS if c in present] + [c for c in present if c not in ROBUSTBENCH_CORRUPTIONS]
    table = corrupted.assign(key=corrupted["model"] + "/" + corrupted["head"], accuracy=1.0 - corrupted["error"])
    wide = table.pivot(index="key", columns=["corruption", "severity"], values="accuracy")
    columns = sorted(wide.columns, key=lambda cs: (order.index(cs[0]), cs[1]))
    wide = wide.loc[[_key_name(k) for k in _keys(errors)], columns]
    wide.columns = pd.MultiIndex.from_tuples(columns)  # unnamed levels: no third header row
    wide.index.name = None
    return wide


def robustbench_summary_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Per model/head: clean_accuracy and robust_accuracy (the mean accuracy over corruptions x severities)."""
    errors = _check_errors(errors)
    clean = errors[errors["corruption"] == CLEAN].set_index(["model", "head"])["error"]
    corrupted = errors[errors["corruption"] != CLEAN].groupby(["model", "head"], sort=False)["error"].mean()
    keys = _keys(errors)
    return pd.DataFrame({"model": [k[0] for k in keys], "head": [k[1] for k in keys],
                         "clean_accuracy": [1.0 - clean[k] for k in keys],
                         "robust_accuracy": [1.0 - corrupted[k] for k in keys]},
                        columns=names(ROBUSTBENCH_SUMMARY_COLUMNS))


# ------------------------------------------------------------------------------------------ bootstrap


def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts: how often each test image is drawn in each resample (n draws with
    replacement), from one seeded generator, so every model/head sees the same resamples."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples)[:, None] * n + draws).ravel()
    return np.bincount(offsets, minlength=n_resamples * n).reshape(n_resamples, n)


def bootstrap_intervals(wrong: Mapping[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]],
                        baseline: tuple[str, str], n_resamples: int = 1000, seed: int = 0,
                        level: float = 0.95, corruptions=None) -> pd.DataFrame:
    """Paired-bootstrap percentile intervals of clean error, mCE, relative mCE and the clean-error difference.

    ``wrong[(model, head)]`` is a boolean (R, N) array: whether test image i is misclassified under row r,
    where ``rows[r]`` is (corruption, severity) and must include ("clean", 0); corrupted image i is clean
    image i. Each resample draws N test images with replacement (the same draws for every model/head and
    the baseline), recomputes every error rate from them, then the metrics. Returns one row per model/head
    with clean_error_low/high, mce_low/high, relative_mce_low/high (%), clean_error_diff_low/high (model
    minus baseline clean error).
    """
    baseline, rows, n = _check_bootstrap_inputs(wrong, rows, baseline, n_resamples, level)
    clean_row, grid_rows = _row_grid(rows, corruptions)
    rates = _resampled_error_rates(wrong, n, n_resamples, seed)
    base = rates[baseline]
    records = []
    for key, rate in rates.items():
        clean = rate[:, clean_row]
        ce, relative = _ce_from_grids(clean, rate[:, grid_rows], base[:, clean_row], base[:, grid_rows])
        statistics = {"clean_error": clean, "mce": 100 * _mean(ce), "relative_mce": 100 * _mean(relative),
                      "clean_error_diff": clean - base[:, clean_row]}
        records.append({"model": key[0], "head": key[1], **_percentile_interval(statistics, level)})
    return pd.DataFrame.from_records(records)


def _check_bootstrap_inputs(wrong, rows, baseline, n_resamples, level):
    """(baseline, rows as (str, int) pairs, number of test images), or InputError."""
    baseline = _check_baseline(list(wrong), baseline)
    if not 0 < level < 1:
        raise InputError(f"confidence level must be between 0 and 1, got {level}.")
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}.")
    rows = [(str(c), int(s)) for c, s in rows]
    shapes = {key: np.shape(value) for key, value in wrong.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise InputError(f"every wrong-prediction array must have the same shape (rows, n_test); got {shapes}.")
    n_rows, n = next(iter(shapes.values()))
    if n_rows != len(rows) or n == 0:
        raise InputError(f"wrong-prediction arrays have {n_rows} rows and {n} images for {len(rows)} row labels.")
    if (CLEAN, 0) not in rows:
        raise InputError("rows must include ('clean', 0): the clean test set.")
    return baseline, rows, n


def _row_grid(rows: list[tuple[str, int]], corruptions) -> tuple[int, np.ndarray]:
    """The clean row's index, and the (C, S) indices into ``rows`` of each corruption and severity."""
    present = [c for c in dict.fromkeys(c for c, _ in rows) if c != CLEAN]
    corruptions = present if corruptions is None else list(corruptions)
    if not corruptions or any(c not in present for c in corruptions):
        raise InputError(f"corruptions {corruptions} must be a non-empty subset of those in rows ({present}).")
    severities = sorted(s for c, s in rows if c == corruptions[0])
    grid_rows = []
    for corruption in corruptions:
        found = sorted(s for c, s in rows if c == corruption)
        if found != severities:
            raise InputError(f"{corruption} has severities {found}, others {severities}; they must match.")
        grid_rows.append([rows.index((corruption, s)) for s in severities])
    return rows.index((CLEAN, 0)), np.asarray(grid_rows)


def _resampled_error_rates(wrong, n: int, n_resamples: int, seed: int) -> dict:
    """(model, head) -> (B, R) error rates of every row in each resample: counts (B, N) @ wrong.T (N, R) / N.

    Integer sums are exact, so identical models give identical resampled errors and a paired difference
    of exactly 0; float32 sums of integers stay exact below 2^24 (every partial sum here is <= n).
    """
    dtype = np.float32 if n < 2**24 else np.float64
    counts = _resample_counts(n, n_resamples, seed).astype(dtype)
    return {key: (counts @ np.asarray(value, dtype=dtype).T).astype(np.float64) / n for key, value in wrong.items()}


def _percentile_interval(statistics: dict[str, np.ndarray], level: float) -> dict[str, float]:
    """``<name>_low`` / ``<name>_high``: the central ``level`` percentile interval of each statistic.

    Resamples where the baseline makes no error (0/0) carry no information: left out (NaN when all are).
    """
    tail = 100 * (1 - level) / 2
    interval = {}
    for name, values in statistics.items():
        low, high = np.nanpercentile(values, [tail, 100 - tail]) if np.isfinite(values).any() else (np.nan, np.nan)
        interval[f"{name}_low"], interval[f"{name}_high"] = float(low), float(high)
    return interval
