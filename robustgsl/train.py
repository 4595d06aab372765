"""Training of CE and GSL PreActResNet-18 models, airbench style.

The training set lives on the device as uint8 and each batch is augmented there; metrics are summed
on the device and read once per epoch (no host-device synchronisation per step). A run folder holds
everything needed to resume after an interruption (see ``robustgsl.runs``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from robustgsl import runs
from robustgsl.config import TrainConfig, validate_config
from robustgsl.data import augment_batch, dataset_info, load_dataset, to_device_images, to_float
from robustgsl.distributed import (
    DistributedContext, all_reduce_sum, barrier, is_main_process, gather_labels, gather_with_gradients, init_from_environment,
)
from robustgsl.errors import InputError, TrainingError
from robustgsl.io import write_json_atomic, write_text_atomic
from robustgsl.losses import GraphSmoothnessLoss, pairwise_distances
from robustgsl.progress import progress

Log = Callable[[str], None]
_EVAL_BATCH = 500


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_errors(loss_name: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Misclassified examples in a training batch: argmax for CE, leave-one-out 1-NN within the batch for GSL."""
    if loss_name == "ce":
        return (outputs.argmax(1) != labels).sum()
    distances = pairwise_distances(outputs.float())
    distances.fill_diagonal_(float("inf"))
    return (labels[distances.argmin(1)] != labels).sum()


@torch.no_grad()
def predict_outputs(model, images: torch.Tensor, device: torch.device, amp: bool, channels_last: bool) -> torch.Tensor:
    """Model outputs of uint8 (N, 3, H, W) images, in float32 (the caller sets eval mode)."""
    chunks = []
    for start in range(0, len(images), _EVAL_BATCH):
        batch = to_float(images[start:start + _EVAL_BATCH].to(device))
        if channels_last and device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model(batch)
        chunks.append(out.float())
    return torch.cat(chunks)


def validation_error(model, config: TrainConfig, monitor, references, device) -> float:
    """Argmax error (CE) or 1-NN error against training references (GSL) on the monitor images."""
    was_training = model.training
    model.eval()
    images, labels = monitor
    if config.loss == "ce":
        predictions = predict_outputs(model, images, device, config.amp, config.channels_last).argmax(1)
    else:
        reference_images, reference_labels = references
        queries = predict_outputs(model, images, device, config.amp, config.channels_last)
        keys = predict_outputs(model, reference_images, device, config.amp, config.channels_last)
        predictions = reference_labels[torch.cdist(queries, keys).argmin(1)]
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
        self.gsl = GraphSmoothnessLoss(k=config.k, alpha=config.alpha, reduction=config.gsl_reduction) if config.loss == "gsl" else None

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.gsl is None:
            return F.cross_entropy(outputs.float(), labels)
        if self.context.enabled and self.config.graph == "global":
            return self.gsl(gather_with_gradients(outputs.float()), gather_labels(labels))
        return self.gsl(outputs, labels)


def _split_training_set(images, labels, config: TrainConfig):
    """Hold out ``val_size`` training images (seeded) for the validation error; the rest trains."""
    if config.val_size == 0:
        return (images, labels), None
    if config.val_size >= len(labels):
        raise InputError(f"val size {config.val_size} must be smaller than the training set ({len(labels)} images)")
    order = np.random.RandomState(config.seed).permutation(len(labels))
    held_out, kept = np.sort(order[:config.val_size]), np.sort(order[config.val_size:])
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def _config_mismatch(saved: dict, current: dict) -> list[str]:
    # Extending a run (more epochs) and changing speed options are allowed on resume.
    free = {"epochs", "amp", "channels_last", "compile"}
    return [key for key in current if key not in free and saved.get(key) != current[key]]


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
) -> Path:
    """Train one model into ``run_dir`` and return it. Resumable with ``resume=True``."""
    log = log or (lambda message: None)
    validate_config(config)
    run_dir = Path(run_dir)
    context = init_from_environment(device)
    device_obj = torch.device(f"cuda:{context.local_rank}") if context.enabled and torch.cuda.is_available() \
        and (device is None or device.startswith("cuda")) else resolve_device(device)
    info = dataset_info(config.dataset)
    if config.sync_batchnorm and device_obj.type != "cuda":
        raise InputError("--sync-batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation)")
    # The world size is part of the recipe: it sets the global batch and the data each rank sees.
    config_dict = config.to_dict() | {"num_classes": info.num_classes, "world_size": context.world_size}

    checkpoint = None
    if run_dir.exists() and any(run_dir.iterdir()):
        if not resume:
            raise InputError(
                f"run folder {run_dir} already exists and is not empty; pass --resume to continue it, "
                f"or choose another --out"
            )
        if runs.is_finished(run_dir) and not (run_dir / runs.CHECKPOINT_FILE).exists():
            raise InputError(f"run folder {run_dir} holds a finished run without a checkpoint; nothing to resume")
        mismatch = _config_mismatch(runs.read_config(run_dir), config_dict)
        if mismatch:
            raise InputError(
                f"cannot resume {run_dir}: its config differs in {', '.join(sorted(mismatch))}; "
                f"resume with the same options or choose another --out"
            )
        if (run_dir / runs.CHECKPOINT_FILE).exists():
            checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT_FILE, device_obj)
            if int(checkpoint["epoch"]) > config.epochs:
                raise InputError(
                    f"cannot resume {run_dir} with --epochs {config.epochs}: its checkpoint is at epoch "
                    f"{int(checkpoint['epoch'])}; pass at least that many epochs"
                )
    elif resume:
        raise InputError(f"cannot resume: run folder {run_dir} does not exist or is empty")
    # Every rank has looked at the folder before rank 0 starts writing into it.
    barrier(context)

    # Rank 0 downloads (if needed) before the others read: torchvision extracts in place.
    if not context.is_main:
        barrier(context)
    train_images, train_labels = load_dataset(config.dataset, "train", data_dir=data_dir,
                                              download=download and context.is_main)
    test_images, test_labels = load_dataset(config.dataset, "test", data_dir=data_dir,
                                            download=download and context.is_main)
    if context.is_main:
        barrier(context)
    (train_images, train_labels), held_out = _split_training_set(train_images, train_labels, config)
    if held_out is not None:
        monitor_images, monitor_labels = held_out
    else:
        monitor_images, monitor_labels = test_images[:config.monitor_size], test_labels[:config.monitor_size]

    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None and int(checkpoint["epoch"]) < config.epochs:
            # Extending a finished run: its old final weights must not pass for the new run's.
            (run_dir / runs.WEIGHTS_FILE).unlink(missing_ok=True)
        write_json_atomic(run_dir / runs.CONFIG_FILE, config_dict)
        previous = runs.read_json(run_dir / runs.ENVIRONMENT_FILE) if checkpoint is not None else {}
        environment = runs.environment_info(device_obj, config.seed, command_line, {
            "world_size": context.world_size,
            # Every rank draws the same data order and its own augmentation stream.
            "augmentation_streams": "epoch_seed(seed, epoch, 1 + rank); data order: epoch_seed(seed, epoch, 0)",
            "sync_batchnorm": config.sync_batchnorm,
            "validation_source": "held-out training slice" if held_out is not None
            else f"first {len(monitor_labels)} test images (monitoring only; no model selection)",
        })
        if previous:  # a resumed run keeps its first start and accumulated wall time
            environment.update(started_at=previous.get("started_at"), wall_time_s=previous.get("wall_time_s", 0.0),
                               resumed_at=previous.get("resumed_at", []) + [runs.now_iso()])
        write_json_atomic(run_dir / runs.ENVIRONMENT_FILE, environment)

    # Same initial weights on every device and rank: initialise on the CPU from the seed.
    torch.manual_seed(config.seed)
    model = runs.build_model_from_config(config_dict)
    if config.sync_batchnorm and context.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device_obj)
    if config.channels_last and device_obj.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)

    # Data order and augmentation are reseeded every epoch from (seed, epoch[, rank]), so a resumed run
    # draws exactly what an uninterrupted one would, without saving generator states.
    order_generator = torch.Generator(device=device_obj)
    augment_generator = torch.Generator(device=device_obj)
    start_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = int(checkpoint["epoch"]) + 1
    metrics = [row for row in runs.read_metrics(run_dir) if row["epoch"] < start_epoch]

    training_model = model
    if context.enabled:
        training_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device_obj.index] if device_obj.type == "cuda" else None
        )
    use_compile = config.compile if config.compile is not None else device_obj.type == "cuda"
    step_model = _maybe_compile(training_model, use_compile, log if context.is_main else None)
    compiled_unproven = step_model is not training_model
    criterion = Criterion(config, context)

    images_on_device = to_device_images(train_images, device_obj)
    labels_on_device = torch.from_numpy(train_labels).to(device_obj)
    monitor = (to_device_images(monitor_images, device_obj), torch.from_numpy(monitor_labels).to(device_obj))
    reference_count = min(config.val_reference_size, len(train_labels))
    references = (images_on_device[:reference_count], labels_on_device[:reference_count])

    # bf16 autocast and channels_last only on CUDA; on the CPU they would only slow the step down.
    use_fast_path = config.amp and device_obj.type == "cuda"
    use_channels_last = config.channels_last and device_obj.type == "cuda"
    if device_obj.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    global_batch = config.batch_size * context.world_size
    steps = len(train_labels) // global_batch
    if steps == 0:
        raise InputError(
            f"the training set ({len(train_labels)} images) is smaller than one global batch ({global_batch}); "
            f"lower --batch-size"
        )
    if context.is_main and start_epoch > 1:
        log(f"[{config.name or config.loss}] resuming {run_dir} at epoch {start_epoch}")
    started = time.time()
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_start = time.time()
        training_model.train()
        order_generator.manual_seed(epoch_seed(config.seed, epoch, stream=0))
        augment_generator.manual_seed(epoch_seed(config.seed, epoch, stream=1 + context.rank))
        epoch_lr = optimizer.param_groups[0]["lr"]
        permutation = torch.randperm(len(train_labels), generator=order_generator, device=device_obj)
        loss_sum = torch.zeros((), device=device_obj)
        wrong = torch.zeros((), device=device_obj, dtype=torch.long)
        bar = progress(range(steps), quiet=quiet or not context.is_main,
                       desc=f"{config.name or config.loss} epoch {epoch}/{config.epochs}")
        for step in bar:
            offset = step * global_batch + context.rank * config.batch_size
            index = permutation[offset:offset + config.batch_size]
            images = images_on_device[index]
            if config.augment:
                images = augment_batch(images, augment_generator, flip=info.flip)
            step_arguments = (criterion, optimizer, images, labels_on_device[index])
            step_options = dict(amp=use_fast_path, channels_last=use_channels_last)
            if compiled_unproven:
                # torch.compile compiles at the first call: a failure there falls back to eager mode.
                try:
                    loss, errors = train_step(step_model, *step_arguments, **step_options)
                except Exception as error:  # noqa: BLE001 - any compiler failure means "run eagerly"
                    if context.is_main:
                        log(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); running eagerly")
                    step_model = training_model
                    loss, errors = train_step(step_model, *step_arguments, **step_options)
                compiled_unproven = False
            else:
                loss, errors = train_step(step_model, *step_arguments, **step_options)
            loss_sum += loss
            wrong += errors
        scheduler.step()
        totals = all_reduce_sum(torch.stack([loss_sum, wrong.to(loss_sum.dtype)]), context)
        epoch_loss = float(totals[0]) / (steps * context.world_size)
        if not math.isfinite(epoch_loss):
            kept = (f"{run_dir / runs.CHECKPOINT_FILE} keeps the last good state (epoch {epoch - 1})"
                    if epoch > 1 else "no epoch finished, so there is no checkpoint")
            raise TrainingError(
                f"[{config.name or config.loss}] the loss became {epoch_loss} in epoch {epoch}; stopped. {kept}. "
                f"Start a new run (another --out) with a lower --lr; resuming would replay the same steps"
            )
        if context.is_main:
            row = {
                "epoch": epoch,
                "loss": epoch_loss,
                "lr": epoch_lr,
                "train_error": float(totals[1]) / (steps * global_batch),
                "val_error": validation_error(model, config, monitor, references, device_obj),
                "epoch_time_s": time.time() - epoch_start,
            }
            metrics.append(row)
            # Metrics first: a kill between the two writes then loses nothing (rows past the
            # checkpoint are dropped on resume and written again).
            write_text_atomic(run_dir / runs.METRICS_FILE, "".join(json.dumps(m) + "\n" for m in metrics))
            _save_checkpoint(run_dir, epoch, model, optimizer, scheduler)
            log(f"[{config.name or config.loss}] epoch {epoch}/{config.epochs}  loss {row['loss']:.4f}  "
                f"lr {row['lr']:.3g}  train err {row['train_error']:.2%}  val err {row['val_error']:.2%}  "
                f"{row['epoch_time_s']:.1f}s")
        barrier(context)

    if context.is_main:
        from safetensors.torch import save_file

        from robustgsl.io import atomic_path

        with atomic_path(run_dir / runs.WEIGHTS_FILE) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        environment = runs.read_json(run_dir / runs.ENVIRONMENT_FILE)
        # Wall time of this process; a resumed run adds to what the earlier processes recorded.
        environment["wall_time_s"] = environment.get("wall_time_s", 0.0) + (time.time() - started)
        environment["finished_at"] = runs.now_iso()
        write_json_atomic(run_dir / runs.ENVIRONMENT_FILE, environment)
    barrier(context)
    return run_dir


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of one random stream (0: data order; 1 + rank: that rank's augmentation) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _save_checkpoint(run_dir, epoch, model, optimizer, scheduler):
    from robustgsl.io import atomic_path

    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    with atomic_path(run_dir / runs.CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def _maybe_compile(model, enabled: bool, log: Log | None):
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as error:  # compile is an optimisation: fall back, say so
        if log:
            log(f"torch.compile unavailable ({type(error).__name__}: {error}); running eagerly")
        return model


def train_both(
    configs: dict[str, TrainConfig],
    out_dir: str | Path,
    runs_root: str | Path | None = None,
    **train_kwargs,
) -> list[Path]:
    """Train the CE and GSL models (same data, seeds and recipe) into <out_dir>/ce and <out_dir>/gsl."""
    out_dir = Path(out_dir)
    resume = train_kwargs.pop("resume", False)
    paths = []
    for name in ("ce", "gsl"):
        run_dir = out_dir / name
        # Resuming a pair interrupted during CE: the GSL run has not started yet and starts afresh.
        started = run_dir.is_dir() and any(run_dir.iterdir())
        paths.append(train(configs[name], run_dir, resume=resume and started, **train_kwargs))
    marker_root = Path(runs_root) if runs_root is not None else out_dir.parent
    if is_main_process():
        write_text_atomic(marker_root / runs.LAST_PAIR_FILE, str(out_dir.resolve()) + "\n")
    return paths
