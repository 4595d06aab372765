"""CE / mCE / relative mCE against a hand-computed example; the paired bootstrap."""

import numpy as np
import pandas as pd
import pytest

from robustgsl.errors import InputError
from robustgsl.metrics import bootstrap_intervals, corruption_error_table, robustbench_table, summary_table

BASE = ("ce", "argmax")
# (model, head) -> clean error, {corruption: [E(severity 1), E(severity 2)]}
EXAMPLE = {
    ("ce", "argmax"): (0.10, {"noise": [0.20, 0.30], "blur": [0.15, 0.25]}),
    ("gsl", "1nn"): (0.08, {"noise": [0.18, 0.22], "blur": [0.20, 0.30]}),
}


def errors_frame(example=EXAMPLE):
    rows = []
    for (model, head), (clean, corrupted) in example.items():
        rows.append((model, head, "clean", 0, clean))
        for corruption, per_severity in corrupted.items():
            rows += [(model, head, corruption, s + 1, e) for s, e in enumerate(per_severity)]
    return pd.DataFrame(rows, columns=["model", "head", "corruption", "severity", "error"])


def test_summary_against_hand_computed_example():
    summary = summary_table(errors_frame(), BASE).set_index(["model", "head"])
    # CE_c = sum_s E / sum_s E_base
    ce_noise = (0.18 + 0.22) / (0.20 + 0.30)  # 0.8
    ce_blur = (0.20 + 0.30) / (0.15 + 0.25)  # 1.25
    # relative CE_c = sum_s (E - E_clean) / sum_s (E_base - E_base_clean)
    rel_noise = ((0.18 - 0.08) + (0.22 - 0.08)) / ((0.20 - 0.10) + (0.30 - 0.10))  # 0.8
    rel_blur = ((0.20 - 0.08) + (0.30 - 0.08)) / ((0.15 - 0.10) + (0.25 - 0.10))  # 1.7
    gsl = summary.loc[("gsl", "1nn")]
    assert gsl["mce"] == pytest.approx(100 * (ce_noise + ce_blur) / 2)  # 102.5
    assert gsl["mce"] == pytest.approx(102.5)
    assert gsl["relative_mce"] == pytest.approx(100 * (rel_noise + rel_blur) / 2)  # 125
    assert gsl["relative_mce"] == pytest.approx(125.0)
    assert gsl["clean_error"] == pytest.approx(0.08)
    assert gsl["mean_corruption_error"] == pytest.approx((0.18 + 0.22 + 0.20 + 0.30) / 4)
    assert gsl["baseline"] == "ce/argmax"
    base = summary.loc[BASE]
    assert base["mce"] == pytest.approx(100) and base["relative_mce"] == pytest.approx(100)

    table = corruption_error_table(errors_frame(), BASE).set_index(["model", "head", "corruption"])
    assert table.loc[("gsl", "1nn", "blur"), "ce"] == pytest.approx(125.0)
    assert table.loc[("gsl", "1nn", "blur"), "relative_ce"] == pytest.approx(170.0)
    assert table.loc[("gsl", "1nn", "noise"), "mean_error"] == pytest.approx(0.20)

    only_noise = summary_table(errors_frame(), BASE, corruptions=["noise"]).set_index(["model", "head"])
    assert only_noise.loc[("gsl", "1nn"), "mce"] == pytest.approx(80.0)


def test_baseline_must_be_among_rows():
    with pytest.raises(InputError, match="ce/argmax, gsl/1nn"):
        summary_table(errors_frame(), ("gsl", "svc"))
    missing = errors_frame().query("not (model == 'gsl' and corruption == 'blur' and severity == 2)")
    with pytest.raises(InputError, match="severities"):
        summary_table(missing, BASE)


def test_undefined_ratios_are_left_out_of_the_means():
    # The baseline never errs under noise: CE_noise is undefined, MCE is CE_blur alone.
    never_wrong = {**EXAMPLE, ("ce", "argmax"): (0.0, {"noise": [0.0, 0.0], "blur": [0.1, 0.2]})}
    summary = summary_table(errors_frame(never_wrong), BASE).set_index(["model", "head"])
    gsl = summary.loc[("gsl", "1nn")]
    assert gsl["mce"] == pytest.approx(100 * (0.20 + 0.30) / (0.1 + 0.2))
    assert gsl["mce_corruptions"] == 1 and gsl["relative_mce_corruptions"] == 1
    assert gsl["relative_mce"] == pytest.approx(100 * ((0.20 - 0.08) + (0.30 - 0.08)) / (0.1 + 0.2))
    table = corruption_error_table(errors_frame(never_wrong), BASE).set_index(["model", "head", "corruption"])
    assert np.isnan(table.loc[("gsl", "1nn", "noise"), "ce"])
    # The baseline's summed corrupted error equals its clean error under noise: relative CE undefined there.
    flat = {**EXAMPLE, ("ce", "argmax"): (0.1, {"noise": [0.05, 0.15], "blur": [0.1, 0.2]})}
    summary = summary_table(errors_frame(flat), BASE).set_index(["model", "head"])
    gsl = summary.loc[("gsl", "1nn")]
    assert gsl["mce_corruptions"] == 2 and gsl["relative_mce_corruptions"] == 1
    assert gsl["relative_mce"] == pytest.approx(100 * ((0.20 - 0.08) + (0.30 - 0.08)) / ((0.1 - 0.1) + (0.2 - 0.1)))
    everything_flat = {**EXAMPLE, ("ce", "argmax"): (0.1, {"noise": [0.05, 0.15], "blur": [0.0, 0.2]})}
    summary = summary_table(errors_frame(everything_flat), BASE).set_index(["model", "head"])
    assert np.isnan(summary.loc[("gsl", "1nn"), "relative_mce"])


def test_robustbench_table_holds_accuracies():
    table = robustbench_table(errors_frame())
    assert list(table.index) == ["ce/argmax", "gsl/1nn"]
    assert list(table.columns) == [("noise", 1), ("noise", 2), ("blur", 1), ("blur", 2)]  # no clean column
    assert table.index.name is None and table.columns.names == [None, None]
    assert table.loc["gsl/1nn", ("blur", 2)] == pytest.approx(1 - 0.30)
    assert table.loc["ce/argmax", ("noise", 1)] == pytest.approx(1 - 0.20)
    assert table.shape == (2, 4)


def test_robustbench_columns_follow_robustbenchs_corruption_order():
    rows = [("m", "argmax", "clean", 0, 0.1)] + [("m", "argmax", c, s, 0.2) for c in
                                                  ("gaussian_noise", "speckle_noise", "contrast", "shot_noise")
                                                  for s in (2, 1)]
    table = robustbench_table(pd.DataFrame(rows, columns=["model", "head", "corruption", "severity", "error"]))
    # robustbench/data.py CORRUPTIONS: shot_noise, ..., gaussian_noise, ..., contrast, ...; others after.
    assert [c for c, _ in table.columns[::2]] == ["shot_noise", "gaussian_noise", "contrast", "speckle_noise"]
    assert [s for _, s in table.columns[:2]] == [1, 2]


# ------------------------------------------------------------------------------------------ bootstrap

ROWS = [("clean", 0)] + [(c, s) for c in ("noise", "blur") for s in (1, 2, 3)]


def wrong_arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    base_rate = np.array([0.10, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35])
    base = rng.random((len(ROWS), n)) < base_rate[:, None]
    # The other model errs on a correlated set: paired resampling should see that.
    other = base ^ (rng.random((len(ROWS), n)) < 0.05)
    return {BASE: base, ("gsl", "10nn"): other}


def point_estimates(wrong):
    rows = [(m, h, c, s, float(w[r].mean())) for (m, h), w in wrong.items() for r, (c, s) in enumerate(ROWS)]
    frame = pd.DataFrame(rows, columns=["model", "head", "corruption", "severity", "error"])
    return summary_table(frame, BASE).set_index(["model", "head"])


def test_bootstrap_interval_contains_estimate_and_matches_index_resampling():
    wrong = wrong_arrays(2000)
    intervals = bootstrap_intervals(wrong, ROWS, BASE, n_resamples=300, seed=7).set_index(["model", "head"])
    points = point_estimates(wrong)
    for key in wrong:
        for name in ("clean_error", "mce", "relative_mce"):
            assert intervals.loc[key, f"{name}_low"] <= points.loc[key, name] <= intervals.loc[key, f"{name}_high"]
    assert intervals.loc[BASE, "mce_low"] == intervals.loc[BASE, "mce_high"] == pytest.approx(100)
    # Independent check: draw the same indices explicitly and take percentiles of the clean error.
    draws = np.random.default_rng(7).integers(0, 2000, size=(300, 2000))
    clean = wrong[("gsl", "10nn")][0][draws].mean(axis=1)
    diff = clean - wrong[BASE][0][draws].mean(axis=1)
    low, high = np.percentile(clean, [2.5, 97.5])
    assert intervals.loc[("gsl", "10nn"), "clean_error_low"] == pytest.approx(low)
    assert intervals.loc[("gsl", "10nn"), "clean_error_high"] == pytest.approx(high)
    assert intervals.loc[("gsl", "10nn"), "clean_error_diff_low"] == pytest.approx(np.percentile(diff, 2.5))


def test_bootstrap_is_deterministic_and_shrinks_with_n():
    wrong = wrong_arrays(500)
    first = bootstrap_intervals(wrong, ROWS, BASE, n_resamples=200, seed=3)
    pd.testing.assert_frame_equal(first, bootstrap_intervals(wrong, ROWS, BASE, n_resamples=200, seed=3))
    assert not first.equals(bootstrap_intervals(wrong, ROWS, BASE, n_resamples=200, seed=4))
    small = bootstrap_intervals(wrong_arrays(200), ROWS, BASE, n_resamples=200).set_index(["model", "head"])
    large = bootstrap_intervals(wrong_arrays(5000), ROWS, BASE, n_resamples=200).set_index(["model", "head"])
    key = ("gsl", "10nn")
    for name in ("clean_error", "mce", "relative_mce", "clean_error_diff"):
        width = lambda t: t.loc[key, f"{name}_high"] - t.loc[key, f"{name}_low"]  # noqa: E731
        assert width(large) < width(small) / 2


def test_paired_difference_of_identical_models_is_exactly_zero():
    base = wrong_arrays(300)[BASE]
    intervals = bootstrap_intervals({BASE: base, ("twin", "argmax"): base.copy()}, ROWS, BASE,
                                    n_resamples=100).set_index(["model", "head"])
    twin = intervals.loc[("twin", "argmax")]
    assert twin["clean_error_diff_low"] == 0.0 and twin["clean_error_diff_high"] == 0.0
    assert twin["mce_low"] == twin["mce_high"] == 100.0
    assert twin["relative_mce_low"] == twin["relative_mce_high"] == 100.0


def test_bootstrap_bad_input():
    wrong = wrong_arrays(50)
    with pytest.raises(InputError, match="not among the evaluated rows"):
        bootstrap_intervals(wrong, ROWS, ("gsl", "svc"))
    with pytest.raises(InputError, match="rows"):
        bootstrap_intervals(wrong, ROWS[1:], BASE)


# ------------------------------------------------------------------------------------------ reliability

def test_binomial_noise_of_the_relative_denominator_matches_a_simulation():
    from robustgsl.metrics import relative_denominator_noise

    rng = np.random.default_rng(0)
    n, clean, corrupted = 400, 0.1, np.array([[0.12, 0.2, 0.35]])
    # independent rates from n images each, as the rule assumes
    draws = rng.binomial(n, np.r_[clean, corrupted[0]], size=(40000, 4)) / n
    simulated = (draws[:, 1:] - draws[:, :1]).sum(axis=1).std()
    assert relative_denominator_noise(np.float64(clean), corrupted, n)[0] == pytest.approx(simulated, rel=0.02)


def _frame(baseline_rates, other_rates):
    return errors_frame({("ce", "argmax"): baseline_rates, ("gsl", "1nn"): other_rates})


def test_a_tiny_baseline_denominator_flags_relative_ce_and_relative_mce():
    # n = 1000: the baseline's noise denominator (0.101 + 0.100 - 2 x 0.10 = 0.001) is far inside 2 SE
    # (about 2 x 0.023); its blur denominator (0.15 + 0.25 - 0.2 = 0.2) is far outside.
    from robustgsl.metrics import relative_ce_reliability, relative_mce_reliability

    errors = _frame((0.10, {"noise": [0.101, 0.100], "blur": [0.15, 0.25]}),
                    (0.08, {"noise": [0.18, 0.22], "blur": [0.20, 0.30]}))
    per_corruption = relative_ce_reliability(errors, BASE, n_test=1000).set_index(["model", "head", "corruption"])
    assert not per_corruption.loc[("gsl", "1nn", "noise"), "relative_ce_reliable"]
    assert "0.0010 is within 2 standard errors" in per_corruption.loc[("gsl", "1nn", "noise"), "relative_ce_reliability"]
    assert per_corruption.loc[("gsl", "1nn", "blur"), "relative_ce_reliable"]
    assert per_corruption.loc[(*BASE, "noise"), "relative_ce_reliable"]  # 100 by definition
    # with 100 times more test images the same denominator is outside the noise
    assert relative_ce_reliability(errors, BASE, n_test=10_000_000)["relative_ce_reliable"].all()
    table = corruption_error_table(errors, BASE).merge(per_corruption.reset_index(), on=["model", "head", "corruption"])
    flags = relative_mce_reliability(summary_table(errors, BASE), table, BASE).set_index(["model", "head"])
    assert not flags.loc[("gsl", "1nn"), "relative_mce_reliable"]
    assert "noise" in flags.loc[("gsl", "1nn"), "relative_mce_reliability"]
    assert flags.loc[BASE, "relative_mce_reliable"]


def test_a_negative_relative_mce_or_an_interval_around_zero_is_flagged():
    from robustgsl.metrics import relative_ce_reliability, relative_mce_reliability

    # Below its own clean error under both corruptions: relative CE_c < 0 with healthy denominators.
    errors = _frame((0.10, {"noise": [0.20, 0.30], "blur": [0.15, 0.25]}),
                    (0.30, {"noise": [0.25, 0.28], "blur": [0.26, 0.29]}))
    per_corruption = corruption_error_table(errors, BASE).merge(
        relative_ce_reliability(errors, BASE, n_test=1000), on=["model", "head", "corruption"])
    assert per_corruption["relative_ce_reliable"].all()
    summary = summary_table(errors, BASE)
    flags = relative_mce_reliability(summary, per_corruption, BASE).set_index(["model", "head"])
    assert summary.set_index(["model", "head"]).loc[("gsl", "1nn"), "relative_mce"] < 0
    assert not flags.loc[("gsl", "1nn"), "relative_mce_reliable"]
    assert flags.loc[("gsl", "1nn"), "relative_mce_reliability"].startswith("negative (")
    spans = summary.assign(relative_mce=[100.0, 40.0], relative_mce_low=[100.0, -3.0], relative_mce_high=[100.0, 90.0])
    flags = relative_mce_reliability(spans, per_corruption, BASE).set_index(["model", "head"])
    assert flags.loc[("gsl", "1nn"), "relative_mce_reliability"] == "its bootstrap interval [-3.00, 90.00] contains 0"
    healthy = spans.assign(relative_mce_low=[100.0, 10.0])
    assert relative_mce_reliability(healthy, per_corruption, BASE)["relative_mce_reliable"].all()


def test_an_undefined_ratio_is_unreliable_and_without_a_baseline_nothing_is_reliable():
    from robustgsl.metrics import relative_ce_reliability

    flat = _frame((0.1, {"noise": [0.05, 0.15], "blur": [0.1, 0.2]}), (0.08, {"noise": [0.1, 0.2], "blur": [0.1, 0.2]}))
    table = relative_ce_reliability(flat, BASE, n_test=1000).set_index(["model", "head", "corruption"])
    assert table.loc[("gsl", "1nn", "noise"), "relative_ce_reliability"].startswith("undefined")
    assert table.loc[(*BASE, "noise"), "relative_ce_reliability"].startswith("undefined")
    none = relative_ce_reliability(flat, None, n_test=1000)
    assert not none["relative_ce_reliable"].any() and (none["relative_ce_reliability"] == "no baseline").all()


def test_severity_curves_average_the_family_and_resample_it():
    from robustgsl.metrics import resampled_error_rates, severity_curves

    wrong = wrong_arrays(800)
    rates = resampled_error_rates(wrong, 300, seed=5)
    curves = severity_curves({key: value.mean(axis=1) for key, value in wrong.items()}, rates, ROWS,
                             [("all", ["noise", "blur"]), ("noise", ["noise"])]).set_index(
        ["model", "head", "family", "severity"])
    other = wrong[("gsl", "10nn")]
    # severity 2 over both corruptions: rows 2 (noise, 2) and 5 (blur, 2), resampled with explicit indices
    assert curves.loc[("gsl", "10nn", "all", 2), "error"] == pytest.approx(other[[2, 5]].mean())
    draws = np.random.default_rng(5).integers(0, 800, size=(300, 800))
    resampled = other[[2, 5]][:, draws].mean(axis=(0, 2))
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert curves.loc[("gsl", "10nn", "all", 2), "error_low"] == pytest.approx(low)
    assert curves.loc[("gsl", "10nn", "all", 2), "error_high"] == pytest.approx(high)
    assert curves.loc[("gsl", "10nn", "noise", 0), "error"] == pytest.approx(other[0].mean())  # the clean row
