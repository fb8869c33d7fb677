"""The ResNeXt-CC chapter's procedures: the ablation grid (variants × splits × seeds), the baselines on the
same splits, a colour-statistics classifier (the colour-shortcut control), blast-positive metrics with
bootstrap intervals, and paired bootstrap differences over pooled test cells — the numbers the chapter's
claims are tested on.

Every run returns per-cell predictions in one long table (columns ``variant, fold, seed, row, y, prob``:
``row`` indexes the test cell in its data set, ``prob`` is the probability of the positive class), so that
two variants are compared on exactly the same cells, pooled over folds and seeds. Intervals resample
*cells*: a resampled cell brings its prediction from every seed, and a metric is averaged over the seeds,
so the seeds are not counted as extra cells; the ablation differences redraw the seeds as well, so their
intervals hold the run-to-run spread.

The grid's runs are independent and seeded, so a ``worker_pool(2)`` (:mod:`wbcstudy.parallel`, re-exported
here) trains two at a time in spawned processes of one thread each.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from wbcstudy.evaluate import binary_auroc as auroc
from wbcstudy.parallel import map_jobs, worker_pool

__all__ = [
    "FULL", "VARIANTS", "VARIANT_LABELS", "DIFFERENCE_KEYS", "AblationConfig", "Split", "GridResult",
    "variant_spec", "build_variant", "train_variant", "cross_validation_splits", "imbalanced_draw",
    "imbalanced_splits", "worker_pool", "run_ablation_grid", "merge_grids", "BaselineConfig", "baseline_specs",
    "run_baselines", "COLOUR_FEATURES", "colour_statistics", "colour_stats_predictions",
    "accuracy_at_half", "auroc", "binary_metrics", "binary_metrics_with_ci", "pooled", "pooled_by_seed", "seed_metrics",
    "ablation_differences", "mean_histories", "plateau_by_variant", "grad_cam", "feature_compactness",
]

FULL: dict[str, object] = dict(colour="hsv", fusion="conv5_1+conv5_3", downsampling="eca", loss="wbce_center", depth=50)
VARIANTS: dict[str, dict[str, object]] = {  # each ablation changes one component of the full model
    "full": {},
    "rgb": dict(colour="rgb"),
    "fusion52": dict(fusion="conv5_2+conv5_3"),
    "no_fusion": dict(fusion="none"),
    "ce": dict(loss="ce"),
    "weighted_bce": dict(loss="wbce"),
    "pool": dict(downsampling="pool"),
    "depth101": dict(depth=101),
}
VARIANT_LABELS: dict[str, str] = {
    "full": "ResNeXt-CC (full)", "rgb": "RGB input", "fusion52": "Conv5_2+Conv5_3 fusion", "no_fusion": "no fusion",
    "ce": "cross-entropy loss", "weighted_bce": "weighted BCE, no center loss", "pool": "max-pool down-sampling",
    "depth101": "ResNeXt-101-style depth"}
DIFFERENCE_KEYS: dict[str, str] = {  # variant → results key of "full minus variant" accuracy (the idea it tests)
    "rgb": "hsv_minus_rgb_accuracy", "fusion52": "fusion51_minus_52_accuracy",
    "no_fusion": "fusion51_minus_none_accuracy",
    "weighted_bce": "center_minus_weighted_accuracy", "ce": "full_minus_ce_accuracy", "pool": "eca_minus_pool_accuracy",
    "depth101": "depth50_minus_101_accuracy"}
PREDICTION_COLUMNS = ["variant", "fold", "seed", "row", "y", "prob"]


@dataclass
class AblationConfig:
    """Scale and training settings shared by every ResNeXt-CC variant of a grid."""

    model_scale: str = "cpu"  # "cpu" or "paper" (wbcstudy.models.resnext_cc.resnext_cc)
    epochs: int = 8
    batch_size: int = 32
    lr: float = 0.002
    weight_decay: float = 0.05
    center_weight: float = 0.05  # β, the weight of the center loss
    center_alpha: float = 0.5  # centre update rate per mini-batch


@dataclass
class Split:
    """One replicate: training cells and test cells (``test_rows`` index the test cells in their data set)."""

    fold: int
    seed: int
    train_x: torch.Tensor  # uint8 NHWC
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: np.ndarray
    test_rows: np.ndarray


@dataclass
class GridResult:
    """Per-cell test predictions of every run, one row per run, each run's history, and the kept models."""

    predictions: pd.DataFrame  # PREDICTION_COLUMNS
    runs: pd.DataFrame  # variant, fold, seed, accuracy, seconds, epochs, train_cells
    histories: dict[tuple[str, int, int], pd.DataFrame]
    models: dict[str, tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


def variant_spec(name: str) -> dict[str, object]:
    """The full model's components with the named variant's one change applied."""
    if name not in VARIANTS:
        raise ValueError(f"unknown ResNeXt-CC variant {name!r}; choose from {sorted(VARIANTS)}")
    return {**FULL, **VARIANTS[name]}


def build_variant(name: str, train_x: torch.Tensor | np.ndarray, config: AblationConfig) -> nn.Module:
    """A fresh ResNeXt-CC variant whose colour input is standardised with the training cells' mean and spread."""
    from wbcstudy.models import build
    from wbcstudy.models.resnext_cc import colour_mean_std

    spec = variant_spec(name)
    mean, std = colour_mean_std(train_x, str(spec["colour"]))
    return build("resnext_cc", 2, size=config.model_scale, depth=int(spec["depth"]), fusion=spec["fusion"],
                      downsampling=spec["downsampling"], colour=spec["colour"], mean=mean, std=std)


def _variant_loss(name: str, train_y: torch.Tensor, feature_dim: int, config: AblationConfig):
    """The variant's loss: None (cross-entropy in ``fit``), weighted BCE, or weighted BCE + β·center loss."""
    from wbcstudy.losses import WeightedBCECenterLoss, class_shares

    loss = variant_spec(name)["loss"]
    if loss == "ce":
        return None
    weight = config.center_weight if loss == "wbce_center" else 0.0
    return WeightedBCECenterLoss(class_shares(train_y), feature_dim, center_weight=weight, alpha=config.center_alpha)


def train_variant(name: str, split: Split, config: AblationConfig):
    """Train one variant on ``split`` (seeded by ``split.seed``); returns
    ``(TrainResult, test probability of class 1)``."""
    from wbcstudy.augment import flips_and_rot90
    from wbcstudy.train import TrainConfig, fit, predict_proba

    torch.manual_seed(split.seed)
    model = build_variant(name, split.train_x, config)
    loss_fn = _variant_loss(name, split.train_y, model.channels, config)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               weight_decay=config.weight_decay, seed=split.seed, progress=False)
    result = fit(model, (split.train_x, split.train_y), None, train_config, augment=flips_and_rot90, loss_fn=loss_fn,
                 n_classes=2)
    return result, predict_proba(result.model, split.test_x)[:, 1]


def cross_validation_splits(images: np.ndarray, labels: np.ndarray, fold_of: np.ndarray, folds: Sequence[int],
                            seeds: Sequence[int], train_limit: int = 0) -> list[Split]:
    """One split per (fold, seed): test on that fold, train on the others (a stratified ``train_limit`` subset,
    seeded)."""
    from wbcstudy.data.transforms import stratified_subset

    splits = []
    for fold in folds:
        test_idx = np.flatnonzero(fold_of == fold)
        if test_idx.size == 0:
            raise ValueError(f"fold {fold} has no cells")
        for seed in seeds:
            train_idx = np.flatnonzero(fold_of != fold)
            if train_limit:
                train_idx = train_idx[stratified_subset(labels[train_idx], train_limit, seed)]
            splits.append(Split(int(fold), int(seed), torch.from_numpy(images[train_idx]),
                                torch.from_numpy(labels[train_idx]),
                                torch.from_numpy(images[test_idx]), labels[test_idx], test_idx))
    return splits


def imbalanced_draw(labels: np.ndarray, n: int, positive_share: float, seed: int) -> np.ndarray:
    """Sorted indices of n cells, round(n · positive_share) of class 1 and the rest of class 0, drawn without
    replacement."""
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive_share)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if n_pos > len(pos) or n - n_pos > len(neg):
        raise ValueError(f"cannot draw {n_pos} positives and {n - n_pos} negatives from {len(pos)} and {len(neg)}")
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n - n_pos, replace=False)]))


def imbalanced_splits(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                      test_labels: np.ndarray, seeds: Sequence[int], n_train: int, n_test: int,
                      positive_share: float = 0.68, test_seed: int = 12345) -> list[Split]:
    """One split per seed: its own imbalanced training draw; one fixed imbalanced test draw shared by all (fold 0)."""
    test_idx = imbalanced_draw(test_labels, n_test, positive_share, test_seed)
    test_x = torch.from_numpy(test_images[test_idx])
    splits = []
    for seed in seeds:
        keep = imbalanced_draw(train_labels, n_train, positive_share, seed)
        splits.append(Split(0, int(seed), torch.from_numpy(train_images[keep]), torch.from_numpy(train_labels[keep]),
                            test_x, test_labels[test_idx], test_idx))
    return splits


def _prediction_frame(name: str, split: Split, prob: np.ndarray) -> pd.DataFrame:
    """Per-cell predictions of one run in PREDICTION_COLUMNS."""
    return pd.DataFrame({"variant": name, "fold": split.fold, "seed": split.seed, "row": split.test_rows,
                         "y": split.test_y.astype(np.int64), "prob": prob})


def _variant_job(job: tuple[str, Split, AblationConfig, bool]) -> dict:
    """Train one variant on one split (a picklable unit of work): its test probabilities, history and facts."""
    name, split, config, keep = job
    result, prob = train_variant(name, split, config)
    return {"prob": prob, "history": result.history, "seconds": result.seconds,
            "model": result.model.cpu() if keep else None}


def _grid_result(jobs: list[tuple[str, Split]], outputs: list[dict]) -> GridResult:
    """Collect the runs' outputs (in the jobs' order) into one GridResult."""
    frames, runs, histories, models = [], [], {}, {}
    for (name, split), out in zip(jobs, outputs):
        frames.append(_prediction_frame(name, split, out["prob"]))
        runs.append(dict(variant=name, fold=split.fold, seed=split.seed,
                         accuracy=accuracy_at_half(split.test_y, out["prob"]),
                         seconds=out["seconds"], epochs=len(out["history"]), train_cells=len(split.train_y)))
        histories[(name, split.fold, split.seed)] = out["history"]
        if out["model"] is not None:
            models[name] = (out["model"], (split.train_x, split.train_y))
    return GridResult(pd.concat(frames, ignore_index=True), pd.DataFrame(runs), histories, models)


def run_ablation_grid(variants: Sequence[str], splits: Iterable[Split], config: AblationConfig,
                      keep_first: bool = True, with_full: bool = True, pool=None) -> GridResult:
    """Train the full model (unless ``with_full=False``) and every variant on every split; per-cell test predictions.

    The variants of one split see the same cells, initialisation seed and augmentation stream, so they are
    paired. ``keep_first`` keeps the models of the first split (for Grad-CAM and the feature space).
    ``pool`` (``worker_pool``) trains the runs in parallel one-thread processes, with the results of one-thread runs.
    """
    names = list(dict.fromkeys((["full"] if with_full else []) + list(variants)))
    for name in names:
        variant_spec(name)  # an unknown name fails before any training
    splits = list(splits)
    if not names or not splits:
        raise ValueError(f"nothing to train: variants {names}, {len(splits)} splits")
    jobs = [(name, split) for split in splits for name in names]
    first = (splits[0].fold, splits[0].seed)
    outputs = map_jobs(_variant_job, [(name, split, config, keep_first and (split.fold, split.seed) == first)
                                  for name, split in jobs], pool)
    return _grid_result(jobs, outputs)


def merge_grids(*grids: GridResult) -> GridResult:
    """One GridResult holding the runs of several (e.g. a depth variant trained on fewer seeds than the others)."""
    histories, models = {}, {}
    for grid in grids:
        histories.update(grid.histories)
        models.update({k: v for k, v in grid.models.items() if k not in models})
    return GridResult(pd.concat([g.predictions for g in grids], ignore_index=True),
                      pd.concat([g.runs for g in grids], ignore_index=True), histories, models)


# --------------------------------------------------------------------------- baselines
@dataclass
class BaselineConfig:
    """A baseline network: its registry name and options, input size in px, peak learning rate, input normalisation."""

    model: str  # name in wbcstudy.models.build
    options: dict
    size: int
    lr: float
    imagenet: bool  # normalise with ImageNet's mean and std (pretrained weights) instead of the training cells'
    label: str

    def build(self) -> nn.Module:
        """A fresh network (two classes)."""
        from wbcstudy.models import build

        return build(self.model, 2, **self.options)


def baseline_specs(image_size: int, vgg_size: int, lr: float, effnet_lr: float) -> dict[str, BaselineConfig]:
    """The paper's baselines as trained here: torchvision networks from scratch, EfficientNet-Lite0 fine-tuned, a small
    ViT."""
    return {
        "resnet50": BaselineConfig("resnet50", {}, image_size, lr, False, "ResNet-50"),
        "inception_v3": BaselineConfig("inception_v3", {}, image_size, lr, False, "Inception-V3"),
        "densenet121": BaselineConfig("densenet121", {}, image_size, lr, False, "DenseNet-121"),
        "vgg16": BaselineConfig("vgg16_tv", {}, vgg_size, lr, False, f"VGG16-BN ({vgg_size} px)"),
        "effnet_lite0": BaselineConfig("efficientnet_lite0", {"pretrained": True}, image_size, effnet_lr, True,
                                     "EfficientNet-Lite0 (ImageNet)"),
        "small_vit": BaselineConfig("small_vit", {"image_size": image_size}, image_size, lr, False, "small ViT"),
    }


def _baseline_job(job: tuple[BaselineConfig, Split, AblationConfig, int]) -> dict:
    """Train one baseline on one split with plain cross-entropy (a picklable unit of work)."""
    from wbcstudy.augment import flips_and_rot90
    from wbcstudy.data.transforms import channel_mean_std
    from wbcstudy.models.baselines import IMAGENET_MEAN, IMAGENET_STD, with_input_adapter
    from wbcstudy.train import TrainConfig, fit, predict_proba

    spec, split, config, epochs = job
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if spec.imagenet else channel_mean_std(split.train_x.numpy())
    torch.manual_seed(split.seed)
    model = with_input_adapter(spec.build(), mean, std)
    train_config = TrainConfig(epochs=epochs, batch_size=config.batch_size, lr=spec.lr,
                               weight_decay=config.weight_decay, seed=split.seed, progress=False)
    result = fit(model, (split.train_x, split.train_y), None, train_config, augment=flips_and_rot90, n_classes=2)
    return {"prob": predict_proba(result.model, split.test_x)[:, 1], "history": result.history,
            "seconds": result.seconds, "model": None}


def run_baselines(names: Sequence[str], specs: dict[str, BaselineConfig], images_by_size: dict[int, np.ndarray],
                  labels: np.ndarray, fold_of: np.ndarray, folds: Sequence[int], seed: int, config: AblationConfig,
                  epochs: int, train_limit: int = 0, pool=None) -> GridResult:
    """Train each baseline with plain cross-entropy on the same cross-validation splits and seed as ResNeXt-CC."""
    jobs = [(name, split) for name in names
            for split in cross_validation_splits(images_by_size[specs[name].size], labels, fold_of, folds, [seed],
                                                 train_limit)]
    outputs = map_jobs(_baseline_job, [(specs[name], split, config, epochs) for name, split in jobs], pool)
    return _grid_result(jobs, outputs)


# --------------------------------------------------------------------------- the colour-shortcut control
COLOUR_FEATURES: tuple[str, ...] = (
    "red_mean", "green_mean", "blue_mean", "red_std", "green_std", "blue_std",  # RGB, each channel in [0, 1]
    "hue_cos", "hue_sin", "hue_concentration",  # circular: mean of cos/sin of the hue angle, and their resultant length
    "saturation_mean", "saturation_std", "value_mean", "value_std")
RGB_FEATURES: tuple[str, ...] = COLOUR_FEATURES[:6]
HSV_FEATURES: tuple[str, ...] = COLOUR_FEATURES[6:]


def colour_statistics(images: np.ndarray) -> pd.DataFrame:
    """Global colour statistics of each uint8 NHWC RGB image, one row per image (columns ``COLOUR_FEATURES``).

    Per-channel mean and standard deviation in RGB and in HSV (``wbcstudy.data.rgb_to_hsv``, each channel in
    [0, 1]). Hue is an angle — 0.99 and 0.01 of a turn are neighbours — so it enters as the mean of cos and sin
    of 2π·hue and their resultant length R (1 when every pixel has the same hue, near 0 when hues spread evenly).
    """
    from wbcstudy.data.transforms import rgb_to_hsv

    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {x.dtype} {x.shape}")
    rgb = torch.from_numpy(x).permute(0, 3, 1, 2).double().div(255.0)  # (N, 3, H, W)
    hsv = rgb_to_hsv(rgb)
    angle = 2 * np.pi * hsv[:, 0]
    cos, sin = angle.cos().mean(dim=(1, 2)), angle.sin().mean(dim=(1, 2))
    columns = [rgb.mean(dim=(2, 3)), rgb.std(dim=(2, 3), unbiased=False),
               torch.stack([cos, sin, torch.sqrt(cos**2 + sin**2)], dim=1),
               torch.stack([hsv[:, 1].mean(dim=(1, 2)), hsv[:, 1].std(dim=(1, 2), unbiased=False),
                            hsv[:, 2].mean(dim=(1, 2)), hsv[:, 2].std(dim=(1, 2), unbiased=False)], dim=1)]
    table = torch.cat(columns, dim=1).numpy()
    return pd.DataFrame(table, columns=list(COLOUR_FEATURES))


def colour_stats_predictions(features: pd.DataFrame, labels: np.ndarray, fold_of: np.ndarray, folds: Sequence[int],
                             name: str = "colour_stats", columns: Sequence[str] | None = None,
                             seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Out-of-fold predictions (PREDICTION_COLUMNS) of a logistic regression on standardised colour statistics.

    For each test fold the classifier is fitted on the other folds' cells, as ResNeXt-CC is; it is deterministic,
    so its predictions are repeated under each of ``seeds`` to pair with every seed of a network's runs.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.loc[:, list(columns or COLOUR_FEATURES)].to_numpy(np.float64)
    labels = np.asarray(labels)
    if len(x) != len(labels) or len(labels) != len(fold_of):
        raise ValueError(f"{len(x)} feature rows, {len(labels)} labels and {len(fold_of)} folds")
    frames = []
    for fold in folds:
        test = np.flatnonzero(fold_of == fold)
        train = np.flatnonzero(fold_of != fold)
        if test.size == 0:
            raise ValueError(f"fold {fold} has no cells")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x[train], labels[train])
        prob = model.predict_proba(x[test])[:, list(model.classes_).index(1)]
        frames += [pd.DataFrame({"variant": name, "fold": int(fold), "seed": int(seed), "row": test,
                                 "y": labels[test].astype(np.int64), "prob": prob}) for seed in seeds]
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- metrics and intervals
def accuracy_at_half(y: np.ndarray, prob: np.ndarray) -> float:
    """Accuracy of thresholding the positive-class probability at 0.5 (ties count as negative)."""
    y, prob = np.asarray(y), np.asarray(prob)
    return float(((prob > 0.5) == (y == 1)).mean())


def binary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1, specificity (threshold 0.5) and AUROC, class 1 positive (0 where undefined)."""
    y, prob = np.asarray(y), np.asarray(prob)
    pred = prob > 0.5
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    tn, fn = int((~pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": (tp + tn) / len(y), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "specificity": tn / (tn + fp) if tn + fp else 0.0, "auroc": auroc(y, prob)}


def _replicate_mean(metric_fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, probs: np.ndarray) -> float:
    """A metric averaged over the replicate columns of ``probs`` (cells × replicates), each scored on ``y``."""
    return float(np.mean([metric_fn(y, probs[:, r]) for r in range(probs.shape[1])]))


def binary_metrics_with_ci(y: np.ndarray, prob: np.ndarray, n_boot: int = 1000, seed: int = 0,
                           ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``binary_metrics`` and their 95% percentile-bootstrap intervals, resampling cells within each class.

    ``prob`` is one probability per cell, or a (cells × replicates) matrix — one column per seed, each a full
    pass over the cells: then every metric is the mean of its per-seed values, and each bootstrap resample draws
    cells (with all their seeds' predictions) and averages the per-seed metrics on them.
    """
    from wbcstudy.intervals import percentile_interval, resample_indices

    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    probs = prob[:, None] if prob.ndim == 1 else prob
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"prob must be (cells,) or (cells, replicates) for {len(y)} cells, got shape {prob.shape}")

    def averaged(yy: np.ndarray, pp: np.ndarray) -> dict[str, float]:
        per_rep = [binary_metrics(yy, pp[:, r]) for r in range(pp.shape[1])]
        return {k: float(np.mean([m[k] for m in per_rep])) for k in per_rep[0]}

    metrics = averaged(y, probs)
    boots = [averaged(y[i], probs[i]) for i in resample_indices(len(y), n_boot, seed, strata=y)]
    return metrics, {k: percentile_interval([b[k] for b in boots]) for k in metrics}


def pooled(predictions: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities of one variant, pooled over its folds and seeds (sorted by fold, seed,
    row)."""
    part = predictions[predictions.variant == variant].sort_values(["fold", "seed", "row"])
    if part.empty:
        raise ValueError(f"no predictions of {variant!r}")
    return part.y.to_numpy(), part.prob.to_numpy()


def pooled_by_seed(predictions: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (cells,) and probabilities (cells × seeds) of one variant: out-of-fold over its folds, a column per seed.

    Cells are sorted by (fold, row); only cells predicted under every one of the variant's seeds are kept.
    """
    part = predictions[predictions.variant == variant]
    if part.empty:
        raise ValueError(f"no predictions of {variant!r}")
    wide = part.pivot_table(index=["fold", "row"], columns="seed", values="prob", aggfunc="first").dropna().sort_index()
    labels = part.drop_duplicates(["fold", "row"]).set_index(["fold", "row"]).y
    return labels.loc[wide.index].to_numpy(), wide.to_numpy()


def seed_metrics(predictions: pd.DataFrame, variants: Sequence[str],
                 metric_fn: Callable[[np.ndarray, np.ndarray], float] = accuracy_at_half) -> pd.DataFrame:
    """Each variant's metric on its out-of-fold cells, one column per seed (a full pass over the cells each):
    the run-to-run spread that the seeds show."""
    rows = {}
    for name in variants:
        y, probs = pooled_by_seed(predictions, name)
        seeds = sorted(predictions.loc[predictions.variant == name, "seed"].unique())
        rows[name] = {f"seed {s}": metric_fn(y, probs[:, i]) for i, s in enumerate(seeds)}
    return pd.DataFrame(rows).T


def ablation_differences(predictions: pd.DataFrame, variants: Sequence[str], reference: str = "full",
                         n_boot: int = 1000, seed: int = 0,
                         metric_fn: Callable[[np.ndarray, np.ndarray], float] = accuracy_at_half) -> pd.DataFrame:
    """Reference minus each variant in ``metric_fn`` on the cells both predicted, with a 95% paired bootstrap interval.

    Only the (fold, seed) replicates that both ran are compared. The metric of each model is its mean over
    those seeds (each seed a pass over the shared cells). Every bootstrap resample draws cells, each with both
    models' predictions under every seed, *and* draws the seeds with replacement — the same draw for both models,
    whose runs of one seed share their split, initialisation and augmentation stream — so the interval holds the
    run-to-run spread as well as the cell sampling (as ``wbcstudy.intervals.seed_cell_difference`` does for
    unpaired runs). Columns: variant, cells, replicates ((fold, seed) pairs), seeds, reference, value (the
    variant's metric), difference, low, high, and the difference per seed (``seed_min``, ``seed_max``).
    """
    keys = ["fold", "seed", "row"]
    ref = predictions.loc[predictions.variant == reference, [*keys, "y", "prob"]]
    if ref.empty:
        raise ValueError(f"no predictions of the reference {reference!r}")
    from wbcstudy.intervals import percentile_interval, resample_indices

    rows = []
    for name in variants:
        other = predictions.loc[predictions.variant == name, [*keys, "y", "prob"]]
        both = ref.merge(other, on=keys, how="inner", suffixes=("_ref", "_var"))
        if both.empty:
            raise ValueError(f"{name!r} shares no test cells with {reference!r}")
        if not (both.y_ref == both.y_var).all():
            raise ValueError(f"{name!r} and {reference!r} disagree on the labels of the same cells")
        wide = both.pivot_table(index=["fold", "row"], columns="seed", values=["prob_ref", "prob_var", "y_ref"],
                                aggfunc="first").dropna().sort_index()
        y = wide["y_ref"].iloc[:, 0].to_numpy().astype(np.int64)
        a, b = wide["prob_ref"].to_numpy(), wide["prob_var"].to_numpy()
        per_seed = [metric_fn(y, a[:, r]) - metric_fn(y, b[:, r]) for r in range(a.shape[1])]
        n_seeds = a.shape[1]
        seed_weights = np.random.default_rng(seed + 1).multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)
        diffs = [sum(w * (metric_fn(y[i], a[i, r]) - metric_fn(y[i], b[i, r]))
                     for r, w in enumerate(weights) if w) / n_seeds
                 for i, weights in zip(resample_indices(len(y), n_boot, seed), seed_weights)]
        low, high = percentile_interval(diffs)
        ref_value, value = _replicate_mean(metric_fn, y, a), _replicate_mean(metric_fn, y, b)
        rows.append({"variant": name, "cells": len(y), "replicates": len(both[["fold", "seed"]].drop_duplicates()),
                     "seeds": a.shape[1], "reference": ref_value, "value": value, "difference": ref_value - value,
                     "low": low, "high": high, "seed_min": min(per_seed), "seed_max": max(per_seed)})
    return pd.DataFrame(rows).set_index("variant")


# --------------------------------------------------------------------------- convergence, curves, explanations
def mean_histories(histories: dict[tuple[str, int, int], pd.DataFrame],
                   columns: Sequence[str] = ("train_loss", "train_accuracy")) -> pd.DataFrame:
    """Each variant's training history averaged over its runs, per epoch (columns variant, epoch, *columns)."""
    frames = [h.loc[:, ["epoch", *columns]].assign(variant=name) for (name, _, _), h in histories.items()]
    return pd.concat(frames).groupby(["variant", "epoch"], sort=False)[list(columns)].mean().reset_index()


def plateau_by_variant(histories: dict[tuple[str, int, int], pd.DataFrame], column: str = "train_accuracy",
                       mode: str = "max", prefix: str = "") -> dict[str, bool]:
    """Whether each variant's learning curve (``column`` averaged over its runs, per epoch) reached its plateau,
    by ``wbcstudy.train.reached_plateau``; keys are ``prefix + variant`` (the results' ``plateau`` names)."""
    from wbcstudy.train import reached_plateau

    curves = mean_histories(histories, (column,))
    return {prefix + name: bool(reached_plateau(part[column].tolist(), mode=mode))
            for name, part in curves.groupby("variant", sort=False)}


def grad_cam(model: nn.Module, images: np.ndarray, target: int, names: Sequence[str] = ("conv5_1", "conv5_3", "fused"),
             ) -> dict[str, np.ndarray]:
    """Grad-CAM maps (N, H, W), each scaled to [0, 1], of ``target``'s logit on ResNeXt-CC's named layers
    (``conv5_<k>`` blocks or the CFFM ``fused`` map), by ``wbcstudy.explain.gradcam.gradcam_layer_maps``."""
    from wbcstudy.explain.gradcam import gradcam_layer_maps

    layers = {f"conv5_{k + 1}": block for k, block in enumerate(model.stages[3])}
    if model.cffm is not None:
        layers["fused"] = model.cffm
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"no layer named {missing}; this model has {list(layers)}")
    maps = gradcam_layer_maps(model, [layers[n] for n in names], images, targets=[target] * len(images))
    return dict(zip(names, maps))


@torch.inference_mode()
def feature_compactness(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean distance of a cell's pooled features to its class centroid, averaged over the two classes, divided by
    the distance between the centroids (smaller: more compact classes); also returns the features."""
    model.eval()
    x = torch.from_numpy(images)
    feats = torch.cat([model(x[i:i + 256])[1].float() for i in range(0, len(x), 256)]).numpy()
    centroids = np.stack([feats[labels == c].mean(0) for c in (0, 1)])
    within = np.mean([np.linalg.norm(feats[labels == c] - centroids[c], axis=1).mean() for c in (0, 1)])
    return float(within / np.linalg.norm(centroids[1] - centroids[0])), feats


@dataclass
class Parameters:
    """The ResNeXt-CC chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("resnext_cc", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where resnext_cc.json is written (relative to the project root)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    image_size: int = 64  # input size in px (ALL-IDB2 crops are 257 px, PBC 256 px)
    model_scale: str = 'cpu'  # "cpu" (8 groups, 64-512 channels) or "paper" (ResNeXt-50 32x4d, 256-2048 channels)
    #: ALL-IDB2 test folds (5-fold CV: train on the other four folds)
    folds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: seeds per fold: each (fold, seed) trains every variant once, paired with the full model
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    train_limit: int = 0  # 0: all 208 training cells per fold; >0: a stratified subset (smoke runs)
    epochs: int = 14  # training epochs per ResNeXt-CC run (the last epoch is kept: no validation split)
    batch_size: int = 32  # training batch size
    lr: float = 0.004  # peak learning rate (AdamW, one-cycle schedule)
    #: variants on ALL-IDB2, every seed
    ablations: list = field(default_factory=lambda: ['rgb', 'fusion52', 'no_fusion', 'weighted_bce', 'ce', 'pool'])
    #: variants on ALL-IDB2 trained under depth_seeds only
    depth_ablations: list = field(default_factory=lambda: ['depth101'])
    depth_seeds: list = field(default_factory=lambda: [0, 1, 2])  # seeds for depth_ablations
    #: variants on the PBC ig-vs-neutrophil pair
    pbc_ablations: list = field(default_factory=lambda: ['rgb', 'weighted_bce', 'ce', 'pool'])
    #: PBC replicates: each seed draws its own 68/32 training subset and initialisation
    pbc_seeds: list = field(default_factory=lambda: [0, 1, 2])
    #: PBC training cells per replicate (68% ig); 240 cells x 6 epochs stayed below the majority rate
    pbc_train: int = 400
    #: PBC test cells, the same for every replicate (68/32 from the test split's 289 ig: at most 425)
    pbc_test: int = 420
    pbc_epochs: int = 10  # training epochs per PBC run
    #: paper's CNNs (also: effnet_lite0, small_vit)
    baselines: list = field(default_factory=lambda: ['resnet50', 'inception_v3', 'densenet121', 'vgg16'])
    #: ALL-IDB2 folds the baselines are trained on (the same splits as ResNeXt-CC)
    baseline_folds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    baseline_seed: int = 0  # the baselines' seed (one run per fold)
    #: epochs per baseline (one costs 6-12 ResNeXt-CC epochs): budget-bound, short of their plateau
    baseline_epochs: int = 2
    baseline_lr: float = 0.002  # peak learning rate of the baselines trained from scratch
    vgg_size: int = 32  # VGG16 input size in px (VGG16 is 3x slower than the others at 64 px on a CPU)
    effnet_lr: float = 0.001  # peak learning rate for fine-tuning EfficientNet-Lite0
    center_weight: float = 0.05  # beta, the weight of the center loss (the paper's value)
    center_alpha: float = 0.5  # centre update rate per mini-batch (Wen et al. 2016)
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
    #: runs trained at a time, each in its own one-thread process (1: all in this process, e.g. on a GPU)
    workers: int = 2
    torch_threads: int = 0  # threads of this process (0: torch's default); the workers use one each
