"""Run folders: the one reader of metrics.jsonl and the writers it reads back."""

import dataclasses

import torch

from robustgsl import runs
from robustgsl.schema.run import METRIC_FIELDS, EpochMetrics


def test_metrics_round_trip_in_schema_order(tmp_path):
    rows = [dataclasses.asdict(EpochMetrics(epoch=e, loss=1.0 / e, lr=0.1, train_error=0.5, val_error=0.25,
                                            epoch_time_s=2.0)) for e in (1, 2)]
    runs.write_metrics(tmp_path, rows)
    assert runs.read_metrics(tmp_path) == rows
    first = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert [first.index(f'"{name}"') for name in METRIC_FIELDS] == sorted(first.index(f'"{n}"') for n in METRIC_FIELDS)


def test_bad_lines_are_skipped_and_reported_and_the_last_row_of_an_epoch_wins(tmp_path):
    lines = ['{"epoch": 1, "loss": 1.0}', '{"epoch": 2, "lo', '[1, 2]', '{"epoch": 3, "loss": 0.8}',
             '', '{"epoch": 1, "loss": 0.5}', '{"loss": 0.1}', '{"epoch": 4, "loss": 0.7']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    problems = []
    assert runs.read_metrics(tmp_path, problems) == [{"epoch": 1, "loss": 0.5}, {"epoch": 3, "loss": 0.8}]
    assert problems == [
        "line 2 of metrics.jsonl is not valid JSON and was skipped",
        "line 3 of metrics.jsonl has no integer epoch and was skipped",
        "line 7 of metrics.jsonl has no integer epoch and was skipped",
        "line 8 of metrics.jsonl is not valid JSON and was skipped",
    ]
    assert runs.read_metrics(tmp_path / "no-such-run") == []


def test_the_same_training_state_gives_the_same_checkpoint_bytes(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2])
    for name in ("a", "b"):
        runs.save_checkpoint(tmp_path / name, 3, model, optimizer, scheduler)
    first = (tmp_path / "a" / "checkpoint.pt").read_bytes()
    assert first == (tmp_path / "b" / "checkpoint.pt").read_bytes()
    state = runs.load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert state["epoch"] == 3 and torch.equal(state["model"]["weight"], model.weight.detach())
