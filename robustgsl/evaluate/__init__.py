"""Evaluation: models x heads x (clean + corrupted test sets) -> error tables, MCE, report.

The models are robustgsl's run folders and models robustgsl did not train (``robustgsl.external``:
``--model MODULE:FACTORY``, or a module passed to ``robustgsl.benchmark``). ``evaluate`` reads as its steps,
one module each: load the models (``models``), the data, the corrupted test sets and the baseline
(``inputs``, ``baseline``; where corruption files come from: robustgsl/corruptions/source.py) -> fit the
heads and score (``scoring``) -> summarise, per run against its paired baseline run, then over seeds
(robustgsl/summary.py) -> write the folder (``writing``). ``score`` is all but the last, for callers that
keep the results in memory (robustgsl/benchmarking.py); ``clean_test_errors`` scores the clean test set
alone (robustgsl/sweep.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgsl.config import EvalConfig, validate_eval_config
from robustgsl.evaluate.baseline import ReferenceScores, reference_rows
from robustgsl.evaluate.inputs import evaluation_device, load_eval_data, load_inputs, run_folders
from robustgsl.evaluate.models import default_heads, load_run_models
from robustgsl.evaluate.scoring import HeadSettings, Scores, fit_heads, log_summary, score_clean, score_model
from robustgsl.evaluate.writing import is_evaluation_folder, planned_out_dir, write_evaluation, write_tables
from robustgsl.external import ExternalModel, ExternalSpec
from robustgsl.io import check_replaceable_folder
from robustgsl.seeds import SeedRun
from robustgsl.summary import summarise

__all__ = ["CleanErrors", "ReferenceScores", "Scores", "clean_test_errors", "default_heads", "evaluate",
           "is_evaluation_folder", "score", "write_evaluation", "write_tables"]

Log = Callable[[str], None]


def evaluate(run_dirs: Sequence[str | Path] | None = None, config: EvalConfig | None = None,
             log: Log | None = None, models: Sequence[ExternalSpec | ExternalModel] = ()) -> Path:
    """Evaluate runs (default, when no ``models`` either: the last train-both pair) and external ``models``
    on the clean and corrupted test sets; write the tables (and the report) into the evaluation folder,
    and return it."""
    config = config or EvalConfig()
    log = log or (lambda message: None)
    validate_eval_config(config)
    run_dirs = run_folders(run_dirs, models)
    planned = planned_out_dir(run_dirs, config)
    if planned is not None:  # checked before the long work (else once the models' names are known)
        check_replaceable_folder(planned, may_replace=is_evaluation_folder)
    return write_evaluation(score(run_dirs, config, log, models), config, log)


def score(run_dirs: Sequence[str | Path] | None, config: EvalConfig, log: Log,
          models: Sequence[ExternalSpec | ExternalModel] = (), reference: ReferenceScores | None = None) -> Scores:
    """Load, fit the heads, score and summarise; nothing is written but the runs' caches. ``reference``, a
    baseline scored elsewhere, joins the tables as the baseline."""
    validate_eval_config(config)
    started = time.time()
    inputs = load_inputs(run_folders(run_dirs, models), models, config, reference, log)
    settings = HeadSettings(config.svc_train_size, config.seed, config.quiet)
    wrong = {}
    embeddings = {"labels": inputs.data.test.labels[inputs.view.sample],
                  "embedding_corruption": np.array(inputs.view.corruption)}
    for item in inputs.models:
        model_started = time.time()
        fit_heads(item, inputs.data, settings, log)
        wrong.update(score_model(item, inputs, config.quiet, embeddings, log))
        item.wall_time_s = time.time() - model_started
    extra_errors, seed_runs = None, [item.seed_run for item in inputs.models]
    if inputs.reference is not None:
        reference_wrong, extra_errors = reference_rows(inputs.reference, inputs.rows, inputs.data.test.digest)
        if reference_wrong is not None:
            wrong[(inputs.reference.name, inputs.reference.head)] = reference_wrong
        seed_runs.append(SeedRun(inputs.reference.name, inputs.reference.name, None))
    tables = summarise(wrong, inputs.rows, inputs.baseline, inputs.corrupted.corruptions, config.n_bootstrap,
                       config.seed, seed_runs, extra_errors=extra_errors)
    log_summary(tables.summary, inputs.corrupted.corruptions, log)
    return Scores(inputs, wrong, tables, embeddings, started)


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
    device = evaluation_device(config)
    item = load_run_models([Path(run_dir)], config.heads, device)[0]
    data, _ = load_eval_data([item], config, device)
    fit_heads(item, data, HeadSettings(config.svc_train_size, config.seed, config.quiet), log)
    wrong, _ = score_clean(item, data, config.quiet, log)
    return CleanErrors(errors={head: float(array[0].mean()) for head, array in wrong.items()},
                       n_train=len(data.train), n_test=len(data.test), weights_sha256=item.weights_sha256)
