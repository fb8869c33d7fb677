"""The baseline chapter's procedures: PBC arrays at several sizes, one classifier trained from the registry, the test metrics.

A *run* is what ``train_classifier`` returns: the training result (best-validation model,
history, seconds) and the model's class probabilities on the test split. Chapters keep
their runs in a dict keyed by a short model key ("resnet18_28"), which names every metric
("resnet18_28_accuracy") and every entry of the results' ``plateau`` dict.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from wbcstudy.train import TrainConfig, TrainResult, fit, predict_proba, reached_plateau

__all__ = ["Arrays", "Run", "load_pbc_arrays", "split_counts", "train_classifier", "evaluate_models", "plateaus",
           "histories", "run_summary"]

#: split name ("train", "val", "test") → (uint8 NHWC images, integer labels)
Arrays = dict[str, tuple[torch.Tensor, torch.Tensor]]
#: what ``train_classifier`` returns: the training result and the test-split class probabilities
Run = tuple[TrainResult, np.ndarray]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def load_pbc_arrays(sizes: Iterable[int], train_limit: int = 0, eval_limit: int = 0, seed: int = 0,
                    manifest: str = "pbc8") -> tuple[dict[int, Arrays], list[str]]:
    """The train/val/test splits of ``manifest`` decoded at every size in ``sizes``, and the class names.

    ``train_limit`` / ``eval_limit`` > 0 keep a stratified subset of that many training /
    validation and test images (drawn with ``seed``; the same cells at every size); 0 keeps all.
    """
    from wbcstudy.data import load_split_arrays, stratified_subset

    data: dict[int, Arrays] = {}
    classes: list[str] = []
    for size in sorted(set(sizes)):
        data[size] = {}
        for split in SPLITS:
            x, y, classes = load_split_arrays(manifest, split, size)
            limit = train_limit if split == "train" else eval_limit
            keep = stratified_subset(y, limit, seed) if limit else np.arange(len(y))
            data[size][split] = (torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep]))
    return data, classes


def split_counts(arrays: Arrays, classes: Sequence[str]) -> pd.DataFrame:
    """Images per class (rows, with a total) and split (columns)."""
    counts = pd.DataFrame({split: np.bincount(np.asarray(arrays[split][1]), minlength=len(classes)) for split in arrays},
                          index=list(classes))
    counts.loc["total"] = counts.sum()
    return counts


def train_classifier(name: str, size: int, data: Mapping[int, Arrays], config: TrainConfig,
                     mean: Sequence[float], std: Sequence[float], n_classes: int,
                     augment: Callable[[torch.Tensor], torch.Tensor] | None = None, **options) -> Run:
    """Train ``models.build(name, n_classes, **options)`` on ``data[size]`` and predict its test split.

    The network gets an ``InputAdapter`` (uint8 NHWC → normalised with ``mean``/``std``);
    its initial weights depend only on ``config.seed``, not on what ran before. ``fit``
    keeps the epoch with the best validation accuracy.
    """
    from wbcstudy.models import build, with_input_adapter

    torch.manual_seed(config.seed)
    model = with_input_adapter(build(name, n_classes, **options), mean, std)
    arrays = data[size]
    result = fit(model, arrays["train"], arrays["val"], config, augment=augment, n_classes=n_classes)
    probs = predict_proba(result.model, arrays["test"][0], batch_size=config.eval_batch_size, device=config.device,
                          precision=config.precision)
    return result, probs


def evaluate_models(runs: Mapping[str, Run], test_y: np.ndarray | torch.Tensor, n_boot: int = 1000, seed: int = 0,
                    names: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Test metrics of every run, their 95% stratified-bootstrap intervals over test cells, and a table (one row per model).

    ``metrics`` holds ``<key>_accuracy``, ``_balanced_accuracy``, ``_macro_f1``, ``_auroc`` and
    ``_train_seconds``; ``ci`` holds intervals for accuracy, balanced accuracy and AUROC.
    ``names`` gives the table's model labels (default: the keys).
    """
    from wbcstudy.evaluate import metrics_with_ci

    y = np.asarray(test_y)
    names = names or {}
    metrics: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    rows = []
    for key, (result, probs) in runs.items():
        m, c = metrics_with_ci(y, probs, labels=list(range(probs.shape[1])), n_boot=n_boot, seed=seed)
        for metric in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
            metrics[f"{key}_{metric}"] = float(m[metric])
        for metric in ("accuracy", "balanced_accuracy", "auroc"):
            ci[f"{key}_{metric}"] = (float(c[metric][0]), float(c[metric][1]))
        metrics[f"{key}_train_seconds"] = float(result.seconds)
        rows.append({"model": names.get(key, key), "accuracy": m["accuracy"],
                     "accuracy 95% CI": "[{:.3f}, {:.3f}]".format(*c["accuracy"]),
                     "balanced accuracy": m["balanced_accuracy"], "macro F1": m["macro_f1"], "AUROC": m["auroc"],
                     "AUROC 95% CI": "[{:.4f}, {:.4f}]".format(*c["auroc"])})
    return metrics, ci, pd.DataFrame(rows).set_index("model")


def plateaus(runs: Mapping[str, Run], window: int = 3, tol: float = 0.01) -> dict[str, bool]:
    """Whether each run's validation accuracy reached its plateau (``wbcstudy.train.reached_plateau``)."""
    return {key: reached_plateau(result.history["val_accuracy"].tolist(), window=window, tol=tol)
            for key, (result, _) in runs.items()}


def histories(runs: Mapping[str, Run], names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every run's per-epoch history (without timings), stacked with the model's label as the outer index."""
    names = names or {}
    return pd.concat({names.get(key, key): result.history.drop(columns=["seconds"], errors="ignore").set_index("epoch")
                      for key, (result, _) in runs.items()})


def run_summary(runs: Mapping[str, Run], names: Mapping[str, str] | None = None,
                plateau: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """One row per run: trainable parameters, epochs run, best (kept) epoch, its validation accuracy, precision, plateau."""
    from wbcstudy.models import count_parameters

    names, plateau = names or {}, plateau or plateaus(runs)
    rows = [{"model": names.get(key, key), "parameters": count_parameters(result.model), "epochs": len(result.history),
             "best epoch": result.best_epoch, "best val accuracy": result.best_score, "precision": result.precision,
             "plateau reached": bool(plateau[key])} for key, (result, _) in runs.items()]
    return pd.DataFrame(rows).set_index("model")
