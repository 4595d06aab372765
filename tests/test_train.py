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
    assert gsl_config["k"] is None and gsl_config["embedding_dim"] == 10
    assert gsl_config["alpha"] == 0.5 and gsl_config["normalization"] == "bn-l2"  # the recommended GSL changes
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
    train(make_config("ce", "demo", width=0.0625, epochs=1, milestones=[1]), run, device="cpu")
    good = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()
    monkeypatch.setattr("robustgsl.train.F.cross_entropy", lambda outputs, labels: outputs.sum() * float("nan"))
    result = CliRunner().invoke(main, ["train", "--loss", "ce", *TINY, "--epochs", "3", "--milestones", "1",
                                       "--out", str(run), "--resume"])
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
    assert make_config("ce", "demo", width=0.0625, epochs=2).milestones == [1, 2]  # the demo's 22, 27 of 30, scaled
    run = train(make_config("ce", "demo", width=0.0625, epochs=2, milestones=[1]), tmp_path / "run", device="cpu")
    with pytest.raises(InputError, match="checkpoint is at epoch 2"):
        train(make_config("ce", "demo", width=0.0625, epochs=1, milestones=[1]), run, device="cpu", resume=True)
    # Without --milestones, 3 epochs would move them to 2, 3: the error says how to keep the run's.
    with pytest.raises(InputError, match="differs in milestones .*pass --milestones 1 to keep"):
        train(make_config("ce", "demo", width=0.0625, epochs=3), run, device="cpu", resume=True)
    before = load_file(str(run / "model.safetensors"))
    train(make_config("ce", "demo", width=0.0625, epochs=3, milestones=[1]), run, device="cpu", resume=True)
    after = load_file(str(run / "model.safetensors"))
    assert not torch.equal(before["linear.weight"], after["linear.weight"])
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1, 2, 3]


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="smaller than one global batch"):
        train(make_config("ce", "demo", width=0.0625, epochs=1, batch_size=5000), tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_warmup_factor_rises_linearly_per_step_then_stays_at_one():
    from robustgsl.train import warmup_factor

    steps = 4
    factors = [warmup_factor(1.5, epoch, step, steps) for epoch in (1, 2, 3) for step in range(steps)]
    assert factors == [i / 6 for i in range(1, 7)] + [1.0] * 6  # 1.5 epochs x 4 steps = 6 warm-up steps
    assert all(warmup_factor(0.0, 1, step, steps) == 1.0 for step in range(steps))


def test_warmup_scales_each_step_and_leaves_the_schedule_exact(tmp_path, monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    config = make_config("gsl", "demo", width=0.0625, epochs=3, milestones=[2], warmup_epochs=1.0)
    run = train(config, tmp_path / "run", device="cpu")
    steps = len(seen) // 3
    lr = config.lr
    expected = [lr * (i + 1) / steps for i in range(steps)] + [lr] * steps + [lr * config.gamma] * steps
    assert seen == pytest.approx(expected, rel=1e-12)
    # The milestone multiplied the scheduled lr, not a warmed-up one; metrics record the scheduled lr.
    assert [m["lr"] for m in runs.read_metrics(run)] == pytest.approx([lr, lr, lr * config.gamma], rel=1e-12)
    assert json.loads((run / "config.json").read_text())["warmup_epochs"] == 1.0


# --- faults: damaged checkpoints, file-system errors, kills at chosen moments --------------------------

import io  # noqa: E402
from pathlib import Path  # noqa: E402

from robustgsl.io import is_temporary  # noqa: E402

from fault_helpers import Child, folder_bytes, small_disk  # noqa: E402

TRAIN_GSL = ["train", "--loss", "gsl", *TINY]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    return train(make_config("ce", "demo", width=0.0625, epochs=1, milestones=[1]), tmp_path_factory.mktemp("one") / "run",
                 device="cpu")


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _other_width_checkpoint(run: Path) -> bytes:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    wider = runs.build_model_from_config(runs.read_config(run) | {"width": 0.125})
    return _torch_bytes(state | {"model": wider.state_dict()})


@pytest.mark.parametrize("damage,needle", [
    (lambda run: (run / "checkpoint.pt").read_bytes()[:1000], "is damaged or not a torch checkpoint"),
    (lambda run: b"", "is empty"),
    (lambda run: _torch_bytes({"model": {}}), "no epoch, optimizer, scheduler"),
    (_other_width_checkpoint, "does not fit the model and optimiser"),
])
def test_resuming_from_a_damaged_checkpoint_names_it_and_rewrites_nothing(one_epoch_run, tmp_path, damage, needle):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    (run / "checkpoint.pt").write_bytes(damage(run))
    before = folder_bytes(run)
    result = CliRunner().invoke(main, ["train", "--loss", "ce", *TINY, "--epochs", "2", "--milestones", "1",
                                       "--out", str(run), "--resume"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert result.output.startswith(f"Error: {run / 'checkpoint.pt'} ") and needle in result.output
    assert "weights_only" not in result.output
    assert folder_bytes(run) == before  # config, environment, weights kept


def test_an_out_that_is_a_file_or_read_only_is_refused_before_the_data_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr("robustgsl.train._load_data", lambda *a: pytest.fail("the data was loaded"))
    (tmp_path / "a-file").write_text("keep me")
    result = CliRunner().invoke(main, [*TRAIN_GSL, "--epochs", "1", "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "Error: run folder" in result.output and "is a file" in result.output
    assert (tmp_path / "a-file").read_text() == "keep me"
    with small_disk(tmp_path / "disk", "64k", read_only=True):
        result = CliRunner().invoke(main, [*TRAIN_GSL, "--epochs", "1", "--out", str(tmp_path / "disk" / "run")])
    assert result.exit_code == 2 and "read-only file system" in result.output, result.output


def test_a_full_disk_stops_training_with_the_file_and_the_cause(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "300k"):  # config, environment and metrics fit; the 600 KB checkpoint does not
        result = CliRunner().invoke(main, [*TRAIN_GSL, "--epochs", "1", "--out", str(disk / "run")])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"Error: cannot write {disk / 'run' / 'checkpoint.pt'}: no space left on the device" in result.output
        assert "run the same command with --resume" in result.output
        assert not [p for p in (disk / "run").iterdir() if is_temporary(p)]


def _train_child(run: Path, moment_code: str, epochs: int) -> Child:
    """`robustgsl train` (GSL, tiny) in a fresh process, which calls ready() at the patched moment."""
    return Child(moment_code + f"""
from robustgsl.cli import main
main({[*TRAIN_GSL, "--epochs", str(epochs), "--out", str(run)]!r}, standalone_mode=False)
""", cwd=run.parent)


def _resume(run: Path, epochs: int):
    result = CliRunner().invoke(main, [*TRAIN_GSL[:-1], "--epochs", str(epochs), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    return result


def test_a_run_killed_before_its_folder_exists_resumes_from_scratch(tmp_path):
    run = tmp_path / "run"
    child = _train_child(run, """
import robustgsl.train
robustgsl.train._load_data = lambda *args: ready()
""", epochs=1)
    child.wait_ready()
    child.kill()
    assert not run.exists()
    result = _resume(run, 1)
    assert "nothing to resume; starting the run from epoch 1" in result.output
    assert runs.is_finished(run) and "resumed_at" not in runs.read_environment(run)


def test_a_resume_before_the_first_checkpoint_is_recorded(tmp_path):
    run = tmp_path / "run"
    child = _train_child(run, """
import robustgsl.train
robustgsl.train._train_epoch = lambda *args: ready()
""", epochs=1)
    child.wait_ready()
    child.kill()
    first = runs.read_environment(run)
    assert not (run / "checkpoint.pt").exists()
    _resume(run, 1)
    environment = runs.read_environment(run)
    assert environment["started_at"] == first["started_at"]
    assert len(environment["resumed_at"]) == 1 and environment["resumed_at"][0] >= first["started_at"]


def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL inside the epoch-2 checkpoint write (half a temporary on disk): the resumed run cleans the
    temporary up, and its files are those of an uninterrupted run, byte for byte, except for wall times
    (metrics.jsonl's epoch_time_s, environment.json), as the README says."""
    straight = train(make_config("gsl", "demo", width=0.0625, epochs=2), tmp_path / "straight", device="cpu")
    run = tmp_path / "run"
    child = _train_child(run, """
from robustgsl import runs
from robustgsl.io import atomic_path
original = runs.save_checkpoint
def save_checkpoint(run_dir, epoch, *args):
    if epoch == 2:
        with atomic_path(run_dir / "checkpoint.pt") as tmp:
            tmp.write_bytes(b"half a checkpoint")
            ready()
    original(run_dir, epoch, *args)
runs.save_checkpoint = save_checkpoint
""", epochs=2)
    child.wait_ready()
    child.kill()
    assert [p for p in run.iterdir() if is_temporary(p)]
    started_at = runs.read_environment(run)["started_at"]
    _resume(run, 2)
    assert not [p for p in run.iterdir() if is_temporary(p)]
    for name in ("checkpoint.pt", "model.safetensors", "config.json"):
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name
    without_times = [[{k: v for k, v in row.items() if k != "epoch_time_s"} for row in runs.read_metrics(r)]
                     for r in (run, straight)]
    assert without_times[0] == without_times[1] and [row["epoch"] for row in without_times[0]] == [1, 2]
    environment = runs.read_environment(run)
    assert environment["started_at"] == started_at and len(environment["resumed_at"]) == 1


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
