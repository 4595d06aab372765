"""Is a model/head's difference from the baseline real? One sentence per comparison for the report.

A difference counts when it exceeds both kinds of noise: the paired-bootstrap interval (test-set noise;
robustgsl/metrics.py) excludes the baseline's value, and, with several training seeds, every seed lies
on the same side of it (run-to-run variance; robustgsl/seeds.py). With one seed only the first can be
checked, and the sentence says so. A relative MCE flagged as unreliable by evaluate gets no verdict.
"""

from __future__ import annotations

from typing import Any

from robustgsl.report.load import Evaluation
from robustgsl.report.tables import is_missing, is_unreliable, number, per_seed_values

BADGES = {"better": {"ratio": "more robust", "clean": "lower clean error"},
          "worse": {"ratio": "less robust", "clean": "higher clean error"},
          "same": {"ratio": "within noise", "clean": "within noise"},
          "seeds": {"ratio": "within seed spread", "clean": "within seed spread"},
          "unknown": {"ratio": "no interval", "clean": "no interval"},
          "unreliable": {"ratio": "unreliable", "clean": "unreliable"}}
# Badge colour classes: a difference within the seed spread is shown like one within the bootstrap noise.
KIND_CLASS = {"seeds": "same", "unreliable": "unknown"}


def _side(low: float, high: float, reference: float) -> str:
    return "better" if high < reference else "worse" if low > reference else "same"


def _judge(value: float, low: float, high: float, seed_range: tuple[float, float] | None, reference: float,
           show, label: str, n_seeds: int) -> tuple[str, str]:
    """(kind, sentence) of one statistic against ``reference`` (100 for ratios, 0 for a difference)."""
    named = f"{reference:g}"
    text = f"{label} {show(value)}" + (f" (mean of {n_seeds} seeds)" if n_seeds > 1 else "")
    if is_missing(low) or is_missing(high):
        return "unknown", f"{text}; no bootstrap interval was computed, so its noise is unknown."
    bounds = f"[{show(low)}, {show(high)}]"
    boot = _side(low, high, reference)
    where = {"better": "below", "worse": "above"}
    if seed_range is None:
        if boot == "same":
            return "same", f"{text} {bounds} contains {named}: within the bootstrap noise (one seed)."
        return boot, (f"{text} {bounds} is {where[boot]} {named} beyond the bootstrap noise; one training "
                      "seed, so the run-to-run variance is not measured.")
    seeds = _side(*seed_range, reference)
    span = f"seeds from {show(seed_range[0])} to {show(seed_range[1])}"
    if boot != "same" and seeds == boot:
        return boot, (f"{text} {bounds}: {where[boot]} {named} beyond the bootstrap noise and in every seed "
                      f"({span}).")
    if boot != "same":
        return "seeds", (f"{text} {bounds} excludes {named}, but the {span} straddle it: within the "
                         "seed spread.")
    extra = f" (every seed {where[seeds]} it: {span})" if seeds != "same" else f" ({span})"
    return "same", f"{text} {bounds} contains {named}: within the bootstrap noise{extra}."


def _range(by_seed: list | None, column: str) -> tuple[float, float] | None:
    values = [float(record[column]) for _, record in by_seed or [] if column in record and not is_missing(record[column])]
    return (min(values), max(values)) if len(values) > 1 else None


def _points(value: float) -> str:
    return f"{100.0 * value:+.2f}"


def verdicts(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Per non-baseline model/head: MCE, relative MCE and clean error against the baseline."""
    summary, baseline = evaluation.summary, evaluation.baseline
    records = summary.to_dict("records")
    base = [r for r in records if f"{r['model']}/{r['head']}" == baseline]
    baseline_clean = base[0]["clean_error"] if base else float("nan")
    by_seed = per_seed_values(evaluation)
    out = []
    for record in records:
        key = f"{record['model']}/{record['head']}"
        if key == baseline:
            continue
        n_seeds = int(record.get("n_seeds") or 1) if not is_missing(record.get("n_seeds")) else 1
        items = []
        for column, label in (("mce", "MCE"), ("relative_mce", "Relative MCE")):
            if is_missing(record[column]):
                kind, sentence = "unknown", f"No {label}: it needs a baseline."
            elif is_unreliable(record, column):
                kind, sentence = "unreliable", f"{label} {number(record[column])} is not reliable (‡ under Table 2): " \
                                               "no verdict."
            else:
                kind, sentence = _judge(record[column], record[f"{column}_low"], record[f"{column}_high"],
                                        _range(by_seed.get(key), column), 100.0, number, label, n_seeds)
            items.append(_item(kind, "ratio", sentence, column))
        if is_missing(baseline_clean) or is_missing(record["clean_error"]):
            kind, sentence = "unknown", "No clean-error difference: it needs a baseline."
        else:
            kind, sentence = _judge(record["clean_error"] - baseline_clean, record["clean_error_diff_low"],
                                    record["clean_error_diff_high"], _range(by_seed.get(key), "clean_error_diff"),
                                    0.0, _points, "Clean error difference (points)", n_seeds)
        items.append(_item(kind, "clean", sentence, "clean_error"))
        out.append({"key": key, "items": items})
    return out


def _item(kind: str, family: str, sentence: str, column: str) -> dict[str, str]:
    return {"kind": KIND_CLASS.get(kind, kind), "badge": BADGES[kind][family], "sentence": sentence,
            "column": column}

