"""Run folders: where a training run keeps its config, metrics, checkpoint and final weights.

    <run>/config.json        resolved TrainConfig plus num_classes
    <run>/environment.json   versions, device, git SHA, seed, command line, times
    <run>/metrics.jsonl      one JSON object per finished epoch
    <run>/checkpoint.pt      resumable state (plain tensors and dicts: loads with weights_only=True)
    <run>/model.safetensors  final weights; its presence means the run finished
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

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"
# Written by train-both in the runs root: the path of the last finished pair, for `evaluate`.
LAST_PAIR_FILE = "LAST_PAIR"


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


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is missing: is this a robustgsl run folder?") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None


def read_config(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / CONFIG_FILE)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Per-epoch metrics; a torn last line (a run killed mid-write) is ignored."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


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
                          mean=info.mean, std=info.std)


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


def find_last_pair(runs_root: str | Path = "runs") -> list[Path]:
    """The run folders of the last `train-both` (recorded in <runs_root>/LAST_PAIR)."""
    marker = Path(runs_root) / LAST_PAIR_FILE
    if not marker.is_file():
        raise InputError(
            f"no run folders given and {marker} does not exist: run `robustgsl train-both` first, "
            f"or pass run folders to evaluate"
        )
    pair = Path(marker.read_text().strip())  # train_both records the resolved (absolute) path
    return [pair / "ce", pair / "gsl"]
