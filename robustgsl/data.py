"""Data sets as uint8 arrays, and batch-wise augmentation on the training device.

Every data set is returned as ``images`` uint8 (N, 32, 32, 3) and ``labels`` int64 (N,). CIFAR-10,
CIFAR-100 and SVHN are read from their released on-disk formats in ``data_dir`` (downloaded there
with torchvision first when allowed and missing). ``digits`` is scikit-learn's handwritten digits
rendered to 32x32 RGB: real images that ship with scikit-learn, the offline default. ``imagefolder``
is a folder of your own in torchvision's ImageFolder layout (robustgsl/imagefolder.py), ``data_dir``
itself; its DatasetInfo comes from the folder (``imagefolder_record``, kept in a run's config.json).

Training keeps the whole set on the device as uint8 and augments each batch there (random crop with
4-pixel zero padding and horizontal flip, as in kuangliu/pytorch-cifar), the airbench way: no
DataLoader workers in the hot loop.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch

from robustgsl.errors import InputError
from robustgsl.imagefolder import load_imagefolder
from robustgsl.vocabulary import DATASET_INFO, IMAGEFOLDER, dataset_info

# Fraction of the 1,797 digits held out as the test set, and the split's fixed seed.
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, download: bool = True,
                 resize: bool = False):
    """Return (images uint8 (N, 32, 32, 3), labels int64 (N,)) of ``split`` ("train" or "test").

    ``resize`` applies to image folders only (other sizes resized to 32x32 instead of refused).
    """
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if name == IMAGEFOLDER:
        return load_imagefolder(_imagefolder_root(data_dir), split, resize=resize)[:2]
    dataset_info(name)
    if name == "digits":
        return _load_digits(split)
    root = Path(data_dir) if data_dir is not None else Path("data")
    loaders = {"cifar10": _load_cifar10, "cifar100": _load_cifar100, "svhn": _load_svhn}
    if not _released_files_present(name, root):
        if download:
            _download(name, root)
        else:
            raise InputError(_missing_message(name, root))
    try:
        images, labels = loaders[name](root, split)
    except InputError:
        raise
    except Exception as error:  # truncated pickles, wrong .mat contents, ...
        raise InputError(
            f"the {DATASET_INFO[name].display_name} files in {root} are corrupt or not in the released format "
            f"({type(error).__name__}: {error}); delete them and download again, or point --data-dir elsewhere"
        ) from error
    _check_arrays(name, root, images, labels)
    return images, labels


def _imagefolder_root(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise InputError("--dataset imagefolder needs --data-dir DIR, the folder holding train/<class>/ and "
                         "test/<class>/")
    return Path(data_dir)


def load_test_images(dataset: str, data_dir: str | Path | None = None, download: bool = True, resize: bool = False):
    """The test split, as used by the corruption generator and the evaluation."""
    return load_dataset(dataset, "test", data_dir=data_dir, download=download, resize=resize)


# --- digits -------------------------------------------------------------------------------------

def render_digits(images_8x8: np.ndarray) -> np.ndarray:
    """Render scikit-learn's 8x8 digits (values 0..16) as 32x32 RGB uint8 (bilinear x4 upscaling)."""
    from PIL import Image

    gray = np.clip(np.asarray(images_8x8, dtype=np.float64) * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rendered = np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR)) for g in gray])
    return np.repeat(rendered[..., None], 3, axis=-1)


def _load_digits(split: str):
    images, labels, index = _digits_split()
    return images[index[split]], labels[index[split]]  # fancy indexing copies: callers cannot alter the cache


@functools.cache
def _digits_split() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All 1,797 rendered digits, their labels and the split's indices, built once per process: training
    and evaluation load both splits, often several times in one process (a sweep, the tests)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = render_digits(digits.images)
    labels = digits.target.astype(np.int64)
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    index = {"train": np.sort(train_index), "test": np.sort(test_index)}
    for array in (images, labels, *index.values()):
        array.setflags(write=False)
    return images, labels, index


# --- released formats ---------------------------------------------------------------------------

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _released_files_present(name: str, root: Path) -> bool:
    if name == "cifar10":
        return all((root / _CIFAR10_DIR / f).is_file() for files in _CIFAR10_FILES.values() for f in files)
    if name == "cifar100":
        return all((root / _CIFAR100_DIR / f).is_file() for files in _CIFAR100_FILES.values() for f in files)
    return all((root / f).is_file() for f in _SVHN_FILES.values())


def _missing_message(name: str, root: Path) -> str:
    expected = {
        "cifar10": f"{root / _CIFAR10_DIR}/data_batch_1..5 and test_batch",
        "cifar100": f"{root / _CIFAR100_DIR}/train and test",
        "svhn": f"{root}/train_32x32.mat and test_32x32.mat",
    }[name]
    return (
        f"{DATASET_INFO[name].display_name} not found in {root} (expected {expected}); "
        f"pass --data-dir pointing at the folder that holds it, or allow the download (--download)"
    )


def _download(name: str, root: Path) -> None:
    import torchvision

    classes = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
    try:
        if name == "svhn":
            for split in ("train", "test"):
                torchvision.datasets.SVHN(str(root), split=split, download=True)
        else:
            classes[name](str(root), train=True, download=True)
    except Exception as error:
        raise InputError(
            f"could not download {DATASET_INFO[name].display_name} into {root} ({type(error).__name__}: {error}); "
            f"download it on a machine with internet access and pass its folder with --data-dir"
        ) from error


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle the CIFAR batches, which hold only dicts, lists, bytes and numpy arrays.

    Anything else (a class that could run code) is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol-2 pickles written by Python 3 store bytes through _codecs.encode (harmless).
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_cifar_batch(path: Path) -> dict:
    with open(path, "rb") as handle:
        return _ArrayUnpickler(handle, encoding="bytes").load()


def _cifar_images(data) -> np.ndarray:
    # Rows of 3072 bytes: 1024 red, 1024 green, 1024 blue, each row-major 32x32.
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _load_cifar10(root: Path, split: str):
    batches = [_read_cifar_batch(root / _CIFAR10_DIR / f) for f in _CIFAR10_FILES[split]]
    images = np.concatenate([_cifar_images(b[b"data"]) for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    return images, labels


def _load_cifar100(root: Path, split: str):
    batch = _read_cifar_batch(root / _CIFAR100_DIR / _CIFAR100_FILES[split][0])
    return _cifar_images(batch[b"data"]), np.asarray(batch[b"fine_labels"], dtype=np.int64)


def _load_svhn(root: Path, split: str):
    from scipy.io import loadmat

    mat = loadmat(root / _SVHN_FILES[split])
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2))).astype(np.uint8)
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    return images, labels


def _check_arrays(name: str, root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    num_classes = DATASET_INFO[name].num_classes
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels) or len(labels) == 0:
        raise InputError(
            f"the {DATASET_INFO[name].display_name} files in {root} hold images of shape {images.shape} "
            f"and {len(labels)} labels; expected (N, 32, 32, 3) and N labels"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(
            f"the {DATASET_INFO[name].display_name} files in {root} hold labels in "
            f"[{labels.min()}, {labels.max()}], expected 0..{num_classes - 1}"
        )


# --- augmentation on device ---------------------------------------------------------------------

def to_device_images(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy -> uint8 (N, 3, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop with zero padding and optional horizontal flip, for a uint8 (B, 3, H, W) batch.

    Same distribution as torchvision's RandomCrop(H, padding) + RandomHorizontalFlip, drawn batch-wise
    from ``generator`` (which lives on the images' device).
    """
    batch, _, height, width = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
    rows = offsets[0][:, None] + torch.arange(height, device=device)
    cols = offsets[1][:, None] + torch.arange(width, device=device)
    if flip:
        flipped = torch.rand(batch, generator=generator, device=device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=device)[:, None, None, None]
    channel_index = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return images.float().div_(255.0)
