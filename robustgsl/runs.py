"""Run folders: reading and writing a training run's config, environment, metrics, checkpoint and weights.

The files and their fields are defined in robustgsl/schema/run.py; every read and write of a run
folder goes through this module. Writes are atomic (robustgsl/io.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustgsl.errors import InputError
from robustgsl.io import atomic_path, write_json_atomic, write_text_atomic
from robustgsl.schema.run import (
    CHECKPOINT_FILE, CONFIG_FILE, ENVIRONMENT_FILE, LAST_PAIR_FILE, METRICS_FILE, SEED_FOLDER_PREFIX, WEIGHTS_FILE,
    seed_folder,
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def versions() -> dict:
    import numpy
    import sklearn

    from robustgsl import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "robustgsl": __version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment_info(device: torch.device, seed: int, command_line: list[str] | None, extra: dict | None = None) -> dict:
    info = {
        "versions": versions(),
        "device": str(device),
        "device_name": device_name(device),
        "git_sha": git_sha(),
        "seed": seed,
        "command_line": command_line if command_line is not None else sys.argv,
        "hostname": platform.node(),
        "started_at": now_iso(),
    }
    info.update(extra or {})
    return info


def start_environment(run_dir: Path, config, device: torch.device, world_size: int, validation_source: str,
                      command_line: list[str] | None, resumed: bool) -> None:
    """Write environment.json at the start of training; a resumed run keeps its first start and its
    accumulated wall time, and adds this start to ``resumed_at``."""
    environment = environment_info(device, config.seed, command_line, {
        "world_size": world_size,
        # Every rank draws the same data order and its own augmentation stream.
        "augmentation_streams": "epoch_seed(seed, epoch, 1 + rank); data order: epoch_seed(seed, epoch, 0)",
        "sync_batchnorm": config.sync_batchnorm,
        "validation_source": validation_source,
    })
    previous = read_environment(run_dir) if resumed else {}
    if previous:
        environment.update(started_at=previous.get("started_at"), wall_time_s=previous.get("wall_time_s", 0.0),
                           resumed_at=previous.get("resumed_at", []) + [now_iso()])
    write_json_atomic(Path(run_dir) / ENVIRONMENT_FILE, environment)


def finish_environment(run_dir: Path, wall_time_s: float) -> None:
    """Add this process's wall time (to what earlier processes of a resumed run recorded) and the end time."""
    environment = read_environment(run_dir)
    environment["wall_time_s"] = environment.get("wall_time_s", 0.0) + wall_time_s
    environment["finished_at"] = now_iso()
    write_json_atomic(Path(run_dir) / ENVIRONMENT_FILE, environment)


def config_record(config, world_size: int) -> dict:
    """config.json's content: the resolved TrainConfig plus the derived fields of robustgsl.schema.run."""
    from robustgsl.data import dataset_info

    return config.to_dict() | {"num_classes": dataset_info(config.dataset).num_classes, "world_size": world_size}


def write_config(run_dir: Path, record: dict) -> None:
    write_json_atomic(Path(run_dir) / CONFIG_FILE, record)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.jsonl, rewritten whole (one JSON object per epoch, keys in robustgsl.schema.run order)."""
    write_text_atomic(Path(run_dir) / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in rows))


def save_checkpoint(run_dir: Path, epoch: int, model, optimizer, scheduler) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    # Through a file handle: given a path, torch.save names the archive's folder after the (random)
    # temporary file, so the same state would give different bytes.
    with atomic_path(Path(run_dir) / CHECKPOINT_FILE) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def save_weights(run_dir: Path, model) -> None:
    """model.safetensors: the final weights, which mark the run finished."""
    from safetensors.torch import save_file

    with atomic_path(Path(run_dir) / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def write_last_pair(runs_root: Path, pair_dir: Path) -> None:
    """Record the (absolute) folder of the last finished train-both pair, for `evaluate` without arguments."""
    write_text_atomic(Path(runs_root) / LAST_PAIR_FILE, str(Path(pair_dir).resolve()) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing: is this a robustgsl run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None


def read_config(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / CONFIG_FILE)


def read_environment(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / ENVIRONMENT_FILE)


def read_metrics(run_dir: str | Path, problems: list[str] | None = None) -> list[dict]:
    """Per-epoch metrics, sorted by epoch ([] when there are none yet).

    The one reader of metrics.jsonl, with the rule of robustgsl/schema/run.py: a line that is not a JSON
    object with an integer "epoch" is skipped (and described in ``problems``, when given), reading goes
    on, and the last line of an epoch wins.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    by_epoch = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or isinstance(row.get("epoch"), bool) or not isinstance(row.get("epoch"), int):
            if problems is not None:
                problems.append(f"line {number} of {METRICS_FILE} is not valid JSON and was skipped" if row is None
                                else f"line {number} of {METRICS_FILE} has no integer epoch and was skipped")
            continue
        by_epoch[row["epoch"]] = row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / WEIGHTS_FILE).is_file()


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Load a training checkpoint without unpickling arbitrary code."""
    return torch.load(path, map_location=device, weights_only=True)


def build_model_from_config(config: dict):
    from robustgsl.data import dataset_info
    from robustgsl.models import PreActResNet18

    info = dataset_info(config["dataset"])
    if config["loss"] == "gsl":
        return PreActResNet18(
            out_dim=config["embedding_dim"], normalization=config["normalization"], width=config["width"],
            mean=info.mean, std=info.std,
        )
    return PreActResNet18(out_dim=config["num_classes"], normalization=None, width=config["width"],
                          mean=info.mean, std=info.std, bottleneck=config.get("bottleneck"))


def load_model(run_dir: str | Path, device: torch.device | str = "cpu"):
    """The finished model of a run folder, in eval mode, and its config."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} does not exist")
    config = read_config(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(
            f"run folder {run_dir} has no finished model ({WEIGHTS_FILE} missing): finish it by running its "
            f"training command again with --resume (recorded in {run_dir / ENVIRONMENT_FILE})"
        )
    model = build_model_from_config(config)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as error:  # a truncated or overwritten file
        raise InputError(f"{weights} is not a readable safetensors file ({error}); retrain or restore it") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(f"the weights in {weights} do not match the model its config describes: {error}") from None
    return model.to(device).eval(), config


def is_seed_folder(path: str | Path) -> bool:
    """Whether ``path`` is one seed's pair folder of `train-both --seeds` (seed<N>)."""
    name = Path(path).name
    return name.startswith(SEED_FOLDER_PREFIX) and name[len(SEED_FOLDER_PREFIX):].isdigit()


def find_last_pair(runs_root: str | Path = "runs") -> list[Path]:
    """The run folders of the last `train-both` (recorded in <runs_root>/LAST_PAIR): <pair>/ce and <pair>/gsl,
    or, for `train-both --seeds`, those of every <pair>/seed<N> in seed order."""
    marker = Path(runs_root) / LAST_PAIR_FILE
    if not marker.is_file():
        raise InputError(
            f"no run folders given and {marker} does not exist: run `robustgsl train-both` first, "
            f"or pass run folders to evaluate"
        )
    pair = Path(marker.read_text().strip())  # train_both records the resolved (absolute) path
    seeds = sorted(int(path.name[len(SEED_FOLDER_PREFIX):]) for path in pair.glob(f"{SEED_FOLDER_PREFIX}*")
                   if path.is_dir() and is_seed_folder(path))
    if (pair / "ce").is_dir() or not seeds:
        return [pair / "ce", pair / "gsl"]
    return [pair / seed_folder(seed) / loss for seed in seeds for loss in ("ce", "gsl")]
