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

from robustgsl.config import TRAIN_OPTIONS
from robustgsl.corruptions import CORRUPTION_FAMILIES, EXTRA_FAMILIES
from robustgsl.metrics import CLEAN
from robustgsl.report.load import Evaluation
from robustgsl.schema.run import CONFIG_FIELDS, DERIVED_CONFIG_FIELDS, ENVIRONMENT_FIELDS, VERSION_PACKAGES

NOT_AVAILABLE = "—"

# The four families of the 15 benchmark corruptions (robustgsl.corruptions.CORRUPTION_FAMILIES), each with
# the extra corruptions that resemble it.
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    family: members + tuple(name for name, group in EXTRA_FAMILIES.items() if group == family)
    for family, members in CORRUPTION_FAMILIES.items()
}
OTHER_GROUP = "other"

# Bontonou et al. 2019, "Introducing Graph Smoothness Loss for Training Deep Learning Architectures"
# (arXiv:1905.00301), Table 2: PreActResNet-18 on CIFAR-10 / CIFAR-10-C. Clean error in %, MCE and
# relative MCE with the cross-entropy model as the baseline (= 100).
PUBLISHED_TABLE_2 = (
    {"method": "CE, argmax", "clean_error": 5.06, "mce": 100.0, "relative_mce": 100.0},
    {"method": "GSL, 10-NN", "clean_error": 5.60, "mce": 95.28, "relative_mce": 90.33},
)
PUBLISHED_SOURCE = "Bontonou et al. 2019, arXiv:1905.00301, Table 2 (CIFAR-10, PreActResNet-18)"

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


def group_of(corruption: str) -> str:
    for group, members in CORRUPTION_GROUPS.items():
        if corruption in members:
            return group
    return OTHER_GROUP


def grouped(corruptions: list[str]) -> list[tuple[str, list[str]]]:
    """Corruptions in evaluation order, gathered under their family, families in the usual order."""
    order = list(CORRUPTION_GROUPS) + [OTHER_GROUP]
    groups = {group: [c for c in corruptions if group_of(c) == group] for group in order}
    return [(group, members) for group, members in groups.items() if members]


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


def table2(evaluation: Evaluation) -> dict[str, Any]:
    summary = evaluation.summary
    columns = [{"name": c, "title": t, "unit": u} for c, t, u, _, _ in TABLE2_COLUMNS]
    partial = partial_averages(evaluation)
    n_corruptions = len(evaluated_corruptions(evaluation))
    rows = []
    best = {
        column: _best_flags([float(value) for value in summary[column]])
        for column, *_ in TABLE2_COLUMNS
    }
    for index, record in enumerate(summary.to_dict("records")):
        key = f"{record['model']}/{record['head']}"
        cells = []
        for column, _, _, as_percent, has_interval in TABLE2_COLUMNS:
            value = record[column]
            short = partial.get(column, {}).get("keys", {})
            cells.append({
                "text": percent(value) if as_percent else number(value),
                "interval": interval(record[f"{column}_low"], record[f"{column}_high"], as_percent)
                if has_interval else "",
                "best": best[column][index],
                "mark": partial[column]["mark"] if key in short else "",
                "mark_title": f"averages {short[key]} of {n_corruptions} corruptions" if key in short else "",
                "attrs": {"data-key": key, "data-column": column},
            })
        rows.append({"key": key, "is_baseline": key == evaluation.baseline, "cells": cells,
                     "n_test": "" if is_missing(record["n_test"]) else str(int(record["n_test"]))})
    return {"columns": columns, "rows": rows, "footnotes": [entry["note"] for entry in partial.values()]}


def published_rows() -> list[dict[str, str]]:
    return [
        {"method": row["method"], "clean_error": f"{row['clean_error']:.2f}", "mce": f"{row['mce']:.2f}",
         "relative_mce": f"{row['relative_mce']:.2f}"}
        for row in PUBLISHED_TABLE_2
    ]


def _verdict_mce(record: dict) -> tuple[str, str]:
    """(kind, sentence) for the MCE: kind is better / worse / same / unknown than the baseline."""
    mce, low, high = record["mce"], record["mce_low"], record["mce_high"]
    if is_missing(mce):
        return "unknown", "No MCE: it needs a baseline."
    if is_missing(low) or is_missing(high):
        return "unknown", f"MCE {number(mce)}; no bootstrap interval was computed, so its noise is unknown."
    bounds = interval(low, high, as_percent=False)
    if high < 100.0:
        return "better", f"MCE {number(mce)} {bounds} excludes 100: more robust than the baseline, beyond the bootstrap noise."
    if low > 100.0:
        return "worse", f"MCE {number(mce)} {bounds} excludes 100: less robust than the baseline, beyond the bootstrap noise."
    return "same", f"MCE {number(mce)} {bounds} contains 100: not distinguishable from the baseline."


def _verdict_clean(record: dict, baseline_clean: float) -> tuple[str, str]:
    """(kind, sentence) for the clean error difference from the baseline, in percentage points."""
    low, high = record["clean_error_diff_low"], record["clean_error_diff_high"]
    if is_missing(baseline_clean) or is_missing(record["clean_error"]):
        return "unknown", "No clean-error difference: it needs a baseline."
    text = f"Clean error {100.0 * (record['clean_error'] - baseline_clean):+.2f} points"
    if is_missing(low) or is_missing(high):
        return "unknown", f"{text}; no bootstrap interval was computed."
    bounds = f"[{100.0 * low:+.2f}, {100.0 * high:+.2f}]"
    if low > 0.0:
        return "worse", f"{text} {bounds} excludes 0: higher than the baseline, beyond the bootstrap noise."
    if high < 0.0:
        return "better", f"{text} {bounds} excludes 0: lower than the baseline, beyond the bootstrap noise."
    return "same", f"{text} {bounds} contains 0: same clean error as the baseline within the bootstrap noise."


VERDICT_BADGES = {
    "mce": {"better": "more robust", "worse": "less robust", "same": "within noise", "unknown": "no interval"},
    "clean": {"better": "lower clean error", "worse": "higher clean error", "same": "within noise",
              "unknown": "no interval"},
}


def verdicts(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Per non-baseline model/head: is its difference from the baseline outside the bootstrap noise?"""
    summary, baseline = evaluation.summary, evaluation.baseline
    records = summary.to_dict("records")
    base = [r for r in records if f"{r['model']}/{r['head']}" == baseline]
    baseline_clean = base[0]["clean_error"] if base else float("nan")
    out = []
    for record in records:
        key = f"{record['model']}/{record['head']}"
        if key == baseline:
            continue
        items = []
        for name, (kind, sentence) in (("mce", _verdict_mce(record)),
                                       ("clean", _verdict_clean(record, baseline_clean))):
            items.append({"kind": kind, "badge": VERDICT_BADGES[name][kind], "sentence": sentence})
        out.append({"key": key, "items": items})
    return out


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
    for group, members in grouped(corruptions):
        rows = []
        for corruption in members:
            first = columns[0][0]
            best = _best_flags([lookup.get((key, corruption), {}).get(first, float("nan")) for key in keys])
            cells = []
            for key, is_best in zip(keys, best):
                record = lookup.get((key, corruption))
                for index, (column, _, show) in enumerate(columns):
                    value = record[column] if record else float("nan")
                    cells.append({"text": show(value), "best": is_best and index == 0, "secondary": index > 0,
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
                footer.append({"text": show(by_key.get(key, {}).get(column, float("nan"))), "secondary": index > 0,
                               "mark": partial[column]["mark"] if short else ""})
    undefined = [column for column, _, _ in columns
                 if column in ("ce", "relative_ce") and frame[column].isna().any()]
    return {"keys": keys, "columns": [{"name": c, "title": t} for c, t, _ in columns], "groups": groups,
            "footer": footer, "footer_title": footer_title, "has_undefined": bool(undefined),
            "footnotes": [entry["note"] for entry in partial.values()]}


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
        for group, members in grouped(corruptions):
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
            "gradient": f"linear-gradient(to right, {stops})"}


# --- hyperparameters ---------------------------------------------------------------------------

def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return json.dumps(value)


def side_by_side(named: list[tuple[str, dict | None]], order: tuple[str, ...],
                 help_texts: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows key -> one value per run, with a flag on keys whose values differ between runs."""
    present = [d for _, d in named if d]
    keys = [k for k in order if any(k in d for d in present)]
    keys += sorted({k for d in present for k in d} - set(keys))
    rows = []
    for key in keys:
        values = [(_show(d[key]) if d and key in d else NOT_AVAILABLE) for _, d in named]
        rows.append({"key": key, "values": values, "differs": len(set(values)) > 1,
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
