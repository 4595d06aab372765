"""Evaluation: trained runs x heads x (clean + corrupted test sets) -> error tables, MCE, report.

``evaluate`` reads as its steps: load (models, data, corruption files) -> fit heads -> score -> summarise
-> write. For every model the training images (no augmentation, eval mode) give the reference
embeddings of the k-NN and SVC heads (cached in the run folder, keyed by the weights' SHA-256). The clean
test set and each corruption file (streamed with ``mmap_mode``, one at a time) go through the model
once; every head classifies the same outputs. Per-image correctness is kept so the paired bootstrap can
resample test images. Tables are written atomically at the end, so an interrupted evaluation leaves no
partial CSV. The files of an evaluation folder are defined in robustgsl/schema/evaluation.py.
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
from robustgsl.config import EvalConfig, parse_baseline, validate_eval_config
from robustgsl.corruptions import CONSTANTS_SOURCE, SEVERITIES, parse_severities, resolve_corruptions
from robustgsl.corruptions.dataset import (
    default_out_dir, read_manifest, verify_corruption_dataset, write_corruption_dataset,
)
from robustgsl.data import load_dataset
from robustgsl.device import infer, resolve_device
from robustgsl.errors import InputError
from robustgsl.heads import HEADS, KnnHead, make_head
from robustgsl.io import save_npy_atomic, save_npz_atomic, sha256_file, write_csv_atomic, write_json_atomic
from robustgsl.metrics import (
    CLEAN, bootstrap_intervals, corruption_error_table, robustbench_summary_table, robustbench_table, summary_table,
)
from robustgsl.schema import corruption as corruption_schema
from robustgsl.schema import names as column_names
from robustgsl.schema.evaluation import (
    CORRUPTION_SUMMARY_FILE, EMBEDDINGS_FILE, ERRORS_COLUMNS, ERRORS_FILE, EXAMPLES_FILE, RECORD_FILE,
    ROBUSTBENCH_FILE, ROBUSTBENCH_SUMMARY_FILE, SUMMARY_FILE, embedding_array, summary_columns,
)
from robustgsl.schema.run import CACHE_DIR

Log = Callable[[str], None]
# Test images kept for the report's 2-D embedding view, and the corruption shown there.
EMBEDDING_SAMPLE = 2000
EMBEDDING_CORRUPTION = "gaussian_noise"
BOOTSTRAP_LEVEL = 0.95
# Outputs and embeddings of the clean and corrupted test sets are cached per checkpoint when the
# embedding is this small (GSL: d = classes); the 512-d CE features would take 1.5 GB per model.
CACHE_MAX_DIM = 64


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


@dataclass
class Tables:
    """The CSV tables of an evaluation folder (robustgsl/schema/evaluation.py)."""

    errors: pd.DataFrame
    summary: pd.DataFrame
    corruption_summary: pd.DataFrame
    robustbench: pd.DataFrame
    robustbench_summary: pd.DataFrame


def default_heads(loss: str) -> list[str]:
    """argmax for CE (its own classifier) plus the embedding heads; GSL has no argmax head."""
    return list(HEADS) if loss == "ce" else [h for h in HEADS if h != "argmax"]


def evaluate(run_dirs: Sequence[str | Path] | None = None, config: EvalConfig | None = None,
             log: Log | None = None) -> Path:
    """Evaluate runs (default: the last train-both pair) on the clean and corrupted test sets; write the
    tables (and the report) into the evaluation folder, and return it."""
    config = config or EvalConfig()
    validate_eval_config(config)
    log = log or (lambda message: None)
    started = time.time()
    inputs = _load(run_dirs, config, log)
    wrong: dict[tuple[str, str], np.ndarray] = {}
    embeddings = {"labels": inputs.test_labels[inputs.sample],
                  "embedding_corruption": np.array(inputs.embedding_corruption)}
    for item in inputs.models:
        model_started = time.time()
        _fit_heads(item, inputs, config, log)
        wrong.update(_score(item, inputs, config, embeddings, log))
        item.wall_time_s = time.time() - model_started
    tables = summarise(wrong, inputs.rows, inputs.baseline, inputs.corruptions, config.n_bootstrap, config.seed)
    _write(inputs, config, tables, embeddings, started)
    _log_summary(tables.summary, inputs.corruptions, log)
    if config.report:
        from robustgsl.report import write_report

        write_report(inputs.out_dir, log=log)
    return inputs.out_dir


# --- load -----------------------------------------------------------------------------------------

@dataclass
class _Inputs:
    """What scoring reads: the models, the data, the corruption files, the rows to fill."""

    models: list[EvaluatedModel]
    device: torch.device
    num_classes: int
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: dict  # evaluation.json's corruption_source
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    rows: list[tuple[str, int]]  # (corruption, severity) per row of the per-image arrays; (CLEAN, 0) first
    baseline: tuple[str, str] | None
    out_dir: Path
    file_digests: dict[str, str]  # short content digest per corruption file (cache keys)
    test_digest: str
    sample: np.ndarray  # test images of the embedding view
    embedding_corruption: str

    @property
    def folder(self) -> Path:
        return Path(self.source["path"])

    @property
    def dataset(self) -> str:
        return self.models[0].config["dataset"]


def _load(run_dirs, config: EvalConfig, log: Log) -> _Inputs:
    names = resolve_corruptions(config.corruptions)
    severities = parse_severities(config.severities)
    run_dirs = [Path(p) for p in run_dirs] if run_dirs else runs.find_last_pair()
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = _load_models(run_dirs, config.heads, device)
    dataset, num_classes = models[0].config["dataset"], models[0].config["num_classes"]
    baseline = _choose_baseline(models, config.baseline)
    out_dir = Path(config.out_dir) if config.out_dir is not None else Path("reports") / run_dirs[0].resolve().parent.name

    train_images, train_labels = load_dataset(dataset, "train", data_dir=config.data_dir, download=config.download)
    test_images, test_labels = load_dataset(dataset, "test", data_dir=config.data_dir, download=config.download)
    if config.grid_image_index >= len(test_labels):
        raise InputError(f"grid image index {config.grid_image_index} is outside the test set "
                         f"({len(test_labels)} images)")
    source = prepare_corruptions(dataset, test_images, test_labels, num_classes, config.corruption_dir, names,
                                 config.corruption_seed, config.workers, config.quiet, log)
    n_test = len(test_labels)
    return _Inputs(
        models=models, device=device, num_classes=num_classes, train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, source=source, corruptions=names, severities=severities,
        rows=[(CLEAN, 0)] + [(name, s) for name in names for s in severities], baseline=baseline, out_dir=out_dir,
        file_digests=_file_digests(Path(source["path"]), names, source["manifest"]),
        test_digest=hashlib.sha256(np.ascontiguousarray(test_images).data).hexdigest()[:16],
        sample=np.sort(np.random.RandomState(config.seed).permutation(n_test)[:EMBEDDING_SAMPLE]),
        embedding_corruption=EMBEDDING_CORRUPTION if EMBEDDING_CORRUPTION in names else names[0],
    )


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


def _choose_baseline(models: list[EvaluatedModel], spec: str | None) -> tuple[str, str] | None:
    """The baseline asked for (it must be evaluated), else ce/argmax when evaluated, else none."""
    baseline = parse_baseline(spec)
    available = [(m.name, h) for m in models for h in m.heads]
    if baseline is not None and baseline not in available:
        raise InputError(f"baseline {spec} is not among the evaluated rows: "
                         f"{', '.join(f'{m}/{h}' for m, h in available)}")
    if baseline is None and ("ce", "argmax") in available:
        baseline = ("ce", "argmax")
    return baseline


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


def _check_released_folder(folder: Path, names: Sequence[str], n_test: int, test_labels: np.ndarray,
                           num_classes: int) -> list[str]:
    """Problems of a corruption folder in the released layout (no manifest to trust)."""
    problems = []
    labels_path = folder / corruption_schema.LABELS_FILE
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




# --- fit heads, score -----------------------------------------------------------------------------

def _cache_dir(item: EvaluatedModel, device: torch.device) -> Path:
    """Cache folder of one checkpoint on one kind of device (CUDA runs in bf16, the CPU in float32)."""
    return item.run_dir / CACHE_DIR / f"{item.weights_sha256[:16]}-{device.type}"


def _infer(item: EvaluatedModel, images: np.ndarray, device, quiet: bool, desc: str):
    outputs, embeddings = infer(item.model, images, device, quiet=quiet, desc=desc)
    return outputs.numpy(), embeddings.numpy()


def _reference_embeddings(item: EvaluatedModel, images: np.ndarray, device, quiet: bool, log: Log) -> np.ndarray:
    """Training-set embeddings, cached in the run folder under the weights' hash."""
    cache = _cache_dir(item, device) / "train_embeddings.npy"
    if cache.is_file():
        cached = np.load(cache)
        if cached.shape[0] == len(images):
            return cached
    _, embeddings = _infer(item, images, device, quiet, f"{item.name} train embeddings")
    save_npy_atomic(cache, embeddings)
    log(f"[{item.name}] cached training embeddings in {cache}")
    return embeddings


def _cached_infer(item: EvaluatedModel, images: np.ndarray, key: str, device, quiet: bool, desc: str):
    """Outputs and embeddings, remembered in <run>/cache/<weights hash>/<key>.npz when the embedding is small."""
    path = _cache_dir(item, device) / f"{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if cached["outputs"].shape[0] == len(images):
                return cached["outputs"], cached["embeddings"]
    outputs, embeddings = _infer(item, images, device, quiet, desc)
    if embeddings.shape[1] <= CACHE_MAX_DIM:
        save_npz_atomic(path, {"outputs": outputs, "embeddings": embeddings})
    return outputs, embeddings


def _fit_heads(item: EvaluatedModel, inputs: _Inputs, config: EvalConfig, log: Log) -> None:
    reference = _reference_embeddings(item, inputs.train_images, inputs.device, config.quiet, log)
    shared_index = None  # 1-NN and 10-NN search the same references: build the index once
    for head_name in item.heads:
        head = make_head(head_name, inputs.num_classes, device=inputs.device, svc_train_size=config.svc_train_size,
                         seed=config.seed)
        if isinstance(head, KnnHead) and shared_index is not None:
            head.index = shared_index
        else:
            head.fit(reference, inputs.train_labels)
            if isinstance(head, KnnHead):
                shared_index = head.index
        item.fitted[head_name] = head


def _score(item: EvaluatedModel, inputs: _Inputs, config: EvalConfig, embeddings: dict,
           log: Log) -> dict[tuple[str, str], np.ndarray]:
    """Per head, whether each test image is misclassified under each row; adds the model's embedding view."""
    n_test, device, quiet = len(inputs.test_labels), inputs.device, config.quiet
    per_head = {h: np.zeros((len(inputs.rows), n_test), dtype=bool) for h in item.heads}
    outputs, embedded = _cached_infer(item, inputs.test_images, f"clean-{inputs.test_digest}", device, quiet,
                                      f"{item.name} clean")
    _classify(item, outputs, embedded, inputs.test_labels, per_head, 0)
    embeddings[embedding_array(item.name, "clean")] = embedded[inputs.sample]
    log(f"[{item.name}] clean: " + _error_line(per_head, [0]))
    for name in inputs.corruptions:
        data = _open_corruption_file(inputs.folder / f"{name}.npy")
        row_index = [inputs.rows.index((name, s)) for s in inputs.severities]
        for severity, row in zip(inputs.severities, row_index):
            block = data[(severity - 1) * n_test: severity * n_test]
            outputs, embedded = _cached_infer(item, block, f"{name}-s{severity}-{inputs.file_digests[name]}",
                                              device, quiet, f"{item.name} {name} s{severity}")
            _classify(item, outputs, embedded, inputs.test_labels, per_head, row)
            if name == inputs.embedding_corruption and severity == max(inputs.severities):
                embeddings[embedding_array(item.name, "corrupted")] = embedded[inputs.sample]
        del data
        log(f"[{item.name}] {name}: " + _error_line(per_head, row_index))
    return {(item.name, head_name): array for head_name, array in per_head.items()}


def _classify(item: EvaluatedModel, outputs, embeddings, labels, per_head, row: int) -> None:
    for head_name, head in item.fitted.items():
        predictions = head.predict(outputs if head_name == "argmax" else embeddings)
        per_head[head_name][row] = predictions != labels


def _error_line(per_head: dict, rows: list[int]) -> str:
    return "  ".join(f"{h} " + " ".join(f"{array[r].mean():.1%}" for r in rows) for h, array in per_head.items())


# --- summarise ------------------------------------------------------------------------------------

def error_table(wrong: dict[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]]) -> pd.DataFrame:
    """errors.csv: the error rate of every (model, head) under every (corruption, severity) row."""
    return pd.DataFrame.from_records(
        [{"model": m, "head": h, "corruption": c, "severity": s, "error": float(array[r].mean())}
         for (m, h), array in wrong.items() for r, (c, s) in enumerate(rows)],
        columns=column_names(ERRORS_COLUMNS))


def summarise(wrong: dict[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]],
              baseline: tuple[str, str] | None, corruptions: Sequence[str], n_bootstrap: int, seed: int) -> Tables:
    """The tables of an evaluation from per-image correctness: ``wrong[(model, head)]`` is a boolean
    (len(rows), n_test) array, ``rows[r]`` its (corruption, severity), (CLEAN, 0) included."""
    n_test = next(iter(wrong.values())).shape[1]
    errors = error_table(wrong, rows)
    if baseline is None:
        # No baseline: clean and mean corruption errors only; the report says why MCE is missing.
        corrupted = errors[errors["corruption"] != CLEAN].groupby(["model", "head"], sort=False)["error"].mean()
        clean = errors[errors["corruption"] == CLEAN].set_index(["model", "head"])["error"]
        summary = pd.DataFrame({"clean_error": clean, "mean_corruption_error": corrupted}).reset_index()
        summary.insert(2, "baseline", None)
        for column in ("mce", "relative_mce"):
            summary[column] = np.nan
    else:
        summary = summary_table(errors, baseline, corruptions)
        intervals = bootstrap_intervals(wrong, rows, baseline, n_resamples=n_bootstrap, seed=seed,
                                        level=BOOTSTRAP_LEVEL, corruptions=corruptions)
        summary = summary.merge(intervals, on=["model", "head"], how="left")
    summary["n_test"] = n_test
    return Tables(errors=errors, summary=summary[list(summary_columns(baseline is not None))],
                  corruption_summary=corruption_error_table(errors, baseline, corruptions),
                  robustbench=robustbench_table(errors), robustbench_summary=robustbench_summary_table(errors))


# --- write ----------------------------------------------------------------------------------------

def write_tables(out_dir: Path, tables: Tables) -> None:
    """The CSV files, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / ERRORS_FILE, tables.errors, index=False)
    write_csv_atomic(out_dir / SUMMARY_FILE, tables.summary, index=False)
    write_csv_atomic(out_dir / CORRUPTION_SUMMARY_FILE, tables.corruption_summary, index=False)
    write_csv_atomic(out_dir / ROBUSTBENCH_FILE, tables.robustbench)
    write_csv_atomic(out_dir / ROBUSTBENCH_SUMMARY_FILE, tables.robustbench_summary, index=False)


def example_arrays(folder: Path, names, test_images, test_labels, index: int) -> dict[str, np.ndarray]:
    """example_images.npz: test image ``index``, clean and under every corruption and severity."""
    n_test = len(test_labels)
    corrupted = np.stack([
        np.stack([np.load(folder / f"{name}.npy", mmap_mode="r")[(s - 1) * n_test + index] for s in SEVERITIES])
        for name in names])
    return {"clean": test_images[index], "corrupted": corrupted, "corruptions": np.array(list(names)),
            "label": np.int64(test_labels[index]), "index": np.int64(index)}


def _write(inputs: _Inputs, config: EvalConfig, tables: Tables, embeddings: dict, started: float) -> None:
    out_dir = inputs.out_dir
    write_tables(out_dir, tables)
    save_npz_atomic(out_dir / EMBEDDINGS_FILE, embeddings)
    save_npz_atomic(out_dir / EXAMPLES_FILE, example_arrays(inputs.folder, inputs.corruptions, inputs.test_images,
                                                            inputs.test_labels, config.grid_image_index))
    models = inputs.models
    write_json_atomic(out_dir / RECORD_FILE, {
        "models": [{"name": m.name, "run_dir": str(m.run_dir.resolve()), "loss": m.config["loss"], "config": m.config,
                    "weights_sha256": m.weights_sha256} for m in models],
        "heads": sorted({h for m in models for h in m.heads}, key=HEADS.index),
        "baseline": "/".join(inputs.baseline) if inputs.baseline else None,
        "dataset": inputs.dataset, "num_classes": inputs.num_classes, "n_test": len(inputs.test_labels),
        "corruptions": list(inputs.corruptions), "severities": list(inputs.severities),
        "corruption_source": inputs.source,
        "svc_train_size": config.svc_train_size,
        "bootstrap": {"n_resamples": config.n_bootstrap, "seed": config.seed, "level": BOOTSTRAP_LEVEL},
        "created_at": runs.now_iso(), "git_sha": runs.git_sha(), "versions": runs.versions(),
        "device": runs.device_name(inputs.device),
        "wall_times": {m.name: round(m.wall_time_s, 2) for m in models} | {"total": round(time.time() - started, 2)},
        "grid_image_index": config.grid_image_index,
    })


def _log_summary(summary: pd.DataFrame, corruptions: Sequence[str], log: Log) -> None:
    averaged = summary["relative_mce_corruptions"].min() if "relative_mce_corruptions" in summary else len(corruptions)
    if averaged < len(corruptions):
        log(f"note: under some corruptions the baseline's errors average out to its clean error (too few test "
            f"images or too robust a baseline), so their relative CE is undefined and left out of relative MCE: "
            f"averaged over {int(averaged)} of {len(corruptions)} corruptions")
    for record in summary.to_dict("records"):
        mce = "" if pd.isna(record.get("mce")) else f"  MCE {record['mce']:.2f}  relative MCE {record['relative_mce']:.2f}"
        log(f"{record['model']}/{record['head']}: clean error {record['clean_error']:.2%}{mce}")
