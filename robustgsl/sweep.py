"""Sweeps: a Cartesian grid of training runs, each trained and then scored on the clean test set.

``parse_grid`` reads ``--param NAME=V1,V2,...`` through each training option's own parser (the option
metadata of robustgsl/config.py, as the CLI does); ``grid_points`` builds and validates the TrainConfig of
every point and seed before anything runs; ``run_sweep`` opens the sweep folder (a rerun continues it,
another grid is refused unless ``extend``), trains and scores every point not yet done, then writes
sweep.csv and index.html. ``run_point`` is the unit of work — train (or resume) one run with
``robustgsl.train.train``, score it with ``robustgsl.evaluate.clean_test_errors`` — called in this
process (launcher "local") or as one submitit job per point and seed (launcher "submitit"). The folder's
files are defined in robustgsl/schema/sweep.py.

Grid syntax: values are separated by commas. A list-valued option (milestones) separates its values by
``;`` because each value is itself a comma list: ``--param 'milestones=6,8;10,15'``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from robustgsl import runs
from robustgsl.config import EvalConfig, TrainConfig, validate_eval_config
from robustgsl.device import resolve_device
from robustgsl.errors import InputError
from robustgsl.evaluate import clean_test_errors, default_heads
from robustgsl.io import sha256_file, write_csv_atomic, write_json_atomic
from robustgsl.options import OptionSpec, option_specs, setting
from robustgsl.progress import progress
from robustgsl.report.sweep import write_sweep_report
from robustgsl.schema import names
from robustgsl.schema import sweep as schema
from robustgsl.sweep_grid import (
    Grid, Param, Point, grid_from_record, grid_points, grid_record, read_sweep_record, value_text,
)
from robustgsl.train import train
from robustgsl.vocabulary import HEADS

Log = Callable[[str], None]
LAUNCHERS = ("local", "submitit")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")
# A finished run may differ from its point in these (they change speed, not the recipe), as on resume.
_SPEED_OPTIONS = ("amp", "channels_last", "compile")


@dataclass
class SweepConfig:
    """How a sweep runs (the grid itself is a ``Grid``)."""

    out_dir: str | None = setting(None, "Sweep folder: sweep.json, sweep.csv, index.html and one run folder per "
                                        "point and seed.", flag="--out", folder=True)
    launcher: str = setting("local", "local (the points one after another in this process) or submitit (one job "
                                     "per point and seed: SLURM on a cluster, local processes elsewhere).",
                            choices=LAUNCHERS)
    extend: bool = setting(False, "Add values or seeds to the grid already in --out (same loss, swept options "
                                  "and fixed options); without it another grid is refused.")
    partition: str | None = setting(None, "SLURM partition (submitit).", default_text="the cluster's default")
    gpus_per_job: int = setting(1, "GPUs per job (submitit): 0 or 1, as each run trains in one process.")
    cpus_per_job: int | None = setting(None, "CPU cores per job (submitit).", default_text="the cluster's default")
    mem_gb: float | None = setting(None, "Memory per job in GB (submitit).", default_text="the cluster's default")
    timeout_min: int = setting(1440, "Time limit per job in minutes (submitit).")
    max_parallel: int | None = setting(None, "Most jobs running at once (submitit, SLURM job array).",
                                       default_text="no limit")
    submitit_cluster: str | None = setting(None, "Force submitit's executor: slurm, local (processes on this "
                                                 "machine) or debug (in this process).",
                                           choices=SUBMITIT_CLUSTERS, default_text="slurm when available, else "
                                                                                   "local")
    quiet: bool = setting(False, "No progress bars or progress lines.")


SWEEP_OPTIONS: tuple[OptionSpec, ...] = option_specs(SweepConfig)


def validate_sweep_config(config: SweepConfig) -> None:
    """Raise InputError naming the first bad value; changes nothing."""
    checks = [
        (config.out_dir is not None, "a sweep needs an output folder (--out DIR)"),
        (config.launcher in LAUNCHERS, f"unknown launcher {config.launcher!r}; valid: {', '.join(LAUNCHERS)}"),
        (config.gpus_per_job in (0, 1), f"GPUs per job must be 0 or 1 (each run trains in one process; for "
                                        f"several GPUs per run use torchrun with `robustgsl train`), got "
                                        f"{config.gpus_per_job}"),
        (config.cpus_per_job is None or config.cpus_per_job >= 1,
         f"CPUs per job must be >= 1, got {config.cpus_per_job}"),
        (config.mem_gb is None or config.mem_gb > 0, f"memory per job must be > 0 GB, got {config.mem_gb}"),
        (config.timeout_min >= 1, f"time limit per job must be >= 1 minute, got {config.timeout_min}"),
        (config.max_parallel is None or config.max_parallel >= 1,
         f"most jobs at once must be >= 1, got {config.max_parallel}"),
        (config.submitit_cluster is None or config.submitit_cluster in SUBMITIT_CLUSTERS,
         f"unknown submitit cluster {config.submitit_cluster!r}; valid: {', '.join(SUBMITIT_CLUSTERS)}"),
    ]
    for condition, message in checks:
        if not condition:
            raise InputError(message)


# --- the sweep folder -----------------------------------------------------------------------------

def _grid_differences(saved: Grid, given: Grid) -> tuple[list[str], list[str]]:
    """(differences --extend cannot add, differences it can: new values or seeds)."""
    fixed_record = lambda grid: grid_record(grid)["fixed"]  # noqa: E731 - JSON values compare like config.json
    hard = []
    if saved.loss != given.loss:
        hard.append(f"loss (recorded {saved.loss}, given {given.loss})")
    if set(saved.names) != set(given.names):
        hard.append(f"swept options (recorded {', '.join(saved.names)}; given {', '.join(given.names)})")
    if fixed_record(saved) != fixed_record(given):
        hard.append(f"fixed options (recorded {fixed_record(saved)}; given {fixed_record(given)})")
    soft = []
    if not hard:
        recorded = {p.name: p.values for p in saved.params}
        for param in given.params:
            if set(map(repr, param.values)) != set(map(repr, recorded[param.name])):
                texts = lambda values: ", ".join(value_text(param.name, v) for v in values)  # noqa: E731
                soft.append(f"values of {param.name} (recorded {texts(recorded[param.name])}; given "
                            f"{texts(param.values)})")
    if set(saved.seeds) != set(given.seeds):
        soft.append(f"seeds (recorded {', '.join(map(str, saved.seeds))}; given {', '.join(map(str, given.seeds))})")
    return hard, soft


def _merge(saved: Grid, given: Grid) -> Grid:
    """The recorded grid with the given grid's new values and seeds appended."""
    new = {p.name: p.values for p in given.params}
    params = tuple(Param(p.name, p.values + tuple(v for v in new[p.name] if v not in p.values)) for p in saved.params)
    return Grid(saved.loss, params, saved.fixed, saved.seeds + tuple(s for s in given.seeds if s not in saved.seeds))


def reconcile_grid(out_dir: Path, grid: Grid, extend: bool) -> Grid:
    """The grid to run in ``out_dir``: the recorded one when the same (a rerun continues it, in its recorded
    order), the union with --extend, else an InputError saying what differs. Writes nothing."""
    if not (out_dir / schema.SWEEP_FILE).is_file():
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise InputError(f"{out_dir} exists and is not a sweep folder (no {schema.SWEEP_FILE}); choose another "
                             f"--out")
        return grid
    saved = grid_from_record(read_sweep_record(out_dir))
    hard, soft = _grid_differences(saved, grid)
    if hard or (soft and not extend):
        how = ("--extend only adds values and seeds to the same swept and fixed options" if hard and extend else
               "rerun with the same grid to continue it, pass --extend to add values or seeds")
        raise InputError(f"{out_dir} holds a sweep with another grid: it differs in {'; '.join(hard + soft)}. "
                         f"{how}, or choose another --out")
    return _merge(saved, grid) if soft else saved


def _write_record(out_dir: Path, grid: Grid, heads: list[str], command_line: list[str] | None) -> None:
    path = out_dir / schema.SWEEP_FILE
    now = runs.now_iso()
    created = read_sweep_record(out_dir).get("created_at", now) if path.is_file() else now
    write_json_atomic(path, grid_record(grid) | {
        "heads": heads, "created_at": created, "updated_at": now, "command_line": command_line,
        "git_sha": runs.git_sha(), "versions": runs.versions()})


# --- one point: train, then score -----------------------------------------------------------------

@dataclass(frozen=True)
class PointTask:
    """What one job needs (picklable: submitit sends it to another process or node)."""

    config: TrainConfig
    run_dir: str  # absolute
    scoring: EvalConfig  # data_dir, download, device, svc_train_size, quiet
    command_line: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PointOutcome:
    run_dir: str
    failure: str | None = None  # None: trained and scored


def run_point(task: PointTask, log: Log | None = None) -> PointOutcome:
    """Train (or resume) one run and score it on the clean test set; a finished run is not retrained and
    valid scores are not recomputed. Any exception becomes the outcome's failure: the other points go on."""
    run_dir = Path(task.run_dir)
    try:
        if runs.is_finished(run_dir):
            mismatch = run_mismatch(run_dir, task.config)
            if mismatch:
                raise InputError(f"{run_dir} holds a finished run whose config differs from this point's in "
                                 f"{', '.join(mismatch)} (a changed default?); move it away to retrain it")
        else:
            started = run_dir.is_dir() and any(run_dir.iterdir())
            scoring = task.scoring
            train(task.config, run_dir, data_dir=scoring.data_dir, download=scoring.download, device=scoring.device,
                  resume=started, quiet=scoring.quiet, log=log,
                  command_line=list(task.command_line) if task.command_line else None)
        _score(run_dir, task.scoring, log)
    except Exception as error:  # noqa: BLE001 - reported in sweep.csv, retried by a rerun
        return PointOutcome(task.run_dir, f"{type(error).__name__}: {error}")
    return PointOutcome(task.run_dir)


def run_mismatch(run_dir: Path, config: TrainConfig) -> list[str]:
    """Recipe keys in which a run folder's config.json differs from ``config`` (speed options may differ, as
    when resuming a run)."""
    saved = runs.read_config(run_dir)
    expected = json.loads(json.dumps(runs.config_record(config, saved.get("world_size", 1))))
    return sorted(key for key in expected if key not in _SPEED_OPTIONS and saved.get(key) != expected[key])


def is_done(task: PointTask) -> bool:
    """Trained with this point's config and scored for its current weights: nothing left to do."""
    run_dir = Path(task.run_dir)
    return read_scores(run_dir, task.scoring) is not None and not run_mismatch(run_dir, task.config)


def read_scores(run_dir: Path, scoring: EvalConfig) -> dict | None:
    """The run's clean_errors.json when it scores the run's current weights with these settings, else None."""
    path = run_dir / schema.SCORES_FILE
    if not (path.is_file() and runs.is_finished(run_dir)):
        return None
    scores = runs.read_json(path)
    current = (sha256_file(run_dir / runs.WEIGHTS_FILE), scoring.svc_train_size, scoring.seed)
    return scores if (scores.get("weights_sha256"), scores.get("svc_train_size"), scores.get("seed")) == current \
        else None


def _score(run_dir: Path, scoring: EvalConfig, log: Log | None) -> dict:
    scores = read_scores(run_dir, scoring)
    if scores is None:
        result = clean_test_errors(run_dir, scoring, log)
        scores = {"weights_sha256": result.weights_sha256, "errors": result.errors, "n_train": result.n_train,
                  "n_test": result.n_test, "svc_train_size": scoring.svc_train_size, "seed": scoring.seed}
        write_json_atomic(run_dir / schema.SCORES_FILE, scores)
    return scores


# --- launchers ------------------------------------------------------------------------------------

def _launch_local(tasks: list[PointTask], labels: dict[str, str], quiet: bool, log: Log) -> list[PointOutcome]:
    outcomes = []
    for number, task in enumerate(progress(tasks, quiet=quiet, desc="sweep"), 1):
        log(f"[{number}/{len(tasks)}] {labels[task.run_dir]}: training and scoring")
        outcomes.append(run_point(task, log=log))
        _log_outcome(outcomes[-1], labels, log)
    return outcomes


def _launch_submitit(tasks: list[PointTask], labels: dict[str, str], out_dir: Path, config: SweepConfig,
                     log: Log) -> list[PointOutcome]:
    """One submitit job per task (a SLURM job array on a cluster); waits for all of them."""
    try:
        import submitit
    except ImportError:
        raise InputError("--launcher submitit needs the submitit package: pip install 'robustgsl[sweep]'") from None
    executor = submitit.AutoExecutor(folder=out_dir / schema.SUBMITIT_DIR / "%j", cluster=config.submitit_cluster)
    executor.update_parameters(
        name=f"robustgsl-sweep-{out_dir.name}", timeout_min=config.timeout_min, gpus_per_node=config.gpus_per_job,
        cpus_per_task=config.cpus_per_job, mem_gb=config.mem_gb, slurm_partition=config.partition,
        slurm_array_parallelism=config.max_parallel)
    jobs = executor.map_array(run_point, tasks)
    log(f"submitted {len(jobs)} {executor.cluster} job(s); logs in {out_dir / schema.SUBMITIT_DIR}")
    task_of = {job.job_id: task for job, task in zip(jobs, tasks)}
    outcomes = {}
    for job in progress(submitit.helpers.as_completed(jobs, poll_frequency=1), quiet=config.quiet, total=len(jobs),
                        desc="sweep jobs"):
        task = task_of[job.job_id]
        try:
            outcome = job.result()
        except Exception as error:  # noqa: BLE001 - a killed or timed-out job is one failed point
            outcome = PointOutcome(task.run_dir, f"submitit job {job.job_id} failed: {type(error).__name__}: "
                                                 f"{str(error).strip()[-600:]}")
        outcomes[task.run_dir] = outcome
        _log_outcome(outcome, labels, log)
    return [outcomes[task.run_dir] for task in tasks]


def _log_outcome(outcome: PointOutcome, labels: dict[str, str], log: Log) -> None:
    label = labels[outcome.run_dir]
    if outcome.failure is not None:
        log(f"{label}: failed: {outcome.failure}")
        return
    errors = runs.read_json(Path(outcome.run_dir) / schema.SCORES_FILE)["errors"]
    log(f"{label}: clean error " + "  ".join(f"{head} {errors[head]:.2%}" for head in HEADS if head in errors))


# --- the sweep ------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    out_dir: Path
    table: pd.DataFrame  # sweep.csv
    failed: list[str]  # "k=3 seed 0: <failure>" per failed point


def run_sweep(grid: Grid, config: SweepConfig, scoring: EvalConfig | None = None, log: Log | None = None,
              command_line: list[str] | None = None) -> SweepResult:
    """Train and score every point x seed of ``grid`` into ``config.out_dir`` (those not done yet), then
    write sweep.csv and index.html. ``scoring`` gives the data folder, device and SVC settings (training
    uses its data_dir, download, device and quiet too)."""
    scoring = scoring or EvalConfig(quiet=config.quiet)
    log = log or (lambda message: None)
    validate_sweep_config(config)
    validate_eval_config(scoring)
    if config.launcher == "local":  # a submitit job resolves its device where it runs (a GPU node)
        resolve_device(scoring.device)
    out_dir = Path(config.out_dir)
    grid = reconcile_grid(out_dir, grid, config.extend)
    points = grid_points(grid)  # every config is valid before anything is written
    heads = default_heads(grid.loss)
    _write_record(out_dir, grid, heads, command_line)

    tasks = [PointTask(point.config, str((out_dir / point.run_dir).resolve()), scoring,
                       tuple(command_line) if command_line else None) for point in points]
    labels = {task.run_dir: f"{point.label} seed {point.seed}" for point, task in zip(points, tasks)}
    pending = [task for task in tasks if not is_done(task)]
    log(f"sweep {out_dir}: {len(points) // len(grid.seeds)} point(s) x {len(grid.seeds)} seed(s); "
        f"{len(points) - len(pending)} done already, {len(pending)} to run ({config.launcher})")
    if config.launcher == "submitit" and pending:
        outcomes = _launch_submitit(pending, labels, out_dir, config, log)
    else:
        outcomes = _launch_local(pending, labels, config.quiet, log)
    failures = {outcome.run_dir: outcome.failure for outcome in outcomes if outcome.failure is not None}

    table = sweep_table(out_dir, grid, points, heads, scoring, failures)
    write_csv_atomic(out_dir / schema.TABLE_FILE, table, index=False)
    write_sweep_report(out_dir, log=log)
    failed = [f"{labels[task.run_dir]}: {failures[task.run_dir]}" for task in tasks if task.run_dir in failures]
    return SweepResult(out_dir, table, failed)


def sweep_table(out_dir: Path, grid: Grid, points: list[Point], heads: list[str], scoring: EvalConfig,
                failures: dict[str, str]) -> pd.DataFrame:
    """sweep.csv's rows: what each point's run folder holds, with the failures of this session."""
    rows = []
    for point in points:
        run_dir = (out_dir / point.run_dir).resolve()
        failure = failures.get(str(run_dir))
        scores = read_scores(run_dir, scoring) if failure is None else None
        if failure is None and scores is None:  # e.g. a job's node wrote to a folder this host does not see
            failure = f"{point.run_dir.as_posix()} holds no {schema.SCORES_FILE} for its current weights"
        metrics = runs.read_metrics(run_dir) if run_dir.is_dir() else []
        environment = runs.read_environment(run_dir) if runs.is_finished(run_dir) else {}
        rows.append(point.texts() | {
            "seed": point.seed, "run_dir": point.run_dir.as_posix(),
            "status": schema.STATUS_FAILED if failure else schema.STATUS_OK, "failure": failure or "",
        } | {schema.error_column(head): (scores or {}).get("errors", {}).get(head) for head in heads} | {
            "epochs_trained": metrics[-1]["epoch"] if metrics else 0,
            "final_loss": metrics[-1]["loss"] if metrics else None,
            "train_time_s": environment.get("wall_time_s"),
        })
    return pd.DataFrame.from_records(rows, columns=names(schema.sweep_columns(grid.names, tuple(heads))))
