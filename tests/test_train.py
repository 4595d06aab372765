import json
import shutil

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
