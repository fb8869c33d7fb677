"""The one interval module: Wilson against scipy, the bootstrap against a hand-rolled loop, metric ranges."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from wbcstudy import evaluate as ev
from wbcstudy import intervals as iv


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


@pytest.mark.parametrize("k,n", [(8, 10), (0, 10), (10, 10), (1, 3), (523, 1000), (17, 40)])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_wilson_matches_scipy(k, n, level):
    reference = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert iv.wilson(k, n, level) == pytest.approx((reference.low, reference.high), abs=1e-12)


def test_wilson_hand_values_and_edges():
    # 8/10: centre (0.8 + 1.96²/20)/(1 + 1.96²/10) = 0.7166..., half-width 0.2266...
    z = stats.norm.ppf(0.975)
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert iv.wilson(8, 10) == pytest.approx((centre - half, centre + half))
    assert tuple(round(x, 3) for x in iv.wilson(8, 10)) == (0.490, 0.943)
    assert iv.wilson(0, 5)[0] == 0.0 and iv.wilson(5, 5)[1] == 1.0
    assert all(math.isnan(x) for x in iv.wilson(0, 0))
    with pytest.raises(ValueError, match="k <= n"):
        iv.wilson(11, 10)
    with pytest.raises(ValueError, match="level"):
        iv.wilson(1, 2, level=95)
    # the evaluate wrapper is the same interval
    assert ev.wilson_interval(17, 40, alpha=0.1) == iv.wilson(17, 40, level=0.9)


def test_bootstrap_metric_equals_a_hand_rolled_loop():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 0, 0])
    n_boot, seed = 200, 7
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y_true), size=(n_boot, len(y_true)))
    values = sorted(float(np.mean(y_true[row] == y_pred[row])) for row in draws)
    expected = (np.percentile(values, 2.5), np.percentile(values, 97.5))
    assert iv.bootstrap_metric(_accuracy, y_true, y_pred, n_boot=n_boot, seed=seed) == pytest.approx(expected)
    # a 90 % interval lies inside the 95 % one
    lo90, hi90 = iv.bootstrap_metric(_accuracy, y_true, y_pred, n_boot=n_boot, seed=seed, level=0.9)
    assert expected[0] <= lo90 <= hi90 <= expected[1]


def test_stratified_bootstrap_keeps_class_counts_and_matches_a_hand_loop():
    y_true = np.array([0, 1, 0, 2, 1, 0, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 1, 0, 0, 2, 2])
    idx = iv.resample_indices(len(y_true), 50, seed=3, strata=y_true)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y_true[row], minlength=3), np.bincount(y_true, minlength=3))
    # hand loop: within each class (in sorted order), draw that class's count with replacement
    rng = np.random.default_rng(3)
    members = [np.flatnonzero(y_true == k) for k in range(3)]
    blocks = [m[rng.integers(0, len(m), size=(50, len(m)))] for m in members]
    np.testing.assert_array_equal(idx, np.concatenate(blocks, axis=1))
    values = [_accuracy(y_true[row], y_pred[row]) for row in idx]
    expected = tuple(np.percentile(values, [2.5, 97.5]))
    assert iv.bootstrap_metric(_accuracy, y_true, y_pred, n_boot=50, seed=3, strata=y_true) == pytest.approx(expected)
    assert iv.bootstrap_metric(_accuracy, y_true, y_pred, n_boot=50, seed=3, strata=True) == pytest.approx(expected)
    # evaluate.bootstrap_ci is this bootstrap (stratified by default)
    assert ev.bootstrap_ci(_accuracy, y_true, y_pred, n_boot=50, seed=3) == pytest.approx(expected)


def test_bootstrap_metric_takes_probability_matrices_and_drops_undefined_resamples():
    from sklearn.metrics import roc_auc_score

    y_true = np.array([0, 0, 0, 1, 1, 1])
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]])

    def auc(t, p):
        return roc_auc_score(t, p[:, 1]) if len(set(t)) == 2 else math.nan

    lo, hi = iv.bootstrap_metric(auc, y_true, prob, n_boot=300, seed=0)
    assert 0.0 <= lo <= auc(y_true, prob) <= hi <= 1.0
    assert all(math.isnan(x) for x in iv.bootstrap_metric(lambda t, p: math.nan, y_true, prob, n_boot=10))
    with pytest.raises(ValueError, match="differ in length"):
        iv.bootstrap_metric(auc, y_true, prob[:3])


def test_bootstrap_difference_is_paired():
    y_true = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 0])
    pred_a = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0, 0])  # 9/10
    pred_b = np.array([0, 1, 0, 0, 1, 1, 1, 0, 0, 0])  # 7/10
    n_boot, seed = 300, 4
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, 10, size=(n_boot, 10))
    diffs = [_accuracy(y_true[r], pred_a[r]) - _accuracy(y_true[r], pred_b[r]) for r in draws]
    expected = tuple(np.percentile(diffs, [2.5, 97.5]))
    assert (iv.bootstrap_difference(_accuracy, y_true, pred_a, pred_b, n_boot=n_boot, seed=seed)
            == pytest.approx(expected))
    # identical predictions: every paired resample differs by exactly 0 (an unpaired bootstrap would not)
    assert iv.bootstrap_difference(_accuracy, y_true, pred_a, pred_a, n_boot=50) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        iv.bootstrap_difference(_accuracy, y_true, pred_a, pred_b[:5])


@pytest.mark.parametrize("key,expected", [
    ("accuracy", (0.0, 1.0)),
    ("wnet_balanced_accuracy", (0.0, 1.0)),
    ("anomaly_auc", (0.0, 1.0)),
    ("cnn_auroc", (0.0, 1.0)),
    ("resnext_cc_f1", (0.0, 1.0)),
    ("wnet_precision", (0.0, 1.0)),
    ("wnet_recall", (0.0, 1.0)),
    ("trust_ece", (0.0, 1.0)),
    ("class_agreement", (0.0, 1.0)),
    ("wnet_minus_resnet50_balanced_accuracy", (-1.0, 1.0)),
    ("full_minus_no_cc_f1", (-1.0, 1.0)),
    ("accuracy_difference", (-1.0, 1.0)),
    ("transfer_gain", (-1.0, 1.0)),
    ("delta_auc", (-1.0, 1.0)),
    ("fisher_spearman", (-1.0, 1.0)),
    ("rank_correlation", (-1.0, 1.0)),
    ("seconds_per_image", None),
    ("wnet_balanced_accuracy_std", None),
    ("frechet_wnet_generated", None),
    ("pruning_unet_call_reduction", None),
])
def test_metric_range_by_name(key, expected):
    assert iv.metric_range(key) == expected


def test_evaluate_one_hot():
    np.testing.assert_array_equal(ev.one_hot([2, 0, 1, 2], 3), [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert ev.one_hot(np.array([1.0, 0.0]), 2).dtype == np.float64
    assert ev.one_hot([], 4).shape == (0, 4)
    with pytest.raises(ValueError, match="0..2"):
        ev.one_hot([0, 3], 3)
    with pytest.raises(ValueError, match="integer"):
        ev.one_hot([0.5], 3)
    # a hard prediction as probabilities scores like the labels
    y = np.array([0, 1, 2, 1])
    pred = np.array([0, 1, 1, 1])
    assert ev.classification_metrics(y, pred, ev.one_hot(pred, 3))["accuracy"] == 0.75


def test_seed_cell_difference_holds_the_seed_spread():
    from wbcstudy.intervals import seed_cell_difference

    rng = np.random.default_rng(0)
    n = 2000
    a_same = np.tile(rng.random(n) < 0.8, (3, 1)).astype(float)  # three identical runs of A
    b = (rng.random((1, n)) < 0.8).astype(float)
    value, (lo, hi) = seed_cell_difference(a_same, b, n_boot=400, seed=1)
    assert value == pytest.approx(a_same[0].mean() - b[0].mean())
    assert lo <= value <= hi and hi - lo < 0.06  # identical seeds: only the cells' sampling
    # A's three runs differ by ±0.05 in accuracy on the same cells: the interval must widen to hold that spread
    a_spread = np.stack([(rng.random(n) < p).astype(float) for p in (0.75, 0.80, 0.85)])
    _, (lo2, hi2) = seed_cell_difference(a_spread, b, n_boot=400, seed=1)
    assert hi2 - lo2 > 1.5 * (hi - lo)
    # NaN cells (no label) are left out of both sides
    a_nan = a_same.copy()
    a_nan[:, :10] = np.nan
    assert seed_cell_difference(a_nan, b, n_boot=50)[0] == pytest.approx(a_same[0, 10:].mean() - b[0, 10:].mean())
    with pytest.raises(ValueError, match="share their cells"):
        seed_cell_difference(a_same, b[:, :5])


def test_hierarchical_bootstrap_holds_the_spread_between_runs():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from wbcstudy.intervals import bootstrap_metric, hierarchical_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=400)

    def run(accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        hit = np.random.default_rng(seed).random(len(y)) < accuracy
        return y, np.where(hit, y, (y + 1) % 5)

    same = [run(0.9, s) for s in range(5)]
    value, (lo, hi), sd = hierarchical_bootstrap(accuracy_score, same, n_boot=400)
    pooled = np.concatenate([p for _, p in same])
    assert value == pytest.approx(accuracy_score(np.tile(y, 5), pooled))
    assert lo < value < hi and sd < 0.03
    # folds that disagree (0.80 to 0.98, as W-Net's 0.918-0.975): the interval widens well past a cells-only one
    spread = [run(a, s) for s, a in enumerate((0.80, 0.85, 0.90, 0.95, 0.98))]
    value, (lo, hi), sd = hierarchical_bootstrap(balanced_accuracy_score, spread, n_boot=400)
    clo, chi = bootstrap_metric(balanced_accuracy_score, np.tile(y, 5), np.concatenate([p for _, p in spread]),
                                n_boot=400)
    per_run = [balanced_accuracy_score(t, p) for t, p in spread]
    assert hi - lo > 2.5 * (chi - clo) and sd == pytest.approx(np.std(per_run, ddof=1)) and sd > 0.05
    with pytest.raises(ValueError, match="as many predictions as labels"):
        hierarchical_bootstrap(accuracy_score, [(y, y[:-1])])


def test_hierarchical_difference_is_paired_and_stratified_draws_keep_class_counts():
    from sklearn.metrics import accuracy_score

    from wbcstudy.intervals import hierarchical_bootstrap, hierarchical_difference

    rng = np.random.default_rng(1)
    groups = []
    for fold, gap in enumerate((0.02, 0.10, 0.18)):  # A beats B by a gap that differs from fold to fold
        y = rng.integers(0, 3, size=300)
        a = np.where(rng.random(300) < 0.9, y, (y + 1) % 3)
        b = np.where(rng.random(300) < 0.9 - gap, y, (y + 1) % 3)
        groups.append((y, a, b))
    value, (lo, hi), sd = hierarchical_difference(accuracy_score, groups, n_boot=300, stratify=True)
    per_fold = [accuracy_score(y, a) - accuracy_score(y, b) for y, a, b in groups]
    y_all, a_all, b_all = (np.concatenate(x) for x in zip(*groups))
    assert value == pytest.approx(accuracy_score(y_all, a_all) - accuracy_score(y_all, b_all))
    assert lo < value < hi and sd == pytest.approx(np.std(per_fold, ddof=1))
    # identical sides: every paired draw gives exactly 0
    same = [(y, a, a) for y, a, _ in groups]
    assert hierarchical_difference(accuracy_score, same, n_boot=50)[1] == (0.0, 0.0)
    # a stratified draw keeps each fold's class counts: a metric of the labels alone never moves
    counts = lambda y, p: float(np.bincount(y, minlength=3)[0])  # noqa: E731
    assert hierarchical_bootstrap(counts, [(g[0], g[1]) for g in groups[:1]], n_boot=30, stratify=True)[1] == (
        float((groups[0][0] == 0).sum()),) * 2
