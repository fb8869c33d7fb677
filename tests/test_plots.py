"""Tests for wbcstudy.plots: figures carry the expected labels, ticks, values and colours."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from wbcstudy import plots  # noqa: E402
from wbcstudy.evaluate import expected_calibration_error  # noqa: E402

PBC = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_class_colours_are_fixed_distinct_and_tolerant() -> None:
    assert set(plots.CLASS_COLOURS) == set(PBC) | {"blast", "normal"}
    assert all(mcolors.is_color_like(c) for c in plots.CLASS_COLOURS.values())
    assert len(set(plots.CLASS_COLOURS.values())) == len(plots.CLASS_COLOURS)
    assert plots.UNKNOWN_CLASS_COLOUR not in plots.CLASS_COLOURS.values()
    assert plots.class_colour("Neutrophils") == plots.CLASS_COLOURS["neutrophil"]
    assert plots.class_colour("IG") == plots.class_colour("immature granulocytes") == plots.CLASS_COLOURS["ig"]
    assert plots.class_colour("ALL") == plots.CLASS_COLOURS["blast"]
    assert plots.class_colour("something else") == plots.UNKNOWN_CLASS_COLOUR
    assert plots.class_palette(["monocyte", "platelet"]) == [plots.CLASS_COLOURS["monocyte"],
                                                             plots.CLASS_COLOURS["platelet"]]


def test_set_style_applies_seaborn_theme() -> None:
    plots.set_style()
    assert plt.rcParams["axes.grid"] is True
    assert plt.rcParams["savefig.bbox"] == "tight"
    from matplotlib.font_manager import FontProperties

    sizes = {k: FontProperties(size=plt.rcParams[k]).get_size_in_points()
             for k in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
                       "legend.fontsize", "legend.title_fontsize", "figure.titlesize")}
    assert min(sizes.values()) >= plots.MIN_FONT, sizes  # every default text legible at the column width
    assert plt.rcParams["figure.figsize"][0] <= plots.MAX_WIDTH


def test_plot_confusion_row_normalised() -> None:
    names = ["lymphocyte", "monocyte", "neutrophil"]
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # the last class never occurs
    ax = plots.plot_confusion(cm, names)
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    texts = [t.get_text() for t in ax.texts]
    # 8/10, 2/10, 0/10, 1/4, 3/4, 0/4; the empty row is left blank
    assert texts == ["0.80", "0.20", "0.00", "0.25", "0.75", "0.00"]
    assert "row-normalised" in ax.get_title()


def test_plot_confusion_counts_on_given_axes() -> None:
    _, ax = plt.subplots()
    out = plots.plot_confusion(np.array([[5, 1], [2, 7]]), ["blast", "normal"], ax=ax, normalise=False, title="C-NMC")
    assert out is ax
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]
    assert ax.get_title() == "C-NMC"
    with pytest.raises(ValueError):
        plots.plot_confusion(np.eye(3), ["a", "b"])


def test_plot_training_curves() -> None:
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [1.2, 0.8, 0.5], "val_loss": [1.3, 0.9, 0.7],
         "val_accuracy": [0.5, 0.7, 0.8]}
    )
    fig = plots.plot_training_curves(history, title="ResNet-18")
    loss_ax, acc_ax = fig.axes[:2]
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "loss")
    assert (acc_ax.get_xlabel(), acc_ax.get_ylabel()) == ("epoch", "accuracy")
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    np.testing.assert_allclose(loss_ax.get_lines()[1].get_ydata(), [1.3, 0.9, 0.7])
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), [0.5, 0.7, 0.8])
    assert fig._suptitle.get_text() == "ResNet-18"


def test_montage_tiles_and_titles() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    titles = [f"neutrophil → {p}" for p in ["neutrophil", "monocyte", "neutrophil", "ig", "neutrophil"]]
    fig = plots.montage(images, titles, ncols=3, title_colours=["black", "red", "black", "red", "black"])
    assert len(fig.axes) == 6  # 2 rows × 3 columns, one left empty
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 5
    assert [ax.get_title() for ax in shown] == titles
    assert shown[1].title.get_color() == "red"
    np.testing.assert_array_equal(shown[2].get_images()[0].get_array(), images[2])
    gray = plots.montage(images[..., 0], None, ncols=8)
    assert len(gray.axes) == 5 and gray.axes[0].get_images()[0].get_cmap().name == "gray"


def test_plot_reliability() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, size=300)
    prob = rng.dirichlet(np.ones(3), size=300)
    ax = plots.plot_reliability(y_true, prob, n_bins=10, label="ResNet-18")
    plots.plot_reliability(y_true, np.eye(3)[y_true], n_bins=10, ax=ax, label="oracle")
    assert ax.get_xlabel() == "confidence (top-label probability)" and ax.get_ylabel() == "accuracy"
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    ece = expected_calibration_error(y_true, prob, n_bins=10)
    assert labels == ["perfect calibration", f"ResNet-18 (ECE {ece:.3f})", "oracle (ECE 0.000)"]
