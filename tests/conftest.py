"""Fixtures shared by several test modules, and one core's worth of threads per pytest-xdist worker.

`make test` runs the suite on pytest-xdist workers, one per core. Each worker (and every process a test
starts, which inherits its environment) gets its share of the cores as intra-op threads, so that the
workers do not oversubscribe them (with the default threads per worker the suite ran slower than serially).
"""

from __future__ import annotations

import os

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # set before any test module imports torch
    _share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, str(_share))

import pytest  # noqa: E402

from corruption_helpers import DIGITS_C_CORRUPTIONS  # noqa: E402
from fault_helpers import folder_bytes  # noqa: E402


@pytest.fixture(scope="session")
def digits_corruptions(tmp_path_factory):
    """The 540 digits test images under DIGITS_C_CORRUPTIONS at severities 1-5, as `robustgsl corrupt` writes
    them (seed 0). Tests only read it (a test that alters a folder alters a copy); teardown checks that."""
    from robustgsl.corruptions.dataset import write_corruption_dataset
    from robustgsl.data import load_dataset

    folder = tmp_path_factory.mktemp("corruptions") / "DIGITS-C"
    images, labels = load_dataset("digits", "test")
    write_corruption_dataset(images, labels, folder, corruptions=list(DIGITS_C_CORRUPTIONS), seed=0, workers=1,
                             dataset_name="digits", quiet=True)
    written = folder_bytes(folder)
    yield folder
    assert folder_bytes(folder) == written, "a test altered the shared digits corruption folder"
