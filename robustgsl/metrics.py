"""Corruption-robustness metrics: CE, mCE, relative mCE, and paired-bootstrap intervals.

Definitions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019, section 3), with E(s, c) the error rate at severity s of corruption c, E_clean
the clean error, and "base" the baseline model/head (the paper we reproduce uses the CE model's argmax):

    CE_c          = sum_s E(s, c) / sum_s E_base(s, c)
    relative CE_c = sum_s (E(s, c) - E_clean) / sum_s (E_base(s, c) - E_base_clean)
    mCE           = 100 * mean_c CE_c            relative mCE = 100 * mean_c relative CE_c

``errors`` tables are long: columns model, head, corruption, severity, error (a fraction), the clean test
set being corruption=CLEAN ("clean"), severity=0 (robustgsl/schema/evaluation.py defines every column);
each (model, head) is one trained model, so a table holds one seed of each (robustgsl/seeds.py
aggregates over seeds).

Reliability of relative CE_c. Its denominator D = sum_s (E_base(s, c) - E_base_clean) is a difference of
error rates measured on n test images; when the baseline barely suffers from a corruption, D is of the
order of the test-set noise and the ratio swings wildly (-1000 to 9000 on a few hundred images). The rule
(``relative_ce_reliability``): D is too small when |D| < 2 SE(D), with the binomial standard error

    SE(D) = sqrt( (sum_s p_s (1 - p_s) + S^2 p_0 (1 - p_0)) / n ),

p_s the baseline's error at severity s, p_0 its clean error, S the number of severities, treating the
S + 1 rates as independent (clean and corrupted errors of the same images are positively correlated,
which makes the true SE smaller: the rule errs on the side of flagging). A relative MCE is flagged
(``relative_mce_reliability``) when it averages such a ratio, is negative, or its bootstrap interval
contains 0.
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
# The columns of a one-seed errors table (errors.csv less its seed column).
ERROR_COLUMNS = tuple(name for name in names(ERRORS_COLUMNS) if name != "seed")
# A denominator within this many standard errors of zero is "tiny compared with the test-set noise".
RELIABILITY_Z = 2.0


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
    # corruption_summary.csv's ratio columns; relative_ce_reliability adds the rest.
    ratio_columns = [name for name in names(CORRUPTION_SUMMARY_COLUMNS) if name in ("model", "head", "corruption",
                                                                                  "ce", "relative_ce", "mean_error")]
    return pd.DataFrame.from_records(records, columns=ratio_columns)


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


# ------------------------------------------------------------------------------------------ reliability


def relative_denominator_noise(base_clean: np.ndarray, base_grid: np.ndarray, n_test: int) -> np.ndarray:
    """SE(D) of the module docstring for each corruption: ``base_clean`` a scalar, ``base_grid`` (C, S)."""
    corrupted = (base_grid * (1 - base_grid)).sum(axis=-1)
    clean = base_grid.shape[-1] ** 2 * base_clean * (1 - base_clean)
    return np.sqrt((corrupted + clean) / n_test)


def relative_ce_reliability(errors: pd.DataFrame, baseline: tuple[str, str] | None, n_test: int,
                            corruptions=None) -> pd.DataFrame:
    """Per model/head/corruption: ``relative_ce_reliable`` and, where not, ``relative_ce_reliability`` (why).

    Unreliable: undefined (no baseline, or a zero denominator), or a baseline denominator within
    RELIABILITY_Z binomial standard errors of zero (module docstring). The baseline's own ratio is 100 by
    definition and stays reliable whenever it is defined.
    """
    keys, baseline, corruptions, clean, grid, _, relative = _corruption_ratios(errors, baseline, corruptions)
    records = []
    for c, corruption in enumerate(corruptions):
        if baseline is None:
            why = "no baseline"
        else:
            b = keys.index(baseline)
            denominator = float((grid[b, c] - clean[b]).sum())
            noise = float(relative_denominator_noise(clean[b], grid[b, c][None], n_test)[0])
            why = (f"the baseline's denominator (summed errors minus clean error) {denominator:.4f} is within "
                   f"{RELIABILITY_Z:g} standard errors ({RELIABILITY_Z:g} x {noise:.4f}) of zero on {n_test} test "
                   "images" if abs(denominator) < RELIABILITY_Z * noise else "")
        for k, key in enumerate(keys):
            reason = "undefined: the baseline's denominator is zero" if baseline is not None and \
                not np.isfinite(relative[k, c]) else ("" if key == baseline else why)
            records.append({"model": key[0], "head": key[1], "corruption": corruption,
                            "relative_ce_reliable": not reason, "relative_ce_reliability": reason})
    return pd.DataFrame.from_records(records)


def relative_mce_reliability(summary: pd.DataFrame, per_corruption: pd.DataFrame,
                             baseline: tuple[str, str] | None) -> pd.DataFrame:
    """Per model/head of ``summary`` (relative_mce, optionally relative_mce_low/high): ``relative_mce_reliable``
    and ``relative_mce_reliability``, the reasons it is not, joined by "; ".

    ``per_corruption`` holds relative_ce and relative_ce_reliable per model/head/corruption; a ratio left
    out of the average (undefined) does not count, one averaged although unreliable does.
    """
    averaged_unreliable = per_corruption[per_corruption["relative_ce"].notna() & ~per_corruption["relative_ce_reliable"]
                                         .astype(bool)]
    records = []
    for record in summary.to_dict("records"):
        key, reasons = (record["model"], record["head"]), []
        value = record["relative_mce"]
        low, high = record.get("relative_mce_low", np.nan), record.get("relative_mce_high", np.nan)
        if baseline is None or not np.isfinite(value):
            reasons.append("undefined" if baseline is not None else "no baseline")
        elif key != tuple(baseline):
            tiny = averaged_unreliable[(averaged_unreliable["model"] == key[0]) & (averaged_unreliable["head"] == key[1])]
            if len(tiny):
                names = list(dict.fromkeys(tiny["corruption"]))
                reasons.append(f"it averages {len(names)} relative CE_c that are not reliable ({', '.join(names)})")
            if value < 0:
                reasons.append(f"negative ({value:.2f})")
            if np.isfinite(low) and np.isfinite(high) and low <= 0 <= high:
                reasons.append(f"its bootstrap interval [{low:.2f}, {high:.2f}] contains 0")
        records.append({"model": key[0], "head": key[1], "relative_mce_reliable": not reasons,
                        "relative_mce_reliability": "; ".join(reasons)})
    return pd.DataFrame.from_records(records, columns=["model", "head", "relative_mce_reliable",
                                                       "relative_mce_reliability"])


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
    rates = _resampled_error_rates(wrong, n, n_resamples, seed)
    return percentile_intervals(bootstrap_statistics(rates, rows, baseline, corruptions), level)


def resampled_error_rates(wrong: Mapping[tuple[str, str], np.ndarray], n_resamples: int,
                          seed: int) -> dict[tuple[str, str], np.ndarray]:
    """(model, head) -> (n_resamples, R) error rates of every row in each paired resample (the same draws of
    test images for every key), from boolean (R, N) ``wrong`` arrays."""
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}.")
    shapes = {np.shape(value) for value in wrong.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] == 0:
        raise InputError(f"every wrong-prediction array must have the same shape (rows, n_test); got {shapes}.")
    return _resampled_error_rates(wrong, next(iter(shapes))[1], n_resamples, seed)


def bootstrap_statistics(rates: Mapping[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]],
                         baseline: tuple[str, str], corruptions=None) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per (model, head): clean_error, mce, relative_mce (%) and clean_error_diff in each resample, from the
    resampled error rates of ``resampled_error_rates`` (baseline included)."""
    baseline = _check_baseline(list(rates), baseline)
    rows = [(str(c), int(s)) for c, s in rows]
    clean_row, grid_rows = _row_grid(rows, corruptions)
    base = rates[baseline]
    statistics = {}
    for key, rate in rates.items():
        clean = rate[:, clean_row]
        ce, relative = _ce_from_grids(clean, rate[:, grid_rows], base[:, clean_row], base[:, grid_rows])
        statistics[key] = {"clean_error": clean, "mce": 100 * _mean(ce), "relative_mce": 100 * _mean(relative),
                           "clean_error_diff": clean - base[:, clean_row]}
    return statistics


def severity_curves(errors: Mapping[tuple[str, str], np.ndarray], resampled: Mapping[tuple[str, str], np.ndarray],
                    rows: Sequence[tuple[str, int]], families: Sequence[tuple[str, Sequence[str]]],
                    level: float = 0.95) -> pd.DataFrame:
    """Error against severity, averaged over each family's corruptions, with percentile intervals.

    ``errors[key]`` holds the (R,) error rates of ``rows`` (the clean row included), ``resampled[key]`` the
    (B, R) rates of each paired resample; ``families`` pairs a family name with its corruptions. One row
    per key, family and severity (0: the clean test set, the same in every family).
    """
    rows = [(str(c), int(s)) for c, s in rows]
    clean_row = rows.index((CLEAN, 0))
    tail = 100 * (1 - level) / 2
    records = []
    for key, point in errors.items():
        for family, members in families:
            severities = sorted({s for c, s in rows if c in members})
            for severity in [0] + severities:
                chosen = [clean_row] if severity == 0 else [rows.index((c, severity)) for c in members
                                                            if (c, severity) in rows]
                samples = resampled[key][:, chosen].mean(axis=1)
                low, high = np.percentile(samples, [tail, 100 - tail])
                records.append({"model": key[0], "head": key[1], "family": family, "severity": severity,
                                "error": float(np.mean(np.asarray(point)[chosen])), "error_low": float(low),
                                "error_high": float(high)})
    return pd.DataFrame.from_records(records)


def percentile_intervals(statistics: Mapping[tuple[str, str], dict[str, np.ndarray]], level: float) -> pd.DataFrame:
    """One row per (model, head): ``<statistic>_low`` / ``_high`` of each resampled statistic."""
    return pd.DataFrame.from_records([{"model": key[0], "head": key[1], **_percentile_interval(values, level)}
                                      for key, values in statistics.items()])


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
