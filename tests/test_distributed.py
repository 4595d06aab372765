"""Data-parallel training: gloo processes on the CPU stand in for GPUs."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from robustgsl.cli import main
from robustgsl.config import make_config
from robustgsl.distributed import DistributedContext
from robustgsl.losses import GraphSmoothnessLoss
from robustgsl.train import Criterion

PER_RANK = 6
WORLD = 2
ALPHA = 2.0  # given to both sides, so the comparison does not depend on a preset's alpha
GRAPHS = ("global", "local")


class TinyEmbedder(torch.nn.Module):
    """No BatchNorm, so one process on the whole batch and two on halves compute the same outputs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def _data():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(WORLD * PER_RANK, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (WORLD * PER_RANK,), generator=generator)
    return images, labels


def _rank_worker(rank, init_file, out_dir):
    """Both graph modes in one process group (one spawn: each start of a process imports torch again)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    images, labels = _data()
    local = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = {}
    for graph in GRAPHS:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(TinyEmbedder())
        criterion = Criterion(make_config("gsl", "demo", k=3, alpha=ALPHA, graph=graph),
                              DistributedContext(rank, WORLD, rank))
        loss = criterion(model(images[local]), labels[local])
        loss.backward()
        results[graph] = {"loss": loss.detach(), "grads": {n: p.grad for n, p in model.module.named_parameters()}}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> dict[str, list[dict]]:
    """graph mode -> per rank, the loss and gradients that rank computed on its half of the batch."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    saved = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return {graph: [ranks[graph] for ranks in saved] for graph in GRAPHS}


def _single_process_gradients(images, labels):
    torch.manual_seed(0)
    model = TinyEmbedder()
    loss = GraphSmoothnessLoss(k=3, alpha=ALPHA, reduction="mean")(model(images), labels)  # the training default
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_global_graph_equals_one_process_on_the_concatenated_batch(rank_results):
    results = rank_results["global"]
    images, labels = _data()
    expected_loss, expected_grads = _single_process_gradients(images, labels)
    for result in results:
        torch.testing.assert_close(result["loss"], expected_loss)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(result["grads"][name], grad)


def test_local_graph_equals_the_mean_of_per_rank_losses_gradients(rank_results):
    results = rank_results["local"]
    images, labels = _data()
    per_rank = [_single_process_gradients(images[r * PER_RANK:(r + 1) * PER_RANK], labels[r * PER_RANK:(r + 1) * PER_RANK])
                for r in range(WORLD)]
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["loss"], per_rank[rank][0])
        for name in per_rank[0][1]:
            mean_grad = sum(grads[name] for _, grads in per_rank) / WORLD
            torch.testing.assert_close(result["grads"][name], mean_grad)
    # The global graph has cross-rank edges, so it is a different loss: the test above can tell them apart.
    global_loss, _ = _single_process_gradients(images, labels)
    assert not torch.isclose(global_loss, sum(r["loss"] for r in results))


def test_torchrun_two_processes_make_a_run_folder_that_evaluate_accepts(tmp_path, monkeypatch):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "robustgsl", "train-both", "--preset", "demo", "--epochs", "1", "--width", "0.0625",
               "--device", "cpu", "--out", "runs/ddp", "--quiet"]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("ce", "gsl"):
        weights = load_file(str(tmp_path / "runs/ddp" / name / "model.safetensors"))
        assert not any(key.startswith("module.") for key in weights)
    monkeypatch.chdir(tmp_path)  # evaluate finds the last pair under ./runs; in this process, as it needs no ranks
    result = CliRunner().invoke(main, ["evaluate", "--corruptions", "gaussian_noise", "--severities", "1", "--heads",
                                       "argmax,1nn", "--bootstrap", "20", "--no-report", "--out", "reports/ddp",
                                       "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    errors = pd.read_csv(tmp_path / "reports/ddp/errors.csv")
    assert set(zip(errors["model"], errors["head"])) == {("ce", "argmax"), ("ce", "1nn"), ("gsl", "1nn")}
    assert errors["error"].between(0, 1).all()
