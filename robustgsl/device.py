"""Where a model runs: device resolution, bf16 autocast, and batched inference.

``infer`` is the one inference loop: training's per-epoch validation and evaluation both call it. It
returns the model's outputs and its embedding (``PreActResNet18.forward_with_embedding``) per image.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from robustgsl.data import to_float
from robustgsl.errors import InputError
from robustgsl.progress import progress


def resolve_device(device: str | None, local_rank: int | None = None) -> torch.device:
    """The torch device named by ``device`` (None: CUDA when available), refused with a clear message when
    it cannot be used here. Under torchrun (``local_rank`` given) a CUDA process takes its local rank's GPU."""
    if local_rank is not None and torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        return torch.device(f"cuda:{local_rank}")
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


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; nothing on the CPU (where it would only slow the model down)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_batch_size(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 500


def _float_batch(images, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Images [start, stop) as float32 (B, 3, H, W) in [0, 1] on ``device``."""
    if isinstance(images, np.ndarray):  # (N, H, W, 3), possibly memory-mapped: copy the slice out first
        batch = torch.from_numpy(np.array(images[start:stop])).to(device, non_blocking=True).permute(0, 3, 1, 2)
    else:  # a (N, 3, H, W) tensor, e.g. training images kept on the device
        batch = images[start:stop].to(device)
    return to_float(batch)


@torch.no_grad()
def infer(model, images, device: torch.device, *, amp: bool = True, channels_last: bool = True,
          batch_size: int | None = None, out_device: torch.device | str = "cpu", quiet: bool = True,
          desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and embeddings (float32, gathered on ``out_device``) of uint8 images, in batches.

    ``images``: a numpy (N, H, W, 3) array (a memory-mapped corruption file is read one batch at a time)
    or a (N, 3, H, W) tensor. bf16 autocast (``amp``) and channels_last apply on CUDA only. The caller puts
    the model in eval mode.
    """
    batch_size = batch_size or default_batch_size(device)
    use_channels_last = channels_last and device.type == "cuda"
    outputs, embeddings = [], []
    for start in progress(range(0, len(images), batch_size), quiet=quiet, desc=desc):
        batch = _float_batch(images, start, start + batch_size, device)
        if use_channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out, embedding = model.forward_with_embedding(batch)
        outputs.append(out.float().to(out_device))
        embeddings.append(embedding.float().to(out_device))
    return torch.cat(outputs), torch.cat(embeddings)
