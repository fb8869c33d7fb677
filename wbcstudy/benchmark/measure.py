"""The benchmark's measurements: every model scored on the same cells, each at its own resolution and crop.

* ``classification``: accuracy, balanced accuracy and macro F1 on the PBC-5 test cells with stratified bootstrap
  intervals (``wbcstudy.evaluate.metrics_with_ci``), and the top-label ECE (``evaluate.expected_calibration_error``)
  with an interval from the same resamples;
* ``robustness``: the trust chapter's perturbation sweep (``wbcstudy.explain.perturbed_predictions``, noise, blur and
  brightness) applied to each model's own-resolution images of a fixed stratified subset of test cells, accuracy
  with Wilson intervals and the paired perturbed-minus-clean difference;
* ``shift_scores``: balanced accuracy on Zheng Dataset 1, Zheng Dataset 2 and BCCD's white-cell crops (WBC5 only; the
  sets of ``wbcstudy.data.shift``, as is, scale-matched and stain-normalised);
* ``anomaly``: AUROC of the model's anomaly score separating PBC-8 test cells of the classes no model trained on
  (:data:`~wbcstudy.benchmark.base.ANOMALY_CLASSES`) from the PBC-5 test cells;
* ``latency_ms_per_image``: wall-clock of ``predict`` per image on 2 threads after a warm-up batch.

``benchmark_images`` serves every image set from the decoded-array cache, once per (set, size, crop) per process, in
the manifest's row order, so every model sees the same cells in the same order; subsets are drawn by
``fixed_subset`` from the labels alone, so they are the same cells for every model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from wbcstudy.benchmark.base import ANOMALY_CLASSES, WBC5, BenchmarkModel
from wbcstudy.evaluate import binary_auroc as auroc
from wbcstudy.explain import SWEEP_LEVELS

__all__ = ["LEVELS", "README_LEVELS_ONLY", "README_SETTINGS", "SHIFT_SETS", "benchmark_images", "test_cells",
           "fixed_subset", "classification", "calibration_interval", "robustness", "shift_scores",
           "shift_decomposition", "below_chance", "anomaly", "auroc",
           "latency_ms_per_image", "BenchmarkResult", "run_benchmark"]

#: The trust chapter's severity sweep (``wbcstudy.explain.SWEEP_LEVELS``): perturbation → levels; the identity
#: levels (0, 1, 1.0) are the clean images.
LEVELS: dict[str, list[float]] = SWEEP_LEVELS
#: The README's single settings (``wbcstudy.explain.README_LEVELS``) and the metric-name suffix the trust chapter uses.
README_SETTINGS: dict[str, str] = {"gaussian_noise": "noise005", "gaussian_blur": "blur5", "brightness": "brightness13"}
#: The clean images and the README's single setting of each perturbation: the sweep for a model too slow for ``LEVELS``.
README_LEVELS_ONLY: dict[str, list[float]] = {"gaussian_noise": [0.0, 0.05], "gaussian_blur": [1, 5],
                                              "brightness": [1.0, 1.3]}
#: Domain-shift test sets: manifest → (results-key part, readable name).
SHIFT_SETS: dict[str, tuple[str, str]] = {"zheng1": ("zheng1", "Zheng Dataset 1"),
                                          "zheng2": ("zheng2", "Zheng Dataset 2"), "bccd": ("bccd", "BCCD crops")}


# ------------------------------------------------------------------------------------------------------- images
@lru_cache(maxsize=None)
def _images(manifest: str, split: str | None, size: int, crop: str,
            classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    from wbcstudy.data.cache import load_split_arrays

    x, y, _ = load_split_arrays(manifest, split, size, classes=list(classes), crop=crop)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def benchmark_images(manifest: str, split: str | None, size: int, crop: str = "none",
                     classes: Sequence[str] = WBC5) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images and labels (indices into ``classes``) of one split of a manifest (``split=None``: all rows,
    BCCD's usable crops), rows of other classes left out, at ``size`` px and ``crop``.

    A crop names a window of PBC's images; the other sets (Zheng, BCCD) are whole-cell crops already and are always
    read uncropped. Cached per (manifest, split, size, crop, classes) for the process; the arrays are read-only.
    """
    from wbcstudy.data.cache import MANIFEST_DATASET

    if manifest not in MANIFEST_DATASET:
        raise ValueError(f"unknown manifest {manifest!r}; choose one of {sorted(MANIFEST_DATASET)}")
    crop = crop if MANIFEST_DATASET[manifest] == "pbc" else "none"
    return _images(manifest, split, int(size), crop, tuple(classes))


def test_cells(size: int, crop: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's test cells: ``pbc5``'s test split (1,028 cells, WBC5 labels) at ``size`` px and ``crop``."""
    return benchmark_images("pbc5", "test", size, crop)


def test_labels() -> np.ndarray:
    """Labels (indices into WBC5) of the benchmark's test cells, in ``test_cells`` order, read from the manifest
    only."""
    from wbcstudy.data.construct import load_manifest

    df = load_manifest("pbc5")
    df = df[(df["split"] == "test") & df["label"].isin(WBC5)]
    index = {c: i for i, c in enumerate(WBC5)}
    return np.array([index[c] for c in df["label"]], dtype=np.int64)


def fixed_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``n`` cells drawn per class in proportion to the class shares (every class keeps one).

    The draw depends only on the labels, ``n`` and ``seed``, so it picks the same cells for every model; and subsets
    are nested: the cells of a smaller ``n`` are among those of a larger one (each class is one fixed random order,
    cut at its share), so a slow model scored on fewer cells is paired with the others on those cells.
    ``n`` <= 0 or >= the number of cells: all of them.
    """
    from wbcstudy.data.transforms import stratified_subset

    return stratified_subset(labels, n, seed, nested=True)


def _check_size(model: BenchmarkModel, images: np.ndarray) -> None:
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[1:3] != (model.image_size, model.image_size):
        raise ValueError(f"{model.key} works at {model.image_size} px; got images of shape {shape}")


def _containing(value: float, interval: Sequence[float]) -> list[float]:
    """An interval widened where it has to be to contain its point estimate (the results contract asks for that; a
    skewed bootstrap distribution, as of the ECE, can leave the point just outside its percentile interval)."""
    return [min(float(interval[0]), value), max(float(interval[1]), value)]


# ------------------------------------------------------------------------------------------------ classification
def calibration_interval(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0, n_bins: int = 15,
                         level: float = 0.95) -> tuple[float, list[float]]:
    """Top-label ECE (``evaluate.expected_calibration_error``'s bins) and its class-stratified percentile bootstrap
    interval over the cells (the resamples of ``metrics_with_ci`` with the same seed), widened to contain the value."""
    from wbcstudy.evaluate import confidence_bins, expected_calibration_error
    from wbcstudy.intervals import percentile_interval, resample_indices

    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    value = expected_calibration_error(y, probs, n_bins=n_bins, labels=list(range(probs.shape[1])))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    bins = confidence_bins(confidence, n_bins)
    idx = resample_indices(len(y), n_boot, seed, y)
    offset = (np.arange(n_boot)[:, None] * n_bins + bins[idx]).ravel()
    gap = (np.bincount(offset, weights=correct[idx].ravel(), minlength=n_boot * n_bins)
           - np.bincount(offset, weights=confidence[idx].ravel(), minlength=n_boot * n_bins))
    boot = np.abs(gap.reshape(n_boot, n_bins)).sum(axis=1) / len(y)
    return value, _containing(value, percentile_interval(boot, level))


def classification(model: BenchmarkModel, images: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   probs: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, list[float]], np.ndarray]:
    """``(metrics, ci, probs)`` of ``model`` on ``images`` (at its resolution) with labels ``y``.

    Metrics: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc`` (macro one-vs-rest), ``ece`` and ``n``;
    intervals: class-stratified percentile bootstrap over the cells (``n_boot`` resamples, ``seed``) for all but ``n``.
    ``probs`` skips the prediction (the model's probabilities on these images, made before).
    """
    from wbcstudy.evaluate import metrics_with_ci

    y = np.asarray(y)
    if probs is None:
        _check_size(model, images)
        probs = np.asarray(model.predict(images), dtype=np.float64)
    if probs.shape != (len(y), len(WBC5)):
        raise ValueError(f"{model.key}: probabilities of shape {probs.shape} for {len(y)} cells and {len(WBC5)} "
                         "classes")
    m, c = metrics_with_ci(y, probs, labels=list(range(len(WBC5))), n_boot=n_boot, seed=seed)
    metrics = {name: float(m[name]) for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}
    ci = {name: _containing(metrics[name], c[name]) for name in metrics}
    metrics["ece"], ci["ece"] = calibration_interval(y, probs, n_boot=n_boot, seed=seed)
    metrics["n"] = float(len(y))
    return metrics, ci, probs


# ---------------------------------------------------------------------------------------------------- robustness
def robustness(model: BenchmarkModel, images: np.ndarray, y: np.ndarray, limit: int = 500, seed: int = 0,
               levels: dict[str, Sequence[float]] | None = None, n_boot: int = 1000
               ) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[float]]]:
    """The trust chapter's perturbation sweep on ``fixed_subset(y, limit, seed)`` of the test cells, applied to the
    model's own-resolution ``images`` (the perturbations act on the pixels the model reads).

    Returns ``(table, metrics, ci)``: the table has one row per perturbation and level: accuracy, ``n``, its Wilson
    interval (``ci_low``, ``ci_high``) and ``minus_clean`` (accuracy minus the same cells' clean accuracy) with its
    paired class-stratified bootstrap interval (``minus_clean_low``, ``minus_clean_high``); ``metrics`` holds
    ``clean_accuracy`` and, at the README's settings, ``<setting>_accuracy`` and ``<setting>_minus_clean_accuracy``
    (settings ``noise005``, ``blur5``, ``brightness13``) with their intervals.
    """
    from wbcstudy.explain import IDENTITY_LEVELS, README_LEVELS, perturbed_predictions, sweep_table
    from wbcstudy.intervals import bootstrap_difference, wilson

    _check_size(model, images)
    levels = LEVELS if levels is None else levels
    rows = fixed_subset(np.asarray(y), limit, seed)
    x, yy = torch.from_numpy(np.array(images[rows], copy=True)), np.asarray(y)[rows]
    preds = perturbed_predictions(lambda xb: np.asarray(model.predict(xb.numpy())), x, levels)
    clean = next((p for (name, level), p in preds.items() if float(level) == float(IDENTITY_LEVELS[name])), None)
    if clean is None:
        clean = np.asarray(model.predict(x.numpy())).argmax(1)
    accuracy = lambda t, p: float((t == p).mean())  # noqa: E731
    table = sweep_table(preds, yy)
    diffs = []
    for (name, level), p in preds.items():
        d = accuracy(yy, p) - accuracy(yy, clean)
        if np.array_equal(p, clean):
            diffs.append((d, [d, d]))
        else:
            diffs.append((d, _containing(d, bootstrap_difference(accuracy, yy, p, clean, n_boot=n_boot, seed=seed,
                                                                 strata=True))))
    table["minus_clean"] = [d for d, _ in diffs]
    table["minus_clean_low"] = [c[0] for _, c in diffs]
    table["minus_clean_high"] = [c[1] for _, c in diffs]
    k = int((clean == yy).sum())
    metrics = {"clean_accuracy": k / len(yy)}
    ci = {"clean_accuracy": list(wilson(k, len(yy)))}
    for name, setting in README_SETTINGS.items():
        hit = table[(table.perturbation == name) & (table.level == float(README_LEVELS[name]))]
        if hit.empty:
            continue
        row = hit.iloc[0]
        metrics[f"{setting}_accuracy"], ci[f"{setting}_accuracy"] = (float(row.accuracy),
                                                                     [float(row.ci_low), float(row.ci_high)])
        metrics[f"{setting}_minus_clean_accuracy"] = float(row.minus_clean)
        ci[f"{setting}_minus_clean_accuracy"] = [float(row.minus_clean_low), float(row.minus_clean_high)]
    return table, metrics, ci


# -------------------------------------------------------------------------------------------------- domain shift
def shift_scores(model: BenchmarkModel, n_boot: int = 1000, seed: int = 0, limit: int = 0,
                 sets: dict[str, tuple[str, str]] | None = None, variants: Sequence[str] = ("as_is",),
                 ) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[float]], dict[tuple[str, str], tuple]]:
    """Accuracy and balanced accuracy (mean recall over the classes present) of ``model`` on each shift set's WBC5
    cells in each of ``variants`` (``wbcstudy.data.shift``: as is, matched to the PBC scale the model reads through
    its own crop, stain-normalised), with class-stratified bootstrap intervals; the same cells in every variant.
    ``limit`` > 0 scores ``fixed_subset`` of that many cells per set.

    Returns ``(table, metrics, ci, predictions)``: one table row per set and variant with the chance level (one over
    the classes present: what a model that names one class for every cell scores) and the majority-class rate;
    metrics ``<set>_<infix>accuracy``, ``<set>_<infix>balanced_accuracy`` (infix ``""``, ``matched_``,
    ``stainnorm_``; sets ``zheng1``, ``zheng2``, ``bccd``), ``<set>_chance``, ``<set>_majority_rate``, and where two
    adjacent variants were scored the paired differences ``<set>_matched_minus_as_is_balanced_accuracy`` (what the
    scale costs) and ``<set>_stainnorm_minus_matched_balanced_accuracy`` (what the stain costs), with paired bootstrap
    intervals over the cells; ``predictions[(set, variant)] = (labels, predicted classes)``.
    """
    from sklearn.metrics import balanced_accuracy_score

    from wbcstudy.data.shift import KEY_INFIX, VARIANTS, shift_set
    from wbcstudy.evaluate import metrics_with_ci
    from wbcstudy.intervals import bootstrap_difference

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown shift-set variant(s) {unknown}; the variants are {list(VARIANTS)}")
    sets = SHIFT_SETS if sets is None else sets
    rows, metrics, ci, predictions = [], {}, {}, {}
    for manifest, (part, title) in sets.items():
        full = shift_set(manifest, model.image_size, "as_is", crop=model.crop, classes=tuple(WBC5))
        keep = fixed_subset(full.labels, limit, seed)
        y = full.labels[keep]
        present = np.unique(y)
        metrics[f"{part}_chance"] = 1.0 / len(present)
        metrics[f"{part}_majority_rate"] = float(np.bincount(y).max() / len(y))
        preds = {}
        for variant in variants:
            images = full.images[keep] if variant == "as_is" else shift_set(
                manifest, model.image_size, variant, crop=model.crop, classes=tuple(WBC5), keep=keep).images
            probs = np.asarray(model.predict(images), dtype=np.float64)
            preds[variant] = probs.argmax(1)
            predictions[(part, variant)] = (y, preds[variant])
            m, c = metrics_with_ci(y, probs, labels=list(range(len(WBC5))), n_boot=n_boot, seed=seed)
            infix = KEY_INFIX[variant]
            for name in ("accuracy", "balanced_accuracy"):
                metrics[f"{part}_{infix}{name}"] = float(m[name])
                ci[f"{part}_{infix}{name}"] = _containing(float(m[name]), c[name])
            key = f"{part}_{infix}balanced_accuracy"
            rows.append({"test set": title, "variant": VARIANTS[variant], "n": len(y), "accuracy": m["accuracy"],
                         "balanced accuracy": m["balanced_accuracy"], "ci_low": ci[key][0], "ci_high": ci[key][1],
                         "chance": metrics[f"{part}_chance"], "majority rate": metrics[f"{part}_majority_rate"]})
        for after, before in (("matched", "as_is"), ("stainnorm", "matched")):
            if after in preds and before in preds:
                key = f"{part}_{after}_minus_{before}_balanced_accuracy"
                metrics[key] = float(balanced_accuracy_score(y, preds[after])
                                     - balanced_accuracy_score(y, preds[before]))
                ci[key] = _containing(metrics[key], bootstrap_difference(
                    balanced_accuracy_score, y, preds[after], preds[before], n_boot=n_boot, seed=seed, strata=True))
    return pd.DataFrame(rows).set_index(["test set", "variant"]), metrics, ci, predictions


def _independent_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int,
                            seed: int) -> tuple[float, float]:
    """95% bootstrap interval of balanced accuracy on cells ``a`` minus that on other cells ``b`` ((labels,
    predictions) each), each resampled within its classes, independently."""
    from sklearn.metrics import balanced_accuracy_score

    from wbcstudy.intervals import percentile_interval, resample_indices

    ia = resample_indices(len(a[0]), n_boot, seed, a[0])
    ib = resample_indices(len(b[0]), n_boot, seed + 1, b[0])
    values = [balanced_accuracy_score(a[0][i], a[1][i]) - balanced_accuracy_score(b[0][j], b[1][j])
              for i, j in zip(ia, ib)]
    return percentile_interval(values)


def shift_decomposition(result: BenchmarkResult, name: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Where one model's drop from PBC to each shift set goes (``run_benchmark`` with all three shift variants): the
    scale (scale-matched minus as is), the stain (stain-normalised minus scale-matched), both paired on the same
    cells, and the rest (PBC's own test cells minus the stain-normalised set: other cells, so an unpaired interval).
    One row per set; each difference with its 95% bootstrap interval over cells (one trained model: no seeds)."""
    from sklearn.metrics import balanced_accuracy_score

    y_pbc = test_labels()[result.rows]
    pbc = (y_pbc, result.probs.argmax(1))
    own = float(balanced_accuracy_score(*pbc))
    m, c, key = result.metrics, result.ci, result.key
    rows = []
    for part, title in ((p, t) for p, t in SHIFT_SETS.values()):
        needed = [(part, v) for v in ("as_is", "matched", "stainnorm")]
        if not all(n in result.shift_predictions for n in needed):
            raise ValueError(f"{key}: shift_decomposition needs all three variants of {part} (run_benchmark's "
                             f"shift_variants)")
        normalised = result.shift_predictions[(part, "stainnorm")]
        rest = own - float(balanced_accuracy_score(*normalised))
        rows.append({"model": name, "test set": title, "PBC": own,
                     "as is": m[f"{key}_{part}_balanced_accuracy"],
                     "scale": m[f"{key}_{part}_matched_minus_as_is_balanced_accuracy"],
                     "scale CI": c[f"{key}_{part}_matched_minus_as_is_balanced_accuracy"],
                     "stain": m[f"{key}_{part}_stainnorm_minus_matched_balanced_accuracy"],
                     "stain CI": c[f"{key}_{part}_stainnorm_minus_matched_balanced_accuracy"],
                     "rest": rest, "rest CI": _containing(rest, _independent_difference(pbc, normalised, n_boot,
                                                                                         seed))})
    return pd.DataFrame(rows)


def below_chance(results: dict[str, BenchmarkResult], names: dict[str, str]) -> pd.DataFrame:
    """Every (model, shift set, variant) whose balanced accuracy is below the set's chance level, with the class the
    model names most often there and the share of the cells it names it for (a systematic confusion)."""
    from sklearn.metrics import balanced_accuracy_score

    from wbcstudy.data.shift import VARIANTS

    titles = dict(SHIFT_SETS.values())
    rows = []
    for key, res in results.items():
        for (part, variant), (y, pred) in res.shift_predictions.items():
            chance = 1.0 / len(np.unique(y))
            ba = float(balanced_accuracy_score(y, pred))
            if ba < chance:
                counts = np.bincount(pred, minlength=len(WBC5))
                rows.append({"model": names[key], "key": key, "test set": titles[part], "set": part,
                             "variant": VARIANTS[variant], "variant key": variant, "balanced accuracy": ba,
                             "chance": chance, "most named": WBC5[int(counts.argmax())],
                             "share named so": float(counts.max() / len(pred))})
    return pd.DataFrame(rows, columns=["model", "key", "test set", "set", "variant", "variant key",
                                       "balanced accuracy", "chance", "most named", "share named so"])


# ------------------------------------------------------------------------------------------------------ anomaly
def anomaly(model: BenchmarkModel, normal_images: np.ndarray, n_boot: int = 1000, seed: int = 0, limit: int = 0,
            classes: Sequence[str] = ANOMALY_CLASSES, normal_scores: np.ndarray | None = None
            ) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[float]]]:
    """AUROC of ``model.score_anomaly`` separating PBC-8 test cells of each class in ``classes`` (never trained on)
    from the PBC-5 test cells ``normal_images`` (at the model's resolution and crop), and of all of them together,
    with bootstrap intervals stratified by normal/anomalous.

    ``limit`` > 0 scores ``fixed_subset`` of that many normal cells and of that many anomalous cells;
    ``normal_scores`` skips scoring the normal cells (the model's scores on all of ``normal_images``, made before).
    Returns ``(table, metrics, ci)``; metrics ``anomaly_<class>_auroc`` and ``anomaly_auroc`` (pooled).
    """
    from wbcstudy.intervals import bootstrap_metric

    _check_size(model, normal_images)
    n_all = len(normal_images)
    keep_n = fixed_subset(np.zeros(n_all, dtype=np.int64), limit, seed)
    if normal_scores is None:
        normal = np.asarray(model.score_anomaly(normal_images[keep_n]), dtype=np.float64)
    else:
        normal = np.asarray(normal_scores, dtype=np.float64)[keep_n]
    x_a, y_a = benchmark_images("pbc8", "test", model.image_size, model.crop, classes=classes)
    keep_a = fixed_subset(y_a, limit, seed)
    x_a, y_a = x_a[keep_a], y_a[keep_a]
    scores_a = np.asarray(model.score_anomaly(x_a), dtype=np.float64)
    rows, metrics, ci = [], {}, {}
    groups = {**{c: y_a == k for k, c in enumerate(classes)}, "any": np.ones(len(y_a), dtype=bool)}
    for name, mask in groups.items():
        labels = np.r_[np.zeros(len(normal), dtype=np.int64), np.ones(int(mask.sum()), dtype=np.int64)]
        scores = np.r_[normal, scores_a[mask]]
        key = "anomaly_auroc" if name == "any" else f"anomaly_{name}_auroc"
        metrics[key] = auroc(labels, scores)
        ci[key] = _containing(metrics[key],
                              bootstrap_metric(auroc, labels, scores, n_boot=n_boot, seed=seed, strata=True))
        rows.append({"anomalous class": "all together" if name == "any" else name, "anomalous cells": int(mask.sum()),
                     "normal cells": len(normal), "AUROC": metrics[key], "ci_low": ci[key][0], "ci_high": ci[key][1]})
    return pd.DataFrame(rows).set_index("anomalous class"), metrics, ci


# ------------------------------------------------------------------------------------------------------ latency
def latency_ms_per_image(model: BenchmarkModel, images: np.ndarray, threads: int = 2, warmup: int = 64,
                         repeats: int = 1) -> float:
    """Milliseconds of wall-clock per image of ``model.predict(images)`` (the model batches as it predicts) on
    ``threads`` torch threads, after one warm-up call on the first ``warmup`` images in reverse order (another batch:
    a model that remembers its last batch, as the diffusion classifier does for its anomaly score, must not answer
    the timed call from memory); the median of ``repeats``."""
    _check_size(model, images)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.predict(np.ascontiguousarray(images[:max(1, warmup)][::-1]))
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            model.predict(images)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 1000.0 * float(np.median(times)) / len(images)


# ------------------------------------------------------------------------------------------------- all of them
@dataclass
class BenchmarkResult:
    """One model's benchmark: flat metrics and intervals keyed ``<model key>_<metric>``, and the tables behind them."""

    key: str
    metrics: dict[str, float]
    ci: dict[str, list[float]]
    rows: np.ndarray  #: the test cells scored for classification (indices into ``test_cells``; all of them by default)
    probs: np.ndarray  #: class probabilities on those cells, in order
    robustness: pd.DataFrame
    shift: pd.DataFrame
    anomaly: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)  #: wall-clock of each measurement
    #: (shift set, variant) → (labels, predicted classes) on the shift cells (``shift_scores``)
    shift_predictions: dict[tuple[str, str], tuple] = field(default_factory=dict)


def run_benchmark(model: BenchmarkModel, n_boot: int = 1000, seed: int = 0, test_limit: int = 0,
                  robust_limit: int = 500,
                  levels: dict[str, Sequence[float]] | None = None, shift_limit: int = 0, anomaly_limit: int = 0,
                  latency_limit: int = 256, threads: int = 2, shift_variants: Sequence[str] = ("as_is",)
                  ) -> BenchmarkResult:
    """Every measurement of ``model`` on the test cells at its resolution and crop; the metrics carry the model's key
    as prefix (``wnet_balanced_accuracy``, ``wnet_blur5_minus_clean_accuracy``, ``wnet_zheng1_balanced_accuracy``,
    ``wnet_anomaly_auroc``, ``wnet_ms_per_image``, ``wnet_train_seconds``, ...). Subset sizes are parameters (0: all
    cells) so that a slow model can be measured on fewer cells — nested in the others' (``fixed_subset``):
    ``test_limit`` for the classification metrics, ``robust_limit`` per perturbation level, ``shift_limit`` per shift
    set, ``anomaly_limit`` normal and anomalous cells, ``latency_limit`` cells timed; ``shift_variants`` the variants
    of the shift sets (``shift_scores``)."""
    x, y = test_cells(model.image_size, model.crop)
    rows = fixed_subset(y, test_limit, seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    metrics, ci, probs = classification(model, x[rows], y[rows], n_boot, seed)
    seconds["classification"] = time.perf_counter() - start
    start = time.perf_counter()
    robust_table, m, c = robustness(model, x, y, robust_limit, seed, levels, n_boot)
    metrics.update(m)
    ci.update(c)
    seconds["robustness"] = time.perf_counter() - start
    start = time.perf_counter()
    shift_table, m, c, shift_predictions = shift_scores(model, n_boot, seed, shift_limit, variants=shift_variants)
    metrics.update(m)
    ci.update(c)
    seconds["domain_shift"] = time.perf_counter() - start
    start = time.perf_counter()
    full = len(rows) == len(y)  # the default anomaly score of every test cell is known from the probabilities
    normal_scores = 1.0 - probs.max(axis=1) if model.anomaly_score is None and full else None
    anomaly_table, m, c = anomaly(model, x, n_boot, seed, anomaly_limit, normal_scores=normal_scores)
    metrics.update(m)
    ci.update(c)
    seconds["anomaly"] = time.perf_counter() - start
    start = time.perf_counter()
    lat_x = x[fixed_subset(y, latency_limit, seed)]
    metrics["ms_per_image"] = latency_ms_per_image(model, lat_x, threads=threads)
    seconds["latency"] = time.perf_counter() - start
    metrics["train_seconds"] = float(model.train_seconds)
    prefix = f"{model.key}_"
    return BenchmarkResult(model.key, {prefix + k: v for k, v in metrics.items()},
                           {prefix + k: v for k, v in ci.items()},
                           rows, probs, robust_table.assign(model=model.name), shift_table.assign(model=model.name),
                           anomaly_table.assign(model=model.name), seconds, shift_predictions)


# ------------------------------------------------------------------------------------------------ the summary tables
def summary_table(models: dict[str, BenchmarkModel], results: dict[str, BenchmarkResult]) -> pd.DataFrame:
    """One row per model (indexed by its name): test cells, accuracy, balanced accuracy (with ``ci_low``/``ci_high``),
    macro F1, ECE, milliseconds per image, training seconds and whether it reached its plateau."""
    rows = []
    for key, model in models.items():
        m, c = results[key].metrics, results[key].ci
        rows.append({"model": model.name, "key": key, "chapter": model.chapter, "input (px)": model.image_size,
                     "test cells": int(m[f"{key}_n"]), "accuracy": m[f"{key}_accuracy"],
                     "balanced accuracy": m[f"{key}_balanced_accuracy"], "ci_low": c[f"{key}_balanced_accuracy"][0],
                     "ci_high": c[f"{key}_balanced_accuracy"][1], "macro F1": m[f"{key}_macro_f1"],
                     "ECE": m[f"{key}_ece"], "ms per image": m[f"{key}_ms_per_image"],
                     "training (s)": m[f"{key}_train_seconds"], "plateau": model.plateau})
    return pd.DataFrame(rows).set_index("model")


def difference_to_best(results: dict[str, BenchmarkResult], best: str, n_boot: int = 1000, seed: int = 0
                       ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, int]]:
    """Balanced accuracy of each model minus that of ``best``, paired on the test cells both scored (the subsets are
    nested, so a model scored on fewer cells is compared on its own), with class-stratified bootstrap intervals.
    Returns ``({key: difference}, {key: interval}, {key: cells})``; ``best`` itself is left out."""
    from sklearn.metrics import balanced_accuracy_score

    from wbcstudy.intervals import bootstrap_difference

    y_all = test_labels()
    ref = results[best]
    ref_pred = dict(zip(ref.rows.tolist(), ref.probs.argmax(1).tolist()))
    diff, ci, cells = {}, {}, {}
    for key, res in results.items():
        if key == best:
            continue
        common = [r for r in res.rows.tolist() if r in ref_pred]
        position = {r: i for i, r in enumerate(res.rows.tolist())}
        a = res.probs.argmax(1)[[position[r] for r in common]]
        b = np.array([ref_pred[r] for r in common])
        y = y_all[common]
        diff[key] = float(balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b))
        ci[key] = _containing(diff[key], bootstrap_difference(balanced_accuracy_score, y, a, b, n_boot=n_boot,
                                                              seed=seed, strata=True))
        cells[key] = len(common)
    return diff, ci, cells
