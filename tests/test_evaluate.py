"""End-to-end evaluation on tiny digits models and a tiny generated corruption folder."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustgsl import runs
from robustgsl.cli import main
from robustgsl.config import EvalConfig, make_config
from robustgsl.data import load_dataset
from robustgsl.errors import InputError
from robustgsl.evaluate import evaluate
from robustgsl.train import train_both

from corruption_helpers import DIGITS_C_CORRUPTIONS
from schema_checks import evaluation_folder_problems, run_folder_problems

CORRUPTIONS = list(DIGITS_C_CORRUPTIONS)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    configs = {loss: make_config(loss, "demo", width=0.0625, epochs=2, milestones=[]) for loss in ("ce", "gsl")}
    train_both(configs, root / "pair", runs_root=root, device="cpu", quiet=True)
    return root / "pair"


@pytest.fixture(scope="module")
def evaluation(pair, digits_corruptions, tmp_path_factory):
    out = evaluate([pair / "ce", pair / "gsl"], EvalConfig(
        out_dir=tmp_path_factory.mktemp("eval") / "report", corruptions=tuple(CORRUPTIONS), svc_train_size=300,
        n_bootstrap=200, device="cpu", workers=1, report=False, quiet=True, corruption_dir=digits_corruptions))
    return out, digits_corruptions


def test_errors_csv_holds_every_row(evaluation):
    out, _ = evaluation
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["model", "head", "seed", "corruption", "severity", "error"]
    rows = set(zip(errors["model"], errors["head"]))
    assert rows == {("ce", "argmax"), ("ce", "1nn"), ("ce", "10nn"), ("ce", "svc"),
                    ("gsl", "1nn"), ("gsl", "10nn"), ("gsl", "svc")}
    assert len(errors) == len(rows) * (1 + len(CORRUPTIONS) * 5)
    clean = errors[errors["corruption"] == "clean"]
    assert (clean["severity"] == 0).all() and len(clean) == len(rows)


def test_errors_match_a_direct_computation(evaluation, pair):
    out, corruption_dir = evaluation
    errors = pd.read_csv(out / "errors.csv").set_index(["model", "head", "corruption", "severity"])["error"]
    model, _ = runs.load_model(pair / "ce")
    images, labels = load_dataset("digits", "test")
    with torch.no_grad():
        clean = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
        contrast = np.load(corruption_dir / "contrast.npy")[3 * len(labels):4 * len(labels)]
        corrupted = model(torch.from_numpy(contrast).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    assert errors[("ce", "argmax", "clean", 0)] == pytest.approx((clean != labels).mean())
    assert errors[("ce", "argmax", "contrast", 4)] == pytest.approx((corrupted != labels).mean())


def test_summary_follows_the_definitions(evaluation):
    out, _ = evaluation
    errors = pd.read_csv(out / "errors.csv")
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "head"])
    table = {(r.model, r.head, r.corruption, r.severity): r.error for r in errors.itertuples()}
    for (model, head), row in summary.iterrows():
        ce_values, relative_values = [], []
        for corruption in CORRUPTIONS:
            model_sum = sum(table[(model, head, corruption, s)] for s in range(1, 6))
            base_sum = sum(table[("ce", "argmax", corruption, s)] for s in range(1, 6))
            ce_values.append(model_sum / base_sum)
            model_rel = sum(table[(model, head, corruption, s)] - table[(model, head, "clean", 0)] for s in range(1, 6))
            base_rel = sum(table[("ce", "argmax", corruption, s)] - table[("ce", "argmax", "clean", 0)]
                           for s in range(1, 6))
            relative_values.append(model_rel / base_rel)
        assert row["baseline"] == "ce/argmax"
        assert row["mce"] == pytest.approx(100 * np.mean(ce_values))
        assert row["relative_mce"] == pytest.approx(100 * np.mean(relative_values))
        assert row["clean_error_low"] <= row["clean_error"] <= row["clean_error_high"]
    assert summary.loc[("ce", "argmax"), "mce"] == pytest.approx(100)


def test_side_files_for_the_report(evaluation):
    out, _ = evaluation
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["baseline"] == "ce/argmax" and meta["corruption_source"]["kind"] == "generated"
    assert meta["corruptions"] == CORRUPTIONS and meta["svc_train_size"] == 300
    embeddings = np.load(out / "embeddings.npz")
    assert embeddings["gsl__clean"].shape == embeddings["gsl__corrupted"].shape == (540, 10)
    examples = np.load(out / "example_images.npz")
    assert examples["corrupted"].shape == (len(CORRUPTIONS), 5, 32, 32, 3)
    wide = pd.read_csv(out / "robustbench.csv", header=[0, 1], index_col=0)
    errors = pd.read_csv(out / "errors.csv").set_index(["model", "head", "corruption", "severity"])["error"]
    assert wide.loc["gsl/1nn", ("contrast", "5")] == pytest.approx(1 - errors[("gsl", "1nn", "contrast", 5)])


def test_robustbench_csv_reads_back_with_robustbenchs_reader(evaluation):
    out, _ = evaluation
    # robustbench/eval.py corruptions_evaluation reads unaggregated_results.csv with exactly these arguments,
    # then turns the severity level into integers.
    wide = pd.read_csv(out / "robustbench.csv", header=[0, 1], index_col=0)
    wide.columns = wide.columns.set_levels([wide.columns.levels[0], wide.columns.levels[1].astype(int)])
    # RobustBench's CORRUPTIONS order (gaussian_noise before contrast there), severities 1..5, no clean column.
    assert list(wide.columns) == [("gaussian_noise", s) for s in range(1, 6)] + [("contrast", s) for s in range(1, 6)]
    assert (out / "robustbench.csv").read_text().splitlines()[2].startswith("ce/argmax,")  # two header rows
    errors = pd.read_csv(out / "errors.csv")
    accuracy = pd.read_csv(out / "robustbench_summary.csv").set_index(["model", "head"])
    for key, row in wide.iterrows():
        model, head = key.split("/")
        mine = errors[(errors["model"] == model) & (errors["head"] == head)]
        # RobustBench's headline: the plain mean over corruptions x severities (what model_results.values.mean() gives).
        assert row.mean() == pytest.approx(accuracy.loc[(model, head), "robust_accuracy"])
        assert row.mean() == pytest.approx(1 - mine[mine["corruption"] != "clean"]["error"].mean())
        assert accuracy.loc[(model, head), "clean_accuracy"] == pytest.approx(
            1 - mine[mine["corruption"] == "clean"]["error"].item())
    assert len(wide) == len(accuracy) == 7


def test_released_layout_folder_is_accepted(evaluation, pair, tmp_path):
    _, corruption_dir = evaluation
    released = tmp_path / "CIFAR-10-C-like"
    released.mkdir()
    for name in CORRUPTIONS + ["labels"]:
        shutil.copy(corruption_dir / f"{name}.npy", released / f"{name}.npy")
    out = evaluate([pair / "ce"], EvalConfig(out_dir=tmp_path / "out", corruption_dir=released, corruptions=("contrast",),
                                             heads=["argmax"], n_bootstrap=20, device="cpu", report=False, quiet=True))
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["corruption_source"]["kind"] == "released"
    first = pd.read_csv(evaluation[0] / "errors.csv")
    second = pd.read_csv(out / "errors.csv")
    key = ["model", "head", "corruption", "severity"]
    merged = second.merge(first, on=key, suffixes=("", "_first"))
    np.testing.assert_allclose(merged["error"], merged["error_first"])


def _invoke(args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args), "--device", "cpu", "--quiet", "--no-report"])


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: (d / "contrast.npy").unlink(), "contrast.npy: missing"),
    (lambda d: np.save(d / "contrast.npy", np.zeros((10, 32, 32, 3), np.uint8)), "expected uint8"),
    (lambda d: np.save(d / "labels.npy", (np.load(d / "labels.npy") + 1) % 10), "labels disagree"),
    (lambda d: (d / "labels.npy").write_bytes((d / "labels.npy").read_bytes()[:200]),
     "labels.npy: not a readable .npy file of labels"),
    (lambda d: np.save(d / "labels.npy", np.array([1, "cat"], dtype=object), allow_pickle=True),
     "labels.npy: not a readable .npy file of labels"),
    (lambda d: np.save(d / "labels.npy", np.load(d / "labels.npy").astype(np.float32)), "expected integer labels"),
])
def test_bad_corruption_folders(evaluation, pair, tmp_path, mutate, needle):
    _, corruption_dir = evaluation
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in CORRUPTIONS + ["labels"]:
        shutil.copy(corruption_dir / f"{name}.npy", broken / f"{name}.npy")
    mutate(broken)
    result = _invoke([pair / "ce", "--corruption-dir", broken, "--corruptions", ",".join(CORRUPTIONS),
                      "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert needle in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out" / "errors.csv").exists()


def test_tampered_generated_folder_is_refused(evaluation, pair, tmp_path):
    _, corruption_dir = evaluation
    copy = tmp_path / "copy"
    shutil.copytree(corruption_dir, copy)
    data = np.load(copy / "contrast.npy")
    data[0, 0, 0, 0] ^= 1
    np.save(copy / "contrast.npy", data)
    result = _invoke([pair / "ce", "--corruption-dir", copy, "--corruptions", "contrast", "--out", tmp_path / "o"])
    assert result.exit_code == 2 and "SHA-256" in result.output


@pytest.mark.parametrize("args,needle", [
    (["--corruptions", "rain"], "rain"),
    (["--severities", "6"], "6"),
    (["--baseline", "gsl/argmax"], "gsl/argmax"),
    (["--heads", "3nn"], "3nn"),
])
def test_bad_options(pair, evaluation, tmp_path, args, needle):
    _, corruption_dir = evaluation
    result = _invoke([pair / "ce", pair / "gsl", "--corruption-dir", corruption_dir, "--out", tmp_path / "o", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "o" / "errors.csv").exists()


def test_unfinished_run_is_refused(pair, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(pair / "gsl", unfinished)
    (unfinished / "model.safetensors").unlink()
    result = _invoke([unfinished, "--out", tmp_path / "o"])
    assert result.exit_code == 2 and "no finished model" in result.output


def test_corruption_folder_of_another_data_set_is_refused(pair, evaluation, tmp_path):
    _, corruption_dir = evaluation
    copy = tmp_path / "other"
    shutil.copytree(corruption_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["dataset"] = "cifar10"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = _invoke([pair / "ce", "--corruption-dir", copy, "--corruptions", "contrast", "--out", tmp_path / "o"])
    assert result.exit_code == 2 and "dataset" in result.output


def test_second_evaluation_reuses_the_cache_and_gives_the_same_numbers(evaluation, pair, tmp_path):
    out, corruption_dir = evaluation
    digest_folders = list((pair / "gsl" / "cache").iterdir())
    assert len(digest_folders) == 1  # one checkpoint, one cache folder named by its weights' hash
    cached = sorted(p.name for p in digest_folders[0].iterdir())
    assert any(name.startswith("train_embeddings-") for name in cached)
    assert any(name.startswith("contrast-s5-") for name in cached)
    # every entry has its record (robustgsl/cache.py)
    assert all(name + ".json" in cached for name in cached if name.endswith(".npz"))
    again = evaluate([pair / "ce", pair / "gsl"], EvalConfig(
        out_dir=tmp_path / "again", corruptions=tuple(CORRUPTIONS), svc_train_size=300, n_bootstrap=200,
        device="cpu", report=False, quiet=True, corruption_dir=corruption_dir))
    assert (again / "errors.csv").read_bytes() == (out / "errors.csv").read_bytes()


def test_report_of_a_real_evaluation(evaluation):
    from robustgsl.report import write_report

    out, _ = evaluation
    path = write_report(out)
    html = path.read_text()
    assert path == out / "index.html"
    summary = pd.read_csv(out / "summary.csv")
    for value in summary["clean_error"]:
        assert f"{100 * value:.2f}" in html
    assert "<script" not in html


def test_report_says_when_relative_mce_averages_fewer_corruptions(evaluation, tmp_path):
    from robustgsl.report import write_report

    out, _ = evaluation
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    summary = pd.read_csv(copy / "summary.csv")
    summary["relative_mce_corruptions"] = 1
    summary.to_csv(copy / "summary.csv", index=False)
    html = write_report(copy).read_text()
    assert "averages 1 of 2" in html


def test_run_folders_follow_the_schema(pair):
    for name in ("ce", "gsl"):
        assert run_folder_problems(pair / name) == []


def test_evaluation_folder_follows_the_schema(evaluation):
    out, _ = evaluation
    assert evaluation_folder_problems(out) == []


def test_without_a_baseline_the_tables_still_follow_the_schema(pair, evaluation, tmp_path):
    _, corruption_dir = evaluation
    out = evaluate([pair / "gsl"], EvalConfig(out_dir=tmp_path / "gsl-only", corruption_dir=corruption_dir,
                                              corruptions=("contrast",), heads=["1nn"], n_bootstrap=20, device="cpu",
                                              report=False, quiet=True))
    assert evaluation_folder_problems(out) == []
    assert json.loads((out / "evaluation.json").read_text())["baseline"] is None
    errors = pd.read_csv(out / "errors.csv")
    per_corruption = pd.read_csv(out / "corruption_summary.csv")
    assert per_corruption["ce"].isna().all() and per_corruption["relative_ce"].isna().all()
    corrupted = errors[errors["corruption"] == "contrast"]
    assert per_corruption["mean_error"].item() == pytest.approx(corrupted["error"].mean())


def test_benchmark_of_a_run_folder_gives_the_numbers_of_evaluate(evaluation, pair):
    import robustgsl

    out, corruption_dir = evaluation
    result = robustgsl.benchmark(pair / "ce", dataset="digits", corruptions=CORRUPTIONS, heads=("argmax", "10nn"),
                                 corruption_dir=corruption_dir, device="cpu", n_bootstrap=20)
    errors = pd.read_csv(out / "errors.csv").set_index(["model", "head", "corruption", "severity"])["error"]
    assert result.model == "ce" and result.heads == ("argmax", "10nn")
    for (corruption, severity), row in result.errors.iterrows():
        for head in ("argmax", "10nn"):
            assert row[head] == pytest.approx(errors[("ce", head, corruption, severity)])
    with pytest.raises(InputError, match="none of the heads argmax applies"):
        robustgsl.benchmark(pair / "gsl", dataset="digits", corruptions="contrast", corruption_dir=corruption_dir,
                            device="cpu")
    with pytest.raises(InputError, match="--dataset cifar10, but the run folders were trained on digits"):
        robustgsl.benchmark(pair / "ce", dataset="cifar10", corruption_dir=corruption_dir, device="cpu")


# --- faults: the folder is written whole, --out is checked first, the cache is verified ---------------


from robustgsl import cache  # noqa: E402
from robustgsl.io import is_temporary  # noqa: E402

from fault_helpers import Child, folder_bytes, small_disk  # noqa: E402

GSL_ONLY = dict(heads=["1nn"], n_bootstrap=20, device="cpu", quiet=True)


@pytest.fixture
def old_report(evaluation, tmp_path):
    """A complete earlier evaluation (CE and GSL, both corruptions) with its HTML report."""
    from robustgsl.report import write_report

    folder = tmp_path / "report"
    shutil.copytree(evaluation[0], folder)
    write_report(folder)
    return folder


@pytest.mark.parametrize("report", [True, False])
def test_a_new_evaluation_replaces_every_file_of_the_old_one(old_report, evaluation, pair, tmp_path, report):
    """Issue 13, item 1: `evaluate ce gsl --out R`, then `evaluate gsl --corruptions gaussian_noise --out R`."""
    corruption_dir = evaluation[1]
    config = dict(GSL_ONLY, corruption_dir=corruption_dir, corruptions=("gaussian_noise",), report=report)
    evaluate([pair / "gsl"], EvalConfig(out_dir=old_report, **config))
    fresh = evaluate([pair / "gsl"], EvalConfig(out_dir=tmp_path / "fresh", **config))
    assert sorted(folder_bytes(old_report)) == sorted(folder_bytes(fresh))  # without a report, the old index.html is gone
    for name in ("errors.csv", "summary.csv", "corruption_summary.csv", "robustbench.csv", "embeddings.npz",
                 "example_images.npz"):  # the byte-stable files (README)
        assert (old_report / name).read_bytes() == (fresh / name).read_bytes(), name
    for name in ("errors.csv", "corruption_summary.csv"):  # nothing of the earlier evaluation
        text = (old_report / name).read_text()
        assert "contrast" not in text and "argmax" not in text, name
    if report:
        # The report shows what the fresh one shows (which quotes the paper's CE, argmax row and lists
        # contrast.npy among the corruption folder's files), nothing more.
        html, fresh_html = (old_report / "index.html").read_text(), (fresh / "index.html").read_text()
        for token in ("argmax", "contrast", "<tr"):
            assert html.count(token) == fresh_html.count(token), token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "report"]  # no temporary folder left


def test_an_evaluation_that_fails_half_way_changes_nothing(old_report, evaluation, pair, monkeypatch):
    before = folder_bytes(old_report)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)  # the CSVs are written by then, the arrays fail
    result = _invoke([pair / "gsl", "--corruption-dir", evaluation[1], "--corruptions", "contrast",
                      "--heads", "1nn", "--bootstrap", "20", "--out", old_report])
    monkeypatch.undo()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"Error: cannot write {old_report / 'embeddings.npz'}: no space left on the device" in result.output
    assert folder_bytes(old_report) == before
    assert not [p for p in old_report.parent.iterdir() if is_temporary(p)]


def test_out_is_checked_before_the_evaluation_starts(pair, evaluation, tmp_path, monkeypatch):
    monkeypatch.setattr("robustgsl.evaluate.load_inputs", lambda *a: pytest.fail("the evaluation started"))
    (tmp_path / "a-file").write_text("keep me")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("keep me")
    with small_disk(tmp_path / "disk", "64k", read_only=True):
        for out, needle in ((tmp_path / "a-file", "is a file"), (notes, "thesis.tex"),
                            (tmp_path / "disk" / "report", "read-only file system")):
            result = _invoke([pair / "gsl", "--out", out])
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
            assert result.output.startswith("Error: ") and needle in result.output and str(out) in result.output
    assert (tmp_path / "a-file").read_text() == "keep me" and (notes / "thesis.tex").read_text() == "keep me"


def test_a_full_disk_fails_the_evaluation_and_keeps_the_old_folder(pair, evaluation, tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "1m"):
        old = disk / "report"
        old.mkdir()
        (old / "evaluation.json").write_text("{}")
        (old / "errors.csv").write_text("model,head,corruption,severity,error\n")
        before = folder_bytes(old)
        (disk / "filler").write_bytes(bytes(1000 * 1024))  # about 20 KB left
        result = _invoke([pair / "gsl", "--corruption-dir", evaluation[1], "--corruptions", "contrast",
                          "--heads", "1nn", "--bootstrap", "20", "--out", old])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"Error: cannot write {old}/" in result.output and "no space left on the device" in result.output
        assert folder_bytes(old) == before and sorted(p.name for p in disk.iterdir()) == ["filler", "report"]


def test_a_read_only_run_folder_is_evaluated_without_the_cache(pair, evaluation, tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "1m") as make_read_only:
        run = disk / "gsl"
        run.mkdir()
        for name in ("config.json", "environment.json", "metrics.jsonl", "model.safetensors"):
            shutil.copy(pair / "gsl" / name, run / name)
        make_read_only()
        messages = []
        out = evaluate([run], EvalConfig(out_dir=tmp_path / "out", corruption_dir=evaluation[1],
                                         corruptions=("contrast",), **GSL_ONLY), log=messages.append)
        assert (out / "errors.csv").is_file()
    notes = [m for m in messages if "not caching" in m]
    assert len(notes) == 1 and "read-only file system" in notes[0] and str(run / "cache") in notes[0]


def test_a_damaged_or_altered_cache_entry_is_computed_again(pair, evaluation, tmp_path):
    run = tmp_path / "gsl"
    shutil.copytree(pair / "gsl", run)
    config = dict(corruption_dir=evaluation[1], corruptions=("contrast",), **GSL_ONLY)
    first = evaluate([run], EvalConfig(out_dir=tmp_path / "first", **config))
    (folder,) = (run / "cache").iterdir()
    (train_entry,) = [p for p in folder.iterdir() if p.name.startswith("train_embeddings") and p.suffix != ".json"]
    train_entry.write_bytes(train_entry.read_bytes()[:1000])  # truncated
    (severity_3,) = [p for p in folder.iterdir() if p.name.startswith("contrast-s3-") and p.suffix == ".npz"]
    with np.load(severity_3) as archive:  # same names, shapes and dtypes, other values
        altered = {name: np.random.RandomState(0).rand(*archive[name].shape).astype(archive[name].dtype)
                   for name in archive.files}
    np.savez(severity_3, **altered)
    messages = []
    second = evaluate([run], EvalConfig(out_dir=tmp_path / "second", **config), log=messages.append)
    assert (second / "errors.csv").read_bytes() == (first / "errors.csv").read_bytes()
    recomputed = [m for m in messages if "cannot be used" in m]
    assert len(recomputed) == 2 and any(train_entry.name in m for m in recomputed)
    assert any(severity_3.name in m and "SHA-256 differs" in m for m in recomputed)
    for entry in (train_entry, severity_3):  # written again, and verified
        assert cache.read_entry(entry, 540 if entry == severity_3 else 1257)[0] is not None


def test_an_evaluation_killed_before_its_swap_is_rerun_cleanly(old_report, evaluation, pair, tmp_path):
    before = folder_bytes(old_report)
    child = Child(f"""
import robustgsl.report
robustgsl.report.write_report = lambda *args, **kwargs: ready()
from robustgsl.cli import main
main(["evaluate", {str(pair / 'gsl')!r}, "--corruption-dir", {str(evaluation[1])!r}, "--corruptions", "contrast",
      "--heads", "1nn", "--bootstrap", "20", "--device", "cpu", "--quiet", "--out", {str(old_report)!r}],
     standalone_mode=False)
""", cwd=tmp_path)
    child.wait_ready()
    child.kill()
    assert folder_bytes(old_report) == before  # the killed evaluation's files are all in its temporary folder
    assert [p for p in tmp_path.iterdir() if is_temporary(p)]
    result = _invoke([pair / "gsl", "--corruption-dir", evaluation[1], "--corruptions", "contrast",
                      "--heads", "1nn", "--bootstrap", "20", "--out", old_report])
    assert result.exit_code == 0, result.output
    assert not [p for p in tmp_path.iterdir() if is_temporary(p)]
    assert "argmax" not in (old_report / "errors.csv").read_text()


# --- seeds, and the paper's Table 1 beside CIFAR-100 and SVHN evaluations --------------------------

def test_seed_pairs_are_averaged_with_paired_baselines(digits_corruptions, tmp_path):
    from robustgsl.evaluate.models import pair_name

    configs = {loss: make_config(loss, "demo", width=0.0625, epochs=1, embedding_snapshots=[1]) for loss in ("ce", "gsl")}
    train_both(configs, tmp_path / "runs" / "pair", runs_root=tmp_path / "runs", seeds=[0, 1], device="cpu", quiet=True)
    run_dirs = runs.find_last_pair(tmp_path / "runs")
    assert pair_name(run_dirs[0]) == "pair"  # the default evaluation folder is reports/pair, not reports/seed0
    out = evaluate(run_dirs, EvalConfig(out_dir=tmp_path / "report", corruption_dir=digits_corruptions,
                                        corruptions=("contrast",), heads=["argmax", "10nn"], n_bootstrap=50,
                                        device="cpu", quiet=True))
    assert evaluation_folder_problems(out) == []
    errors = pd.read_csv(out / "errors.csv")
    assert sorted(set(errors["seed"])) == [0, 1] and set(errors["model"]) == {"ce", "gsl"}
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "head"])
    assert (summary["n_seeds"] == 2).all() and set(summary.index) == {("ce", "argmax"), ("ce", "10nn"), ("gsl", "10nn")}
    per_seed = pd.read_csv(out / "seed_summary.csv")
    assert (per_seed["baseline_seed"] == per_seed["seed"]).all()
    meta = json.loads((out / "evaluation.json").read_text())
    assert [(m["name"], m["model"], m["seed"]) for m in meta["models"]] == [
        ("ce-seed0", "ce", 0), ("gsl-seed0", "gsl", 0), ("ce-seed1", "ce", 1), ("gsl-seed1", "gsl", 1)]
    # the runs' snapshots travel with the evaluation
    for model in meta["models"]:
        assert (out / model["snapshots"] / "epoch_0001.npz").is_file()
    html = (out / "index.html").read_text()
    assert "Mean over 2 training seeds" in html and 'id="figure1"' in html


@pytest.mark.parametrize("dataset,published", [
    # Bontonou et al. 2019, Table 1: CE argmax, GSL 1-NN, 10-NN, RBF SVC test errors (%)
    ("cifar100", {"ce/argmax": "27.92", "gsl/1nn": "29.17", "gsl/10nn": "28.82", "gsl/svc": "30.55"}),
    ("svhn", {"ce/argmax": "3.69", "gsl/1nn": "3.84", "gsl/10nn": "3.34", "gsl/svc": "3.40"}),
])
def test_table1_is_shown_beside_a_cifar100_or_svhn_evaluation(tmp_path, dataset, published):
    from dataset_files import write_cifar100, write_svhn
    from robustgsl.corruptions.dataset import write_corruption_dataset
    from test_report import parse

    data = tmp_path / "data"
    data.mkdir()
    if dataset == "cifar100":
        write_cifar100(data, {"train": 200, "test": 40})
    else:
        write_svhn(data, {"train": np.arange(100) % 10 + 1, "test": np.arange(40) % 10 + 1})
    configs = {loss: make_config(loss, "demo", dataset=dataset, width=0.0625, epochs=1, batch_size=50,
                                 embedding_snapshots=[]) for loss in ("ce", "gsl")}
    pair = train_both(configs, tmp_path / "runs" / "pair", data_dir=data, download=False, device="cpu", quiet=True)
    images, labels = load_dataset(dataset, "test", data_dir=data, download=False)
    write_corruption_dataset(images, labels, tmp_path / "C", corruptions=["contrast"], seed=0, workers=1,
                             dataset_name=dataset, quiet=True)
    out = evaluate(pair, EvalConfig(out_dir=tmp_path / "report", corruption_dir=tmp_path / "C", corruptions=("contrast",),
                                    data_dir=data, download=False, svc_train_size=None, n_bootstrap=20, device="cpu",
                                    quiet=True))
    root = parse(out / "index.html")
    table1 = [node for node in root.iter() if "table1" in node.classes()]
    assert len(table1) == 1
    shown = {node.attrs["data-key"]: node.attrs["data-published"] for node in table1[0].iter()
             if "data-published" in node.attrs}
    assert shown == published
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "head"])
    measured = {" ".join(node.text().split()).split(" ")[0] for node in table1[0].iter() if "measured" in node.classes()}
    assert measured == {f"{100 * summary.loc[tuple(key.split('/')), 'clean_error']:.2f}" for key in published}
    assert not [node for node in root.iter() if node.tag == "aside" and "published" in node.classes()]
    line = " ".join(next(node for node in root.iter() if "dataset-line" in node.classes()).text().split())
    assert f"Measured on {'CIFAR-100' if dataset == 'cifar100' else 'SVHN'}, not CIFAR-10" in line
