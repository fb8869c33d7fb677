"""The W-Net chapter's procedures (Jung et al. 2022): cross-validation with a monitored validation set, the Table 4
model comparison over models × folds, the transfer runs, the DCGAN checks, and the metrics-with-intervals builders.

Every interval here is a percentile bootstrap over test cells pooled across folds (``wbcstudy.intervals``) or a
Wilson interval; none is a t-interval over folds. Models come from ``wbcstudy.models.build``.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from wbcstudy.intervals import bootstrap_metric, hierarchical_bootstrap, hierarchical_difference, wilson
from wbcstudy.train import (
    Augment,
    CrossValResult,
    LossFn,
    TrainConfig,
    TrainResult,
    fit,
    predict_proba,
    reached_plateau,
)

__all__ = [
    "FoldSplit", "ComparisonModelConfig", "ModelRun", "GanChecks",
    "split_fold", "cross_validate_monitored", "cv_plateau", "metric_functions", "summarise_predictions",
    "summarise_cv", "compare_models", "comparison_summary", "fold_pooled_difference", "transfer_runs",
    "transfer_summary", "stack_seeds", "gan_checks", "generated_cell_score", "gan_plateau", "judge_features",
    "realism_summary", "mixed_set_accuracy", "wnet_data_sets",
    "restrict_to", "until_plateau", "TABLE4_KEYS",
]

#: Table 4's models: display name → results-key prefix (``<prefix>_balanced_accuracy`` etc.)
TABLE4_KEYS: dict[str, str] = {"W-Net": "wnet_compare", "W-Net-SVM": "wnet_svm", "AlexNet": "alexnet",
                               "VGG16 (BN)": "vgg16", "ResNet50": "resnet50", "LSTM": "lstm"}


# --------------------------------------------------------------------------- plateau
def _reached_plateau(values: Sequence[float], window: int = 3, tol: float = 0.01, mode: str = "max") -> bool:
    """``wbcstudy.train.reached_plateau`` on a history column."""
    return bool(reached_plateau([float(v) for v in values], window=window, tol=tol, mode=mode))


def cv_plateau(histories: Mapping[int, pd.DataFrame], column: str = "val_balanced_accuracy", mode: str = "max",
               window: int = 3, tol: float = 0.01) -> bool:
    """Whether every fold's ``column`` history reached its plateau (False with no folds or no such column)."""
    if not histories:
        return False
    return all(column in h and _reached_plateau(h[column].to_numpy(), window, tol, mode) for h in histories.values())


def until_plateau(max_epochs: int, batch_size: int, lr: float, monitor: str = "val_balanced_accuracy",
                  seed: int = 0) -> TrainConfig:
    """The chapter's training recipe: Adam at a constant ``lr``, no weight decay, stopping once ``monitor`` has reached
    its plateau (``wbcstudy.train.reached_plateau``) or after ``max_epochs``, keeping the best epoch on it when it is a
    validation column."""
    return TrainConfig(epochs=max_epochs, batch_size=batch_size, lr=lr, optimizer="adam", weight_decay=0.0,
                       scheduler="constant", monitor=monitor, stop_at_plateau=True, seed=seed, progress=False)


# --------------------------------------------------------------------------- cross-validation with validation cells
@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold's training, validation (monitoring only) and test cells."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_fold(labels: np.ndarray, folds: np.ndarray, fold: int, train_limit: int | None = None, val_limit: int = 0,
               test_limit: int | None = None) -> FoldSplit:
    """Training, validation and test rows of ``fold``: test = the fold; train and validation from the other folds.

    The training rows are those ``wbcstudy.train.cross_validate`` uses (a stratified ``train_limit`` subset drawn with
    seed ``fold``, so every model of a comparison sees the same cells). The ``val_limit`` validation rows are a
    stratified subset of the other folds' cells *not* trained on; when no ``train_limit`` is set, they are taken out of
    the training rows instead. ``test_limit`` predicts a stratified subset of the fold, as ``cross_validate`` does.
    """
    from wbcstudy.data.transforms import stratified_subset

    y, f = np.asarray(labels), np.asarray(folds)
    pool, test = np.flatnonzero(f != fold), np.flatnonzero(f == fold)
    train = pool[stratified_subset(y[pool], train_limit, seed=fold)] if train_limit else pool
    if test_limit:
        test = test[stratified_subset(y[test], test_limit, seed=fold)]
    val = np.zeros(0, dtype=np.int64)
    if val_limit:
        rest = np.setdiff1d(pool, train) if train_limit and len(train) < len(pool) else pool
        val = rest[stratified_subset(y[rest], val_limit, seed=fold + 1)] if len(rest) else val
        if not train_limit or len(train) == len(pool):
            train = np.setdiff1d(train, val)
    return FoldSplit(train, val, test)


def cross_validate_monitored(
    make_model: Callable[[], nn.Module], images: torch.Tensor, labels: np.ndarray, folds: np.ndarray,
    config: TrainConfig, fold_ids: Sequence[int] | None = None, train_limit: int | None = None, val_limit: int = 0,
    test_limit: int | None = None, augment: Augment | None = None, loss_fn: LossFn | None = None,
    n_classes: int | None = None, keep_models: bool = False,
) -> CrossValResult:
    """k-fold cross-validation as ``wbcstudy.train.cross_validate``, plus a validation curve per fold.

    Each fold's model is scored on ``val_limit`` validation cells after every epoch (``val_*`` columns of its
    history) so that a reader — and ``cv_plateau`` — can see whether it converged. By default the validation cells
    choose nothing: the last epoch is kept, as in ``cross_validate``, and training is unchanged by the monitoring
    (``fit`` seeds every epoch by (seed, epoch) alone). With ``config.stop_at_plateau`` they also decide when to stop
    (once ``config.monitor`` has reached its plateau, at most ``config.epochs`` epochs) and the best epoch on them is
    kept; the held-out fold still chooses nothing.
    """
    y_all = np.asarray(labels, dtype=np.int64)
    fold_arr = np.asarray(folds)
    n_classes = n_classes or int(y_all.max()) + 1
    fold_ids = sorted(int(f) for f in np.unique(fold_arr)) if fold_ids is None else [int(f) for f in fold_ids]
    last_epoch = config if config.stop_at_plateau else dataclasses.replace(config, monitor="epoch", patience=None)
    # ("epoch" always improves: without plateau stopping the last epoch is kept)
    frames, histories, seconds, sizes, models = [], {}, {}, {}, {}
    for fold in fold_ids:
        split = split_fold(y_all, fold_arr, fold, train_limit, val_limit, test_limit)
        val = (images[split.val], torch.from_numpy(y_all[split.val])) if len(split.val) else None
        result = fit(make_model(), (images[split.train], torch.from_numpy(y_all[split.train])), val,
                     last_epoch if val is not None else config, augment=augment, loss_fn=loss_fn, n_classes=n_classes)
        prob = predict_proba(result.model, images[split.test], batch_size=config.eval_batch_size, device=config.device,
                             precision=config.precision)
        frame = pd.DataFrame({"fold": fold, "row": split.test, "y": y_all[split.test], "pred": prob.argmax(1)})
        frames.append(pd.concat([frame, pd.DataFrame(prob, columns=[f"p{k}" for k in range(prob.shape[1])])], axis=1))
        histories[fold], seconds[fold], sizes[fold] = result.history, result.seconds, len(split.train)
        if keep_models:
            models[fold] = result.model
    return CrossValResult(pd.concat(frames, ignore_index=True), histories, seconds, sizes, models)


# --------------------------------------------------------------------------- metrics and their intervals
def _confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _divide(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(np.shape(num), fill, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def metric_functions(n_classes: int) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Fast metric functions ``fn(y_true, y_pred)`` over ``n_classes`` classes, as ``wbcstudy.evaluate`` defines them.

    Keys: ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present), ``precision``, ``recall``,
    ``f1`` (macro averages; a class never predicted has precision 0) and ``recall_<k>`` for every class ``k``.
    """
    def counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cm = _confusion(y, pred, n_classes)
        return np.diagonal(cm).astype(np.float64), cm.sum(1), cm.sum(0)

    def balanced(y: np.ndarray, pred: np.ndarray) -> float:
        tp, support, _ = counts(y, pred)
        present = support > 0
        return float((tp[present] / support[present]).mean()) if present.any() else float("nan")

    def f1(y: np.ndarray, pred: np.ndarray) -> float:
        tp, support, predicted = counts(y, pred)
        return float(_divide(2 * tp, support + predicted, 0.0).mean())

    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p))) if len(y) else float("nan"),
        "balanced_accuracy": balanced,
        "precision": lambda y, p: float(_divide(*counts(y, p)[::2], 0.0).mean()),
        "recall": lambda y, p: float(_divide(*counts(y, p)[:2], 0.0).mean()),
        "f1": f1,
    }
    for k in range(n_classes):
        fns[f"recall_{k}"] = (lambda k: lambda y, p: float(_divide(*counts(y, p)[:2], np.nan)[k]))(k)
    return fns


def summarise_predictions(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], prefix: str,
                          n_boot: int = 1000, seed: int = 0, which: Sequence[str] = ("balanced_accuracy", "accuracy",
                          "precision", "recall", "f1"), per_class: bool = False,
                          folds: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Metrics of pooled predictions as ``{prefix}_{metric}`` with class-stratified bootstrap intervals over the cells.

    ``per_class`` adds ``{prefix}_{class}_accuracy``: the recall of each class, the paper's per-class "accuracy".
    With ``folds`` (each cell's fold) the predictions pool several runs: each interval is then a hierarchical bootstrap
    (the folds, then the cells of each within its classes: ``wbcstudy.intervals.hierarchical_bootstrap``), and
    ``{key}_fold_sd`` holds the SD of the metric over the folds.
    """
    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    fns = metric_functions(len(classes))
    names = {f"{prefix}_{m}": fns[m] for m in which}
    if per_class:
        names.update({f"{prefix}_{c}_accuracy": fns[f"recall_{k}"] for k, c in enumerate(classes)})
    groups = None if folds is None else [(y[folds == f], pred[folds == f]) for f in np.unique(folds)]
    metrics, ci = {}, {}
    for key, fn in names.items():
        if groups is None:
            metrics[key] = fn(y, pred)
            low, high = bootstrap_metric(fn, y, pred, n_boot=n_boot, seed=seed, strata=y)
        else:
            metrics[key], (low, high), metrics[f"{key}_fold_sd"] = hierarchical_bootstrap(fn, groups, n_boot, seed,
                                                                                          stratify=True)
        ci[key] = [low, high]
    return metrics, ci


def summarise_cv(cv: CrossValResult, classes: Sequence[str], prefix: str, n_boot: int = 1000,
                 seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """A cross-validation's metrics over the held-out cells of all its folds pooled, per class too, with hierarchical
    intervals (folds, then cells) and each metric's SD over the folds."""
    p = cv.predictions
    return summarise_predictions(p["y"].to_numpy(), p["pred"].to_numpy(), classes, prefix, n_boot, seed, per_class=True,
                                 folds=p["fold"].to_numpy())


# --------------------------------------------------------------------------- Table 4: models × folds
@dataclass(frozen=True)
class ComparisonModelConfig:
    """One model of a comparison: its ``wbcstudy.models.build`` name and options, its loss (None: cross-entropy), its
    learning rate and its maximum number of epochs (None: the comparison's)."""

    name: str
    options: dict = field(default_factory=dict)
    loss_fn: LossFn | None = None
    lr: float | None = None
    max_epochs: int | None = None


@dataclass
class ModelRun:
    """A model's cross-validation in a comparison, its parameter count and whether every fold reached its plateau."""

    cv: CrossValResult
    parameters: int
    plateau: bool


def compare_models(specs: Mapping[str, ComparisonModelConfig], images: torch.Tensor, labels: np.ndarray,
                   folds: np.ndarray,
                   config: TrainConfig, mean: Sequence[float], std: Sequence[float], fold_ids: Sequence[int],
                   train_limit: int | None = None, val_limit: int = 0, test_limit: int | None = None,
                   augment: Augment | None = None, n_classes: int | None = None, seed: int = 0,
                   log: Callable[[str], None] | None = print) -> dict[str, ModelRun]:
    """Cross-validate every model on the same folds, training cells, epochs, optimiser and augmentation (Table 4).

    Each model is built by ``wbcstudy.models.build(spec.name, n_classes, **spec.options)`` behind an input adapter
    that normalises uint8 images with ``mean``/``std`` and trained with ``config`` (its learning rate and epochs
    replaced by ``spec.lr`` and ``spec.max_epochs`` where given); the plateau is judged on the validation balanced
    accuracy.
    """
    from wbcstudy.models import build, count_parameters, with_input_adapter

    n_classes = n_classes or int(np.max(labels)) + 1
    runs: dict[str, ModelRun] = {}
    for title, spec in specs.items():
        torch.manual_seed(seed)
        make = lambda spec=spec: with_input_adapter(build(spec.name, n_classes, **spec.options),  # noqa: E731
                                                    mean, std)
        n_params = count_parameters(build(spec.name, n_classes, **spec.options))
        own = dataclasses.replace(config, lr=spec.lr or config.lr, epochs=spec.max_epochs or config.epochs)
        cv = cross_validate_monitored(make, images, labels, folds, own, fold_ids=fold_ids, train_limit=train_limit,
                                      val_limit=val_limit, test_limit=test_limit, augment=augment, loss_fn=spec.loss_fn,
                                      n_classes=n_classes)
        runs[title] = ModelRun(cv, n_params, cv_plateau(cv.histories))
        if log is not None:
            epochs = [len(h) for h in cv.histories.values()]
            log(f"{title}: {n_params:,} parameters, lr {own.lr:g}, {min(epochs)}–{max(epochs)} epochs, "
                f"{sum(cv.seconds.values()):.0f} s over {len(cv.seconds)} folds")
    return runs


def restrict_to(predictions: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``predictions`` for the held-out cells (fold, row) that ``like`` also predicted, in ``like``'s
    order."""
    return like[["fold", "row"]].merge(predictions, on=["fold", "row"], how="inner")


def fold_pooled_difference(a: pd.DataFrame, b: pd.DataFrame, n_classes: int, metric: str = "balanced_accuracy",
                      n_boot: int = 1000, seed: int = 0) -> tuple[float, list[float]]:
    """``metric(A) − metric(B)`` on the held-out cells both predicted (matched by fold and row, and by seed where both
    have a ``seed`` column), with a paired hierarchical bootstrap: the runs (folds, or seed and fold), then the cells
    of each within its classes, the same draw for both sides."""
    runs = _runs_of(a) if _runs_of(a) == _runs_of(b) else ["fold"]
    both = a[[*runs, "row", "y", "pred"]].merge(b[[*runs, "row", "pred"]], on=[*runs, "row"], suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError("the two runs predicted no common cells")
    fn = metric_functions(n_classes)[metric]
    groups = [(part["y"].to_numpy(), part["pred_a"].to_numpy(), part["pred_b"].to_numpy())
              for _, part in both.groupby(runs, sort=True)]
    value, (low, high), _ = hierarchical_difference(fn, groups, n_boot, seed, stratify=True)
    return value, [low, high]


def comparison_summary(runs: Mapping[str, ModelRun], classes: Sequence[str], keys: Mapping[str, str] = TABLE4_KEYS,
                       n_boot: int = 1000,
                       seed: int = 0) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[float]]]:
    """Table 4 from a comparison: per model, pooled balanced accuracy (with interval), precision, recall, F1,
    parameters, mean epochs trained per fold and plateau; plus the results metrics ``{key}_{metric}`` (with
    ``{key}_epochs``) and the intervals of the metrics."""
    rows, metrics, ci = [], {}, {}
    for title, run in runs.items():
        p = run.cv.predictions
        m, c = summarise_predictions(p["y"].to_numpy(), p["pred"].to_numpy(), classes, keys[title], n_boot, seed,
                                     which=("balanced_accuracy", "precision", "recall", "f1"),
                                     folds=p["fold"].to_numpy())
        metrics.update(m)
        ci.update(c)
        k = keys[title]
        metrics[f"{k}_epochs"] = float(np.mean([len(h) for h in run.cv.histories.values()]))
        rows.append({"model": title, "parameters": run.parameters, "epochs": metrics[f"{k}_epochs"],
                     "balanced accuracy": m[f"{k}_balanced_accuracy"],
                     "95% CI low": c[f"{k}_balanced_accuracy"][0], "95% CI high": c[f"{k}_balanced_accuracy"][1],
                     "precision": m[f"{k}_precision"], "recall": m[f"{k}_recall"], "F1": m[f"{k}_f1"],
                     "plateau": run.plateau})
    return pd.DataFrame(rows).set_index("model"), metrics, ci


# --------------------------------------------------------------------------- transfer
def transfer_runs(pretrained: nn.Module, make_scratch: Callable[[], nn.Module],
                  targets: Mapping[str, tuple[torch.Tensor, np.ndarray, np.ndarray]], config: TrainConfig,
                  n_folds: int, augment: Augment | None = None, n_classes: int | None = None,
                  seed: int = 0, min_steps: int = 0,
                  seeds: Sequence[int] | None = None) -> dict[str, dict[str, CrossValResult]]:
    """On every target set (images, labels, folds), cross-validate W-Net from scratch and fine-tuned from
    ``pretrained``, once per seed of ``seeds`` (default: ``seed`` alone).

    Both runs use the target's first ``n_folds`` fixed folds and the same ``config`` (its seed replaced by each seed:
    the scratch model's initial weights, the shuffling and the augmentation); fine-tuning trains all layers of a copy
    of ``pretrained`` (its output layer kept: the targets share its classes). ``min_steps`` sets the config's
    ``min_epochs`` per target to at least that many optimiser steps, so that plateau stopping on a few-cell set does not
    end a run in its first flat stretch of a handful of steps. The seeds' results are stacked (:func:`stack_seeds`):
    one prediction row per seed, fold and cell, with a ``seed`` column.
    """
    out: dict[str, dict[str, CrossValResult]] = {}
    for title, (x, y, f) in targets.items():
        ids = sorted(int(v) for v in np.unique(f))[:n_folds]
        steps_per_epoch = max(1, int(len(y) * (1 - 1 / max(2, len(np.unique(f))))) // config.batch_size)
        own = dataclasses.replace(config, min_epochs=max(config.min_epochs, -(-min_steps // steps_per_epoch)))
        scratch, tuned = {}, {}
        for s in (seed,) if seeds is None else seeds:
            run = dataclasses.replace(own, seed=int(s))
            torch.manual_seed(int(s))
            scratch[int(s)] = cross_validate_monitored(make_scratch, x, y, f, run, fold_ids=ids, augment=augment,
                                                       n_classes=n_classes)
            tuned[int(s)] = cross_validate_monitored(lambda: copy.deepcopy(pretrained), x, y, f, run, fold_ids=ids,
                                                     augment=augment, n_classes=n_classes)
        out[title] = {"from scratch": stack_seeds(scratch), "pre-trained": stack_seeds(tuned)}
    return out


def stack_seeds(results: Mapping[int, CrossValResult]) -> CrossValResult:
    """Cross-validations of the same folds with different seeds as one result: the predictions stacked with a ``seed``
    column, the histories, seconds and training sizes keyed ``(seed, fold)``."""
    if not results:
        raise ValueError("no seeds to stack")
    predictions = pd.concat([cv.predictions.assign(seed=s) for s, cv in results.items()], ignore_index=True)
    return CrossValResult(predictions, {(s, k): h for s, cv in results.items() for k, h in cv.histories.items()},
                          {(s, k): v for s, cv in results.items() for k, v in cv.seconds.items()},
                          {(s, k): v for s, cv in results.items() for k, v in cv.train_sizes.items()}, {})


def _runs_of(predictions: pd.DataFrame) -> list[str]:
    """The columns that name one training run of a prediction table: its seed (when it has one) and its fold."""
    return ["seed", "fold"] if "seed" in predictions else ["fold"]


def transfer_summary(runs: Mapping[str, Mapping[str, CrossValResult]], keys: Mapping[str, str], n_classes: int,
                     n_boot: int = 1000, seed: int = 0
                     ) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[float]], dict[str, bool]]:
    """Scratch and pre-trained W-Net per target: accuracy and balanced accuracy pooled over every run's held-out cells
    (each run a fold, or a seed and a fold), with hierarchical intervals (the runs, then their cells within each class),
    epochs trained; the majority-class rate (``{key}_majority_rate``: the accuracy of always answering the commonest
    class, whose balanced accuracy is 1/classes present); the paired differences pre-trained − scratch of both metrics
    (bootstrap over the pooled cells) as ``{key}_pretrained_minus_scratch_{metric}``; each run's plateau (training
    loss)."""
    rows, metrics, ci, plateau = [], {}, {}, {}
    fns = metric_functions(n_classes)
    for title, pair in runs.items():
        key = keys[title]
        first = pair["from scratch"].predictions
        if "seed" in first:  # the target's cells once: the first seed's predictions
            first = first[first["seed"] == first["seed"].iloc[0]]
        y = first["y"].to_numpy()
        counts = np.bincount(y, minlength=n_classes)
        metrics[f"{key}_majority_rate"] = float(counts.max() / counts.sum())
        rows.append({"target": title, "W-Net": "always the commonest class",
                     "accuracy": metrics[f"{key}_majority_rate"],
                     "balanced accuracy": 1 / int((counts > 0).sum()), "cells": len(y)})
        for how, suffix in (("from scratch", "scratch"), ("pre-trained", "pretrained")):
            p = pair[how].predictions
            yt, yp = p["y"].to_numpy(), p["pred"].to_numpy()
            k, n, name = int((yt == yp).sum()), len(p), f"{key}_{suffix}"
            groups = [(part["y"].to_numpy(), part["pred"].to_numpy()) for _, part in p.groupby(_runs_of(p))]
            for metric in ("accuracy", "balanced_accuracy"):
                fn = fns[metric]
                metrics[f"{name}_{metric}"] = float(fn(yt, yp))
                ci[f"{name}_{metric}"] = list(hierarchical_bootstrap(fn, groups, n_boot, seed, stratify=True)[1])
            metrics[f"{name}_epochs"] = float(np.mean([len(h) for h in pair[how].histories.values()]))
            plateau[name] = cv_plateau(pair[how].histories, "train_loss", mode="min")
            rows.append({"target": title, "W-Net": how, "accuracy": k / n, "95% CI low": ci[f"{name}_accuracy"][0],
                         "95% CI high": ci[f"{name}_accuracy"][1],
                         "balanced accuracy": metrics[f"{name}_balanced_accuracy"],
                         "BA 95% CI low": ci[f"{name}_balanced_accuracy"][0],
                         "BA 95% CI high": ci[f"{name}_balanced_accuracy"][1], "epochs": metrics[f"{name}_epochs"],
                         "cells": len(y), "runs": p.groupby(_runs_of(p)).ngroups})
        diff: dict[str, float] = {}
        for metric in ("accuracy", "balanced_accuracy"):
            d, (low, high) = fold_pooled_difference(pair["pre-trained"].predictions, pair["from scratch"].predictions,
                                               n_classes, metric, n_boot, seed)
            metrics[f"{key}_pretrained_minus_scratch_{metric}"], diff[metric] = d, d
            ci[f"{key}_pretrained_minus_scratch_{metric}"] = [low, high]
        lo_a, hi_a = ci[f"{key}_pretrained_minus_scratch_accuracy"]
        lo_b, hi_b = ci[f"{key}_pretrained_minus_scratch_balanced_accuracy"]
        rows.append({"target": title, "W-Net": "difference", "accuracy": diff["accuracy"], "95% CI low": lo_a,
                     "95% CI high": hi_a, "balanced accuracy": diff["balanced_accuracy"], "BA 95% CI low": lo_b,
                     "BA 95% CI high": hi_b, "cells": len(y)})
    columns = ["accuracy", "95% CI low", "95% CI high", "balanced accuracy", "BA 95% CI low", "BA 95% CI high",
               "epochs", "cells", "runs"]
    return pd.DataFrame(rows).set_index(["target", "W-Net"])[columns], metrics, ci, plateau


def wnet_data_sets(fold_column: str, cv_ids: Sequence[int], compare_ids: Sequence[int], pretrained_fold: int,
                   targets: Mapping[str, Sequence[int]]) -> dict[str, dict]:
    """The chapter's models and the data each trained, validated and was scored on, as ``wbcstudy.data.leaks``
    selections of the manifests (for ``write_results(data_sets=...)``: a model scored on an image of its own training
    or validation data is refused). A fold's models train and validate on PBC-5's other folds of ``fold_column`` and
    are scored on the fold (the cross-validated W-Net and, on ``compare_ids``, Table 4's six models: the same cells);
    a transfer model on target fold ``j`` trained on PBC-5 without ``pretrained_fold`` (the pre-trained W-Net; the
    from-scratch one saw less) and on the target's other ``fold5`` folds (``targets``: manifest → fold ids); the
    DCGAN, its judge and the W-Net trained on generated cells learn from PBC-5's train and val splits and are scored
    on its test split. A model's subset of a selection is described by the whole selection: the check can only be
    stricter."""
    def pbc(folds: Sequence[int]) -> dict:
        return {"manifest": "pbc5", "where": {fold_column: [str(f) for f in folds]}}

    out: dict[str, dict] = {}
    for fold in sorted({int(f) for f in [*cv_ids, *compare_ids]}):
        out[f"pbc5_{fold_column}_{fold}"] = {"train": [{"manifest": "pbc5", "except": [pbc([fold])]}],
                                             "eval": {f"PBC-5 {fold_column} {fold}": [pbc([fold])]}}
    for manifest, folds in targets.items():
        for fold in folds:
            held = {"manifest": manifest, "where": {"fold5": [str(fold)]}}
            out[f"transfer_{manifest}_fold{fold}"] = {
                "train": [{"manifest": "pbc5", "except": [pbc([pretrained_fold])]},
                          {"manifest": manifest, "except": [held]}],
                "eval": {f"{manifest} fold5 {fold}": [held]}}
    out["dcgan_judge_synthetic"] = {"train": [{"manifest": "pbc5", "where": {"split": ["train"]}}],
                                    "val": [{"manifest": "pbc5", "where": {"split": ["val"]}}],
                                    "eval": {"PBC-5 test": [{"manifest": "pbc5", "where": {"split": ["test"]}}]}}
    return out


# --------------------------------------------------------------------------- the DCGAN checks
@dataclass
class GanChecks:
    """The paper's first two checks of generated cells, and the real-trained judge they rest on."""

    judge: TrainResult  # W-Net trained on the real training split (stopped and chosen on the real validation split)
    synthetic: TrainResult  # W-Net trained on the generated cells only
    judge_real_pred: np.ndarray  # judge on the real test cells
    fake_pred: np.ndarray  # check 1: judge on the generated cells
    synthetic_real_pred: np.ndarray  # check 2: generated-trained W-Net on the real test cells
    metrics: dict[str, float]
    ci: dict[str, list[float]]
    plateau: dict[str, bool]


def mixed_set_accuracy(real_labels: np.ndarray, real_pred: np.ndarray, fake_labels: np.ndarray, fake_pred: np.ndarray,
                       per_set: int = 50, seed: int = 0) -> tuple[float, tuple[float, float], int]:
    """A rater's cell-type accuracy on a mixed set, as the paper's specialist was scored (§5, Table 8): ``per_set``
    real and ``per_set`` generated cells, each drawn stratified by class (seeded), every cell scored against its true
    or intended class. Returns (accuracy, Wilson 95% interval, cells)."""
    from wbcstudy.data import stratified_subset

    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    rng = np.random.default_rng(seed)
    # about per_set drawn per class; a random few dropped where rounding gave more
    real = rng.permutation(stratified_subset(real_labels, per_set, seed))[:per_set]
    fake = rng.permutation(stratified_subset(fake_labels, per_set, seed + 1))[:per_set]
    hits = np.r_[np.asarray(real_pred)[real] == real_labels[real], np.asarray(fake_pred)[fake] == fake_labels[fake]]
    n = len(hits)
    if n == 0:
        raise ValueError("the mixed set is empty: no real or generated cells")
    return float(hits.mean()), wilson(int(hits.sum()), n), n


def gan_checks(judge: TrainResult, make_model: Callable[[], nn.Module], images: np.ndarray, labels: np.ndarray,
               test_rows: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray, config: TrainConfig, n_classes: int,
               augment: Augment | None = None, n_boot: int = 1000, seed: int = 0) -> GanChecks:
    """Check 1 (the real-trained ``judge`` labels generated cells) and check 2 (a fresh ``make_model()`` trained on the
    generated cells alone, to the plateau of its training loss when ``config.stop_at_plateau``, tested on the real
    test cells); accuracies with Wilson intervals, balanced accuracy with a bootstrap interval."""
    x, y = torch.from_numpy(images), np.asarray(labels, dtype=np.int64)
    torch.manual_seed(seed)
    synthetic = fit(make_model(), (torch.from_numpy(fake), torch.from_numpy(np.asarray(fake_labels, dtype=np.int64))),
                    None, dataclasses.replace(config, monitor="train_loss"), augment=augment, n_classes=n_classes)
    preds = {"judge_real": (y[test_rows], predict_proba(judge.model, x[test_rows]).argmax(1)),
             "generated_classified": (np.asarray(fake_labels),
                                      predict_proba(judge.model, torch.from_numpy(fake)).argmax(1)),
             "synthetic_trained_real": (y[test_rows], predict_proba(synthetic.model, x[test_rows]).argmax(1))}
    metrics, ci = {}, {}
    balanced = metric_functions(n_classes)["balanced_accuracy"]
    for key, (yt, yp) in preds.items():
        k, n = int((yt == yp).sum()), len(yt)
        metrics[f"{key}_accuracy"], ci[f"{key}_accuracy"] = k / n, list(wilson(k, n))
        metrics[f"{key}_balanced_accuracy"] = balanced(yt, yp)
        ci[f"{key}_balanced_accuracy"] = list(bootstrap_metric(balanced, yt, yp, n_boot=n_boot, seed=seed, strata=yt))
    plateau = {"judge": _reached_plateau(judge.history["val_balanced_accuracy"].to_numpy()),
               "synthetic": _reached_plateau(synthetic.history["train_loss"].to_numpy(), mode="min")}
    return GanChecks(judge, synthetic, preds["judge_real"][1], preds["generated_classified"][1],
                     preds["synthetic_trained_real"][1], metrics, ci, plateau)


def generated_cell_score(judge: nn.Module, generator: nn.Module, n_per_class: int, n_classes: int,
                         seed: int = 0) -> dict[str, float]:
    """How recognisable a conditional generator's cells are now: the ``judge``'s accuracy on ``n_per_class`` cells
    generated per class from fixed noise (``seed``), its mean confidence in the intended class, and the seconds taken.

    Called after every DCGAN epoch (``train_dcgan(callback=...)``), it gives the generator a learning curve on the
    same scale as check 1; ``gan_plateau`` reads it.
    """
    from wbcstudy.models.dcgan import generate

    start = time.perf_counter()
    wanted = np.repeat(np.arange(n_classes), n_per_class)
    prob = predict_proba(judge, torch.from_numpy(generate(generator, len(wanted), wanted, seed=seed)))
    return {"judge_accuracy": float((prob.argmax(1) == wanted).mean()),
            "judge_confidence": float(prob[np.arange(len(wanted)), wanted].mean()),
            "monitor_seconds": time.perf_counter() - start}


def gan_plateau(history: Sequence[Mapping[str, float]] | pd.DataFrame, min_epochs: int = 4,
                column: str = "judge_accuracy") -> bool:
    """Whether a DCGAN's ``column`` curve (from ``generated_cell_score``) has reached its plateau after at least
    ``min_epochs`` epochs (``wbcstudy.train.reached_plateau``: window 3, tolerance 0.01)."""
    values = [float(r[column]) for r in history] if not isinstance(history, pd.DataFrame) else history[column].tolist()
    return len(values) >= min_epochs and _reached_plateau(values)


@torch.inference_mode()
def judge_features(model: nn.Sequential, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The 1,024-d features (first FC layer) of an input-adapted W-Net for uint8 NHWC ``images``."""
    net = model.eval().cpu()
    x = torch.from_numpy(images)
    return torch.cat([net[1].embed(net[0](x[i:i + batch_size])).float() for i in range(0, len(x), batch_size)]).numpy()


def realism_summary(judge: nn.Sequential, real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray,
                    fake_labels: np.ndarray, reference: np.ndarray, classes: Sequence[str]
                    ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Check 3 — the cosine-similarity gap per class in pixels and in the judge's features — and the Fréchet distance
    in the judge's features of real vs generated and of real vs a second real sample (``reference``, the floor)."""
    from wbcstudy.realism import cosine_similarity_gap, frechet_distance

    pixel = cosine_similarity_gap(real.astype(np.float64) / 255, real_labels, fake.astype(np.float64) / 255,
                                  fake_labels, classes)
    f_real, f_fake, f_ref = judge_features(judge, real), judge_features(judge, fake), judge_features(judge, reference)
    feature = cosine_similarity_gap(f_real, real_labels, f_fake, fake_labels, classes)
    cols = ["real_real", "real_generated", "gap"]
    table = pd.concat({"pixels": pixel[cols], "W-Net features": feature[cols]}, axis=1)
    table.loc["mean"] = table.mean()
    metrics = {"cosine_gap": float(pixel["gap"].mean()), "cosine_gap_features": float(feature["gap"].mean()),
               "frechet_wnet_generated": frechet_distance(f_real, f_fake),
               "frechet_wnet_real_reference": frechet_distance(f_real, f_ref)}
    return table, metrics


@dataclass
class Parameters:
    """The W-Net chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("wnet", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where wnet.json is written (relative to the project root)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    seed: int = 0  # seeds weight init, shuffling, augmentation, subsets and the GAN
    data_limit: int = 0  # 0: all 10,283 PBC five-class cells; >0: a stratified subset of this many (smoke runs)
    #: px the cropped cells are decoded at; every input below is an exact 2×2-average reduction of it
    image_size: int = 64
    wnet_size: int = 32  # W-Net's input size in the cross-validation and the transfer runs (paper: 128)
    fold_column: str = 'fold5'  # manifest column with the fixed stratified folds ("fold10" for the paper's 10 folds)
    cv_folds: int = 0  # how many of the fold column's folds are held out in turn (0: all of them)
    cv_train_limit: int = 0  # per fold, train on a stratified subset of this many cells of the other folds (0: all)
    val_limit: int = 500  # per fold, validation cells of the other folds (not trained on): stopping and epoch choice
    #: W-Net trains until its validation curve reaches its plateau, at most this long (paper: 500)
    wnet_max_epochs: int = 20
    wnet_lr: float = 0.001  # Adam, constant (paper: Adam 1e-4 at batch 5, about the same rate per training cell)
    dropout: float = 0.4  # drop probability: the paper's "0.6" read as TensorFlow's keep_prob
    batch_size: int = 64  # training batch size (paper: 5)
    compare_size: int = 32  # input size of the Table 4 comparison (all six models; VGG16 needs at least 32 px)
    compare_folds: int = 0  # the comparison holds out the first k folds in turn (0: all of them)
    compare_train_limit: int = 400  # training cells per fold in the comparison (the same cells for every model; 0: all)
    compare_val_limit: int = 250  # validation cells per fold in the comparison (stopping and epoch choice)
    compare_test_limit: int = 500  # held-out cells predicted per fold in the comparison (a stratified subset; 0: all)
    #: each model trains until its validation plateau, at most this many epochs per fold
    compare_max_epochs: int = 30
    alexnet_max_epochs: int = 30  # the same cap for AlexNet (about 1 s per epoch and fold at cpu)
    #: ... but at most this many for VGG16 and ResNet50 (about 5 and 3.5 s per epoch and fold)
    deep_max_epochs: int = 15
    compare_batch_size: int = 32  # batch size in the comparison (more steps for the few cells)
    compare_lr: float = 0.001  # Adam, constant, for every model of the comparison except VGG16
    vgg_lr: float = 0.0001  # Adam for VGG16 (BN): at 1e-3 it did not train in a probe on fold 1's validation cells
    plain_vgg_folds: int = 1  # folds on which VGG16 is also trained with the paper's VGG settings (no batch-norm)
    plain_vgg_train_limit: int = 24  # its training cells, from the other folds: at batch 1 every cell is one step
    plain_vgg_epochs: int = 4  # its epochs (paper: 300)
    plain_vgg_lr: float = 1e-06  # the paper's VGG learning rate (Adam, constant)
    plain_vgg_batch_size: int = 1  # the paper's VGG batch size
    classifier_width: int = 512  # hidden width of AlexNet's and VGG16's FC layers (torchvision: 4096)
    transfer_folds: int = 5  # folds of the target sets (Zheng Dataset 2, BCCD) for scratch vs pre-trained
    #: training/fine-tuning on a target set stops at the plateau of its loss, at most this long
    transfer_max_epochs: int = 40
    transfer_min_steps: int = 150  # ... but not before this many steps (5 per epoch on Zheng Dataset 2, 17 on BCCD)
    transfer_lr: float = 0.001  # Adam, constant, on the target sets
    transfer_batch_size: int = 16  # batch size on the target sets (80 and 273 training cells per fold)
    transfer_seeds: int = 3  # seeds per fold and target (seed, seed+1, ...): weights, shuffling, augmentation
    gan_size: int = 32  # DCGAN resolution in px (paper: 128); image_size must be a multiple of it
    gan_width: int = 32  # base number of filters of generator and discriminator (DCGAN paper: 64)
    gan_batch_size: int = 16  # DCGAN batch size (514 generator steps per epoch over the 8,227 training cells)
    #: DCGAN epochs at most (5,140 generator steps); it stops once the judge's score of its cells reaches its plateau
    gan_max_epochs: int = 10
    gan_min_epochs: int = 4  # ... but not before this many epochs (the plateau rule needs four)
    gan_monitor_per_class: int = 100  # cells generated per class after every epoch for the judge's score
    gan_per_class: int = 1000  # generated cells per class for the checks (paper: 1,000)
    judge_max_epochs: int = 20  # the real-trained judge W-Net: until its validation plateau, at most this long
    synthetic_max_epochs: int = 10  # the W-Net trained on generated cells: until its loss plateau, at most this long
    c2st_epochs: int = 6  # epochs of the real-vs-generated classifier
    n_boot: int = 1000  # bootstrap resamples for intervals over test cells
