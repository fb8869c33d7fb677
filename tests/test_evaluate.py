"""Tests for wbcstudy.evaluate against scikit-learn, scipy and hand-computed values."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from wbcstudy import evaluate as ev


def _random_case(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, softmax probabilities (correlated with the labels) and argmax predictions."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y_true] += 1.5
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, prob, prob.argmax(axis=1)


@pytest.mark.parametrize("n_classes,seed", [(2, 0), (3, 1), (8, 2), (8, 3)])
def test_classification_metrics_match_sklearn(n_classes: int, seed: int) -> None:
    y_true, prob, _ = _random_case(300, n_classes, seed)
    rng = np.random.default_rng(seed + 100)
    y_pred = np.where(rng.random(300) < 0.3, rng.integers(0, n_classes, size=300), prob.argmax(axis=1))
    labels = list(range(n_classes))
    got = ev.classification_metrics(y_true, y_pred, prob, labels=labels)
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert got["macro_precision"] == pytest.approx(p)
    assert got["macro_recall"] == pytest.approx(r)
    assert got["macro_f1"] == pytest.approx(f)
    if n_classes == 2:
        expected_auc = skm.roc_auc_score(y_true, prob[:, 1])
    else:
        expected_auc = skm.roc_auc_score(y_true, prob, multi_class="ovr", average="macro", labels=labels)
    assert got["auroc"] == pytest.approx(expected_auc)
    assert 0.0 <= got["ece"] <= 1.0


def test_hand_case_with_an_unpredicted_and_an_absent_class() -> None:
    # class 2 is never predicted; class 3 never occurs in y_true nor y_pred
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 1])
    got = ev.classification_metrics(y_true, y_pred, labels=[0, 1, 2, 3])
    assert got["accuracy"] == pytest.approx(3 / 6)
    # recalls: 1/2, 2/2, 0/2 over the classes present in y_true
    assert got["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # precision: 1/2, 2/4, 0 (no predictions -> 0), 0 ; averaged over the 4 labels
    assert got["macro_precision"] == pytest.approx((0.5 + 0.5) / 4)
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0
    )
    assert (got["macro_precision"], got["macro_recall"], got["macro_f1"]) == pytest.approx((p, r, f))
    assert "auroc" not in got and "ece" not in got


def test_string_labels_and_class_names() -> None:
    y_true = np.array(["b", "a", "a", "c"])
    y_pred = np.array(["b", "a", "c", "c"])
    got = ev.classification_metrics(y_true, y_pred, labels=["a", "b", "c"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    # integer labels with class names in `labels` are read as column indices
    names = ["neutrophil", "lymphocyte"]
    got2 = ev.classification_metrics([0, 1, 1], [0, 1, 0], [0.2, 0.9, 0.6], labels=names)
    assert got2["accuracy"] == pytest.approx(2 / 3)
    assert got2["auroc"] == pytest.approx(skm.roc_auc_score([0, 1, 1], [0.2, 0.9, 0.6]))
    with pytest.raises(ValueError):
        ev.classification_metrics(y_true, np.array(["b", "a", "z", "c"]), labels=["a", "b", "c"])


def test_binary_one_dimensional_probabilities_and_ties() -> None:
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 2, size=200)
    p = np.round(np.clip(0.5 + 0.3 * (y_true - 0.5) + rng.normal(0, 0.25, 200), 0, 1), 1)  # many ties
    got = ev.classification_metrics(y_true, (p > 0.5).astype(int), p)
    assert got["auroc"] == pytest.approx(skm.roc_auc_score(y_true, p))
    assert ev.auroc_ovr(y_true, np.stack([1 - p, p], axis=1)) == pytest.approx(skm.roc_auc_score(y_true, p))


def test_confusion_and_per_class_recall() -> None:
    y_true, _, y_pred = _random_case(500, 5, 7)
    cm = ev.confusion(y_true, y_pred, 6)  # class 5 absent everywhere
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=range(6)))
    recall = ev.per_class_recall(y_true, y_pred, 6)
    _, sk_recall, _, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=range(5), average=None, zero_division=0
    )
    np.testing.assert_allclose(recall[:5], sk_recall)
    assert math.isnan(recall[5])
    with pytest.raises(ValueError):
        ev.confusion([0, 3], [0, 1], 3)


def test_ece_hand_example() -> None:
    prob = np.array(
        [
            [0.95, 0.03, 0.02],  # true 0, correct, conf 0.95 -> bin (0.8, 1.0]
            [0.75, 0.15, 0.10],  # true 1, wrong,   conf 0.75 -> bin (0.6, 0.8]
            [0.15, 0.65, 0.20],  # true 1, correct, conf 0.65 -> bin (0.6, 0.8]
            [0.33, 0.32, 0.35],  # true 2, correct, conf 0.35 -> bin (0.2, 0.4]
        ]
    )
    y_true = np.array([0, 1, 1, 2])
    # bins: |1 - 0.95| * 1 + |0.5 - 0.70| * 2 + |1 - 0.35| * 1, over 4 cases
    expected = (0.05 + 2 * 0.20 + 0.65) / 4
    assert ev.expected_calibration_error(y_true, prob, n_bins=5) == pytest.approx(expected)
    curve = ev.reliability_curve(y_true, prob, n_bins=5)
    assert list(curve["count"]) == [0, 1, 0, 2, 1]
    assert curve.loc[3, "confidence"] == pytest.approx(0.70)
    assert curve.loc[3, "accuracy"] == pytest.approx(0.5)
    assert math.isnan(curve.loc[0, "accuracy"])
    assert curve["bin_upper"].iloc[-1] == 1.0


def test_ece_matches_a_direct_loop() -> None:
    y_true, prob, _ = _random_case(1000, 4, 11)
    conf, correct = prob.max(axis=1), prob.argmax(axis=1) == y_true
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert ev.expected_calibration_error(y_true, prob) == pytest.approx(expected)
    # perfectly confident and correct predictions are perfectly calibrated
    assert ev.expected_calibration_error([0, 1], np.eye(2)) == pytest.approx(0.0)


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def test_bootstrap_ci_covers_point_and_shrinks_with_n() -> None:
    widths = []
    for n in (200, 2000):
        y_true, _, y_pred = _random_case(n, 4, 3)
        point = _accuracy(y_true, y_pred)
        low, high = ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=500, seed=1)
        assert low <= point <= high
        widths.append(high - low)
        # normal-approximation width as an independent sanity check (±30 %)
        se = math.sqrt(point * (1 - point) / n)
        assert high - low == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_reproducible_fast_and_stratified() -> None:
    y_true, prob, y_pred = _random_case(2000, 8, 4)
    start = time.perf_counter()
    first = ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=500, seed=0)
    assert time.perf_counter() - start < 1.0
    assert ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=500, seed=0) == first
    assert ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=500, seed=1) != first
    # stratified resamples keep the class counts of y_true
    idx = ev._bootstrap_indices(y_true, 20, 0, stratified=True)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y_true[row], minlength=8), np.bincount(y_true, minlength=8))
    # the generic bootstrap also takes probability matrices
    auc_ci = ev.bootstrap_ci(lambda t, p: ev.auroc_ovr(t, p), y_true, prob, n_boot=50, stratified=False)
    assert auc_ci[0] < ev.auroc_ovr(y_true, prob) < auc_ci[1]


def test_metrics_with_ci_agrees_with_the_generic_bootstrap() -> None:
    y_true, prob, y_pred = _random_case(600, 5, 9)
    start = time.perf_counter()
    metrics, ci = ev.metrics_with_ci(y_true, prob, labels=range(5), n_boot=50, seed=3)
    assert time.perf_counter() - start < 5.0
    assert metrics == pytest.approx(ev.classification_metrics(y_true, y_pred, prob, labels=range(5)))
    assert set(ci) == {"accuracy", "balanced_accuracy", "macro_f1", "auroc"}
    # same seed and stratification -> same resamples -> same intervals as the generic route
    assert ci["accuracy"] == pytest.approx(ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=50, seed=3))

    def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
        return skm.f1_score(t, p, labels=range(5), average="macro", zero_division=0)

    def bal(t: np.ndarray, p: np.ndarray) -> float:
        return skm.balanced_accuracy_score(t, p)

    def auroc(t: np.ndarray, p: np.ndarray) -> float:
        return skm.roc_auc_score(t, p, multi_class="ovr", labels=range(5))

    assert ci["macro_f1"] == pytest.approx(ev.bootstrap_ci(macro_f1, y_true, y_pred, n_boot=50, seed=3))
    assert ci["balanced_accuracy"] == pytest.approx(ev.bootstrap_ci(bal, y_true, y_pred, n_boot=50, seed=3))
    assert ci["auroc"] == pytest.approx(ev.bootstrap_ci(auroc, y_true, prob, n_boot=50, seed=3))
    for name, (low, high) in ci.items():
        assert low <= metrics[name] <= high


def test_wilson_interval() -> None:
    low, high = ev.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert ev.wilson_interval(0, 10)[0] == 0.0
    assert ev.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    # narrower at 90 %
    assert ev.wilson_interval(8, 10, alpha=0.1)[0] > low


def test_paired_difference_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = 0.90 + rng.normal(0, 0.01, 5)
    b = a - 0.01 + rng.normal(0, 0.005, 5)
    result = ev.paired_difference_ci(a, b)
    reference = stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.mean == pytest.approx(np.mean(a - b))
    interval = reference.confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))
    assert result.n == 5
    # no spread in the differences
    same = ev.paired_difference_ci([1.0, 2.0], [1.0, 2.0])
    assert same.mean == 0.0 and same.p_value == 1.0


def test_mean_and_spread() -> None:
    mean, std, lo, hi = ev.mean_and_spread([1.0, 2.0, 3.0, 6.0])
    assert (mean, lo, hi) == (3.0, 1.0, 6.0)
    assert std == pytest.approx(np.std([1, 2, 3, 6], ddof=1))
    assert math.isnan(ev.mean_and_spread([0.5])[1])


def test_bootstrap_auroc_weights_equal_ranking_each_resample() -> None:
    # the fast weighted AUROC used by metrics_with_ci equals re-ranking every resample, ties included
    y_true, prob, _ = _random_case(300, 4, 21)
    prob = np.round(prob, 1)
    for stratified in (True, False):  # unstratified resamples: every class still present here
        idx = ev._bootstrap_indices(y_true, 30, 0, stratified)
        fast = ev._auroc_bootstrap(y_true, prob, idx)
        direct = [np.mean([skm.roc_auc_score(y_true[i] == k, prob[i, k]) for k in range(4)]) for i in idx]
        np.testing.assert_allclose(fast, direct)


def test_per_fold_metrics_hand_case():
    import pandas as pd

    pred = pd.DataFrame({"fold": [0, 0, 0, 0, 1, 1, 1, 1], "y": [0, 0, 1, 1, 0, 1, 1, 1],
                         "pred": [0, 1, 1, 1, 0, 1, 0, 0]})
    table = ev.per_fold_metrics(pred, ["a", "b"])
    assert list(table.index) == [0, 1]
    assert table.loc[0, "a"] == 0.5 and table.loc[0, "b"] == 1.0 and table.loc[0, "balanced_accuracy"] == 0.75
    assert table.loc[1, "a"] == 1.0 and table.loc[1, "b"] == pytest.approx(1 / 3)
    assert table.loc[1, "accuracy"] == 0.5
    # fold 1: precision a = 1/3, b = 1/1 → macro 2/3
    assert table.loc[1, "macro_precision"] == pytest.approx(2 / 3)


def test_binary_auroc_is_sklearns_and_the_one_the_chapters_use():
    from wbcstudy.benchmark import measure
    from wbcstudy.experiments import resnext_cc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * y, 2)  # rounded: ties count one half
    assert ev.binary_auroc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    assert np.isnan(ev.binary_auroc([1, 1], [0.2, 0.7]))
    assert measure.auroc is resnext_cc.auroc is ev.binary_auroc
