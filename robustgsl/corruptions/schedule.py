"""Where the chunks of a corruption data set are computed: in this process, or on a pool of worker processes.

A corruption's output is cut into chunks of image indices, per severity (``plan_chunks``). Each image draws
from its own generator, so the bytes do not depend on the chunk size, the number of workers or the order
in which chunks finish. ``Scheduler.fill`` computes the chunks of one corruption after another into one
output buffer and yields each corruption's name once the buffer holds all of it; with workers, the next
corruption is already queued then, so the workers go on computing while the caller saves and hashes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Iterator, Sequence

import numpy as np

from robustgsl.corruptions import corrupt
from robustgsl.progress import progress
from robustgsl.schema import corruption as schema

DEFAULT_CHUNK_SIZE = 100  # images per task: small enough to stay in cache, large enough to vectorise


@dataclass(frozen=True)
class Chunk:
    """Images ``start:stop`` of the test set under one corruption and severity, stored from ``offset`` on."""

    offset: int
    corruption: str
    severity: int
    seed: int
    start: int
    stop: int

    def compute(self, images: np.ndarray) -> np.ndarray:
        """The corrupted images; ``images`` is the whole clean test set."""
        return corrupt(images[self.start:self.stop], self.corruption, self.severity, self.seed,
                       indices=np.arange(self.start, self.stop))


def plan_chunks(corruption: str, severities: Sequence[int], seed: int, n: int, chunk_size: int) -> list[Chunk]:
    """Every chunk of one corruption, stored in its severity's rows of the output (``schema.severity_rows``)."""
    return [Chunk(schema.severity_rows(severities, severity, n).start + start, corruption, severity, seed, start,
                  min(start + chunk_size, n))
            for severity in severities for start in range(0, n, chunk_size)]


class Scheduler:
    """Computes every chunk of each corruption in turn into ``out`` (in this process)."""

    def __init__(self, images: np.ndarray, severities: Sequence[int], seed: int, chunk_size: int, quiet: bool):
        self.images, self.severities, self.seed = images, tuple(severities), seed
        self.chunk_size, self.quiet = chunk_size, quiet

    def plan(self, corruption: str) -> list[Chunk]:
        return plan_chunks(corruption, self.severities, self.seed, len(self.images), self.chunk_size)

    def fill(self, corruptions: Sequence[str], out: np.ndarray) -> Iterator[str]:
        """Yield each corruption once ``out`` holds all of its images."""
        for corruption in corruptions:
            with progress(total=len(out), quiet=self.quiet, desc=corruption, unit="img") as bar:
                for chunk in self.plan(corruption):
                    out[chunk.offset:chunk.offset + chunk.stop - chunk.start] = chunk.compute(self.images)
                    bar.update(chunk.stop - chunk.start)
            yield corruption

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc_info) -> None:
        pass


class WorkerPool(Scheduler):
    """Computes the chunks on ``workers`` spawned processes, queueing the next corruption before collecting
    the current one. Leaving the ``with`` block after an error stops the workers; a worker whose main
    process dies (even by SIGKILL, which runs no clean-up) exits by itself (``die_with_parent``)."""

    def __init__(self, images, severities, seed, chunk_size, quiet, workers: int):
        super().__init__(images, severities, seed, chunk_size, quiet)
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                            initializer=_init_worker, initargs=(images, os.getpid()))

    def _submit(self, corruption: str) -> dict:
        """Queue every chunk of one corruption; future -> its chunk."""
        return {self.executor.submit(_compute_in_worker, chunk): chunk for chunk in self.plan(corruption)}

    def fill(self, corruptions: Sequence[str], out: np.ndarray) -> Iterator[str]:
        jobs = None
        for k, corruption in enumerate(corruptions):
            with progress(total=len(out), quiet=self.quiet, desc=corruption, unit="img") as bar:
                try:
                    jobs = self._submit(corruption) if jobs is None else jobs
                    queued = self._submit(corruptions[k + 1]) if k + 1 < len(corruptions) else None
                    _collect(jobs, out, bar)
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        f"a worker process died while computing {corruption} (killed, or out of memory); nothing "
                        "was written for it. Run the same command again to resume."
                    ) from error
            jobs = queued
            yield corruption

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:
            _terminate_workers(self.executor)
        self.executor.shutdown(wait=True, cancel_futures=True)


def make_scheduler(images: np.ndarray, severities: Sequence[int], seed: int, chunk_size: int, quiet: bool,
                   workers: int) -> Scheduler:
    """A pool of up to ``workers`` processes (no more than a corruption has chunks) when there is more than
    one of each, else this process."""
    chunks_per_corruption = len(severities) * -(-len(images) // chunk_size)
    if workers > 1 and chunks_per_corruption > 1:
        return WorkerPool(images, severities, seed, chunk_size, quiet, min(workers, chunks_per_corruption))
    return Scheduler(images, severities, seed, chunk_size, quiet)


def _collect(futures: dict, out: np.ndarray, bar) -> None:
    """Copy each finished chunk of one corruption into ``out``; a worker's exception is raised here."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in done:
            images = future.result()  # re-raises a worker's exception here
            offset = futures[future].offset
            out[offset:offset + len(images)] = images
            bar.update(len(images))


def _terminate_workers(executor: ProcessPoolExecutor) -> None:
    """Stop the workers of an abandoned run. After one worker is killed, a survivor can block for
    ever on the task queue's lock (Python < 3.12), and shutdown would then wait on it."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


# ---------------------------------------------------------------- in the worker processes

_worker_images: np.ndarray | None = None

# glibc's malloc hands blocks above its mmap threshold (128 KiB at first) back to the system on free,
# so each chunk's float64 temporaries (2.4 MB for 100 images) would be fresh pages, page-faulted in again,
# every time. A worker keeps its heap instead; its peak is a few chunks.
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


# How often a worker checks that its main process still runs, where the kernel cannot tell it (not Linux).
PARENT_POLL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # prctl option number (linux/prctl.h)


def die_with_parent(parent_pid: int) -> None:
    """Make this worker process exit when ``parent_pid`` (its main process) dies, however it dies.

    The queue a worker waits on stays open while any worker holds it, so nothing else would end it:
    on Linux the kernel sends SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG); everywhere a
    daemon thread exits when the worker has been handed to another parent.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _init_worker(images: np.ndarray, parent_pid: int) -> None:
    global _worker_images
    die_with_parent(parent_pid)
    _worker_images = images
    keep_freed_memory()
    # One thread per process (the processes already use every core), set before the corruption
    # modules (numba, OpenCV, possibly torch) start their thread pools.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[variable] = "1"
    from robustgsl.corruptions import _registry

    _registry()
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _compute_in_worker(chunk: Chunk) -> np.ndarray:
    return chunk.compute(_worker_images)
