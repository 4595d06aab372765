"""Command-line interface: a thin click layer over the library.

The library never parses arguments or prints; this module turns options into calls and
library messages (passed through ``log`` callbacks) into lines on the terminal.

Every command's options are built from the field metadata of a config dataclass (``TrainConfig``,
``DataConfig``, ``EvalConfig``, ``CorruptConfig`` in robustgsl/config.py, which imports no torch;
``SweepConfig``; the external models' options): name, help, default, and the parser that turns the text
into a value. They are built when a command first needs them, because the sweep's and the external models'
modules import torch, which ``corrupt`` and its worker processes (which import this module) do without.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

from robustgsl import __version__
from robustgsl.config import (
    CORRUPT_OPTIONS, DATA_OPTIONS, EVAL_OPTIONS, PRESETS, TRAIN_OPTIONS, CorruptConfig, EvalConfig, make_config,
    preset_values, validate_corrupt_config,
)
from robustgsl.errors import InputError, TrainingError
from robustgsl.options import ParseError, format_value, parse_int_list, parse_text


def _echo(message: str) -> None:
    click.echo(message, err=False)


class _Group(click.Group):
    """Turn library errors into ``Error: ...`` without a traceback: bad input exits with status 2; a run that
    cannot go on, or a file that cannot be written (robustgsl.errors.WriteError: full disk, read-only file
    system) or read, with status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except (TrainingError, OSError) as error:  # OSError: a WriteError, or a file that could not be read
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
    if spec.multiple:  # given once per item: no default to show
        return click.Option([spec.flag, spec.name], type=_OptionValue(spec), multiple=True, metavar=_metavar(spec),
                            help=spec.help, **extra)
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

    if spec.shown_default is not None:
        return spec.shown_default
    return None if spec.is_flag and not spec.default else format_value(spec.default, spec.default_text)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="robustgsl")
def main() -> None:
    """Train CE and graph-smoothness-loss models, corrupt test sets, evaluate, report."""


# --- training -------------------------------------------------------------------------------------



def _preset_default_text(spec) -> str:
    """'200' when all presets agree, else 'recommended: 0 for ce, 2 for gsl, paper: 0, ...' (for each preset's
    own data set)."""

    def text(preset: str) -> str:
        ce, gsl = (format_value(preset_values(preset, None, loss).get(spec.name, spec.default), spec.default_text)
                   for loss in ("ce", "gsl"))
        gsl_only = spec.applies is not None and spec.applies({"loss": "gsl"}) and not spec.applies({"loss": "ce"})
        return gsl if ce == gsl or gsl_only else f"{ce} for ce, {gsl} for gsl"

    texts = {preset: text(preset) for preset in PRESETS}
    if len(set(texts.values())) == 1:
        return texts[PRESETS[0]]
    return ", ".join(f"{preset}: {text}" for preset, text in texts.items())


def _recipe_params(excluded: tuple[str, ...] = ()) -> list[click.Parameter]:
    """The training options of TrainConfig; None = not given: the preset (then the dataclass default) decides."""

    return [_option(spec, None, _preset_default_text(spec)) for spec in TRAIN_OPTIONS
            if spec.cli and spec.name not in excluded]


class _SeedList(click.ParamType):
    name = "SEED,..."

    def convert(self, value, param, ctx):

        if not isinstance(value, str):
            return value
        try:
            return parse_int_list(value)
        except ParseError as error:
            self.fail(f"seeds must be {error}, got {value!r}", param, ctx)


def _training_params(out_help: str, with_loss: bool) -> Callable[[], list[click.Parameter]]:
    def make() -> list[click.Parameter]:

        params = [_option(_spec(TRAIN_OPTIONS, "loss"), None, None, required=True)] if with_loss else []
        params.append(click.Option(["--out"], default=None, help=out_help))
        if not with_loss:
            params.append(click.Option(["--seeds"], type=_SeedList(), default=None, help=(
                "One pair per seed, e.g. 0,1,2, in <out>/seed<N>/{ce,gsl} (instead of --seed); `evaluate` "
                "averages over them.")))
        params += _recipe_params()
        params += [_option(spec, spec.default, _default_text(spec)) for spec in DATA_OPTIONS]
        params.append(_option(_spec(EVAL_OPTIONS, "device"), None, _default_text(_spec(EVAL_OPTIONS, "device"))))
        params.append(click.Option(["--resume"], is_flag=True, help="Continue the run in --out from its checkpoint."))
        params.append(click.Option(["--quiet"], is_flag=True, help="No progress bars or per-epoch lines."))
        return params

    return make


def _pop_recipe(options: dict) -> dict:
    """The training options given on the command line (config field -> value), removed from ``options``."""

    recipe = {spec.name: options.pop(spec.name) for spec in TRAIN_OPTIONS if spec.name in options}
    return {name: value for name, value in recipe.items() if value is not None}


def _split_options(options: dict) -> tuple[dict, dict]:
    """(recipe values given on the command line, keywords of the training call)."""
    recipe = _pop_recipe(options)
    quiet = options.pop("quiet")
    run = dict(options, quiet=quiet, log=None if quiet else _echo, command_line=sys.argv)
    return recipe, run


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


# --- sweeps ---------------------------------------------------------------------------------------

# Options of the clean-test scoring (and, but for svc_train_size, of every run's training) in a sweep.
_SCORING_OPTIONS = ("data_dir", "download", "device", "svc_train_size")


def _sweep_params() -> list[click.Parameter]:
    from robustgsl.sweep import SWEEP_OPTIONS
    from robustgsl.sweep_grid import LIST_SEPARATOR

    return [
        _option(_spec(TRAIN_OPTIONS, "loss"), None, None, required=True),
        click.Option(["--param"], multiple=True, metavar="NAME=V1,V2,...",
                     help="A training option and its values (e.g. k=1,10,max; lr=0.1,0.01); repeat for a Cartesian "
                          f"grid. A list-valued option separates its values by '{LIST_SEPARATOR}': "
                          f"'milestones=6,8{LIST_SEPARATOR}10,15'."),
        click.Option(["--seeds"], default="0", show_default=True, metavar="SEED,...",
                     help="Seeds: every grid point trains once per seed."),
        *[_option(spec, None, None, required=True) if spec.name == "out_dir" else
          _option(spec, spec.default, _default_text(spec)) for spec in SWEEP_OPTIONS],
        *_recipe_params(excluded=("seed",)),
        *[_option(spec, spec.default, _default_text(spec))
          for spec in (_spec(EVAL_OPTIONS, name) for name in _SCORING_OPTIONS)],
    ]


@main.command(cls=_ConfigCommand, make_params=_sweep_params)
def sweep(loss: str, param: tuple[str, ...], seeds: str, **options) -> None:
    """Train a grid of runs (every combination of the --param values, once per seed), score each on the clean
    test set with every head, and write sweep.csv and index.html into --out. Rerun the same command to continue
    an interrupted sweep: finished runs are kept, half-trained ones resume."""
    from robustgsl.sweep import SweepConfig, run_sweep
    from robustgsl.sweep_grid import parse_grid

    grid = parse_grid(loss, param, seeds, _pop_recipe(options))
    config = SweepConfig(**{name: options.pop(name) for name in list(options) if name not in _SCORING_OPTIONS})
    scoring = EvalConfig(**options, quiet=config.quiet)
    result = run_sweep(grid, config, scoring, log=None if config.quiet else _echo, command_line=sys.argv)
    click.echo(f"sweep page: {result.out_dir / 'index.html'}")
    if result.failed:
        raise TrainingError(f"{len(result.failed)} of {len(result.table)} runs failed (rerun the same command to "
                            f"retry them):\n" + "\n".join(result.failed))


# --- evaluation -----------------------------------------------------------------------------------

def _evaluation_params() -> list[click.Parameter]:
    from robustgsl.external import EXTERNAL_OPTIONS

    return [_option(spec, spec.default, _default_text(spec)) for spec in EXTERNAL_OPTIONS + EVAL_OPTIONS]


@main.command(cls=_ConfigCommand, make_params=_evaluation_params)
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
def evaluate(run_dirs, **options) -> None:
    """Clean error, MCE and relative MCE of trained runs and of --model models [default: the last train-both pair].

    Each of --weights, --normalize, --features and --model-name is given once per --model, in the same
    order ("-" for a model without one), or not at all.
    """
    from robustgsl.evaluate import evaluate as run_evaluation
    from robustgsl.external import EXTERNAL_OPTIONS, external_specs

    models = external_specs(**{spec.name: options.pop(spec.name) for spec in EXTERNAL_OPTIONS})
    config = EvalConfig(**options)
    out_dir = run_evaluation(list(run_dirs) or None, config, log=None if config.quiet else _echo, models=models)
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


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--format", "format_", type=click.Choice(["kuangliu", "robustbench"]), required=True,
              help="kuangliu: a state dict for kuangliu/pytorch-cifar's PreActResNet18 (normalisation in a sidecar "
                   "JSON); robustbench: refused, with the reason (its PreActBlock computes another function).")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="File to write (.pt with torch.save, .safetensors with safetensors), plus <out>.json.")
def export(run_dir, format_, out) -> None:
    """Write a finished run's weights for another code base's network."""
    from robustgsl.export import SIDECAR_SUFFIX, export_weights

    path = export_weights(run_dir, format=format_, out=out)
    click.echo(f"wrote {path} and {path}{SIDECAR_SUFFIX}")


# --- corruptions ----------------------------------------------------------------------------------

def _corrupt_params() -> list[click.Parameter]:

    return [_option(spec, spec.default, _default_text(spec)) for spec in CORRUPT_OPTIONS]


@main.command(cls=_ConfigCommand, make_params=_corrupt_params)
def corrupt(**options) -> None:
    """Write a corrupted test set in the CIFAR-10-C layout (<name>.npy, labels.npy, manifest.json)."""
    from robustgsl.corruptions.dataset import default_out_dir, write_corruption_dataset
    from robustgsl.data import load_test_images

    config = CorruptConfig(**options)
    validate_corrupt_config(config)  # before loading any data
    out_dir = Path(config.out_dir) if config.out_dir is not None else default_out_dir(config.dataset, config.data_dir)
    log = (lambda message: None) if config.quiet else _echo
    images, labels = load_test_images(config.dataset, config.data_dir, download=config.download, resize=config.resize)
    if config.grid:
        _write_grid(config, out_dir, images, labels, log)
        return
    try:
        write_corruption_dataset(images, labels, out_dir, config.corruptions, config.severities, seed=config.seed,
                                 workers=config.workers, dataset_name=config.dataset, overwrite=config.overwrite,
                                 quiet=config.quiet, log=log)
    except (OSError, RuntimeError) as error:  # full disk, killed worker: nothing half-written is left
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    log(f"{out_dir}: {len(config.corruptions)} corruptions x severities {list(config.severities)} x {len(images)} "
        f"images (seed {config.seed}); manifest {out_dir / 'manifest.json'}")


def _write_grid(config, out_dir, images, labels, log) -> None:
    from robustgsl.corruptions.grid import save_grid_png

    index = config.grid_image_index
    if not 0 <= index < len(images):
        raise InputError(f"--grid-image must be in 0..{len(images) - 1} for {config.dataset}, got {index}")
    path = save_grid_png(out_dir / "grid.png", images[index], config.corruptions, config.seed, index,
                         config.severities,
                         title=f"{config.dataset} test image {index} (label {int(labels[index])}), seed {config.seed}")
    log(f"wrote {path}")
