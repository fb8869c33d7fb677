"""The book's figures: one seaborn style and one fixed colour per cell class."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wbcstudy.evaluate import expected_calibration_error, reliability_curve

__all__ = [
    "CLASS_COLOURS",
    "UNKNOWN_CLASS_COLOUR",
    "class_colour",
    "class_palette",
    "set_style",
    "MIN_FONT",
    "BOOK_WIDTH",
    "MAX_WIDTH",
    "plot_confusion",
    "plot_training_curves",
    "montage",
    "plot_reliability",
    "shift_examples",
    "mask_outlines",
]

# seaborn's "colorblind" palette, one colour per class, the same in every chapter
CLASS_COLOURS: dict[str, str] = {
    "neutrophil": "#0173b2",
    "lymphocyte": "#de8f05",
    "monocyte": "#029e73",
    "eosinophil": "#d55e00",
    "basophil": "#cc78bc",
    "ig": "#ca9161",
    "erythroblast": "#fbafe4",
    "platelet": "#949494",
    "blast": "#ece133",
    "normal": "#56b4e9",
}
UNKNOWN_CLASS_COLOUR = "#4d4d4d"

_ALIASES: dict[str, str] = {
    "immature_granulocyte": "ig",
    "immature_granulocytes": "ig",
    "thrombocyte": "platelet",
    "thrombocytes": "platelet",
    "lymphoblast": "blast",
    "all": "blast",  # C-NMC: ALL (leukaemic blast) vs HEM (normal)
    "hem": "normal",
}


def _canonical(name: str) -> str:
    """Class name in CLASS_COLOURS form: lower case, underscores, singular, known aliases."""
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    if key in CLASS_COLOURS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    if key.endswith("s") and key[:-1] in CLASS_COLOURS:
        return key[:-1]
    return key


def class_colour(name: str) -> str:
    """The book's colour for a class name (case, plural and common synonyms tolerated)."""
    return CLASS_COLOURS.get(_canonical(name), UNKNOWN_CLASS_COLOUR)


def class_palette(class_names: Sequence[str]) -> list[str]:
    """The book's colours for ``class_names``, in order."""
    return [class_colour(name) for name in class_names]


#: The smallest font any figure text may use (points): legible at the book's column width when a figure is at most
#: :data:`BOOK_WIDTH` inches wide and shown at that width.
MIN_FONT = 8
#: The book's column width in inches at the figure dpi: wider figures are scaled down, and their text with them.
BOOK_WIDTH = 10.0
#: The widest figure a chapter may draw (inches): shown at :data:`BOOK_WIDTH`, its 9-pt tick labels stay above 7 pt.
MAX_WIDTH = 11.0


def set_style() -> None:
    """Apply the book's figure style (seaborn whitegrid, colour-blind palette, sizes legible at the column width)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "figure.figsize": (8.0, 3.6),
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "figure.titlesize": 12,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "legend.fontsize": 9,
            "legend.title_fontsize": 9,
            "image.cmap": "viridis",
        }
    )


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` or the axes of a new figure."""
    if ax is not None:
        return ax
    _, new_ax = plt.subplots(figsize=figsize)
    return new_ax


def plot_confusion(
    cm: Any,
    class_names: Sequence[str],
    ax: Axes | None = None,
    normalise: bool = True,
    title: str | None = None,
    cmap: str = "Blues",
) -> Axes:
    """Annotated confusion-matrix heatmap (rows: true class), row-normalised by default."""
    counts = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"cm has shape {counts.shape}, expected ({k}, {k}) for {k} class names")
    if normalise:
        row_sums = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, row_sums, out=np.full_like(counts, np.nan), where=row_sums > 0)
        fmt, vmax = ".2f", 1.0
    else:
        values, fmt, vmax = counts, ".0f", None
    ax = _new_axes(ax, (1.0 + 0.6 * k, 0.6 + 0.55 * k))
    sns.heatmap(
        values,
        ax=ax,
        annot=True,
        fmt=fmt,
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        square=True,
        cbar=True,
        cbar_kws={"label": "fraction of the true class" if normalise else "count"},
        xticklabels=list(class_names),
        yticklabels=list(class_names),
        annot_kws={"fontsize": 8 if k > 6 else 10},
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    default = "Confusion matrix (row-normalised)" if normalise else "Confusion matrix (counts)"
    ax.set_title(default if title is None else title)
    return ax


def plot_training_curves(
    history: pd.DataFrame,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """Loss (train and validation) and validation accuracy per epoch, side by side."""
    if "epoch" not in history.columns:
        raise ValueError("history needs an 'epoch' column")
    if axes is None:
        fig, new_axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
        loss_ax, acc_ax = new_axes
    else:
        loss_ax, acc_ax = axes
        fig = loss_ax.figure
    epoch = history["epoch"]
    colours = {"train": "C0", "validation": "C1"}  # the same in both panels
    for column, label, style in [("train_loss", "train", "-"), ("val_loss", "validation", "--")]:
        if column in history.columns:
            loss_ax.plot(epoch, history[column], style, color=colours[label], marker="o", markersize=3, label=label)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    for column, label, style in [("train_accuracy", "train", "-"), ("val_accuracy", "validation", "--")]:
        if column in history.columns:
            acc_ax.plot(epoch, history[column], style, color=colours[label], marker="o", markersize=3, label=label)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_title("Accuracy")
    for ax in (loss_ax, acc_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title is not None:
        fig.suptitle(title)
    return fig


def montage(
    images: Any,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    title_colours: Sequence[str] | None = None,
    tile_size: float = 1.6,
    suptitle: str | None = None,
) -> Figure:
    """A grid of images (uint8 NHWC, or NHW grayscale) with one title per tile."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"images must be NHWC or NHW, got shape {arr.shape}")
    n = arr.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(tile_size * ncols, (tile_size + 0.3) * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        tile = arr[i]
        if tile.shape[-1] == 1:
            ax.imshow(tile[..., 0], cmap="gray", vmin=0, vmax=255 if tile.dtype == np.uint8 else None)
        else:
            ax.imshow(tile)
        if titles is not None:
            colour = title_colours[i] if title_colours is not None else "black"
            ax.set_title(str(titles[i]), fontsize=8, color=colour)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_reliability(
    y_true: Any,
    y_prob: Any,
    n_bins: int = 15,
    ax: Axes | None = None,
    label: str | None = None,
    colour: str | None = None,
    title: str | None = None,
) -> Axes:
    """Reliability diagram: accuracy against mean top-label confidence per bin, with the ECE in the legend."""
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins)
    ece = expected_calibration_error(y_true, y_prob, n_bins=n_bins)
    ax = _new_axes(ax, (4.2, 4.0))
    if "perfect calibration" not in ax.get_legend_handles_labels()[1]:
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    filled = curve[curve["count"] > 0]
    name = f"{label} (ECE {ece:.3f})" if label else f"ECE {ece:.3f}"
    ax.plot(filled["confidence"], filled["accuracy"], "-o", markersize=4, color=colour, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram" if title is None else title)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def shift_examples(rows: Sequence[tuple[str, Any]], labels: Sequence[Any], classes: Sequence[str],
                   tile_size: float = 1.25) -> Figure:
    """Example cells as the models see them: one row per image set (``rows``: (row title, uint8 NHWC images)), one
    column per class, each tile the first cell of that class in the set (``labels``: each set's class indices, in
    ``rows``' order). Sets that hold the same cells in the same order (a shift set's variants) show the same cells."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} image sets but {len(labels)} label arrays")
    fig, axes = plt.subplots(len(rows), len(classes), squeeze=False,
                             figsize=(min(MAX_WIDTH, 1.6 + tile_size * len(classes)), (tile_size + 0.1) * len(rows)))
    for r, ((title, images), y) in enumerate(zip(rows, labels)):
        y = np.asarray(y)
        for c, name in enumerate(classes):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            hits = np.flatnonzero(y == c)
            if len(hits):
                ax.imshow(np.asarray(images)[hits[0]])
            if r == 0:
                ax.set_title(name, fontsize=MIN_FONT + 1, color=class_colour(name))
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=MIN_FONT + 1)
    fig.tight_layout()
    return fig


def mask_outlines(images: Any, masks: Any, titles: Sequence[str] | None = None, ncols: int = 8,
                  tile_size: float = 1.3, suptitle: str | None = None) -> Figure:
    """:func:`montage` of images with each one's boolean mask outlined (a segmentation, checked by eye)."""
    fig = montage(images, titles, ncols=ncols, tile_size=tile_size, suptitle=suptitle)
    for ax, mask in zip(fig.axes, np.asarray(masks)):
        ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
    return fig
