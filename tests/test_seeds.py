"""Seeds: which runs are seeds of one model, paired baselines, and the tables averaged over seeds."""

import numpy as np
import pandas as pd
import pytest

from robustgsl import runs
from robustgsl.config import make_config
from robustgsl.errors import InputError
from robustgsl.summary import error_table, summarise
from robustgsl.metrics import CLEAN, bootstrap_intervals, summary_table
from robustgsl.seeds import SeedRun, group_runs, paired_baselines


def record(loss="ce", **overrides):
    return runs.config_record(make_config(loss, "demo", **overrides), world_size=1)


def test_runs_that_differ_only_in_seed_and_name_are_one_model():
    configs = [record(seed=0), record(seed=1, name="ce-again"), record(seed=2, lr=0.01), record("gsl", seed=0),
               record("gsl", seed=1)]
    grouped = group_runs(["ce", "ce-again", "ce-lr", "gsl", "gsl-2"], configs)
    assert [(r.model, r.seed) for r in grouped] == [("ce", 0), ("ce", 1), ("ce-lr", 2), ("gsl", 0), ("gsl", 1)]
    assert [r.run for r in grouped] == ["ce-seed0", "ce-seed1", "ce-lr", "gsl-seed0", "gsl-seed1"]


def test_anything_but_the_seed_keeps_runs_apart():
    base = record(seed=0)
    for change in (dict(epochs=31), dict(width=0.25), dict(bottleneck=2), dict(dataset="cifar10"),
                   dict(embedding_snapshots=[1])):
        other = record(seed=1, **change)
        assert len({r.model for r in group_runs(["a", "b"], [base, other])}) == 2, change
    assert len({r.model for r in group_runs(["a", "b"], [base, base | {"world_size": 2, "seed": 1}])}) == 2


def test_a_repeated_seed_or_a_run_without_config_is_a_model_of_its_own():
    grouped = group_runs(["a", "b", "c", "d"], [record(seed=0), record(seed=0), None, record(seed=1)])
    assert [r.model for r in grouped] == ["a", "b", "c", "a"]
    assert [r.seed for r in grouped] == [0, 0, None, 1]


def test_an_older_config_without_the_new_fields_groups_with_a_new_one():
    old = {key: value for key, value in record(seed=0).items() if key not in ("bottleneck", "embedding_snapshots")}
    assert len({r.model for r in group_runs(["a", "b"], [old, record(seed=1, embedding_snapshots=[])])}) == 1


def test_baselines_are_paired_by_seed():
    seed_runs = [SeedRun("ce-seed0", "ce", 0), SeedRun("ce-seed1", "ce", 1), SeedRun("gsl-seed1", "gsl", 1),
                 SeedRun("gsl-seed0", "gsl", 0)]
    assert paired_baselines(seed_runs, "ce") == {"ce-seed0": "ce-seed0", "ce-seed1": "ce-seed1",
                                                "gsl-seed1": "ce-seed1", "gsl-seed0": "ce-seed0"}
    single = [SeedRun("ce", "ce", 0), SeedRun("gsl-seed3", "gsl", 3), SeedRun("gsl-seed4", "gsl", 4)]
    assert set(paired_baselines(single, "ce").values()) == {"ce"}  # one baseline run: every run's baseline
    with pytest.raises(InputError, match="not for seed"):
        paired_baselines(seed_runs + [SeedRun("gsl-seed2", "gsl", 2)], "ce")


# --- the tables over seeds --------------------------------------------------------------------------

ROWS = [(CLEAN, 0)] + [(c, s) for c in ("noise", "blur") for s in (1, 2, 3)]
SEED_RUNS = [SeedRun("ce-seed0", "ce", 0), SeedRun("ce-seed1", "ce", 1), SeedRun("gsl-seed0", "gsl", 0),
             SeedRun("gsl-seed1", "gsl", 1)]
N = 600


def wrong_arrays(seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([0.10, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35])
    wrong = {}
    for index, run in enumerate(SEED_RUNS):
        scale = 1.0 if run.model == "ce" else 0.8
        wrong[(run.run, "argmax" if run.model == "ce" else "1nn")] = \
            rng.random((len(ROWS), N)) < (scale + 0.05 * index) * rates[:, None]
    return wrong


def test_each_seed_is_scored_against_the_baseline_of_its_seed_and_then_averaged():
    wrong = wrong_arrays()
    tables = summarise(wrong, ROWS, ("ce", "argmax"), ["noise", "blur"], 200, 3, SEED_RUNS)
    per_seed = tables.seed_summary.set_index(["model", "head", "seed"])
    for seed in (0, 1):
        # independently: one seed's table against that seed's baseline, by the one-seed metrics
        mine = {key: value for key, value in wrong.items() if key[0].endswith(f"seed{seed}")}
        alone = summary_table(error_table(mine, ROWS), (f"ce-seed{seed}", "argmax")).set_index(["model", "head"])
        for column in ("clean_error", "mce", "relative_mce"):
            assert per_seed.loc[("gsl", "1nn", seed), column] == pytest.approx(alone.loc[(f"gsl-seed{seed}", "1nn"),
                                                                                         column])
        assert per_seed.loc[("gsl", "1nn", seed), "baseline_seed"] == seed
    summary = tables.summary.set_index(["model", "head"])
    gsl = summary.loc[("gsl", "1nn")]
    values = per_seed.loc[("gsl", "1nn"), "mce"].to_numpy()
    assert gsl["n_seeds"] == 2 and gsl["seeds"] == "0,1"
    assert gsl["mce"] == pytest.approx(values.mean()) and gsl["mce_std"] == pytest.approx(np.std(values, ddof=1))
    assert (gsl["mce_min"], gsl["mce_max"]) == (pytest.approx(values.min()), pytest.approx(values.max()))
    assert summary.loc[("ce", "argmax"), "mce"] == 100 and summary.loc[("ce", "argmax"), "mce_std"] == 0
    # The interval is that of the mean over seeds, on the same resampled test images for every run.
    draws = np.random.default_rng(3).integers(0, N, size=(200, N))
    clean = np.mean([wrong[(f"gsl-seed{s}", "1nn")][0][draws].mean(axis=1) for s in (0, 1)], axis=0)
    assert gsl["clean_error_low"] == pytest.approx(np.percentile(clean, 2.5))
    assert gsl["clean_error_high"] == pytest.approx(np.percentile(clean, 97.5))
    errors = tables.errors
    assert list(errors.columns) == ["model", "head", "seed", "corruption", "severity", "error"]
    assert sorted(set(errors["seed"])) == [0, 1] and set(errors["model"]) == {"ce", "gsl"}
    # RobustBench's tables hold the mean over seeds.
    corrupted = errors.query("model == 'gsl' and head == '1nn' and corruption != 'clean'")
    corruption, severity = corrupted.iloc[0][["corruption", "severity"]]
    assert tables.robustbench.loc["gsl/1nn", (corruption, severity)] == pytest.approx(1 - corrupted.query(
        "corruption == @corruption and severity == @severity")["error"].mean())
    accuracy = tables.robustbench_summary.set_index(["model", "head"]).loc[("gsl", "1nn")]
    assert accuracy["clean_accuracy"] == pytest.approx(1 - errors.query(
        "model == 'gsl' and head == '1nn' and corruption == 'clean'")["error"].mean())


def test_one_seed_gives_the_one_seed_numbers():
    wrong = {key: value for key, value in wrong_arrays().items() if key[0].endswith("seed0")}
    one = [run for run in SEED_RUNS if run.seed == 0]
    tables = summarise(wrong, ROWS, ("ce", "argmax"), ["noise", "blur"], 150, 1, one)
    direct = summary_table(error_table(wrong, ROWS), ("ce-seed0", "argmax")).merge(
        bootstrap_intervals(wrong, ROWS, ("ce-seed0", "argmax"), n_resamples=150, seed=1), on=["model", "head"])
    summary = tables.summary
    assert (summary["n_seeds"] == 1).all() and summary["mce_std"].isna().all()
    for column in ("clean_error", "mce", "relative_mce", "mce_low", "mce_high", "relative_mce_low",
                   "clean_error_diff_low", "clean_error_diff_high"):
        np.testing.assert_array_equal(summary[column].to_numpy(), direct[column].to_numpy())
    pd.testing.assert_series_equal(summary["mce_min"], summary["mce"], check_names=False)
