import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from robustgsl import runs
from robustgsl.cli import main
from robustgsl.config import make_config
from robustgsl.errors import InputError
from robustgsl.train import train

TINY = ["--preset", "demo", "--width", "0.0625", "--device", "cpu", "--quiet"]


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_train_both_writes_complete_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train-both", *TINY, "--epochs", "2", "--out", "runs/pair")
    assert result.exit_code == 0, result.output
    for name in ("ce", "gsl"):
        run = tmp_path / "runs/pair" / name
        config = json.loads((run / "config.json").read_text())
        assert config["loss"] == name and config["dataset"] == "digits" and config["epochs"] == 2
        environment = json.loads((run / "environment.json").read_text())
        assert {"versions", "device", "git_sha", "seed", "command_line", "wall_time_s"} <= set(environment)
        metrics = runs.read_metrics(run)
        assert [m["epoch"] for m in metrics] == [1, 2]
        assert {"loss", "lr", "train_error", "val_error", "epoch_time_s"} <= set(metrics[0])
        checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
        assert checkpoint["epoch"] == 2
        weights = load_file(str(run / "model.safetensors"))
        model, _ = runs.load_model(run)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(weights[key], value)
    gsl_config = json.loads((tmp_path / "runs/pair/gsl/config.json").read_text())
    assert gsl_config["k"] is None and gsl_config["alpha"] == 2.0 and gsl_config["embedding_dim"] == 10
    assert runs.find_last_pair(tmp_path / "runs") == [(tmp_path / "runs/pair").resolve() / n for n in ("ce", "gsl")]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    common = dict(width=0.0625, epochs=2, milestones=[1])
    straight = train(make_config("gsl", "demo", **common), tmp_path / "straight", device="cpu")
    interrupted_config = make_config("gsl", "demo", **(common | {"epochs": 1}))
    train(interrupted_config, tmp_path / "resumed", device="cpu")
    train(make_config("gsl", "demo", **common), tmp_path / "resumed", device="cpu", resume=True)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert [m["epoch"] for m in runs.read_metrics(tmp_path / "resumed")] == [1, 2]


def test_existing_run_folder_is_refused_and_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["train", "--loss", "ce", *TINY, "--epochs", "1", "--out", str(run)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--resume" in result.output
    assert (run / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("args,needle", [
    (["--loss", "hinge"], "hinge"),
    (["--loss", "gsl", "--k", "0"], "k must be >= 1"),
    (["--loss", "gsl", "--alpha", "-1"], "alpha must be > 0"),
    (["--loss", "ce", "--dataset", "mnist"], "mnist"),
    (["--loss", "ce", "--preset", "fast"], "fast"),
    (["--loss", "ce", "--optimizer", "rmsprop"], "rmsprop"),
    (["--loss", "ce", "--momentum", "-1"], "momentum must be >= 0"),
    (["--loss", "ce", "--momentum", "0"], "Nesterov"),
    (["--loss", "ce", "--seed", "-1"], "seed must be >= 0"),
    (["--loss", "ce", "--sync-batchnorm", "--device", "cpu"], "--sync-batchnorm needs CUDA"),
    (["--loss", "ce", "--device", "tpu"], "tpu"),
])
def test_bad_input_gets_a_clear_message(tmp_path, args, needle):
    result = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "r"), "--quiet", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "r").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(make_config("ce", "demo", width=0.0625, epochs=1), run, device="cpu")
    good = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()
    monkeypatch.setattr("robustgsl.train.F.cross_entropy", lambda outputs, labels: outputs.sum() * float("nan"))
    result = CliRunner().invoke(main, ["train", "--loss", "ce", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert result.exit_code == 1
    assert "loss became nan" in result.output.lower() and "(epoch 1)" in result.output
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    torch.testing.assert_close(checkpoint["model"]["linear.weight"], good["linear.weight"])
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1]


def test_compile_failure_falls_back_to_eager_with_a_message(tmp_path, monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda model: Broken())
    messages = []
    config = make_config("ce", "demo", width=0.0625, epochs=1, compile=True)
    run = train(config, tmp_path / "run", device="cpu", log=messages.append)
    assert any("torch.compile failed" in m and "no compiler here" in m for m in messages)
    assert (run / "model.safetensors").is_file()


def test_train_both_resume_after_an_interruption_during_ce(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train-both", *TINY, "--epochs", "1", "--out", "runs/pair").exit_code == 0
    shutil.rmtree(tmp_path / "runs/pair/gsl")  # as if killed before the GSL run started
    (tmp_path / "runs/LAST_PAIR").unlink()
    result = invoke("train-both", *TINY, "--epochs", "1", "--out", "runs/pair", "--resume")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs/pair/gsl/model.safetensors").is_file()
    assert (tmp_path / "runs/LAST_PAIR").is_file()


def test_extending_a_finished_run_and_refusing_to_shrink_it(tmp_path):
    run = train(make_config("ce", "demo", width=0.0625, epochs=2), tmp_path / "run", device="cpu")
    with pytest.raises(InputError, match="checkpoint is at epoch 2"):
        train(make_config("ce", "demo", width=0.0625, epochs=1), run, device="cpu", resume=True)
    before = load_file(str(run / "model.safetensors"))
    train(make_config("ce", "demo", width=0.0625, epochs=3), run, device="cpu", resume=True)
    after = load_file(str(run / "model.safetensors"))
    assert not torch.equal(before["linear.weight"], after["linear.weight"])
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1, 2, 3]


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="smaller than one global batch"):
        train(make_config("ce", "demo", width=0.0625, epochs=1, batch_size=5000), tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


# --- embedding snapshots (Figure 1) and seeds ------------------------------------------------------

SNAPSHOT_RECIPE = dict(width=0.0625, epochs=2, milestones=[1], embedding_snapshots=[1, 2])


def _snapshot_arrays(run_dir):
    from robustgsl.snapshots import read_snapshot, snapshot_paths

    return {epoch: read_snapshot(path) for epoch, path in snapshot_paths(run_dir / "snapshots").items()}


def test_snapshots_hold_the_embeddings_of_a_fixed_training_sample_and_change_nothing(tmp_path):
    from robustgsl.data import load_dataset
    from robustgsl.snapshots import SNAPSHOT_SAMPLE

    config = make_config("gsl", "demo", **SNAPSHOT_RECIPE, embedding_dim=2, normalization="batchnorm")
    run = train(config, tmp_path / "gsl", device="cpu")
    snapshots = _snapshot_arrays(run)
    assert sorted(snapshots) == [1, 2] and sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "epoch_0001.npz", "epoch_0002.npz"]
    train_images, train_labels = load_dataset("digits", "train")
    for epoch, arrays in snapshots.items():
        assert arrays["embeddings"].shape == (SNAPSHOT_SAMPLE, 2) and arrays["embeddings"].dtype == np.float32
        assert int(arrays["epoch"]) == epoch
        np.testing.assert_array_equal(arrays["labels"], train_labels[arrays["indices"]])
    # the last snapshot is the finished model's embedding of those images (eval mode, no augmentation)
    model, _ = runs.load_model(run)
    images = torch.from_numpy(train_images[snapshots[2]["indices"]]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(model.embed(images), torch.from_numpy(snapshots[2]["embeddings"]))
    np.testing.assert_array_equal(snapshots[1]["indices"], snapshots[2]["indices"])
    # snapshots only read the model: the same recipe without them trains the same weights
    plain = train(make_config("gsl", "demo", **(SNAPSHOT_RECIPE | {"embedding_snapshots": []}), embedding_dim=2,
                              normalization="batchnorm"), tmp_path / "plain", device="cpu")
    a, b = load_file(str(run / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_resumed_run_writes_the_same_snapshots_as_an_uninterrupted_one(tmp_path, monkeypatch):
    config = make_config("ce", "demo", **SNAPSHOT_RECIPE, bottleneck=2)
    straight = train(config, tmp_path / "straight", device="cpu")
    import robustgsl.train as training

    real_epoch = training._train_epoch

    def killed_in_epoch_two(run, data, state, epoch, quiet):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(run, data, state, epoch, quiet)

    monkeypatch.setattr(training, "_train_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", device="cpu")
    assert sorted(_snapshot_arrays(tmp_path / "resumed")) == [1]
    monkeypatch.setattr(training, "_train_epoch", real_epoch)
    train(config, tmp_path / "resumed", device="cpu", resume=True)
    first, second = _snapshot_arrays(straight), _snapshot_arrays(tmp_path / "resumed")
    assert sorted(first) == sorted(second) == [1, 2]
    for epoch in first:
        assert first[epoch]["embeddings"].shape[1] == 2  # the CE bottleneck's output
        for name, array in first[epoch].items():
            np.testing.assert_array_equal(array, second[epoch][name])


def test_train_both_seeds_trains_one_resumable_pair_per_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train-both", *TINY, "--epochs", "1", "--seeds", "0,1", "--out", "runs/seeds")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        for loss in ("ce", "gsl"):
            assert json.loads((tmp_path / f"runs/seeds/seed{seed}/{loss}/config.json").read_text())["seed"] == seed
    expected = [(tmp_path / "runs/seeds").resolve() / f"seed{s}" / loss for s in (0, 1) for loss in ("ce", "gsl")]
    assert runs.find_last_pair(tmp_path / "runs") == expected
    shutil.rmtree(tmp_path / "runs/seeds/seed1/gsl")  # as if killed before seed 1's GSL run started
    result = invoke("train-both", *TINY, "--epochs", "1", "--seeds", "0,1", "--out", "runs/seeds", "--resume")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs/seeds/seed1/gsl/model.safetensors").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--seeds", "0,1", "--seed", "2"], "either --seed"),
    (["--seeds", "1,1"], "distinct"),
    (["--seeds", "a"], "seeds must be comma-separated integers"),
])
def test_bad_seed_lists_are_refused(tmp_path, args, needle):
    result = CliRunner().invoke(main, ["train-both", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "r").exists()
