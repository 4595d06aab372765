"""Table rows for the report: numbers formatted once here, passed to the template as plain strings.

The template escapes every string (jinja2 autoescape), so nothing here builds HTML. Each cell carries
``data-*`` attributes naming what it holds, which lets tests find a number without parsing layout.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

import numpy as np

from robustgsl import published
from robustgsl.config import TRAIN_OPTIONS
from robustgsl.corruptions import by_family
from robustgsl.metrics import CLEAN, RELIABILITY_Z
from robustgsl.report.load import Evaluation
from robustgsl.schema.run import CONFIG_FIELDS, DERIVED_CONFIG_FIELDS, ENVIRONMENT_FIELDS, VERSION_PACKAGES
from robustgsl.vocabulary import DATASET_INFO, HEADS

NOT_AVAILABLE = "—"

# torchvision's CIFAR-10 class order.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# Rows of the hyperparameter and environment tables: keys in the order of robustgsl/schema/run.py (other
# keys follow alphabetically), each with its help text from the option metadata or the schema. The
# environment's nested ``versions`` becomes one row per package.
CONFIG_ORDER = CONFIG_FIELDS
CONFIG_HELP = {spec.name: spec.help for spec in TRAIN_OPTIONS} | {f.name: f.description for f in DERIVED_CONFIG_FIELDS}
ENVIRONMENT_ORDER = tuple(name for f in ENVIRONMENT_FIELDS
                          for name in (VERSION_PACKAGES if f.name == "versions" else (f.name,)))
ENVIRONMENT_HELP = {f.name: f"{f.description}; {f.unit}" for f in ENVIRONMENT_FIELDS} | {
    package: f"version of {package}" for package in VERSION_PACKAGES}


def environment_rows(environment: dict | None) -> dict | None:
    """environment.json as the table shows it: one entry per package version, the command line as typed."""
    if not environment:
        return environment
    rows = {key: value for key, value in environment.items() if key != "versions"}
    versions = environment.get("versions")
    if isinstance(versions, dict):
        rows.update(versions)
    elif versions is not None:
        rows["versions"] = versions
    command = rows.get("command_line")
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        rows["command_line"] = shlex.join(command)
    return rows


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _two_decimals(value: float) -> str:
    text = f"{value:.2f}"
    # A tiny negative value (a float sum that should be 0) rounds to "-0.00": show it as the zero it is.
    return "0.00" if text == "-0.00" else text


def percent(fraction: Any) -> str:
    """A fraction in [0, 1] as a percentage with two decimals, e.g. 0.0506 -> '5.06'."""
    return NOT_AVAILABLE if is_missing(fraction) else _two_decimals(100.0 * float(fraction))


def number(value: Any) -> str:
    """A value already on a percentage scale (MCE, CE_c), two decimals."""
    return NOT_AVAILABLE if is_missing(value) else _two_decimals(float(value))


def interval(low: Any, high: Any, as_percent: bool) -> str:
    if is_missing(low) or is_missing(high):
        return ""
    show = percent if as_percent else number
    return f"[{show(low)}, {show(high)}]"


def class_name(dataset: str | None, label: int, classes: list[str] | None = None) -> str:
    """A label's class name: ``classes`` (an image folder's) when given, else the data set's, else "class N"."""
    if classes is not None and 0 <= label < len(classes):
        return str(classes[label])
    if dataset == "cifar10" and 0 <= label < len(CIFAR10_CLASSES):
        return CIFAR10_CLASSES[label]
    if dataset == "digits":
        return f"digit {label}"
    return f"class {label}"


def corruption_label(corruption: str) -> str:
    return corruption.replace("_", " ")


def _best_flags(values: list[float]) -> list[bool]:
    finite = [value for value in values if not is_missing(value)]
    if len(finite) < 2:
        return [False] * len(values)
    best = min(finite)
    return [not is_missing(value) and value == best for value in values]


# --- Table 2 ---------------------------------------------------------------------------------

TABLE2_COLUMNS = (
    # (column, title, unit, value is a fraction, has an interval)
    ("clean_error", "Clean error", "%", True, True),
    ("mean_corruption_error", "Mean corruption error", "%", True, False),
    ("mce", "MCE", "baseline = 100", False, True),
    ("relative_mce", "Relative MCE", "baseline = 100", False, True),
)


# MCE and relative MCE average CE_c over the corruptions whose ratio is defined; summary.csv counts them
# (column -> count column, footnote mark, why a corruption's ratio can be undefined).
PARTIAL_AVERAGES = {
    "mce": ("mce_corruptions", "*", "CE_c is undefined where the baseline made no error at any severity"),
    "relative_mce": ("relative_mce_corruptions", "†",
                     "relative CE_c is undefined where the baseline's errors, summed over the severities, "
                     "equal its clean error times the number of severities (a zero denominator)"),
}


def evaluated_corruptions(evaluation: Evaluation) -> list[str]:
    """The corruptions evaluated: evaluation.json's list, else those of the CSVs."""
    listed = evaluation.meta.get("corruptions")
    if isinstance(listed, list) and listed:
        return [str(name) for name in listed]
    for frame in (evaluation.corruption_summary, evaluation.errors):
        if frame is not None:
            return [c for c in dict.fromkeys(frame["corruption"]) if c != CLEAN]
    return []


def _undefined_ratios(evaluation: Evaluation, key: str, column: str) -> list[str]:
    """Corruptions whose ``column`` ("ce" / "relative_ce") is empty in corruption_summary.csv for ``key``."""
    frame = evaluation.corruption_summary
    if frame is None:
        return []
    chosen = frame[(frame["model"] + "/" + frame["head"] == key) & frame[column].isna()]
    return list(dict.fromkeys(chosen["corruption"]))


def partial_averages(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """Per MCE column: which model/heads average fewer corruptions than were evaluated, and the footnote."""
    summary, corruptions = evaluation.summary, evaluated_corruptions(evaluation)
    out: dict[str, dict[str, Any]] = {}
    if summary is None or not corruptions:
        return out
    for column, (count_column, mark, why) in PARTIAL_AVERAGES.items():
        if count_column not in summary:
            continue
        short = {f"{r['model']}/{r['head']}": int(r[count_column]) for r in summary.to_dict("records")
                 if not is_missing(r[count_column]) and int(r[count_column]) < len(corruptions)}
        if not short:
            continue
        counts = sorted(set(short.values()))
        averaged = " to ".join(str(c) for c in (counts[0], counts[-1])) if len(counts) > 1 else str(counts[0])
        left_out = list(dict.fromkeys(
            c for key in short for c in _undefined_ratios(evaluation, key, column.replace("mce", "ce"))))
        which = (f"; left out here: {', '.join(corruption_label(c) for c in left_out)}" if left_out
                 else "; such corruptions are left out")
        out[column] = {
            "keys": short, "mark": mark,
            "note": f"{mark} {'MCE' if column == 'mce' else 'Relative MCE'} averages {averaged} of the "
                    f"{len(corruptions)} evaluated corruptions: {why}{which}. "
                    f"Not directly comparable with an average over all {len(corruptions)} corruptions "
                    "(such as the published figures).",
        }
    return out


def per_seed_values(evaluation: Evaluation) -> dict[tuple[str, str], list[tuple[int | None, dict]]]:
    """(model/head key, column) -> [(seed, seed_summary.csv record)], for models with several seeds."""
    frame = evaluation.seed_summary
    if frame is None:
        return {}
    out: dict = {}
    for record in frame.to_dict("records"):
        key = f"{record['model']}/{record['head']}"
        out.setdefault(key, []).append((None if is_missing(record["seed"]) else int(record["seed"]), record))
    return {key: values for key, values in out.items() if len(values) > 1}


def _seed_title(values: list[tuple[int | None, dict]] | None, column: str, as_percent: bool) -> str:
    """The per-seed values of a cell, for its title (hover) text."""
    if not values or column not in values[0][1]:
        return ""
    show = percent if as_percent else number
    return " · ".join(f"seed {seed}: {show(record[column])}" for seed, record in values)


def _std(record: dict, column: str, as_percent: bool) -> str:
    value = record.get(f"{column}_std")
    if is_missing(value) or (record.get("n_seeds") or 1) < 2:
        return ""
    return f"± {percent(value) if as_percent else number(value)}"


def readable(evaluation: Evaluation, text: str) -> str:
    """A reason from a CSV with its corruption names as the page writes them (gaussian noise)."""
    for name in sorted(evaluated_corruptions(evaluation), key=len, reverse=True):
        text = text.replace(name, corruption_label(name))
    return str(text)


def is_unreliable(record: dict, column: str) -> bool:
    """A ratio flagged by evaluate (``<column>_reliable`` False); absent flags (older folders) flag nothing."""
    flag = record.get(f"{column}_reliable")
    return flag is False or flag == 0


def _table2_best(summary, column: str) -> list[bool]:
    """Best (lowest) per column; a flagged relative MCE is never the best."""
    records = summary.to_dict("records")
    return _best_flags([float("nan") if is_unreliable(record, column) else float(record[column])
                        for record in records])


def table2(evaluation: Evaluation) -> dict[str, Any]:
    summary = evaluation.summary
    columns = [{"name": c, "title": t, "unit": u} for c, t, u, _, _ in TABLE2_COLUMNS]
    partial = partial_averages(evaluation)
    n_corruptions = len(evaluated_corruptions(evaluation))
    by_seed = per_seed_values(evaluation)
    best = {column: _table2_best(summary, column) for column, *_ in TABLE2_COLUMNS}
    rows, unreliable = [], []
    for index, record in enumerate(summary.to_dict("records")):
        key = f"{record['model']}/{record['head']}"
        cells = []
        for column, _, _, as_percent, has_interval in TABLE2_COLUMNS:
            value = record[column]
            short = partial.get(column, {}).get("keys", {})
            flagged = is_unreliable(record, column)
            if flagged:
                unreliable.append((key, readable(evaluation, record.get(f"{column}_reliability") or "flagged")))
            cells.append({
                "text": percent(value) if as_percent else number(value),
                "sd": _std(record, column, as_percent),
                "title": _seed_title(by_seed.get(key), column, as_percent),
                "interval": interval(record[f"{column}_low"], record[f"{column}_high"], as_percent)
                if has_interval else "",
                "best": best[column][index],
                "unreliable": flagged,
                "why": f"not reliable: {readable(evaluation, str(record.get(f'{column}_reliability')))}" if flagged else "",
                "mark": partial[column]["mark"] if key in short else "",
                "mark_title": f"averages {short[key]} of {n_corruptions} corruptions" if key in short else "",
                "attrs": {"data-key": key, "data-column": column},
            })
        n_seeds = record.get("n_seeds")
        rows.append({"key": key, "is_baseline": key == evaluation.baseline, "cells": cells,
                     "n_seeds": "1" if is_missing(n_seeds) else str(int(n_seeds)),
                     "seeds_title": f"seeds {record.get('seeds')}" if record.get("seeds") else "",
                     "n_test": "" if is_missing(record["n_test"]) else str(int(record["n_test"]))})
    footnotes = [entry["note"] for entry in partial.values()]
    return {"columns": columns, "rows": rows, "footnotes": footnotes, "unreliable": unreliable,
            "seeds": seed_statement(evaluation)}


def seed_counts(evaluation: Evaluation) -> list[int]:
    summary = evaluation.summary
    if summary is None or "n_seeds" not in summary:
        return [1]
    return sorted({int(n) for n in summary["n_seeds"] if not is_missing(n)}) or [1]


def seed_statement(evaluation: Evaluation) -> str:
    """What the intervals and the ± cover, and how MCE is paired across seeds."""
    counts = seed_counts(evaluation)
    if counts == [1]:
        return ("One training seed per model: the brackets cover test-set noise only, not the run-to-run "
                "variance of training (train-both --seeds 0,1,2 measures it).")
    seeds = " or ".join(str(c) for c in counts)
    return (f"Mean over {seeds} training seeds, ± their sample standard deviation (hover a value for each seed's); "
            "brackets: the bootstrap interval of that mean. The MCE of seed N is computed against the baseline's "
            "seed N (paired), or against its only run when it has one.")


def per_seed_table(evaluation: Evaluation) -> dict[str, Any] | None:
    """Every seed's Table 2 values (seed_summary.csv), for models with several seeds."""
    frame = evaluation.seed_summary
    by_seed = per_seed_values(evaluation)
    if frame is None or not by_seed:
        return None
    columns = [(c, t, as_percent) for c, t, _, as_percent, _ in TABLE2_COLUMNS if c in frame]
    rows = []
    for key, values in by_seed.items():
        for seed, record in values:
            rows.append({"key": key, "seed": NOT_AVAILABLE if seed is None else str(seed),
                         "baseline_seed": "" if is_missing(record.get("baseline_seed")) else
                         str(int(record["baseline_seed"])),
                         "cells": [{"text": percent(record[c]) if p else number(record[c]),
                                    "unreliable": is_unreliable(record, c),
                                    "title": str(record.get(f"{c}_reliability") or "") if is_unreliable(record, c)
                                    else ""} for c, _, p in columns]})
    return {"columns": [t for _, t, _ in columns], "rows": rows,
            "paired": "baseline_seed" in frame and frame["baseline_seed"].notna().any()}


# --- the paper's figures beside the measured ones ----------------------------------------------

def dataset_name(dataset: str | None) -> str:
    info = DATASET_INFO.get(dataset or "")
    return info.display_name if info else (dataset or "an unknown data set")


def model_losses(evaluation: Evaluation) -> dict[str, str | None]:
    """model -> its loss (from its first run)."""
    losses: dict[str, str | None] = {}
    for run in evaluation.runs:
        losses.setdefault(run.model, run.loss or (run.config or {}).get("loss"))
    return losses


def published_table2(evaluation: Evaluation) -> dict[str, Any] | None:
    """The paper's Table 2, for an evaluation on its data set only; else None."""
    if evaluation.meta.get("dataset") != published.TABLE_2_DATASET:
        return None
    dims = sorted({run.config.get("embedding_dim") for run in evaluation.runs
                   if run.config and run.config.get("loss") == "gsl" and run.config.get("embedding_dim")})
    expected = published.TABLE_2_GSL["embedding_dim"]
    note = "" if not dims or dims == [expected] else (
        f"The paper's GSL model has d = {expected}; this report's has d = {', '.join(map(str, dims))} "
        "(`train-both --preset paper-table2` trains d = 200).")
    return {"rows": [{"method": row.method, "clean_error": f"{row.clean_error:.2f}", "mce": f"{row.mce:.2f}",
                      "relative_mce": f"{row.relative_mce:.2f}"} for row in published.TABLE_2],
            "source": f"{published.SHORT_CITATION}, Table 2 ({dataset_name(published.TABLE_2_DATASET)}-C, "
                      "PreActResNet-18, one run; GSL: k max, d = 200, α = 2, 10-NN)",
            "citation": published.CITATION, "note": note}


def published_table1(evaluation: Evaluation) -> dict[str, Any] | None:
    """Measured clean errors beside the paper's Table 1 row of the same data set, loss and head; else None."""
    dataset = evaluation.meta.get("dataset")
    if dataset not in published.table1_datasets() or evaluation.summary is None:
        return None
    losses = model_losses(evaluation)
    rows = []
    for record in evaluation.summary.to_dict("records"):
        entry = published.table1_error(dataset, losses.get(record["model"]), record["head"])
        if entry is None:
            continue
        key = f"{record['model']}/{record['head']}"
        measured = 100 * float(record["clean_error"])
        rows.append({"key": key, "method": entry.method, "measured": percent(record["clean_error"]),
                     "sd": _std(record, "clean_error", True), "published": f"{entry.clean_error:.2f}",
                     "difference": f"{measured - entry.clean_error:+.2f}",
                     "attrs": {"data-key": key, "data-published": f"{entry.clean_error:.2f}"}})
    if not rows:
        return None
    return {"rows": rows, "dataset": dataset_name(dataset),
            "source": f"{published.SHORT_CITATION}, Table 1 ({dataset_name(dataset)}, PreActResNet-18, one run)",
            "citation": published.CITATION}


def dataset_line(evaluation: Evaluation) -> str | None:
    """One line under Table 2 when the data set is not the published Table 2's."""
    dataset = evaluation.meta.get("dataset")
    if dataset == published.TABLE_2_DATASET:
        return None
    table1 = " (its Table 1 clean errors are shown beside the measured ones)" \
        if dataset in published.table1_datasets() else ""
    return (f"Measured on {dataset_name(dataset)}, not {dataset_name(published.TABLE_2_DATASET)}: the paper's "
            f"Table 2 figures ({dataset_name(published.TABLE_2_DATASET)}-C) are not comparable and not shown"
            f"{table1}.")


def scale_line(evaluation: Evaluation) -> str | None:
    """One line for the first screen: the training scale of the evaluated runs, and, below the paper's
    (robustgsl.published.TRAINING_SCALE), that its robustness claim needs full training. None without runs."""
    configs = [run.config for run in evaluation.runs if run.kind == "run" and run.config]
    if not configs:
        return None
    devices = sorted({str((run.environment or {}).get("device", "?")).split(":")[0] for run in evaluation.runs
                      if run.kind == "run"})
    widths = sorted({float(config.get("width", 1.0)) for config in configs})
    epochs = sorted({int(config.get("epochs", 0)) for config in configs})
    counts = seed_counts(evaluation)
    parts = [dataset_name(evaluation.meta.get("dataset")),
             "width " + " or ".join(_fraction(width) for width in widths),
             " or ".join(map(str, epochs)) + " epochs",
             " or ".join(map(str, counts)) + (" seed" if counts == [1] else " seeds") + " per model",
             "trained on " + " and ".join({"cpu": "CPU", "cuda": "GPU"}.get(device, device) for device in devices)]
    scale = published.TRAINING_SCALE
    full = widths == [scale["width"]] and epochs == [scale["epochs"]] \
        and evaluation.meta.get("dataset") == published.TABLE_2_DATASET
    if full:
        return "Scale: " + " · ".join(parts) + ": the paper's training scale."
    claim = next(row for row in published.TABLE_2 if row.loss == "gsl")
    # Its figures only beside the same data set: elsewhere the report promises not to show them.
    figures = f": MCE {claim.mce:g}, relative MCE {claim.relative_mce:g}" \
        if evaluation.meta.get("dataset") == published.TABLE_2_DATASET else ""
    return ("Reduced scale: " + " · ".join(parts) + f". The paper's claim (GSL more robust than CE{figures}) "
            "needs its full training "
            f"({dataset_name(published.TABLE_2_DATASET)}, width {_fraction(scale['width'])}, {scale['epochs']} "
            "epochs); these figures neither confirm nor refute it.")


def _fraction(width: float) -> str:
    """0.125 -> '1/8', 1.0 -> '1', 0.3 -> '0.3'."""
    if width >= 1 or not (1 / width).is_integer():
        return f"{width:g}"
    return f"1/{int(1 / width)}"


# --- per corruption ----------------------------------------------------------------------------

def corruption_table(evaluation: Evaluation, keys: list[str]) -> dict[str, Any]:
    """CE_c and relative CE_c per corruption and model/head; without a baseline (both empty), the mean
    error over severities instead."""
    frame = evaluation.corruption_summary
    frame = frame.assign(key=frame["model"] + "/" + frame["head"])
    keys = [key for key in keys if key in set(frame["key"])] + sorted(set(frame["key"]) - set(keys))
    lookup = {(r["key"], r["corruption"]): r for r in frame.to_dict("records")}
    if frame["ce"].notna().any():
        columns = [("ce", "CE", number), ("relative_ce", "rel.", number)]
        footer_columns = [("mce", number), ("relative_mce", number)]
        footer_title = "MCE"
    else:
        columns = [("mean_error", "mean error %", percent)]
        footer_columns = [("mean_corruption_error", percent)]
        footer_title = "Mean"
    corruptions = list(dict.fromkeys(frame["corruption"]))
    groups = []
    for group, members in by_family(corruptions):
        rows = []
        for corruption in members:
            first = columns[0][0]
            best = _best_flags([lookup.get((key, corruption), {}).get(first, float("nan")) for key in keys])
            cells = []
            for key, is_best in zip(keys, best):
                record = lookup.get((key, corruption))
                for index, (column, _, show) in enumerate(columns):
                    value = record[column] if record else float("nan")
                    # An undefined ratio is a dash (explained in the caption); a defined but flagged one is greyed.
                    flagged = column == "relative_ce" and record is not None and not is_missing(value) \
                        and is_unreliable(record, column)
                    cells.append({"text": show(value), "best": is_best and index == 0, "secondary": index > 0,
                                  "unreliable": flagged,
                                  "title": str(record.get("relative_ce_reliability") or "") if flagged else "",
                                  "attrs": {"data-key": key, "data-corruption": corruption,
                                            "data-column": column}})
            rows.append({"corruption": corruption, "label": corruption_label(corruption), "cells": cells})
        groups.append({"name": group, "rows": rows})
    footer = []
    partial = partial_averages(evaluation)
    if evaluation.summary is not None:
        by_key = {f"{r['model']}/{r['head']}": r for r in evaluation.summary.to_dict("records")}
        for key in keys:
            for index, (column, show) in enumerate(footer_columns):
                short = key in partial.get(column, {}).get("keys", {})
                record = by_key.get(key, {})
                footer.append({"text": show(record.get(column, float("nan"))), "secondary": index > 0,
                               "mark": partial[column]["mark"] if short else "",
                               "unreliable": is_unreliable(record, column),
                               "title": str(record.get(f"{column}_reliability") or "")
                               if is_unreliable(record, column) else ""})
    undefined = [column for column, _, _ in columns
                 if column in ("ce", "relative_ce") and frame[column].isna().any()]
    flagged = any(cell.get("unreliable") for group in groups for row in group["rows"] for cell in row["cells"])
    return {"keys": keys, "columns": [{"name": c, "title": t} for c, t, _ in columns], "groups": groups,
            "footer": footer, "footer_title": footer_title, "has_undefined": bool(undefined),
            "has_unreliable": flagged, "rule": RELIABILITY_RULE,
            "footnotes": [entry["note"] for entry in partial.values()]}


# How evaluate decides that a relative CE_c is unreliable (robustgsl/metrics.py states the formula).
RELIABILITY_RULE = (f"the baseline's denominator, its errors summed over the severities minus the clean error, is "
                    f"within {RELIABILITY_Z:g} binomial standard errors of zero on this test set (or, in some seed, "
                    "undefined)")


def _heat_colour(value: float, vmax: float, cmap) -> tuple[str, str]:
    """Background and text colour of a heat-map cell (light = low error, dark red = high)."""
    from matplotlib.colors import to_hex

    if is_missing(value):
        return "#f3f4f6", "#6b7280"
    share = min(max(value / vmax, 0.0), 1.0) if vmax > 0 else 0.0
    red, green, blue, _ = cmap(0.02 + 0.9 * share)
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return to_hex((red, green, blue)), ("#ffffff" if luminance < 0.5 else "#1f2937")


def heat_tables(evaluation: Evaluation, keys: list[str]) -> dict[str, Any]:
    """Error (%) by corruption x severity, one small table per model/head, on one shared colour scale."""
    import matplotlib

    cmap = matplotlib.colormaps["YlOrRd"]
    errors = evaluation.errors.assign(key=evaluation.errors["model"] + "/" + evaluation.errors["head"])
    keys = [key for key in keys if key in set(errors["key"])] + sorted(set(errors["key"]) - set(keys))
    corrupted = errors[errors["corruption"] != CLEAN]
    severities = sorted(set(int(s) for s in corrupted["severity"]))
    corruptions = list(dict.fromkeys(corrupted["corruption"]))
    vmax = float(corrupted["error"].max()) if len(corrupted) else 1.0
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    lookup = {(r["key"], r["corruption"], int(r["severity"])): r["error"] for r in errors.to_dict("records")}
    mean_lookup = {}
    if evaluation.corruption_summary is not None:
        for r in evaluation.corruption_summary.to_dict("records"):
            mean_lookup[(f"{r['model']}/{r['head']}", r["corruption"])] = r["mean_error"]
    tables = []
    for key in keys:
        groups = []
        for group, members in by_family(corruptions):
            rows = []
            for corruption in members:
                cells = []
                for severity in severities:
                    value = lookup.get((key, corruption, severity), float("nan"))
                    background, ink = _heat_colour(value, vmax, cmap)
                    cells.append({"text": percent(value), "style": f"background:{background};color:{ink}",
                                  "attrs": {"data-key": key, "data-corruption": corruption,
                                            "data-severity": str(severity)}})
                mean = mean_lookup.get((key, corruption), float("nan"))
                rows.append({"label": corruption_label(corruption), "cells": cells, "mean": percent(mean)})
            groups.append({"name": group, "rows": rows})
        clean = lookup.get((key, CLEAN, 0), float("nan"))
        tables.append({"key": key, "groups": groups, "clean": percent(clean),
                       "clean_attrs": {"data-key": key, "data-corruption": CLEAN, "data-severity": "0"}})
    stops = ", ".join(f"{_heat_colour(vmax * t / 8, vmax, cmap)[0]} {100 * t / 8:.0f}%" for t in range(9))
    return {"tables": tables, "severities": severities, "vmax": percent(vmax),
            "gradient": f"linear-gradient(to right, {stops})",
            "differences": difference_tables(evaluation, lookup, mean_lookup, corruptions, severities)}


def difference_pairs(evaluation: Evaluation) -> list[tuple[str, str, str]]:
    """(GSL key, CE key, note) to compare cell by cell: the same head of the first GSL and CE models, then the
    paper's comparison, GSL 10-NN against the CE argmax."""
    losses = model_losses(evaluation)
    ce = next((m for m in evaluation.models if losses.get(m) == "ce"), None)
    gsl = next((m for m in evaluation.models if losses.get(m) == "gsl"), None)
    if ce is None or gsl is None:
        return []
    keys = set(evaluation.keys)
    pairs = [(f"{gsl}/{head}", f"{ce}/{head}", "same head") for head in HEADS
             if f"{gsl}/{head}" in keys and f"{ce}/{head}" in keys]
    if f"{gsl}/10nn" in keys and f"{ce}/argmax" in keys:
        pairs.append((f"{gsl}/10nn", f"{ce}/argmax", "the paper's comparison"))
    return pairs


def _difference_colour(value: float, vmax: float, cmap) -> tuple[str, str]:
    """Diverging colours: blue where GSL errs less, red where it errs more, white at 0."""
    from matplotlib.colors import to_hex

    if is_missing(value):
        return "#f3f4f6", "#6b7280"
    share = min(max(value / vmax, -1.0), 1.0) if vmax > 0 else 0.0
    red, green, blue, _ = cmap(0.5 + 0.45 * share)
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return to_hex((red, green, blue)), ("#ffffff" if luminance < 0.5 else "#1f2937")


def difference_tables(evaluation: Evaluation, lookup: dict, mean_lookup: dict, corruptions: list[str],
                      severities: list[int]) -> dict[str, Any] | None:
    """GSL minus CE error (percentage points) by corruption x severity, on one symmetric colour scale."""
    import matplotlib

    pairs = difference_pairs(evaluation)
    if not pairs:
        return None
    cmap = matplotlib.colormaps["RdBu_r"]
    cells = {(gsl, ce, c, s): lookup.get((gsl, c, s), np.nan) - lookup.get((ce, c, s), np.nan)
             for gsl, ce, _ in pairs for c in corruptions for s in severities}
    finite = [abs(v) for v in cells.values() if np.isfinite(v)]
    vmax = max(finite) if finite and max(finite) > 0 else 0.01
    tables = []
    for gsl, ce, note in pairs:
        groups = []
        for group, members in by_family(corruptions):
            rows = []
            for corruption in members:
                row = []
                for severity in severities:
                    value = cells[(gsl, ce, corruption, severity)]
                    background, ink = _difference_colour(value, vmax, cmap)
                    row.append({"text": _signed_points(value), "style": f"background:{background};color:{ink}",
                                "attrs": {"data-diff": f"{gsl} - {ce}", "data-corruption": corruption,
                                          "data-severity": str(severity)}})
                mean = mean_lookup.get((gsl, corruption), np.nan) - mean_lookup.get((ce, corruption), np.nan)
                rows.append({"label": corruption_label(corruption), "cells": row, "mean": _signed_points(mean)})
            groups.append({"name": group, "rows": rows})
        clean = lookup.get((gsl, CLEAN, 0), np.nan) - lookup.get((ce, CLEAN, 0), np.nan)
        tables.append({"gsl": gsl, "ce": ce, "note": note, "groups": groups, "clean": _signed_points(clean)})
    stops = ", ".join(f"{_difference_colour(vmax * (t - 4) / 4, vmax, cmap)[0]} {100 * t / 8:.0f}%" for t in range(9))
    return {"tables": tables, "vmax": f"{100 * vmax:.1f}", "gradient": f"linear-gradient(to right, {stops})"}


def _signed_points(difference: float) -> str:
    """A difference of two fractions in percentage points, signed, one decimal (the cells stay narrow):
    -0.0123 -> '-1.2'."""
    if is_missing(difference):
        return NOT_AVAILABLE
    text = f"{100.0 * float(difference):+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


# --- hyperparameters ---------------------------------------------------------------------------

def _show(value: Any, key: str | None = None) -> str:
    if key == "paper_deviations" and isinstance(value, list):  # "field: value (paper: value)" texts
        return "; ".join(map(str, value)) if value else "none (the paper's recipe)"
    if value is None and key in _NONE_TEXT:  # what an unset option means (k: max, compile: by device)
        return _NONE_TEXT[key]
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return json.dumps(value)


DOES_NOT_APPLY = "n/a"
_NONE_TEXT = {spec.name: spec.default_text for spec in TRAIN_OPTIONS if spec.default_text and spec.default is None}
# Which recorded configs use each training field (robustgsl/config.py's ``applies`` metadata).
CONFIG_APPLIES = {spec.name: spec.applies_to for spec in TRAIN_OPTIONS}


def side_by_side(named: list[tuple[str, dict | None]], order: tuple[str, ...],
                 help_texts: dict[str, str] | None = None, applies: dict | None = None) -> list[dict[str, Any]]:
    """Rows key -> one value per run, with a flag on keys whose values differ between runs.

    ``applies[key](record)`` says whether a key means something for a run: where it does not, the run
    shows DOES_NOT_APPLY, and a key that applies to no run is left out.
    """
    applies = applies or {}
    present = [d for _, d in named if d]
    keys = [k for k in order if any(k in d for d in present)]
    keys += sorted({k for d in present for k in d} - set(keys))
    rows = []
    for key in keys:
        used = [bool(d) and (key not in applies or applies[key](d)) for _, d in named]
        if present and not any(used):
            continue
        values = [(_show(d[key], key) if d and key in d else NOT_AVAILABLE) if use or not d else DOES_NOT_APPLY
                  for (_, d), use in zip(named, used)]
        rows.append({"key": key, "values": values, "differs": len(set(values) - {DOES_NOT_APPLY}) > 1,
                     "help": (help_texts or {}).get(key)})
    return rows


def duration(seconds: Any) -> str:
    if is_missing(seconds):
        return NOT_AVAILABLE
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
