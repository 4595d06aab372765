"""Evaluation: trained runs x heads x (clean + corrupted test sets) -> error tables, MCE, report.

For every model the training images (no augmentation, eval mode) give the reference embeddings of the
k-NN and SVC heads (cached in the run folder, keyed by the weights' SHA-256). The clean test set and
each corruption file (streamed with ``mmap_mode``, one at a time) go through the model once; every head
classifies the same outputs. Per-image correctness is kept so the paired bootstrap can resample test
images. Tables are written atomically at the end, so an interrupted evaluation leaves no partial CSV.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from robustgsl import runs
from robustgsl.corruptions import CONSTANTS_SOURCE, SEVERITIES, parse_severities, resolve_corruptions
from robustgsl.corruptions.dataset import (
    LABELS_NAME, default_out_dir, read_manifest, verify_corruption_dataset, write_corruption_dataset,
)
from robustgsl.data import load_dataset
from robustgsl.errors import InputError
from robustgsl.heads import DEFAULT_SVC_TRAIN_SIZE, HEADS, KnnHead, make_head, validate_head_name
from robustgsl.io import save_npy_atomic, sha256_file, write_csv_atomic, write_json_atomic, atomic_path
from robustgsl.metrics import (
    CLEAN, bootstrap_intervals, corruption_error_table, robustbench_table, summary_table,
)
from robustgsl.progress import progress
from robustgsl.train import autocast, resolve_device

Log = Callable[[str], None]
# Test images kept for the report's 2-D embedding view, and the corruption shown there.
EMBEDDING_SAMPLE = 2000
EMBEDDING_CORRUPTION = "gaussian_noise"


@dataclass
class EvaluatedModel:
    name: str
    run_dir: Path
    config: dict
    model: torch.nn.Module
    heads: list[str]
    weights_sha256: str
    wall_time_s: float = 0.0
    fitted: dict = field(default_factory=dict)


def default_heads(loss: str) -> list[str]:
    """argmax for CE (its own classifier) plus the embedding heads; GSL has no argmax head."""
    return list(HEADS) if loss == "ce" else [h for h in HEADS if h != "argmax"]


def parse_baseline(spec: str | None) -> tuple[str, str] | None:
    if spec is None:
        return None
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"baseline must be MODEL/HEAD, e.g. ce/argmax, got {spec!r}")
    return parts[0], parts[1]


@torch.no_grad()
def infer(model, images: np.ndarray, device: torch.device, batch_size: int | None = None, quiet: bool = True,
          desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs and head embeddings (float32 numpy) of uint8 (N, 32, 32, 3) images, streamed in batches."""
    batch_size = batch_size or (4096 if device.type == "cuda" else 500)
    outputs, embeddings = [], []
    channels_last = device.type == "cuda"
    for start in progress(range(0, len(images), batch_size), quiet=quiet, desc=desc):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copies out of the mmap
        batch = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, True):
            features = model.features(batch)
        # The head in float32: bf16 logits can tie two close classes and change an argmax.
        out = model.head(features.float())
        embedding = features if model.normalization is None else out
        outputs.append(out.float().cpu().numpy())
        embeddings.append(embedding.float().cpu().numpy())
    return np.concatenate(outputs), np.concatenate(embeddings)


def _reference_embeddings(item: EvaluatedModel, images: np.ndarray, device, quiet: bool, log: Log) -> np.ndarray:
    """Training-set embeddings, cached in the run folder under the weights' hash."""
    cache = _cache_dir(item, device) / "train_embeddings.npy"
    if cache.is_file():
        cached = np.load(cache)
        if cached.shape[0] == len(images):
            return cached
    _, embeddings = infer(item.model, images, device, quiet=quiet, desc=f"{item.name} train embeddings")
    save_npy_atomic(cache, embeddings)
    log(f"[{item.name}] cached training embeddings in {cache}")
    return embeddings


# Outputs and embeddings of the clean and corrupted test sets are cached per checkpoint when the
# embedding is this small (GSL: d = classes); the 512-d CE features would take 1.5 GB per model.
CACHE_MAX_DIM = 64


def _cache_dir(item: EvaluatedModel, device: torch.device) -> Path:
    """Cache folder of one checkpoint on one kind of device (CUDA runs in bf16, the CPU in float32)."""
    return item.run_dir / "cache" / f"{item.weights_sha256[:16]}-{device.type}"


def _open_corruption_file(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable .npy file ({error}); regenerate or re-download it") from None


def _file_digests(folder: Path, names: Sequence[str], manifest: dict | None) -> dict[str, str]:
    """A short content digest per corruption file: from the manifest, else hashed once here."""
    digests = {}
    for name in names:
        entry = (manifest or {}).get("files", {}).get(f"{name}.npy")
        digests[name] = (entry["sha256"] if entry else sha256_file(folder / f"{name}.npy"))[:16]
    return digests


def _cached_infer(item: EvaluatedModel, images: np.ndarray, key: str, device, quiet: bool, desc: str):
    """``infer``, remembered in <run>/cache/<weights hash>/<key>.npz when the embedding is small."""
    path = _cache_dir(item, device) / f"{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if cached["outputs"].shape[0] == len(images):
                return cached["outputs"], cached["embeddings"]
    outputs, embeddings = infer(item.model, images, device, quiet=quiet, desc=desc)
    if embeddings.shape[1] <= CACHE_MAX_DIM:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, outputs=outputs, embeddings=embeddings)
    return outputs, embeddings


def _check_released_folder(folder: Path, names: Sequence[str], n_test: int, test_labels: np.ndarray,
                           num_classes: int) -> list[str]:
    """Problems of a corruption folder in the released layout (no manifest to trust)."""
    problems = []
    labels_path = folder / LABELS_NAME
    if not labels_path.is_file():
        problems.append(f"{labels_path}: missing")
    for name in names:
        path = folder / f"{name}.npy"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        array = _open_corruption_file(path)
        if array.dtype != np.uint8 or array.shape != (5 * n_test, 32, 32, 3):
            problems.append(f"{path}: {array.dtype} {array.shape}, expected uint8 {(5 * n_test, 32, 32, 3)} "
                            f"(5 severities x {n_test} test images)")
    if labels_path.is_file():
        labels = np.load(labels_path)
        if labels.shape != (5 * n_test,):
            problems.append(f"{labels_path}: shape {labels.shape}, expected ({5 * n_test},)")
        elif labels.max() >= num_classes or not np.array_equal(labels.astype(np.int64), np.tile(test_labels, 5)):
            problems.append(f"{labels_path}: labels disagree with the test set's labels (another data set, or "
                            f"another order?)")
    return problems


def prepare_corruptions(dataset: str, test_images, test_labels, num_classes: int, corruption_dir, names,
                        seed: int, workers, quiet: bool, log: Log) -> dict:
    """Find (or generate) the corruption data; return its description for evaluation.json."""
    if corruption_dir is not None:
        folder = Path(corruption_dir)
        if not folder.is_dir():
            raise InputError(f"corruption folder {folder} does not exist")
        manifest = read_manifest(folder)
        if manifest is not None:
            problems = verify_corruption_dataset(folder, names, SEVERITIES, dataset=dataset, n_images=len(test_labels))
            if problems:
                raise InputError(f"corruption folder {folder} cannot be used: " + "; ".join(problems))
            kind = "generated"
        else:
            problems = _check_released_folder(folder, names, len(test_labels), test_labels, num_classes)
            if problems:
                raise InputError(f"corruption folder {folder} cannot be used: " + "; ".join(problems))
            kind = "released"
        log(f"corruption data: {folder} ({kind})")
    else:
        folder = default_out_dir(dataset)
        problems = verify_corruption_dataset(folder, names, SEVERITIES, seed=seed, dataset=dataset,
                                             n_images=len(test_labels))
        if problems:
            log(f"corruption data in {folder} missing or incomplete ({len(problems)} problem(s), e.g. {problems[0]}); "
                f"generating it with robustgsl's CIFAR-10-C generator (seed {seed})")
            write_corruption_dataset(test_images, test_labels, folder, corruptions=names, severities=SEVERITIES,
                                     seed=seed, workers=workers, dataset_name=dataset, quiet=quiet, log=log)
        else:
            log(f"corruption data: {folder} (verified against its manifest)")
        manifest = read_manifest(folder)
        kind = "generated"
    return {
        "kind": kind, "path": str(folder.resolve()), "manifest": manifest,
        "seed": manifest.get("seed") if manifest else None,
        "constants": manifest.get("constants_source", CONSTANTS_SOURCE) if manifest else
        "released files (Hendrycks & Dietterich, 2019)",
    }


def evaluate(
    run_dirs: Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    corruption_dir: str | Path | None = None,
    corruptions: str | Sequence[str] = "all",
    severities: str | Sequence[int] = SEVERITIES,
    heads: Sequence[str] | None = None,
    baseline: str | None = None,
    svc_train_size: int | None = DEFAULT_SVC_TRAIN_SIZE,
    n_bootstrap: int = 1000,
    seed: int = 0,
    corruption_seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
    device: str | None = None,
    workers: int | None = None,
    grid_image_index: int = 0,
    report: bool = True,
    quiet: bool = False,
    log: Log | None = None,
) -> Path:
    """Evaluate runs on the clean and corrupted test sets; write the tables (and the report) into ``out_dir``."""
    log = log or (lambda message: None)
    started = time.time()
    names = resolve_corruptions(corruptions)
    severities = parse_severities(severities)
    baseline_key = parse_baseline(baseline)
    if heads is not None:
        heads = [validate_head_name(h) for h in heads]
    if seed < 0 or corruption_seed < 0:
        raise InputError(f"seeds must be >= 0, got --seed {seed} and --corruption-seed {corruption_seed}")
    if n_bootstrap < 1:
        raise InputError(f"bootstrap resamples must be >= 1, got {n_bootstrap}")
    if svc_train_size is not None and svc_train_size < 2:
        raise InputError(f"SVC training size must be >= 2, got {svc_train_size}")
    run_dirs = [Path(p) for p in run_dirs] if run_dirs else runs.find_last_pair()
    device_obj = resolve_device(device)
    if device_obj.type == "cuda":
        torch.backends.cudnn.benchmark = True

    models = _load_models(run_dirs, heads, device_obj)
    config = models[0].config
    dataset, num_classes = config["dataset"], config["num_classes"]
    available = [(m.name, h) for m in models for h in m.heads]
    if baseline_key is not None and baseline_key not in available:
        raise InputError(f"baseline {baseline} is not among the evaluated rows: "
                         f"{', '.join(f'{m}/{h}' for m, h in available)}")
    if baseline_key is None and ("ce", "argmax") in available:
        baseline_key = ("ce", "argmax")
    if out_dir is None:
        out_dir = Path("reports") / run_dirs[0].resolve().parent.name
    out_dir = Path(out_dir)
    if not 0 <= grid_image_index:
        raise InputError(f"grid image index must be >= 0, got {grid_image_index}")

    train_images, train_labels = load_dataset(dataset, "train", data_dir=data_dir, download=download)
    test_images, test_labels = load_dataset(dataset, "test", data_dir=data_dir, download=download)
    if grid_image_index >= len(test_labels):
        raise InputError(f"grid image index {grid_image_index} is outside the test set ({len(test_labels)} images)")
    source = prepare_corruptions(dataset, test_images, test_labels, num_classes, corruption_dir, names,
                                 corruption_seed, workers, quiet, log)
    folder = Path(source["path"])
    test_digest = hashlib.sha256(np.ascontiguousarray(test_images).data).hexdigest()[:16]
    file_digests = _file_digests(folder, names, source["manifest"])
    n_test = len(test_labels)
    rows = [(CLEAN, 0)] + [(name, s) for name in names for s in severities]
    wrong = {}
    sample = np.sort(np.random.RandomState(seed).permutation(n_test)[:EMBEDDING_SAMPLE])
    embedding_corruption = EMBEDDING_CORRUPTION if EMBEDDING_CORRUPTION in names else names[0]
    embedding_arrays = {"labels": test_labels[sample], "embedding_corruption": np.array(embedding_corruption)}

    for item in models:
        model_started = time.time()
        reference = _reference_embeddings(item, train_images, device_obj, quiet, log)
        shared_index = None  # 1-NN and 10-NN search the same references: build the index once
        for head_name in item.heads:
            head = make_head(head_name, num_classes, device=device_obj, svc_train_size=svc_train_size, seed=seed)
            if isinstance(head, KnnHead) and shared_index is not None:
                head.index = shared_index
            else:
                head.fit(reference, train_labels)
                if isinstance(head, KnnHead):
                    shared_index = head.index
            item.fitted[head_name] = head
        per_head = {h: np.zeros((len(rows), n_test), dtype=bool) for h in item.heads}

        outputs, embeddings = _cached_infer(item, test_images, f"clean-{test_digest}", device_obj, quiet,
                                            f"{item.name} clean")
        _classify(item, outputs, embeddings, test_labels, per_head, 0)
        embedding_arrays[f"{item.name}__clean"] = embeddings[sample]
        log(f"[{item.name}] clean: " + _error_line(per_head, [0]))
        for name in names:
            data = _open_corruption_file(folder / f"{name}.npy")
            row_index = [rows.index((name, s)) for s in severities]
            for severity, row in zip(severities, row_index):
                block = data[(severity - 1) * n_test: severity * n_test]
                outputs, embeddings = _cached_infer(item, block, f"{name}-s{severity}-{file_digests[name]}",
                                                    device_obj, quiet, f"{item.name} {name} s{severity}")
                _classify(item, outputs, embeddings, test_labels, per_head, row)
                if name == embedding_corruption and severity == max(severities):
                    embedding_arrays[f"{item.name}__corrupted"] = embeddings[sample]
            del data
            log(f"[{item.name}] {name}: " + _error_line(per_head, row_index))
        for head_name, array in per_head.items():
            wrong[(item.name, head_name)] = array
        item.wall_time_s = time.time() - model_started

    errors = pd.DataFrame.from_records(
        [{"model": m, "head": h, "corruption": c, "severity": s, "error": float(array[r].mean())}
         for (m, h), array in wrong.items() for r, (c, s) in enumerate(rows)],
        columns=["model", "head", "corruption", "severity", "error"])
    summary, per_corruption = _summaries(errors, wrong, rows, baseline_key, names, n_bootstrap, seed, n_test)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / "errors.csv", errors, index=False)
    write_csv_atomic(out_dir / "summary.csv", summary, index=False)
    if per_corruption is not None:
        write_csv_atomic(out_dir / "corruption_summary.csv", per_corruption, index=False)
    write_csv_atomic(out_dir / "robustbench.csv", robustbench_table(errors))
    with atomic_path(out_dir / "embeddings.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **embedding_arrays)
    _write_example_images(out_dir / "example_images.npz", folder, names, test_images, test_labels, grid_image_index)
    write_json_atomic(out_dir / "evaluation.json", {
        "models": [{"name": m.name, "run_dir": str(m.run_dir.resolve()), "loss": m.config["loss"], "config": m.config,
                    "weights_sha256": m.weights_sha256} for m in models],
        "heads": sorted({h for m in models for h in m.heads}, key=HEADS.index),
        "baseline": "/".join(baseline_key) if baseline_key else None,
        "dataset": dataset, "num_classes": num_classes, "n_test": n_test,
        "corruptions": list(names), "severities": list(severities),
        "corruption_source": source,
        "svc_train_size": svc_train_size,
        "bootstrap": {"n_resamples": n_bootstrap, "seed": seed, "level": 0.95},
        "created_at": runs.now_iso(), "git_sha": runs.git_sha(), "versions": runs.versions(),
        "device": runs.device_name(device_obj),
        "wall_times": {m.name: round(m.wall_time_s, 2) for m in models} | {"total": round(time.time() - started, 2)},
        "grid_image_index": grid_image_index,
    })
    averaged = summary["relative_mce_corruptions"].min() if "relative_mce_corruptions" in summary else len(names)
    if averaged < len(names):
        log(f"note: under some corruptions the baseline's errors average out to its clean error (too few test "
            f"images or too robust a baseline), so their relative CE is undefined and left out of relative MCE: "
            f"averaged over {int(averaged)} of {len(names)} corruptions")
    for record in summary.to_dict("records"):
        mce = "" if pd.isna(record.get("mce")) else f"  MCE {record['mce']:.2f}  relative MCE {record['relative_mce']:.2f}"
        log(f"{record['model']}/{record['head']}: clean error {record['clean_error']:.2%}{mce}")
    if report:
        from robustgsl.report import write_report

        write_report(out_dir, log=log)
    return out_dir


def _load_models(run_dirs: Sequence[Path], heads, device) -> list[EvaluatedModel]:
    models, seen = [], set()
    for run_dir in run_dirs:
        model, config = runs.load_model(run_dir, device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        name = config.get("name") or run_dir.name
        if name in seen:
            name = f"{name}-{run_dir.resolve().parent.name}"
        seen.add(name)
        applicable = default_heads(config["loss"])
        chosen = applicable if heads is None else [h for h in heads if h in applicable]
        if not chosen:
            raise InputError(f"none of the heads {', '.join(heads)} applies to {run_dir} "
                             f"({config['loss']} model; applicable: {', '.join(applicable)})")
        weights_sha = sha256_file(run_dir / runs.WEIGHTS_FILE)
        models.append(EvaluatedModel(name, run_dir, config, model, chosen, weights_sha))
    first = models[0].config
    for item in models[1:]:
        if (item.config["dataset"], item.config["num_classes"]) != (first["dataset"], first["num_classes"]):
            raise InputError(
                f"{item.run_dir} was trained on {item.config['dataset']} ({item.config['num_classes']} classes) but "
                f"{models[0].run_dir} on {first['dataset']} ({first['num_classes']} classes); evaluate them separately")
    return models


def _classify(item: EvaluatedModel, outputs, embeddings, labels, per_head, row: int) -> None:
    for head_name, head in item.fitted.items():
        predictions = head.predict(outputs if head_name == "argmax" else embeddings)
        per_head[head_name][row] = predictions != labels


def _error_line(per_head: dict, rows: list[int]) -> str:
    return "  ".join(f"{h} " + " ".join(f"{array[r].mean():.1%}" for r in rows) for h, array in per_head.items())


def _summaries(errors, wrong, rows, baseline_key, names, n_bootstrap, seed, n_test):
    if baseline_key is None:
        # No baseline: clean and mean corruption errors only; the report says why MCE is missing.
        corrupted = errors[errors["corruption"] != CLEAN].groupby(["model", "head"], sort=False)["error"].mean()
        clean = errors[errors["corruption"] == CLEAN].set_index(["model", "head"])["error"]
        summary = pd.DataFrame({"clean_error": clean, "mean_corruption_error": corrupted}).reset_index()
        summary.insert(2, "baseline", None)
        for column in ("mce", "relative_mce"):
            summary[column] = np.nan
        summary["n_test"] = n_test
        return summary, None
    summary = summary_table(errors, baseline_key, names)
    intervals = bootstrap_intervals(wrong, rows, baseline_key, n_resamples=n_bootstrap, seed=seed, corruptions=names)
    summary = summary.merge(intervals, on=["model", "head"], how="left")
    order = ["model", "head", "baseline", "clean_error", "clean_error_low", "clean_error_high",
             "mean_corruption_error", "mce", "mce_low", "mce_high", "relative_mce", "relative_mce_low",
             "relative_mce_high", "clean_error_diff_low", "clean_error_diff_high", "mce_corruptions",
             "relative_mce_corruptions"]
    summary = summary[order]
    summary["n_test"] = n_test
    return summary, corruption_error_table(errors, baseline_key, names)


def _write_example_images(path: Path, folder: Path, names, test_images, test_labels, index: int) -> None:
    n_test = len(test_labels)
    corrupted = np.stack([
        np.stack([np.load(folder / f"{name}.npy", mmap_mode="r")[(s - 1) * n_test + index] for s in SEVERITIES])
        for name in names])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, clean=test_images[index], corrupted=corrupted, corruptions=np.array(list(names)),
                     label=np.int64(test_labels[index]), index=np.int64(index))
