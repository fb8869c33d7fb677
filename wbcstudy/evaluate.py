"""Classification metrics with confidence intervals, confusion matrices and calibration.

Conventions used throughout:

- ``y_true`` and ``y_pred`` are 1-D arrays of class labels; ``labels`` lists the class
  values in the column order of ``y_prob`` (by default ``0 .. C-1``). When ``y_true``
  holds column indices, ``labels`` may instead be the class *names*.
- ``y_prob`` is an ``(n, C)`` array of class probabilities; a 1-D array is read as the
  probability of the positive class of a binary problem.
- Confusion matrices have the true class on the rows and the predicted class on the
  columns (scikit-learn's convention).
- Macro precision/recall/F1 average over all ``labels`` and count an undefined ratio as 0
  (scikit-learn's ``zero_division=0``); balanced accuracy averages recall over the
  classes present in ``y_true`` (as ``sklearn.metrics.balanced_accuracy_score``); macro
  AUROC averages one-vs-rest AUROC over the classes that have both positives and
  negatives in ``y_true``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from wbcstudy import intervals

__all__ = [
    "one_hot",
    "classification_metrics",
    "confusion",
    "per_class_recall",
    "expected_calibration_error",
    "confidence_bins",
    "reliability_curve",
    "bootstrap_ci",
    "metrics_with_ci",
    "wilson_interval",
    "PairedDifference",
    "paired_difference_ci",
    "mean_and_spread",
    "auroc_ovr",
    "binary_auroc",
]

ArrayLike = Any  # numpy arrays, lists, torch tensors on the CPU


# --------------------------------------------------------------------------- helpers
def _as_numpy(values: ArrayLike) -> np.ndarray:
    """A numpy view of a list, array or (CPU/GPU) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _prob_matrix(y_prob: ArrayLike) -> np.ndarray:
    """Class probabilities as an ``(n, C)`` float array (1-D → ``[1 - p, p]``)."""
    prob = _as_numpy(y_prob).astype(np.float64)
    if prob.ndim == 1:
        prob = np.stack([1.0 - prob, prob], axis=1)
    if prob.ndim != 2:
        raise ValueError(f"y_prob must be 1-D or 2-D, got shape {prob.shape}")
    return prob


def _resolve_labels(
    labels: Sequence[Any] | None, y_true: np.ndarray, y_pred: np.ndarray | None, n_columns: int | None
) -> np.ndarray:
    """The class values in column order (see the module docstring)."""
    if labels is None:
        if n_columns is not None:
            return np.arange(n_columns)
        both = y_true if y_pred is None else np.concatenate([y_true, y_pred])
        return np.unique(both)
    labels_arr = np.asarray(list(labels))
    names_given = labels_arr.dtype.kind in "USO" and y_true.dtype.kind in "iu"
    return np.arange(len(labels_arr)) if names_given else labels_arr


def _encode(values: np.ndarray, labels: np.ndarray, what: str) -> np.ndarray:
    """Column indices of ``values`` in ``labels``; an unknown value is an error."""
    if labels.dtype.kind in "iu" and values.dtype.kind in "iu" and np.array_equal(labels, np.arange(len(labels))):
        if values.size and (values.min() < 0 or values.max() >= len(labels)):
            raise ValueError(f"{what} holds values outside 0..{len(labels) - 1}")
        return values.astype(np.int64)
    order = np.argsort(labels)
    pos = np.searchsorted(labels, values, sorter=order)
    pos = np.clip(pos, 0, len(labels) - 1)
    idx = order[pos]
    if not np.all(labels[idx] == values):
        unknown = sorted(set(np.asarray(values).tolist()) - set(labels.tolist()))
        raise ValueError(f"{what} holds labels not in `labels`: {unknown[:5]}")
    return idx.astype(np.int64)


def _batched_confusion(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices ``(..., K, K)`` for index arrays of shape ``(..., n)``."""
    true_idx = np.atleast_2d(true_idx)
    pred_idx = np.atleast_2d(pred_idx)
    n_sets = true_idx.shape[0]
    k2 = n_classes * n_classes
    flat = (np.arange(n_sets)[:, None] * k2 + true_idx * n_classes + pred_idx).ravel()
    counts = np.bincount(flat, minlength=n_sets * k2)
    return counts.reshape(n_sets, n_classes, n_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """``num / den`` with ``fill`` where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, fill, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro precision/recall/F1 from ``(..., K, K)`` counts."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(axis=-1)  # true counts per class
    predicted = cm.sum(axis=-2)
    total = cm.sum(axis=(-2, -1))
    recall_nan = _safe_divide(tp, support, np.nan)
    present = support > 0
    n_present = present.sum(axis=-1)
    balanced = _safe_divide(np.where(present, recall_nan, 0.0).sum(axis=-1), n_present, np.nan)
    precision = _safe_divide(tp, predicted, 0.0)
    recall = _safe_divide(tp, support, 0.0)
    f1 = _safe_divide(2.0 * tp, support + predicted, 0.0)
    return {
        "accuracy": _safe_divide(tp.sum(axis=-1), total, np.nan),
        "balanced_accuracy": balanced,
        "macro_precision": precision.mean(axis=-1),
        "macro_recall": recall.mean(axis=-1),
        "macro_f1": f1.mean(axis=-1),
    }


def _auroc_from_scores(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUROC along the last axis (ties count one half); NaN without both classes."""
    ranks = stats.rankdata(scores, axis=-1)  # average ranks handle ties
    n_pos = positive.sum(axis=-1).astype(np.float64)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=-1)
    return _safe_divide(rank_sum - n_pos * (n_pos + 1) / 2.0, n_pos * n_neg, np.nan)


def _auroc_batched(true_idx: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Binary or macro one-vs-rest AUROC for index/probability arrays ``(B, n)``/``(B, n, C)``."""
    n_classes = prob.shape[-1]
    if n_classes == 2:
        return _auroc_from_scores(prob[..., 1], true_idx == 1)
    per_class = np.stack(
        [_auroc_from_scores(prob[..., k], true_idx == k) for k in range(n_classes)], axis=-1
    )
    defined = ~np.isnan(per_class)
    return _safe_divide(np.where(defined, per_class, 0.0).sum(axis=-1), defined.sum(axis=-1), np.nan)


def _weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of case weights ``(B, n)`` (bootstrap multiplicities) over fixed scores."""
    _, group = np.unique(scores, return_inverse=True)  # tied scores share a group
    n_groups = int(group.max()) + 1
    n_sets = weights.shape[0]
    neg_w = weights[:, ~positive]
    flat = (np.arange(n_sets)[:, None] * n_groups + group[~positive][None, :]).ravel()
    neg_per_group = np.bincount(flat, weights=neg_w.ravel(), minlength=n_sets * n_groups).reshape(n_sets, n_groups)
    # negatives scored below each group, plus half of the tied ones
    below = np.cumsum(neg_per_group, axis=1) - 0.5 * neg_per_group
    pos_w = weights[:, positive]
    wins = (pos_w * below[:, group[positive]]).sum(axis=1)
    return _safe_divide(wins, pos_w.sum(axis=1) * neg_w.sum(axis=1), np.nan)


def _auroc_bootstrap(true_idx: np.ndarray, prob: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Binary or macro one-vs-rest AUROC of every resample in ``indices`` ``(B, n)``."""
    n_sets, n = indices.shape
    weights = np.bincount((np.arange(n_sets)[:, None] * n + indices).ravel(), minlength=n_sets * n)
    weights = weights.reshape(n_sets, n).astype(np.float64)
    n_classes = prob.shape[1]
    if n_classes == 2:
        return _weighted_auroc(prob[:, 1], true_idx == 1, weights)
    per_class = np.stack(
        [_weighted_auroc(prob[:, k], true_idx == k, weights) for k in range(n_classes)], axis=-1
    )
    defined = ~np.isnan(per_class)
    return _safe_divide(np.where(defined, per_class, 0.0).sum(axis=-1), defined.sum(axis=-1), np.nan)


def binary_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """AUROC of ``scores`` for labels 1 (positive) against the rest, from ranks (Mann–Whitney; ties count one half);
    NaN without both classes. The same value as ``sklearn.metrics.roc_auc_score``, at a fraction of its cost inside
    a bootstrap loop."""
    positive = _as_numpy(labels).ravel() == 1
    return float(_auroc_from_scores(_as_numpy(scores).ravel().astype(np.float64), positive))


def auroc_ovr(y_true: ArrayLike, y_prob: ArrayLike, labels: Sequence[Any] | None = None) -> float:
    """Binary AUROC of the positive class, or macro one-vs-rest AUROC for more classes."""
    prob = _prob_matrix(y_prob)
    y_true_arr = _as_numpy(y_true).ravel()
    label_arr = _resolve_labels(labels, y_true_arr, None, prob.shape[1])
    true_idx = _encode(y_true_arr, label_arr, "y_true")
    return float(_auroc_batched(true_idx[None], prob[None])[0])


def one_hot(labels: ArrayLike, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` float64 indicator matrix of integer labels ``0 .. n_classes-1`` (a hard prediction as
    probabilities)."""
    idx = _as_numpy(labels).ravel()
    if idx.dtype.kind not in "iu" and not (idx.dtype.kind == "f" and np.all(idx == np.round(idx))):
        raise ValueError(f"one_hot needs integer labels, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {idx.min()}..{idx.max()}")
    out = np.zeros((idx.size, n_classes), dtype=np.float64)
    out[np.arange(idx.size), idx] = 1.0
    return out


# --------------------------------------------------------------------------- point metrics
def confusion(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """Confusion matrix of counts (rows: true class 0..n_classes-1, columns: predicted)."""
    true_idx = _encode(_as_numpy(y_true).ravel(), np.arange(n_classes), "y_true")
    pred_idx = _encode(_as_numpy(y_pred).ravel(), np.arange(n_classes), "y_pred")
    return _batched_confusion(true_idx, pred_idx, n_classes)[0]


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """Recall (sensitivity) of each class 0..n_classes-1; NaN for a class absent from ``y_true``."""
    cm = confusion(y_true, y_pred, n_classes)
    return _safe_divide(np.diag(cm), cm.sum(axis=1), np.nan)


def confidence_bins(confidence: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """The equal-width bin of [0, 1] each confidence falls in: bins are (lower, upper]; exactly 0 goes to the first."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def reliability_curve(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15,
                      labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """Per-bin mean top-label confidence, accuracy and count over equal-width bins of [0, 1]."""
    prob = _prob_matrix(y_prob)
    y_true_arr = _as_numpy(y_true).ravel()
    label_arr = _resolve_labels(labels, y_true_arr, None, prob.shape[1])
    true_idx = _encode(y_true_arr, label_arr, "y_true")
    confidence = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == true_idx).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_idx = confidence_bins(confidence, n_bins)
    count = np.bincount(bin_idx, minlength=n_bins)
    conf_sum = np.bincount(bin_idx, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_idx, weights=correct, minlength=n_bins)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "confidence": _safe_divide(conf_sum, count, np.nan),
            "accuracy": _safe_divide(correct_sum, count, np.nan),
            "count": count.astype(np.int64),
        }
    )


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15,
                               labels: Sequence[Any] | None = None) -> float:
    """Top-label ECE: count-weighted mean |accuracy − confidence| over equal-width bins."""
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, labels=labels)
    filled = curve["count"] > 0
    weights = curve.loc[filled, "count"] / curve["count"].sum()
    gaps = (curve.loc[filled, "accuracy"] - curve.loc[filled, "confidence"]).abs()
    return float((weights * gaps).sum())


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    y_prob: ArrayLike | None = None,
    labels: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro precision/recall/F1 and, given ``y_prob``, AUROC and ECE."""
    y_true_arr = _as_numpy(y_true).ravel()
    y_pred_arr = _as_numpy(y_pred).ravel()
    if y_true_arr.shape != y_pred_arr.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true_arr.shape} vs {y_pred_arr.shape}")
    prob = None if y_prob is None else _prob_matrix(y_prob)
    label_arr = _resolve_labels(labels, y_true_arr, y_pred_arr, None if prob is None else prob.shape[1])
    true_idx = _encode(y_true_arr, label_arr, "y_true")
    pred_idx = _encode(y_pred_arr, label_arr, "y_pred")
    cm = _batched_confusion(true_idx, pred_idx, len(label_arr))
    out = {name: float(value[0]) for name, value in _metrics_from_confusion(cm).items()}
    if prob is not None:
        if prob.shape[0] != len(true_idx) or prob.shape[1] != len(label_arr):
            raise ValueError(f"y_prob has shape {prob.shape}; expected ({len(true_idx)}, {len(label_arr)})")
        out["auroc"] = float(_auroc_batched(true_idx[None], prob[None])[0])
        out["ece"] = expected_calibration_error(true_idx, prob)
    return out


# --------------------------------------------------------------------------- intervals
# The interval arithmetic lives in ``wbcstudy.intervals``; these wrappers keep the older signatures.
def _bootstrap_indices(y_true: np.ndarray, n_boot: int, seed: int, stratified: bool) -> np.ndarray:
    """``(n_boot, n)`` resampling indices, drawn within each class of ``y_true`` if stratified."""
    y_true = np.asarray(y_true).ravel()
    return intervals.resample_indices(len(y_true), n_boot, seed, y_true if stratified else None)


def _percentile_interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``alpha/2`` and ``1 − alpha/2`` percentiles of the finite bootstrap values."""
    return intervals.percentile_interval(samples, 1.0 - alpha)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: ArrayLike,
    y_pred_or_prob: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(y_true, y_pred_or_prob)`` over resampled cases
    (``wbcstudy.intervals.bootstrap_metric``, stratified by ``y_true`` unless ``stratified=False``)."""
    y_true_arr = _as_numpy(y_true)
    return intervals.bootstrap_metric(metric_fn, y_true_arr, y_pred_or_prob, n_boot=n_boot, seed=seed,
                                      strata=y_true_arr.ravel() if stratified else None, level=1.0 - alpha)


def metrics_with_ci(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    labels: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """All ``classification_metrics`` of argmax predictions, with bootstrap CIs for accuracy, balanced accuracy, macro
    F1 and AUROC."""
    prob = _prob_matrix(y_prob)
    y_true_arr = _as_numpy(y_true).ravel()
    label_arr = _resolve_labels(labels, y_true_arr, None, prob.shape[1])
    true_idx = _encode(y_true_arr, label_arr, "y_true")
    pred_idx = prob.argmax(axis=1)
    metrics = classification_metrics(true_idx, pred_idx, prob, labels=np.arange(prob.shape[1]))

    indices = _bootstrap_indices(true_idx, n_boot, seed, stratified)
    true_b, pred_b = true_idx[indices], pred_idx[indices]
    boot = _metrics_from_confusion(_batched_confusion(true_b, pred_b, prob.shape[1]))
    auroc = _auroc_bootstrap(true_idx, prob, indices)
    ci = {
        "accuracy": _percentile_interval(boot["accuracy"], alpha),
        "balanced_accuracy": _percentile_interval(boot["balanced_accuracy"], alpha),
        "macro_f1": _percentile_interval(boot["macro_f1"], alpha),
        "auroc": _percentile_interval(auroc, alpha),
    }
    return metrics, ci


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` successes in ``n`` trials (``wbcstudy.intervals.wilson``)."""
    return intervals.wilson(k, n, level=1.0 - alpha)


class PairedDifference(NamedTuple):
    """Mean of paired differences ``a − b`` with its t-interval and paired t-test p-value."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int


def paired_difference_ci(a: ArrayLike, b: ArrayLike, alpha: float = 0.05) -> PairedDifference:
    """Mean paired difference ``a − b`` (e.g. per seed or fold) with a t-interval and paired t-test.

    For a claim's interval prefer ``wbcstudy.intervals.bootstrap_difference`` over the test cells:
    a t-interval over a handful of folds or seeds is wide and can leave the metric's range.
    """
    a_arr = _as_numpy(a).astype(np.float64).ravel()
    b_arr = _as_numpy(b).astype(np.float64).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must be paired: shapes {a_arr.shape} and {b_arr.shape}")
    diff = a_arr - b_arr
    n = len(diff)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, math.nan, n)
    sem = float(diff.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:  # identical differences: no spread to test against
        return PairedDifference(mean, mean, mean, 1.0 if mean == 0 else 0.0, n)
    t_crit = float(stats.t.ppf(1 - alpha / 2, df=n - 1))
    t_stat = mean / sem
    p_value = float(2 * stats.t.sf(abs(t_stat), df=n - 1))
    return PairedDifference(mean, mean - t_crit * sem, mean + t_crit * sem, p_value, n)


def mean_and_spread(values: ArrayLike) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation (ddof=1; NaN for one value), min and max."""
    arr = _as_numpy(values).astype(np.float64).ravel()
    if arr.size == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return (float(arr.mean()), std, float(arr.min()), float(arr.max()))


def per_fold_metrics(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """One row per fold of cross-validation predictions (columns fold, y, pred): per-class accuracy (recall) and
    balanced accuracy, accuracy, macro precision, recall and F1."""
    rows = []
    for fold, part in predictions.groupby("fold", sort=True):
        y, pred = part["y"].to_numpy(), part["pred"].to_numpy()
        m = classification_metrics(y, pred, labels=list(range(len(classes))))
        recall = per_class_recall(y, pred, len(classes))
        rows.append({"fold": fold, **dict(zip(classes, recall)), **m})
    return pd.DataFrame(rows).set_index("fold")
