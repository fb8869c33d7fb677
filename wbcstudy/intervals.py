"""The one interval module: Wilson intervals for proportions, percentile bootstraps over test cells, metric ranges.

Every interval a chapter reports comes from here (``wbcstudy.evaluate.bootstrap_ci`` and
``wilson_interval`` are thin wrappers kept for older call sites):

- ``wilson(k, n)`` — a proportion of ``k`` successes in ``n`` independent trials (an
  accuracy on a test set, a two-sample-test accuracy, an agreement rate);
- ``bootstrap_metric(metric_fn, y_true, y_pred)`` — any metric, by resampling test cells
  with replacement (pooled across folds: pass the concatenated predictions of every fold),
  stratified by class when ``strata`` is given;
- ``bootstrap_difference(metric_fn, y_true, pred_a, pred_b)`` — metric(A) − metric(B) for two
  models scored on the *same* cells, each resample drawing the same cells for both (paired);
- ``seed_cell_difference(hits_a, hits_b)`` — A − B when each side was trained with several seeds: cells and
  seeds both redrawn, so the interval holds the run-to-run spread as well as the cell sampling;
- ``metric_range(key)`` — the range a metric's values (and so its interval) must lie in,
  read from the metric's name; ``wbcstudy check`` uses it on every published interval.

Never a t-interval over a handful of folds or seeds: with 3–10 values it is wide, assumes
normality, and can leave the metric's range.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["wilson", "bootstrap_metric", "bootstrap_difference", "metric_range", "resample_indices",
           "percentile_interval", "seed_cell_difference"]

ArrayLike = Any
MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_numpy(values: ArrayLike) -> np.ndarray:
    """A numpy view of a list, array or (CPU/GPU) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    return float(level)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` successes in ``n`` trials (NaNs when ``n`` is 0).

    >>> tuple(round(x, 3) for x in wilson(8, 10))
    (0.49, 0.943)
    """
    level = _check_level(level)
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if k == 0:  # exact ends: rounding must not leave the point estimate outside
        low = 0.0
    if k == n:
        high = 1.0
    return (low, high)


def resample_indices(n: int, n_boot: int, seed: int = 0, strata: ArrayLike | None = None) -> np.ndarray:
    """``(n_boot, n)`` bootstrap indices into ``n`` cells, drawn within each stratum when ``strata`` is given.

    Stratified rows keep every stratum's size (the cells are grouped by stratum, in the order
    of ``np.unique(strata)``); the order of cells within a row does not matter to a metric.
    """
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    groups = _as_numpy(strata).ravel()
    if len(groups) != n:
        raise ValueError(f"strata has {len(groups)} entries for {n} cells")
    if n == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    blocks = [m[rng.integers(0, len(m), size=(n_boot, len(m)))] for m in members]
    return np.concatenate(blocks, axis=1)


def percentile_interval(samples: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The ``(1 − level)/2`` and ``(1 + level)/2`` percentiles of the finite values in ``samples`` (NaNs if none)."""
    level = _check_level(level)
    values = _as_numpy(samples).astype(np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - level
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(low), float(high))


def _strata_of(strata: ArrayLike | bool | None, y_true: np.ndarray) -> np.ndarray | None:
    """``strata=True`` is shorthand for stratifying by the true class."""
    if strata is None or strata is False:
        return None
    if strata is True:
        return y_true.ravel()
    return _as_numpy(strata)


def bootstrap_metric(metric_fn: MetricFn, y_true: ArrayLike, y_pred: ArrayLike, n_boot: int = 1000, seed: int = 0,
                     strata: ArrayLike | bool | None = None, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(y_true, y_pred)`` over resampled cells.

    ``y_pred`` may be labels ``(n,)`` or a probability/score matrix ``(n, C)``: its rows are
    resampled with ``y_true``. ``strata`` (e.g. ``y_true``, or ``True`` for that) makes every
    resample keep each class's count. Resamples where the metric is undefined (NaN) are dropped.
    """
    y_true_arr = _as_numpy(y_true)
    pred = _as_numpy(y_pred)
    if len(pred) != len(y_true_arr):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true_arr)} vs {len(pred)}")
    indices = resample_indices(len(y_true_arr), n_boot, seed, _strata_of(strata, y_true_arr))
    values = np.fromiter((metric_fn(y_true_arr[i], pred[i]) for i in indices), dtype=np.float64, count=n_boot)
    return percentile_interval(values, level)


def bootstrap_difference(metric_fn: MetricFn, y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike,
                         n_boot: int = 1000, seed: int = 0, strata: ArrayLike | bool | None = None,
                         level: float = 0.95) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``metric_fn(y_true, pred_a) − metric_fn(y_true, pred_b)``.

    Both models must be scored on the same cells in the same order; each resample draws one
    set of cells and scores A and B on it, so the cell-to-cell variation they share cancels.
    """
    y_true_arr = _as_numpy(y_true)
    a, b = _as_numpy(pred_a), _as_numpy(pred_b)
    if not len(a) == len(b) == len(y_true_arr):
        raise ValueError(f"y_true, pred_a and pred_b differ in length: {len(y_true_arr)}, {len(a)}, {len(b)}")
    indices = resample_indices(len(y_true_arr), n_boot, seed, _strata_of(strata, y_true_arr))
    values = np.fromiter((metric_fn(y_true_arr[i], a[i]) - metric_fn(y_true_arr[i], b[i]) for i in indices),
                         dtype=np.float64, count=n_boot)
    return percentile_interval(values, level)


_UNIT_SUFFIXES = ("accuracy", "auroc", "auc", "f1", "precision", "recall", "ece", "agreement",
                  "sensitivity", "specificity")
_SIGNED = re.compile(r"(^|_)(difference|gain)$|(^|_)minus(_|$)|^delta_|spearman|correlation")


def seed_cell_difference(hits_a: ArrayLike, hits_b: ArrayLike, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean over cells of A's seed-mean score minus B's, and an interval that holds the run-to-run spread too.

    ``hits_a`` is (seeds of A, cells), ``hits_b`` (seeds of B, cells): per-cell scores (e.g. 1/0 hits) of every
    training run of each side on the *same* cells; a cell that is NaN in any run is left out. Each bootstrap
    replicate draws the cells with replacement and, independently for A and for B, the runs (seeds) with
    replacement, so that the interval holds the test-cell sampling *and* the seed-to-seed spread — a cell-only
    bootstrap of seed-averaged scores would leave the second out. With few seeds the seed draw understates that
    spread by the factor (S − 1)/S in variance; a side with one run contributes none.
    """
    a, b = np.atleast_2d(_as_numpy(hits_a).astype(float)), np.atleast_2d(_as_numpy(hits_b).astype(float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sides are scored on {a.shape[1]} and {b.shape[1]} cells: they must share their "
                         "cells")
    keep = ~(np.isnan(a).any(0) | np.isnan(b).any(0))
    a, b = a[:, keep], b[:, keep]
    if not keep.any():
        raise ValueError("no cell has a score in every run of both sides")
    rng = np.random.default_rng(seed)
    weights = [rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=n_boot) / len(x) for x in (a, b)]
    per_cell = weights[0] @ a - weights[1] @ b  # (n_boot, cells): each replicate's seed draw
    idx = resample_indices(a.shape[1], n_boot, seed + 1)
    samples = np.take_along_axis(per_cell, idx, axis=1).mean(1)
    return float(a.mean(0).mean() - b.mean(0).mean()), percentile_interval(samples, level)


def _hierarchical(stat: Callable[..., float], groups: Sequence[tuple[ArrayLike, ...]], n_boot: int, seed: int,
                  level: float, stratify: bool, pool: bool = True) -> tuple[float, tuple[float, float], float]:
    """``stat`` over all groups' rows pooled, its hierarchical-bootstrap interval, and the SD of ``stat`` per group.

    Each group is a tuple of equally long arrays, the first the labels (the strata when ``stratify``). A replicate
    draws the groups with replacement, then the rows within each drawn group with replacement (within each label
    when ``stratify``), and evaluates ``stat`` on the pooled draw; with ``pool=False`` the value is the mean of
    ``stat`` per group and each replicate the mean of ``stat`` per drawn group (a metric that is not a mean over
    rows, as AUROC, differs between the two).
    """
    runs = [tuple(_as_numpy(a) for a in g) for g in groups]
    if not runs or any(len(a) != len(g[0]) or len(g[0]) == 0 for g in runs for a in g):
        raise ValueError("every run needs as many predictions as labels, and at least one cell")
    rng = np.random.default_rng(seed)
    strata = [[np.flatnonzero(g[0] == c) for c in np.unique(g[0])] if stratify else [np.arange(len(g[0]))]
              for g in runs]
    width = len(runs[0])
    per_run = [float(stat(*g)) for g in runs]
    value = float(stat(*(np.concatenate([g[k] for g in runs]) for k in range(width)))) if pool else float(
        np.mean(per_run))
    samples = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(runs), size=len(runs))
        rows = [np.concatenate([rng.choice(part, size=len(part)) for part in strata[i]]) for i in drawn]
        if pool:
            samples[b] = stat(*(np.concatenate([runs[i][k][r] for i, r in zip(drawn, rows)]) for k in range(width)))
        else:
            samples[b] = np.mean([stat(*(runs[i][k][r] for k in range(width))) for i, r in zip(drawn, rows)])
    return value, percentile_interval(samples, level), float(np.std(per_run, ddof=1)) if len(runs) > 1 else 0.0


def hierarchical_bootstrap(metric_fn: MetricFn, groups: Sequence[tuple[ArrayLike, ArrayLike]], n_boot: int = 1000,
                           seed: int = 0, level: float = 0.95, stratify: bool = False,
                           pool: bool = True) -> tuple[float, tuple[float, float], float]:
    """A metric pooled over several runs (folds or seeds), its hierarchical-bootstrap interval, and the runs' SD.

    ``groups`` holds each run's (labels, predictions) on its own test cells (folds) or on the same cells (seeds). The
    value is ``metric_fn`` over all runs' cells pooled. Each replicate draws the runs with replacement, then the cells
    within each drawn run with replacement (within each class with ``stratify``), and scores the pooled draw
    (Saravanan et al. 2020), so that the interval holds the run-to-run spread as well as the cell sampling; the SD
    is that of the per-run metric. ``pool=False`` makes the value the mean of the per-run metric (and each replicate
    the mean over its drawn runs): for seeds scored on the same cells, "the mean seed's AUROC" rather than the AUROC
    of every seed's scores ranked together.
    """
    return _hierarchical(metric_fn, groups, n_boot, seed, level, stratify, pool)


def hierarchical_difference(metric_fn: MetricFn, groups: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
                            n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                            stratify: bool = False) -> tuple[float, tuple[float, float], float]:
    """``metric(A) − metric(B)`` pooled over runs whose cells both sides predicted (each group: labels, A's
    predictions, B's), with a paired hierarchical bootstrap (the same runs and cells drawn for both sides) and the SD
    of the per-run difference."""
    return _hierarchical(lambda y, a, b: metric_fn(y, a) - metric_fn(y, b), groups, n_boot, seed, level, stratify)


def metric_range(key: str) -> tuple[float, float] | None:
    """The range a metric's value and interval must lie in, from its name; ``None`` when the name does not say.

    Differences (``*_difference``, ``*_gain``, ``*_minus_*``, ``delta_*``) and correlations
    (``spearman``, ``correlation``) lie in [−1, 1]; accuracies, AUROC/AUC, F1, precision,
    recall, ECE, agreement rates, sensitivity and specificity (``*_<name>`` or ``<name>``) in [0, 1].

    >>> metric_range("wnet_minus_resnet50_balanced_accuracy"), metric_range("anomaly_auc"), metric_range("seconds")
    ((-1.0, 1.0), (0.0, 1.0), None)
    """
    name = key.lower()
    if _SIGNED.search(name):
        return (-1.0, 1.0)
    if name.rsplit("_", 1)[-1] in _UNIT_SUFFIXES:
        return (0.0, 1.0)
    return None
