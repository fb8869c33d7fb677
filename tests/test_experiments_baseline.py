"""Tests for wbcstudy.experiments.baseline on tiny synthetic data: metrics on hand-made predictions, a toy fit, plateaus."""
from __future__ import annotations

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
    assert counts.to_dict() == {"train": {"a": 2, "b": 1, "c": 2, "total": 5}, "test": {"a": 0, "b": 1, "c": 1, "total": 2}}
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
