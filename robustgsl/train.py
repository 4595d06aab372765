"""Training of CE and GSL PreActResNet-18 models, airbench style.

The training set lives on the device as uint8 and each batch is augmented there; metrics are summed
on the device and read once per epoch (no host-device synchronisation per step). A run folder holds
everything needed to resume after an interruption (robustgsl/schema/run.py, robustgsl/runs.py).

``train`` reads as its steps: open (or resume) the run folder, load the data, build the model and optimiser
(from the checkpoint, when resuming), start the run folder's records, then one epoch (and its embedding
snapshot, when asked for) and one checkpoint at a time, then finish. Nothing is written before every input,
the checkpoint included, has been checked. ``train_both`` trains a CE and a GSL model with one recipe, once
per seed with ``seeds``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from robustgsl import runs, snapshots
from robustgsl.config import TrainConfig, resolve_config, validate_config
from robustgsl.data import augment_batch, load_dataset, to_device_images, to_float
from robustgsl.device import infer, resolve_device
from robustgsl.distributed import (
    DistributedContext, all_reduce_sum, barrier, gather_labels, gather_with_gradients, init_from_environment,
    is_main_process,
)
from robustgsl.errors import InputError, TrainingError, WriteError
from robustgsl.imagefolder import imagefolder_record
from robustgsl.io import check_writable_folder, is_temporary, remove_stale_temporaries
from robustgsl.losses import GraphSmoothnessLoss, pairwise_distances
from robustgsl.progress import progress
from robustgsl.schema.run import EpochMetrics, seed_folder
from robustgsl.vocabulary import IMAGEFOLDER, dataset_info

Log = Callable[[str], None]


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def batch_errors(loss_name: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Misclassified examples in a training batch: argmax for CE, leave-one-out 1-NN within the batch for GSL."""
    if loss_name == "ce":
        return (outputs.argmax(1) != labels).sum()
    distances = pairwise_distances(outputs.float())
    distances.fill_diagonal_(float("inf"))
    return (labels[distances.argmin(1)] != labels).sum()


def validation_error(model, config: TrainConfig, monitor, references, device) -> float:
    """Argmax error (CE) or 1-NN error of the embeddings against training references (GSL) on the monitor images."""
    was_training = model.training
    model.eval()
    images, labels = monitor
    options = dict(amp=config.amp, channels_last=config.channels_last, out_device=device)
    outputs, embeddings = infer(model, images, device, **options)
    if config.loss == "ce":
        predictions = outputs.argmax(1)
    else:
        reference_images, reference_labels = references
        _, keys = infer(model, reference_images, device, **options)
        predictions = reference_labels[torch.cdist(embeddings, keys).argmin(1)]
    model.train(was_training)
    return float((predictions != labels).float().mean())


def train_step(model, criterion, optimizer, images: torch.Tensor, labels: torch.Tensor, amp: bool = False,
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a uint8 batch; returns (loss, misclassified count) as device tensors.

    Nothing here synchronises with the host: the caller sums the results on the device.
    """
    inputs = to_float(images)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = model(inputs)
    loss = criterion(outputs, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), batch_errors(criterion.loss_name, outputs.detach(), labels)


class Criterion:
    """The training loss over a batch, with the GSL graph per rank or over the gathered global batch."""

    def __init__(self, config: TrainConfig, context: DistributedContext):
        self.config = config
        self.context = context
        self.loss_name = config.loss
        self.gsl = GraphSmoothnessLoss(k=config.k, alpha=config.alpha, reduction=config.gsl_reduction) \
            if config.loss == "gsl" else None

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.gsl is None:
            return F.cross_entropy(outputs.float(), labels)
        if self.context.enabled and self.config.graph == "global":
            return self.gsl(gather_with_gradients(outputs.float()), gather_labels(labels))
        return self.gsl(outputs, labels)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of one random stream (0: data order; 1 + rank: that rank's augmentation) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    download: bool = True,
    device: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    log: Log | None = None,
    command_line: list[str] | None = None,
    resize: bool | None = None,
) -> Path:
    """Train one model into ``run_dir`` and return it. Resumable with ``resume=True``.

    ``data_dir``: the released files' folder, or the image folder of ``dataset="imagefolder"`` (whose
    images that are not 32x32 are resized with ``resize``, else refused).
    """
    log = log or (lambda message: None)
    config = resolve_config(config)
    validate_config(config)
    run = _open_run(config, Path(run_dir), device, resume, log, _image_folder(config, data_dir, bool(resize)))
    config = run.config
    data = _load_data(run, data_dir, download)
    training = _build_training(run, log)
    if run.context.is_main:
        _start_records(run, data, command_line)
    started = time.time()
    for epoch in range(training.start_epoch, config.epochs + 1):
        epoch_start = time.time()
        lr, loss, train_error = _train_epoch(run, data, training, epoch, quiet)
        if run.context.is_main:
            row = EpochMetrics(epoch=epoch, loss=loss, lr=lr, train_error=train_error,
                               val_error=validation_error(training.model, config, data.monitor, data.references,
                                                          run.device),
                               epoch_time_s=time.time() - epoch_start)
            _snapshot(run, data, training, epoch)
            _checkpoint(run, training, row, log)
        barrier(run.context)
    _finish(run, training, started)
    return run.run_dir


# --- step 1: open or resume the run folder --------------------------------------------------------

@dataclass
class _Run:
    """Where and how this process trains."""

    config: TrainConfig
    run_dir: Path
    context: DistributedContext
    device: torch.device
    record: dict  # config.json: the recipe as recorded
    checkpoint: dict | None  # the state to resume from
    previous_environment: dict | None  # environment.json of the run being resumed (started, maybe no checkpoint)

    @property
    def name(self) -> str:
        return self.config.name or self.config.loss


def _image_folder(config: TrainConfig, data_dir, resize: bool) -> dict | None:
    """The image folder's record (classes, statistics, resize) for config.json; None for other data sets."""
    if config.dataset != IMAGEFOLDER:
        return None
    if data_dir is None:
        raise InputError("--dataset imagefolder needs --data-dir DIR, the folder holding train/<class>/ and "
                         "test/<class>/")
    return imagefolder_record(data_dir, resize)


def _open_run(config: TrainConfig, run_dir: Path, device: str | None, resume: bool, log: Log,
              image_folder: dict | None) -> _Run:
    context = init_from_environment(device)
    device_obj = resolve_device(device, context.local_rank if context.enabled else None)
    if config.sync_batchnorm and device_obj.type != "cuda":
        raise InputError("--sync-batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation)")
    check_writable_folder(run_dir, "run folder")
    remove_stale_temporaries(run_dir)  # of a writer killed mid-write
    if image_folder is not None:
        config = resolve_config(config, num_classes=len(image_folder["classes"]))
    record = runs.config_record(config, context.world_size, image_folder)
    checkpoint = _resumable_checkpoint(run_dir, record, config, resume, device_obj, log if context.is_main else None)
    environment_path = run_dir / runs.ENVIRONMENT_FILE
    previous_environment = runs.read_environment(run_dir) if resume and environment_path.is_file() else None
    # Every rank has looked at the folder before rank 0 starts writing into it.
    barrier(context)
    return _Run(config, run_dir, context, device_obj, record, checkpoint, previous_environment)


def _holds_a_run(run_dir: Path) -> bool:
    """Whether a run was started in ``run_dir`` (temporaries of a killed writer do not count)."""
    return run_dir.is_dir() and any(not is_temporary(path) for path in run_dir.iterdir())


def _resumable_checkpoint(run_dir: Path, record: dict, config: TrainConfig, resume: bool, device,
                          log: Log | None) -> dict | None:
    """The checkpoint to continue from (None: start afresh), after the resume rules are checked."""
    if not _holds_a_run(run_dir):
        if resume and log:
            # A run killed before it wrote anything (or a train-both pair killed before its second run)
            # has nothing to resume: it starts, as the same command without --resume would.
            log(f"note: {run_dir} holds no run yet, nothing to resume; starting the run from epoch 1")
        return None
    if not resume:
        raise InputError(f"run folder {run_dir} already exists and is not empty; pass --resume to continue it, "
                         f"or choose another --out")
    checkpoint_path = run_dir / runs.CHECKPOINT_FILE
    if runs.is_finished(run_dir) and not checkpoint_path.exists():
        raise InputError(f"run folder {run_dir} holds a finished run without a checkpoint; nothing to resume")
    saved = runs.read_config(run_dir)
    mismatch = _config_mismatch(saved, record)
    if mismatch:
        # --epochs without --milestones moves a preset's milestones (config.scaled_milestones).
        hint = f" (its milestones: pass --milestones {','.join(map(str, saved['milestones'])) or 'none'} to keep " \
               f"them when extending it)" if "milestones" in mismatch else ""
        raise InputError(f"cannot resume {run_dir}: its config differs in {', '.join(sorted(mismatch))}{hint}; "
                         f"resume with the same options or choose another --out")
    if not checkpoint_path.exists():
        return None
    checkpoint = runs.load_checkpoint(checkpoint_path, device)
    if int(checkpoint["epoch"]) > config.epochs:
        raise InputError(f"cannot resume {run_dir} with --epochs {config.epochs}: its checkpoint is at epoch "
                         f"{int(checkpoint['epoch'])}; pass at least that many epochs")
    return checkpoint


def _config_mismatch(saved: dict, current: dict) -> list[str]:
    # Extending a run (more epochs) and changing speed options are allowed on resume; paper_deviations is
    # derived from the fields compared here (and lists epochs).
    free = {"epochs", "amp", "channels_last", "compile", "paper_deviations"}
    return [key for key in current if key not in free and saved.get(key) != current[key]]


# --- step 2: the data, on the device --------------------------------------------------------------

@dataclass
class _Data:
    images: torch.Tensor  # uint8 (N, 3, H, W) training images on the device
    labels: torch.Tensor
    monitor: tuple[torch.Tensor, torch.Tensor]  # images and labels of the per-epoch validation error
    references: tuple[torch.Tensor, torch.Tensor]  # training images the GSL 1-NN validation searches
    steps: int  # optimisation steps per epoch
    flip: bool  # whether augmentation flips (not for digits and SVHN)
    validation_source: str
    split_indices: np.ndarray  # position of each training image in the training split as loaded


def _load_data(run: _Run, data_dir, download: bool) -> _Data:
    config, context = run.config, run.context
    # Rank 0 downloads (if needed) before the others read: torchvision extracts in place.
    if not context.is_main:
        barrier(context)
    image_folder = run.record.get("image_folder")
    resize = bool(image_folder and image_folder["resize"])
    train_images, train_labels = load_dataset(config.dataset, "train", data_dir=data_dir,
                                              download=download and context.is_main, resize=resize)
    test_images, test_labels = load_dataset(config.dataset, "test", data_dir=data_dir,
                                            download=download and context.is_main, resize=resize)
    if context.is_main:
        barrier(context)
    (train_images, train_labels, split_indices), held_out = _split_training_set(train_images, train_labels, config)
    if held_out is not None:
        monitor_images, monitor_labels = held_out
        source = "held-out training slice"
    else:
        monitor_images, monitor_labels = test_images[:config.monitor_size], test_labels[:config.monitor_size]
        source = f"first {len(monitor_labels)} test images (monitoring only; no model selection)"
    global_batch = config.batch_size * context.world_size
    steps = len(train_labels) // global_batch
    if steps == 0:
        raise InputError(f"the training set ({len(train_labels)} images) is smaller than one global batch "
                         f"({global_batch}); lower --batch-size")
    images = to_device_images(train_images, run.device)
    labels = torch.from_numpy(train_labels).to(run.device)
    references = min(config.val_reference_size, len(train_labels))
    return _Data(
        images=images, labels=labels,
        monitor=(to_device_images(monitor_images, run.device), torch.from_numpy(monitor_labels).to(run.device)),
        references=(images[:references], labels[:references]), steps=steps,
        flip=dataset_info(config.dataset, image_folder).flip, validation_source=source, split_indices=split_indices,
    )


def _split_training_set(images, labels, config: TrainConfig):
    """Hold out ``val_size`` training images (seeded) for the validation error; the rest (and the positions
    of the rest in the split) trains."""
    if config.val_size == 0:
        return (images, labels, np.arange(len(labels))), None
    if config.val_size >= len(labels):
        raise InputError(f"val size {config.val_size} must be smaller than the training set ({len(labels)} images)")
    order = np.random.RandomState(config.seed).permutation(len(labels))
    held_out, kept = np.sort(order[:config.val_size]), np.sort(order[config.val_size:])
    return (images[kept], labels[kept], kept), (images[held_out], labels[held_out])


# --- step 3: the run folder's records (rank 0) ----------------------------------------------------

def _start_records(run: _Run, data: _Data, command_line: list[str] | None) -> None:
    if run.checkpoint is not None and int(run.checkpoint["epoch"]) < run.config.epochs:
        # Extending a finished run: its old final weights must not pass for the new run's.
        (run.run_dir / runs.WEIGHTS_FILE).unlink(missing_ok=True)
    runs.write_config(run.run_dir, run.record)
    runs.start_environment(run.run_dir, run.config, run.device, run.context.world_size, data.validation_source,
                           command_line, previous=run.previous_environment)


# --- step 4: model, optimiser and the step function ----------------------------------------------

class _Step:
    """``train_step`` through the (possibly compiled) model. torch.compile compiles at the first call:
    a failure there falls back to eager mode, with a message."""

    def __init__(self, eager_model, use_compile: bool, amp: bool, channels_last: bool, log: Log | None):
        self.eager_model = eager_model
        self.model = _maybe_compile(eager_model, use_compile, log)
        self.unproven = self.model is not eager_model
        self.options = dict(amp=amp, channels_last=channels_last)
        self.log = log

    def __call__(self, *arguments) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.unproven:
            return train_step(self.model, *arguments, **self.options)
        try:
            result = train_step(self.model, *arguments, **self.options)
        except Exception as error:  # noqa: BLE001 - any compiler failure means "run eagerly"
            if self.log:
                self.log(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); running eagerly")
            self.model = self.eager_model
            result = train_step(self.model, *arguments, **self.options)
        self.unproven = False
        return result


def _maybe_compile(model, enabled: bool, log: Log | None):
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as error:  # compile is an optimisation: fall back, say so
        if log:
            log(f"torch.compile unavailable ({type(error).__name__}: {error}); running eagerly")
        return model


@dataclass
class _Training:
    model: torch.nn.Module  # the plain model (validation, checkpoints, weights)
    training_model: torch.nn.Module  # the model the steps run (DistributedDataParallel under torchrun)
    step: _Step
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: Criterion
    start_epoch: int
    metrics: list[dict]  # metrics.jsonl rows of the finished epochs
    order_generator: torch.Generator
    augment_generator: torch.Generator


def _build_training(run: _Run, log: Log) -> _Training:
    config, context, device = run.config, run.context, run.device
    # Same initial weights on every device and rank: initialise on the CPU from the seed.
    torch.manual_seed(config.seed)
    model = runs.build_model_from_config(run.record)
    if config.sync_batchnorm and context.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    start_epoch = 1
    if run.checkpoint is not None:
        _restore(run, model, optimizer, scheduler)
        start_epoch = int(run.checkpoint["epoch"]) + 1
    training_model = model
    if context.enabled:
        training_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_compile = config.compile if config.compile is not None else device.type == "cuda"
    # bf16 autocast and channels_last only on CUDA; on the CPU they would only slow the step down.
    on_cuda = device.type == "cuda"
    step = _Step(training_model, use_compile, config.amp and on_cuda, config.channels_last and on_cuda,
                 log if context.is_main else None)
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    if context.is_main and start_epoch > 1:
        log(f"[{run.name}] resuming {run.run_dir} at epoch {start_epoch}")
    # Data order and augmentation are reseeded every epoch from (seed, epoch[, rank]), so a resumed run
    # draws exactly what an uninterrupted one would, without saving generator states.
    return _Training(
        model=model, training_model=training_model, step=step, optimizer=optimizer, scheduler=scheduler,
        criterion=Criterion(config, context), start_epoch=start_epoch,
        metrics=[row for row in runs.read_metrics(run.run_dir) if row["epoch"] < start_epoch],
        order_generator=torch.Generator(device=device), augment_generator=torch.Generator(device=device),
    )


def _restore(run: _Run, model, optimizer, scheduler) -> None:
    """Load the checkpoint's states; InputError naming the file when they do not fit the run's model."""
    try:
        model.load_state_dict(run.checkpoint["model"])
        optimizer.load_state_dict(run.checkpoint["optimizer"])
        scheduler.load_state_dict(run.checkpoint["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{run.run_dir / runs.CHECKPOINT_FILE} does not fit the model and optimiser of "
                         f"{run.run_dir / runs.CONFIG_FILE} ({reason[:300]}); restore it from a copy, or delete it "
                         f"to train the run again from epoch 1") from None


# --- step 5: one epoch, one checkpoint ------------------------------------------------------------

def _train_epoch(run: _Run, data: _Data, training: _Training, epoch: int, quiet: bool) -> tuple[float, float, float]:
    """One pass over the training set; returns (lr, mean loss, training-batch error) over all ranks."""
    config, context = run.config, run.context
    training.training_model.train()
    training.order_generator.manual_seed(epoch_seed(config.seed, epoch, stream=0))
    training.augment_generator.manual_seed(epoch_seed(config.seed, epoch, stream=1 + context.rank))
    epoch_lr = training.optimizer.param_groups[0]["lr"]
    permutation = torch.randperm(len(data.labels), generator=training.order_generator, device=run.device)
    loss_sum = torch.zeros((), device=run.device)
    wrong = torch.zeros((), device=run.device, dtype=torch.long)
    global_batch = config.batch_size * context.world_size
    for step in progress(range(data.steps), quiet=quiet or not context.is_main,
                         desc=f"{run.name} epoch {epoch}/{config.epochs}"):
        offset = step * global_batch + context.rank * config.batch_size
        index = permutation[offset:offset + config.batch_size]
        images = data.images[index]
        if config.augment:
            images = augment_batch(images, training.augment_generator, flip=data.flip)
        with _warmed_up(training.optimizer, warmup_factor(config.warmup_epochs, epoch, step, data.steps)):
            loss, errors = training.step(training.criterion, training.optimizer, images, data.labels[index])
        loss_sum += loss
        wrong += errors
    training.scheduler.step()
    totals = all_reduce_sum(torch.stack([loss_sum, wrong.to(loss_sum.dtype)]), context)
    epoch_loss = float(totals[0]) / (data.steps * context.world_size)
    if not math.isfinite(epoch_loss):
        kept = (f"{run.run_dir / runs.CHECKPOINT_FILE} keeps the last good state (epoch {epoch - 1})"
                if epoch > 1 else "no epoch finished, so there is no checkpoint")
        raise TrainingError(
            f"[{run.name}] the loss became {epoch_loss} in epoch {epoch}; stopped. {kept}. "
            f"Start a new run (another --out) with a lower --lr; resuming would replay the same steps"
        )
    return epoch_lr, epoch_loss, float(totals[1]) / (data.steps * global_batch)


def warmup_factor(warmup_epochs: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up: step ``step`` (0-based) of ``epoch`` runs at lr * factor; 1 once the warm-up is over."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    done = (epoch - 1) * steps_per_epoch + step
    return 1.0 if done >= warmup_steps else (done + 1) / warmup_steps


@contextlib.contextmanager
def _warmed_up(optimizer: torch.optim.Optimizer, factor: float):
    """Run one step at ``factor`` times the scheduled lr, then put the scheduled value back exactly
    (MultiStepLR multiplies the value it finds at each milestone)."""
    if factor == 1.0:
        yield
        return
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, scheduled):
        group["lr"] = lr * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr


def _snapshot(run: _Run, data: _Data, training: _Training, epoch: int) -> None:
    """Rank 0, when ``epoch`` is one of --embedding-snapshots: the embeddings of the fixed sample of training
    images (robustgsl/snapshots.py), before the epoch's checkpoint so that a resumed run writes it again."""
    if epoch not in (run.config.embedding_snapshots or ()):
        return
    positions = snapshots.sample_positions(len(data.labels))
    model, was_training = training.model, training.model.training
    model.eval()
    index = torch.from_numpy(positions).to(run.device)
    _, embeddings = infer(model, data.images[index], run.device, amp=run.config.amp,
                          channels_last=run.config.channels_last)
    model.train(was_training)
    snapshots.write_snapshot(run.run_dir, epoch, embeddings.numpy(), data.labels[index].cpu().numpy(),
                             data.split_indices[positions])


def _checkpoint(run: _Run, training: _Training, row: EpochMetrics, log: Log) -> None:
    """Rank 0 after an epoch: metrics.jsonl, then the checkpoint, then the epoch's line."""
    training.metrics.append(dataclasses.asdict(row))
    # Metrics first: a kill between the two writes then loses nothing (rows past the
    # checkpoint are dropped on resume and written again).
    try:
        runs.write_metrics(run.run_dir, training.metrics)
        runs.save_checkpoint(run.run_dir, row.epoch, training.model, training.optimizer, training.scheduler)
    except WriteError as error:
        kept = f"the checkpoint of epoch {row.epoch - 1} is kept" if row.epoch > 1 else "no checkpoint yet"
        raise WriteError(f"{error}; {kept}: make room and run the same command with --resume") from error
    log(f"[{run.name}] epoch {row.epoch}/{run.config.epochs}  loss {row.loss:.4f}  lr {row.lr:.3g}  "
        f"train err {row.train_error:.2%}  val err {row.val_error:.2%}  {row.epoch_time_s:.1f}s")


# --- step 6: finish -------------------------------------------------------------------------------

def _finish(run: _Run, training: _Training, started: float) -> None:
    """Rank 0 writes the final weights (which mark the run finished) and the wall time."""
    if run.context.is_main:
        runs.save_weights(run.run_dir, training.model)
        # Wall time of this process; a resumed run adds to what the earlier processes recorded.
        runs.finish_environment(run.run_dir, time.time() - started)
    barrier(run.context)


def train_both(
    configs: dict[str, TrainConfig],
    out_dir: str | Path,
    runs_root: str | Path | None = None,
    seeds: list[int] | None = None,
    **train_kwargs,
) -> list[Path]:
    """Train the CE and GSL models (same data, seed and recipe) into <out_dir>/ce and <out_dir>/gsl; with
    ``seeds``, one such pair per seed (the configs' seed replaced) into <out_dir>/seed<N>/{ce,gsl}.

    Resumable like a single pair (``resume=True``): each pair continues where it stopped and pairs not
    started yet start. LAST_PAIR (in ``runs_root``, default the parent of ``out_dir``) names ``out_dir``.
    """
    out_dir = Path(out_dir)
    if seeds is None:
        paths = _train_pair(configs, out_dir, train_kwargs)
    else:
        _check_seeds(seeds)
        paths = [path for seed in seeds for path in _train_pair(
            {loss: dataclasses.replace(config, seed=seed) for loss, config in configs.items()},
            out_dir / seed_folder(seed), train_kwargs)]
    if is_main_process():
        runs_root = Path(runs_root) if runs_root is not None else out_dir.parent
        remove_stale_temporaries(runs_root, names=[runs.LAST_PAIR_FILE])
        runs.write_last_pair(runs_root, out_dir)
    return paths


def _check_seeds(seeds: list[int]) -> None:
    if not seeds:
        raise InputError("--seeds needs at least one seed, e.g. 0,1,2")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated or min(seeds) < 0:
        raise InputError(f"seeds must be distinct integers >= 0, got {','.join(map(str, seeds))}")


def _train_pair(configs: dict[str, TrainConfig], out_dir: Path, train_kwargs: dict) -> list[Path]:
    # Resuming a pair interrupted during CE: the GSL run has not started yet and starts afresh (train's rule).
    paths = [train(configs[name], out_dir / name, **train_kwargs) for name in ("ce", "gsl")]
    return paths
