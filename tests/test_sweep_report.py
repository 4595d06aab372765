"""The sweep page on sweeps whose training and scoring are stand-ins with known errors: panels, seeds'
mean and spread, the k = max position, log axes, categorical options, the paper's findings, escaping."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from robustgsl import runs
from robustgsl.config import EvalConfig
from robustgsl.evaluate import CleanErrors
from robustgsl.io import sha256_file
from robustgsl.report.sweep import load_sweep, option_figure, option_panels
from robustgsl.schema import sweep as schema
from robustgsl.schema.run import EpochMetrics
from robustgsl.sweep import SweepConfig, run_sweep
from robustgsl.sweep_grid import parse_grid, read_sweep_table

from sweep_pages import Page

INJECTED = "<script>alert(1)</script>"
FIXED = {"preset": "demo", "epochs": 3, "width": 0.125}
HEAD_OFFSETS = {"argmax": 0.05, "1nn": 0.0, "10nn": -0.02, "svc": 0.03}


def known_error(head: str, config: dict) -> float:
    """The stand-in scorer's clean error of a run: lower for the complete graph, higher with alpha and seed."""
    optimizer = 0.04 if config["optimizer"] == "sgd" else 0.0
    return 0.30 - 0.10 * (config["k"] is None) + 0.02 * config["alpha"] + 0.01 * config["seed"] + optimizer \
        + HEAD_OFFSETS[head]


@pytest.fixture
def stand_ins(monkeypatch):
    """train() writes a finished run folder with the real writers (or fails for the points in ``failing``)
    and records each call in ``trained``; clean_test_errors() returns ``known_error``."""
    state = SimpleNamespace(failing=[], trained=[])

    def train(config, run_dir, **kwargs):
        state.trained.append(config.name)
        if any(all(getattr(config, key) == value for key, value in point.items()) for point in state.failing):
            raise RuntimeError(f"{INJECTED} diverged")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True)
        runs.write_config(run_dir, runs.config_record(config, 1))
        runs.write_metrics(run_dir, [dataclasses.asdict(EpochMetrics(epoch, 1.0 / epoch, 0.002, 0.5, 0.4, 0.1))
                                     for epoch in range(1, config.epochs + 1)])
        runs.start_environment(run_dir, config, torch.device("cpu"), 1, "stand-in", ["robustgsl"], previous=None)
        torch.manual_seed(config.seed)
        runs.save_weights(run_dir, torch.nn.Linear(2, 2))
        runs.finish_environment(run_dir, 2.5)
        return run_dir

    def clean_test_errors(run_dir, config=None, log=None):
        saved = runs.read_config(run_dir)
        heads = ["argmax", "1nn", "10nn", "svc"] if saved["loss"] == "ce" else ["1nn", "10nn", "svc"]
        return CleanErrors({head: known_error(head, saved) for head in heads}, n_train=1000, n_test=200,
                           weights_sha256=sha256_file(Path(run_dir) / runs.WEIGHTS_FILE))

    monkeypatch.setattr("robustgsl.sweep.train", train)
    monkeypatch.setattr("robustgsl.sweep.clean_test_errors", clean_test_errors)
    return state


@pytest.fixture
def gsl_sweep(tmp_path, stand_ins):
    stand_ins.failing.append({"k": 2, "alpha": 2.0, "seed": 1})
    grid = parse_grid("gsl", ["k=2,max", "alpha=1,2"], "0,1", FIXED)
    result = run_sweep(grid, SweepConfig(out_dir=str(tmp_path / "sweep"), quiet=True), EvalConfig(quiet=True))
    return result.out_dir


def test_one_panel_per_value_of_the_other_option_with_mean_and_spread_over_seeds(gsl_sweep):
    sweep = load_sweep(gsl_sweep)
    by_k = option_panels(sweep, 0)
    assert [panel["title"] for panel in by_k] == ["alpha = 1", "alpha = 2"]
    # k = max (the complete graph) sits at batch size - 1 and is labelled "max".
    assert by_k[0]["ticks"] == ([2.0, 99.0], ["2", "max"])
    for panel, alpha in zip(by_k, (1.0, 2.0)):
        for head in ("1nn", "10nn", "svc"):
            curve = panel["curves"][head]
            assert curve["x"] == [2.0, 99.0]
            for x, k in ((0, 2), (1, None)):
                # k = 2, alpha = 2 failed for seed 1: its mean is seed 0's error alone.
                seeds = [0] if (k, alpha) == (2, 2.0) else [0, 1]
                errors = [100 * known_error(head, {"k": k, "alpha": alpha, "seed": s, "optimizer": "adam"})
                          for s in seeds]
                assert curve["mean"][x] == pytest.approx(sum(errors) / len(errors))
                assert (curve["low"][x], curve["high"][x]) == pytest.approx((min(errors), max(errors)))
    by_alpha = option_panels(sweep, 1)
    assert [panel["title"] for panel in by_alpha] == ["k = 2", "k = max"]
    assert by_alpha[0]["ticks"] == ([1.0, 2.0], ["1", "2"])
    colours = {head: "#000000" for head in sweep.heads}
    assert option_figure(sweep, 0, colours)["log_x"] and not option_figure(sweep, 1, colours)["log_x"]


def test_the_page_has_a_figure_per_option_with_its_finding_scale_and_failures(gsl_sweep):
    html = (gsl_sweep / schema.REPORT_FILE).read_text()
    page = Page(html)
    for option, figure in (("k", "Figure 2"), ("alpha", "Figure 4")):
        (svg,) = page.find("svg", aria_label=f"error-vs-{option}")
        assert svg.within("section", id=f"vs-{option}")
        (finding,) = [aside for aside in page.find("aside", "finding") if aside.within("section", id=f"vs-{option}")]
        assert finding.attrs["data-figure"] == figure and "Bontonou et al. 2019" in finding.text
        titles = ("alpha = 1", "alpha = 2") if option == "k" else ("k = 2", "k = max")
        assert all(title in svg.text for title in titles)
    for caption in page.find("figcaption"):
        for fact in ("data set: digits", "width: 0.125", "epochs: 3", "batch: 100", "training images: 1,000",
                     "test images: 200", "seeds: 0, 1"):
            assert fact in caption.text
    assert any("Reduced scale" in note.text for note in page.find("p", "footnote"))
    # The failure is shown, escaped: the page carries no script of its own or of a failure message's.
    (failure,) = page.find("td", "failure")
    assert INJECTED in failure.text and "<script" not in html
    assert not page.find("script") and not [e for e in page.elements if "://" in (e.attrs.get("href") or "")]
    table = read_sweep_table(gsl_sweep)
    assert len(table) == 8 and list(table["status"]).count("failed") == 1
    assert len([row for row in page.find("tr") if "data-run" in row.attrs]) == 8


def test_a_categorical_option_of_a_ce_sweep_and_an_option_with_one_value(tmp_path, stand_ins):
    grid = parse_grid("ce", ["optimizer=sgd,adam", "lr=0.001"], "0", FIXED)
    out = run_sweep(grid, SweepConfig(out_dir=str(tmp_path / "ce"), quiet=True), EvalConfig(quiet=True)).out_dir
    sweep = load_sweep(out)
    (panel,) = option_panels(sweep, 0)
    assert panel["title"] == "lr = 0.001" and panel["ticks"] == ([0.0, 1.0], ["sgd", "adam"])
    expected = 100 * known_error("argmax", {"k": None, "alpha": 2.0, "seed": 0, "optimizer": "sgd"})
    assert panel["curves"]["argmax"]["mean"][0] == pytest.approx(expected)
    page = Page((out / schema.REPORT_FILE).read_text())
    assert page.find("svg", aria_label="error-vs-optimizer") and not page.find("aside", "finding")
    assert not page.find("svg", aria_label="error-vs-lr")  # one value: not swept, no figure of its own
    assert any("cross-entropy sweep" in note.text for note in page.find("p", "footnote"))


def test_a_rerun_trains_only_what_failed_and_flags_a_run_of_another_config(gsl_sweep, stand_ins):
    tampered = gsl_sweep / "k=max,alpha=1/seed0"
    runs.write_config(tampered, runs.read_config(tampered) | {"alpha": 3.0})
    stand_ins.failing.clear()
    stand_ins.trained.clear()
    grid = parse_grid("gsl", ["k=2,max", "alpha=1,2"], "0,1", FIXED)
    result = run_sweep(grid, SweepConfig(out_dir=str(gsl_sweep), quiet=True), EvalConfig(quiet=True))
    assert stand_ins.trained == ["gsl-k=2,alpha=2-seed1"]  # the failed point only
    (failed,) = result.failed
    assert failed.startswith("k=max,alpha=1 seed 0: InputError") and "differs from this point's in alpha" in failed
    assert list(result.table["status"]).count("ok") == 7
