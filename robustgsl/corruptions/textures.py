"""The frost textures of CIFAR-10-C, taken from the ``imagecorruptions`` package's data files.

make_cifar_c.py (hendrycks/robustness) reads ``frost1.png .. frost3.png, frost4.jpg .. frost6.jpg``
with ``cv2.imread`` and shrinks them with ``cv2.resize(fx=0.2, fy=0.2)`` (INTER_LINEAR) on every
call; here the same two calls, once per texture and process. The PyPI package ``imagecorruptions``
ships byte-identical copies in ``imagecorruptions/frost/``. Its ``__init__`` does not import on current
setuptools, so the files are found through the distribution's file list (or the import system's spec,
which does not run the module), never by importing it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from robustgsl.errors import InputError

# The reference's file list; the CIFAR frost draws ``randint(5)``, so only the first five are used.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
# make_cifar_c.py shrinks the textures by 0.2 (make_imagenet_c.py keeps them at full size).
CIFAR_FROST_SCALE = 0.2
PACKAGE = "imagecorruptions"


def _install_hint(detail: str) -> InputError:
    return InputError(f"frost textures not found: {detail}. Install them with `pip install {PACKAGE}` "
                      "(its frost/ images are used as data; the package is never imported)")


def frost_directory() -> Path:
    """The folder holding the installed ``imagecorruptions/frost/*`` images (no module code is run)."""
    try:
        for file in importlib.metadata.distribution(PACKAGE).files or ():
            if file.name == FROST_FILES[0] and file.parent.name == "frost":
                return Path(file.locate()).parent
    except importlib.metadata.PackageNotFoundError:
        pass
    # find_spec of a top-level package locates it without executing its __init__.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "frost"
    raise _install_hint(f"the Python package {PACKAGE!r} is not installed")


def frost_path(index: int) -> Path:
    path = frost_directory() / FROST_FILES[index]
    if not path.is_file():
        raise _install_hint(f"missing file {path}")
    return path


@functools.lru_cache(maxsize=None)
def frost_texture(index: int, scale: float = CIFAR_FROST_SCALE) -> np.ndarray:
    """Frost texture ``FROST_FILES[index]`` as RGB uint8 (H, W, 3), resized as the CIFAR script does.

    Read-only (shared between calls). RGBA PNGs lose their alpha channel (``cv2.imread``'s default).
    """
    path = frost_path(index)
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise InputError(f"cannot read frost texture {path}; reinstall with "
                         f"`pip install --force-reinstall {PACKAGE}`")
    texture = np.ascontiguousarray(cv2.resize(bgr, (0, 0), fx=scale, fy=scale)[..., ::-1])
    texture.setflags(write=False)
    return texture
