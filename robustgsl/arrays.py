"""Inputs of the k-NN and SVC engines: checked conversion to torch tensors, and memory-bounded chunks."""

from __future__ import annotations

import numpy as np
import torch

from robustgsl.errors import InputError

# Bound on the score or kernel matrix held per chunk of queries (bytes).
DEFAULT_MEMORY_BYTES = 256 * 2**20

FLOAT32_UNIT_ROUNDOFF = 2.0**-24
FLOAT64_UNIT_ROUNDOFF = 2.0**-53


def as_device(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def as_numpy(array) -> np.ndarray:
    return np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array)


def as_2d_float_tensor(array, what: str) -> torch.Tensor:
    """``array`` as a float32/float64 (n, d) tensor; InputError for another shape, NaN or infinity."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (n, d), got shape {tuple(tensor.shape)}.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if tensor.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all()):  # NaN propagates
        raise InputError(f"{what} contains NaN or infinite values; check the model and its inputs.")
    return tensor


def labels_array(labels, n: int, num_classes: int, what: str) -> np.ndarray:
    """``labels`` as int64 (n,) class indices in 0..num_classes - 1; InputError otherwise."""
    labels = as_numpy(labels)
    if labels.shape != (n,):
        raise InputError(f"{what} must have shape ({n},) to match the embeddings, got {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what} must be integer class indices, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{what} must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"found {labels.min()}..{labels.max()}."
        )
    return labels


def rows_per_chunk(bytes_per_row: int, memory_bytes: int) -> int:
    return max(1, memory_bytes // max(1, bytes_per_row))


def chunk_rows(bytes_per_row: int, memory_bytes: int, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size`` capped by what keeps a chunk under ``memory_bytes`` (that by default)."""
    most = rows_per_chunk(bytes_per_row, memory_bytes)
    return most if chunk_size is None else max(1, min(int(chunk_size), most))


def spans(n: int, step: int) -> list[tuple[int, int]]:
    """(start, stop) pairs covering range(n) in steps of ``step``."""
    return [(start, min(start + step, n)) for start in range(0, n, step)]
