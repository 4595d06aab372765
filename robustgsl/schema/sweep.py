"""A sweep folder (written by robustgsl/sweep.py; its page by robustgsl/report/sweep.py):

    <sweep>/sweep.json                 the grid: loss, swept options and their values, fixed options, seeds
    <sweep>/sweep.csv                  one row per grid point and seed (``sweep_columns``)
    <sweep>/index.html                 error against each swept option, one line per head
    <sweep>/<point>/seed<S>/           the run folder of one point and seed (robustgsl/schema/run.py), with
        clean_errors.json              its clean test error per head (SCORES_FIELDS)
    <sweep>/submitit/                  submitit's job files and logs (--launcher submitit)

A point's folder is named after its values, ``NAME=VALUE`` joined by commas in --param order, e.g.
``k=10,alpha=2``: the value as the command line writes it, with a list's commas written as "+"
(``milestones=6+8``) and any character other than letters, digits and ``. _ + -`` as "_".

Values in sweep.json and in the option columns of sweep.csv are text as the command line writes them
(``robustgsl.options.format_value``: "max" for k's complete graph, on/off, "100,150" for a list); read
them back with ``robustgsl.config.parse_option_value``. An error is a fraction in [0, 1] of the clean test
images; the losses are those of robustgsl/schema/run.py's metrics.jsonl.
"""

from __future__ import annotations

from robustgsl.schema import Field

SWEEP_FILE = "sweep.json"
TABLE_FILE = "sweep.csv"
REPORT_FILE = "index.html"
SCORES_FILE = "clean_errors.json"
SUBMITIT_DIR = "submitit"

STATUS_OK = "ok"
STATUS_FAILED = "failed"

RECORD_FIELDS = (
    Field("loss", "text", "ce or gsl: the loss of every run"),
    Field("params", "list of objects", "swept options in --param order, each {name, values}: the option's "
                                       "config field name and its values as text, in the order given"),
    Field("fixed", "object", "training options given on the command line (config field -> value, as in "
                             "config.json); every other option has its preset or default value"),
    Field("seeds", "list of integers", "seeds every point trains with"),
    Field("heads", "list of text", "heads scored on the clean test set, in robustgsl.heads.HEADS order"),
    Field("created_at", "ISO 8601 time, UTC", "first start of the sweep"),
    Field("updated_at", "ISO 8601 time, UTC", "last start (a rerun, or --extend)"),
    Field("command_line", "list of text", "the command of the last start"),
    Field("git_sha", "text", "commit of the robustgsl checkout (null outside git)"),
    Field("versions", "object", "same keys as a run's environment.json versions"),
)

SCORES_FIELDS = (
    Field("weights_sha256", "text", "SHA-256 of the model.safetensors the errors are of (a retrained run is "
                                    "scored again)"),
    Field("errors", "object of fractions", "clean test error per head"),
    Field("n_train", "count", "training images of the data set: the k-NN and SVC references (the run trained "
                              "on n_train - val_size of them)"),
    Field("n_test", "count", "clean test images scored"),
    Field("svc_train_size", "count", "most training embeddings the SVC is fitted on; null = all"),
    Field("seed", "integer", "seed of the SVC's training subset"),
)

POINT_COLUMNS = (
    Field("seed", "integer", "the run's seed"),
    Field("run_dir", "text", "run folder, relative to the sweep folder (POSIX separators)"),
    Field("status", "text", f"{STATUS_OK} (trained and scored) or {STATUS_FAILED}"),
    Field("failure", "text", "why the point failed: exception type and message; empty when ok", required=False),
)
RUN_COLUMNS = (
    Field("epochs_trained", "count", "epochs finished (metrics.jsonl); 0 before the first", required=False),
    Field("final_loss", "training loss", "mean training loss of the last finished epoch", required=False),
    Field("train_time_s", "seconds", "training wall time, resumptions added (environment.json)", required=False),
)


def error_column(head: str) -> str:
    """The sweep.csv column of a head's clean test error, e.g. error_10nn."""
    return f"error_{head}"


def sweep_columns(params: tuple[str, ...], heads: tuple[str, ...]) -> tuple[Field, ...]:
    """sweep.csv's columns: one per swept option (its config field name, the value as text), the point
    columns, one clean-error column per head (empty unless ok), then the run's own figures."""
    return (
        tuple(Field(name, "option text", f"value of the swept option {name}") for name in params)
        + POINT_COLUMNS
        + tuple(Field(error_column(head), "fraction", f"clean test error of the {head} head", required=False)
                for head in heads)
        + RUN_COLUMNS
    )
