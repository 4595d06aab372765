"""An evaluation folder (written by robustgsl/evaluate.py, read by robustgsl/report/load.py):

    errors.csv              long table: one error rate per model, head, corruption and severity
    summary.csv             Table 2 per model/head: clean error, MCE, relative MCE, bootstrap intervals
    corruption_summary.csv  CE_c and relative CE_c per model/head and corruption
    robustbench.csv         accuracies in RobustBench's layout (its unaggregated_results.csv)
    robustbench_summary.csv clean accuracy and RobustBench's robust accuracy per model/head
    evaluation.json         what was evaluated, how, with which versions
    embeddings.npz          test embeddings behind the report's 2-D view
    example_images.npz      one test image under every corruption and severity (the report's grid)
    index.html              the report (robustgsl/report)

Units: an error or accuracy is a fraction in [0, 1]; MCE, relative MCE, CE_c and relative CE_c are in
percent of the baseline's (the baseline scores 100). The clean test set is the row corruption = CLEAN,
severity 0. Corruption names are those of robustgsl.corruptions; a model is named by its run's config
``name`` (made unique within an evaluation), an external model by --model-name (default: its factory's
name), and a head is one of robustgsl.heads.HEADS.
"""

from __future__ import annotations

from robustgsl.schema import Field, names

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
# Every file of an evaluation folder (written as a whole: robustgsl.io.atomic_folder).
FILES = (ERRORS_FILE, SUMMARY_FILE, CORRUPTION_SUMMARY_FILE, ROBUSTBENCH_FILE, RECORD_FILE, EMBEDDINGS_FILE,
         EXAMPLES_FILE, REPORT_FILE)

_KEY = (Field("model", "text", "model name"), Field("head", "text", "head name"))

ERRORS_COLUMNS = _KEY + (
    Field("corruption", "text", f"corruption name, or {CLEAN!r} for the clean test set"),
    Field("severity", "integer", "1..5, or 0 for the clean test set"),
    Field("error", "fraction", "test images misclassified"),
)


def _interval(name: str, unit: str, what: str) -> tuple[Field, Field]:
    """The two ends of a 95 % paired-bootstrap interval (computed only against a baseline)."""
    return tuple(Field(f"{name}_{end}", unit, f"{what}: 95 % paired-bootstrap interval, {end} end",
                       required=False, needs_baseline=True) for end in ("low", "high"))


SUMMARY_COLUMNS = _KEY + (
    Field("baseline", "text", "MODEL/HEAD that scores 100 in MCE; empty without a baseline", required=False),
    Field("clean_error", "fraction", "error on the clean test set"),
    *_interval("clean_error", "fraction", "clean error"),
    Field("mean_corruption_error", "fraction", "mean error over corruptions and severities", required=False),
    Field("mce", "% of baseline", "mean over corruptions of CE_c; empty without a baseline", required=False),
    *_interval("mce", "% of baseline", "MCE"),
    Field("relative_mce", "% of baseline", "mean over corruptions of relative CE_c", required=False),
    *_interval("relative_mce", "% of baseline", "relative MCE"),
    *_interval("clean_error_diff", "fraction", "clean error minus the baseline's"),
    Field("mce_corruptions", "count", "corruptions MCE averages (those whose CE_c is defined)", required=False,
          needs_baseline=True),
    Field("relative_mce_corruptions", "count", "corruptions relative MCE averages", required=False,
          needs_baseline=True),
    Field("n_test", "count", "test images", required=False),
)

CORRUPTION_SUMMARY_COLUMNS = _KEY + (
    Field("corruption", "text", "corruption name"),
    Field("ce", "% of baseline", "CE_c; empty where undefined or without a baseline"),
    Field("relative_ce", "% of baseline", "relative CE_c; empty where undefined or without a baseline"),
    Field("mean_error", "fraction", "mean error over severities"),
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
    Field("name", "text", "the model's name in the tables"),
    Field("kind", "text", "run (a robustgsl run folder), external (a model robustgsl did not train) or reference "
                          "(a baseline scored elsewhere, known by its results)"),
    Field("weights_sha256", "text", "SHA-256 of its weights file (a run's model.safetensors, --weights FILE), or of "
                                    "the state dict of weights given in memory (robustgsl.external.state_dict_sha256); "
                                    "null for a reference known by its errors only"),
    Field("architecture", "text", "class name of the network, or null"),
    Field("parameters", "count", "its parameters, or null"),
    Field("embedding", "text", "what the 1nn/10nn/svc heads read, or null when it has no embedding"),
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


def summary_columns(with_baseline: bool) -> tuple[str, ...]:
    return tuple(column.name for column in SUMMARY_COLUMNS if with_baseline or not column.needs_baseline)


def required(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields if field.required)


def numeric(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(field.name for field in fields if field.unit not in ("text",))

