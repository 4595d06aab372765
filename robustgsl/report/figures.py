"""Figures for the report, returned as text ready to inline: SVG markup or base64 PNG data URIs.

Matplotlib is used through ``Figure`` objects only (no pyplot, no global backend switch), under a
fixed style. Output is deterministic: SVG ids come from a per-figure salt, the date and creator
metadata are dropped, and PNGs carry no software or time stamp.
"""

from __future__ import annotations

import base64
import io
import re

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from PIL import Image

# Okabe & Ito's colour-blind-safe palette; the baseline is drawn in dark grey.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#F0E442")
BASELINE_COLOUR = "#374151"
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"

STYLE = {
    "svg.fonttype": "none",  # text stays text: small files, selectable, drawn in the page's font
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "sans-serif"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "axes.labelcolor": INK,
    "axes.edgecolor": "#9ca3af",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "lines.linewidth": 1.8,
    "lines.markersize": 4,
    "text.usetex": False,
}


def plain(label: str) -> str:
    """Stop matplotlib from reading ``$...$`` in a run name as mathtext."""
    return str(label).replace("$", r"\$")


def key_colours(keys: list[str], baseline: str | None) -> dict[str, str]:
    colours, others = {}, iter(PALETTE * (1 + len(keys) // len(PALETTE)))
    for key in keys:
        colours[key] = BASELINE_COLOUR if key == baseline else next(others)
    return colours


def _svg(figure: Figure, salt: str) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"robustgsl-{salt}"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.05,
                       metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    # Inline SVG in HTML: drop the XML prolog, DOCTYPE and RDF metadata, keep the drawing.
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Let CSS size the figure: keep the viewBox, drop the fixed width and height.
    text = re.sub(r'(<svg[^>]*?)\s+width="[^"]*"\s+height="[^"]*"', r"\1", text, count=1)
    return text.replace("<svg ", f'<svg class="figure" role="img" aria-label="{salt}" ', 1)


def _png_data_uri(figure: Figure, dpi: int) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05,
                   metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_data_uri(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a PNG data URI (the page scales it up with crisp pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def severity_figure(curves: dict[str, dict[str, list[float]]], keys: list[str], colours: dict[str, str],
                    severities: list[int]) -> str:
    """Error (%) against severity, one panel per corruption group, one line per model/head.

    ``curves[group][key]`` holds the mean error over the group's corruptions at severity 0 (clean)
    and at each of ``severities``.
    """
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(2.75 * len(curves) + 0.4, 2.7))
        axes = figure.subplots(1, len(curves), sharey=True, squeeze=False)[0]
        xs = [0] + list(severities)
        for ax, (group, by_key) in zip(axes, curves.items()):
            for key in keys:
                if key in by_key:
                    ax.plot(xs, by_key[key], marker="o", color=colours[key], label=plain(key),
                            zorder=3 if colours[key] == BASELINE_COLOUR else 2)
            ax.set_title(group)
            ax.set_xticks(xs, ["clean"] + [str(s) for s in severities])
            ax.set_xlabel("severity")
        # Shared y axis: set the range once, after every panel is drawn, so no panel is clipped.
        top = np.nanmax([value for by_key in curves.values() for values in by_key.values() for value in values]
                        + [1.0])
        axes[0].set_ylim(0, 1.06 * top)
        axes[0].set_ylabel("error (%)")
        handles, labels = axes[0].get_legend_handles_labels()
        # One legend row while it fits (eight entries); matplotlib fills columns first, so a second
        # row would put the last key under the first.
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8))
        figure.set_layout_engine("constrained")
        return _svg(figure, "error-vs-severity")


def training_figure(runs: list[tuple[str, object]], colours: dict[str, str]) -> str:
    """Loss per epoch (one panel per model: CE and GSL losses live on different scales) and
    train/validation error per epoch of all models on one panel."""
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(3.0 * (len(runs) + 1.4), 2.7))
        axes = figure.subplots(1, len(runs) + 1, squeeze=False,
                               width_ratios=[1.0] * len(runs) + [1.4])[0]
        for ax, (name, metrics) in zip(axes, runs):
            ax.plot(metrics["epoch"], metrics["loss"], color=colours[name])
            ax.set_title(f"{plain(name)}: training loss")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            finite = metrics["loss"].to_numpy(dtype=float)
            finite = finite[np.isfinite(finite)]
            if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 30:
                ax.set_yscale("log")
        errors_ax = axes[-1]
        for name, metrics in runs:
            errors_ax.plot(metrics["epoch"], 100 * metrics["train_error"], color=colours[name],
                           linestyle=(0, (3, 2)), linewidth=1.3, label=f"{plain(name)} train")
            errors_ax.plot(metrics["epoch"], 100 * metrics["val_error"], color=colours[name],
                           label=f"{plain(name)} validation")
        errors_ax.set_title("error per epoch")
        errors_ax.set_xlabel("epoch")
        errors_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        errors_ax.set_ylabel("error (%)")
        errors_ax.set_ylim(bottom=0)
        errors_ax.legend(loc="upper right")
        figure.set_layout_engine("constrained")
        return _svg(figure, "training-curves")


def project_2d(clean: np.ndarray, corrupted: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Both embeddings in 2-D: the embedding itself when d <= 2, else the top two principal axes of
    the clean embedding (SVD of the centred matrix), with the corrupted points on the same axes."""
    clean = np.asarray(clean, dtype=np.float64)
    corrupted = np.asarray(corrupted, dtype=np.float64)
    if clean.shape[1] <= 2:
        pad = lambda x: np.pad(x, ((0, 0), (0, 2 - x.shape[1])))  # noqa: E731 (d = 1: second axis 0)
        return pad(clean), pad(corrupted), "embedding axes"
    centre = clean.mean(axis=0)
    _, _, vt = np.linalg.svd(clean - centre, full_matrices=False)
    axes = vt[:2]
    # An SVD axis is defined up to sign: point each one toward its largest coordinate, for stable plots.
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    return (clean - centre) @ axes.T, (corrupted - centre) @ axes.T, "PCA of the clean embedding"


def embedding_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], labels: np.ndarray,
                     class_names: list[str], corruption: str) -> str:
    """Rows = models, columns = clean / corrupted; points coloured by true class. PNG data URI.

    ``corruption`` is the title of the corrupted column, e.g. "gaussian noise, severity 5"."""
    labels = np.asarray(labels).astype(int)
    classes = sorted(set(labels.tolist()))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.4, 3.3 * len(panels) + 0.5))
        grid = figure.subplots(len(panels), 2, squeeze=False)
        for row, (name, clean, corrupted) in enumerate(panels):
            clean_2d, corrupted_2d, how = project_2d(clean, corrupted)
            both = np.vstack([clean_2d, corrupted_2d])
            low, high = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
            margin = 0.05 * (high - low) + 1e-9
            for column, (points, what) in enumerate(((clean_2d, "clean"), (corrupted_2d, corruption))):
                ax = grid[row, column]
                for index, label in enumerate(classes):
                    chosen = labels == label
                    ax.scatter(points[chosen, 0], points[chosen, 1], s=5, alpha=0.75, linewidths=0,
                               color=cmap(index % cmap.N), label=plain(class_names[index]))
                ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
                ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
                ax.set_title(f"{plain(name)} — {plain(what)}")
                ax.tick_params(labelsize=7)
                ax.set_xlabel(how, fontsize=7.5, color=MUTED)
        handles, names = grid[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 10),
                      markerscale=2.5, handletextpad=0.2, columnspacing=0.9)
        figure.set_layout_engine("constrained")
        return _png_data_uri(figure, dpi=110)


def sweep_figure(panels: list[dict], heads: list[str], colours: dict[str, str], x_label: str, log_x: bool,
                 categorical: bool, salt: str) -> str:
    """Clean error (%) against one swept option: one panel per combination of the other options' values,
    one line per head (mean over seeds) with a band from the lowest to the highest seed.

    ``panels[i]`` holds "title", "ticks" (positions, labels) and "curves": head -> "x", "mean", "low",
    "high" (NaN where a value has no finished run). A categorical option is drawn as points with
    min-max error bars, heads side by side, and no lines between categories.
    """
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(3.4 * columns + 0.4, 2.7 * rows + 0.5))
        axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
        for ax, panel in zip(axes, panels):
            for index, head in enumerate(heads):
                curve = panel["curves"].get(head)
                if curve is None:
                    continue
                x, mean, low, high = (np.asarray(curve[key], dtype=float) for key in ("x", "mean", "low", "high"))
                if categorical:
                    offset = (index - (len(heads) - 1) / 2) * 0.1
                    ax.errorbar(x + offset, mean, yerr=[mean - low, high - mean], fmt="o", capsize=2.5,
                                color=colours[head], label=plain(head))
                else:
                    ax.plot(x, mean, marker="o", color=colours[head], label=plain(head))
                    ax.fill_between(x, low, high, color=colours[head], alpha=0.16, linewidth=0)
            if log_x:
                ax.set_xscale("log")
            positions, labels = panel["ticks"]
            ax.set_xticks(positions, labels)
            ax.xaxis.set_minor_locator(NullLocator())
            if categorical:
                ax.set_xlim(-0.5, max(positions, default=0) + 0.5)
            ax.set_title(plain(panel["title"]))
            ax.set_xlabel(plain(x_label))
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        values = [value for panel in panels for curve in panel["curves"].values() for value in curve["high"]]
        top = np.nanmax(values + [1.0])
        axes[0].set_ylim(0, 1.08 * top)
        for ax in axes[::columns]:
            ax.set_ylabel("clean test error (%)")
        legend = {}  # a head missing from the first panel still gets its entry
        for ax in axes[:len(panels)]:
            legend.update(zip(*reversed(ax.get_legend_handles_labels())))
        order = [plain(head) for head in heads if plain(head) in legend]
        figure.legend([legend[label] for label in order], order, loc="outside lower center",
                      ncol=max(len(order), 1))
        figure.set_layout_engine("constrained")
        return _svg(figure, salt)
