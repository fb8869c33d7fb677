"""Tests for wbcstudy.experiments.baseline on tiny synthetic data: metrics on hand-made predictions, a toy fit,
plateaus."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wbcstudy.experiments import baseline as bx
from wbcstudy.models.wnet import wnet_parameter_count
from wbcstudy.train import TrainConfig, TrainResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _result(val_accuracy: list[float], seconds: float = 1.5) -> TrainResult:
    """A TrainResult with a given validation-accuracy history (the model is irrelevant here)."""
    history = pd.DataFrame({"epoch": range(1, len(val_accuracy) + 1), "val_accuracy": val_accuracy,
                            "seconds": [0.1] * len(val_accuracy)})
    return TrainResult(model=nn.Identity(), history=history, best_epoch=int(np.argmax(val_accuracy)) + 1,
                       best_score=max(val_accuracy), seconds=seconds, device="cpu", precision="fp32", completed=True)


def test_evaluate_models_on_hand_made_predictions() -> None:
    # 3 classes, 6 test cells, two per class
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y] * 0.8 + 0.2 / 3  # every cell right, rows sum to 1
    # one class-1 cell called class 2, and one class-2 cell called class 0
    wrong = np.array([[.8, .1, .1], [.7, .2, .1], [.1, .8, .1], [.1, .3, .6], [.5, .1, .4], [.1, .1, .8]])
    runs = {"good": (_result([0.5, 0.9], seconds=2.0), perfect), "poor": (_result([0.4, 0.6]), wrong)}
    metrics, ci, table = bx.evaluate_models(runs, y, n_boot=200, seed=0, names={"good": "Good", "poor": "Poor"})
    assert metrics["good_accuracy"] == 1.0 and metrics["good_auroc"] == 1.0 and metrics["good_macro_f1"] == 1.0
    assert metrics["good_train_seconds"] == 2.0
    assert metrics["poor_accuracy"] == pytest.approx(4 / 6)
    assert metrics["poor_balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # per-class F1: class 0: P=2/3, R=1 → 0.8; class 1: P=1, R=0.5 → 2/3; class 2: P=1/2, R=1/2 → 1/2
    assert metrics["poor_macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    assert ci["good_accuracy"] == (1.0, 1.0)
    low, high = ci["poor_accuracy"]
    assert 0.0 <= low <= 4 / 6 <= high <= 1.0
    assert set(ci) == {f"{k}_{m}" for k in runs for m in ("accuracy", "balanced_accuracy", "auroc")}
    assert list(table.index) == ["Good", "Poor"]
    assert table.loc["Poor", "accuracy"] == pytest.approx(4 / 6)
    assert table.loc["Good", "accuracy 95% CI"] == "[1.000, 1.000]"


def test_plateaus_read_the_validation_history() -> None:
    runs = {"flat": (_result([0.5, 0.90, 0.905, 0.90, 0.903]), None),
            "rising": (_result([0.5, 0.6, 0.7, 0.8, 0.9]), None),
            "short": (_result([0.9, 0.9]), None)}
    assert bx.plateaus(runs) == {"flat": True, "rising": False, "short": False}


def test_split_counts_and_histories() -> None:
    arrays = {"train": (torch.zeros(5), torch.tensor([0, 0, 1, 2, 2])), "test": (torch.zeros(2), torch.tensor([1, 2]))}
    counts = bx.split_counts(arrays, ["a", "b", "c"])
    assert counts.to_dict() == {"train": {"a": 2, "b": 1, "c": 2, "total": 5},
                                "test": {"a": 0, "b": 1, "c": 1, "total": 2}}
    stacked = bx.histories({"m": (_result([0.1, 0.2]), None)}, names={"m": "Model"})
    assert list(stacked.columns) == ["val_accuracy"] and stacked.loc[("Model", 2), "val_accuracy"] == 0.2


def _separable(n_per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of uint8 NHWC images: dark ones (0–60) and bright ones (190–255) — separable by mean intensity."""
    g = torch.Generator().manual_seed(seed)
    dark = torch.randint(0, 61, (n_per_class, size, size, 3), generator=g, dtype=torch.uint8)
    bright = torch.randint(190, 256, (n_per_class, size, size, 3), generator=g, dtype=torch.uint8)
    return torch.cat([dark, bright]), torch.tensor([0] * n_per_class + [1] * n_per_class)


def test_train_classifier_fits_a_separable_toy_problem() -> None:
    data = {8: {"train": _separable(32, 8, 0), "val": _separable(8, 8, 1), "test": _separable(10, 8, 2)}}
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, device="cpu", precision="fp32", progress=False)
    result, probs = bx.train_classifier("wnet", 8, data, config, mean=(0.5,) * 3, std=(0.35,) * 3, n_classes=2,
                                        image_size=8)
    assert len(result.history) == 2 and result.best_score == 1.0
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == data[8]["test"][1].numpy()).mean() == 1.0
    summary = bx.run_summary({"toy": (result, probs)}, {"toy": "Toy"})
    assert summary.loc["Toy", "parameters"] == wnet_parameter_count(image_size=8, num_classes=2)
    assert summary.loc["Toy", "epochs"] == 2 and summary.loc["Toy", "best val accuracy"] == 1.0
    assert not summary.loc["Toy", "plateau reached"]  # two epochs cannot show a plateau (it needs four)
    # the initial weights depend only on the seed: a second run gives the same probabilities
    _, again = bx.train_classifier("wnet", 8, data, config, mean=(0.5,) * 3, std=(0.35,) * 3, n_classes=2, image_size=8)
    np.testing.assert_allclose(again, probs, rtol=1e-5, atol=1e-6)


def test_load_pbc_arrays_subsets_are_stratified_and_size_independent() -> None:
    from wbcstudy.data.sources import DatasetMissing

    try:
        data, classes = bx.load_pbc_arrays([64, 28], train_limit=80, eval_limit=40, seed=0)
    except DatasetMissing as missing:
        pytest.skip(str(missing))
    assert sorted(data) == [28, 64] and len(classes) == 8  # the chapter's sizes, whose caches its runs build
    x28, y28 = data[28]["train"]
    assert x28.dtype == torch.uint8 and x28.shape[1:] == (28, 28, 3) and data[64]["train"][0].shape[1:] == (64, 64, 3)
    assert torch.equal(y28, data[64]["train"][1])  # the same cells at both sizes
    assert abs(len(y28) - 80) <= 8 and set(y28.tolist()) == set(range(8))
    assert abs(len(data[28]["test"][1]) - 40) <= 8


def test_evaluate_seeds_means_spread_and_interval_on_hand_made_predictions() -> None:
    y = np.array([0, 0, 1, 1])
    right = np.eye(2)[y] * 0.9 + 0.05  # every cell right
    one_wrong = right.copy()
    one_wrong[1] = [0.3, 0.7]  # a class-0 cell called class 1
    runs = {"m_seed0": (_result([0.5, 0.9], seconds=2.0), right),
            "m_seed1": (_result([0.5, 0.8], seconds=3.0), one_wrong), "other": (_result([0.1, 0.2]), one_wrong)}
    metrics, ci, accuracies = bx.evaluate_seeds(runs, "m", y, n_boot=300, seed=0)
    assert accuracies == [1.0, 0.75]
    assert metrics["m_accuracy"] == pytest.approx(0.875)
    assert metrics["m_accuracy_sd"] == pytest.approx(np.std([1.0, 0.75], ddof=1)) == pytest.approx(0.25 / np.sqrt(2))
    assert (metrics["m_accuracy_min"], metrics["m_accuracy_max"]) == (0.75, 1.0)
    # balanced accuracy: seed 0 is 1; seed 1 recalls 1/2 of class 0 and 2/2 of class 1 → 0.75
    assert metrics["m_balanced_accuracy"] == pytest.approx(0.875)
    # the wrong cell (0.7 for class 1) still ranks below both class-1 cells
    assert metrics["m_auroc"] == pytest.approx(1.0)
    assert metrics["m_train_seconds"] == 5.0
    assert set(ci) == {"m_accuracy", "m_balanced_accuracy", "m_auroc"}
    low, high = ci["m_accuracy"]
    # seeds drawn, then two cells per class: seed 1 drawn twice with its wrong cell twice gives 0.5, seed 0 twice 1.0;
    # scoring both seeds on every draw (cells only) never goes below 0.75
    assert 0.5 <= low < 0.75 and high == pytest.approx(1.0)
    assert ci["m_auroc"] == (1.0, 1.0)  # every seed ranks every cell right, on any draw
    with pytest.raises(ValueError, match="no runs"):
        bx.evaluate_seeds(runs, "absent", y)


def test_seed_runs_and_seed_plateaus_match_whole_keys_only() -> None:
    runs = {k: (_result([0.5]), None) for k in ("m_seed0", "m_seed12", "m", "m_seedx", "mm_seed0", "m_seed1_extra")}
    assert list(bx.seed_runs(runs, "m")) == ["m_seed0", "m_seed12"]
    assert bx.seed_plateaus({"m_seed0": True, "m_seed1": True, "mm_seed0": False}, "m") is True
    assert bx.seed_plateaus({"m_seed0": True, "m_seed1": False}, "m") is False
    with pytest.raises(ValueError, match="no seeds"):
        bx.seed_plateaus({"m": True}, "m")


def test_seeds_accuracy_difference_holds_the_seed_spread() -> None:
    y = np.array([0, 0, 1, 1, 1, 0] * 10)
    good = np.eye(2)[y]  # every cell right
    bad = np.eye(2)[1 - y]  # every cell wrong
    runs = {"a_seed0": (_result([0.5]), good), "a_seed1": (_result([0.5]), good),
            "b_seed0": (_result([0.5]), bad), "b_seed1": (_result([0.5]), good)}  # b: one seed right, one wrong
    diff, (low, high) = bx.seeds_accuracy_difference(runs, "a", "b", y, n_boot=400, seed=0)
    assert diff == pytest.approx(0.5)
    # a cells-only interval would be [0.5, 0.5] (every cell's seed-mean difference is 0.5); drawing b's seeds with
    # replacement gives 0 (both right), 0.5 or 1 (both wrong): the interval spans them
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    same, interval = bx.seeds_accuracy_difference(runs, "a", "a", y, n_boot=50)
    assert same == 0.0 and interval == (0.0, 0.0)
    with pytest.raises(ValueError, match="no runs of 'c'"):
        bx.seeds_accuracy_difference(runs, "a", "c", y)


def test_plateau_by_budget_where_the_run_has_one_else_by_history() -> None:
    flat = _result([0.5, 0.9, 0.9, 0.9, 0.9])
    rising = _result([0.5, 0.6, 0.7, 0.8, 0.9])
    budget_flat, budget_gain = _result([0.5, 0.6, 0.7, 0.8, 0.9]), _result([0.5, 0.9, 0.9, 0.9, 0.9])
    budget_flat.budget_scores = {"half": 0.895, "full": 0.9}  # a rising history, but doubling gained 0.005
    budget_gain.budget_scores = {"half": 0.85, "full": 0.9}  # a flat history, but doubling gained 0.05
    runs = {k: (r, None) for k, r in (("flat", flat), ("rising", rising), ("bflat", budget_flat),
                                      ("bgain", budget_gain))}
    assert bx.plateaus(runs) == {"flat": True, "rising": False, "bflat": True, "bgain": False}
    table = bx.budget_sensitivity(runs, {"bgain": "gaining"})
    assert list(table.index) == ["bflat", "gaining"]
    assert table.loc["gaining", "gain from doubling"] == pytest.approx(0.05)


def test_train_seeds_keys_runs_by_seed_and_matches_train_classifier() -> None:
    data = {8: {"train": _separable(16, 8, 0), "val": _separable(4, 8, 1), "test": _separable(5, 8, 2)}}
    config = TrainConfig(epochs=1, batch_size=16, lr=3e-3, seed=0, device="cpu", precision="fp32", progress=False)
    options = dict(mean=(0.5,) * 3, std=(0.35,) * 3, n_classes=2, image_size=8)
    runs = bx.train_seeds("toy", "wnet", 8, data, config, seeds=[3, 4], **options)
    assert list(runs) == ["toy_seed3", "toy_seed4"]
    alone = bx.train_classifier("wnet", 8, data, replace(config, seed=4), **options)
    np.testing.assert_allclose(runs["toy_seed4"][1], alone[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(runs["toy_seed3"][1], runs["toy_seed4"][1])  # another seed, other weights


def test_zero_init_residual_starts_every_block_as_the_identity() -> None:
    from wbcstudy.models import build

    model = build("resnet18", 8, zero_init_residual=True)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    assert len(blocks) == 8 and all(float(b.bn2.weight.detach().abs().sum()) == 0.0 for b in blocks)
    assert float(build("resnet18", 8).layer1[0].bn2.weight.detach().min()) == 1.0  # the default is unchanged


def test_centre200_crop_is_the_centre_of_the_original(tmp_path) -> None:
    from PIL import Image

    from wbcstudy.data.cache import PBC_CROPS
    from wbcstudy.data.readers import load_pbc_image

    left, top, right, bottom = PBC_CROPS["centre200"]
    # the original is 360 wide x 363 high, the window starts at (48, 48): the 200-px centre starts at
    # column (360 - 200) / 2 = 80 and row (363 - 200) / 2 = 81.5, rounded down to 81
    assert (left + 48, top + 48, right - left, bottom - top) == (80, 81, 200, 200)
    rows, cols = np.meshgrid(np.arange(363), np.arange(360), indexing="ij")
    original = np.stack([rows % 256, cols % 256, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    path = tmp_path / "cell.png"  # lossless, so every pixel says where it came from
    Image.fromarray(original).save(path)
    crop = load_pbc_image(path, None, PBC_CROPS["centre200"])
    assert crop.shape == (200, 200, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1], crop[-1, -1, 0], crop[-1, -1, 1]) == (81, 80, 280 % 256, 279 % 256)


def test_plot_learning_curves_draws_one_line_per_run_and_one_legend_entry_per_model() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def run(values: list[float]) -> tuple[TrainResult, None]:
        result = _result(values)
        result.history["train_loss"] = [1.0 / (i + 1) for i in range(len(values))]
        return result, None

    runs = {"a": run([0.5, 0.6]), "b_seed0": run([0.4, 0.7, 0.8]), "b_seed1": run([0.45, 0.72, 0.81])}
    fig = bx.plot_learning_curves(runs, {"a": "Model A", "b": "Model B"}, title="t")
    acc_ax, loss_ax = fig.axes[:2]
    assert len(acc_ax.lines) == len(loss_ax.lines) == 3
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["Model A", "Model B"]
    assert acc_ax.lines[1].get_color() == acc_ax.lines[2].get_color() != acc_ax.lines[0].get_color()
    np.testing.assert_allclose(acc_ax.lines[2].get_ydata(), [0.45, 0.72, 0.81])
    plt.close(fig)


def test_load_pbc_arrays_adds_crop_views_of_the_same_cells() -> None:
    from wbcstudy.data.sources import DatasetMissing

    try:
        data, _ = bx.load_pbc_arrays([28], train_limit=40, eval_limit=24, seed=0, crops={"c": (28, "centre200")})
    except DatasetMissing as missing:
        pytest.skip(str(missing))
    assert list(data) == [28, "c"]
    for split in ("train", "val", "test"):
        assert torch.equal(data[28][split][1], data["c"][split][1])
        assert data["c"][split][0].shape[1:] == (28, 28, 3)
    assert not torch.equal(data[28]["train"][0], data["c"]["train"][0])  # a narrower field of view, other pixels
