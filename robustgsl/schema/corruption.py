"""A corruption folder (written by robustgsl/corruptions/dataset.py, read by its ``read_manifest`` and
``verify_corruption_dataset`` and, through them, by robustgsl/evaluate/inputs.py): the released CIFAR-10-C layout
plus a manifest.

    <corruption>.npy   uint8 (S*N, H, W, 3), C order: block k (rows k*N .. (k+1)*N - 1) holds severity
                       severities[k] (ascending), each block in test-set order; with severities 1..5 this
                       is the released CIFAR-10-C file
    labels.npy         uint8 (S*N,): the N test labels, once per severity block
    manifest.json      MANIFEST_FIELDS; its "files" maps each file above to FILE_FIELDS (data files also
                       DATA_FILE_FIELDS)
    .manifest.lock     empty; jobs writing into one folder hold it (flock) while they update the manifest

A file is written to ``.<name>.<pid>-<host>.<random>.tmp`` beside it and renamed (robustgsl/io.py), and recorded
in the manifest after that: a file the manifest does not list, or whose size or SHA-256 differs, is not trusted.
"""

from __future__ import annotations

import numpy as np

from robustgsl.schema import Field, names  # noqa: F401 - callers use schema.names(...)

MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.npy"
LOCK_FILE = ".manifest.lock"
DATA_SUFFIX = ".npy"

IMAGE_DTYPE = np.dtype(np.uint8)
LABEL_DTYPE = np.dtype(np.uint8)
GENERATOR = "robustgsl corrupt"
LAYOUT = (
    "CIFAR-10-C layout: <corruption>.npy uint8 (S*N, H, W, 3), severity blocks of N images in ascending "
    "severity order, each in test-set order; labels.npy uint8 (S*N,)"
)


# The fields that say which data a folder holds: a folder whose values differ holds another data set.
IDENTITY_FIELDS = (
    Field("generator_version", "text", "robustgsl.corruptions.GENERATOR_VERSION: bumped when any output changes"),
    Field("dataset", "text", "data set of the clean test images, e.g. cifar10"),
    Field("seed", "integer", "seed of every corruption's random draws"),
    Field("n_images", "count", "N, clean test images"),
    Field("image_shape", "list of 3 integers", "[H, W, 3] of each image"),
    Field("severities", "list of integers", "the severities written, ascending (1..5 for CIFAR-10-C)"),
    Field("images_sha256", "hex digest", "SHA-256 of the clean images: dtype, shape, then C-order bytes"),
    Field("labels_sha256", "hex digest", "SHA-256 of the clean labels: dtype, shape, then C-order bytes"),
)
MANIFEST_FIELDS = (
    Field("generator", "text", f"always {GENERATOR!r}"),
    Field("layout", "text", "LAYOUT, for a reader without this module"),
    *IDENTITY_FIELDS,
    Field("constants_source", "text", "where the severity constants come from"),
    Field("robustgsl_version", "text", "robustgsl version of the last writer"),
    Field("versions", "object", "versions of the libraries that compute the bytes, and of Python"),
    Field("exactness", "object", "how exactly each corruption reproduces the reference script, and under which "
                                 "conditions (EXACTNESS_FIELDS)"),
    Field("created_at", "ISO 8601 time, UTC", "first write into the folder"),
    Field("updated_at", "ISO 8601 time, UTC", "last file recorded"),
    Field("files", "object", "file name -> FILE_FIELDS, for every file written and verified"),
)
EXACTNESS_FIELDS = (
    Field("reference", "text", "the script the corruptions are compared with"),
    Field("opencv", "text", "the installed OpenCV (cv2.__version__); elastic_transform's bytes do not depend on it"),
    Field("corruptions", "object", "corruption name -> its exactness condition "
                                   "(robustgsl/corruptions/faithfulness.py), for all 19"),
)
FILE_FIELDS = (
    Field("sha256", "hex digest", "SHA-256 of the file's bytes"),
    Field("bytes", "bytes", "file size"),
    Field("shape", "list of integers", "shape of the array in the file"),
)
DATA_FILE_FIELDS = (
    Field("corruption", "text", "corruption name (robustgsl.corruptions.ALL_CORRUPTIONS)"),
    Field("constants", "list", "the corruption's 5 severity constants"),
    Field("seconds", "seconds", "time to compute and write the file"),
)


def data_file(corruption: str) -> str:
    """File name of one corruption's images, e.g. gaussian_noise.npy."""
    return f"{corruption}{DATA_SUFFIX}"


def data_shape(n_images: int, image_shape, n_severities: int) -> tuple[int, ...]:
    return (n_severities * n_images, *image_shape)


def severity_rows(severities, severity: int, n_images: int) -> slice:
    """The rows of a ``<corruption>.npy`` (and labels.npy) that hold ``severity``."""
    block = list(severities).index(severity)
    return slice(block * n_images, (block + 1) * n_images)
