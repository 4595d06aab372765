"""Command-line interface: a thin click layer over the library.

The library never parses arguments or prints; this module turns options into calls and
library messages (passed through ``log`` callbacks) into lines on the terminal.
"""

from __future__ import annotations

import sys

import click

from robustgsl import __version__
from robustgsl.errors import InputError, TrainingError


def _echo(message: str) -> None:
    click.echo(message, err=False)


class _Group(click.Group):
    """Turn library input errors into ``Error: ...`` and exit status 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except TrainingError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="robustgsl")
def main() -> None:
    """Train CE and graph-smoothness-loss models, corrupt test sets, evaluate, report."""


def _parse_k(value: str | None):
    if value is None or value.lower() in ("max", "maximum", "none"):
        return None
    try:
        k = int(value)
    except ValueError:
        raise InputError(f"k must be a positive integer or 'max', got {value!r}") from None
    if k < 1:
        raise InputError(f"k must be >= 1 (or 'max' for the complete graph), got {k}")
    return k


def _parse_int_list(value: str | None, what: str):
    if value is None:
        return None
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {value!r}") from None


_TRAIN_OPTIONS = [
    click.option("--preset", default="paper", show_default=True,
                 help="paper (Bontonou et al. 2019: 200 epochs, batch 100, SGD Nesterov, lr 0.1 /10 at 100 and 150; "
                      "Adam 1e-3 for CIFAR-100) or demo (digits, narrow model, a few epochs on CPU)."),
    click.option("--dataset", default=None, help="cifar10, cifar100, svhn or digits [paper: cifar10, demo: digits]."),
    click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                 help="Folder holding the released data set files (default: ./data)."),
    click.option("--download/--no-download", default=True, show_default=True,
                 help="Download a missing data set with torchvision."),
    click.option("--epochs", type=int, default=None),
    click.option("--batch-size", type=int, default=None, help="Per-process batch (the GSL graph size)."),
    click.option("--optimizer", default=None, help="sgd or adam."),
    click.option("--lr", type=float, default=None),
    click.option("--momentum", type=float, default=None),
    click.option("--nesterov/--no-nesterov", default=None),
    click.option("--weight-decay", type=float, default=None),
    click.option("--milestones", default=None, help="Epochs at which the lr is multiplied by gamma, e.g. 100,150."),
    click.option("--gamma", type=float, default=None),
    click.option("--k", "k", default=None, help="GSL graph neighbours per example, or 'max' (complete graph) [max]."),
    click.option("--alpha", type=float, default=None, help="GSL edge weight exp(-alpha * distance) [2]."),
    click.option("--gsl-reduction", default=None, help="GSL loss over a batch: mean (sum / batch size) or sum (Definition 1 as written) [mean]."),
    click.option("--embedding-dim", type=int, default=None, help="GSL output dimension d [number of classes]."),
    click.option("--normalization", default=None, help="GSL output normalisation: l2 or batchnorm [l2]."),
    click.option("--width", type=float, default=None, help="Channel multiplier of PreActResNet-18 [1]."),
    click.option("--seed", type=int, default=None),
    click.option("--val-size", type=int, default=None,
                 help="Training images held out for the per-epoch validation error (0: monitor a test slice)."),
    click.option("--augment/--no-augment", default=None),
    click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA [on]."),
    click.option("--channels-last/--no-channels-last", default=None, help="channels_last on CUDA [on]."),
    click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the model [on for CUDA, off on the CPU; falls back to eager with a message]."),
    click.option("--graph", default=None,
                 help="Under torchrun: GSL graph per rank (local) or over the gathered global batch (global)."),
    click.option("--sync-batchnorm/--no-sync-batchnorm", default=None, help="SyncBatchNorm under torchrun [off]."),
    click.option("--device", default=None, help="cpu, cuda or cuda:N [cuda when available]."),
    click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
    click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines."),
]


def _train_options(function):
    for option in reversed(_TRAIN_OPTIONS):
        function = option(function)
    return function


def _make_config(loss: str, options: dict):
    from robustgsl.config import make_config

    return make_config(
        loss,
        preset=options["preset"],
        dataset=options["dataset"],
        name=options.get("name") or loss,
        epochs=options["epochs"], batch_size=options["batch_size"], optimizer=options["optimizer"],
        lr=options["lr"], momentum=options["momentum"], nesterov=options["nesterov"],
        weight_decay=options["weight_decay"],
        milestones=_parse_int_list(options["milestones"], "milestones"), gamma=options["gamma"],
        k=_parse_k(options["k"]) if options["k"] is not None else None, alpha=options["alpha"],
        gsl_reduction=options["gsl_reduction"],
        embedding_dim=options["embedding_dim"], normalization=options["normalization"], width=options["width"],
        seed=options["seed"], val_size=options["val_size"], augment=options["augment"], amp=options["amp"],
        channels_last=options["channels_last"], compile=options["compile_"], graph=options["graph"],
        sync_batchnorm=options["sync_batchnorm"],
    )


def _train_kwargs(options: dict) -> dict:
    return dict(
        data_dir=options["data_dir"], download=options["download"], device=options["device"],
        resume=options["resume"], quiet=options["quiet"], log=None if options["quiet"] else _echo,
        command_line=sys.argv,
    )


def _default_run_dir(options: dict, suffix: str | None) -> str:
    from robustgsl.config import preset_values

    dataset = options["dataset"] or preset_values(options["preset"], None)["dataset"]
    seed = options["seed"] if options["seed"] is not None else 0
    base = "runs/demo" if options["preset"] == "demo" else f"runs/{dataset}-{options['preset']}-seed{seed}"
    return f"{base}/{suffix}" if suffix else base


@main.command()
@click.option("--loss", required=True, help="ce (cross-entropy, argmax head) or gsl (graph smoothness loss).")
@click.option("--out", default=None, help="Run folder [runs/<dataset>-<preset>-seed<seed>/<loss>].")
@_train_options
def train(loss: str, out: str | None, **options) -> None:
    """Train one PreActResNet-18 with cross-entropy or the graph smoothness loss."""
    from robustgsl.train import train as train_run

    if loss not in ("ce", "gsl"):
        raise InputError(f"unknown loss {loss!r}; valid: ce, gsl")
    config = _make_config(loss, options)
    run_dir = out or _default_run_dir(options, loss)
    from robustgsl.distributed import is_main_process, shutdown

    try:
        train_run(config, run_dir, **_train_kwargs(options))
    finally:
        shutdown()
    if not options["quiet"] and is_main_process():
        _echo(f"run folder: {run_dir}")


@main.command("train-both")
@click.option("--out", default=None, help="Folder of the pair: <out>/ce and <out>/gsl [runs/<dataset>-<preset>-seed<seed>].")
@_train_options
def train_both(out: str | None, **options) -> None:
    """Train the CE and the GSL model with the same data, seed and recipe."""
    from robustgsl.train import train_both as train_pair

    configs = {loss: _make_config(loss, options) for loss in ("ce", "gsl")}
    out_dir = out or _default_run_dir(options, None)
    from robustgsl.distributed import is_main_process, shutdown

    try:
        paths = train_pair(configs, out_dir, runs_root="runs", **_train_kwargs(options))
    finally:
        shutdown()
    if not options["quiet"] and is_main_process():
        _echo("run folders: " + ", ".join(str(p) for p in paths))


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", default=None, help="Evaluation folder [reports/<name of the runs' parent folder>].")
@click.option("--corruption-dir", default=None, type=click.Path(file_okay=False),
              help="Corruption data: a folder made by `robustgsl corrupt` or a released CIFAR-10-C / CIFAR-100-C "
                   "folder. Default: corruptions/<DATASET>-C, generated when missing or incomplete.")
@click.option("--corruptions", default="all", show_default=True,
              help="all (the 15), extra (the 4 extra ones) or a comma-separated list.")
@click.option("--severities", default="1,2,3,4,5", show_default=True)
@click.option("--heads", default=None,
              help="Comma-separated heads among argmax, 1nn, 10nn, svc [all that apply; argmax for CE only].")
@click.option("--baseline", default=None, help="MODEL/HEAD that scores 100 in MCE [ce/argmax].")
@click.option("--svc-train-size", default=None, type=int,
              help="Stratified, seeded subset of training embeddings the SVC is fitted on [10000; 0 = all].")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True, type=int,
              help="Paired-bootstrap resamples for the 95 % intervals.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap and the SVC subset.")
@click.option("--corruption-seed", default=0, show_default=True, type=int,
              help="Seed of the corruption data generated when the folder is missing or incomplete.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
@click.option("--download/--no-download", default=True, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N [cuda when available].")
@click.option("--workers", default=None, type=int, help="Processes for generating corruptions [all cores].")
@click.option("--grid-image", default=0, show_default=True, type=int, help="Test image shown in the corruption grid.")
@click.option("--no-report", is_flag=True, help="Write the tables only.")
@click.option("--quiet", is_flag=True)
def evaluate(run_dirs, out, corruption_dir, corruptions, severities, heads, baseline, svc_train_size, n_bootstrap,
             seed, corruption_seed, data_dir, download, device, workers, grid_image, no_report, quiet) -> None:
    """Clean error, MCE and relative MCE of trained runs [default: the last train-both pair]."""
    from robustgsl.evaluate import evaluate as run_evaluation
    from robustgsl.heads import DEFAULT_SVC_TRAIN_SIZE

    if svc_train_size is None:
        svc_train_size = DEFAULT_SVC_TRAIN_SIZE
    out_dir = run_evaluation(
        list(run_dirs) or None, out_dir=out, corruption_dir=corruption_dir, corruptions=corruptions,
        severities=severities, heads=heads.split(",") if heads else None, baseline=baseline,
        svc_train_size=svc_train_size or None, n_bootstrap=n_bootstrap, seed=seed,
        corruption_seed=corruption_seed, data_dir=data_dir,
        download=download, device=device, workers=workers, grid_image_index=grid_image, report=not no_report,
        quiet=quiet, log=None if quiet else _echo,
    )
    if not no_report:
        click.echo(f"report: {out_dir / 'index.html'}")


@main.command()
@click.argument("eval_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="HTML file [<eval_dir>/index.html].")
@click.option("--title", default=None)
def report(eval_dir, out, title) -> None:
    """(Re)write the HTML report of an evaluation folder."""
    from robustgsl.report import write_report

    path = write_report(eval_dir, out_path=out, title=title)
    click.echo(f"report: {path}")


# --- corrupt command (owned by robustgsl/corruptions) ---
@main.command()
@click.option("--dataset", default="cifar10", show_default=True, help="cifar10, cifar100 or digits (test split).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder holding the released data set files (default: ./data).")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Download a missing data set with torchvision.")
@click.option("--out", default=None, type=click.Path(),
              help="Output folder [corruptions/<DATASET>-C, e.g. corruptions/CIFAR-10-C].")
@click.option("--corruptions", default="all", show_default=True,
              help="'all' (the 15 of CIFAR-10-C), 'extra' (the 4 extra) or names separated by commas.")
@click.option("--severities", default="1,2,3,4,5", show_default=True,
              help="Severities to write, stacked in ascending order (all 5 give the released layout).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
@click.option("--workers", default=None, type=int, help="Worker processes [all local cores].")
@click.option("--overwrite", is_flag=True, help="Replace a folder made with another seed, data set or severities.")
@click.option("--grid", is_flag=True,
              help="Only write grid.png in the output folder: one test image under every corruption and severity.")
@click.option("--grid-index", default=0, show_default=True, type=int, help="Test image shown by --grid.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary lines.")
def corrupt(dataset, data_dir, download, out, corruptions, severities, seed, workers, overwrite, grid, grid_index,
            quiet) -> None:
    """Write a corrupted test set in the CIFAR-10-C layout (<name>.npy, labels.npy, manifest.json)."""
    from pathlib import Path

    from robustgsl.corruptions import parse_severities, resolve_corruptions
    from robustgsl.corruptions.dataset import default_out_dir, write_corruption_dataset
    from robustgsl.data import load_test_images

    if dataset not in ("cifar10", "cifar100", "digits"):
        raise InputError(f"--dataset must be cifar10, cifar100 or digits, got {dataset!r}")
    names = resolve_corruptions(corruptions)  # check options before loading any data
    severity_list = parse_severities(severities)
    out_dir = Path(out) if out is not None else default_out_dir(dataset)
    log = (lambda message: None) if quiet else _echo
    images, labels = load_test_images(dataset, data_dir, download=download)
    if grid:
        from robustgsl.corruptions.grid import save_grid_png

        if not 0 <= grid_index < len(images):
            raise InputError(f"--grid-index must be in 0..{len(images) - 1} for {dataset}, got {grid_index}")
        path = save_grid_png(out_dir / "grid.png", images[grid_index], names, seed, grid_index, severity_list,
                             title=f"{dataset} test image {grid_index} (label {int(labels[grid_index])}), seed {seed}")
        log(f"wrote {path}")
        return
    try:
        write_corruption_dataset(images, labels, out_dir, names, severity_list, seed=seed, workers=workers,
                                 dataset_name=dataset, overwrite=overwrite, quiet=quiet, log=log)
    except (OSError, RuntimeError) as error:  # full disk, killed worker: nothing half-written is left
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    log(f"{out_dir}: {len(names)} corruptions x severities {list(severity_list)} x {len(images)} images "
        f"(seed {seed}); manifest {out_dir / 'manifest.json'}")
# --- end corrupt command ---
