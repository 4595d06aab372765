"""`robustgsl sweep` on the digits: grid parsing and validation, a failed point, resume, both launchers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

from robustgsl import runs
from robustgsl.cli import main
from robustgsl.config import TRAIN_OPTIONS, EvalConfig, parse_option_value, preset_values
from robustgsl.data import load_dataset, to_float
from robustgsl.errors import InputError, TrainingError
from robustgsl.schema import names
from robustgsl.schema import sweep as schema
from robustgsl.sweep import SweepConfig, reconcile_grid, run_sweep
from robustgsl.sweep_grid import Param, grid_points, parse_grid, parse_param, read_sweep_table, value_text

from sweep_pages import Page

REPO = Path(__file__).resolve().parents[1]
# Tiny runs: 1/16 width on the digits (1,257 training images), a small monitor slice.
RECIPE = ["--preset", "demo", "--width", "0.0625", "--monitor-size", "100", "--val-reference-size", "200"]
FIXED = {"preset": "demo", "width": 0.0625, "monitor_size": 100, "val_reference_size": 200}
GSL_HEADS = ("1nn", "10nn", "svc")


def invoke(*args):
    return CliRunner().invoke(main, ["sweep", *map(str, args)])


# --- the grid -------------------------------------------------------------------------------------

def test_values_go_through_each_options_own_parser():
    assert parse_param("k=1,10,max") == Param("k", (1, 10, None))
    assert parse_param("embedding-dim=4,16") == Param("embedding_dim", (4, 16))
    assert parse_param("--lr=0.1,1e-3").values == (0.1, 0.001)
    assert parse_param("augment=on,off").values == (True, False)
    assert parse_param("optimizer=sgd,adam").values == ("sgd", "adam")
    assert parse_param("milestones=6,8;10").values == ([6, 8], [10])


@pytest.mark.parametrize("spec", [spec for spec in TRAIN_OPTIONS if spec.cli and spec.name != "seed"],
                         ids=lambda spec: spec.name)
def test_every_training_option_can_be_swept_and_its_values_read_back(spec):
    """Options come from TrainConfig's metadata: one added there is sweepable with no change to the sweep."""
    value = preset_values("paper", None).get(spec.name, spec.default)
    if value is None:  # "not given" defaults (number of classes, on for CUDA): a grid gives a value instead
        value = {"k": None, "embedding_dim": 16, "compile": False, "bottleneck": 2,
                 "embedding_snapshots": [1, 5]}[spec.name]
    text = value_text(spec.name, value)
    assert parse_param(f"{spec.flag[2:]}={text}") == Param(spec.name, (value,))
    assert parse_option_value(spec.name, text) == value  # how sweep.json and sweep.csv are read back


def test_the_grid_is_the_cartesian_product_once_per_seed_with_readable_folders():
    grid = parse_grid("gsl", ["k=3,max", "alpha=1,2"], "0,1", FIXED | {"epochs": 1})
    points = grid_points(grid)
    assert [p.run_dir.as_posix() for p in points] == [
        f"k={k},alpha={a}/seed{s}" for k in ("3", "max") for a in ("1", "2") for s in (0, 1)]
    last = points[-1].config
    assert (last.loss, last.k, last.alpha, last.seed, last.epochs, last.dataset) == ("gsl", None, 2.0, 1, 1, "digits")
    assert last.width == 0.0625 and last.embedding_dim == 10  # fixed options and derived values apply
    lists = grid_points(parse_grid("ce", ["milestones=6,8;10"], "0", FIXED))
    assert [p.label for p in lists] == ["milestones=6+8", "milestones=10"]
    assert [p.config.milestones for p in lists] == [[6, 8], [10]]


@pytest.mark.parametrize("args,needle", [
    ([], "empty grid"),
    (["--param", "kk=1,2"], "unknown parameter 'kk'"),
    (["--param", "k3"], "NAME=V1,V2"),
    (["--param", "k=1,abc"], "k must be a positive integer or 'max', got 'abc'"),
    (["--param", "lr=0.1,fast"], "lr must be a number, got 'fast'"),
    (["--param", "k="], "empty value list"),
    (["--param", "k=1,,3"], "empty value in"),
    (["--param", "k=1", "--param", "k=3"], "duplicate parameter k"),
    (["--param", "k=3,10", "--k", "3"], "k is both swept"),
    (["--param", "k=3,3"], "duplicate value '3'"),
    (["--param", "lr=0.1,1e-1"], "duplicate value '1e-1'"),
    (["--param", "k=max,none"], "duplicate value 'none'"),
    (["--param", "k=0,3"], "grid point k=0 (seed 0): k must be >= 1"),
    (["--param", "optimizer=sgd,rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--param", "seed=0,1"], "--seeds"),
    (["--param", "k=3", "--seeds", "0,0"], "duplicate seed 0"),
    (["--param", "k=3", "--seeds", ""], "empty seed list"),
    (["--param", "k=3", "--gpus-per-job", "2"], "0 or 1"),
    (["--param", "k=3", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_grids_are_refused_before_anything_is_written(tmp_path, args, needle):
    out = tmp_path / "sweep"
    result = invoke("--loss", "gsl", *RECIPE, "--epochs", "1", "--device", "cpu", *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and needle in result.output
    assert not out.exists()


# --- a local sweep: one point fails half-way, the rerun resumes it and keeps the other ----------------

def _fail_in_epoch_2_of(label: str):
    from robustgsl import train as train_module

    real = train_module._train_epoch

    def train_epoch(run, data, training, epoch, quiet):
        if epoch == 2 and label in str(run.run_dir):
            raise TrainingError("the loss became nan in epoch 2 (injected)")
        return real(run, data, training, epoch, quiet)

    return train_epoch


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
            for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    args = ["--loss", "gsl", "--param", "k=3,max", "--seeds", "0", *RECIPE, "--epochs", "2", "--device", "cpu",
            "--quiet", "--out", out]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("robustgsl.train._train_epoch", _fail_in_epoch_2_of("k=3"))
        first = invoke(*args)
    state = SimpleNamespace(out=out, args=args, first=first, first_table=read_sweep_table(out),
                            first_page=(out / schema.REPORT_FILE).read_text(), finished=_files(out / "k=max/seed0"),
                            half_metrics=runs.read_metrics(out / "k=3/seed0"))
    state.second = invoke(*args)
    state.table = read_sweep_table(out)
    state.page = (out / schema.REPORT_FILE).read_text()
    return state


def test_a_failed_point_is_reported_and_the_others_go_on(local_sweep):
    assert local_sweep.first.exit_code == 1, local_sweep.first.output
    assert "1 of 2 runs failed" in local_sweep.first.output and "k=3 seed 0" in local_sweep.first.output
    table = local_sweep.first_table.set_index("k")
    assert table.loc["3", "status"] == "failed" and table.loc["max", "status"] == "ok"
    assert "TrainingError" in table.loc["3", "failure"] and "injected" in table.loc["3", "failure"]
    assert table.loc["3", "epochs_trained"] == 1
    assert table.loc[["3"], [f"error_{h}" for h in GSL_HEADS]].isna().all(axis=None)
    assert table.loc["max", "epochs_trained"] == 2 and table.loc["max", "failure"] == ""
    last_epoch = runs.read_metrics(local_sweep.out / "k=max/seed0")[-1]
    assert table.loc["max", "final_loss"] == pytest.approx(last_epoch["loss"])
    failures = Page(local_sweep.first_page).find("td", "failure")
    assert len(failures) == 1 and "injected" in failures[0].text


def test_a_rerun_keeps_finished_points_and_resumes_a_half_trained_one(local_sweep):
    assert local_sweep.second.exit_code == 0, local_sweep.second.output
    assert (local_sweep.table["status"] == "ok").all()
    # The finished point is neither retrained nor rescored: every file keeps its bytes and its time stamp.
    assert _files(local_sweep.out / "k=max/seed0") == local_sweep.finished
    # The half-trained point continued from its epoch-1 checkpoint (same epoch-1 record, one resumption).
    resumed = local_sweep.out / "k=3/seed0"
    assert [row["epoch"] for row in local_sweep.half_metrics] == [1]
    assert runs.read_metrics(resumed)[0] == local_sweep.half_metrics[0]
    assert len(runs.read_environment(resumed)["resumed_at"]) == 1
    assert torch.load(resumed / runs.CHECKPOINT_FILE, weights_only=True)["epoch"] == 2


def test_sweep_files_follow_the_schema(local_sweep):
    out = local_sweep.out
    assert list(pd.read_csv(out / schema.TABLE_FILE).columns) == list(names(schema.sweep_columns(("k",), GSL_HEADS)))
    assert list(local_sweep.table["k"]) == ["3", "max"] and list(local_sweep.table["run_dir"]) == ["k=3/seed0",
                                                                                                    "k=max/seed0"]
    record = json.loads((out / schema.SWEEP_FILE).read_text())
    assert set(record) == set(names(schema.RECORD_FIELDS))
    assert record["params"] == [{"name": "k", "values": ["3", "max"]}] and record["seeds"] == [0]
    assert record["fixed"] == FIXED | {"epochs": 2} and record["heads"] == list(GSL_HEADS)
    scores = json.loads((out / "k=max/seed0" / schema.SCORES_FILE).read_text())
    assert set(scores) == set(names(schema.SCORES_FIELDS)) and set(scores["errors"]) == set(GSL_HEADS)
    assert runs.read_config(out / "k=max/seed0")["k"] is None


def _embeddings(run_dir: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model, _ = runs.load_model(run_dir)
    with torch.no_grad():
        outputs, embeddings = model.forward_with_embedding(to_float(torch.from_numpy(images).permute(0, 3, 1, 2)))
    return outputs.numpy(), embeddings.numpy()


def test_knn_errors_match_scikit_learn_on_the_models_own_embeddings(local_sweep):
    train_images, train_labels = load_dataset("digits", "train")
    test_images, test_labels = load_dataset("digits", "test")
    for row in local_sweep.table.to_dict("records"):
        run_dir = local_sweep.out / row["run_dir"]
        _, reference = _embeddings(run_dir, train_images)
        _, embedded = _embeddings(run_dir, test_images)
        for k in (1, 10):
            knn = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(reference, train_labels)
            expected = float((knn.predict(embedded) != test_labels).mean())
            assert row[f"error_{k}nn"] == pytest.approx(expected, abs=1.5 / len(test_labels))


def test_the_page_shows_error_against_k_with_the_papers_finding(local_sweep):
    page = Page(local_sweep.page)
    figures = page.find("svg", aria_label="error-vs-k")
    assert len(figures) == 1 and figures[0].within("section", id="vs-k")
    assert "max" in figures[0].text and "clean test error (%)" in figures[0].text
    for head in GSL_HEADS:
        assert head in figures[0].text  # one legend entry per head
    finding = page.find("aside", "finding")
    assert len(finding) == 1 and finding[0].within("section", id="vs-k")
    assert "Figure 2" in finding[0].text and "number of classes" in finding[0].text and "Bontonou" in finding[0].text
    caption = page.find("figcaption")[0].text
    for fact in ("data set: digits", "width: 0.0625", "epochs: 2", "training images: 1,257", "test images: 540",
                 "seeds: 0 (one seed"):
        assert fact in caption
    assert "log axis" in caption
    assert [row.attrs["data-run"] for row in page.find("tr") if "data-run" in row.attrs] == ["k=3/seed0", "k=max/seed0"]


def test_another_grid_in_the_folder_is_refused_and_extend_adds_to_it(local_sweep):
    out, record = local_sweep.out, (local_sweep.out / schema.SWEEP_FILE).read_bytes()
    common = [*RECIPE, "--device", "cpu", "--quiet", "--out", out]
    for args, needle in ((["--param", "k=3,10", "--epochs", "2"], "values of k"),
                         (["--param", "alpha=1,2", "--epochs", "2"], "swept options"),
                         (["--param", "k=3,max", "--epochs", "3"], "fixed options"),
                         (["--param", "k=3,max", "--epochs", "2", "--seeds", "0,1"], "seeds")):
        result = invoke("--loss", "gsl", *args, *common)
        assert result.exit_code == 2 and "another grid" in result.output and needle in result.output, result.output
    assert (out / schema.SWEEP_FILE).read_bytes() == record
    fixed = FIXED | {"epochs": 2}
    merged = reconcile_grid(out, parse_grid("gsl", ["k=10,3"], "1,0", fixed), extend=True)
    assert merged.params == (Param("k", (3, None, 10)),) and merged.seeds == (0, 1)
    assert reconcile_grid(out, parse_grid("gsl", ["k=max,3"], "0", fixed), extend=False).params[0].values == (3, None)
    with pytest.raises(InputError, match="--extend only adds"):
        reconcile_grid(out, parse_grid("gsl", ["alpha=1"], "0", fixed), extend=True)
    with pytest.raises(InputError, match="not a sweep folder"):
        reconcile_grid(out / "k=max", parse_grid("gsl", ["k=3"], "0", fixed), extend=False)


# --- the submitit launcher, with submitit's local executor (real jobs in other processes) --------------

def test_submitit_local_jobs_train_score_and_report_a_failed_job(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "sweep"
    # batch 5000 passes validation but not training: the digits' 1,257 training images hold no batch of it.
    grid = parse_grid("ce", ["batch_size=100,5000"], "0", FIXED | {"epochs": 1})
    result = run_sweep(grid, SweepConfig(out_dir=str(out), launcher="submitit", submitit_cluster="local",
                                         timeout_min=10, quiet=True), EvalConfig(device="cpu", quiet=True))
    table = result.table.set_index("batch_size")
    assert list(table.columns[table.columns.str.startswith("error_")]) == ["error_argmax", "error_1nn", "error_10nn",
                                                                            "error_svc"]
    assert table.loc["100", "status"] == "ok" and table.loc["5000", "status"] == "failed"
    assert "smaller than one global batch" in table.loc["5000", "failure"]
    assert len(result.failed) == 1 and result.failed[0].startswith("batch_size=5000 seed 0")
    # Both points ran as submitit jobs: their pickled results are in the job folders.
    assert len(list((out / schema.SUBMITIT_DIR).glob("*/*_result.pkl"))) == 2
    test_images, test_labels = load_dataset("digits", "test")
    outputs, _ = _embeddings(out / "batch_size=100/seed0", test_images)
    assert table.loc["100", "error_argmax"] == pytest.approx(float((outputs.argmax(1) != test_labels).mean()))
