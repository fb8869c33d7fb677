"""The CytoDiffusion chapter's procedures, each made of the shared rooms.

Data at the chapter's resolution; one diffusion training run and one discriminative baseline run with the chapter's
recipe; metrics pooled over test cells with bootstrap intervals (and paired intervals for "generative beats
discriminative" differences); the Turing-test substitutes; the choice of the per-timestep weighting; the anomaly,
domain-shift and low-data experiments; and the GPU training-budget run (``scaling_run``) that the chapter's ``gpu``
profile executes.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from wbcstudy.diffusion_classifier import (
    DiffusionClassification,
    accuracy_after_each_trial,
    diffusion_classify,
    poly4_weights,
    predictions_after_each_trial,
)
from wbcstudy.evaluate import metrics_with_ci, one_hot
from wbcstudy.intervals import bootstrap_difference, bootstrap_metric, wilson
from wbcstudy.models.diffusion import (
    ClassConditionalUNet,
    DiffusionTrainConfig,
    DiffusionTrainResult,
    UNetConfig,
    make_scheduler,
    train_diffusion,
)
from wbcstudy.train import reached_plateau

Images = torch.Tensor  # uint8 NHWC
Weighting = str | Sequence[float]

#: Where the recorded GPU training-budget measurement lives (written by :func:`scaling_run` under the ``gpu`` profile).
SCALING_FILE = "cytodiffusion_scaling.json"


@contextmanager
def timed(seconds: dict[str, float], part: str):
    """Add the wall-clock seconds of the ``with`` block to ``seconds[part]`` (the chapter's table of seconds per
    part)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------- data
def pool_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images average-pooled to ``size`` px (e.g. 64 → 32 px: each output pixel the rounded 2×2 mean)."""
    x = torch.as_tensor(np.ascontiguousarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 NHWC images, got {x.dtype} {tuple(x.shape)}")
    if x.shape[1] == size and x.shape[2] == size:
        return x
    pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2).float(), size)
    return pooled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def load_arrays(manifest: str, split: str | None, image_size: int, seed: int = 0, classes: list[str] | None = None,
                limit: int = 0, rows: np.ndarray | None = None) -> tuple[Images, torch.Tensor, list[str]]:
    """A split decoded at 64 px and pooled to ``image_size``: images, labels and class names.

    ``rows`` keeps those rows of the split first; ``limit`` > 0 then keeps a stratified subset (seeded).
    """
    from wbcstudy.data import load_split_arrays, stratified_subset

    x, y, names = load_split_arrays(manifest, split, 64, classes=classes)
    if rows is not None:
        x, y = x[rows], y[rows]
    keep = stratified_subset(y, limit, seed) if limit else np.arange(len(y))
    return pool_images(x[keep], image_size), torch.from_numpy(np.asarray(y[keep])), list(names)


# ------------------------------------------------------------------------------------------------------- training
@dataclass
class DiffusionModelConfig:
    """The chapter's diffusion model and training recipe (its parameters cell), shared by every diffusion run."""

    image_size: int = 32
    unet_channels: tuple[int, ...] = (16, 32, 32, 64)
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.995
    precision: str = "auto"  # "fp32", "bf16" or "auto" (wbcstudy.train.select_precision)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.unet_channels = tuple(int(c) for c in self.unet_channels)


def train_diffusion_model(images: Images, labels: torch.Tensor, n_classes: int, steps: int,
                          recipe: DiffusionModelConfig,
                          seed: int = 0, checkpoint: str | Path | None = None, stop_after_step: int | None = None,
                          total_steps: int | None = None) -> DiffusionTrainResult:
    """Train a fresh class-conditional UNet (weights seeded by ``seed``) for ``steps`` steps with the recipe.

    ``total_steps``/``stop_after_step``/``checkpoint`` let a run be continued in segments (the scaling run).
    """
    from wbcstudy.train import select_device

    total = total_steps or steps
    torch.manual_seed(seed)
    model = ClassConditionalUNet(UNetConfig(image_size=recipe.image_size, n_classes=n_classes,
                                            block_out_channels=recipe.unet_channels))
    cfg = DiffusionTrainConfig(steps=total, batch_size=recipe.batch_size, lr=recipe.lr,
                               warmup_steps=min(recipe.warmup_steps, total), ema_decay=recipe.ema_decay, seed=seed,
                               log_every=max(1, steps // 20), precision=recipe.precision, checkpoint=checkpoint,
                               checkpoint_every=total, stop_after_step=stop_after_step)
    return train_diffusion(model, images, labels, cfg, make_scheduler(), device=select_device(recipe.device))


#: A diffusion loss has levelled off when its last logged points improve its best by less than this share of it.
DIFFUSION_PLATEAU_TOL = 0.02


def diffusion_plateau(run: DiffusionTrainResult) -> bool:
    """Whether a diffusion model's training-loss curve (about 20 logged points) has levelled off.

    The tolerance is relative (2% of the lowest loss): the ε-prediction loss is a few hundredths, so the absolute
    0.01 that suits an accuracy would call any curve flat. (Measured: with the absolute tolerance, the chapter's
    500-step model counted as converged, while the same model trained to 6,000 steps on a GPU went from 0.63 to
    0.92 balanced accuracy.)
    """
    losses = [float(v) for v in run.history["loss"] if v == v]
    if not losses:
        return False
    return reached_plateau(losses, mode="min", tol=DIFFUSION_PLATEAU_TOL * min(losses))


#: A baseline has reached its plateau when doubling its budget (the budget-sensitivity test) changes its validation
#: accuracy by less than this.
BASELINE_PLATEAU_TOL = 0.01


@dataclass
class BaselineRun:
    """A trained discriminative baseline: the model (best validation epoch), its history, whether it plateaued and,
    with the budget test, its validation accuracy after a cool-down from half its budget and at the full budget."""

    name: str
    model: torch.nn.Module
    history: pd.DataFrame
    plateau: bool
    budget_scores: dict[str, float] = field(default_factory=dict)


def build_classifier(kind: str, n_classes: int, train_images: Images) -> tuple[torch.nn.Module, float]:
    """A baseline from ``wbcstudy.models.build`` and its learning rate: ``resnet18`` (from scratch, normalised by the
    training images' channel statistics, lr 0.003) or ``efficientnet_lite0`` (ImageNet weights, ImageNet
    normalisation, lr 0.001)."""
    from wbcstudy.data import channel_mean_std
    from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD, build, with_input_adapter

    if kind == "resnet18":
        mean, std = channel_mean_std(train_images.numpy())
        return with_input_adapter(build("resnet18", n_classes), mean, std), 0.003
    if kind == "efficientnet_lite0":
        return with_input_adapter(build("efficientnet_lite0", n_classes, pretrained=True), IMAGENET_MEAN,
                                  IMAGENET_STD), 0.001
    raise ValueError(f"unknown baseline {kind!r}: use 'resnet18' or 'efficientnet_lite0'")


def train_baseline(train: tuple[Images, torch.Tensor], val: tuple[Images, torch.Tensor], n_classes: int,
                   kind: str = "resnet18", epochs: int = 2, batch_size: int = 128, seed: int = 0,
                   precision: str = "auto", budget_check: bool = False) -> BaselineRun:
    """Train a baseline with ``wbcstudy.train.fit`` (AdamW, weight decay 0.05, flips and 90° rotations), keeping its
    best validation epoch.

    With ``budget_check`` (at least 4 epochs) the schedule is warm-up-stable-decay and a copy is cooled down from half
    the budget: ``plateau`` is the budget-sensitivity test (doubling the budget changed validation accuracy by less
    than ``BASELINE_PLATEAU_TOL``). Without it (one-cycle schedule) ``plateau`` is judged on the validation curve.
    """
    from wbcstudy.augment import flips_and_rot90
    from wbcstudy.train import TrainConfig, fit

    torch.manual_seed(seed)
    model, lr = build_classifier(kind, n_classes, train[0])
    budget_check = budget_check and epochs >= 4
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.05, seed=seed, progress=False,
                      precision=precision, scheduler="wsd" if budget_check else "onecycle", budget_check=budget_check)
    result = fit(model, train, val, cfg, augment=flips_and_rot90, n_classes=n_classes)
    return BaselineRun(kind, result.model.eval(), result.history, result.plateau(BASELINE_PLATEAU_TOL),
                       dict(result.budget_scores))


@torch.no_grad()
def logits(model: torch.nn.Module, images: Images, batch_size: int = 256) -> np.ndarray:
    """(N, classes) float logits of a baseline for uint8 NHWC images, in batches."""
    from wbcstudy.train import logits_of

    model.eval()
    device = next(model.parameters()).device
    out = [logits_of(model(images[i:i + batch_size].to(device))).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def top2_logit_gap(scores: np.ndarray) -> np.ndarray:
    """Largest minus second-largest logit per row (the paper's ViT confidence)."""
    top2 = np.sort(np.asarray(scores, dtype=float), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def restricted_argmax(scores: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
    """Per row, the candidate class with the largest score (a discriminative model restricted to the classes a test
    set has, as ``diffusion_classify(candidates=...)`` restricts the diffusion classifier)."""
    cand = np.asarray(list(candidates), dtype=int)
    if len(cand) < 1:
        raise ValueError("need at least one candidate class")
    return cand[np.asarray(scores)[:, cand].argmax(axis=1)]


def majority_rate(labels: np.ndarray) -> float:
    """The share of the most frequent class: the accuracy of always predicting it (a below-chance reference)."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


# -------------------------------------------------------------------------------------------- metrics, intervals
def balanced_accuracy_with_ci(y_parts: Sequence[np.ndarray], pred_parts: Sequence[np.ndarray], n_classes: int,
                              n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Balanced accuracy of predictions pooled over test sets or repeats, with a bootstrap interval over the cells."""
    m, c = metrics_with_ci(np.concatenate(y_parts), one_hot(np.concatenate(pred_parts), n_classes),
                           labels=list(range(n_classes)), n_boot=n_boot, seed=seed)
    return float(m["balanced_accuracy"]), tuple(map(float, c["balanced_accuracy"]))


def metric_difference(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray, a: np.ndarray,
                      b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """metric(y, a) − metric(y, b) on the same cells, with its 95% paired bootstrap interval
    (``wbcstudy.intervals.bootstrap_difference``, resampled within each class so every resample keeps every class)."""
    y_true, a, b = np.asarray(y_true), np.asarray(a), np.asarray(b)
    point = float(metric(y_true, a) - metric(y_true, b))
    return point, bootstrap_difference(metric, y_true, a, b, n_boot=n_boot, seed=seed, strata=True)


def comparison(name: str, y_parts: Sequence[np.ndarray], ours: Sequence[np.ndarray], baseline: Sequence[np.ndarray],
               n_classes: int, n_boot: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, tuple]]:
    """Pooled balanced accuracies of CytoDiffusion and a baseline and their paired difference, as results entries:
    ``<name>_balanced_accuracy``, ``baseline_<name>_balanced_accuracy``, ``<name>_balanced_accuracy_difference``."""
    y = np.concatenate(y_parts)
    a, b = np.concatenate(ours), np.concatenate(baseline)
    metrics, ci = {}, {}
    for key, pred in ((f"{name}_balanced_accuracy", a), (f"baseline_{name}_balanced_accuracy", b)):
        metrics[key], ci[key] = balanced_accuracy_with_ci([y], [pred], n_classes, n_boot, seed)
    key = f"{name}_balanced_accuracy_difference"
    metrics[key], ci[key] = metric_difference(balanced_accuracy_score, y, a, b, n_boot, seed)
    return metrics, ci


def anomaly_comparison(is_anomaly: np.ndarray, ours_confidence: np.ndarray, baseline_gap: np.ndarray,
                       n_boot: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, tuple]]:
    """ROC AUCs of low confidence as an anomaly score (ours, the baseline's logit gap) and their paired difference."""
    flag = np.asarray(is_anomaly).astype(int)
    metrics, ci = {}, {}
    for key, score in (("anomaly_auc", -np.asarray(ours_confidence)),
                       ("baseline_anomaly_auc", -np.asarray(baseline_gap))):
        metrics[key] = float(roc_auc_score(flag, score))
        # within normal / anomalous
        ci[key] = bootstrap_metric(roc_auc_score, flag, score, n_boot=n_boot, seed=seed, strata=True)
    metrics["anomaly_auc_difference"], ci["anomaly_auc_difference"] = metric_difference(
        roc_auc_score, flag, -np.asarray(ours_confidence), -np.asarray(baseline_gap), n_boot, seed)
    return metrics, ci


def indomain_comparison(y_true: np.ndarray, ours: np.ndarray, baselines: dict[str, np.ndarray], n_classes: int,
                        n_boot: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, tuple], str]:
    """In-domain accuracy and balanced accuracy of CytoDiffusion and each baseline, the best baseline (by balanced
    accuracy) as ``baseline_indomain_*``, and the paired difference to it; returns (metrics, ci, best baseline)."""
    metrics, ci = {}, {}
    for prefix, pred in {"indomain": ours, **{f"baseline_{n}_indomain": p for n, p in baselines.items()}}.items():
        m, c = metrics_with_ci(y_true, one_hot(pred, n_classes), labels=list(range(n_classes)), n_boot=n_boot,
                               seed=seed)
        for name in ("accuracy", "balanced_accuracy"):
            metrics[f"{prefix}_{name}"], ci[f"{prefix}_{name}"] = float(m[name]), tuple(map(float, c[name]))
    best = max(baselines, key=lambda n: metrics[f"baseline_{n}_indomain_balanced_accuracy"])  # the first of equals
    for name in ("accuracy", "balanced_accuracy"):
        metrics[f"baseline_indomain_{name}"] = metrics[f"baseline_{best}_indomain_{name}"]
        ci[f"baseline_indomain_{name}"] = ci[f"baseline_{best}_indomain_{name}"]
    metrics["indomain_balanced_accuracy_difference"], ci["indomain_balanced_accuracy_difference"] = metric_difference(
        balanced_accuracy_score, y_true, ours, baselines[best], n_boot, seed)
    return metrics, ci, best


def turing_substitutes(real: np.ndarray, generated: np.ndarray, generated_labels: np.ndarray,
                       judged_labels: np.ndarray) -> tuple[dict[str, float], dict[str, tuple], int]:
    """The experts' Turing test replaced by machines: a classifier two-sample test (pixel logistic regression,
    k-fold cross-validated accuracy of telling real from generated; 0.5 = indistinguishable) and the agreement of a
    discriminative classifier's label for each generated image with its conditioning class; Wilson intervals.
    Returns (metrics, ci, folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    r = np.asarray(real, dtype=float).reshape(len(real), -1) / 255.0
    g = np.asarray(generated, dtype=float).reshape(len(generated), -1) / 255.0
    x, y = np.concatenate([r, g]), np.r_[np.zeros(len(r)), np.ones(len(g))]
    folds = int(min(5, len(r), len(g)))  # stratified, unshuffled folds
    c2st = float(cross_val_score(LogisticRegression(max_iter=2000, C=0.1), x, y, cv=folds).mean())
    agree = np.asarray(judged_labels) == np.asarray(generated_labels)
    metrics = {"c2st_accuracy": c2st, "class_agreement": float(agree.mean())}
    ci = {"c2st_accuracy": wilson(round(c2st * len(y)), len(y)),
          "class_agreement": wilson(int(agree.sum()), len(agree))}
    return metrics, ci, folds


# --------------------------------------------------------------------------------------------- the classifier
@dataclass
class DiffusionClassifierConfig:
    """How every test cell is classified (the chapter's trials, pruning and batching knobs, and the weighting)."""

    max_trials: int = 40
    min_trials: int = 20
    images_per_call: int = 8
    weighting: Weighting = "poly4"
    precision: str = "auto"

    def classify(self, model: ClassConditionalUNet, images: Images, n_classes: int, seed: int = 0,
                 **overrides) -> DiffusionClassification:
        """``diffusion_classify`` with these settings (``overrides`` replace any of its keyword arguments)."""
        kwargs = dict(max_trials=self.max_trials, min_trials=self.min_trials, images_per_call=self.images_per_call,
                      weighting=self.weighting, precision=self.precision, seed=seed)
        return diffusion_classify(model, images, make_scheduler(), n_classes, **{**kwargs, **overrides})


@dataclass
class WeightingChoice:
    """The per-timestep weighting chosen on validation errors, and what each candidate scored."""

    name: str
    weighting: Weighting
    candidates: dict[str, Weighting]
    validation_accuracy: dict[str, float]
    refit_note: str


def choose_weighting(raw_errors: np.ndarray, timesteps: np.ndarray, labels: np.ndarray,
                     refitted: Sequence[float]) -> WeightingChoice:
    """Choose among the refitted poly4 (dropped when it is not positive on [0, 1]), the paper's poly4 and the uniform
    weighting by the accuracy after the last trial of kept, unpruned validation errors; ties go to that order."""
    candidates: dict[str, Weighting] = {"refitted poly4": list(map(float, refitted)), "paper's poly4": "poly4",
                                        "uniform": "uniform"}
    try:
        poly4_weights(np.arange(1000), refitted)
        note = "positive on [0, 1]"
    except ValueError as err:  # a fit that crosses zero cannot weight
        del candidates["refitted poly4"]
        note = f"not usable ({err})"
    accuracy = {name: float(accuracy_after_each_trial(raw_errors, timesteps, labels, w)[-1])
                for name, w in candidates.items()}
    name = max(candidates, key=accuracy.get)  # max keeps the first of equals
    return WeightingChoice(name, candidates[name], candidates, accuracy, note)


def subset_result(result: DiffusionClassification, rows: np.ndarray) -> DiffusionClassification:
    """The rows ``rows`` of a classification (seconds shared out by the rows' UNet evaluations)."""
    rows = np.asarray(rows)
    share = result.unet_evaluations[rows].sum() / max(1, result.unet_evaluations.sum())
    return DiffusionClassification(
        predictions=result.predictions[rows], confidence=result.confidence[rows],
        normalised_errors=result.normalised_errors[rows], unet_evaluations=result.unet_evaluations[rows],
        trials=result.trials[rows], class_trials=result.class_trials[rows], timesteps=result.timesteps,
        raw_errors=None if result.raw_errors is None else result.raw_errors[rows], seconds=result.seconds * share)


def classification_cost(result: DiffusionClassification, unpruned: DiffusionClassification,
                        pruned: DiffusionClassification, n_classes: int, max_trials: int) -> dict[str, float]:
    """What classifying costs: seconds and UNet passes per image (``result``: the test cells, with pruning), and what
    pruning saves and changes on the same cells run ``unpruned`` and ``pruned`` (same images, same noise)."""
    if len(unpruned.predictions) != len(pruned.predictions):
        raise ValueError(f"{len(unpruned.predictions)} unpruned but {len(pruned.predictions)} pruned cells")
    seconds = result.seconds / len(result.predictions)
    return {"seconds_per_image": seconds, "images_per_second": 1 / seconds,
            "unet_evaluations_per_image_pruned": float(result.unet_evaluations.mean()),
            "unet_evaluations_per_image_unpruned": float(n_classes * max_trials),
            "pruning_unet_call_reduction": float(unpruned.unet_evaluations.sum() / pruned.unet_evaluations.sum()),
            "pruned_vs_unpruned_agreement": float((unpruned.predictions == pruned.predictions).mean()),
            "pruning_check_cells": float(len(pruned.predictions))}


def learning_curves_figure(diffusion: dict[str, pd.DataFrame], baselines: dict[str, pd.DataFrame], title: str):
    """One figure: each diffusion run's training loss against steps (left), each baseline's validation accuracy
    against epochs (right), so a reader sees whether every model levelled off."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    for name, history in diffusion.items():
        left.plot(history["step"], history["loss"], marker=".", label=name)
    for name, history in baselines.items():
        right.plot(history["epoch"], history["val_accuracy"], marker="o", label=name)
    left.set(xlabel="training step", ylabel="min-SNR-5 weighted ε-MSE", title="Diffusion models: training loss")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="Baselines: validation accuracy")
    right.xaxis.get_major_locator().set_params(integer=True)
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------- experiments
@dataclass
class ShiftOrLowDataResult:
    """Per-run rows, the pooled metrics and intervals, every model's learning curve (run name → history), and per
    model kind whether every run of it reached its plateau (e.g. ``shift_diffusion``, ``lowdata_150_resnet18``)."""

    rows: pd.DataFrame
    metrics: dict[str, float]
    ci: dict[str, tuple]
    diffusion_histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    baseline_histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    plateau: dict[str, bool] = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)  # shift: set name → (labels, ours, baseline)


@dataclass
class CheckpointRun:
    """One diffusion model trained until its held-out balanced accuracy stops rising (:func:`train_to_plateau`).

    ``result``: the model at the last checkpoint trained (its history covers every step); ``curve``: one row per
    checkpoint (step, seconds, training loss, validation accuracy and balanced accuracy, the Turing-test substitutes
    of its samples); ``samples``: step → DDIM samples (``sample_labels`` their conditioning classes); ``validation``:
    the last checkpoint's unpruned validation classification (raw errors kept, for the weighting choice);
    ``plateau``: whether the last checkpoint gained less than ``min_gain`` over the one before.
    """

    result: DiffusionTrainResult
    curve: pd.DataFrame
    samples: dict[int, np.ndarray]
    sample_labels: np.ndarray
    validation: DiffusionClassification
    plateau: bool
    #: the last checkpoint's Turing-test substitutes: (metrics, Wilson intervals, folds), or None without a judge
    turing: tuple[dict[str, float], dict[str, tuple], int] | None = None


def train_to_plateau(train: tuple[Images, torch.Tensor], val: tuple[Images, torch.Tensor], n_classes: int,
                     recipe: DiffusionModelConfig, eval_steps: Sequence[int], settings: DiffusionClassifierConfig,
                     seed: int = 0, eval_trials: int = 50, min_gain: float = 0.01,
                     judge: Callable[[np.ndarray], np.ndarray] | None = None, real_images: np.ndarray | None = None,
                     samples_per_class: int = 16, ddim_steps: int = 25,
                     checkpoint: str | Path | None = None) -> CheckpointRun:
    """Train one class-conditional model in segments up to each of ``eval_steps`` (one run continued from its
    checkpoint: the learning rate is constant after warm-up, so stopping at any checkpoint is the same run cut short)
    and, at each, classify the validation cells ``val`` without pruning (``eval_trials`` trials, the settings'
    weighting) and draw ``samples_per_class`` DDIM samples per class. With ``judge`` (images → predicted classes) and
    ``real_images``, each checkpoint's samples get the Turing-test substitutes (:func:`turing_substitutes`).

    Training stops after the first checkpoint whose validation balanced accuracy gained less than ``min_gain`` over the
    previous one (that model is kept: the gain is measured, not predicted); reaching the last step count while still
    gaining leaves ``plateau`` False.
    """
    import tempfile

    from wbcstudy.models.diffusion import ddim_sample

    steps = sorted({int(s) for s in eval_steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"need positive checkpoint step counts, got {list(eval_steps)}")
    tmp = None
    if checkpoint is None:
        tmp = tempfile.TemporaryDirectory()
        checkpoint = Path(tmp.name) / "diffusion.pt"
    ckpt = Path(checkpoint)
    ckpt.unlink(missing_ok=True)
    val_y = val[1].numpy()
    labels = np.repeat(np.arange(n_classes), samples_per_class)
    rows, samples, previous, plateau = [], {}, None, False
    run = validation = turing_record = None
    try:
        for s in steps:
            start = time.perf_counter()
            run = train_diffusion_model(*train, n_classes, s, recipe, seed=seed, checkpoint=ckpt, stop_after_step=s,
                                        total_steps=steps[-1])
            trained = time.perf_counter() - start
            start = time.perf_counter()
            validation = settings.classify(run.ema_model, val[0], n_classes, seed, prune=False, keep_errors=True,
                                           max_trials=eval_trials)
            ba = float(balanced_accuracy_score(val_y, validation.predictions))
            row = {"step": run.steps_done, "train seconds": trained, "loss": float(run.history["loss"].iloc[-1]),
                   "val accuracy": float((validation.predictions == val_y).mean()), "val balanced accuracy": ba}
            if samples_per_class:
                samples[run.steps_done] = ddim_sample(run.ema_model, labels, run.scheduler, steps=ddim_steps,
                                                      seed=seed)
                if judge is not None and real_images is not None:
                    turing_record = turing_substitutes(real_images, samples[run.steps_done], labels,
                                                       judge(samples[run.steps_done]))
                    row.update(c2st_accuracy=turing_record[0]["c2st_accuracy"],
                               class_agreement=turing_record[0]["class_agreement"])
            row["evaluation seconds"] = time.perf_counter() - start
            rows.append(row)
            if previous is not None and ba - previous < min_gain:
                plateau = True
                break
            previous = ba
    finally:
        ckpt.unlink(missing_ok=True)
        if tmp is not None:
            tmp.cleanup()
    return CheckpointRun(run, pd.DataFrame(rows), samples, labels, validation, plateau, turing_record)


def shift_comparison(model: ClassConditionalUNet, baseline: torch.nn.Module,
                     test_sets: dict[str, tuple[Images, np.ndarray]], candidates: Sequence[int],
                     settings: DiffusionClassifierConfig, n_classes: int, seed: int = 0,
                     n_boot: int = 1000) -> ShiftOrLowDataResult:
    """The in-domain models on other laboratories' cells, both restricted to ``candidates`` (the classes the shifted
    sets have): per set its balanced accuracies, chance level (1 / candidates) and majority-class rate, and the
    predictions; the headline pools every set's cells (``domain_shift_*`` and their paired difference).
    ``test_sets`` labels are indices into the models' classes."""
    rows, ys, ours, base = [], [], [], []
    out = ShiftOrLowDataResult(pd.DataFrame(), {}, {})
    for name, (x, y) in test_sets.items():
        y = np.asarray(y)
        if not set(np.unique(y)) <= {int(c) for c in candidates}:
            raise ValueError(f"test set {name!r} has classes {sorted(set(np.unique(y)))} outside the candidates "
                             f"{list(candidates)}")
        pred = settings.classify(model, x, n_classes, seed=seed, candidates=candidates).predictions
        base_pred = restricted_argmax(logits(baseline, x), candidates)
        rows.append({"test set": name, "n": len(y), "chance": 1 / len(candidates), "majority class": majority_rate(y),
                     "CytoDiffusion (ours)": balanced_accuracy_score(y, pred),
                     "ResNet-18": balanced_accuracy_score(y, base_pred)})
        out.predictions[name] = (y, pred, base_pred)
        ys.append(y)
        ours.append(pred)
        base.append(base_pred)
    out.rows = pd.DataFrame(rows).set_index("test set")
    out.metrics, out.ci = comparison("domain_shift", ys, ours, base, n_classes, n_boot, seed)
    return out


def lowdata_subset_rows(subset_column: pd.Series, size: int) -> np.ndarray:
    """Rows of the low-data training split in the subset of ``size`` per class (a subset_r* column holds the smallest
    subset each cell belongs to)."""
    return np.flatnonzero((subset_column <= size).fillna(False).to_numpy(dtype=bool))


def lowdata_train_subsets(image_size: int, classes: list[str]) -> Callable[[int, int], tuple[Images, torch.Tensor]]:
    """``(size, r) → (images, labels)``: the low-data manifest's training subset r of ``size`` cells per class."""
    from wbcstudy.data import load_manifest

    train_rows = load_manifest("pbc_lowdata").query("split == 'train'")

    def subset(size: int, r: int) -> tuple[Images, torch.Tensor]:
        rows = lowdata_subset_rows(train_rows[f"subset_r{r}"], size)
        return load_arrays("pbc_lowdata", "train", image_size, classes=classes, rows=rows)[:2]

    return subset


def baseline_epochs_for(steps: int, batch_size: int, train_cells: int, min_epochs: int) -> int:
    """Epochs that show a baseline as many training images as the diffusion model's ``steps`` × ``batch_size``."""
    return max(min_epochs, math.ceil(steps * batch_size / train_cells))


def low_data(train_subsets: Callable[[int, int], tuple[Images, torch.Tensor]], val: tuple[Images, torch.Tensor],
             test: tuple[Images, torch.Tensor], n_classes: int, sizes: Sequence[int], steps: Sequence[int],
             recipe: DiffusionModelConfig, settings: DiffusionClassifierConfig, repeats: int | Sequence[int] = 1,
             seed: int = 0, baseline_min_epochs: int = 2, baseline_batch_size: int = 128,
             n_boot: int = 1000) -> ShiftOrLowDataResult:
    """Per subset size (with its diffusion step count) and repeat r (``repeats``: one count, or one per size): train
    a diffusion model and a ResNet-18 on ``train_subsets(size, r)`` (the baseline sees as many images as the
    diffusion model, at least ``baseline_min_epochs`` epochs, with the budget test from 4 epochs on) and classify the
    same test cells; per size, the repeats' predictions are pooled into ``lowdata_<size>_*`` balanced accuracies and
    their paired difference."""
    if len(sizes) != len(steps):
        raise ValueError(f"{len(sizes)} subset sizes but {len(steps)} step counts")
    per_size = [int(repeats)] * len(sizes) if isinstance(repeats, int) else [int(r) for r in repeats]
    if len(per_size) != len(sizes) or min(per_size) < 1:
        raise ValueError(f"need one positive repeat count per subset size, got {repeats!r} for {list(sizes)}")
    rows = []
    out = ShiftOrLowDataResult(pd.DataFrame(), {}, {})
    test_y = test[1].numpy()
    for size, n_steps, size_repeats in zip(sizes, steps, per_size):
        ours, base = [], []
        for r in range(size_repeats):
            x, y = train_subsets(size, r)
            epochs = baseline_epochs_for(n_steps, recipe.batch_size, len(y), baseline_min_epochs)
            diffusion = train_diffusion_model(x, y, n_classes, n_steps, recipe, seed=seed + r)
            baseline = train_baseline((x, y), val, n_classes, epochs=epochs, batch_size=baseline_batch_size,
                                      seed=seed + r, precision=recipe.precision, budget_check=True)
            out.diffusion_histories[f"{size} per class, r{r}"] = diffusion.history
            out.baseline_histories[f"{size} per class, r{r}"] = baseline.history
            for model_name, reached in ((f"lowdata_{size}_diffusion", diffusion_plateau(diffusion)),
                                        (f"lowdata_{size}_resnet18", baseline.plateau)):
                out.plateau[model_name] = out.plateau.get(model_name, True) and reached
            pred = settings.classify(diffusion.ema_model, test[0], n_classes, seed=seed + r).predictions
            base_pred = logits(baseline.model, test[0]).argmax(1)
            rows.append({"per class": size, "repeat": r, "train cells": len(y), "ResNet-18 epochs": epochs,
                         "CytoDiffusion (ours)": balanced_accuracy_score(test_y, pred),
                         "ResNet-18": balanced_accuracy_score(test_y, base_pred)})
            ours.append(pred)
            base.append(base_pred)
        m, c = comparison(f"lowdata_{size}", [test_y] * size_repeats, ours, base, n_classes, n_boot, seed)
        out.metrics.update(m)
        out.ci.update(c)
    out.rows = pd.DataFrame(rows)
    return out


# --------------------------------------------------------------------------------- the GPU training-budget run
def scaling_run(train: tuple[Images, torch.Tensor], test: tuple[Images, torch.Tensor], n_classes: int,
                recipe: DiffusionModelConfig, step_counts: Sequence[int], seed: int = 0, max_trials: int = 100,
                report_trials: Sequence[int] = (40, 100), images_per_call: int = 32,
                out_json: str | Path | None = None) -> dict:
    """Train the chapter's model on ``train`` up to each of ``step_counts`` in turn (one run, continued from its
    checkpoint, so the 2,000-step model is the 500-step model trained on) and classify ``test`` after each, without
    pruning and with the uniform weighting; accuracy and balanced accuracy after each of ``report_trials`` trials.

    The record (device, precision, one row per step count) is written to ``out_json`` after every step count, so a
    timeout keeps what was done.
    """
    from wbcstudy.train import select_device, select_precision

    step_counts = sorted(int(s) for s in step_counts)
    if not step_counts or max(report_trials) > max_trials:
        raise ValueError(f"need step counts and report_trials <= max_trials, got {step_counts}, {report_trials}")
    device = select_device(recipe.device)
    out_path = Path(out_json) if out_json else None
    ckpt = (out_path.parent if out_path else Path(".")) / "scaling_checkpoint.pt"
    ckpt.unlink(missing_ok=True)
    test_y = test[1].numpy()
    record = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "precision": select_precision(recipe.precision, device), "test_cells": int(len(test_y)),
              "train_cells": int(len(train[1])), "max_trials": max_trials, "weighting": "uniform", "pruning": False,
              "unet_channels": list(recipe.unet_channels), "rows": []}
    for steps in step_counts:
        start = time.perf_counter()
        trained = train_diffusion_model(*train, n_classes, steps, recipe, seed=seed, checkpoint=ckpt,
                                        stop_after_step=steps, total_steps=step_counts[-1])
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        res = diffusion_classify(trained.ema_model, test[0], trained.scheduler, n_classes, max_trials=max_trials,
                                 prune=False, weighting="uniform", keep_errors=True, images_per_call=images_per_call,
                                 seed=seed, precision=recipe.precision)
        per_trial = predictions_after_each_trial(res.raw_errors, np.ones(max_trials))
        row = {"steps": trained.steps_done, "train_seconds_this_segment": round(train_seconds, 1),
               "classify_seconds": round(time.perf_counter() - start, 1),
               "final_loss": float(trained.history.loss.iloc[-1])}
        for k in report_trials:
            row[f"accuracy_{k}_trials"] = float((per_trial[:, k - 1] == test_y).mean())
            row[f"balanced_accuracy_{k}_trials"] = float(balanced_accuracy_score(test_y, per_trial[:, k - 1]))
        record["rows"].append(row)
        if out_path:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(record, indent=2) + "\n")
    ckpt.unlink(missing_ok=True)
    return record


def recorded_scaling(path: str | Path | None = None) -> dict:
    """The recorded GPU training-budget measurement (``book/results/cytodiffusion_scaling.json`` by default)."""
    from wbcstudy.paths import project_root

    path = Path(path) if path else project_root() / "book" / "results" / SCALING_FILE
    return json.loads(path.read_text())


@dataclass
class Parameters:
    """The CytoDiffusion chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("cytodiffusion", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = "cpu"  # papermill profile name, recorded in the results
    results_dir: str = "book/results"  # where cytodiffusion.json is written (relative to the project root)
    precision: str = "auto"  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    seed: int = 0  # seeds weight init, batches, augmentation, noise and timesteps
    image_size: int = 32  # px; images are decoded at 64 px and average-pooled 2x2
    #: UNet block widths (0.79 M params; the chapter measures its step time)
    unet_channels: list = field(default_factory=lambda: [16, 32, 32, 64])
    train_limit: int = 0  # 0: every training image; >0: a stratified subset (smoke runs)
    val_limit: int = 0  # 0: whole validation split for the baseline's epoch selection; >0: a stratified subset
    batch_size: int = 64  # diffusion training batch size
    diffusion_lr: float = 0.001  # AdamW learning rate after warm-up (constant, as in the paper)
    warmup_steps: int = 50  # linear warm-up steps
    ema_decay: float = 0.995  # EMA of the weights (paper 0.9999 over ~100x more steps)
    #: checkpoints of the shared model, each with validation accuracy and samples
    eval_steps: list = field(default_factory=lambda: [1500, 3000, 4000])
    #: training stops after a checkpoint whose validation balanced accuracy gained less than this
    min_gain: float = 0.01
    eval_cells: int = 105  # stratified validation cells classified at each checkpoint (no pruning)
    eval_trials: int = 40  # trials per validation cell at each checkpoint
    max_trials: int = 100  # classifier trials per test cell (paper 2000)
    min_trials: int = 20  # pruning starts at this trial index, every 5 trials (paper)
    images_per_call: int = 16  # images whose active classes share one UNet call
    indomain_test_limit: int = 400  # stratified in-domain test cells (the seven training classes)
    anomaly_test_limit: int = 0  # erythroblasts of the test split scored as anomalies (0: all of them)
    pruning_check_cells: int = 100  # in-domain test cells classified again without pruning
    shift_test_limit: int = 80  # stratified cells per domain-shift test set
    lowdata_sizes: list = field(default_factory=lambda: [10, 150])  # training images per class
    lowdata_steps: list = field(default_factory=lambda: [150, 400])  # diffusion training steps per subset size
    #: subsets r0, r1, ... of the low-data manifest per size (paper 5)
    lowdata_repeats: list = field(default_factory=lambda: [3, 1])
    lowdata_trials: int = 30  # classifier trials per low-data test cell
    lowdata_test_limit: int = 80  # stratified low-data test cells
    lowdata_val_limit: int = 100  # stratified low-data validation cells for the baselines' epoch selection (0: all)
    #: the low-data ResNet-18's fewest epochs (it sees as many images as the diffusion model)
    lowdata_min_epochs: int = 4
    heatmap_trials: int = 40  # trials per counterfactual heatmap
    samples_per_class: int = 16  # DDIM samples per class at each checkpoint
    ddim_steps: int = 25  # DDIM sampling steps
    #: in-domain ResNet-18 (from scratch) epochs, warm-up-stable-decay with the budget test
    resnet_epochs: int = 6
    baseline_batch_size: int = 128  # baseline training batch size
    benchmark_steps: int = 250  # training steps of the summary's 5-class benchmark model (not used in this chapter)
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
    #: gpu profile: train a model on to each step count and classify ([]: the recorded run)
    scaling_steps: list = field(default_factory=lambda: [])
