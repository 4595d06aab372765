"""From per-image correctness to the tables of an evaluation folder (robustgsl/schema/evaluation.py).

``summarise`` scores each run against its paired baseline run (the baseline model's run of the same
seed, robustgsl/seeds.py), then averages each model's seeds: summary.csv (means, spread over seeds,
bootstrap intervals of the mean, reliability of the relative figures), seed_summary.csv, the
per-corruption ratios, the severity curves and RobustBench's tables. Every run sees the same bootstrap
resamples of the test images, so the intervals are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from robustgsl import seeds
from robustgsl.corruptions import by_family
from robustgsl.metrics import (
    CLEAN, ERROR_COLUMNS, bootstrap_statistics, corruption_error_table, percentile_intervals,
    relative_ce_reliability, relative_mce_reliability, resampled_error_rates, robustbench_summary_table,
    robustbench_table, severity_curves, summary_table,
)
from robustgsl.schema.evaluation import (
    ALL_FAMILIES, CORRUPTION_SUMMARY_COLUMNS, SEED_METRICS, SEED_SUMMARY_COLUMNS, SEVERITY_COLUMNS, columns,
    summary_columns,
)
from robustgsl.seeds import SeedRun

BOOTSTRAP_LEVEL = 0.95


@dataclass
class Tables:
    """The CSV tables of an evaluation folder (robustgsl/schema/evaluation.py)."""

    errors: pd.DataFrame
    summary: pd.DataFrame
    corruption_summary: pd.DataFrame
    robustbench: pd.DataFrame
    robustbench_summary: pd.DataFrame
    seed_summary: pd.DataFrame
    severity_curves: pd.DataFrame


def error_table(wrong: dict[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]]) -> pd.DataFrame:
    """The error rate of every (run, head) under every (corruption, severity) row; ``model`` holds the run."""
    return pd.DataFrame.from_records(
        [{"model": m, "head": h, "corruption": c, "severity": s, "error": float(array[r].mean())}
         for (m, h), array in wrong.items() for r, (c, s) in enumerate(rows)],
        columns=list(ERROR_COLUMNS))


def summarise(wrong: dict[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]],
              baseline: tuple[str, str] | None, corruptions: Sequence[str], n_bootstrap: int, seed: int,
              seed_runs: Sequence[SeedRun] | None = None, extra_errors: pd.DataFrame | None = None) -> Tables:
    """The tables of an evaluation from per-image correctness: ``wrong[(run, head)]`` is a boolean
    (len(rows), n_test) array, ``rows[r]`` its (corruption, severity), (CLEAN, 0) included.

    ``seed_runs`` says which model and seed each run is (default: every run a model of its own, seed
    unknown); ``baseline`` is a (model, head). Each run is scored against its paired baseline run, then
    each model's seeds are averaged (robustgsl/seeds.py); every run sees the same bootstrap resamples.
    ``extra_errors``: error rates (errors.csv's columns) of a baseline known only by them; it joins the
    tables, and the bootstrap intervals, which need per-image results of the baseline, are left empty.
    """
    n_test = next(iter(wrong.values())).shape[1]
    per_run_errors = error_table(wrong, rows)
    if extra_errors is not None:
        per_run_errors = pd.concat([per_run_errors, extra_errors[list(ERROR_COLUMNS)]], ignore_index=True)
    seed_runs = list(seed_runs) if seed_runs is not None else \
        [SeedRun(run, run, None) for run in dict.fromkeys(per_run_errors["model"])]
    rates = resampled_error_rates(wrong, n_bootstrap, seed)
    per_seed, per_corruption, statistics = _per_run_tables(per_run_errors, rates, rows, baseline, corruptions,
                                                           seed_runs, n_test)
    corruption_summary = _corruption_summary(per_corruption, seed_runs)
    scored_here = {run for run, _ in wrong}
    summary = _summary(per_seed, corruption_summary, statistics, seed_runs, baseline, n_test, scored_here)
    errors = seeds.label(per_run_errors, seed_runs).drop(columns="run")
    mean_errors = errors.groupby(["model", "head", "corruption", "severity"], sort=False)["error"].mean().reset_index()
    return Tables(
        errors=errors, summary=summary, corruption_summary=corruption_summary,
        robustbench=robustbench_table(mean_errors), robustbench_summary=robustbench_summary_table(mean_errors),
        seed_summary=per_seed.reindex(columns=list(columns(SEED_SUMMARY_COLUMNS, baseline is not None))),
        severity_curves=_severity_curves(wrong, rates, rows, corruptions, seed_runs))


def _per_run_tables(errors: pd.DataFrame, rates: dict, rows, baseline, corruptions, seed_runs: list[SeedRun],
                    n_test: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per run: its summary row (against its paired baseline run), its per-corruption ratios with their
    reliability, and its resampled statistics (none for a baseline known only by its error rates)."""
    if baseline is None:
        per_corruption = corruption_error_table(errors, None, corruptions).merge(
            relative_ce_reliability(errors, None, n_test, corruptions), on=["model", "head", "corruption"])
        corrupted = errors[errors["corruption"] != CLEAN].groupby(["model", "head"], sort=False)["error"].mean()
        clean = errors[errors["corruption"] == CLEAN].set_index(["model", "head"])["error"]
        per_seed = pd.DataFrame({"clean_error": clean, "mean_corruption_error": corrupted}).reset_index()
        return seeds.label(per_seed, seed_runs), seeds.label(per_corruption, seed_runs), {}
    by_run = {r.run: r for r in seed_runs}
    pairs = seeds.paired_baselines(seed_runs, baseline[0])
    summaries, ratios, statistics = [], [], {}
    for base_run in dict.fromkeys(pairs.values()):
        members = [run for run, paired in pairs.items() if paired == base_run]
        subset = errors[errors["model"].isin(members)]
        key = (base_run, baseline[1])
        part = bootstrap_statistics({k: v for k, v in rates.items() if k[0] in members}, rows, key, corruptions) \
            if key in rates else {}
        statistics.update(part)
        summary = summary_table(subset, key, corruptions).merge(_intervals(part), on=["model", "head"], how="left")
        per_corruption = corruption_error_table(subset, key, corruptions).merge(
            relative_ce_reliability(subset, key, n_test, corruptions), on=["model", "head", "corruption"])
        base_clean = float(summary.loc[(summary["model"] == base_run) & (summary["head"] == baseline[1]),
                                       "clean_error"].iloc[0])
        summary = summary.assign(clean_error_diff=summary["clean_error"] - base_clean,
                                 baseline_seed=by_run[base_run].seed)
        summaries.append(summary.merge(relative_mce_reliability(summary, per_corruption, key), on=["model", "head"]))
        ratios.append(per_corruption)
    order = {r.run: index for index, r in enumerate(seed_runs)}
    per_seed = pd.concat(summaries).sort_values("model", key=lambda names: names.map(order), kind="stable")
    per_corruption = pd.concat(ratios).sort_values("model", key=lambda names: names.map(order), kind="stable")
    return seeds.label(per_seed, seed_runs), seeds.label(per_corruption, seed_runs), statistics


def _corruption_summary(per_corruption: pd.DataFrame, seed_runs: list[SeedRun]) -> pd.DataFrame:
    """corruption_summary.csv: ratios averaged over seeds; unreliable where any seed's is (reasons by seed)."""
    several = {model for model, members in seeds.models(seed_runs).items() if len(members) > 1}
    records = []
    for (model, head, corruption), group in per_corruption.groupby(["model", "head", "corruption"], sort=False):
        reasons = [(f"seed {seed}: {why}" if model in several else why)
                   for seed, why in zip(group["seed"], group["relative_ce_reliability"]) if why]
        records.append({"model": model, "head": head, "corruption": corruption,
                        **{column: float(np.nanmean(group[column])) if group[column].notna().any() else np.nan
                           for column in ("ce", "relative_ce", "mean_error")},
                        "relative_ce_reliable": not reasons, "relative_ce_reliability": "; ".join(reasons)})
    return pd.DataFrame.from_records(records, columns=[f.name for f in CORRUPTION_SUMMARY_COLUMNS])


def _summary(per_seed: pd.DataFrame, corruption_summary: pd.DataFrame, statistics: dict,
             seed_runs: list[SeedRun], baseline: tuple[str, str] | None, n_test: int,
             scored_here: set[str]) -> pd.DataFrame:
    """summary.csv: per model/head, the mean over seeds, its spread, the bootstrap interval of the mean;
    ``n_test`` empty for a baseline scored elsewhere (not in ``scored_here``)."""
    present = [column for column in SEED_METRICS if column in per_seed]
    summary = seeds.spread(per_seed, present)
    summary.insert(2, "baseline", "/".join(baseline) if baseline else None)
    if baseline is None:
        for column in ("mce", "relative_mce"):
            summary[column] = np.nan
    else:
        summary = summary.merge(_intervals(seeds.mean_over_seeds(statistics, seed_runs)), on=["model", "head"],
                                how="left")
        counts = per_seed.groupby(["model", "head"], sort=False)[["mce_corruptions", "relative_mce_corruptions"]].min()
        summary = summary.merge(counts.reset_index(), on=["model", "head"], how="left")
        summary = summary.merge(relative_mce_reliability(summary, corruption_summary, baseline), on=["model", "head"])
    scored = [any(r.model == model and r.run in scored_here for r in seed_runs) for model in summary["model"]]
    summary["n_test"] = pd.array([n_test if here else pd.NA for here in scored], dtype="Int64")
    return summary.reindex(columns=list(summary_columns(baseline is not None)))


def _intervals(statistics: dict) -> pd.DataFrame:
    """percentile_intervals, or an empty table to merge with when nothing was resampled."""
    return percentile_intervals(statistics, BOOTSTRAP_LEVEL) if statistics else pd.DataFrame(columns=["model", "head"])


def _severity_curves(wrong: dict, rates: dict, rows, corruptions, seed_runs: list[SeedRun]) -> pd.DataFrame:
    """severity_curves.csv: error against severity over every corruption and per family, seeds averaged."""
    point = seeds.mean_over_seeds({key: {"error": array.mean(axis=1)} for key, array in wrong.items()}, seed_runs)
    resampled = seeds.mean_over_seeds({key: {"error": array} for key, array in rates.items()}, seed_runs)
    families = [(ALL_FAMILIES, list(corruptions))] + by_family(list(corruptions))
    curves = severity_curves({key: value["error"] for key, value in point.items()},
                             {key: value["error"] for key, value in resampled.items()}, rows, families,
                             BOOTSTRAP_LEVEL)
    return curves[[f.name for f in SEVERITY_COLUMNS]]
