"""A sweep's grid: ``--param NAME=V1,V2,...`` read through each training option's own parser (the option
metadata of robustgsl/config.py, as the CLI does), its points and their validated TrainConfigs, its record
in sweep.json, and the reading of a sweep folder's tables (robustgsl/schema/sweep.py defines the files).
Both the sweep runner (robustgsl/sweep.py) and the sweep page (robustgsl/report/sweep.py) read these.

Grid syntax: values are separated by commas. A list-valued option (milestones) separates its values by
``;`` because each value is itself a comma list: ``--param 'milestones=6,8;10,15'``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from robustgsl import runs
from robustgsl.config import (
    LOSSES, TRAIN_OPTIONS, TrainConfig, make_config, parse_option_value, resolve_config, validate_config,
)
from robustgsl.errors import InputError
from robustgsl.options import OptionSpec, ParseError, format_value, parse_int_list, parse_text
from robustgsl.schema import sweep as schema

LIST_SEPARATOR = ";"
# Options a grid cannot sweep: the loss is one per sweep (--loss), seeds have --seeds, name is set per point.
_NOT_SWEPT = {"loss": "the loss is --loss, one per sweep", "seed": "seeds are swept by --seeds",
              "name": "each point's run is named after its values"}
_SPECS = {spec.name: spec for spec in TRAIN_OPTIONS}


# --- the grid -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One swept option: its config field name and its values (config values, in the order given)."""

    name: str
    values: tuple


@dataclass(frozen=True)
class Grid:
    loss: str
    params: tuple[Param, ...]
    fixed: dict  # training options given on the command line: config field -> value
    seeds: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(param.name for param in self.params)


def value_text(name: str, value: Any) -> str:
    """A value of option ``name`` as the command line writes it ("max", "on", "6,8", "0.001")."""
    return format_value(value, _SPECS[name].default_text)


def sweepable_spec(name: str) -> OptionSpec:
    """The training option a --param names (``embedding-dim``, ``embedding_dim`` or ``--embedding-dim``)."""
    field = name.strip().lstrip("-").replace("-", "_")
    if field in _NOT_SWEPT:
        raise InputError(f"--param {name.strip()}: {_NOT_SWEPT[field]}")
    spec = _SPECS.get(field)
    if spec is None or not spec.cli:
        valid = ", ".join(spec.flag[2:] for spec in TRAIN_OPTIONS if spec.cli and spec.name not in _NOT_SWEPT)
        raise InputError(f"unknown parameter {name.strip()!r} in --param; training options that can be swept: "
                         f"{valid}")
    return spec


def parse_param(text: str) -> Param:
    """``NAME=V1,V2,...`` (a list-valued option: ``NAME=A,B;C,D``), each value through the option's parser."""
    name, equals, values_text = text.partition("=")
    if not equals or not name.strip():
        raise InputError(f"--param must be NAME=V1,V2,..., got {text!r}")
    spec = sweepable_spec(name)
    if not values_text.strip():
        raise InputError(f"--param {spec.name}: empty value list in {text!r}; give at least one value")
    separator = LIST_SEPARATOR if spec.value_type in (list, tuple) else ","
    values: list = []
    for item in values_text.split(separator):
        if not item.strip():
            raise InputError(f"--param {spec.name}: empty value in {text!r} (two separators in a row, or one at "
                             f"an end)")
        value = parse_text(spec, item.strip())
        if value in values:
            raise InputError(f"--param {spec.name}: duplicate value {item.strip()!r} in {text!r} "
                             f"(= {value_text(spec.name, value)})")
        values.append(value)
    return Param(spec.name, tuple(values))


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = parse_int_list(text)
    except ParseError:
        raise InputError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise InputError(f"--seeds: empty seed list {text!r}; give at least one seed, e.g. 0 or 0,1")
    for seed in seeds:
        if seed < 0:
            raise InputError(f"--seeds: seed must be >= 0, got {seed}")
        if seeds.count(seed) > 1:
            raise InputError(f"--seeds: duplicate seed {seed} in {text!r}")
    return tuple(seeds)


def parse_grid(loss: str, params: list[str] | tuple[str, ...], seeds: str, fixed: dict | None = None) -> Grid:
    """The grid of ``--param`` texts x ``--seeds``, with ``fixed`` training options (config field -> value)."""
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    if not params:
        raise InputError("empty grid: give at least one --param NAME=V1,V2,... (e.g. --param k=1,10,max)")
    fixed = dict(fixed or {})
    for name in fixed:
        if name not in _SPECS or name in _NOT_SWEPT:
            raise InputError(f"unknown fixed training option {name!r}")
    parsed: list[Param] = []
    for text in params:
        param = parse_param(text)
        if param.name in [p.name for p in parsed]:
            raise InputError(f"duplicate parameter {param.name}: --param {param.name} given twice; list all its "
                             f"values in one --param {param.name}=V1,V2,...")
        if param.name in fixed:
            raise InputError(f"{param.name} is both swept (--param {text}) and fixed "
                             f"({_SPECS[param.name].flag} {value_text(param.name, fixed[param.name])}); drop one")
        parsed.append(param)
    return Grid(loss, tuple(parsed), fixed, parse_seeds(seeds))


# --- points ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One grid point and seed: its values, its TrainConfig and its run folder (relative to the sweep)."""

    label: str  # the point's folder name, e.g. "k=10,alpha=2"
    values: dict  # option -> config value
    seed: int
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.label) / f"seed{self.seed}"

    def texts(self) -> dict[str, str]:
        return {name: value_text(name, value) for name, value in self.values.items()}


def point_label(values: dict) -> str:
    """Folder name of a point: NAME=VALUE joined by commas; a list's commas as '+', odd characters as '_'."""
    parts = []
    for name, value in values.items():
        text = value_text(name, value).replace(",", "+")
        parts.append(f"{name}={re.sub(r'[^A-Za-z0-9._+-]', '_', text)}")
    return ",".join(parts)


def grid_points(grid: Grid) -> list[Point]:
    """Every point x seed with its validated TrainConfig (grid order: the first parameter varies slowest,
    seeds fastest); an InputError names the point whose values are bad."""
    points, labels = [], {}
    for combination in itertools.product(*(param.values for param in grid.params)):
        values = dict(zip(grid.names, combination))
        label = point_label(values)
        if label in labels:
            raise InputError(f"the values {labels[label]} and {values} give the same run folder name {label!r}; "
                             f"write them with more distinct digits")
        labels[label] = values
        for seed in grid.seeds:
            try:
                config = _point_config(grid, values, seed, name=f"{grid.loss}-{label}-seed{seed}")
            except InputError as error:
                raise InputError(f"grid point {label} (seed {seed}): {error}") from None
            points.append(Point(label, values, seed, config))
    return points


def _point_config(grid: Grid, values: dict, seed: int, name: str) -> TrainConfig:
    """make_config with the fixed options and the point's values; a value of None (k = max) is applied
    explicitly, as make_config reads None as "not given"."""
    given = grid.fixed | values | {"seed": seed}
    config = make_config(grid.loss, name=name, **{k: v for k, v in given.items() if v is not None})
    explicit_none = {k: None for k, v in given.items() if v is None}
    if explicit_none:
        config = resolve_config(dataclasses.replace(config, **explicit_none))
        validate_config(config)
    return config


# --- the sweep folder -----------------------------------------------------------------------------

def grid_record(grid: Grid) -> dict:
    """The grid as sweep.json holds it (values as text)."""
    return {"loss": grid.loss,
            "params": [{"name": p.name, "values": [value_text(p.name, v) for v in p.values]} for p in grid.params],
            "fixed": json.loads(json.dumps(grid.fixed)), "seeds": list(grid.seeds)}


def grid_from_record(record: dict) -> Grid:
    """The grid of a sweep.json (its values parsed back with the options' parsers)."""
    try:
        params = tuple(Param(p["name"], tuple(parse_option_value(p["name"], text) for text in p["values"]))
                       for p in record["params"])
        return Grid(record["loss"], params, dict(record["fixed"]), tuple(record["seeds"]))
    except (KeyError, TypeError) as error:
        raise InputError(f"{schema.SWEEP_FILE} lacks or garbles {error}: is this a robustgsl sweep folder?") from None


def read_sweep_record(sweep_dir: str | Path) -> dict:
    return runs.read_json(Path(sweep_dir) / schema.SWEEP_FILE)


def read_sweep_table(sweep_dir: str | Path) -> pd.DataFrame:
    """sweep.csv with its option values, run folders, statuses and failures as text, errors as numbers."""
    path = Path(sweep_dir) / schema.TABLE_FILE
    record = read_sweep_record(sweep_dir)
    columns = schema.sweep_columns(tuple(p["name"] for p in record["params"]), tuple(record["heads"]))
    text = [column.name for column in columns if column.unit in ("option text", "text")]
    try:
        table = pd.read_csv(path, dtype={name: str for name in text}, keep_default_na=False,
                            na_values={column.name: [""] for column in columns if column.name not in text})
    except FileNotFoundError:
        raise InputError(f"{path} is missing: the sweep has not finished a pass yet") from None
    missing = [column.name for column in columns if column.name not in table.columns]
    if missing:
        raise InputError(f"{path} lacks the columns {', '.join(missing)}")
    return table
