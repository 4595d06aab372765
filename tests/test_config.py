"""Options defined once: configs, their text parsers, and the CLI options generated from them."""

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustgsl.cli import main
from robustgsl.config import (
    EVAL_OPTIONS, GSL_RECIPE_CHANGES, TRAIN_OPTIONS, EvalConfig, TrainConfig, make_config, paper_deviations,
    parse_option_value, resolve_config, validate_config, validate_eval_config,
)
from robustgsl.corruptions import CORRUPTIONS
from robustgsl.errors import InputError
from robustgsl.options import format_value

# Every training flag the CLI had before its options were generated, with a non-default value.
TRAIN_FLAGS = [
    "--preset", "demo", "--dataset", "digits", "--data-dir", "some/data", "--no-download", "--epochs", "3",
    "--batch-size", "50", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.8", "--no-nesterov",
    "--weight-decay", "0.001", "--milestones", "1,2", "--gamma", "0.5", "--k", "7", "--alpha", "1.5",
    "--gsl-reduction", "sum", "--embedding-dim", "4", "--normalization", "batchnorm", "--width", "0.25",
    "--seed", "3", "--val-size", "100", "--no-augment", "--no-amp", "--no-channels-last", "--no-compile",
    "--graph", "global", "--no-sync-batchnorm", "--device", "cpu", "--resume", "--quiet",
]
TRAIN_VALUES = dict(
    dataset="digits", epochs=3, batch_size=50, optimizer="sgd", lr=0.05, momentum=0.8, nesterov=False,
    weight_decay=0.001, milestones=[1, 2], gamma=0.5, k=7, alpha=1.5, gsl_reduction="sum", embedding_dim=4,
    normalization="batchnorm", width=0.25, seed=3, val_size=100, augment=False, amp=False, channels_last=False,
    compile=False, graph="global", sync_batchnorm=False,
)


@pytest.fixture
def captured(monkeypatch):
    calls = []
    monkeypatch.setattr("robustgsl.train.train", lambda config, run_dir, **kw: calls.append((config, run_dir, kw)))
    monkeypatch.setattr("robustgsl.train.train_both",
                        lambda configs, out_dir, **kw: calls.append((configs, out_dir, kw)) or [])
    monkeypatch.setattr("robustgsl.evaluate.evaluate", lambda run_dirs, config, log=None, models=():
                        calls.append((run_dirs, config, log)) or Path(config.out_dir or "reports/x"))
    return calls


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_every_training_flag_reaches_the_config(captured):
    invoke("train", "--loss", "gsl", "--out", "runs/x", *TRAIN_FLAGS)
    (config, run_dir, kwargs), = captured
    assert config == make_config("gsl", "demo", **TRAIN_VALUES)
    assert run_dir == "runs/x"
    assert {k: kwargs[k] for k in ("data_dir", "download", "device", "resume", "quiet", "log")} == dict(
        data_dir="some/data", download=False, device="cpu", resume=True, quiet=True, log=None)


def test_training_defaults_are_the_presets(captured):
    invoke("train", "--loss", "ce")
    invoke("train-both", "--preset", "demo", "--k", "max")
    (config, run_dir, kwargs), (configs, out_dir, _) = captured
    assert config == make_config("ce") and run_dir == "runs/cifar10-recommended-seed0/ce"
    assert (kwargs["data_dir"], kwargs["download"], kwargs["device"], kwargs["resume"]) == (None, True, None, False)
    assert configs == {loss: make_config(loss, "demo") for loss in ("ce", "gsl")} and out_dir == "runs/demo"
    assert configs["gsl"].k is None and configs["gsl"].embedding_dim == 10


def test_every_evaluation_flag_reaches_the_config(captured):
    invoke("evaluate", "a", "b", "--out", "o", "--corruption-dir", "c", "--corruptions", "contrast",
           "--severities", "1,2", "--heads", "argmax,1nn", "--baseline", "ce/1nn", "--svc-train-size", "0",
           "--bootstrap", "50", "--seed", "2", "--corruption-seed", "3", "--data-dir", "d", "--no-download",
           "--device", "cpu", "--workers", "2", "--grid-image", "4", "--no-report", "--quiet")
    invoke("evaluate")
    (run_dirs, config, log), (default_dirs, default, default_log) = captured
    assert run_dirs == ["a", "b"] and log is None
    assert config == EvalConfig(
        out_dir="o", corruption_dir="c", corruptions=("contrast",), severities=(1, 2), heads=("argmax", "1nn"),
        baseline=("ce", "1nn"), svc_train_size=None, n_bootstrap=50, seed=2, corruption_seed=3, data_dir="d",
        download=False, device="cpu", workers=2, grid_image_index=4, report=False, quiet=True)
    assert default_dirs is None and default == EvalConfig() and default_log is not None
    assert default.svc_train_size == 10_000 and default.n_bootstrap == 1000 and default.corruptions == CORRUPTIONS


def test_help_lists_every_option_with_its_default():
    pair_help = invoke("train-both", "--help").output
    for spec in TRAIN_OPTIONS:  # name and loss are set per run, not for the pair
        assert (spec.flag in pair_help) == spec.cli, spec.name
    assert "[recommended: 200, paper: 200, paper-table2: 200, demo: 30]" in " ".join(pair_help.split())
    assert "--loss [ce|gsl]" in invoke("train", "--help").output
    evaluate_help = " ".join(invoke("evaluate", "--help").output.split())
    for spec in EVAL_OPTIONS:
        assert spec.flag in evaluate_help
    assert "[1,2,3,4,5]" in evaluate_help and "--no-report" in evaluate_help


@pytest.mark.parametrize("spec", [s for s in TRAIN_OPTIONS if s.default is not None], ids=lambda s: s.name)
def test_every_training_option_parses_its_own_default_text(spec):
    assert parse_option_value(spec.name, format_value(spec.default)) == spec.default


@pytest.mark.parametrize("name,text,value", [
    ("k", "max", None), ("k", "5", 5), ("milestones", "100,150", [100, 150]), ("milestones", "", []),
    ("amp", "off", False), ("nesterov", "true", True), ("lr", "1e-3", 1e-3), ("embedding_dim", "2", 2),
    ("optimizer", "adam", "adam"),
])
def test_option_values_parse_from_text(name, text, value):
    assert parse_option_value(name, text) == value


@pytest.mark.parametrize("name,text,message", [
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("k", "some", "k must be a positive integer or 'max', got 'some'"),
    ("milestones", "1,x", "milestones must be comma-separated integers, got '1,x'"),
    ("amp", "maybe", "amp must be on or off"),
    ("depth", "3", "unknown training option 'depth'"),
])
def test_bad_option_text_is_named(name, text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_option_value(name, text)


def test_validation_changes_nothing_and_make_config_resolves():
    config = TrainConfig(loss="gsl", dataset="digits")
    before = copy.deepcopy(config)
    validate_config(config)
    assert config == before and config.embedding_dim is None
    assert resolve_config(config).embedding_dim == 10 and config.embedding_dim is None
    assert make_config("gsl", "demo").embedding_dim == 10 and make_config("ce", "demo").embedding_dim is None
    evaluation = EvalConfig(heads=("argmax",), corruptions=("contrast", "fog"))
    before = copy.deepcopy(evaluation)
    validate_eval_config(evaluation)
    assert evaluation == before


def test_the_recommended_preset_is_the_paper_for_ce_and_the_paper_plus_the_gsl_changes_for_gsl():
    for dataset in ("cifar10", "cifar100", "svhn"):
        paper_ce, paper_gsl = make_config("ce", "paper", dataset), make_config("gsl", "paper", dataset)
        assert make_config("ce", dataset=dataset) == dataclasses.replace(paper_ce, preset="recommended")
        assert make_config("gsl", dataset=dataset) == dataclasses.replace(
            paper_gsl, preset="recommended", **GSL_RECIPE_CHANGES)
        assert paper_deviations(paper_ce) == paper_deviations(paper_gsl) == []
        assert paper_deviations(make_config("ce", dataset=dataset)) == []
    assert sorted(paper_deviations(make_config("gsl"))) == [
        "alpha: 0.5 (paper: 2.0)", "normalization: 'bn-l2' (paper: 'l2')", "warmup_epochs: 2.0 (paper: 0.0)"]
    # GSL's options change nothing for CE; monitoring and naming options are not part of the recipe.
    assert paper_deviations(make_config("ce", "paper", alpha=1.0, monitor_size=10, name="x")) == []
    assert paper_deviations(make_config("ce", "paper", lr=0.05)) == ["lr: 0.05 (paper: 0.1)"]


@pytest.mark.parametrize("values,needle", [
    (dict(corruptions=("rain",)), "rain"), (dict(severities=(6,)), "6"), (dict(heads=("3nn",)), "3nn"),
    (dict(baseline=("ce",)), "MODEL/HEAD"), (dict(corruptions="all"), "tuple of distinct corruption names"),
    (dict(severities="1,2"), "ascending tuple"), (dict(severities=(2, 1)), "ascending tuple"), (dict(n_bootstrap=0), "bootstrap"), (dict(svc_train_size=1), "SVC"),
    (dict(seed=-1), "seeds"), (dict(grid_image_index=-1), "grid image"),
])
def test_bad_evaluation_configs_are_refused(values, needle):
    with pytest.raises(InputError, match=needle):
        validate_eval_config(EvalConfig(**values))


def test_the_cli_module_imports_without_torch():
    # `corrupt` and its spawned worker processes import the CLI module; they do not need torch.
    code = "import sys, robustgsl.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_paper_table2_preset_is_the_paper_recipe_with_d_200():
    # Bontonou et al. 2019, Table 2: CIFAR-10, GSL with k max, d = 200, alpha = 2 (classified by 10-NN).
    gsl, ce = make_config("gsl", "paper-table2"), make_config("ce", "paper-table2")
    assert (gsl.dataset, gsl.embedding_dim, gsl.k, gsl.alpha) == ("cifar10", 200, None, 2.0)
    paper = make_config("gsl", "paper")
    differing = {f for f in paper.to_dict() if paper.to_dict()[f] != gsl.to_dict()[f]}
    assert differing == {"preset", "embedding_dim"}
    assert ce.embedding_dim is None and make_config("ce", "paper").to_dict() | {"preset": "paper-table2"} == ce.to_dict()
    with pytest.raises(InputError, match="paper-table2.*cifar10"):
        make_config("gsl", "paper-table2", dataset="svhn")


def test_fields_say_which_configs_use_them():
    specs = {spec.name: spec for spec in TRAIN_OPTIONS}
    adam_ce = make_config("ce", "demo").to_dict() | {"world_size": 1}
    sgd_gsl = make_config("gsl", "paper").to_dict() | {"world_size": 1}
    assert not specs["momentum"].applies_to(adam_ce) and specs["momentum"].applies_to(sgd_gsl)
    assert not specs["k"].applies_to(adam_ce) and specs["k"].applies_to(sgd_gsl)
    assert specs["bottleneck"].applies_to(adam_ce) and not specs["bottleneck"].applies_to(sgd_gsl)
    assert not specs["graph"].applies_to(sgd_gsl) and specs["graph"].applies_to(sgd_gsl | {"world_size": 8})
    assert specs["monitor_size"].applies_to(sgd_gsl) and not specs["monitor_size"].applies_to(sgd_gsl | {"val_size": 5})
    assert specs["lr"].applies_to(adam_ce) and specs["lr"].applies is None


def test_snapshot_epochs_parse_and_none_switches_a_presets_off():
    assert parse_option_value("embedding_snapshots", "50,1,10") == [1, 10, 50]
    assert make_config("ce", "demo").embedding_snapshots == [1, 5, 15, 30]
    assert make_config("ce", "demo", embedding_snapshots=parse_option_value("embedding_snapshots", "none")) \
        .embedding_snapshots is None
    with pytest.raises(InputError, match="snapshot epochs must be >= 1"):
        make_config("ce", "demo", embedding_snapshots=[0, 3])


@pytest.mark.parametrize("preset,epochs,expected", [
    ("paper", 30, [15, 23]), ("paper", 20, [10, 15]), ("paper", 8, [4, 6]), ("paper", 400, [200, 300]),
    ("recommended", 15, [8, 11]), ("demo", 10, [7, 9]), ("paper", 1, [1]),
])
def test_milestones_follow_the_epochs_at_the_presets_fractions(preset, epochs, expected):
    # The paper's 100, 150 of 200 epochs are 50 % and 75 %; the demo's 22, 27 of 30 epochs keep theirs.
    preset_config = make_config("ce", preset)
    config = make_config("ce", preset, epochs=epochs)
    assert config.milestones == expected
    assert all(abs(m / epochs - p / preset_config.epochs) <= 0.5 / epochs + 1e-12
               for m, p in zip(config.milestones, preset_config.milestones))
    assert make_config("ce", preset, epochs=epochs, milestones=[1]).milestones == [1]  # given: kept


def test_scaled_milestones_are_recorded_in_paper_deviations():
    deviations = paper_deviations(make_config("gsl", epochs=30))
    assert "milestones: [15, 23] (paper: [100, 150] of 200 epochs; the same fractions of 30)" in deviations
    assert "epochs: 30 (paper: 200)" in deviations
    assert "milestones: [5] (paper: [100, 150])" in paper_deviations(make_config("ce", epochs=30, milestones=[5]))


def test_milestones_beyond_the_epochs_are_an_error():
    with pytest.raises(InputError, match=r"milestones must be epochs in 1..30 \(--epochs\), got \[100, 150\]"):
        make_config("ce", epochs=30, milestones=[100, 150])
    result = CliRunner().invoke(main, ["train", "--loss", "ce", "--epochs", "30", "--milestones", "10,31"])
    assert result.exit_code == 2 and "got [10, 31]" in result.output


def test_the_demo_preset_trains_gsl_with_the_recommended_changes():
    demo_gsl, demo_ce = make_config("gsl", "demo"), make_config("ce", "demo")
    assert {name: getattr(demo_gsl, name) for name in GSL_RECIPE_CHANGES} == GSL_RECIPE_CHANGES
    assert demo_ce.warmup_epochs == 0.0  # CE as before: the changes are GSL's
    assert {name: getattr(demo_gsl, name) for name in GSL_RECIPE_CHANGES} == \
        {name: getattr(make_config("gsl"), name) for name in GSL_RECIPE_CHANGES}


@pytest.mark.parametrize("flag,value,message", [
    ("--corruptions", "rain", "rain"), ("--corruptions", "", "no corruption given"), ("--severities", "6", "got 6"),
    ("--baseline", "ce", "baseline must be MODEL/HEAD"), ("--heads", "argmax,3nn", "3nn"),
])
def test_evaluation_options_are_parsed_once_into_their_types_and_bad_text_exits_2(flag, value, message):
    result = CliRunner().invoke(main, ["evaluate", flag, value])
    assert result.exit_code == 2 and message in result.output, result.output


def test_evaluation_text_options_become_typed_values(captured):
    invoke("evaluate", "--corruptions", "noise,fog", "--severities", "5,1", "--baseline", "gsl/10nn")
    (_, config, _), = captured
    assert config.corruptions == ("gaussian_noise", "shot_noise", "impulse_noise", "fog")
    assert config.severities == (1, 5) and config.baseline == ("gsl", "10nn")
