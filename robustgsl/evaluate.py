"""Evaluation: trained runs x heads x (clean + corrupted test sets) -> error tables, MCE, report.

``evaluate`` reads as its steps: load (models, data, corruption files; runs that differ only in their seed
become the seeds of one model, robustgsl/seeds.py) -> fit heads -> score -> summarise (per run against
its paired baseline run, then over seeds) -> write. For every model the training images (no augmentation, eval mode) give the reference
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

from robustgsl import runs, seeds
from robustgsl.config import EvalConfig, parse_baseline, validate_eval_config
from robustgsl.corruptions import CONSTANTS_SOURCE, SEVERITIES, by_family, parse_severities, resolve_corruptions
from robustgsl.corruptions.dataset import (
    default_out_dir, read_manifest, verify_corruption_dataset, write_corruption_dataset,
)
from robustgsl.data import load_dataset
from robustgsl.device import infer, resolve_device
from robustgsl.errors import InputError
from robustgsl.heads import HEADS, KnnHead, make_head
from robustgsl.io import save_npy_atomic, save_npz_atomic, sha256_file, write_csv_atomic, write_json_atomic
from robustgsl.metrics import (
    CLEAN, ERROR_COLUMNS, bootstrap_statistics, corruption_error_table, percentile_intervals,
    relative_ce_reliability, relative_mce_reliability, resampled_error_rates, robustbench_table, severity_curves,
    summary_table,
)
from robustgsl.schema import corruption as corruption_schema
from robustgsl.schema.evaluation import (
    ALL_FAMILIES, CORRUPTION_SUMMARY_COLUMNS, CORRUPTION_SUMMARY_FILE, EMBEDDINGS_FILE, ERRORS_FILE,
    EXAMPLES_FILE, RECORD_FILE, ROBUSTBENCH_FILE, SEED_METRICS, SEED_SUMMARY_COLUMNS, SEED_SUMMARY_FILE,
    SEVERITY_COLUMNS, SEVERITY_FILE, SNAPSHOTS_DIR, SUMMARY_FILE, columns, embedding_array, snapshot_folder,
    summary_columns,
)
from robustgsl.schema.run import CACHE_DIR
from robustgsl.seeds import SeedRun
from robustgsl.snapshots import copy_snapshots

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
    name: str  # the run's name, unique in the evaluation
    run_dir: Path
    config: dict
    model: torch.nn.Module
    heads: list[str]
    weights_sha256: str
    wall_time_s: float = 0.0
    fitted: dict = field(default_factory=dict)
    seed_run: SeedRun | None = None  # which model (seed group) and seed the run is; set by _group_seeds

    @property
    def group(self) -> str:
        return self.seed_run.model if self.seed_run else self.name


@dataclass
class Tables:
    """The CSV tables of an evaluation folder (robustgsl/schema/evaluation.py)."""

    errors: pd.DataFrame
    summary: pd.DataFrame
    corruption_summary: pd.DataFrame
    robustbench: pd.DataFrame
    seed_summary: pd.DataFrame
    severity_curves: pd.DataFrame


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
    tables = summarise(wrong, inputs.rows, inputs.baseline, inputs.corruptions, config.n_bootstrap, config.seed,
                       [item.seed_run for item in inputs.models])
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
    models = _group_seeds(_load_models(run_dirs, config.heads, device))
    dataset, num_classes = models[0].config["dataset"], models[0].config["num_classes"]
    baseline = _choose_baseline(models, config.baseline)
    out_dir = Path(config.out_dir) if config.out_dir is not None else Path("reports") / _pair_name(run_dirs[0])

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


def _group_seeds(models: list[EvaluatedModel]) -> list[EvaluatedModel]:
    """Runs that differ only in their seed become the seeds of one model (robustgsl/seeds.py)."""
    grouped = seeds.group_runs([item.name for item in models], [item.config for item in models])
    for item, seed_run in zip(models, grouped):
        item.name, item.seed_run = seed_run.run, seed_run
    return models


def _pair_name(run_dir: Path) -> str:
    """Name of the default evaluation folder: the pair's folder (for a seed<N> folder, the one above it)."""
    pair = run_dir.resolve().parent
    return pair.parent.name if runs.is_seed_folder(pair) else pair.name


def _choose_baseline(models: list[EvaluatedModel], spec: str | None) -> tuple[str, str] | None:
    """The baseline asked for (it must be evaluated), else ce/argmax when evaluated, else none."""
    baseline = parse_baseline(spec)
    available = list(dict.fromkeys((m.group, h) for m in models for h in m.heads))
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
    """The error rate of every (run, head) under every (corruption, severity) row; ``model`` holds the run."""
    return pd.DataFrame.from_records(
        [{"model": m, "head": h, "corruption": c, "severity": s, "error": float(array[r].mean())}
         for (m, h), array in wrong.items() for r, (c, s) in enumerate(rows)],
        columns=list(ERROR_COLUMNS))


def summarise(wrong: dict[tuple[str, str], np.ndarray], rows: Sequence[tuple[str, int]],
              baseline: tuple[str, str] | None, corruptions: Sequence[str], n_bootstrap: int, seed: int,
              seed_runs: Sequence[SeedRun] | None = None) -> Tables:
    """The tables of an evaluation from per-image correctness: ``wrong[(run, head)]`` is a boolean
    (len(rows), n_test) array, ``rows[r]`` its (corruption, severity), (CLEAN, 0) included.

    ``seed_runs`` says which model and seed each run is (default: every run a model of its own, seed
    unknown); ``baseline`` is a (model, head). Each run is scored against its paired baseline run, then
    each model's seeds are averaged (robustgsl/seeds.py); every run sees the same bootstrap resamples.
    """
    n_test = next(iter(wrong.values())).shape[1]
    seed_runs = list(seed_runs) if seed_runs is not None else \
        [SeedRun(run, run, None) for run in dict.fromkeys(run for run, _ in wrong)]
    per_run_errors = error_table(wrong, rows)
    rates = resampled_error_rates(wrong, n_bootstrap, seed)
    per_seed, per_corruption, statistics = _per_run_tables(per_run_errors, rates, rows, baseline, corruptions,
                                                           seed_runs, n_test)
    corruption_summary = _corruption_summary(per_corruption, seed_runs)
    summary = _summary(per_seed, corruption_summary, statistics, seed_runs, baseline, n_test)
    errors = seeds.label(per_run_errors, seed_runs).drop(columns="run")
    mean_errors = errors.groupby(["model", "head", "corruption", "severity"], sort=False)["error"].mean().reset_index()
    return Tables(
        errors=errors, summary=summary, corruption_summary=corruption_summary,
        robustbench=robustbench_table(mean_errors),
        seed_summary=per_seed[list(columns(SEED_SUMMARY_COLUMNS, baseline is not None))],
        severity_curves=_severity_curves(wrong, rates, rows, corruptions, seed_runs))


def _per_run_tables(errors: pd.DataFrame, rates: dict, rows, baseline, corruptions, seed_runs: list[SeedRun],
                    n_test: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per run: its summary row (against its paired baseline run), its per-corruption ratios with their
    reliability, and its resampled statistics."""
    if baseline is None:
        per_corruption = corruption_error_table(errors, None, corruptions).merge(
            relative_ce_reliability(errors, None, n_test, corruptions), on=["model", "head", "corruption"])
        corrupted = errors[errors["corruption"] != CLEAN].groupby(["model", "head"], sort=False)["error"].mean()
        clean = errors[errors["corruption"] == CLEAN].set_index(["model", "head"])["error"]
        per_seed = pd.DataFrame({"clean_error": clean, "mean_corruption_error": corrupted}).reset_index()
        return seeds.label(per_seed, seed_runs), seeds.label(per_corruption, seed_runs), {}
    by_run = {r.run: r for r in seed_runs}
    pairs = seeds.paired_baselines(seed_runs, baseline[0])
    summaries, ratios, statistics = [], [], {}
    for base_run in dict.fromkeys(pairs.values()):
        members = [run for run, paired in pairs.items() if paired == base_run]
        subset = errors[errors["model"].isin(members)]
        key = (base_run, baseline[1])
        part = bootstrap_statistics({k: v for k, v in rates.items() if k[0] in members}, rows, key, corruptions)
        statistics.update(part)
        summary = summary_table(subset, key, corruptions).merge(percentile_intervals(part, BOOTSTRAP_LEVEL),
                                                                on=["model", "head"])
        per_corruption = corruption_error_table(subset, key, corruptions).merge(
            relative_ce_reliability(subset, key, n_test, corruptions), on=["model", "head", "corruption"])
        base_clean = float(summary.loc[(summary["model"] == base_run) & (summary["head"] == baseline[1]),
                                       "clean_error"].iloc[0])
        summary = summary.assign(clean_error_diff=summary["clean_error"] - base_clean,
                                 baseline_seed=by_run[base_run].seed)
        summaries.append(summary.merge(relative_mce_reliability(summary, per_corruption, key), on=["model", "head"]))
        ratios.append(per_corruption)
    order = {r.run: index for index, r in enumerate(seed_runs)}
    per_seed = pd.concat(summaries).sort_values("model", key=lambda names: names.map(order), kind="stable")
    per_corruption = pd.concat(ratios).sort_values("model", key=lambda names: names.map(order), kind="stable")
    return seeds.label(per_seed, seed_runs), seeds.label(per_corruption, seed_runs), statistics


def _corruption_summary(per_corruption: pd.DataFrame, seed_runs: list[SeedRun]) -> pd.DataFrame:
    """corruption_summary.csv: ratios averaged over seeds; unreliable where any seed's is (reasons by seed)."""
    several = {model for model, members in seeds.models(seed_runs).items() if len(members) > 1}
    records = []
    for (model, head, corruption), group in per_corruption.groupby(["model", "head", "corruption"], sort=False):
        reasons = [(f"seed {seed}: {why}" if model in several else why)
                   for seed, why in zip(group["seed"], group["relative_ce_reliability"]) if why]
        records.append({"model": model, "head": head, "corruption": corruption,
                        **{column: float(np.nanmean(group[column])) if group[column].notna().any() else np.nan
                           for column in ("ce", "relative_ce", "mean_error")},
                        "relative_ce_reliable": not reasons, "relative_ce_reliability": "; ".join(reasons)})
    return pd.DataFrame.from_records(records, columns=[f.name for f in CORRUPTION_SUMMARY_COLUMNS])


def _summary(per_seed: pd.DataFrame, corruption_summary: pd.DataFrame, statistics: dict,
             seed_runs: list[SeedRun], baseline: tuple[str, str] | None, n_test: int) -> pd.DataFrame:
    """summary.csv: per model/head, the mean over seeds, its spread, the bootstrap interval of the mean."""
    present = [column for column in SEED_METRICS if column in per_seed]
    summary = seeds.spread(per_seed, present)
    summary.insert(2, "baseline", "/".join(baseline) if baseline else None)
    if baseline is None:
        for column in ("mce", "relative_mce"):
            summary[column] = np.nan
    else:
        summary = summary.merge(percentile_intervals(seeds.mean_over_seeds(statistics, seed_runs), BOOTSTRAP_LEVEL),
                                on=["model", "head"], how="left")
        counts = per_seed.groupby(["model", "head"], sort=False)[["mce_corruptions", "relative_mce_corruptions"]].min()
        summary = summary.merge(counts.reset_index(), on=["model", "head"], how="left")
        summary = summary.merge(relative_mce_reliability(summary, corruption_summary, baseline), on=["model", "head"])
    summary["n_test"] = n_test
    return summary[list(summary_columns(baseline is not None))]


def _severity_curves(wrong: dict, rates: dict, rows, corruptions, seed_runs: list[SeedRun]) -> pd.DataFrame:
    """severity_curves.csv: error against severity over every corruption and per family, seeds averaged."""
    point = seeds.mean_over_seeds({key: {"error": array.mean(axis=1)} for key, array in wrong.items()}, seed_runs)
    resampled = seeds.mean_over_seeds({key: {"error": array} for key, array in rates.items()}, seed_runs)
    families = [(ALL_FAMILIES, list(corruptions))] + by_family(list(corruptions))
    curves = severity_curves({key: value["error"] for key, value in point.items()},
                             {key: value["error"] for key, value in resampled.items()}, rows, families,
                             BOOTSTRAP_LEVEL)
    return curves[[f.name for f in SEVERITY_COLUMNS]]


# --- write ----------------------------------------------------------------------------------------

def write_tables(out_dir: Path, tables: Tables) -> None:
    """The CSV files, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / ERRORS_FILE, tables.errors, index=False)
    write_csv_atomic(out_dir / SUMMARY_FILE, tables.summary, index=False)
    write_csv_atomic(out_dir / SEED_SUMMARY_FILE, tables.seed_summary, index=False)
    write_csv_atomic(out_dir / CORRUPTION_SUMMARY_FILE, tables.corruption_summary, index=False)
    write_csv_atomic(out_dir / SEVERITY_FILE, tables.severity_curves, index=False)
    write_csv_atomic(out_dir / ROBUSTBENCH_FILE, tables.robustbench)


def copy_run_snapshots(out_dir: Path, models: Sequence[EvaluatedModel]) -> list[str | None]:
    """Each run's embedding snapshots copied into <out>/snapshots/<folder>/; per model its folder or None."""
    folders = []
    for index, item in enumerate(models):
        folder = f"{SNAPSHOTS_DIR}/{snapshot_folder(index, item.name)}"
        folders.append(folder if copy_snapshots(item.run_dir, out_dir / folder) else None)
    return folders


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
    snapshot_folders = copy_run_snapshots(out_dir, models)
    write_json_atomic(out_dir / RECORD_FILE, {
        "models": [{"name": m.name, "model": m.group, "seed": m.seed_run.seed if m.seed_run else None,
                    "run_dir": str(m.run_dir.resolve()), "loss": m.config["loss"], "config": m.config,
                    "weights_sha256": m.weights_sha256, "snapshots": folder}
                   for m, folder in zip(models, snapshot_folders)],
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
