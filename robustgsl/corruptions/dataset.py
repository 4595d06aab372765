"""Write a corrupted test set in the released CIFAR-10-C layout: resumable, verified, on all cores.

Folder layout (the released CIFAR-10-C one when all 5 severities are written):

- ``<corruption>.npy``: uint8 (S*N, H, W, 3); block k (images k*N .. (k+1)*N - 1) is severity
  ``severities[k]`` (ascending), each block in test-set order. With severities 1..5 this is exactly
  the released layout; a subset is written the same way and recorded in the manifest.
- ``labels.npy``: uint8 (S*N,), the test labels repeated once per severity block.
- ``manifest.json``: generator and version, constants source, seed, data set, image count,
  severities, SHA-256 of the clean images and labels, and per file its SHA-256 and shape.

Every file is written to a temporary file and renamed, and the manifest is updated after each
corruption, so an interrupted run leaves only whole files and resumes by skipping the files whose
manifest entry verifies. A folder made from another seed, data set, image set or severity list is
refused unless ``overwrite``. Work is split into chunks of image indices over worker processes;
since each image draws from its own generator, the bytes do not depend on workers or chunk size.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from hashlib import sha256
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from robustgsl import __version__
from robustgsl.corruptions import (
    CONSTANTS_SOURCE,
    CORRUPTIONS,
    GENERATOR_VERSION,
    SEVERITIES,
    ALL_CORRUPTIONS,
    check_images,
    check_seed,
    corrupt,
    parse_severities,
    resolve_corruptions,
    severity_params,
)
from robustgsl.errors import InputError
from robustgsl.io import save_npy_atomic, sha256_file, write_json_atomic
from robustgsl.progress import progress

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.npy"
LAYOUT = (
    "CIFAR-10-C layout: <corruption>.npy uint8 (S*N, H, W, 3), severity blocks of N images in ascending "
    "severity order, each in test-set order; labels.npy uint8 (S*N,)"
)
# Folder names of the released data sets; other data sets get their name in capitals.
DATASET_FOLDERS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "DIGITS", "svhn": "SVHN"}
# Manifest fields that say which data a folder holds; a mismatch means another data set.
IDENTITY_FIELDS = ("generator_version", "dataset", "seed", "n_images", "image_shape", "severities",
                   "images_sha256", "labels_sha256")
DEFAULT_CHUNK_SIZE = 100  # images per task: small enough to stay in cache, large enough to vectorise


def default_out_dir(dataset: str) -> Path:
    """``corruptions/<DATASET>-C`` relative to the current folder, e.g. corruptions/CIFAR-10-C."""
    return Path("corruptions") / f"{DATASET_FOLDERS.get(dataset, dataset.upper())}-C"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _array_sha256(array: np.ndarray) -> str:
    digest = sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The folder's manifest, or None when there is none; InputError when it is unreadable."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}; delete it or pass --overwrite") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{path} is not a robustgsl corruption manifest; delete it or pass --overwrite")
    return manifest


def _file_problem(out_dir: Path, manifest: dict, file_name: str, check_hash: bool = True) -> str | None:
    """Why ``file_name`` cannot be trusted, or None when its manifest entry verifies."""
    entry = manifest["files"].get(file_name)
    path = out_dir / file_name
    if entry is None:
        return f"{file_name}: not recorded in {MANIFEST_NAME}" + (" (file present)" if path.exists() else "")
    if not path.exists():
        return f"{file_name}: missing"
    if path.stat().st_size != entry.get("bytes"):
        return f"{file_name}: size {path.stat().st_size} bytes, manifest says {entry.get('bytes')}"
    if check_hash and sha256_file(path) != entry.get("sha256"):
        return f"{file_name}: SHA-256 differs from the manifest (file changed or damaged)"
    return None


def verify_corruption_dataset(
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] | str = CORRUPTIONS,
    severities: Iterable[int] | str = SEVERITIES,
    *,
    seed: int | None = None,
    dataset: str | None = None,
    n_images: int | None = None,
    check_hashes: bool = True,
) -> list[str]:
    """Problems that keep ``out_dir`` from serving these corruptions and severities; [] when it does.

    Checks the manifest, that it covers the severities (and, when given, the seed, data set and
    image count), and that labels.npy and each ``<corruption>.npy`` exist and match their recorded
    size and SHA-256. Each problem is one line naming the file or field.
    """
    out_dir = Path(out_dir)
    names = resolve_corruptions(corruptions)
    wanted = parse_severities(severities)
    if not out_dir.is_dir():
        return [f"{out_dir}: folder does not exist"]
    try:
        manifest = read_manifest(out_dir)
    except InputError as error:
        return [str(error)]
    if manifest is None:
        return [f"{out_dir / MANIFEST_NAME}: missing (not made by robustgsl corrupt, or interrupted before start)"]
    problems = []
    missing = sorted(set(wanted) - set(manifest.get("severities", [])))
    if missing:
        problems.append(f"severities {missing} not in the folder (it holds {manifest.get('severities')})")
    for field, expected in (("seed", seed), ("dataset", dataset), ("n_images", n_images)):
        if expected is not None and manifest.get(field) != expected:
            problems.append(f"{field}: folder has {manifest.get(field)!r}, expected {expected!r}")
    for file_name in [LABELS_NAME] + [f"{name}.npy" for name in names]:
        problem = _file_problem(out_dir, manifest, file_name, check_hashes)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------- worker processes

_worker_images: np.ndarray | None = None

# glibc's malloc hands blocks above its mmap threshold (128 KiB at first) back to the system on free,
# so each chunk's float64 temporaries (2.4 MB for 100 images) are fresh pages every time: page faults
# made up about 15% of the workers' time. A worker keeps its heap instead; its peak is a few chunks.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
WORKER_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
WORKER_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in this process (see above); False where not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD))


def _init_worker(images: np.ndarray) -> None:
    global _worker_images
    _worker_images = images
    keep_freed_memory()
    # One thread per process (the processes already use every core), set before the corruption
    # modules (numba, possibly torch) are imported.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[variable] = "1"
    from robustgsl.corruptions import _registry

    _registry()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _corrupt_chunk(name: str, severity: int, seed: int, start: int, stop: int) -> np.ndarray:
    return corrupt(_worker_images[start:stop], name, severity, seed, indices=np.arange(start, stop))


def _tasks(name: str, severities: tuple[int, ...], seed: int, n: int, chunk_size: int):
    """(block offset in the output, corrupt arguments) for every chunk of every severity."""
    for block, severity in enumerate(severities):
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            yield block * n + start, (name, severity, seed, start, stop)


# ---------------------------------------------------------------- writer


def _identity(images, labels, dataset_name, seed, severities) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "dataset": dataset_name,
        "seed": seed,
        "n_images": int(len(images)),
        "image_shape": list(images.shape[1:]),
        "severities": list(severities),
        "images_sha256": _array_sha256(images),
        "labels_sha256": _array_sha256(labels),
    }


def _known_files(out_dir: Path) -> list[Path]:
    """Files this writer owns in ``out_dir`` (data, labels, manifest), present on disk."""
    names = [f"{name}.npy" for name in ALL_CORRUPTIONS] + [LABELS_NAME, MANIFEST_NAME]
    return [out_dir / name for name in names if (out_dir / name).exists()]


# A temporary file is written in one go right after it is created; one this old belongs to a killed
# run, not to another job writing into the same folder (corruptions split across cluster jobs).
STALE_TEMPORARY_SECONDS = 600


def _remove_stale_temporaries(out_dir: Path) -> None:
    # robustgsl.io's temporaries are ".<name>.<random>.tmp"; a killed run can leave one behind.
    now = time.time()
    for name in [f"{n}.npy" for n in ALL_CORRUPTIONS] + [LABELS_NAME, MANIFEST_NAME]:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            try:
                if now - stale.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                    stale.unlink(missing_ok=True)
            except FileNotFoundError:
                pass


@contextlib.contextmanager
def _manifest_lock(out_dir: Path):
    """Serialise manifest updates of jobs that write different corruptions into one folder."""
    with open(out_dir / ".manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_labels(labels: object, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be {n} integers (one per image), got dtype {labels.dtype} and shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() > 255):
        raise InputError(f"labels must be in 0..255 to be stored as uint8, got {labels.min()}..{labels.max()}")
    return labels


def write_corruption_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] | str = CORRUPTIONS,
    severities: Iterable[int] | str = SEVERITIES,
    seed: int = 0,
    workers: int | None = None,
    dataset_name: str = "cifar10",
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict:
    """Corrupt ``images`` with every corruption and severity and write the folder; returns the manifest.

    ``workers``: processes (default: all local cores, ``os.cpu_count()``); 1 runs in this process.
    Files whose manifest entry verifies are skipped (resume). A folder holding data from another
    seed, data set, image set or severity list, or .npy files without a manifest, is refused
    unless ``overwrite``, which deletes this writer's files there first.
    """
    log = log or (lambda message: None)
    names = resolve_corruptions(corruptions)
    severities = parse_severities(severities)
    seed = check_seed(seed)
    for name in names:
        severity_params(name)  # InputError now, not mid-run, for a corruption this installation lacks
        check_images(images, name)
    labels = _check_labels(labels, len(images))
    if len(images) == 0:
        raise InputError("no images to corrupt (got an empty batch)")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file; choose another --out")
    identity = _identity(images, labels, dataset_name, seed, severities)
    manifest = read_manifest(out_dir) if not overwrite else None
    if manifest is not None:
        differing = [f for f in IDENTITY_FIELDS if manifest.get(f) != identity[f]]
        if differing:
            details = "; ".join(
                f"{f}: folder has {manifest.get(f)!r}, this run {identity[f]!r}" if "sha256" not in f
                else f"{f}: the {'images' if f.startswith('images') else 'labels'} differ" for f in differing
            )
            raise InputError(
                f"{out_dir} holds a corruption data set made differently ({details}); choose another --out "
                "or pass --overwrite to replace it"
            )
    elif not overwrite and out_dir.is_dir():
        strays = sorted(p.name for p in out_dir.glob("*.npy"))
        if strays:
            raise InputError(
                f"{out_dir} holds .npy files but no {MANIFEST_NAME} ({', '.join(strays[:4])}"
                f"{', ...' if len(strays) > 4 else ''}), e.g. a downloaded CIFAR-10-C; choose another --out or "
                "pass --overwrite to replace them"
            )
    if overwrite:
        removed = _known_files(out_dir) if out_dir.is_dir() else []
        for path in removed:
            path.unlink()
        if removed:
            log(f"--overwrite: removed {len(removed)} files from {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)

    if manifest is None:
        manifest = {
            "generator": "robustgsl corrupt",
            "layout": LAYOUT,
            **identity,
            "constants_source": CONSTANTS_SOURCE,
            "created_at": _now(),
            "files": {},
        }
    manifest.update(
        robustgsl_version=__version__,
        versions=_library_versions(),
        constants_source=CONSTANTS_SOURCE,
    )

    def record(file_name: str, extra: dict) -> None:
        path = out_dir / file_name
        entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}
        with _manifest_lock(out_dir):
            # Another job may have recorded its files since: merge into what is on disk now.
            on_disk = read_manifest(out_dir)
            if on_disk is not None and all(on_disk.get(f) == manifest.get(f) for f in IDENTITY_FIELDS):
                manifest["files"] = {**on_disk["files"], **manifest["files"]}
            manifest["files"][file_name] = entry
            manifest["updated_at"] = _now()
            write_json_atomic(out_dir / MANIFEST_NAME, manifest)

    if _file_problem(out_dir, manifest, LABELS_NAME) is not None:
        stacked = np.tile(labels.astype(np.uint8), len(severities))
        save_npy_atomic(out_dir / LABELS_NAME, stacked)
        record(LABELS_NAME, {"shape": list(stacked.shape)})
    else:
        write_json_atomic(out_dir / MANIFEST_NAME, manifest)

    todo = []
    for name in names:
        problem = _file_problem(out_dir, manifest, f"{name}.npy")
        if problem is None:
            log(f"{name}: {out_dir / (name + '.npy')} verifies, skipped")
        else:
            todo.append(name)
    if not todo:
        return manifest

    n = len(images)
    n_tasks = len(severities) * -(-n // chunk_size)
    executor = None
    if workers > 1 and n_tasks > 1:
        executor = ProcessPoolExecutor(
            max_workers=min(workers, n_tasks), mp_context=get_context("spawn"),
            initializer=_init_worker, initargs=(images,),
        )
    # One output buffer for every corruption: a fresh 150 MB array per corruption costs its page
    # faults again (about 0.3 s for 10,000 images). Every chunk of the buffer is rewritten before
    # each save, since the tasks cover all images of all severities.
    out = np.empty((len(severities) * n,) + images.shape[1:], dtype=np.uint8)
    try:
        started = time.perf_counter()
        jobs = None
        for k, name in enumerate(todo):
            bar = progress(total=len(out), quiet=quiet, desc=name, unit="img")
            try:
                if executor is None:
                    for offset, (nm, severity, sd, start, stop) in _tasks(name, severities, seed, n, chunk_size):
                        out[offset:offset + stop - start] = corrupt(
                            images[start:stop], nm, severity, sd, indices=np.arange(start, stop))
                        bar.update(stop - start)
                else:
                    # Queue the next corruption before collecting this one, so the workers go on
                    # computing while this process saves and hashes (and while the last chunks of
                    # this corruption finish on the other workers).
                    try:
                        if jobs is None:
                            jobs = _submit(executor, name, severities, seed, n, chunk_size)
                        queued = (_submit(executor, todo[k + 1], severities, seed, n, chunk_size)
                                  if k + 1 < len(todo) else None)
                        _collect(jobs, out, bar)
                    except BrokenProcessPool as error:
                        raise RuntimeError(
                            f"a worker process died while computing {name} (killed, or out of memory); nothing "
                            "was written for it. Run the same command again to resume."
                        ) from error
                    jobs = queued
            finally:
                bar.close()
            save_npy_atomic(out_dir / f"{name}.npy", out)
            seconds = time.perf_counter() - started  # since the previous file was written
            started = time.perf_counter()
            record(f"{name}.npy", {"shape": list(out.shape), "corruption": name,
                                   "constants": _jsonable(severity_params(name)), "seconds": round(seconds, 2)})
            log(f"{name}: wrote {out_dir / (name + '.npy')} {tuple(out.shape)} in {seconds:.1f} s "
                f"({len(out) / max(seconds, 1e-9):,.0f} images/s)")
    except BaseException:
        if executor is not None:
            _terminate_workers(executor)
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return manifest


def _terminate_workers(executor: ProcessPoolExecutor) -> None:
    """Stop the workers of an abandoned run. After one worker is killed, a survivor can block for
    ever on the task queue's lock (Python < 3.12), and shutdown would then wait on it."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _submit(executor, name, severities, seed, n, chunk_size) -> dict:
    """Queue every chunk of one corruption; future -> offset of its images in the output."""
    return {executor.submit(_corrupt_chunk, *args): offset
            for offset, args in _tasks(name, severities, seed, n, chunk_size)}


def _collect(futures: dict, out: np.ndarray, bar) -> None:
    """Copy each finished chunk of one corruption into ``out``; a worker's exception is raised here."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in done:
            chunk = future.result()  # re-raises a worker's exception here
            offset = futures[future]
            out[offset:offset + len(chunk)] = chunk
            bar.update(len(chunk))


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _library_versions() -> dict:
    import PIL
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__, "pillow": PIL.__version__,
            "python": sys.version.split()[0]}
