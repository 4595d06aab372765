"""One test image under every corruption and severity: an array of tiles, or a labelled PNG."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from typing import Iterable

import numpy as np

from robustgsl.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    check_images,
    corrupt,
    parse_severities,
    resolve_corruptions,
)
from robustgsl.errors import InputError
from robustgsl.io import write_bytes_atomic


def _names(corruptions: Iterable[str] | str | None) -> tuple[str, ...]:
    return CORRUPTIONS if corruptions is None else resolve_corruptions(corruptions)


def corruption_tiles(image: np.ndarray, corruptions=None, seed: int = 0, index: int = 0,
                     severities: Iterable[int] | str = SEVERITIES) -> np.ndarray:
    """uint8 (C, 1 + S, H, W, 3): per corruption the clean image, then each severity.

    ``index`` is the image's position in the test set, so the tiles match that image's bytes in a
    data set written with the same seed.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"image must be one uint8 image (H, W, 3), got shape {image.shape}")
    names = _names(corruptions)
    severities = parse_severities(severities)
    batch = check_images(image[None], names[0])  # corrupt() checks the size for each of the others
    tiles = np.empty((len(names), 1 + len(severities)) + image.shape, dtype=np.uint8)
    tiles[:, 0] = image
    for row, name in enumerate(names):
        for col, severity in enumerate(severities, start=1):
            tiles[row, col] = corrupt(batch, name, severity, seed, indices=[index])[0]
    return tiles


def save_grid_png(path: str | os.PathLike, image: np.ndarray, corruptions=None, seed: int = 0, index: int = 0,
                  severities: Iterable[int] | str = SEVERITIES, title: str | None = None) -> Path:
    """Write the grid as a labelled PNG (rows: corruption names; columns: clean, severity 1..5)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = _names(corruptions)
    severities = parse_severities(severities)
    tiles = corruption_tiles(image, names, seed, index, severities)
    rows, cols = tiles.shape[:2]
    height = 0.6 + 0.9 * rows
    figure = Figure(figsize=(1.2 + 0.9 * cols, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(tiles[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {severities[c - 1]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(names[r].replace("_", " "), fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(title or f"test image {index}, seed {seed}", fontsize=9, y=1 - 0.08 / height)
    figure.subplots_adjust(left=0.2, right=0.98, top=1 - 0.55 / height, bottom=0.01,
                           wspace=0.05, hspace=0.05)
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    write_bytes_atomic(path, buffer.getvalue())
    return path
