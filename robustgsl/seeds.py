"""Seeds: runs that differ only in their seed are one model, and its tables average over them.

The bootstrap of robustgsl/metrics.py covers the test-set noise of one trained model; whether a
difference between two losses survives retraining needs several seeds. ``robustgsl evaluate`` therefore

- groups its runs (``group_runs``): runs whose configs are equal except for ``seed`` and ``name`` (the
  run folder does not count) are the seeds of one model, named after its first run; a run without a
  recorded config, or a seed a group already has, starts a model of its own;
- pairs each run with a baseline run (``paired_baselines``): the baseline model's run of the same seed,
  or its only run when it has one;
- averages per model and head (``spread``): mean, sample standard deviation (ddof = 1; empty for one
  seed), lowest and highest over seeds; bootstrap intervals are taken of the mean over seeds, each
  resample averaging the seeds' statistics on the same resampled test images (``mean_over_seeds``).

With one seed per model every number equals the one-seed computation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustgsl.config import TrainConfig
from robustgsl.errors import InputError

# Config fields that do not make two runs different models.
NOT_RECIPE = ("seed", "name")


@dataclass(frozen=True)
class SeedRun:
    """One evaluated run as a seed of a model."""

    run: str  # the run's name, unique in the evaluation
    model: str  # the model (seed group) it belongs to: its name in the tables
    seed: int | None  # its training seed (None: the config records none)


def recipe_key(config: Mapping | None) -> str | None:
    """What two runs must share to be seeds of one model: the config without NOT_RECIPE, a field missing from
    an older config.json read as TrainConfig's default. None without a config."""
    if not config:
        return None
    defaults = {field.name: (field.default_factory() if field.default is dataclasses.MISSING else field.default)
                for field in dataclasses.fields(TrainConfig)}
    recipe = {**defaults, **config}
    return json.dumps({key: value for key, value in recipe.items() if key not in NOT_RECIPE}, sort_keys=True,
                      default=str)


def group_runs(names: Sequence[str], configs: Sequence[Mapping | None]) -> list[SeedRun]:
    """A SeedRun per run, in order. A model with several seeds names its runs ``<model>-seed<N>``; a model
    of one run keeps the run's name."""
    groups: list[dict] = []
    members: list[tuple[str, dict, int | None]] = []
    for name, config in zip(names, configs):
        key = recipe_key(config)
        seed = config.get("seed") if config else None
        seed = int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None
        group = next((g for g in groups if key is not None and seed is not None and g["key"] == key
                      and seed not in g["seeds"]), None)
        if group is None:
            group = {"key": key, "model": name, "seeds": set(), "size": 0}
            groups.append(group)
        group["seeds"].add(seed)
        group["size"] += 1
        members.append((name, group, seed))
    taken: set[str] = set()
    runs = []
    for name, group, seed in members:
        run = name if group["size"] == 1 else f"{group['model']}-seed{seed}"
        candidate, suffix = run, 2
        while candidate in taken:
            candidate, suffix = f"{run}-{suffix}", suffix + 1
        taken.add(candidate)
        runs.append(SeedRun(candidate, group["model"], seed))
    return runs


def paired_baselines(runs: Sequence[SeedRun], baseline_model: str) -> dict[str, str]:
    """run -> the baseline run it is compared with: the baseline model's run of its seed, or the baseline's
    only run. InputError when the baseline has several seeds but not this run's."""
    base = [r for r in runs if r.model == baseline_model]
    if not base:
        raise InputError(f"the baseline model {baseline_model!r} is not among the evaluated runs")
    if len(base) == 1:
        return {r.run: base[0].run for r in runs}
    by_seed = {r.seed: r.run for r in base}
    missing = sorted({str(r.seed) for r in runs if r.seed not in by_seed})
    if missing:
        raise InputError(
            f"the baseline {baseline_model} has runs for seeds {', '.join(str(s) for s in sorted(by_seed))} but "
            f"not for seed(s) {', '.join(missing)}, which other runs have: its MCE is paired by seed, so evaluate "
            f"a baseline run of every seed (or leave those runs out)")
    return {r.run: by_seed[r.seed] for r in runs}


def models(runs: Sequence[SeedRun]) -> dict[str, list[SeedRun]]:
    """model -> its runs, both in evaluation order."""
    grouped: dict[str, list[SeedRun]] = {}
    for run in runs:
        grouped.setdefault(run.model, []).append(run)
    return grouped


def label(frame: pd.DataFrame, runs: Sequence[SeedRun]) -> pd.DataFrame:
    """A per-run table (its ``model`` column holding run names) with model and seed columns instead."""
    by_run = {r.run: r for r in runs}
    labelled = frame.rename(columns={"model": "run"})
    labelled.insert(0, "model", [by_run[name].model for name in labelled["run"]])
    labelled.insert(3, "seed", pd.array([by_run[name].seed for name in labelled["run"]], dtype="Int64"))
    return labelled


def spread(per_seed: pd.DataFrame, columns: Sequence[str], keys: Sequence[str] = ("model", "head")) -> pd.DataFrame:
    """Per ``keys`` group of a per-seed table, in order of appearance: n_seeds, seeds, and for each column
    its mean, ``_std`` (ddof 1, NaN for one seed), ``_min`` and ``_max`` (NaN values ignored)."""
    records = []
    for key, group in per_seed.groupby(list(keys), sort=False):
        record = dict(zip(keys, key))
        seeds = [s for s in group["seed"] if not pd.isna(s)] if "seed" in group else []
        record.update(n_seeds=len(group), seeds=",".join(str(int(s)) for s in seeds))
        for column in columns:
            values = group[column].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            record[column] = float(finite.mean()) if len(finite) else np.nan
            record[f"{column}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else np.nan
            record[f"{column}_min"] = float(finite.min()) if len(finite) else np.nan
            record[f"{column}_max"] = float(finite.max()) if len(finite) else np.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def mean_over_seeds(statistics: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
                    runs: Sequence[SeedRun]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(model, head) -> each resampled statistic averaged over the model's seeds, resample by resample
    (statistics keyed by (run, head), all on the same resampled test images)."""
    by_run = {r.run: r for r in runs}
    gathered: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    for (run, head), values in statistics.items():
        target = gathered.setdefault((by_run[run].model, head), {})
        for name, array in values.items():
            target.setdefault(name, []).append(np.asarray(array, dtype=float))
    return {key: {name: np.mean(arrays, axis=0) for name, arrays in values.items()} for key, values in gathered.items()}
