"""Evaluation: models x heads x (clean + corrupted test sets) -> error tables, MCE, report.

The models are robustgsl's run folders and models robustgsl did not train (``robustgsl.external``:
``--model MODULE:FACTORY``, or a module passed to ``robustgsl.benchmark``). ``evaluate`` reads as its steps:
load (models, data, corruption files; runs that differ only in their seed become the seeds of one model,
robustgsl/seeds.py) -> fit heads -> score -> summarise (per run against its paired baseline run, then over
seeds) -> write (summarising: robustgsl/summary.py; where the corruption files come from:
robustgsl/corruptions/source.py); ``score`` is all but the last, for callers that keep the results in memory
(robustgsl/benchmarking.py). For every model the training images (no augmentation, eval mode) give the
reference embeddings of the k-NN and SVC heads (cached in a run's folder, keyed by the weights' and the
images' content and verified: robustgsl/cache.py; an external model has no folder and no cache). The clean
test set and each corruption file (streamed with ``mmap_mode``, one at a time) go through the model once;
every head classifies the same outputs. Per-image correctness is kept so the paired bootstrap can resample
test images. The evaluation folder is written as a whole (robustgsl.io.atomic_folder): a given ``--out`` is
checked before the work starts, the files are written into a temporary sibling folder, which replaces the
old folder only once complete. So the folder holds one evaluation's files, never a mix of two, and a
failed evaluation changes nothing. The files of an evaluation folder are defined in
robustgsl/schema/evaluation.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from robustgsl import cache, runs, seeds
from robustgsl.config import EvalConfig, parse_baseline, validate_eval_config
from robustgsl.corruptions import SEVERITIES, parse_severities, resolve_corruptions
from robustgsl.corruptions.source import file_digests, open_corruption_file, prepare_corruptions
from robustgsl.data import IMAGEFOLDER, dataset_info, load_dataset
from robustgsl.device import infer, resolve_device
from robustgsl.errors import InputError, WriteError
from robustgsl.external import ExternalModel, ExternalSpec, load_external_model
from robustgsl.heads import HEADS, KnnHead, make_head
from robustgsl.imagefolder import imagefolder_record
from robustgsl.io import (
    atomic_folder, check_replaceable_folder, remove_stale_temporaries, save_npz_atomic, sha256_file, write_csv_atomic,
    write_json_atomic,
)
from robustgsl.metrics import CLEAN, ERROR_COLUMNS
from robustgsl.schema.evaluation import (
    CORRUPTION_SUMMARY_FILE, EMBEDDINGS_FILE, ERRORS_FILE, EXAMPLES_FILE, FILES, RECORD_FILE, REPORT_FILE,
    ROBUSTBENCH_FILE, ROBUSTBENCH_SUMMARY_FILE, SEED_SUMMARY_FILE, SEVERITY_FILE, SNAPSHOTS_DIR, SUMMARY_FILE,
    embedding_array, snapshot_folder,
)
from robustgsl.schema.run import CACHE_DIR
from robustgsl.seeds import SeedRun
from robustgsl.snapshots import copy_snapshots
from robustgsl.summary import BOOTSTRAP_LEVEL, Tables, summarise

Log = Callable[[str], None]
# Test images kept for the report's 2-D embedding view, and the corruption shown there.
EMBEDDING_SAMPLE = 2000
EMBEDDING_CORRUPTION = "gaussian_noise"
# Outputs and embeddings of the clean and corrupted test sets are cached per checkpoint when the
# embedding is this small (GSL: d = classes); the 512-d CE features would take 1.5 GB per model.
CACHE_MAX_DIM = 64
# The data set evaluated when only external models are given and no --dataset (RobustBench's default).
DEFAULT_EXTERNAL_DATASET = "cifar10"
EMBEDDING_HEADS = tuple(head for head in HEADS if head != "argmax")


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
    seed_run: SeedRun | None = None  # which model (seed group) and seed the run is; set by _group_seeds

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


@dataclass(frozen=True)
class ReferenceScores:
    """A baseline scored elsewhere (``robustgsl.benchmark``'s ``baseline``): its error rates, and whether it
    misclassified each test image where that is known (then the bootstrap intervals are paired with it)."""

    name: str
    head: str
    errors: pd.DataFrame  # ERROR_COLUMNS rows (robustgsl.metrics) of (name, head), (CLEAN, 0) included
    entry: dict  # its entry in evaluation.json's "models" (kind "reference")
    wrong: np.ndarray | None = None  # bool (len(rows), n_test)
    rows: tuple[tuple[str, int], ...] | None = None
    test_digest: str | None = None  # of the test images ``wrong`` is about


@dataclass
class Scores:
    """An evaluation before it is written: what was read, per-image results, tables, embedding views."""

    inputs: "_Inputs"
    wrong: dict[tuple[str, str], np.ndarray]  # (run, head) -> bool (len(rows), n_test), scored here
    tables: Tables
    embeddings: dict[str, np.ndarray]
    started: float


def default_heads(loss: str) -> list[str]:
    """argmax for CE (its own classifier) plus the embedding heads; GSL has no argmax head."""
    return list(HEADS) if loss == "ce" else [h for h in HEADS if h != "argmax"]


def evaluate(run_dirs: Sequence[str | Path] | None = None, config: EvalConfig | None = None,
             log: Log | None = None, models: Sequence[ExternalSpec | ExternalModel] = ()) -> Path:
    """Evaluate runs (default, when no ``models`` either: the last train-both pair) and external ``models``
    on the clean and corrupted test sets; write the tables (and the report) into the evaluation folder,
    and return it."""
    config = config or EvalConfig()
    log = log or (lambda message: None)
    planned = _planned_out_dir(run_dirs, models, config)
    if planned is not None:  # checked before the long work (else once the models' names are known)
        check_replaceable_folder(planned, may_replace=is_evaluation_folder)
    scores = score(run_dirs, config, log, models)
    return write_evaluation(scores, config, log)


def score(run_dirs: Sequence[str | Path] | None, config: EvalConfig, log: Log,
          models: Sequence[ExternalSpec | ExternalModel] = (), reference: ReferenceScores | None = None) -> Scores:
    """Load, fit the heads, score and summarise; nothing is written but the runs' caches. ``reference``, a
    baseline scored elsewhere, joins the tables as the baseline."""
    validate_eval_config(config)
    started = time.time()
    inputs = _load(run_dirs, models, config, reference, log)
    wrong: dict[tuple[str, str], np.ndarray] = {}
    embeddings = {"labels": inputs.test_labels[inputs.sample],
                  "embedding_corruption": np.array(inputs.embedding_corruption)}
    for item in inputs.models:
        model_started = time.time()
        _fit_heads(item, inputs, config, log)
        wrong.update(_score(item, inputs, config, embeddings, log))
        item.wall_time_s = time.time() - model_started
    extra_errors, seed_runs = None, [item.seed_run for item in inputs.models]
    if inputs.reference is not None:
        reference_wrong, extra_errors = _reference_rows(inputs.reference, inputs)
        if reference_wrong is not None:
            wrong[(inputs.reference.name, inputs.reference.head)] = reference_wrong
        seed_runs.append(SeedRun(inputs.reference.name, inputs.reference.name, None))
    tables = summarise(wrong, inputs.rows, inputs.baseline, inputs.corruptions, config.n_bootstrap, config.seed,
                       seed_runs, extra_errors=extra_errors)
    _log_summary(tables.summary, inputs.corruptions, log)
    return Scores(inputs, wrong, tables, embeddings, started)


def write_evaluation(scores: Scores, config: EvalConfig, log: Log | None = None) -> Path:
    """Write an evaluation folder (``config.out_dir``, default reports/<name>) and, if asked, its report."""
    log = log or (lambda message: None)
    out_dir = Path(config.out_dir) if config.out_dir is not None else _default_out_dir(scores.inputs)
    with atomic_folder(out_dir, may_replace=is_evaluation_folder) as staging:
        _write(staging, scores, config)
        if config.report:
            from robustgsl.report import write_report

            write_report(staging, folder_name=Path(os.path.abspath(out_dir)).name)
    if config.report:
        log(f"Report written to {out_dir / REPORT_FILE}")
    return out_dir


def is_evaluation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an evaluation (which a new one may replace as a whole) and nothing else
    of value: its evaluation.json, or only files of robustgsl/schema/evaluation.py."""
    return (folder / RECORD_FILE).is_file() or all(path.name in FILES for path in folder.iterdir())


def _default_out_dir(inputs: "_Inputs") -> Path:
    """reports/<the first run's parent folder>, or reports/<the first external model's name>."""
    first = inputs.models[0]
    return Path("reports") / (_pair_name(first.run_dir) if first.run_dir is not None else first.name)


def _planned_out_dir(run_dirs, models, config: EvalConfig) -> Path | None:
    """The evaluation folder, when it is known before the models are loaded."""
    if config.out_dir is not None:
        return Path(config.out_dir)
    if run_dirs or not models:
        return Path("reports") / _pair_name(Path(run_dirs[0]) if run_dirs else runs.find_last_pair()[0])
    return None


# --- load -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _DataSet:
    """The data set all the models are evaluated on."""

    name: str
    num_classes: int
    data_dir: str | None
    resize: bool
    image_folder: dict | None  # robustgsl.imagefolder.imagefolder_record, for dataset imagefolder


@dataclass
class _Inputs:
    """What scoring reads: the models, the data, the corruption files, the rows to fill."""

    models: list[EvaluatedModel]
    device: torch.device
    data: _DataSet
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray  # the first n_examples test images (all by default)
    test_labels: np.ndarray
    n_full: int  # test images in the data set (and in each severity block of a corruption file)
    source: dict  # evaluation.json's corruption_source
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    rows: list[tuple[str, int]]  # (corruption, severity) per row of the per-image arrays; (CLEAN, 0) first
    baseline: tuple[str, str] | None
    reference: ReferenceScores | None
    file_digests: dict[str, str]  # short content digest per corruption file (cache keys)
    train_digest: str
    test_digest: str
    sample: np.ndarray  # test images of the embedding view
    embedding_corruption: str
    batch_size: int | None

    @property
    def folder(self) -> Path:
        return Path(self.source["path"])

    @property
    def dataset(self) -> str:
        return self.data.name

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def _load(run_dirs, external, config: EvalConfig, reference: ReferenceScores | None, log: Log) -> _Inputs:
    names = resolve_corruptions(config.corruptions)
    severities = parse_severities(config.severities)
    rows = [(CLEAN, 0)] + [(name, s) for name in names for s in severities]
    if reference is not None:
        _check_reference_covers(reference, rows)  # before any model, data or corruption is read
    run_dirs = [Path(p) for p in run_dirs] if run_dirs else [] if external else runs.find_last_pair()
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = _load_run_models(run_dirs, config.heads, device) + _load_external_models(external, config.heads, device)
    _check_unique_names(models)
    models = _group_seeds(models)
    reference = _reference_named(reference, models)
    baseline = _choose_baseline(models, config.baseline, reference)
    data = _data_set(models, config)
    train_images, train_labels = load_dataset(data.name, "train", data_dir=data.data_dir, download=config.download,
                                              resize=data.resize)
    test_images, test_labels = load_dataset(data.name, "test", data_dir=data.data_dir, download=config.download,
                                            resize=data.resize)
    n_full, n_test = len(test_labels), min(config.n_examples or len(test_labels), len(test_labels))
    if config.grid_image_index >= n_test:
        raise InputError(f"grid image index {config.grid_image_index} is outside the test images evaluated "
                         f"({n_test})")
    _check_outputs(models, test_images[:2], data, device)
    source = prepare_corruptions(data.name, test_images, test_labels, data.num_classes, config.corruption_dir, names,
                                 config.corruption_seed, config.workers, config.quiet, log, data_dir=data.data_dir)
    test_images, test_labels = test_images[:n_test], test_labels[:n_test]
    return _Inputs(
        models=models, device=device, data=data, train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, n_full=n_full, source=source, corruptions=names,
        severities=severities, rows=rows,
        baseline=baseline, reference=reference,
        file_digests=file_digests(Path(source["path"]), names, source["manifest"]),
        train_digest=_array_digest(train_images), test_digest=_array_digest(test_images),
        sample=np.sort(np.random.RandomState(config.seed).permutation(n_test)[:EMBEDDING_SAMPLE]),
        embedding_corruption=EMBEDDING_CORRUPTION if EMBEDDING_CORRUPTION in names else names[0],
        batch_size=config.batch_size,
    )


def _chosen_heads(applicable: list[str], heads, what: str) -> list[str]:
    chosen = applicable if heads is None else [h for h in heads if h in applicable]
    if not chosen:
        raise InputError(f"none of the heads {', '.join(heads)} applies to {what} (applicable: {', '.join(applicable)})")
    return chosen


def _load_run_models(run_dirs: Sequence[Path], heads, device) -> list[EvaluatedModel]:
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


def _check_unique_names(models: list[EvaluatedModel]) -> None:
    seen = set()
    for item in models:
        if item.name in seen:
            raise InputError(f"two models are called {item.name!r}; name them apart (--model-name NAME)")
        seen.add(item.name)


def _reference_named(reference: ReferenceScores | None, models: list[EvaluatedModel]) -> ReferenceScores | None:
    """The reference, renamed <name>-baseline when an evaluated model has its name."""
    if reference is None or reference.name not in {m.name for m in models}:
        return reference
    name = f"{reference.name}-baseline"
    return dataclasses.replace(reference, name=name, errors=reference.errors.assign(model=name),
                               entry=reference.entry | {"name": name})


def _group_seeds(models: list[EvaluatedModel]) -> list[EvaluatedModel]:
    """Runs that differ only in their seed become the seeds of one model (robustgsl/seeds.py); an external
    model, which has no config, is a model of its own."""
    grouped = seeds.group_runs([item.name for item in models], [item.config for item in models])
    for item, seed_run in zip(models, grouped):
        item.name, item.seed_run = seed_run.run, seed_run
    return models


def _pair_name(run_dir: Path) -> str:
    """Name of the default evaluation folder: the pair's folder (for a seed<N> folder, the one above it)."""
    pair = run_dir.resolve().parent
    return pair.parent.name if runs.is_seed_folder(pair) else pair.name


def _choose_baseline(models: list[EvaluatedModel], spec: str | None,
                     reference: ReferenceScores | None) -> tuple[str, str] | None:
    """A reference's key; else the baseline asked for (it must be evaluated), else ce/argmax when
    evaluated, else none."""
    baseline = parse_baseline(spec)
    if reference is not None:
        if baseline is not None:
            raise InputError(f"give a baseline result or --baseline {spec}, not both")
        return reference.name, reference.head
    available = list(dict.fromkeys((m.group, h) for m in models for h in m.heads))
    if baseline is not None and baseline not in available:
        raise InputError(f"baseline {spec} is not among the evaluated rows: "
                         f"{', '.join(f'{m}/{h}' for m, h in available)}")
    if baseline is None and ("ce", "argmax") in available:
        baseline = ("ce", "argmax")
    return baseline


def _data_set(models: list[EvaluatedModel], config: EvalConfig) -> _DataSet:
    """The runs' data set (they must agree, and with --dataset), else --dataset, else cifar10."""
    trained = [m for m in models if m.run_dir is not None]
    first = trained[0].entry["config"] if trained else None
    for item in trained[1:]:
        other = item.entry["config"]
        if _data_identity(other) != _data_identity(first):
            raise InputError(
                f"{item.run_dir} was trained on {other['dataset']} ({other['num_classes']} classes) but "
                f"{trained[0].run_dir} on {first['dataset']} ({first['num_classes']} classes); evaluate them "
                f"separately")
    name = first["dataset"] if first else config.dataset or DEFAULT_EXTERNAL_DATASET
    if first and config.dataset not in (None, name):
        raise InputError(f"--dataset {config.dataset}, but the run folders were trained on {name}")
    if name != IMAGEFOLDER:
        return _DataSet(name, dataset_info(name).num_classes, config.data_dir, False, None)
    recorded = first.get("image_folder") if first else None
    data_dir = config.data_dir or (recorded["root"] if recorded else None)
    if data_dir is None:
        raise InputError("--dataset imagefolder needs --data-dir DIR, the folder holding train/<class>/ and test/<class>/")
    resize = config.resize or bool(recorded and recorded["resize"])
    record = imagefolder_record(data_dir, resize)
    if recorded is not None and record["classes"] != recorded["classes"]:
        raise InputError(f"the image folder {data_dir} holds the classes {record['classes']}, but "
                         f"{trained[0].run_dir} was trained on {recorded['classes']}")
    return _DataSet(IMAGEFOLDER, len(record["classes"]), str(data_dir), resize, record)


def _data_identity(config: dict) -> tuple:
    folder = config.get("image_folder")
    return config["dataset"], config["num_classes"], tuple(folder["classes"]) if folder else None


def _check_outputs(models: list[EvaluatedModel], images: np.ndarray, data: _DataSet, device) -> None:
    """Refuse, before any long work, an external model that fails on test images or gives the wrong outputs."""
    for item in models:
        if item.run_dir is not None:
            continue
        try:
            outputs, _ = infer(item.model, images, device, amp=False)
        except Exception as error:  # the user's model: any failure is bad input
            raise InputError(f"model {item.name!r} failed on a batch of {len(images)} test images (3x32x32, values "
                             f"in [0, 1]): {type(error).__name__}: {error}") from error
        if outputs.ndim != 2 or outputs.shape[1] != data.num_classes:
            raise InputError(f"model {item.name!r} outputs shape {tuple(outputs.shape)} for {len(images)} images, but "
                             f"{data.name} has {data.num_classes} classes: its factory must return a model with "
                             f"{data.num_classes} outputs")


def _array_digest(images: np.ndarray) -> str:
    """A short digest of an image set's content (cache keys)."""
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()[:16]


# --- fit heads, score -----------------------------------------------------------------------------

def _cache_dir(item: EvaluatedModel, device: torch.device) -> Path | None:
    """Cache folder of one checkpoint on one kind of device (CUDA runs in bf16, the CPU in float32); an
    external model has none."""
    if item.run_dir is None:
        return None
    return item.run_dir / CACHE_DIR / f"{item.weights_sha256[:16]}-{device.type}"


def _infer(item: EvaluatedModel, images: np.ndarray, inputs: _Inputs, quiet: bool, desc: str):
    outputs, embeddings = infer(item.model, images, inputs.device, amp=item.amp, batch_size=inputs.batch_size,
                                quiet=quiet, desc=desc)
    return outputs.numpy(), embeddings.numpy()


def _remember(item: EvaluatedModel, path: Path | None, arrays: dict, log: Log) -> None:
    """Write a cache entry; a run folder that cannot be written (read-only) only turns the cache off."""
    if item.cache_off or path is None:
        return
    try:
        remove_stale_temporaries(path.parent)
        cache.write_entry(path, arrays)
    except WriteError as error:
        item.cache_off = True
        log(f"[{item.name}] not caching outputs: {error}")


def _recall(item: EvaluatedModel, path: Path | None, n: int, log: Log) -> dict | None:
    """A verified cache entry of ``n`` rows, or None (no cache, no entry, or a damaged one: said in the log)."""
    if path is None:
        return None
    cached, problem = cache.read_entry(path, n)
    if problem:
        log(f"[{item.name}] cached {path} cannot be used ({problem}); computing it again")
    return cached


def _reference_embeddings(item: EvaluatedModel, inputs: _Inputs, quiet: bool, log: Log) -> np.ndarray:
    """Training-set embeddings, cached in the run folder under the weights' and the images' digests."""
    folder = _cache_dir(item, inputs.device)
    path = folder / f"train_embeddings-{inputs.train_digest}.npz" if folder is not None else None
    cached = _recall(item, path, len(inputs.train_labels), log)
    if cached is not None and "embeddings" in cached:
        return cached["embeddings"]
    _, embeddings = _infer(item, inputs.train_images, inputs, quiet, f"{item.name} train embeddings")
    _remember(item, path, {"embeddings": embeddings}, log)
    return embeddings


def _cached_infer(item: EvaluatedModel, images: np.ndarray, key: str, inputs: _Inputs, quiet: bool, desc: str,
                  log: Log):
    """Outputs and embeddings, remembered in <run>/cache/<weights hash>/<key>.npz when the embedding is small."""
    folder = _cache_dir(item, inputs.device)
    path = folder / f"{key}.npz" if folder is not None else None
    cached = _recall(item, path, len(images), log)
    if cached is not None and {"outputs", "embeddings"} <= set(cached):
        return cached["outputs"], cached["embeddings"]
    outputs, embeddings = _infer(item, images, inputs, quiet, desc)
    if embeddings.shape[1] <= CACHE_MAX_DIM:
        _remember(item, path, {"outputs": outputs, "embeddings": embeddings}, log)
    return outputs, embeddings


def _fit_heads(item: EvaluatedModel, inputs: _Inputs, config: EvalConfig, log: Log) -> None:
    if item.heads == ["argmax"]:  # reads the outputs: no training embeddings needed
        item.fitted["argmax"] = make_head("argmax", inputs.num_classes)
        return
    reference = _reference_embeddings(item, inputs, config.quiet, log)
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
    n_test, quiet = len(inputs.test_labels), config.quiet
    # Cache keys name the test images: a first-N subset is not the full set.
    subset = "" if n_test == inputs.n_full else f"-first{n_test}"
    per_head = {h: np.zeros((len(inputs.rows), n_test), dtype=bool) for h in item.heads}
    outputs, embedded = _cached_infer(item, inputs.test_images, f"clean-{inputs.test_digest}", inputs, quiet,
                                      f"{item.name} clean", log)
    _classify(item, outputs, embedded, inputs.test_labels, per_head, 0)
    has_view = embedded.shape[1] > 0  # a model without an embedding has no 2-D view
    if has_view:
        embeddings[embedding_array(item.name, "clean")] = embedded[inputs.sample]
    log(f"[{item.name}] clean: " + _error_line(per_head, [0]))
    for name in inputs.corruptions:
        data = open_corruption_file(inputs.folder / f"{name}.npy")
        row_index = [inputs.rows.index((name, s)) for s in inputs.severities]
        for severity, row in zip(inputs.severities, row_index):
            start = (severity - 1) * inputs.n_full
            outputs, embedded = _cached_infer(item, data[start:start + n_test],
                                              f"{name}-s{severity}-{inputs.file_digests[name]}{subset}", inputs,
                                              quiet, f"{item.name} {name} s{severity}", log)
            _classify(item, outputs, embedded, inputs.test_labels, per_head, row)
            if has_view and name == inputs.embedding_corruption and severity == max(inputs.severities):
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


@dataclass(frozen=True)
class CleanErrors:
    """The clean test error of each head of one run (``clean_test_errors``)."""

    errors: dict[str, float]  # head -> fraction of the test images misclassified
    n_train: int  # training images of the data set (the k-NN and SVC references)
    n_test: int
    weights_sha256: str


def clean_test_errors(run_dir: str | Path, config: EvalConfig | None = None, log: Log | None = None) -> CleanErrors:
    """The clean test error of every applicable head (or ``config.heads``) of one finished run.

    The evaluation's own steps on the clean test set alone: load the model and the data, fit the heads
    on the training embeddings, score. No corruption data is read or generated; the only files written
    are the run's embedding cache (as ``evaluate`` writes it).
    """
    config = config or EvalConfig()
    validate_eval_config(config)
    log = log or (lambda message: None)
    device = resolve_device(config.device)
    item = _load_run_models([Path(run_dir)], config.heads, device)[0]
    data = _data_set([item], config)
    train_images, train_labels = load_dataset(data.name, "train", data_dir=data.data_dir, download=config.download,
                                              resize=data.resize)
    test_images, test_labels = load_dataset(data.name, "test", data_dir=data.data_dir, download=config.download,
                                            resize=data.resize)
    inputs = _Inputs(
        models=[item], device=device, data=data, train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, n_full=len(test_labels), source={}, corruptions=(),
        severities=(), rows=[(CLEAN, 0)], baseline=None, reference=None, file_digests={},
        train_digest=_array_digest(train_images), test_digest=_array_digest(test_images), sample=np.arange(0),
        embedding_corruption="", batch_size=config.batch_size,
    )
    _fit_heads(item, inputs, config, log)
    wrong = _score(item, inputs, config, {}, log)
    return CleanErrors(errors={head: float(array[0].mean()) for (_, head), array in wrong.items()},
                       n_train=len(train_labels), n_test=len(test_labels), weights_sha256=item.weights_sha256)


def _known_errors(reference: ReferenceScores) -> dict[tuple[str, int], float]:
    errors = reference.errors
    return {(c, int(s)): float(e) for c, s, e in zip(errors["corruption"], errors["severity"], errors["error"])}


def _check_reference_covers(reference: ReferenceScores, rows: Sequence[tuple[str, int]]) -> None:
    """Refuse a baseline without an error rate for every row of this evaluation."""
    known = _known_errors(reference)
    missing = [f"{c} {s}" for c, s in rows if (c, s) not in known]
    if missing:
        raise InputError(f"the baseline {reference.name}/{reference.head} has no error rate for "
                         f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} (corruption severity); "
                         f"evaluate it on every corruption and severity asked for here")


def _reference_rows(reference: ReferenceScores, inputs: _Inputs) -> tuple[np.ndarray | None, pd.DataFrame | None]:
    """The reference on this evaluation's rows: its per-image results when they are about the same test
    images, else (for the tables, without bootstrap intervals) its error rates."""
    if reference.wrong is not None and reference.test_digest == inputs.test_digest \
            and set(inputs.rows) <= set(reference.rows):
        return reference.wrong[[reference.rows.index(row) for row in inputs.rows]], None
    known = _known_errors(reference)
    return None, pd.DataFrame.from_records(
        [{"model": reference.name, "head": reference.head, "corruption": c, "severity": s, "error": known[(c, s)]}
         for c, s in inputs.rows], columns=list(ERROR_COLUMNS))


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
    write_csv_atomic(out_dir / ROBUSTBENCH_SUMMARY_FILE, tables.robustbench_summary, index=False)


def copy_run_snapshots(out_dir: Path, models: Sequence[EvaluatedModel]) -> list[str | None]:
    """Each run's embedding snapshots copied into <out>/snapshots/<folder>/; per model its folder or None."""
    folders = []
    for index, item in enumerate(models):
        folder = f"{SNAPSHOTS_DIR}/{snapshot_folder(index, item.name)}"
        copied = item.run_dir is not None and copy_snapshots(item.run_dir, out_dir / folder)
        folders.append(folder if copied else None)
    return folders


def example_arrays(folder: Path, names, test_images, test_labels, index: int, n_full: int) -> dict[str, np.ndarray]:
    """example_images.npz: test image ``index``, clean and under every corruption and severity (``n_full``:
    the images per severity block of a corruption file)."""
    corrupted = np.stack([
        np.stack([np.load(folder / f"{name}.npy", mmap_mode="r")[(s - 1) * n_full + index] for s in SEVERITIES])
        for name in names])
    return {"clean": test_images[index], "corrupted": corrupted, "corruptions": np.array(list(names)),
            "label": np.int64(test_labels[index]), "index": np.int64(index)}


def _write(out_dir: Path, scores: Scores, config: EvalConfig) -> None:
    inputs = scores.inputs
    write_tables(out_dir, scores.tables)
    save_npz_atomic(out_dir / EMBEDDINGS_FILE, scores.embeddings)
    save_npz_atomic(out_dir / EXAMPLES_FILE, example_arrays(inputs.folder, inputs.corruptions, inputs.test_images,
                                                            inputs.test_labels, config.grid_image_index, inputs.n_full))
    models = inputs.models
    snapshot_folders = copy_run_snapshots(out_dir, models)
    entries = [m.entry | {"name": m.name, "model": m.group, "seed": m.seed_run.seed if m.seed_run else None,
                          "snapshots": folder} for m, folder in zip(models, snapshot_folders)]
    if inputs.reference is not None:
        entries.append(inputs.reference.entry | {"model": inputs.reference.name, "seed": None, "snapshots": None})
    heads = {h for m in models for h in m.heads} | ({inputs.reference.head} if inputs.reference is not None else set())
    write_json_atomic(out_dir / RECORD_FILE, {
        "models": entries,
        "heads": sorted(heads, key=HEADS.index),
        "baseline": "/".join(inputs.baseline) if inputs.baseline else None,
        "dataset": inputs.dataset, "num_classes": inputs.num_classes, "n_test": len(inputs.test_labels),
        "n_examples": config.n_examples, "image_folder": inputs.data.image_folder,
        "corruptions": list(inputs.corruptions), "severities": list(inputs.severities),
        "corruption_source": inputs.source,
        "svc_train_size": config.svc_train_size,
        "bootstrap": {"n_resamples": config.n_bootstrap, "seed": config.seed, "level": BOOTSTRAP_LEVEL},
        "created_at": runs.now_iso(), "git_sha": runs.git_sha(), "versions": runs.versions(),
        "device": runs.device_name(inputs.device),
        "wall_times": {m.name: round(m.wall_time_s, 2) for m in models}
        | {"total": round(time.time() - scores.started, 2)},
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
