"""Command-line interface: a thin click layer over the library.

The library never parses arguments or prints; this module turns options into calls and
library messages (passed through ``log`` callbacks) into lines on the terminal.

The options of ``train``, ``train-both`` and ``evaluate`` are built from the field metadata of
``TrainConfig`` and ``EvalConfig`` (robustgsl/config.py): name, help, default, and the parser that turns
the text into a value. They are built when a command first needs them, because importing the configs
imports torch, which ``corrupt`` and its worker processes (which import this module) do without.
"""

from __future__ import annotations

import sys
from typing import Callable

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


class _ConfigCommand(click.Command):
    """A command whose options ``make_params()`` builds from config metadata the first time they are needed."""

    def __init__(self, *args, make_params: Callable[[], list[click.Parameter]], **kwargs):
        super().__init__(*args, **kwargs)
        self._make_params = make_params

    def get_params(self, ctx):
        if self._make_params is not None:
            self.params = [*self._make_params(), *self.params]
            self._make_params = None
        return super().get_params(ctx)


class _OptionValue(click.ParamType):
    """Text -> value through the option's own parser (``robustgsl.options``), as a sweep would parse it."""

    def __init__(self, spec):
        self.spec = spec
        self.name = _metavar(spec)

    def convert(self, value, param, ctx):
        from robustgsl.options import parse_text

        if not isinstance(value, str):
            return value
        try:
            return parse_text(self.spec, value)
        except InputError as error:
            self.fail(str(error), param, ctx)


_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", list: "INTEGER,...", tuple: "NAME,..."}


def _metavar(spec) -> str:
    if spec.metavar:
        return spec.metavar
    if spec.choices:
        return "[" + "|".join(spec.choices) + "]"
    return _METAVARS[spec.value_type]


def _option(spec, default, default_text: str | None, **extra) -> click.Option:
    """The click option of one config field; ``default_text`` is shown in brackets after the help."""
    help_text = f"{spec.help} [{default_text}]" if default_text else spec.help
    if spec.is_flag and default is False:  # a plain flag: off unless given
        return click.Option([spec.flag, spec.name], is_flag=True, help=help_text, **extra)
    if spec.is_flag:
        return click.Option([f"{spec.flag}/--no-{spec.flag[2:]}", spec.name], default=default, help=help_text,
                            **extra)
    if spec.folder:
        return click.Option([spec.flag, spec.name], type=click.Path(file_okay=False), default=default,
                            help=help_text, **extra)
    return click.Option([spec.flag, spec.name], type=_OptionValue(spec), default=default, metavar=_metavar(spec),
                        help=help_text, **extra)


def _spec(specs, name: str):
    return next(spec for spec in specs if spec.name == name)


def _default_text(spec) -> str | None:
    """The bracketed default of an option whose click default is the field's own (none for a plain flag)."""
    from robustgsl.options import format_value

    return None if spec.is_flag and not spec.default else format_value(spec.default, spec.default_text)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="robustgsl")
def main() -> None:
    """Train CE and graph-smoothness-loss models, corrupt test sets, evaluate, report."""


# --- training -------------------------------------------------------------------------------------

# Options of the training call that are not part of the recipe (robustgsl.train.train's keywords).
_RUN_OPTIONS = ("data_dir", "download", "device")


def _preset_default_text(spec) -> str:
    """'200' when both presets agree, else 'paper: 200, demo: 30' (for the paper preset's own data set)."""
    from robustgsl.config import PRESETS, preset_values
    from robustgsl.options import format_value

    texts = {preset: format_value(preset_values(preset, None).get(spec.name, spec.default), spec.default_text)
             for preset in PRESETS}
    if len(set(texts.values())) == 1:
        return texts[PRESETS[0]]
    return ", ".join(f"{preset}: {text}" for preset, text in texts.items())


class _SeedList(click.ParamType):
    name = "SEED,..."

    def convert(self, value, param, ctx):
        from robustgsl.options import ParseError, parse_int_list

        if not isinstance(value, str):
            return value
        try:
            return parse_int_list(value)
        except ParseError as error:
            self.fail(f"seeds must be {error}, got {value!r}", param, ctx)


def _training_params(out_help: str, with_loss: bool) -> Callable[[], list[click.Parameter]]:
    def make() -> list[click.Parameter]:
        from robustgsl.config import EVAL_OPTIONS, TRAIN_OPTIONS

        params = [_option(_spec(TRAIN_OPTIONS, "loss"), None, None, required=True)] if with_loss else []
        params.append(click.Option(["--out"], default=None, help=out_help))
        if not with_loss:
            params.append(click.Option(["--seeds"], type=_SeedList(), default=None, help=(
                "One pair per seed, e.g. 0,1,2, in <out>/seed<N>/{ce,gsl} (instead of --seed); `evaluate` "
                "averages over them.")))
        # None = not given: the preset (then the dataclass default) decides.
        params += [_option(spec, None, _preset_default_text(spec)) for spec in TRAIN_OPTIONS if spec.cli]
        params += [_option(spec, spec.default, _default_text(spec))
                   for spec in (_spec(EVAL_OPTIONS, name) for name in _RUN_OPTIONS)]
        params.append(click.Option(["--resume"], is_flag=True, help="Continue the run in --out from its checkpoint."))
        params.append(click.Option(["--quiet"], is_flag=True, help="No progress bars or per-epoch lines."))
        return params

    return make


def _split_options(options: dict) -> tuple[dict, dict]:
    """(recipe values given on the command line, keywords of the training call)."""
    from robustgsl.config import TRAIN_OPTIONS

    recipe = {spec.name: options.pop(spec.name) for spec in TRAIN_OPTIONS if spec.cli}
    quiet = options.pop("quiet")
    run = dict(options, quiet=quiet, log=None if quiet else _echo, command_line=sys.argv)
    return {name: value for name, value in recipe.items() if value is not None}, run


def _default_run_dir(config, suffix: str | None, seeds: list[int] | None = None) -> str:
    if config.preset == "demo":
        base = "runs/demo"
    elif seeds is not None:
        base = f"runs/{config.dataset}-{config.preset}-seeds{'-'.join(map(str, seeds))}"
    else:
        base = f"runs/{config.dataset}-{config.preset}-seed{config.seed}"
    return f"{base}/{suffix}" if suffix else base


@main.command(cls=_ConfigCommand, make_params=_training_params(
    "Run folder [runs/<dataset>-<preset>-seed<seed>/<loss>].", with_loss=True))
def train(loss: str, out: str | None, **options) -> None:
    """Train one PreActResNet-18 with cross-entropy or the graph smoothness loss."""
    from robustgsl.config import make_config
    from robustgsl.distributed import is_main_process, shutdown
    from robustgsl.train import train as train_run

    recipe, run = _split_options(options)
    config = make_config(loss, **recipe)
    run_dir = out or _default_run_dir(config, loss)
    try:
        train_run(config, run_dir, **run)
    finally:
        shutdown()
    if not run["quiet"] and is_main_process():
        _echo(f"run folder: {run_dir}")


@main.command("train-both", cls=_ConfigCommand, make_params=_training_params(
    "Folder of the pair: <out>/ce and <out>/gsl, with --seeds <out>/seed<N>/{ce,gsl} "
    "[runs/<dataset>-<preset>-seed<seed>].", with_loss=False))
def train_both(out: str | None, seeds: list[int] | None, **options) -> None:
    """Train the CE and the GSL model with the same data, seed and recipe (one pair per seed with --seeds)."""
    from robustgsl.config import make_config
    from robustgsl.distributed import is_main_process, shutdown
    from robustgsl.train import train_both as train_pair

    if seeds is not None and options.get("seed") is not None:
        raise InputError("give either --seed (one pair) or --seeds (one pair per seed), not both")
    recipe, run = _split_options(options)
    configs = {loss: make_config(loss, **recipe) for loss in ("ce", "gsl")}
    out_dir = out or _default_run_dir(configs["ce"], None, seeds)
    try:
        paths = train_pair(configs, out_dir, runs_root="runs", seeds=seeds, **run)
    finally:
        shutdown()
    if not run["quiet"] and is_main_process():
        _echo("run folders: " + ", ".join(str(p) for p in paths))


# --- evaluation -----------------------------------------------------------------------------------

def _evaluation_params() -> list[click.Parameter]:
    from robustgsl.config import EVAL_OPTIONS

    return [_option(spec, spec.default, _default_text(spec)) for spec in EVAL_OPTIONS]


@main.command(cls=_ConfigCommand, make_params=_evaluation_params)
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
def evaluate(run_dirs, **options) -> None:
    """Clean error, MCE and relative MCE of trained runs [default: the last train-both pair]."""
    from robustgsl.config import EvalConfig
    from robustgsl.evaluate import evaluate as run_evaluation

    config = EvalConfig(**options)
    out_dir = run_evaluation(list(run_dirs) or None, config, log=None if config.quiet else _echo)
    if config.report:
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


# --- corruptions ----------------------------------------------------------------------------------

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
