"""Embedding snapshots during training: the paper's Figure 1 (how the embedding of each loss takes shape).

``train --embedding-snapshots 1,10,50,200`` saves, after each of those epochs, the embeddings of a fixed
sample of training images (``sample_positions``: the same images in every run on the same training
set) in ``<run>/snapshots/epoch_NNNN.npz`` (robustgsl/schema/run.py). The model is in eval mode and the
images are not augmented; nothing here touches the weights or a random stream of training, so a run
trains to the same weights with or without snapshots, and a resumed run writes the same snapshots as an
uninterrupted one (each is written before the epoch's checkpoint).

Where the report finds them: ``robustgsl evaluate`` copies each run's snapshots into the evaluation
folder (``snapshots/<folder>/``, recorded per model in evaluation.json), so the folder stays complete when
the run folders move; the report reads those copies, and falls back to the run folder for an evaluation
made without them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from robustgsl.errors import InputError
from robustgsl.io import atomic_path, save_npz_atomic
from robustgsl.schema.run import SNAPSHOT_ARRAYS, SNAPSHOT_DIR, snapshot_epoch, snapshot_file

# Training images per snapshot (enough for the class clouds to show, small enough to plot as points).
SNAPSHOT_SAMPLE = 1000
# A fixed seed, not the run's: every run (CE, GSL, any seed) shows the same images.
SAMPLE_SEED = 0


def sample_positions(n_train: int, size: int = SNAPSHOT_SAMPLE) -> np.ndarray:
    """Sorted positions of the sampled images among ``n_train`` training images (all when fewer)."""
    return np.sort(np.random.RandomState(SAMPLE_SEED).permutation(n_train)[:size])


def write_snapshot(run_dir: Path, epoch: int, embeddings: np.ndarray, labels: np.ndarray,
                   indices: np.ndarray) -> Path:
    """<run>/snapshots/epoch_NNNN.npz, written atomically."""
    path = Path(run_dir) / SNAPSHOT_DIR / snapshot_file(epoch)
    save_npz_atomic(path, {"embeddings": np.asarray(embeddings, dtype=np.float32),
                           "labels": np.asarray(labels, dtype=np.int64),
                           "indices": np.asarray(indices, dtype=np.int64), "epoch": np.int64(epoch)})
    return path


def snapshot_paths(folder: Path) -> dict[int, Path]:
    """epoch -> file of the snapshots in ``folder`` (a run's snapshots/ folder or its copy), in epoch order."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {snapshot_epoch(path.name): path for path in folder.iterdir() if path.is_file()}
    return {epoch: found[epoch] for epoch in sorted(epoch for epoch in found if epoch is not None)}


def read_snapshot(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one snapshot file; InputError naming the file when it is unreadable or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{path} is not a readable snapshot ({error})") from None
    absent = [field.name for field in SNAPSHOT_ARRAYS if field.name not in arrays]
    embeddings = arrays.get("embeddings")
    if absent or embeddings.ndim != 2 or len(arrays["labels"]) != len(embeddings):
        raise InputError(f"{path} lacks {', '.join(absent)}" if absent else
                         f"{path}: embeddings {embeddings.shape} do not match labels {arrays['labels'].shape}")
    return arrays


def copy_snapshots(run_dir: Path, destination: Path) -> bool:
    """Copy a run's snapshot files into ``destination`` (replacing what was there); False when it has none."""
    source = snapshot_paths(Path(run_dir) / SNAPSHOT_DIR)
    if not source:
        return False
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    for path in source.values():
        with atomic_path(destination / path.name) as tmp:
            shutil.copyfile(path, tmp)
    return True
