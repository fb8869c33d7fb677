"""The baseline chapter's procedures: PBC arrays at several sizes and crops, classifiers trained from the registry
(one seed or several), the test metrics, the learning curves.

A *run* is what ``train_classifier`` returns: the training result (best-validation model,
history, seconds) and the model's class probabilities on the test split. Chapters keep
their runs in a dict keyed by a short model key ("resnet18_28"), which names every metric
("resnet18_28_accuracy") and every entry of the results' ``plateau`` dict. A model trained
with several seeds has one run per seed, keyed ``<model>_seed<k>`` ("resnet18_64_seed0");
``evaluate_seeds`` and ``seed_plateaus`` summarise them under the model's own key.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from wbcstudy.train import TrainConfig, TrainResult, fit, predict_proba, seeded

__all__ = ["Arrays", "Run", "load_pbc_arrays", "split_counts", "train_classifier", "train_seeds", "seed_runs",
           "evaluate_models", "evaluate_seeds", "seeds_accuracy_difference", "plateaus",
           "budget_sensitivity", "seed_plateaus", "histories",
           "run_summary", "plot_learning_curves"]

#: split name ("train", "val", "test") → (uint8 NHWC images, integer labels)
Arrays = dict[str, tuple[torch.Tensor, torch.Tensor]]
#: what ``train_classifier`` returns: the training result and the test-split class probabilities
Run = tuple[TrainResult, np.ndarray]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def load_pbc_arrays(sizes: Iterable[int], train_limit: int = 0, eval_limit: int = 0, seed: int = 0,
                    manifest: str = "pbc8", crops: Mapping[str, tuple[int, str]] | None = None
                    ) -> tuple[dict[int | str, Arrays], list[str]]:
    """The train/val/test splits of ``manifest`` decoded at every size in ``sizes``, and the class names.

    ``sizes`` are taken from the whole 256-px window (crop ``"none"``) and keyed by the size;
    ``crops`` adds views keyed by name: ``{"28_centre200": (28, "centre200")}`` is the 200-px
    centre crop (``wbcstudy.data.cache.PBC_CROPS``) at 28 px. ``train_limit`` / ``eval_limit``
    > 0 keep a stratified subset of that many training / validation and test images (drawn
    with ``seed``; the same cells in every view); 0 keeps all.
    """
    from wbcstudy.data import load_split_arrays, stratified_subset

    views: dict[int | str, tuple[int, str]] = {size: (size, "none") for size in sorted(set(sizes))}
    views.update(crops or {})
    data: dict[int | str, Arrays] = {}
    classes: list[str] = []
    for key, (size, crop) in views.items():
        data[key] = {}
        for split in SPLITS:
            x, y, classes = load_split_arrays(manifest, split, size, crop=crop)
            limit = train_limit if split == "train" else eval_limit
            keep = stratified_subset(y, limit, seed) if limit else np.arange(len(y))
            data[key][split] = (torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep]))
    return data, classes


def split_counts(arrays: Arrays, classes: Sequence[str]) -> pd.DataFrame:
    """Images per class (rows, with a total) and split (columns)."""
    counts = pd.DataFrame({split: np.bincount(np.asarray(arrays[split][1]), minlength=len(classes))
                           for split in arrays},
                          index=list(classes))
    counts.loc["total"] = counts.sum()
    return counts


def train_classifier(name: str, size: int | str, data: Mapping[int | str, Arrays], config: TrainConfig,
                     mean: Sequence[float], std: Sequence[float], n_classes: int,
                     augment: Callable[[torch.Tensor], torch.Tensor] | None = None, **options) -> Run:
    """Train ``models.build(name, n_classes, **options)`` on ``data[size]`` and predict its test split.

    ``size`` is the key of a view of ``load_pbc_arrays`` (a size, or a crop's name). The
    network gets an ``InputAdapter`` (uint8 NHWC → normalised with ``mean``/``std``);
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


def train_seeds(key: str, name: str, size: int | str, data: Mapping[int | str, Arrays], config: TrainConfig,
                mean: Sequence[float], std: Sequence[float], n_classes: int, seeds: Iterable[int],
                augment: Callable[[torch.Tensor], torch.Tensor] | None = None, **options) -> dict[str, Run]:
    """``train_classifier`` once per seed (the config's seed replaced), keyed ``<key>_seed<seed>``.

    Each seed sets the initial weights, the shuffling and the augmentation; the data, the
    schedule and the validation-based choice of epoch are the same for all of them.
    """
    return {f"{key}_seed{s}": train_classifier(name, size, data, replace(config, seed=int(s)), mean, std, n_classes,
                                               augment=augment, **options)
            for s in seeds}


def seed_runs(runs: Mapping[str, Run], key: str) -> dict[str, Run]:
    """The runs of model ``key`` trained by ``train_seeds`` (keys ``<key>_seed<k>``), in their order in ``runs``."""
    return seeded(runs, key)


def evaluate_models(runs: Mapping[str, Run], test_y: np.ndarray | torch.Tensor, n_boot: int = 1000, seed: int = 0,
                    names: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Test metrics of every run, their 95% stratified-bootstrap intervals over test cells, and a table (one row per
    model).

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


def evaluate_seeds(runs: Mapping[str, Run], key: str, test_y: np.ndarray | torch.Tensor, n_boot: int = 1000,
                   seed: int = 0) -> tuple[dict[str, float], dict[str, tuple[float, float]], list[float]]:
    """Model ``key``'s test metrics over its seeds (``seed_runs``): the mean of every seed's metric, and more.

    ``metrics`` holds ``<key>_accuracy``, ``_balanced_accuracy``, ``_macro_f1`` and ``_auroc``
    (means over the seeds), ``<key>_accuracy_sd`` (their standard deviation, ddof 1),
    ``<key>_accuracy_min`` / ``_max`` and ``<key>_train_seconds`` (all seeds together).
    ``ci`` holds hierarchical 95% bootstrap intervals of the mean accuracy, balanced accuracy and
    AUROC (``wbcstudy.intervals.hierarchical_bootstrap``, stratified by class): every resample
    draws the seeds with replacement, then the test cells within each, so that the interval holds
    the seed-to-seed spread as well as the test set's sampling error (interval kind
    "hierarchical"). Also returns the list of the seeds' accuracies.
    """
    from wbcstudy.evaluate import auroc_ovr, classification_metrics
    from wbcstudy.intervals import hierarchical_bootstrap

    chosen = seed_runs(runs, key)
    if not chosen:
        raise ValueError(f"no runs of {key!r} (keys {key}_seed<k>) among {sorted(runs)}")
    y = np.asarray(test_y)
    n_classes = next(iter(chosen.values()))[1].shape[1]
    per_seed = [classification_metrics(y, probs.argmax(1), probs, labels=list(range(n_classes)))
                for _, probs in chosen.values()]
    accuracies = [float(m["accuracy"]) for m in per_seed]
    metrics = {f"{key}_{name}": float(np.mean([m[name] for m in per_seed]))
               for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}
    metrics[f"{key}_accuracy_sd"] = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0
    metrics[f"{key}_accuracy_min"], metrics[f"{key}_accuracy_max"] = min(accuracies), max(accuracies)
    metrics[f"{key}_train_seconds"] = float(sum(result.seconds for result, _ in chosen.values()))
    labels = list(range(n_classes))
    scores = {"accuracy": lambda t, p: float((p.argmax(1) == t).mean()),
              "balanced_accuracy": lambda t, p: float(np.mean([(p[t == c].argmax(1) == c).mean()
                                                              for c in np.unique(t)])),
              "auroc": lambda t, p: auroc_ovr(t, p, labels=labels)}
    groups = [(y, probs) for _, probs in chosen.values()]
    ci = {f"{key}_{name}": hierarchical_bootstrap(fn, groups, n_boot=n_boot, seed=seed, stratify=True, pool=False)[1]
          for name, fn in scores.items()}
    return metrics, ci, accuracies


def seeds_accuracy_difference(runs: Mapping[str, Run], a: str, b: str, test_y: np.ndarray | torch.Tensor,
                              n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean test accuracy of model ``a``'s seeds minus model ``b``'s on the same cells, with an interval that holds
    both the cells' sampling and each side's seed-to-seed spread (``wbcstudy.intervals.seed_cell_difference``:
    cells and, independently per side, seeds drawn with replacement; interval kind "hierarchical")."""
    from wbcstudy.intervals import seed_cell_difference

    y = np.asarray(test_y)
    hits = {}
    for side in (a, b):
        chosen = seed_runs(runs, side)
        if not chosen:
            raise ValueError(f"no runs of {side!r} (keys {side}_seed<k>) among {sorted(runs)}")
        hits[side] = np.stack([(probs.argmax(1) == y).astype(float) for _, probs in chosen.values()])
    return seed_cell_difference(hits[a], hits[b], n_boot=n_boot, seed=seed)


def plateaus(runs: Mapping[str, Run], window: int = 3, tol: float = 0.01) -> dict[str, bool]:
    """Whether each run reached its plateau. A run trained with ``budget_check`` (the warmup-stable-decay schedule)
    is judged by the budget-sensitivity test: doubling its budget changed the validation accuracy by less than
    ``tol`` (``TrainResult.reached_plateau_by_budget``). Any other run by its own history: its validation accuracy
    stopped rising (``wbcstudy.train.reached_plateau``) — which a one-cycle schedule, whose last epoch is nearly
    always its best, cannot show."""
    return {key: result.plateau(tol, window) for key, (result, _) in runs.items()}


def budget_sensitivity(runs: Mapping[str, Run], names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run trained with ``budget_check``: its validation accuracy after a cool-down from half its budget,
    at its full budget, and the gain from doubling it (the budget-sensitivity plateau test's numbers)."""
    names = names or {}
    rows = {names.get(key, key): {"half budget": result.budget_scores["half"],
                                  "full budget": result.budget_scores["full"],
                                  "gain from doubling": result.budget_scores["full"] - result.budget_scores["half"]}
            for key, (result, _) in runs.items() if result.budget_scores}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["half budget", "full budget", "gain from doubling"])


def seed_plateaus(plateau: Mapping[str, bool], key: str) -> bool:
    """Whether every seed of model ``key`` (entries ``<key>_seed<k>`` of a ``plateaus`` dict) reached its plateau."""
    flags = list(seeded(plateau, key).values())
    if not flags:
        raise ValueError(f"no seeds of {key!r} in the plateau record {sorted(plateau)}")
    return all(flags)


def histories(runs: Mapping[str, Run], names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every run's per-epoch history (without timings), stacked with the model's label as the outer index."""
    names = names or {}
    return pd.concat({names.get(key, key): result.history.drop(columns=["seconds"], errors="ignore").set_index("epoch")
                      for key, (result, _) in runs.items()})


def run_summary(runs: Mapping[str, Run], names: Mapping[str, str] | None = None,
                plateau: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """One row per run: trainable parameters, epochs run, best (kept) epoch, its validation accuracy, precision,
    plateau."""
    from wbcstudy.models import count_parameters

    names, plateau = names or {}, plateau or plateaus(runs)
    rows = [{"model": names.get(key, key), "parameters": count_parameters(result.model), "epochs": len(result.history),
             "best epoch": result.best_epoch, "best val accuracy": result.best_score, "precision": result.precision,
             "plateau reached": bool(plateau[key])} for key, (result, _) in runs.items()]
    return pd.DataFrame(rows).set_index("model")


def plot_learning_curves(runs: Mapping[str, Run], names: Mapping[str, str] | None = None,
                         title: str | None = None):
    """Every run's validation accuracy and training loss per epoch, in two panels side by side.

    Runs whose keys differ only in ``_seed<k>`` share a colour (one line per seed, with
    different markers); the legend names the model once. Returns the figure.
    """
    import matplotlib.pyplot as plt

    names = names or {}
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
    colours: dict[str, str] = {}
    markers = "osD^v"
    for key, (result, _) in runs.items():
        model = re.sub(r"_seed\d+$", "", key)
        colour = colours.setdefault(model, f"C{len(colours)}")
        k = sum(1 for other in list(runs)[:list(runs).index(key)] if re.sub(r"_seed\d+$", "", other) == model)
        label = names.get(model, model) if k == 0 else None
        h = result.history
        style = dict(color=colour, marker=markers[k % len(markers)], markersize=4, linewidth=1.2, label=label)
        acc_ax.plot(h["epoch"], h["val_accuracy"], **style)
        loss_ax.plot(h["epoch"], h["train_loss"], **style)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    last = max((int(result.history["epoch"].max()) for result, _ in runs.values()), default=1)
    for ax in (acc_ax, loss_ax):
        ax.set_xticks(range(1, last + 1, max(1, last // 10)))
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


@dataclass
class Parameters:
    """The Baseline chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("baseline", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where baseline.json is written (relative to the project root)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    seed: int = 0  # the first seed: weight init, shuffling and augmentation; every ResNet also runs seed+1, ...
    seeds: int = 3  # independent trainings of every ResNet-18 (the target and the 28-px pair are seed means)
    train_limit: int = 0  # 0: every training image; >0: a stratified subset of this many (smoke runs)
    eval_limit: int = 0  # 0: the whole validation and test splits; >0: stratified subsets
    resnet18_28_epochs: int = 4  # ResNet-18 at 28 px, on each field of view, per seed
    resnet18_64_epochs: int = 6  # ResNet-18 at 64 px, per seed (the budget test compares 3 with 6)
    scheduler: str = 'wsd'  # learning-rate schedule: "wsd" (warm-up, stable, linear cool-down) or "onecycle"
    cooldown: float = 0.2  # "wsd": the share of the steps spent cooling the learning rate down to 0
    #: "wsd": also cool a copy down from half the budget: the budget-sensitivity plateau test (needs 4+ epochs)
    budget_check: bool = True
    plateau_tol: float = 0.01  # a model is at its plateau when doubling its budget gains less validation accuracy
    #: EfficientNet-Lite0 fine-tuned from ImageNet; 0 skips it (the trust chapter compares it at cpu)
    effnet_epochs: int = 0
    effnet_size: int = 64  # EfficientNet-Lite0 input size in px
    #: EfficientNet-Lite0 batch size (fine-tuning gains more from steps than from batch size)
    effnet_batch_size: int = 64
    batch_size: int = 128  # training batch size (128 trains 30-40% faster than 64 on 2 cores)
    lr: float = 0.003  # peak learning rate (AdamW) for the ResNets
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing for the ResNets
    effnet_lr: float = 0.001  # peak learning rate for fine-tuning EfficientNet-Lite0
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
