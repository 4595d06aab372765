"""An evaluation folder (written by robustgsl/evaluate/writing.py, read by robustgsl/report/load.py):

    errors.csv              long table: one error rate per model, head, seed, corruption and severity
    summary.csv             Table 2 per model/head: clean error, MCE, relative MCE, bootstrap intervals, the
                            spread over seeds, whether relative MCE is reliable
    seed_summary.csv        the same per seed (the values behind summary.csv's means)
    corruption_summary.csv  CE_c and relative CE_c per model/head and corruption, and their reliability
    severity_curves.csv     error against severity per model/head and corruption family, bootstrap bands
    robustbench.csv         accuracies in RobustBench's layout (its unaggregated_results.csv)
    robustbench_summary.csv clean accuracy and RobustBench's robust accuracy per model/head
    evaluation.json         what was evaluated, how, with which versions
    embeddings.npz          test embeddings behind the report's 2-D view
    example_images.npz      one test image under every corruption and severity (the report's grid)
    snapshots/<folder>/     copies of a run's embedding snapshots (robustgsl/schema/run.py), one folder per
                            model that has them (MODEL_FIELDS "snapshots")
    index.html              the report (robustgsl/report)

Units: an error or accuracy is a fraction in [0, 1]; MCE, relative MCE, CE_c and relative CE_c are in
percent of the baseline's (the baseline scores 100). The clean test set is the row corruption = CLEAN,
severity 0. Corruption names are those of robustgsl.corruptions; a model is named by its run's config
``name`` (made unique within an evaluation), an external model by --model-name (default: its factory's
name), and a head is one of robustgsl.heads.HEADS.

Models and seeds (robustgsl/seeds.py): runs whose configs differ only in their seed (and name) are one
model, named after its first run (config ``name``, made unique within an evaluation); each run is one
seed of it. Tables per model average over its seeds (mean; ``_std`` the sample standard deviation,
empty for one seed; ``_min``/``_max``); a run's MCE is computed against the baseline run of the same
seed (paired), or against the baseline's only run when it has one. Bootstrap intervals are those of the
mean over seeds, from the same resampled test images for every run.
"""

from __future__ import annotations

from robustgsl.schema import Field

CLEAN = "clean"

ERRORS_FILE = "errors.csv"
SUMMARY_FILE = "summary.csv"
CORRUPTION_SUMMARY_FILE = "corruption_summary.csv"
ROBUSTBENCH_FILE = "robustbench.csv"
ROBUSTBENCH_SUMMARY_FILE = "robustbench_summary.csv"
RECORD_FILE = "evaluation.json"
EMBEDDINGS_FILE = "embeddings.npz"
EXAMPLES_FILE = "example_images.npz"
REPORT_FILE = "index.html"
SEED_SUMMARY_FILE = "seed_summary.csv"
SEVERITY_FILE = "severity_curves.csv"
SNAPSHOTS_DIR = "snapshots"
# severity_curves.csv's family of every evaluated corruption together.
ALL_FAMILIES = "all"
# Every file of an evaluation folder (written as a whole: robustgsl.io.atomic_folder).
FILES = (ERRORS_FILE, SUMMARY_FILE, SEED_SUMMARY_FILE, CORRUPTION_SUMMARY_FILE, SEVERITY_FILE, ROBUSTBENCH_FILE,
         ROBUSTBENCH_SUMMARY_FILE, RECORD_FILE, EMBEDDINGS_FILE, EXAMPLES_FILE, REPORT_FILE, SNAPSHOTS_DIR)

_KEY = (Field("model", "text", "model name"), Field("head", "text", "head name"))
_SEED = Field("seed", "integer", "training seed of the run; empty for a model whose config records none",
              required=False)

ERRORS_COLUMNS = _KEY + (
    _SEED,
    Field("corruption", "text", f"corruption name, or {CLEAN!r} for the clean test set"),
    Field("severity", "integer", "1..5, or 0 for the clean test set"),
    Field("error", "fraction", "test images misclassified"),
)


def _interval(name: str, unit: str, what: str) -> tuple[Field, Field]:
    """The two ends of a 95 % paired-bootstrap interval (computed only against a baseline)."""
    return tuple(Field(f"{name}_{end}", unit, f"{what}: 95 % paired-bootstrap interval, {end} end",
                       required=False, needs_baseline=True) for end in ("low", "high"))


# The metrics summarised over seeds: each has <name>_std, <name>_min and <name>_max in summary.csv.
SEED_METRICS = ("clean_error", "mean_corruption_error", "mce", "relative_mce")


def _spread(name: str, unit: str, what: str, needs_baseline: bool = False) -> tuple[Field, ...]:
    """The spread of a metric over the seeds of a model."""
    return tuple(Field(f"{name}_{statistic}", unit, f"{what}: {text} over seeds", required=False,
                       needs_baseline=needs_baseline)
                 for statistic, text in (("std", "sample standard deviation (empty for one seed)"),
                                         ("min", "lowest"), ("max", "highest")))


def _reliability(name: str, what: str, needs_baseline: bool) -> tuple[Field, Field]:
    """Whether a ratio is trustworthy, and why not (robustgsl.metrics: relative_ce_reliability)."""
    return (Field(f"{name}_reliable", "boolean", f"False where {what} is undefined or unreliable",
                  required=False, needs_baseline=needs_baseline),
            Field(f"{name}_reliability", "text", f"why {what} is not reliable; empty where it is",
                  required=False, needs_baseline=needs_baseline))


SUMMARY_COLUMNS = _KEY + (
    Field("baseline", "text", "MODEL/HEAD that scores 100 in MCE; empty without a baseline", required=False),
    Field("n_seeds", "count", "training seeds (runs) averaged", required=False),
    Field("seeds", "text", "those seeds, comma-separated", required=False),
    Field("clean_error", "fraction", "error on the clean test set (mean over seeds)"),
    *_spread("clean_error", "fraction", "clean error"),
    *_interval("clean_error", "fraction", "clean error"),
    Field("mean_corruption_error", "fraction", "mean error over corruptions and severities", required=False),
    *_spread("mean_corruption_error", "fraction", "mean corruption error"),
    Field("mce", "% of baseline", "mean over corruptions of CE_c; empty without a baseline", required=False),
    *_spread("mce", "% of baseline", "MCE", needs_baseline=True),
    *_interval("mce", "% of baseline", "MCE"),
    Field("relative_mce", "% of baseline", "mean over corruptions of relative CE_c", required=False),
    *_spread("relative_mce", "% of baseline", "relative MCE", needs_baseline=True),
    *_interval("relative_mce", "% of baseline", "relative MCE"),
    *_reliability("relative_mce", "relative MCE (it averages a relative CE_c with a tiny baseline denominator, is "
                                  "negative, or its interval contains 0)", needs_baseline=True),
    *_interval("clean_error_diff", "fraction", "clean error minus the baseline's"),
    Field("mce_corruptions", "count", "corruptions MCE averages (those whose CE_c is defined; fewest over seeds)",
          required=False, needs_baseline=True),
    Field("relative_mce_corruptions", "count", "corruptions relative MCE averages (fewest over seeds)",
          required=False, needs_baseline=True),
    Field("n_test", "count", "test images", required=False),
)

SEED_SUMMARY_COLUMNS = _KEY + (
    _SEED,
    Field("run", "text", "the run's name in evaluation.json (MODEL_FIELDS name)"),
    Field("baseline_seed", "integer", "seed of the baseline run its MCE is computed against", required=False,
          needs_baseline=True),
    Field("clean_error", "fraction", "error on the clean test set"),
    Field("mean_corruption_error", "fraction", "mean error over corruptions and severities"),
    Field("mce", "% of baseline", "MCE against the paired baseline run", required=False, needs_baseline=True),
    Field("relative_mce", "% of baseline", "relative MCE against the paired baseline run", required=False,
          needs_baseline=True),
    Field("clean_error_diff", "fraction", "clean error minus the paired baseline run's", required=False,
          needs_baseline=True),
    *_reliability("relative_mce", "this seed's relative MCE", needs_baseline=True),
)

CORRUPTION_SUMMARY_COLUMNS = _KEY + (
    Field("corruption", "text", "corruption name"),
    Field("ce", "% of baseline", "CE_c (mean over seeds); empty where undefined or without a baseline"),
    Field("relative_ce", "% of baseline", "relative CE_c (mean over seeds); empty where undefined or without a "
                                          "baseline"),
    Field("mean_error", "fraction", "mean error over severities"),
    *_reliability("relative_ce", "relative CE_c (undefined, or the baseline's denominator is within 2 binomial "
                                 "standard errors of zero in some seed)", needs_baseline=False),
)

SEVERITY_COLUMNS = _KEY + (
    Field("family", "text", f"corruption family (robustgsl.corruptions.family_of), or {ALL_FAMILIES!r}"),
    Field("severity", "integer", "0 (the clean test set) or a severity"),
    Field("error", "fraction", "error averaged over the family's corruptions (and seeds)"),
    *(Field(f"error_{end}", "fraction", f"95 % bootstrap interval of that average, {end} end") for end in ("low", "high")),
)

# robustbench.csv: exactly RobustBench's model_info/<dataset>/corruptions/unaggregated_results.csv, written by
# robustbench/eval.py corruptions_evaluation and read there with pd.read_csv(path, header=[0, 1],
# index_col=0): two header rows (corruption, severity), no index or column names, one row per model
# (here "model/head"), an accuracy (fraction) per cell, no clean column. Corruptions in RobustBench's order
# (robustbench/data.py CORRUPTIONS), then any others in evaluation order; severities ascending.
ROBUSTBENCH_CORRUPTIONS = (
    "shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness", "fog",
    "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression", "elastic_transform",
)
# robustbench_summary.csv: the clean accuracy that robustbench.csv leaves out, and RobustBench's headline.
ROBUSTBENCH_SUMMARY_COLUMNS = _KEY + (
    Field("clean_accuracy", "fraction", "accuracy on the clean test set (RobustBench's clean_acc)"),
    Field("robust_accuracy", "fraction", "mean accuracy over the corruptions x severities evaluated, the mean of "
                                         "the row of robustbench.csv (RobustBench's corruptions_acc)"),
)

RECORD_FIELDS = (
    Field("models", "list of objects", "one per model: MODEL_FIELDS, then the fields of its kind"),
    Field("heads", "list of text", "heads evaluated, in robustgsl.heads.HEADS order"),
    Field("baseline", "text", "MODEL/HEAD of the baseline, or null"),
    Field("dataset", "text", "data set evaluated (robustgsl.data.DATASETS)"),
    Field("num_classes", "count", "classes"),
    Field("n_test", "count", "test images evaluated"),
    Field("n_examples", "count", "the first N test images evaluated (RobustBench's n_examples); null = all"),
    Field("image_folder", "object", "dataset imagefolder: the folder's record (robustgsl/schema/run.py "
                                    "IMAGE_FOLDER_FIELDS), else null"),
    Field("corruptions", "list of text", "corruptions evaluated, in order"),
    Field("severities", "list of integers", "severities evaluated"),
    Field("corruption_source", "object", "where the corrupted images came from (SOURCE_FIELDS)"),
    Field("svc_train_size", "count", "most training embeddings the SVC is fitted on; null = all"),
    Field("bootstrap", "object", "n_resamples, seed, level of the paired bootstrap"),
    Field("created_at", "ISO 8601 time, UTC", "when the evaluation finished"),
    Field("git_sha", "text", "commit of the robustgsl checkout (null outside git)"),
    Field("versions", "object", "same keys as a run's environment.json versions"),
    Field("device", "text", "device the models ran on"),
    Field("wall_times", "object of seconds", "per model scored here (kinds run and external), and 'total'"),
    Field("grid_image_index", "integer", "test image of example_images.npz"),
)
# Every entry of "models"; then RUN_MODEL_FIELDS, EXTERNAL_MODEL_FIELDS or REFERENCE_MODEL_FIELDS by kind.
MODEL_KINDS = ("run", "external", "reference")
MODEL_FIELDS = (
    Field("name", "text", "the run's (or model's) name, unique in the evaluation (embeddings.npz, wall_times)"),
    Field("model", "text", "the model (seed group) it is a seed of: its name in the tables"),
    Field("seed", "integer", "its training seed (null when its config records none, and for other kinds)"),
    Field("kind", "text", "run (a robustgsl run folder), external (a model robustgsl did not train) or reference "
                          "(a baseline scored elsewhere, known by its results)"),
    Field("weights_sha256", "text", "SHA-256 of its weights file (a run's model.safetensors, --weights FILE), or of "
                                    "the state dict of weights given in memory (robustgsl.external.state_dict_sha256); "
                                    "null for a reference known by its errors only"),
    Field("architecture", "text", "class name of the network, or null"),
    Field("parameters", "count", "its parameters, or null"),
    Field("embedding", "text", "what the 1nn/10nn/svc heads read, or null when it has no embedding"),
    Field("snapshots", "text", "folder of its embedding-snapshot copies, relative to the evaluation folder; null "
                               "when it has none"),
)
RUN_MODEL_FIELDS = (
    Field("run_dir", "text", "absolute path of its run folder"),
    Field("loss", "text", "ce or gsl"),
    Field("config", "object", "its run's config.json"),
)
EXTERNAL_MODEL_FIELDS = (
    Field("factory", "text", "MODULE:FACTORY that built it, or null for a module passed to robustgsl.benchmark"),
    Field("weights_file", "text", "absolute path of the weights loaded into it, or null"),
    Field("normalize", "object", "{mean, std} applied to the [0, 1] images before it, or null"),
    Field("feature_layer", "text", "the graph node whose output is its embedding, or null"),
)
REFERENCE_MODEL_FIELDS = (
    Field("source", "text", "where its results come from: 'benchmark result' (another robustgsl.benchmark call; "
                            "paired bootstrap intervals when on the same test images) or 'errors table'"),
    Field("evaluated_as", "object", "its own models entry where it was evaluated, or null"),
)
KIND_FIELDS = {"run": RUN_MODEL_FIELDS, "external": EXTERNAL_MODEL_FIELDS, "reference": REFERENCE_MODEL_FIELDS}
SOURCE_FIELDS = (
    Field("kind", "text", "generated (by robustgsl, with a manifest) or released (CIFAR-10-C files)"),
    Field("path", "text", "absolute path of the corruption folder"),
    Field("manifest", "object", "the folder's manifest.json, or null for released files"),
    Field("seed", "integer", "seed of generated data, else null"),
    Field("constants", "text", "where the severity constants come from"),
)
BOOTSTRAP_FIELDS = ("n_resamples", "seed", "level")

# embeddings.npz: test embeddings of a seeded sample of test images, clean and at the highest evaluated
# severity of one corruption, one (n, d) float32 pair per model with an embedding (see ``embedding_array``).
EMBEDDING_ARRAYS = (
    Field("labels", "int64 (n,)", "true classes of the sampled test images"),
    Field("embedding_corruption", "0-d text", "the corruption of the corrupted embeddings"),
)
EMBEDDING_VIEWS = ("clean", "corrupted")

# example_images.npz: one test image, clean and under every corruption at every severity 1..5.
EXAMPLE_ARRAYS = (
    Field("clean", "uint8 (H, W, 3)", "the test image"),
    Field("corrupted", "uint8 (C, 5, H, W, 3)", "the image under each corruption (order of 'corruptions') and "
                                                "severity 1..5"),
    Field("corruptions", "text (C,)", "corruption names"),
    Field("label", "int64 0-d", "its true class"),
    Field("index", "int64 0-d", "its index in the test set"),
)


def embedding_array(model: str, view: str) -> str:
    """Name of a model's embeddings in embeddings.npz; ``view`` is "clean" or "corrupted"."""
    return f"{model}__{view}"


def snapshot_folder(index: int, run: str) -> str:
    """Folder (under SNAPSHOTS_DIR) of the snapshot copies of the ``index``-th model of evaluation.json: its
    position keeps it unique, the run name (letters, digits, ._- only) readable."""
    readable = "".join(character if character.isascii() and (character.isalnum() or character in "._-") else "_"
                       for character in run)[:40]
    return f"{index:02d}-{readable}"


def columns(fields: tuple[Field, ...], with_baseline: bool) -> tuple[str, ...]:
    return tuple(field.name for field in fields if with_baseline or not field.needs_baseline)


def summary_columns(with_baseline: bool) -> tuple[str, ...]:
    return columns(SUMMARY_COLUMNS, with_baseline)


def required(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields if field.required)


def numeric(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields if field.unit not in ("text", "boolean"))


def booleans(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields if field.unit == "boolean")

