"""The on-disk formats, one module per folder kind: file names, CSV columns, JSON fields, array names, units.

``robustgsl.schema.run`` describes a training run folder, ``robustgsl.schema.evaluation`` an evaluation
folder, ``robustgsl.schema.corruption`` a corruption folder (the CIFAR-10-C layout plus a manifest),
``robustgsl.schema.sweep`` a sweep folder (a grid of run folders, sweep.csv, sweep.json). Their
writers (robustgsl/runs.py, robustgsl/train.py, robustgsl/evaluate/writing.py, robustgsl/corruptions/dataset.py)
and readers (robustgsl/runs.py, robustgsl/report/load.py, robustgsl/corruptions/manifest.py) take names
and columns from here, and the tests check every writer's output, and the report's test fixture, against
these definitions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """A CSV column, JSON field or array: its name, its unit (or kind) and what it holds."""

    name: str
    unit: str
    description: str
    required: bool = True  # a reader needs it (the others may be absent and read as missing)
    needs_baseline: bool = False  # written only when the evaluation has a baseline


def names(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields)
