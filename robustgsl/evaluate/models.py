"""The models an evaluation scores: robustgsl's run folders and models robustgsl did not train.

Runs that differ only in their seed become the seeds of one model (robustgsl/seeds.py); an external model
(robustgsl/external.py) has no config and is a model of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from robustgsl import runs, seeds
from robustgsl.device import infer
from robustgsl.errors import InputError
from robustgsl.external import ExternalModel, ExternalSpec, load_external_model
from robustgsl.io import sha256_file
from robustgsl.seeds import SeedRun
from robustgsl.vocabulary import EMBEDDING_HEADS, HEADS

@dataclass
class EvaluatedModel:
    """One model to score: a robustgsl run, or a model robustgsl did not train."""

    name: str
    model: torch.nn.Module  # forward_with_embedding(x) -> (outputs, embedding)
    heads: list[str]
    entry: dict  # its entry in evaluation.json's "models" (robustgsl/schema/evaluation.py MODEL_FIELDS)
    run_dir: Path | None = None  # a run's folder (and its cache); None for an external model
    # bf16 autocast on CUDA for robustgsl's own models (their head runs in float32); external models run
    # in float32, as RobustBench evaluates them: their numerics under bf16 are unknown.
    amp: bool = True
    wall_time_s: float = 0.0
    fitted: dict = field(default_factory=dict)
    cache_off: bool = False  # set when its cache folder cannot be written (a read-only run folder)
    seed_run: SeedRun | None = None  # which model (seed group) and seed the run is; set by group_seeds

    @property
    def weights_sha256(self) -> str:
        return self.entry["weights_sha256"]

    @property
    def config(self) -> dict | None:
        """A run's config.json; None for an external model."""
        return self.entry.get("config")

    @property
    def group(self) -> str:
        return self.seed_run.model if self.seed_run else self.name


def default_heads(loss: str) -> list[str]:
    """argmax for CE (its own classifier) plus the embedding heads; GSL has no argmax head."""
    return list(HEADS) if loss == "ce" else list(EMBEDDING_HEADS)


def load_models(run_dirs: Sequence[Path], external: Sequence[ExternalSpec | ExternalModel],
                heads: Sequence[str] | None, device: torch.device) -> list[EvaluatedModel]:
    """Run folders, then external models, with unique names, grouped into seeds of one model."""
    models = load_run_models(run_dirs, heads, device) + _load_external_models(external, heads, device)
    _check_unique_names(models)
    return group_seeds(models)


def load_run_models(run_dirs: Sequence[Path], heads: Sequence[str] | None, device) -> list[EvaluatedModel]:
    models, seen = [], set()
    for run_dir in run_dirs:
        model, config = runs.load_model(run_dir, device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        name = config.get("name") or run_dir.name
        if name in seen:
            name = f"{name}-{run_dir.resolve().parent.name}"
        seen.add(name)
        chosen = _chosen_heads(default_heads(config["loss"]), heads, f"{run_dir} ({config['loss']} model)")
        entry = {
            "name": name, "kind": "run", "run_dir": str(run_dir.resolve()), "loss": config["loss"], "config": config,
            "weights_sha256": sha256_file(run_dir / runs.WEIGHTS_FILE), "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "embedding": "penultimate features" if config["loss"] == "ce" else "outputs",
        }
        models.append(EvaluatedModel(name, model, chosen, entry, run_dir=run_dir))
    return models


def _load_external_models(external: Sequence[ExternalSpec | ExternalModel], heads, device) -> list[EvaluatedModel]:
    models = []
    for item in external:
        model = item.to(device).eval() if isinstance(item, ExternalModel) else load_external_model(item, device)
        applicable = ["argmax", *(EMBEDDING_HEADS if model.has_embedding else ())]
        what = f"model {model.name!r}" + ("" if model.has_embedding else " (no embedding: name a --features layer)")
        entry = {"name": model.name, "kind": "external", **{key: value for key, value in model.describe().items()
                                                             if key != "name"}}
        models.append(EvaluatedModel(model.name, model, _chosen_heads(applicable, heads, what), entry, amp=False))
    return models


def _chosen_heads(applicable: list[str], heads, what: str) -> list[str]:
    chosen = applicable if heads is None else [h for h in heads if h in applicable]
    if not chosen:
        raise InputError(f"none of the heads {', '.join(heads)} applies to {what} (applicable: {', '.join(applicable)})")
    return chosen


def _check_unique_names(models: list[EvaluatedModel]) -> None:
    seen = set()
    for item in models:
        if item.name in seen:
            raise InputError(f"two models are called {item.name!r}; name them apart (--model-name NAME)")
        seen.add(item.name)


def group_seeds(models: list[EvaluatedModel]) -> list[EvaluatedModel]:
    """Runs that differ only in their seed become the seeds of one model (robustgsl/seeds.py); an external
    model, which has no config, is a model of its own."""
    grouped = seeds.group_runs([item.name for item in models], [item.config for item in models])
    for item, seed_run in zip(models, grouped):
        item.name, item.seed_run = seed_run.run, seed_run
    return models


def pair_name(run_dir: Path) -> str:
    """Name of the default evaluation folder: the pair's folder (for a seed<N> folder, the one above it)."""
    pair = run_dir.resolve().parent
    return pair.parent.name if runs.is_seed_folder(pair) else pair.name


def check_outputs(models: list[EvaluatedModel], images: np.ndarray, dataset: str, num_classes: int, device) -> None:
    """Refuse, before any long work, an external model that fails on test images or gives the wrong outputs."""
    for item in models:
        if item.run_dir is not None:
            continue
        try:
            outputs, _ = infer(item.model, images, device, amp=False)
        except Exception as error:  # the user's model: any failure is bad input
            raise InputError(f"model {item.name!r} failed on a batch of {len(images)} test images (3x32x32, values "
                             f"in [0, 1]): {type(error).__name__}: {error}") from error
        if outputs.ndim != 2 or outputs.shape[1] != num_classes:
            raise InputError(f"model {item.name!r} outputs shape {tuple(outputs.shape)} for {len(images)} images, but "
                             f"{dataset} has {num_classes} classes: its factory must return a model with "
                             f"{num_classes} outputs")
