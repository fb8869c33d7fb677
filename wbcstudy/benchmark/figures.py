"""The summary's figures: learning curves, accuracy against cost, robustness and domain shift, one panel each."""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from wbcstudy.benchmark.base import BenchmarkModel

#: History columns a learning curve is drawn from, in order of preference (the diffusion model has only its loss).
CURVE_COLUMNS: tuple[tuple[str, str], ...] = (("val_balanced_accuracy", "validation balanced accuracy"),
                                              ("val_accuracy", "validation accuracy"), ("loss", "training loss"),
                                              ("train_loss", "training loss"))


def curve_column(history: pd.DataFrame) -> tuple[str, str]:
    """The column of ``history`` a learning curve shows, and its axis label."""
    for column, label in CURVE_COLUMNS:
        if column in history.columns:
            return column, label
    raise ValueError(f"a history with columns {list(history.columns)} has none of {[c for c, _ in CURVE_COLUMNS]}")


def learning_curves(models: Mapping[str, BenchmarkModel], ncols: int = 4):
    """One small panel per model: its validation curve (or, without one, its training loss) against epoch or step."""
    n = len(models)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 2.6 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, models.values()):
        h = model.history
        if h is None or h.empty:
            ax.set_title(f"{model.name}: no history", fontsize=9)
            continue
        column, label = curve_column(h)
        x = "epoch" if "epoch" in h.columns else ("step" if "step" in h.columns else None)
        xs = h[x] if x else np.arange(1, len(h) + 1)
        ax.plot(xs, h[column], marker="o", ms=3)
        ax.set(xlabel=x or "record", ylabel=label)
        ax.set_title(f"{model.name}: {'plateau' if model.plateau else 'NO plateau'}", fontsize=9)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle("How each benchmarked model trained (validation split)")
    fig.tight_layout()
    return fig


def cost_scatter(table: pd.DataFrame):
    """Balanced accuracy (with its interval) against milliseconds per image, one labelled point per model; the marker
    area grows with the training seconds. ``table`` has columns ``balanced accuracy``, ``ci_low``, ``ci_high``,
    ``ms per image`` and ``training (s)``, indexed by model name."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    area = 30 + 270 * table["training (s)"] / max(float(table["training (s)"].max()), 1e-9)
    ax.errorbar(table["ms per image"], table["balanced accuracy"],
                yerr=[table["balanced accuracy"] - table["ci_low"], table["ci_high"] - table["balanced accuracy"]],
                fmt="none", ecolor="grey", capsize=3)
    ax.scatter(table["ms per image"], table["balanced accuracy"], s=area, alpha=0.7)
    for name, row in table.iterrows():
        ax.annotate(str(name), (row["ms per image"], row["balanced accuracy"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    ax.set(xscale="log", xlabel="milliseconds per test image (2 CPU threads, log scale)",
           ylabel="balanced accuracy (95% CI)",
           title="Accuracy against cost on the same PBC test cells (marker area: training seconds)")
    return fig


def robustness_panel(tables: Mapping[str, pd.DataFrame]):
    """Accuracy against perturbation level, one panel per perturbation, one line per model (Wilson bands)."""
    perturbations = list(dict.fromkeys(p for t in tables.values() for p in t["perturbation"]))
    fig, axes = plt.subplots(1, len(perturbations), figsize=(10.5, 3.6), squeeze=False)
    for ax, perturbation in zip(axes[0], perturbations):
        for name, table in tables.items():
            rows = table[table["perturbation"] == perturbation].sort_values("level")
            if rows.empty:
                continue
            line, = ax.plot(rows["level"], rows["accuracy"], marker="o", ms=3, label=name)
            ax.fill_between(rows["level"], rows["ci_low"], rows["ci_high"], color=line.get_color(), alpha=0.12)
        ax.set(xlabel=perturbation.replace("_", " ") + " level", ylabel="accuracy", ylim=(0, 1.02))
        ax.set_title(perturbation.replace("_", " "), fontsize=10)
    axes[0, -1].legend(loc="lower left", fontsize=8)
    fig.suptitle("Robustness: each model perturbed at its own input resolution")
    fig.tight_layout()
    return fig


def shift_panel(table: pd.DataFrame):
    """Balanced accuracy per model on PBC's own test cells and on each shifted set, grouped bars with 95% intervals.
    ``table`` has columns ``model``, ``test set``, ``balanced accuracy``, ``ci_low``, ``ci_high``."""
    sets = list(dict.fromkeys(table["test set"]))
    names = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = table[table["model"] == name].set_index("test set").reindex(sets)
        x = np.arange(len(sets)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, rows["balanced accuracy"], width, label=name,
               yerr=[rows["balanced accuracy"] - rows["ci_low"], rows["ci_high"] - rows["balanced accuracy"]],
               capsize=2, error_kw={"elinewidth": 0.8})
    ax.axhline(0.2, color="grey", ls=":", lw=1, label="chance (5 classes)")
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set(ylabel="balanced accuracy (95% CI)", ylim=(0, 1.05), title="Domain shift: trained on PBC, tested elsewhere")
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    return fig


def shift_variants_panel(table: pd.DataFrame, own: pd.Series | None = None):
    """Balanced accuracy per model on each shift set in each variant (as is, scale-matched, stain-normalised): one
    panel per set, the variants side by side, one bar per model with its 95% interval, the chance level as a dotted
    line. ``table`` has columns ``model``, ``test set``, ``variant``, ``balanced accuracy``, ``ci_low``, ``ci_high``,
    ``chance``; ``own`` (model → balanced accuracy on PBC's test cells) marks each model's own-laboratory level."""
    sets = list(dict.fromkeys(table["test set"]))
    variants = list(dict.fromkeys(table["variant"]))
    names = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(10.5, 3.9), sharey=True, squeeze=False)
    width = 0.8 / len(names)
    for ax, name_of_set in zip(axes[0], sets):
        part = table[table["test set"] == name_of_set]
        for i, name in enumerate(names):
            rows = part[part["model"] == name].set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + (i - (len(names) - 1) / 2) * width
            ax.bar(x, rows["balanced accuracy"], width, color=f"C{i}", label=name,
                   yerr=[rows["balanced accuracy"] - rows["ci_low"], rows["ci_high"] - rows["balanced accuracy"]],
                   capsize=1.5, error_kw={"elinewidth": 0.7})
            if own is not None and name in own.index:
                ax.plot([x[0] - width / 2, x[-1] + width / 2], [own[name]] * 2, color=f"C{i}", lw=0.6, ls="--")
        ax.axhline(float(part["chance"].iloc[0]), color="grey", ls=":", lw=1.2)
        ax.set_xticks(np.arange(len(variants)), [v.replace(", ", ",\n") for v in variants], fontsize=8)
        ax.set_title(name_of_set, fontsize=10)
    axes[0, 0].set(ylabel="balanced accuracy (95% CI)", ylim=(0, 1.05))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=4, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Trained on PBC, tested elsewhere: as is, at PBC's scale, and stain-normalised "
                 "(dotted: chance; dashed: each model on PBC)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
