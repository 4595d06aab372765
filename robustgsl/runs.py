"""Run folders: reading and writing a training run's config, environment, metrics, checkpoint and weights.

The files and their fields are defined in robustgsl/schema/run.py; every read and write of a run
folder goes through this module. Writes are atomic (robustgsl/io.py).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustgsl import __version__
from robustgsl.config import paper_deviations
from robustgsl.errors import InputError
from robustgsl.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from robustgsl.models import PreActResNet18
from robustgsl.schema.run import (
    CHECKPOINT_FILE, CHECKPOINT_KEYS, CONFIG_FILE, ENVIRONMENT_FILE, LAST_PAIR_FILE, METRICS_FILE, SEED_FOLDER_PREFIX,
    WEIGHTS_FILE, seed_folder,
)
from robustgsl.vocabulary import dataset_info


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
                      command_line: list[str] | None, previous: dict | None) -> None:
    """Write environment.json at the start of training. A resumed run (``previous``: its environment.json,
    whether or not it had reached its first checkpoint) keeps its first start and its accumulated wall
    time, and adds this start to ``resumed_at``."""
    environment = environment_info(device, config.seed, command_line, {
        "world_size": world_size,
        # Every rank draws the same data order and its own augmentation stream.
        "augmentation_streams": "epoch_seed(seed, epoch, 1 + rank); data order: epoch_seed(seed, epoch, 0)",
        "sync_batchnorm": config.sync_batchnorm,
        "validation_source": validation_source,
    })
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


def config_record(config, world_size: int, image_folder: dict | None = None) -> dict:
    """config.json's content: the resolved TrainConfig plus the derived fields of robustgsl.schema.run
    (``image_folder``: the folder's record, for dataset imagefolder)."""

    num_classes = dataset_info(config.dataset, image_folder).num_classes
    record = config.to_dict() | {"num_classes": num_classes, "world_size": world_size,
                                 "paper_deviations": paper_deviations(config, num_classes)}
    return record | ({"image_folder": image_folder} if image_folder is not None else {})


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
    # Into memory, then written by robustgsl.io: given a path, torch.save names the archive's folder after
    # the (random) temporary file, so the same state would give different bytes; and a full disk then
    # raises an OSError naming the file, not a RuntimeError from torch's zip writer.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(Path(run_dir) / CHECKPOINT_FILE, buffer.getvalue())


def save_weights(run_dir: Path, model) -> None:
    """model.safetensors: the final weights, which mark the run finished."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(Path(run_dir) / WEIGHTS_FILE, save(tensors))


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
    """Load a training checkpoint without unpickling arbitrary code (``weights_only=True``).

    InputError, naming the file, for an empty, truncated or garbage file, one holding other objects than
    tensors and plain values, or one without the keys of robustgsl/schema/run.py.
    """
    path = Path(path)
    way_out = ("restore it from a copy, or delete it to train the run again from epoch 1 (with --resume, "
               "same options)")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (not a checkpoint); {way_out}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, which would run whatever code the file holds.
        raise InputError(f"{path} is damaged, or holds objects other than tensors and plain values (not "
                         f"loaded: unpickling them could run arbitrary code); {way_out}") from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} is damaged or not a torch checkpoint ({reason[:200]}); {way_out}") from None
    problem = checkpoint_problem(state)
    if problem:
        raise InputError(f"{path} is not a robustgsl training checkpoint ({problem}); {way_out}")
    return state


def checkpoint_problem(state) -> str | None:
    """Why ``state`` is not a checkpoint with the keys and kinds of robustgsl/schema/run.py, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        return f"no {', '.join(missing)}; it has {', '.join(map(str, state)) or 'no keys'}"
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch is {epoch!r}, not an epoch number"
    for key in ("model", "optimizer", "scheduler"):
        if not isinstance(state[key], dict):
            return f"{key} is a {type(state[key]).__name__}, not a state dict"
    if not all(isinstance(value, torch.Tensor) for value in state["model"].values()):
        return "model holds values that are not tensors"
    return None


def build_model_from_config(config: dict):

    info = dataset_info(config["dataset"], config.get("image_folder"))
    # Runs written before final_bn_relu existed have kuangliu's layout.
    common = dict(width=config["width"], mean=info.mean, std=info.std, final_bn_relu=config.get("final_bn_relu", False))
    if config["loss"] == "gsl":
        return PreActResNet18(out_dim=config["embedding_dim"], normalization=config["normalization"], **common)
    return PreActResNet18(out_dim=config["num_classes"], normalization=None, bottleneck=config.get("bottleneck"),
                          **common)


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
