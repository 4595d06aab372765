"""The baseline of MCE and relative MCE: one evaluated model/head, or a reference scored elsewhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from robustgsl.errors import InputError
from robustgsl.evaluate.models import EvaluatedModel
from robustgsl.metrics import ERROR_COLUMNS

# Without --baseline, the CE model's own classifier scores 100 (Hendrycks & Dietterich's convention).
DEFAULT_BASELINE = ("ce", "argmax")


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

    def known_errors(self) -> dict[tuple[str, int], float]:
        errors = self.errors
        return {(c, int(s)): float(e) for c, s, e in zip(errors["corruption"], errors["severity"], errors["error"])}


def check_reference_covers(reference: ReferenceScores, rows: Sequence[tuple[str, int]]) -> None:
    """Refuse a baseline without an error rate for every row of this evaluation."""
    known = reference.known_errors()
    missing = [f"{c} {s}" for c, s in rows if (c, s) not in known]
    if missing:
        raise InputError(f"the baseline {reference.name}/{reference.head} has no error rate for "
                         f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} (corruption severity); "
                         f"evaluate it on every corruption and severity asked for here")


def reference_named(reference: ReferenceScores | None, models: list[EvaluatedModel]) -> ReferenceScores | None:
    """The reference, renamed <name>-baseline when an evaluated model has its name."""
    if reference is None or reference.name not in {m.name for m in models}:
        return reference
    name = f"{reference.name}-baseline"
    return dataclasses.replace(reference, name=name, errors=reference.errors.assign(model=name),
                               entry=reference.entry | {"name": name})


def choose_baseline(models: list[EvaluatedModel], asked: tuple[str, str] | None,
                    reference: ReferenceScores | None) -> tuple[str, str] | None:
    """A reference's key; else the baseline asked for (it must be evaluated), else ce/argmax when
    evaluated, else none."""
    if reference is not None:
        if asked is not None:
            raise InputError(f"give a baseline result or --baseline {'/'.join(asked)}, not both")
        return reference.name, reference.head
    available = list(dict.fromkeys((m.group, h) for m in models for h in m.heads))
    if asked is not None and asked not in available:
        raise InputError(f"baseline {'/'.join(asked)} is not among the evaluated rows: "
                         f"{', '.join(f'{m}/{h}' for m, h in available)}")
    if asked is None and DEFAULT_BASELINE in available:
        return DEFAULT_BASELINE
    return asked


def reference_rows(reference: ReferenceScores, rows: list[tuple[str, int]],
                   test_digest: str) -> tuple[np.ndarray | None, pd.DataFrame | None]:
    """The reference on this evaluation's rows: its per-image results when they are about the same test
    images, else (for the tables, without bootstrap intervals) its error rates."""
    if reference.wrong is not None and reference.test_digest == test_digest and set(rows) <= set(reference.rows):
        return reference.wrong[[reference.rows.index(row) for row in rows]], None
    known = reference.known_errors()
    return None, pd.DataFrame.from_records(
        [{"model": reference.name, "head": reference.head, "corruption": c, "severity": s, "error": known[(c, s)]}
         for c, s in rows], columns=list(ERROR_COLUMNS))
