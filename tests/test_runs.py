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


# --- damaged checkpoints and file modes ------------------------------------------------------------------

import io  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402

import pytest  # noqa: E402

from robustgsl.errors import InputError  # noqa: E402


class Payload:
    """An arbitrary class: a checkpoint holding it must be refused, not unpickled."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > pwned",))


def _good_checkpoint(run_dir):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runs.save_checkpoint(run_dir, 1, model, optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [2]))
    return (run_dir / "checkpoint.pt").read_bytes()


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("damage,needle", [
    (lambda good: good[: len(good) // 2], "damaged or not a torch checkpoint"),
    (lambda good: b"\x80\x02garbage" + bytes(range(256)) * 4, "damaged, or holds objects other than tensors"),
    (lambda good: pickle.dumps(Payload()), "damaged, or holds objects other than tensors"),
    (lambda good: _torch_bytes({"weights": torch.ones(2)}), "no epoch, model, optimizer, scheduler"),
    (lambda good: _torch_bytes({"epoch": "three", "model": {}, "optimizer": {}, "scheduler": {}}), "epoch is 'three'"),
    (lambda good: _torch_bytes([1, 2, 3]), "it holds a list, not a dict"),
    (lambda good: b"", "is empty"),
])
def test_a_damaged_checkpoint_is_refused_with_a_message_naming_it(tmp_path, monkeypatch, damage, needle):
    monkeypatch.chdir(tmp_path)
    good = _good_checkpoint(tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(damage(good))
    with pytest.raises(InputError) as raised:
        runs.load_checkpoint(path)
    message = str(raised.value)
    assert str(path) in message and needle in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert not (tmp_path / "pwned").exists()


def test_final_weights_are_readable_by_the_group_like_every_other_file(tmp_path):
    umask = os.umask(0o022)
    try:
        runs.save_weights(tmp_path, torch.nn.Linear(3, 2))
        runs.write_config(tmp_path, {"loss": "ce"})
    finally:
        os.umask(umask)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644
