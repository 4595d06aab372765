"""The page of a sweep folder (index.html beside sweep.csv): clean error against each swept option.

The layout of Bontonou et al. 2019's Figures 2-4 (accuracy against k, d and alpha): one figure per swept
option, one line per head (mean over seeds, a band from the lowest to the highest seed), one panel per
combination of the other swept options' values; the paper's finding on that option is quoted beside
its figure. Every figure is labelled with its scale (data set, width, epochs, batch, training images,
seeds). Self-contained and escaped like the evaluation report (robustgsl/report/render.py).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from robustgsl import __version__, runs
from robustgsl.config import preset_values
from robustgsl.io import write_text_atomic
from robustgsl.report import figures, tables
from robustgsl.report.page import environment, href, readable_time
from robustgsl.schema import sweep as schema
from robustgsl.sweep_grid import Grid, grid_from_record, read_sweep_record, read_sweep_table, sweepable_spec, value_text

PAPER = "Bontonou et al. 2019, arXiv:1905.00301"
# The paper's findings on GSL's own parameters (paraphrased; the paper plots test accuracy, this page
# error): option -> (figure, finding).
PAPER_FINDINGS = {
    "k": ("Figure 2", "On CIFAR-10 and SVHN, test accuracy rises with the number of neighbours k and is flat once "
                      "k is past about the number of classes."),
    "embedding_dim": ("Figure 3", "Accuracy drops only slowly once the output dimension d exceeds the number of "
                                  "classes."),
    "alpha": ("Figure 4", "Accuracy hardly depends on alpha while alpha is small."),
}
# The scale of the paper's figures: its recipe (the ``paper`` preset), on CIFAR-10 (and SVHN for Figure 2).
PAPER_DATASETS = ("cifar10", "svhn")
# Options drawn on a log axis whatever their values (learning rates and k span decades); any other
# positive numeric option gets one when its values span a factor of 10 or more.
LOG_AXES = ("k", "lr", "weight_decay")
MAX_K_LABEL = "max"


@dataclass
class Sweep:
    """What the page shows: the record, the grid, the table and each scored run's config and scores."""

    sweep_dir: Path
    record: dict
    grid: Grid
    table: pd.DataFrame
    configs: dict[str, dict]  # run_dir (relative text) -> config.json, for the runs that are ok
    scores: dict[str, dict]  # run_dir -> clean_errors.json

    @property
    def heads(self) -> list[str]:
        return list(self.record["heads"])

    @property
    def ok(self) -> pd.DataFrame:
        return self.table[self.table["status"] == schema.STATUS_OK]


def load_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    sweep_dir = Path(sweep_dir)
    record = read_sweep_record(sweep_dir)
    table = read_sweep_table(sweep_dir)
    configs, scores = {}, {}
    for run_dir in table.loc[table["status"] == schema.STATUS_OK, "run_dir"]:
        configs[run_dir] = runs.read_config(sweep_dir / run_dir)
        scores[run_dir] = runs.read_json(sweep_dir / run_dir / schema.SCORES_FILE)
    return Sweep(sweep_dir, record, grid_from_record(record), table, configs, scores)


# --- scale ----------------------------------------------------------------------------------------

def _one_or_all(values: list) -> str:
    distinct = list(dict.fromkeys(values))
    return " / ".join(str(value) for value in distinct)


def scale_facts(sweep: Sweep, run_dirs: list[str]) -> list[tuple[str, str]]:
    """(label, value) of what the runs are: data set, width, epochs, batch, training and test images, seeds."""
    configs = [sweep.configs[run_dir] for run_dir in run_dirs]
    scores = [sweep.scores[run_dir] for run_dir in run_dirs]
    if not configs:
        return []
    swept = set(sweep.grid.names)

    def fact(key: str, show: Callable[[Any], str] = str) -> str:
        return "swept" if key in swept else _one_or_all([show(config[key]) for config in configs])

    seeds = sorted({int(seed) for seed in sweep.table.loc[sweep.table["run_dir"].isin(run_dirs), "seed"]})
    return [
        ("data set", fact("dataset")),
        ("PreActResNet-18 width", fact("width", lambda w: f"{w:g}")),
        ("epochs", fact("epochs")),
        ("batch", fact("batch_size")),
        ("training images", _one_or_all([f"{s['n_train'] - c['val_size']:,}" for s, c in zip(scores, configs)])),
        ("test images", _one_or_all([f"{s['n_test']:,}" for s in scores])),
        ("seeds", ", ".join(map(str, seeds)) + (" (one seed: no spread)" if len(seeds) == 1 else "")),
    ]


def scale_notes(sweep: Sweep) -> list[str]:
    """Where these runs are smaller than, or other than, the paper's."""
    paper = preset_values("paper", None)
    configs = list(sweep.configs.values())
    notes = []
    widths = sorted({c["width"] for c in configs if c["width"] < paper["width"]})
    epochs = sorted({c["epochs"] for c in configs if c["epochs"] < paper["epochs"]})
    datasets = sorted({c["dataset"] for c in configs if c["dataset"] not in PAPER_DATASETS})
    if widths or epochs:
        parts = ([f"width {', '.join(f'{w:g}' for w in widths)} (the paper: {paper['width']:g})"] if widths else []) + \
                ([f"{', '.join(map(str, epochs))} epoch(s) (the paper: {paper['epochs']})"] if epochs else [])
        notes.append(f"Reduced scale: {' and '.join(parts)}. Compare the shapes of the curves with the paper's "
                     f"figures, not their levels.")
    if datasets:
        notes.append(f"Other data: {', '.join(datasets)}; the paper's figures are for "
                     f"{' and '.join(d.upper().replace('CIFAR10', 'CIFAR-10') for d in PAPER_DATASETS)}.")
    if sweep.record.get("loss") == "ce":
        notes.append("A cross-entropy sweep: the paper's Figures 2-4 are about GSL's own parameters (k, d, alpha), "
                     "which do not change a CE model.")
    return notes


# --- one figure per swept option --------------------------------------------------------------------

def _is_categorical(name: str) -> bool:
    return sweepable_spec(name).value_type not in (int, float)


def _x_position(name: str, value: Any, index: int, rows: pd.DataFrame, sweep: Sweep) -> float:
    """Where a value sits on the x axis: its index (categorical), batch size - 1 for k = max, else itself."""
    if _is_categorical(name):
        return float(index)
    if value is None:  # k = max: the complete graph on a batch, k = batch size - 1
        configs = [sweep.configs[run_dir] for run_dir in rows["run_dir"]] or list(sweep.configs.values())
        return float(configs[0]["batch_size"] - 1) if configs else math.nan
    return float(value)


def _panel(sweep: Sweep, name: str, values: tuple, chosen: pd.DataFrame, title: str) -> dict:
    ticks: tuple[list[float], list[str]] = ([], [])
    curves = {head: {"x": [], "mean": [], "low": [], "high": []} for head in sweep.heads}
    for index, value in enumerate(values):
        text = value_text(name, value)
        rows = chosen[chosen[name] == text]
        x = _x_position(name, value, index, rows, sweep)
        if math.isnan(x):
            continue
        ticks[0].append(x)
        ticks[1].append(MAX_K_LABEL if name == "k" and value is None else text)
        for head, curve in curves.items():
            errors = 100 * rows[schema.error_column(head)].dropna().to_numpy(dtype=float)
            stats = (errors.mean(), errors.min(), errors.max()) if len(errors) else (math.nan,) * 3
            for key, stat in zip(("mean", "low", "high"), stats):
                curve[key].append(stat)
            curve["x"].append(x)
    return {"title": title, "ticks": ticks, "curves": curves}


def _log_axis(name: str, panels: list[dict]) -> bool:
    if _is_categorical(name):
        return False
    positions = [x for panel in panels for x in panel["ticks"][0]]
    return name in LOG_AXES or (bool(positions) and min(positions) > 0 and max(positions) / min(positions) >= 10)


def option_panels(sweep: Sweep, index: int) -> list[dict]:
    """The panels of the index-th swept option's figure: one per combination of the other options' values
    (titled "alpha = 2, lr = 0.1"), each with the ticks and, per head, x and the mean, lowest and highest
    error (%) over the seeds of the runs that are ok."""
    param = sweep.grid.params[index]
    others = [p for j, p in enumerate(sweep.grid.params) if j != index]
    ok, panels = sweep.ok, []
    for combination in itertools.product(*(other.values for other in others)):
        texts = {other.name: value_text(other.name, value) for other, value in zip(others, combination)}
        mask = np.ones(len(ok), dtype=bool)
        for name, text in texts.items():
            mask &= (ok[name] == text).to_numpy()
        panels.append(_panel(sweep, param.name, param.values, ok[mask],
                             ", ".join(f"{n} = {t}" for n, t in texts.items())))
    return panels


def option_figure(sweep: Sweep, index: int, colours: dict[str, str]) -> dict[str, Any]:
    """The figure of the index-th swept option, its scale label and the paper's finding on it."""
    param = sweep.grid.params[index]
    others = [p for j, p in enumerate(sweep.grid.params) if j != index]
    ok, panels = sweep.ok, option_panels(sweep, index)
    finding = PAPER_FINDINGS.get(param.name) if sweep.record.get("loss") == "gsl" else None
    has_data = any(np.isfinite(v) for p in panels for c in p["curves"].values() for v in c["mean"])
    log_x = _log_axis(param.name, panels)
    return {
        "name": param.name,
        "figure": figures.sweep_figure(panels, sweep.heads, colours, param.name, log_x, _is_categorical(param.name),
                                       f"error-vs-{param.name}") if has_data else None,
        "scale": scale_facts(sweep, list(ok["run_dir"])),
        "finding": {"figure": finding[0], "text": finding[1], "source": PAPER} if finding else None,
        "log_x": log_x,
        "panels_by": ", ".join(other.name for other in others),
    }


# --- the page -------------------------------------------------------------------------------------

def _rows(sweep: Sweep, page_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for record in sweep.table.to_dict("records"):
        rows.append({
            "values": [record[name] for name in sweep.grid.names], "seed": int(record["seed"]),
            "status": record["status"], "failure": record["failure"],
            "errors": [tables.percent(record[schema.error_column(head)]) for head in sweep.heads],
            "epochs": tables.NOT_AVAILABLE if tables.is_missing(record["epochs_trained"]) else
            int(record["epochs_trained"]),
            "loss": tables.NOT_AVAILABLE if tables.is_missing(record["final_loss"]) else f"{record['final_loss']:.4g}",
            "time": tables.duration(record["train_time_s"]),
            "run_dir": record["run_dir"], "href": href(sweep.sweep_dir / record["run_dir"], page_dir),
        })
    return rows


def _facts(sweep: Sweep) -> list[tuple[str, str]]:
    record, grid = sweep.record, sweep.grid
    fixed = ", ".join(f"{sweepable_spec(name).flag} {value_text(name, value)}" for name, value in grid.fixed.items())
    command = record.get("command_line")
    failed = int((sweep.table["status"] == schema.STATUS_FAILED).sum())
    return [
        ("loss", grid.loss),
        ("grid", " × ".join(f"{p.name} ({len(p.values)})" for p in grid.params) + f" × {len(grid.seeds)} seed(s)"),
        ("runs", f"{len(sweep.table)}: {len(sweep.table) - failed} ok, {failed} failed"),
        ("fixed options", fixed or "none (preset and defaults)"),
        ("heads", ", ".join(sweep.heads)),
        ("started", f"{readable_time(record.get('created_at'))}; last run {readable_time(record.get('updated_at'))}"),
        ("git SHA", record.get("git_sha") or tables.NOT_AVAILABLE),
        ("command", shlex.join(command) if isinstance(command, list) else tables.NOT_AVAILABLE),
    ]


def render_sweep_report(sweep: Sweep, page_dir: Path) -> str:
    """The HTML text of a sweep's page."""
    colours = figures.key_colours(sweep.heads, None)
    names = ", ".join(sweep.grid.names)
    context = {
        "title": f"Sweep: {sweep.grid.loss} over {names}",
        "version": __version__,
        "facts": _facts(sweep),
        "colours": colours,
        "heads": sweep.heads,
        # An option given one value is not swept: it names the panels of the others, it gets no figure.
        "options": [option_figure(sweep, index, colours) for index, param in enumerate(sweep.grid.params)
                    if len(param.values) > 1],
        "notes": scale_notes(sweep),
        "names": list(sweep.grid.names),
        "rows": _rows(sweep, page_dir),
        "files": [{"name": name, "href": href(sweep.sweep_dir / name, page_dir)}
                  for name in (schema.TABLE_FILE, schema.SWEEP_FILE, schema.SUBMITIT_DIR)
                  if (sweep.sweep_dir / name).exists()],
        "record_json": json.dumps({key: sweep.record.get(key) for key in ("params", "fixed", "seeds")}, indent=2),
    }
    return environment().get_template("sweep.html").render(**context)


def write_sweep_report(sweep_dir: str | os.PathLike, out_path: str | os.PathLike | None = None,
                       log: Callable[[str], None] | None = None) -> Path:
    """Write the page of the sweep folder ``sweep_dir`` (default ``<sweep_dir>/index.html``); return its path."""
    sweep = load_sweep(sweep_dir)
    out_path = Path(out_path) if out_path is not None else sweep.sweep_dir / schema.REPORT_FILE
    write_text_atomic(out_path, render_sweep_report(sweep, out_path.parent))
    if log is not None:
        log(f"sweep page written to {out_path}")
    return out_path
