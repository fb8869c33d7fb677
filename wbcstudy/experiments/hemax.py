"""The HemaX chapter's procedures: training the set predictor, predicting, its metrics, the 0/2/4-hidden-layer
comparison, the Faster R-CNN and plain-classifier baselines, attribute AUCs and faithfulness.

Every procedure takes a :class:`wbcstudy.data.hemax.HemaXData` (images plus whichever labels
each source has) and masks each metric to the cells that carry its label.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from wbcstudy.data.hemax import ATTRIBUTES, CLASSES, HemaXData
from wbcstudy.losses.set_prediction import LossWeights, Targets, hemax_loss
from wbcstudy.models.hemax import HemaX, nucleus_fraction
from wbcstudy.train import Step, Task

__all__ = ["HemaXConfig", "HemaXRun", "Predictions", "FeatureCache", "FLIP_STATES", "cache_features",
           "backbone_is_fixed", "make_targets", "build_hemax", "train_hemax", "predict_hemax",
           "box_iou_cxcywh", "mask_dice", "per_cell_scores", "hemax_metrics", "run_variants",
           "variant_table", "attribute_hits", "attribute_auc_by_correctness", "attribute_auc_by_attribute",
           "class_attribute_modes", "class_only_attribute_accuracy", "faithfulness", "train_faster_rcnn",
           "train_plain_classifier", "attribute_roc_curves", "CELL_COLUMNS", "build_results",
           "attribute_auc_over_seeds", "class_only_comparison", "seed_metrics", "choose_variant",
           "variant_hits", "variant_difference"]


@dataclasses.dataclass
class HemaXConfig:
    """One HemaX training run's model size and optimisation settings (cpu-profile defaults)."""

    attribute_hidden_layers: int = 0
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    d_model: int = 128
    nheads: int = 8
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 512
    num_queries: int = 5
    mask_dim: int = 32
    fpn_dim: int = 32
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-4
    lr_backbone: float = 5e-5
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    seed: int = 0
    precision: str = "auto"
    flips: bool = True
    train_backbone: bool = True  # False: the ImageNet backbone is a fixed feature extractor (only the rest trains)
    stop_at_plateau: bool = True  # stop once the validation loss has levelled off (train.reached_plateau)
    plateau_tol: float = 0.02  # absolute tolerance on the validation loss for that rule (and for the plateau flag)
    patience: int | None = None  # stop when the validation loss has not improved for this many epochs (None: never)
    min_epochs: int = 0  # neither stopping rule fires before this many epochs (e.g. past the learning-rate drop)
    lr_drop: int | None = None  # every learning rate /10 after this many epochs (DETR's StepLR); None: constant


@dataclasses.dataclass
class HemaXRun:
    """A trained model (the best-validation-loss epoch, as the paper keeps), its history and its seconds."""

    model: HemaX
    history: pd.DataFrame
    seconds: float
    best_epoch: int
    config: HemaXConfig


@dataclasses.dataclass
class Predictions:
    """Per-cell outputs of the query HemaX is most confident is a cell (the highest non-no-object probability)."""

    class_prob: np.ndarray  # (n, C)
    boxes: np.ndarray  # (n, 4) cx, cy, w, h
    masks: np.ndarray  # (n, 2, S, S) bool (cytoplasm, nucleus)
    attribute_prob: list[np.ndarray]  # one (n, k) per attribute
    nucleus_fraction: np.ndarray  # (n,) N / (N + C) of the predicted masks

    @property
    def pred_class(self) -> np.ndarray:
        """(n,) predicted class index."""
        return self.class_prob.argmax(1)

    @property
    def pred_attributes(self) -> np.ndarray:
        """(n, A) predicted category per attribute."""
        return np.stack([p.argmax(1) for p in self.attribute_prob], 1)


#: the flip states a cached batch can ask for, in the order of FeatureCache.levels' first axis: (horizontal, vertical)
FLIP_STATES: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
#: the most memory a feature cache may take; a larger one is not built and features are computed per batch instead
FEATURE_CACHE_BYTES: int = 6 * 2**30


@dataclasses.dataclass
class FeatureCache:
    """A fixed (frozen, pretrained) backbone's features of every image of a ``HemaXData``, per flip state.

    ``levels[k]`` is a (states, n, C, H, W) tensor for the k-th feature level (strides 4, 8 and the
    memory stride); ``states`` is 4 (:data:`FLIP_STATES`) for training data, whose images are flipped at
    random, and 1 (unflipped) for evaluation data. The features are those the model would compute from the
    (flipped) image itself — a frozen backbone runs in eval mode — so training on the cache is training on
    the images, with the backbone's forward pass paid once instead of once per epoch.
    """

    levels: list[torch.Tensor]

    def __len__(self) -> int:
        return int(self.levels[0].shape[1])

    @property
    def flips(self) -> bool:
        """Whether the cache holds the flipped images' features too."""
        return self.levels[0].shape[0] == len(FLIP_STATES)

    def batch(self, idx: np.ndarray, flip_h: np.ndarray | None = None,
              flip_v: np.ndarray | None = None) -> list[torch.Tensor]:
        """The features of rows idx, each row in its flip state (as :func:`make_targets` flips its image)."""
        state = np.zeros(len(idx), np.int64)
        if flip_h is not None:
            state += np.asarray(flip_h, bool)
        if flip_v is not None:
            state += 2 * np.asarray(flip_v, bool)
        if state.any() and not self.flips:
            raise ValueError("this feature cache holds unflipped images only; build it with flips=True to train with "
                             "flips")
        s, i = torch.from_numpy(state), torch.from_numpy(np.asarray(idx, np.int64))
        return [level[s, i] for level in self.levels]


def backbone_is_fixed(config: HemaXConfig) -> bool:
    """Whether a config's backbone is a fixed function of the image: frozen and pretrained (so the same for every
    seed)."""
    return not config.train_backbone and config.pretrained


@torch.no_grad()
def cache_features(model: HemaX, data: HemaXData, flips: bool, batch_size: int = 64,
                   precision: str = "fp32") -> FeatureCache | None:
    """The frozen backbone's features of every image (and, with ``flips``, of its three flipped versions).

    Returns None — features are then computed batch by batch, with the same values — when the cache would
    take more than :data:`FEATURE_CACHE_BYTES`.
    """
    if any(p.requires_grad for p in model.backbone.parameters()):
        raise ValueError("cache_features needs a frozen backbone (HemaX.freeze_backbone): a trained one changes every "
                         "step")
    model.eval()
    dev = _device_of(model)
    n, states = len(data), FLIP_STATES if flips else FLIP_STATES[:1]
    with _autocast(precision, dev):
        probe = model.backbone_features(torch.from_numpy(np.ascontiguousarray(data.images[:1])).to(dev))
    need = n * len(states) * sum(f[0].numel() * f.element_size() for f in probe)
    if need > FEATURE_CACHE_BYTES:
        return None
    levels = [torch.empty((len(states), n, *f.shape[1:]), dtype=f.dtype) for f in probe]
    for s, (h, v) in enumerate(states):
        for start in range(0, n, batch_size):
            images = torch.from_numpy(np.ascontiguousarray(data.images[start:start + batch_size]))
            if h:
                images = images.flip(2)
            if v:
                images = images.flip(1)
            with _autocast(precision, dev):
                feats = model.backbone_features(images.to(dev))
            for level, f in zip(levels, feats):
                level[s, start:start + len(images)] = f.cpu()
    return FeatureCache(levels)


def make_targets(data: HemaXData, idx: np.ndarray, flip_h: np.ndarray | None = None,
                 flip_v: np.ndarray | None = None) -> tuple[torch.Tensor, Targets]:
    """A batch (uint8 NHWC images, Targets with one object per image) of rows idx, optionally flipped per image."""
    images = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
    boxes = torch.from_numpy(data.boxes[idx].copy())
    size = data.images.shape[1]
    masks = torch.zeros(len(idx), 1, 2, size, size)
    mi = data.mask_index[idx]
    if (mi >= 0).any():
        masks[torch.from_numpy(mi >= 0), 0] = torch.from_numpy(data.masks[mi[mi >= 0]]).float()
    for flips, img_dim, box_dim, mask_dim in ((flip_h, 2, 0, -1), (flip_v, 1, 1, -2)):
        if flips is None or not flips.any():
            continue
        f = torch.from_numpy(flips)
        images[f] = images[f].flip(img_dim)
        masks[f] = masks[f].flip(mask_dim)
        boxes[f, box_dim] = 1 - boxes[f, box_dim]
    n = len(idx)
    targets = Targets(labels=torch.from_numpy(data.labels[idx]).clamp(min=0)[:, None],
                      boxes=boxes[:, None], masks=masks,
                      attributes=torch.from_numpy(data.attributes[idx])[:, None],
                      present=torch.ones(n, 1, dtype=torch.bool),
                      has_class=torch.from_numpy(data.labels[idx] >= 0), has_box=torch.from_numpy(data.has_box[idx]),
                      has_mask=torch.from_numpy(mi >= 0))
    return images, targets


def build_hemax(config: HemaXConfig, num_classes: int = len(CLASSES)) -> HemaX:
    """A fresh HemaX for a config (seeded)."""
    torch.manual_seed(config.seed)
    model = HemaX(num_classes, attribute_hidden_layers=config.attribute_hidden_layers, backbone=config.backbone,
                  pretrained=config.pretrained, d_model=config.d_model, nheads=config.nheads,
                  encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers, ffn_dim=config.ffn_dim,
                  num_queries=config.num_queries, mask_dim=config.mask_dim,
                  fpn_dim=config.fpn_dim)
    if not config.train_backbone:
        model.freeze_backbone()
    return model


def _autocast(precision: str, device: torch.device = torch.device("cpu")):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _precision(requested: str) -> str:
    """The precision a run on this machine's training device resolves ``requested`` to (the engine's choice)."""
    from wbcstudy.train import select_device, select_precision

    return select_precision(requested, select_device("auto"))


def _device_of(model: nn.Module) -> torch.device:
    """The device of a module's parameters (the CPU for a module without any)."""
    return next(model.parameters(), torch.empty(0)).device


def _targets_to(targets: Targets, device: torch.device) -> Targets:
    """The targets on ``device`` (the same object on the CPU)."""
    if device.type == "cpu":
        return targets
    return dataclasses.replace(targets, **{f.name: getattr(targets, f.name).to(device)
                                           for f in dataclasses.fields(targets)})


@torch.no_grad()
def _evaluate(model: HemaX, data: HemaXData, batch_size: int, precision: str, features: FeatureCache | None = None,
              with_loss: bool = False) -> tuple[dict[str, float] | None, Predictions]:
    """One pass over data: its mean loss terms (with ``with_loss``; the data's labels) and its predictions."""
    model.eval()
    dev = _device_of(model)
    size = data.images.shape[1]
    sums: dict[str, float] = {}
    parts: dict[str, list] = {"p": [], "b": [], "m": [], "a": []}
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        if with_loss:
            images, targets = make_targets(data, idx)
            targets = _targets_to(targets, dev)
        else:
            images = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
        with _autocast(precision, dev):
            images = images.to(dev)
            out = model(images) if features is None else model(images, [f.to(dev) for f in features.batch(idx)])
        if with_loss:
            for k, v in hemax_loss(out, targets).items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        out = {k: v.cpu() if isinstance(v, torch.Tensor) else [a.cpu() for a in v] for k, v in out.items()
               if k in ("pred_logits", "pred_boxes", "pred_masks", "pred_attributes")}
        prob = out["pred_logits"].float().softmax(-1)[..., :-1]
        q = prob.max(-1).values.argmax(1)
        rows = torch.arange(len(q))
        p = prob[rows, q]
        parts["p"].append((p / p.sum(-1, keepdim=True)).numpy())
        parts["b"].append(out["pred_boxes"][rows, q].float().numpy())
        masks = F.interpolate(out["pred_masks"][rows, q].float(), size=(size, size), mode="bilinear",
                              align_corners=False)
        parts["m"].append((masks > 0).numpy())
        parts["a"].append([a[rows, q].float().softmax(-1).numpy() for a in out["pred_attributes"]])
    masks = np.concatenate(parts["m"])
    attrs = [np.concatenate([a[k] for a in parts["a"]]) for k in range(len(parts["a"][0]))]
    frac = nucleus_fraction(torch.from_numpy(masks[:, 1]), torch.from_numpy(masks[:, 0])).numpy()
    pred = Predictions(np.concatenate(parts["p"]), np.concatenate(parts["b"]), masks, attrs, frac)
    return ({k: v / len(data) for k, v in sums.items()} if with_loss else None), pred


def train_hemax(train: HemaXData, val: HemaXData, config: HemaXConfig, weights: LossWeights = LossWeights(),
                max_steps: int | None = None,
                features: tuple[FeatureCache | None, FeatureCache | None] | None = None) -> HemaXRun:
    """Train HemaX (AdamW, lower backbone lr, grad clip, random flips) and keep the epoch with the lowest validation
    loss.

    A fixed backbone (:func:`backbone_is_fixed`) computes its features once (:func:`cache_features`; pass
    ``features=(train_cache, val_cache)`` to share them between runs) instead of in every step.

    The history has, per epoch: train_loss, val_loss and its terms (val_ce, …), and the
    validation accuracy, box Jaccard, mask Dice and mean attribute accuracy. Training stops
    after ``config.epochs`` or, with ``config.stop_at_plateau``, as soon as the validation
    loss has levelled off (:func:`wbcstudy.train.reached_plateau`, ``config.plateau_tol``), or, with
    ``config.patience``, once it has not improved for that many epochs; neither before ``config.min_epochs``.
    ``max_steps`` stops after that many optimiser steps (for timing and tests).
    """
    from wbcstudy.train import EngineConfig, run_task, select_device

    def make_task() -> _HemaXTask:
        model = build_hemax(config)
        model.to(select_device("auto"))
        caches = features
        if caches is None and backbone_is_fixed(config):
            precision = _precision(config.precision)
            caches = (cache_features(model, train, config.flips, config.batch_size, precision),
                      cache_features(model, val, False, config.batch_size, precision))
        return _HemaXTask(model, train, val, config, weights, max_steps, caches if caches is not None else (None, None))

    run = run_task(make_task, EngineConfig(epochs=config.epochs, seed=config.seed, deterministic=False,
                                           precision=config.precision, grad_clip=config.grad_clip or None,
                                           monitor="val_loss", stop_at_plateau=config.stop_at_plateau,
                                           plateau_tol=config.plateau_tol, patience=config.patience,
                                           min_epochs=config.min_epochs, n_classes=len(CLASSES)))
    model = run.task.model
    model.eval()
    return HemaXRun(model, run.history, run.seconds, run.best_epoch, config)


class _HemaXTask(Task):
    """HemaX's part of ``run_task``: shuffled, randomly flipped batches; the set loss; a validation pass per epoch."""

    def __init__(self, model: HemaX, train: HemaXData, val: HemaXData, config: HemaXConfig, weights: LossWeights,
                 max_steps: int | None, caches: tuple[FeatureCache | None, FeatureCache | None]) -> None:
        (self.model, self.train, self.val, self.config, self.weights,
         self.max_steps) = model, train, val, config, weights, max_steps
        self.train_cache, self.val_cache = caches
        for cache, data, name in ((self.train_cache, train, "training"), (self.val_cache, val, "validation")):
            if cache is not None and len(cache) != len(data):
                raise ValueError(f"the {name} feature cache has {len(cache)} images, the {name} data {len(data)}")
        self.modules = {"model": model}
        backbone = {id(p) for p in model.backbone_parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) not in backbone and p.requires_grad],
                   "lr": config.lr},
                  {"params": model.backbone_parameters(), "lr": config.lr_backbone}]
        groups = [g for g in groups if g["params"]]  # a frozen backbone has no trainable parameters
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_drop, gamma=0.1)
                          if config.lr_drop else None)
        self.rng = np.random.default_rng(config.seed)
        self.steps = 0

    def batches(self, epoch: int):
        order, self.total = self.rng.permutation(len(self.train)), 0.0
        for b in range(0, len(order), self.config.batch_size):
            idx = order[b:b + self.config.batch_size]
            flips = ((self.rng.random(len(idx)) < 0.5, self.rng.random(len(idx)) < 0.5) if self.config.flips
                     else (None, None))
            yield idx, flips

    def training_step(self, batch) -> list[Step]:
        idx, flips = batch
        images, targets = make_targets(self.train, idx, *flips)
        images, targets = images.to(self.device), _targets_to(targets, self.device)

        def loss() -> torch.Tensor:
            if self.train_cache is None:
                out = self.model(images)
            else:
                out = self.model(images, [f.to(self.device) for f in self.train_cache.batch(idx, *flips)])
            with torch.autocast(self.device.type, enabled=False):  # the set loss in the outputs' own precision
                return hemax_loss(out, targets, self.weights)["loss"]

        return [Step(loss, self.optimizer, clip=self.model.parameters)]

    def after_step(self, batch, losses: list[torch.Tensor]) -> bool:
        self.total += float(losses[0]) * len(batch[0])
        self.steps += 1
        return self.max_steps is not None and self.steps >= self.max_steps

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        row = {"train_loss": self.total / len(self.train), "lr": self.optimizer.param_groups[0]["lr"]}
        if self.scheduler is not None:
            self.scheduler.step()
        terms, val_pred = _evaluate(self.model, self.val, self.config.batch_size, self.precision, self.val_cache,
                                    with_loss=True)
        row.update({f"val_{k}" if k != "loss" else "val_loss": v for k, v in terms.items()})
        scores = hemax_metrics(val_pred, self.val)
        row.update({"val_accuracy": scores["classification_accuracy"], "val_f1": scores["classification_f1"],
                    "val_box_jaccard": scores["box_jaccard"],
                    "val_mask_dice": scores["mask_dice"], "val_attribute_accuracy": np.nanmean(
                        [scores[f"{a}_accuracy"] for a in ATTRIBUTES])})
        return row


@torch.no_grad()
def predict_hemax(model: HemaX, data: HemaXData, batch_size: int = 64, precision: str = "fp32",
                  features: FeatureCache | None = None) -> Predictions:
    """Each image's most confident query: class probabilities (no-object dropped, renormalised), box, masks, attributes,
    N:C.

    ``features``: the images' cached backbone features (:func:`cache_features`), when the backbone is fixed.
    """
    return _evaluate(model, data, batch_size, precision, features)[1]


def box_iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU (Jaccard) of two (n, 4) arrays of cx, cy, w, h boxes."""
    a0, a1 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b0, b1 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    wh = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_dice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice 2|P∩T| / (|P| + |T|) of binary masks over the last two axes (1 where both are empty)."""
    p, t = pred.astype(bool), true.astype(bool)
    inter = (p & t).sum((-2, -1))
    total = p.sum((-2, -1)) + t.sum((-2, -1))
    return np.where(total > 0, 2 * inter / np.where(total > 0, total, 1), 1.0)


#: metric → the column of :func:`per_cell_scores` whose mean over the labelled cells it is
CELL_COLUMNS: dict[str, str] = {"classification_accuracy": "correct", "box_jaccard": "box_iou",
                                "mask_dice": "mask_dice",
                                "nc_ratio_mse": "nc_sq_error", **{f"{a}_accuracy": f"{a}_hit" for a in ATTRIBUTES}}


def per_cell_scores(pred: Predictions, data: HemaXData) -> pd.DataFrame:
    """One row per cell: source, true and predicted class, box IoU, mask Dice, N:C squared error, attribute hits (NaN
    where no label)."""
    df = pd.DataFrame({"source": data.source, "true": data.labels, "pred": pred.pred_class})
    df["correct"] = (df["true"] == df["pred"]).astype(float)
    df["box_iou"] = np.where(data.has_box, box_iou_cxcywh(pred.boxes, data.boxes), np.nan)
    dice = np.full(len(data), np.nan)
    sq = np.full(len(data), np.nan)
    has = data.has_mask
    if has.any():
        true_masks = data.masks[data.mask_index[has]]
        dice[has] = mask_dice(pred.masks[has], true_masks).mean(1)
        true_frac = nucleus_fraction(torch.from_numpy(true_masks[:, 1]), torch.from_numpy(true_masks[:, 0])).numpy()
        sq[has] = (np.nan_to_num(pred.nucleus_fraction[has], nan=0.0) - true_frac) ** 2
    df["mask_dice"], df["nc_sq_error"] = dice, sq
    df["nucleus_fraction"] = pred.nucleus_fraction
    hits = attribute_hits(pred.pred_attributes, data.attributes)
    for a, name in enumerate(ATTRIBUTES):
        df[f"{name}_hit"] = hits[:, a]
    return df


def attribute_hits(predicted: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """(n, A) 1.0 where a predicted attribute category equals the label, 0.0 where not, NaN where the cell has no
    label for that attribute (−1)."""
    return np.where(attributes >= 0, (predicted == attributes).astype(float), np.nan)


def hemax_metrics(pred: Predictions, data: HemaXData) -> dict[str, float]:
    """Table I/II metrics: accuracy, macro precision and F1, box Jaccard, mask Dice, attribute accuracies, N:C MSE.

    N:C MSE is on the nucleus fraction N / (N + C) (the bounded form of N:C, in [0, 1]); a
    prediction with no cell pixels counts as 0. Each metric uses only the cells with its label.
    """
    from sklearn.metrics import f1_score, precision_score

    cells = per_cell_scores(pred, data)
    labelled = data.labels >= 0
    y, p = data.labels[labelled], pred.pred_class[labelled]
    classes = list(range(pred.class_prob.shape[1]))
    out = {"classification_accuracy": float((y == p).mean()) if len(y) else float("nan"),
           "classification_precision": float(precision_score(y, p, labels=classes, average="macro", zero_division=0)),
           "classification_f1": float(f1_score(y, p, labels=classes, average="macro", zero_division=0)),
           "box_jaccard": float(cells["box_iou"].mean()), "mask_dice": float(cells["mask_dice"].mean()),
           "nc_ratio_mse": float(cells["nc_sq_error"].mean())}
    for name in ATTRIBUTES:
        out[f"{name}_accuracy"] = float(cells[f"{name}_hit"].mean())
    return out


#: what every variant run reads, set once per process by :func:`_share_variant_inputs` (in a worker, by its initializer)
_VARIANT_INPUTS: dict = {}


def _share_variant_inputs(train: HemaXData, val: HemaXData, test: HemaXData, caches: tuple) -> None:
    _VARIANT_INPUTS.update(train=train, val=val, test=test, caches=caches)


def _source(data: HemaXData, source: str) -> HemaXData:
    return data.subset(np.flatnonzero(data.source == source))


def _variant_job(job: tuple[str, object]):
    """One unit of work on the shared data (picklable): a HemaX run (``("hemax", config)`` → its run and test
    predictions) or a baseline (``("fasterrcnn" | "classifier", keyword arguments)`` → the baseline's result)."""
    kind, spec = job
    d = _VARIANT_INPUTS
    if kind == "hemax":
        config: HemaXConfig = spec  # type: ignore[assignment]
        run = train_hemax(d["train"], d["val"], config, features=d["caches"][:2] if backbone_is_fixed(config) else None)
        run.model = run.model.cpu()
        return run, predict_hemax(run.model, d["test"], config.batch_size, _precision(config.precision), d["caches"][2])
    trainer, source = {"fasterrcnn": (train_faster_rcnn, "bccd"), "classifier": (train_plain_classifier, "pbc")}[kind]
    return trainer(*(_source(d[split], source) for split in ("train", "val", "test")), **spec)  # type: ignore[arg-type]


def run_variants(train: HemaXData, val: HemaXData, test: HemaXData, base: HemaXConfig,
                 hidden_layers: tuple[int, ...] = (0, 2, 4), seeds: tuple[int, ...] = (0,), workers: int = 1,
                 baselines: dict[str, dict] | None = None) -> dict:
    """Train HemaX with 0, 2 and 4 attribute hidden layers for each seed; return runs, test predictions and metrics.

    A fixed backbone's features (:func:`cache_features`) are computed once here and shared by every run.
    ``workers`` > 1 trains that many runs at a time in one-thread worker processes (:mod:`wbcstudy.parallel`).
    ``baselines`` maps ``"fasterrcnn"`` (BCCD cells) and/or ``"classifier"`` (PBC cells) to the keyword arguments
    of :func:`train_faster_rcnn` / :func:`train_plain_classifier`; they train after the HemaX runs, in the same
    workers, so that no core idles while the last HemaX run finishes.
    Returns ``{"runs": {(h, seed): HemaXRun}, "predictions": {(h, seed): Predictions}, "metrics": DataFrame,
    "baselines": {name: result}}`` (one metrics row per variant and seed).
    """
    from wbcstudy.parallel import run_jobs

    unknown = set(baselines or {}) - {"fasterrcnn", "classifier"}
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}: use 'fasterrcnn' and/or 'classifier'")
    precision = _precision(base.precision)
    caches: tuple[FeatureCache | None, ...] = (None, None, None)
    if backbone_is_fixed(base):  # the same fixed features for every variant and seed: computed once
        model = build_hemax(base)
        caches = (cache_features(model, train, base.flips, base.batch_size, precision),
                  cache_features(model, val, False, base.batch_size, precision),
                  cache_features(model, test, False, base.batch_size, precision))
    configs = [dataclasses.replace(base, attribute_hidden_layers=h, seed=seed, precision=precision)
               for h in hidden_layers for seed in seeds]
    jobs = [("hemax", cfg) for cfg in configs] + list((baselines or {}).items())
    try:
        outputs = run_jobs(_variant_job, jobs, workers, _share_variant_inputs, (train, val, test, caches))
    finally:
        _VARIANT_INPUTS.clear()  # set here when the jobs ran in this process
    runs, preds, rows = {}, {}, []
    for cfg, (run, pred) in zip(configs, outputs):
        key = (cfg.attribute_hidden_layers, cfg.seed)
        runs[key], preds[key] = run, pred
        rows.append({"hidden_layers": key[0], "seed": key[1], **hemax_metrics(pred, test), "seconds": run.seconds})
    done = dict(zip((name for name, _ in jobs[len(configs):]), outputs[len(configs):]))
    return {"runs": runs, "predictions": preds, "metrics": pd.DataFrame(rows), "baselines": done}


def choose_variant(runs: dict) -> int:
    """The paper's choice of attribute head — the variant with the best macro F1 — made on the *validation* split: the
    mean over a variant's seeds of the validation F1 at each run's kept (best) epoch. The test split chooses nothing.
    """
    scores: dict[int, list[float]] = {}
    for (h, _), run in runs.items():
        kept = run.history.loc[run.history["epoch"] == run.best_epoch, "val_f1"]
        scores.setdefault(h, []).append(float(kept.iloc[0]))
    if not scores:
        raise ValueError("no HemaX runs to choose from")
    return max(sorted(scores), key=lambda h: np.mean(scores[h]))


def variant_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Table I/II layout: metric × hidden layers, 'mean ± sd' over seeds (just the value with one seed)."""
    cols = [c for c in metrics.columns if c not in ("hidden_layers", "seed", "seconds")]
    out = {}
    for h, group in metrics.groupby("hidden_layers"):
        mean, sd = group[cols].mean(), group[cols].std(ddof=1)
        out[h] = [f"{m:.4f}" + (f" ± {s:.4f}" if len(group) > 1 else "") for m, s in zip(mean, sd)]
    return pd.DataFrame(out, index=cols).rename_axis(columns="hidden layers")


def attribute_auc_by_correctness(pred: Predictions, data: HemaXData) -> pd.DataFrame:
    """Table VI: one-vs-rest AUC of each attribute category among correctly and wrongly classified cells (NaN if
    one-sided)."""
    from sklearn.metrics import roc_auc_score

    correct = pred.pred_class == data.labels
    rows = []
    for a, (name, cats) in enumerate(ATTRIBUTES.items()):
        t = data.attributes[:, a]
        for k, cat in enumerate(cats):
            row = {"attribute": name, "category": cat}
            for group, sel in (("correct", correct), ("wrong", ~correct)):
                keep = sel & (t >= 0)
                y = (t[keep] == k).astype(int)
                row[f"auc_{group}"] = (float(roc_auc_score(y, pred.attribute_prob[a][keep, k]))
                                       if 0 < y.sum() < len(y) else np.nan)
                row[f"n_{group}"] = int(keep.sum())
            rows.append(row)
    return pd.DataFrame(rows)


def attribute_auc_by_attribute(table: pd.DataFrame, group: str = "wrong") -> dict[str, float]:
    """Each attribute's mean one-vs-rest AUC over its categories among ``group`` ("correct"/"wrong") cells, from
    :func:`attribute_auc_by_correctness`, and ``min``: the weakest attribute (the paper's claim that attributes stay
    informative on misclassified cells must hold for each, not only on average). Categories without an AUC are
    left out; an attribute with none is NaN."""
    column = f"auc_{group}"
    if column not in table:
        raise ValueError(f"group must be 'correct' or 'wrong', got {group!r}")
    out = {name: float(rows[column].mean()) if rows[column].notna().any() else float("nan")
           for name, rows in table.groupby("attribute", sort=False)}
    finite = [v for v in out.values() if np.isfinite(v)]
    out["min"] = min(finite) if finite else float("nan")
    return out


def class_attribute_modes(data: HemaXData) -> np.ndarray:
    """(C, A) the most frequent category of each attribute among ``data``'s cells of each class (−1 where a class has
    no labelled cell; ties to the lower category): what the class alone says about each attribute."""
    n_classes = len(CLASSES)
    modes = np.full((n_classes, len(ATTRIBUTES)), -1, dtype=int)
    for a, cats in enumerate(ATTRIBUTES.values()):
        for c in range(n_classes):
            t = data.attributes[(data.labels == c) & (data.attributes[:, a] >= 0), a]
            if len(t):
                modes[c, a] = int(np.bincount(t, minlength=len(cats)).argmax())
    return modes


def class_only_attribute_accuracy(modes: np.ndarray, classes: np.ndarray, data: HemaXData) -> dict[str, float]:
    """Attribute accuracy of a predictor that knows only the class: each cell's attributes are its class's modes
    (:func:`class_attribute_modes`, from the training cells), for ``classes`` (the true classes, or a model's
    predicted ones). Per attribute over the cells that have it labelled, and ``mean`` over the attributes. An
    attribute head that is no better than this has learned nothing but the class."""
    hits = attribute_hits(modes[classes], data.attributes)
    out = {name: float(np.nanmean(hits[:, a])) if np.isfinite(hits[:, a]).any() else float("nan")
           for a, name in enumerate(ATTRIBUTES)}
    out["mean"] = float(np.nanmean([out[name] for name in ATTRIBUTES]))
    return out


def _auc_keys(table: pd.DataFrame) -> dict[str, float]:
    """``attribute_auc_<group>`` (mean over categories), ``attribute_auc_<group>_<attribute>`` and
    ``attribute_auc_<group>_min`` for both groups, from :func:`attribute_auc_by_correctness`'s table."""
    out = {}
    for group in ("correct", "wrong"):
        out[f"attribute_auc_{group}"] = float(table[f"auc_{group}"].mean())
        out |= {f"attribute_auc_{group}_{name}": v for name, v in attribute_auc_by_attribute(table, group).items()}
    return out


def attribute_auc_over_seeds(preds: Sequence[Predictions], data: HemaXData, n_boot: int = 300,
                             seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Attribute AUCs among correctly and wrongly classified cells, averaged over the runs in ``preds`` (the seeds of
    one variant, scored on the same cells), with hierarchical 95 % intervals.

    Keys (:func:`_auc_keys`): ``attribute_auc_correct`` / ``_wrong`` (mean one-vs-rest AUC over all categories),
    ``attribute_auc_<group>_<attribute>`` (each attribute's mean over its categories) and
    ``attribute_auc_<group>_min`` (each run's weakest attribute, averaged over the runs: at most the weakest of the
    averaged attributes). Each replicate draws the runs with replacement, then, for
    each drawn run, the labelled cells with replacement, and averages the drawn runs' AUCs: the interval holds the
    seed-to-seed spread as well as the cells' sampling. A replicate where a key is undefined (a one-sided group) is
    left out of that key's interval.
    """
    import types

    from wbcstudy.intervals import percentile_interval

    labelled = np.flatnonzero((data.attributes >= 0).any(1))

    def keys(pred: Predictions, idx: np.ndarray) -> dict[str, float]:
        # only classes and attributes enter the AUCs: no images or masks are copied per resample
        return _auc_keys(attribute_auc_by_correctness(
            Predictions(pred.class_prob[idx], pred.boxes[idx], np.empty((len(idx), 0)),
                        [a[idx] for a in pred.attribute_prob], pred.nucleus_fraction[idx]),
            types.SimpleNamespace(labels=data.labels[idx], attributes=data.attributes[idx])))

    per_run = [keys(pred, labelled) for pred in preds]
    metrics = {k: float(np.nanmean([r[k] for r in per_run])) if any(np.isfinite(r[k]) for r in per_run)
               else float("nan") for k in per_run[0]}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in metrics}
    for _ in range(n_boot):
        drawn = [keys(preds[i], labelled[rng.integers(0, len(labelled), len(labelled))])
                 for i in rng.integers(0, len(preds), len(preds))]
        for k in draws:
            draws[k].append(float(np.mean([d[k] for d in drawn])))
    ci = {k: list(percentile_interval(v)) for k, v in draws.items() if np.isfinite(v).any()}  # the finite draws
    return metrics, ci


def class_only_comparison(train: HemaXData, test: HemaXData, preds: Sequence[Predictions], n_boot: int = 1000,
                          seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """What HemaX's attribute heads know beyond the class, on ``test``'s cells with attribute labels.

    The class-only predictor gives every cell its class's most frequent training categories
    (:func:`class_attribute_modes` of ``train``). Keys: ``class_only_attribute_accuracy`` (mean over attributes) and
    ``class_only_<attribute>_accuracy``, from the *true* class (what the class alone tells);
    ``hemax_attribute_accuracy`` (HemaX's mean attribute accuracy over ``preds``, its seeds);
    ``hemax_minus_class_only_attribute_accuracy`` and ``hemax_minus_class_only_<attribute>_accuracy``: HemaX's
    attribute hits minus those of the class-only predictor fed *HemaX's own predicted class*, per seed — positive
    only if the heads add to the class they predicted. Their
    intervals redraw the cells and the seeds (:func:`wbcstudy.intervals.seed_cell_difference`).
    """
    from wbcstudy.intervals import seed_cell_difference

    modes = class_attribute_modes(train)
    truth = class_only_attribute_accuracy(modes, test.labels, test)
    metrics = {"class_only_attribute_accuracy": truth["mean"],
               **{f"class_only_{name}_accuracy": truth[name] for name in ATTRIBUTES}}
    hemax_hits = np.stack([attribute_hits(p.pred_attributes, test.attributes) for p in preds])  # (seeds, cells, A)
    class_hits = np.stack([attribute_hits(modes[p.pred_class], test.attributes) for p in preds])
    metrics["hemax_attribute_accuracy"] = float(np.mean([np.nanmean(h, axis=0).mean() for h in hemax_hits]))
    ci: dict[str, list[float]] = {}
    gain = hemax_hits - class_hits
    columns = {"attribute_accuracy": None, **{f"{name}_accuracy": a for a, name in enumerate(ATTRIBUTES)}}
    for column, a in columns.items():
        with warnings.catch_warnings():  # a cell without any attribute label: NaN, left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            per_cell = np.nanmean(gain, axis=2) if a is None else gain[:, :, a]
        keep = np.isfinite(per_cell).all(0)
        key = f"hemax_minus_class_only_{column}"
        value, interval = seed_cell_difference(per_cell[:, keep], np.zeros((1, int(keep.sum()))), n_boot, seed)
        metrics[key], ci[key] = value, list(interval)
    return metrics, ci


def seed_metrics(preds: Sequence[Predictions], data: HemaXData, n_boot: int = 1000,
                 seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """:func:`hemax_metrics` averaged over runs scored on the same cells (a variant's seeds), with hierarchical 95 %
    intervals: each replicate draws the runs with replacement, then the cells within each (those with the metric's
    label), and averages the drawn runs' metric — the interval holds the seed-to-seed spread and the cells'
    sampling."""
    from sklearn.metrics import f1_score, precision_score

    from wbcstudy.intervals import hierarchical_bootstrap

    per_run = [hemax_metrics(p, data) for p in preds]
    metrics = {k: float(np.mean([m[k] for m in per_run])) for k in per_run[0]}
    ci: dict[str, list[float]] = {}
    tables = [per_cell_scores(p, data) for p in preds]
    mean = lambda _, v: float(np.mean(v))  # noqa: E731
    for key, col in CELL_COLUMNS.items():
        values = [t[col].dropna().to_numpy() for t in tables]
        if len(values[0]):
            ci[key] = list(hierarchical_bootstrap(mean, [(v, v) for v in values], n_boot, seed, pool=False)[1])
    classes = list(range(preds[0].class_prob.shape[1]))
    labelled = data.labels >= 0
    for key, fn in (("classification_precision", precision_score), ("classification_f1", f1_score)):
        score = lambda t, p, fn=fn: float(fn(t, p, labels=classes, average="macro", zero_division=0))  # noqa: E731
        groups = [(data.labels[labelled], p.pred_class[labelled]) for p in preds]
        ci[key] = list(hierarchical_bootstrap(score, groups, n_boot, seed, pool=False)[1])
    return metrics, ci


def faithfulness(pred: Predictions, data: HemaXData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pr(E | C = predicted class) from the model vs Pr(E | C = true class) from the labels, and their total variation.

    Over cells with the attribute labelled: p_model(e | c) is the share of cells *predicted* as c
    whose *predicted* attribute is e; p_true(e | c) the share of cells *truly* c whose *true*
    attribute is e. Returns the long table (class, attribute, category, p_model, p_true) and the
    total variation ½ Σ_e |p_model − p_true| per class and attribute (NaN when a side has no cells).
    """
    long_rows, tv_rows = [], []
    for a, (name, cats) in enumerate(ATTRIBUTES.items()):
        t = data.attributes[:, a]
        known = t >= 0
        pa = pred.pred_attributes[:, a]
        for c, cls in enumerate(CLASSES):
            by_pred = known & (pred.pred_class == c)
            by_true = known & (data.labels == c)
            pm = np.bincount(pa[by_pred], minlength=len(cats)) / max(by_pred.sum(), 1)
            pt = np.bincount(t[by_true], minlength=len(cats)) / max(by_true.sum(), 1)
            for k, cat in enumerate(cats):
                long_rows.append({"class": cls, "attribute": name, "category": cat, "p_model": pm[k], "p_true": pt[k]})
            tv = 0.5 * np.abs(pm - pt).sum() if by_pred.any() and by_true.any() else np.nan
            tv_rows.append({"class": cls, "attribute": name, "total_variation": tv,
                            "n_predicted": int(by_pred.sum()), "n_true": int(by_true.sum())})
    return pd.DataFrame(long_rows), pd.DataFrame(tv_rows)


# --------------------------------------------------------------------------- baselines
class _EfficientNetDetectorBackbone(nn.Module):
    """EfficientNet-Lite0 ImageNet features to stride 16 (HemaX's backbone) for torchvision's Faster R-CNN."""

    def __init__(self) -> None:
        super().__init__()
        from wbcstudy.models.hemax import _EfficientNetFeatures

        self.features = _EfficientNetFeatures(pretrained=True)
        self.out_channels = self.features.channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]


def _faster_rcnn(size: int, num_classes: int) -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    from wbcstudy.models.baselines import IMAGENET_MEAN, IMAGENET_STD

    anchors = AnchorGenerator(sizes=((size // 8, size // 4, size // 2),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(_EfficientNetDetectorBackbone(), num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), min_size=size, max_size=size,
                      image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                      rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                      rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64)


def _detector_batch(data: HemaXData, idx: np.ndarray,
                    device: torch.device = torch.device("cpu")) -> tuple[list[torch.Tensor], list[dict]]:
    size = data.images.shape[1]
    images = [(torch.from_numpy(data.images[i]).permute(2, 0, 1).float() / 255).to(device) for i in idx]
    targets = []
    for i in idx:
        cx, cy, w, h = data.boxes[i] * size
        targets.append({"boxes": torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]).to(device),
                        "labels": torch.tensor([int(data.labels[i]) + 1]).to(device)})
    return images, targets


@torch.no_grad()
def _detector_predict(model: nn.Module, data: HemaXData, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-scoring detection per image: (boxes cx, cy, w, h normalised; class index, −1 if none)."""
    model.eval()
    size = data.images.shape[1]
    boxes, labels = np.zeros((len(data), 4), np.float32), np.full(len(data), -1)
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        out = model(_detector_batch(data, idx, _device_of(model))[0])
        for i, o in zip(idx, out):
            if len(o["scores"]):
                x0, y0, x1, y1 = o["boxes"][0].cpu().numpy() / size
                boxes[i] = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
                labels[i] = int(o["labels"][0]) - 1
    return boxes, labels


def train_faster_rcnn(train: HemaXData, val: HemaXData, test: HemaXData, epochs: int, batch_size: int = 8,
                      lr: float = 1e-4, seed: int = 0, train_backbone: bool = True) -> dict:
    """Faster R-CNN (torchvision) with HemaX's EfficientNet-Lite0 backbone on the boxed images; keep the best val
    Jaccard.

    ``train_backbone=False`` keeps the ImageNet backbone fixed (as HemaX's when it is frozen): only the RPN and the box
    heads train.

    Returns ``{"history": DataFrame(epoch, train_loss, val_box_jaccard, val_accuracy), "box_iou": test IoUs,
    "pred": test class predictions, "seconds": float}``.
    """
    from wbcstudy.train import EngineConfig, run_task

    def make_task() -> _FasterRCNNTask:
        model = _faster_rcnn(train.images.shape[1], len(CLASSES))
        if not train_backbone:
            for p in model.backbone.parameters():
                p.requires_grad = False
        return _FasterRCNNTask(model, train, val, batch_size, lr, seed)

    # the detector trains in fp32 (torchvision's losses under autocast are not what the paper trained)
    run = run_task(make_task, EngineConfig(epochs=epochs, seed=seed, deterministic=None, precision="fp32",
                                           monitor="val_box_jaccard"))
    model = run.task.model
    boxes, labels = _detector_predict(model, test, batch_size)
    return {"history": run.history, "box_iou": box_iou_cxcywh(boxes, test.boxes), "pred": labels,
            "boxes": boxes, "seconds": run.seconds}


class _FasterRCNNTask(Task):
    """Faster R-CNN's part of ``run_task``: shuffled batches, the sum of torchvision's losses, the validation
    Jaccard."""

    def __init__(self, model: nn.Module, train: HemaXData, val: HemaXData, batch_size: int, lr: float,
                 seed: int) -> None:
        self.model, self.train, self.val, self.batch_size = model, train, val, batch_size
        self.modules = {"model": model}
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
        self.rng = np.random.default_rng(seed)

    def batches(self, epoch: int):
        order, self.total = self.rng.permutation(len(self.train)), 0.0
        for b in range(0, len(order), self.batch_size):
            yield order[b:b + self.batch_size]

    def training_step(self, idx: np.ndarray) -> list[Step]:
        images, targets = _detector_batch(self.train, idx, self.device)
        return [Step(lambda: sum(self.model(images, targets).values()), self.optimizer)]

    def after_step(self, idx: np.ndarray, losses: list[torch.Tensor]) -> bool:
        self.total += float(losses[0]) * len(idx)
        return False

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        boxes, labels = _detector_predict(self.model, self.val, self.batch_size)
        return {"train_loss": self.total / len(self.train),
                "val_box_jaccard": float(box_iou_cxcywh(boxes, self.val.boxes).mean()),
                "val_accuracy": float((labels == self.val.labels).mean())}


def train_plain_classifier(train: HemaXData, val: HemaXData, test: HemaXData, epochs: int, batch_size: int = 32,
                           lr: float = 1e-3, seed: int = 0, precision: str = "auto",
                           train_backbone: bool = True) -> dict:
    """EfficientNet-Lite0 (ImageNet) trained on the class labels alone, through the study's training loop.

    ``train_backbone=False`` trains only its new linear head on the fixed ImageNet features (matching a frozen HemaX).

    Returns ``{"history": DataFrame, "pred": test class predictions, "prob": test probabilities}``.
    """
    from wbcstudy.models.baselines import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0, with_input_adapter
    from wbcstudy.train import TrainConfig, fit, predict_proba

    torch.manual_seed(seed)
    model = with_input_adapter(efficientnet_lite0(len(CLASSES), freeze_base=not train_backbone), IMAGENET_MEAN,
                               IMAGENET_STD)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, precision=precision, progress=False)
    result = fit(model, (torch.from_numpy(train.images), torch.from_numpy(train.labels)),
                 (torch.from_numpy(val.images), torch.from_numpy(val.labels)), cfg, n_classes=len(CLASSES))
    torch.use_deterministic_algorithms(False)
    prob = predict_proba(result.model, torch.from_numpy(test.images), device="cpu")
    prob = prob.numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
    return {"history": result.history, "pred": prob.argmax(1), "prob": prob, "seconds": result.seconds}


def attribute_roc_curves(pred: Predictions, data: HemaXData) -> pd.DataFrame:
    """One-vs-rest ROC curve per attribute category over the cells with that attribute: attribute, category, fpr, tpr,
    auc."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rows = []
    for a, (name, cats) in enumerate(ATTRIBUTES.items()):
        t = data.attributes[:, a]
        keep = t >= 0
        for k, cat in enumerate(cats):
            y = (t[keep] == k).astype(int)
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = roc_curve(y, pred.attribute_prob[a][keep, k])
                rows.append({"attribute": name, "category": cat, "fpr": fpr, "tpr": tpr,
                             "auc": float(roc_auc_score(y, pred.attribute_prob[a][keep, k]))})
    return pd.DataFrame(rows)


def variant_hits(variants: dict, test: HemaXData, hidden: int, metric: str) -> np.ndarray:
    """(seeds, cells) one variant's per-cell hits for a metric, one row per seed (NaN where the cell lacks the
    label)."""
    column = CELL_COLUMNS[metric]
    hits = [per_cell_scores(pred, test)[column].to_numpy(float)
            for (h, _), pred in variants["predictions"].items() if h == hidden]
    if not hits:
        raise ValueError(f"no run with {hidden} attribute hidden layers among {sorted(variants['predictions'])}")
    return np.stack(hits)


def variant_difference(variants: dict, test: HemaXData, a: int, b: int, metric: str, n_boot: int = 1000,
                       seed: int = 0) -> tuple[float, list[float]]:
    """Accuracy of the a-hidden-layer variant minus the b-hidden-layer one, each averaged over its seeds, with an
    interval that redraws both the test cells that carry the label and each variant's seeds
    (:func:`wbcstudy.intervals.seed_cell_difference`): it holds the run-to-run spread as well as the cell sampling.
    """
    from wbcstudy.intervals import seed_cell_difference

    value, interval = seed_cell_difference(variant_hits(variants, test, a, metric),
                                           variant_hits(variants, test, b, metric), n_boot, seed)
    return value, list(interval)


def build_results(variants: dict, best_hidden: int, train: HemaXData, test: HemaXData, frcnn: dict, classifier: dict,
                  n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    """The chapter's metrics, 95 % intervals, plateau flags and interval kinds (results contract) from its runs.

    Headline keys are the ``best_hidden`` variant's means over its seeds, with hierarchical intervals (seeds, then
    cells): Table I/II metrics (:func:`seed_metrics`), ``faithfulness_tv_mean``, the attribute AUCs among correctly
    and wrongly classified cells, per attribute and the weakest (:func:`attribute_auc_over_seeds`), the class-only
    attribute baseline built from ``train`` (:func:`class_only_comparison`) and the HemaX − baseline differences on the
    same test cells (each baseline trained once; HemaX's seeds redrawn in the interval). ``hidden{h}_*`` hold each
    variant's seed-mean metrics and their seed standard deviations, ``hidden0_minus_hidden4_*`` the paper's 0 − 4
    comparison (:func:`variant_difference`).
    """
    from sklearn.metrics import f1_score

    from wbcstudy.intervals import bootstrap_metric, percentile_interval, resample_indices, seed_cell_difference
    from wbcstudy.train import reached_plateau

    keys = sorted(k for k in variants["predictions"] if k[0] == best_hidden)
    preds = [variants["predictions"][k] for k in keys]
    metrics, ci = seed_metrics(preds, test, n_boot, seed)
    metrics["faithfulness_tv_mean"] = float(np.mean([faithfulness(p, test)[1]["total_variation"].mean()
                                                     for p in preds]))
    auc_metrics, auc_ci = attribute_auc_over_seeds(preds, test, min(n_boot, 300), seed)
    class_metrics, class_ci = class_only_comparison(train, test, preds, n_boot, seed)
    metrics |= auc_metrics | class_metrics
    ci |= auc_ci | class_ci
    kinds = dict.fromkeys(ci, "hierarchical")  # every interval so far redraws the seeds and the cells
    for h, group in variants["metrics"].groupby("hidden_layers"):
        for col in ["classification_accuracy", "classification_f1", *[f"{a}_accuracy" for a in ATTRIBUTES], "mask_dice",
                    "box_jaccard", "nc_ratio_mse"]:
            metrics[f"hidden{h}_{col}"] = float(group[col].mean())
            if len(group) > 1:
                metrics[f"hidden{h}_{col}_seed_sd"] = float(group[col].std(ddof=1))
        metrics[f"hidden{h}_seeds"] = int(len(group))
    hidden = sorted({h for h, _ in variants["runs"]})
    if 0 in hidden and 4 in hidden:  # Tables I–II: the paper's 0- vs 4-hidden-layer comparison
        for col in ("classification_accuracy", "nucleus_shape_accuracy", "cytoplasm_colour_accuracy"):
            name = f"hidden0_minus_hidden4_{col}"
            metrics[name], ci[name] = variant_difference(variants, test, 0, 4, col, n_boot, seed)
            kinds[name] = "hierarchical"
    # Faster R-CNN (one run) vs HemaX (its seeds) on the BCCD test smears
    bccd = test.source == "bccd"
    hemax_iou = np.stack([box_iou_cxcywh(p.boxes[bccd], test.boxes[bccd]) for p in preds])  # (seeds, smears)
    hemax_hit = np.stack([(p.pred_class[bccd] == test.labels[bccd]).astype(float) for p in preds])
    frcnn_iou, frcnn_hit = np.asarray(frcnn["box_iou"], float), (frcnn["pred"] == test.labels[bccd]).astype(float)
    metrics["fasterrcnn_box_jaccard"] = float(frcnn_iou.mean())
    metrics["fasterrcnn_accuracy"] = float(frcnn_hit.mean())
    metrics["hemax_bccd_box_jaccard"] = float(hemax_iou.mean())
    idx = resample_indices(int(bccd.sum()), n_boot, seed)
    ci["fasterrcnn_box_jaccard"], kinds["fasterrcnn_box_jaccard"] = list(percentile_interval(
        frcnn_iou[idx].mean(1))), "cells"
    for name, a, b in (("hemax_minus_fasterrcnn_box_jaccard_difference", hemax_iou, frcnn_iou),
                       ("hemax_minus_fasterrcnn_accuracy", hemax_hit, frcnn_hit)):
        value, interval = seed_cell_difference(a, b[None], n_boot, seed)
        metrics[name], ci[name], kinds[name] = value, list(interval), "hierarchical"
    # plain classifier (one run) vs HemaX's seeds on the PBC test cells
    pbc = test.source == "pbc"
    acc = lambda t, p: float(np.mean(t == p))  # noqa: E731
    metrics["classifier_accuracy"] = acc(test.labels[pbc], classifier["pred"])
    ci["classifier_accuracy"] = list(bootstrap_metric(acc, test.labels[pbc], classifier["pred"], n_boot, seed))
    kinds["classifier_accuracy"] = "cells"
    hemax_hits = variant_hits(variants, test, best_hidden, "classification_accuracy")[:, pbc]
    classifier_hits = (np.asarray(classifier["pred"]) == test.labels[pbc]).astype(float)[None]
    diff, interval = seed_cell_difference(hemax_hits, classifier_hits, n_boot, seed)
    metrics["hemax_minus_classifier_accuracy"], ci["hemax_minus_classifier_accuracy"] = diff, list(interval)
    kinds["hemax_minus_classifier_accuracy"] = "hierarchical"
    macro_f1 = lambda t, p: float(f1_score(t, p, labels=list(range(len(CLASSES))), average="macro",  # noqa: E731
                                           zero_division=0))
    metrics["classifier_f1"] = macro_f1(test.labels[pbc], classifier["pred"])
    # the plateau flag is the levelled-off validation loss, whatever stopped the run (patience or the epoch cap)
    plateau = {f"hemax_h{h}_s{s}": reached_plateau(run.history["val_loss"].tolist(), mode="min",
                                                   tol=run.config.plateau_tol)
               for (h, s), run in variants["runs"].items()}
    for h in hidden:  # a variant has reached its plateau when every one of its seeds has
        plateau[f"hemax_h{h}"] = all(v for k, v in plateau.items() if k.startswith(f"hemax_h{h}_s"))
    plateau["hemax"] = plateau[f"hemax_h{best_hidden}"]
    plateau["fasterrcnn"] = reached_plateau(frcnn["history"]["val_box_jaccard"].tolist(), mode="max", tol=0.02)
    plateau["classifier"] = reached_plateau(classifier["history"]["val_accuracy"].tolist(), mode="max", tol=0.01)
    ci = {k: v for k, v in ci.items() if k in metrics}
    return metrics, ci, plateau, {k: v for k, v in kinds.items() if k in ci}


@dataclass
class Parameters:
    """The HemaX chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("hemax", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where hemax.json is written (relative to the project root)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    seed: int = 0  # seeds subsets, weight init, shuffling and flips
    #: training seeds per attribute-head variant (Tables I–II: mean ± sd over them)
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    workers: int = 2  # HemaX runs trained at a time, each in a one-thread process (1: one after another, here)
    image_size: int = 96  # every image resized to this square (px)
    train_pbc: int = 1000  # PBC+WBCAtt training cells (0: all 6,160)
    train_zheng: int = 0  # Zheng 2018 training cells (0: all)
    train_bccd: int = 0  # BCCD training smears (0: all usable)
    eval_pbc: int = 300  # PBC cells in validation (0: all 1,029 of WBCAtt's validation split)
    test_pbc: int = 0  # PBC cells in test (0: all 3,094 of WBCAtt's test split)
    eval_zheng: int = 0  # Zheng cells in validation and in test (0: all)
    eval_bccd: int = 0  # BCCD smears in validation and in test (0: all)
    backbone: str = 'efficientnet_lite0'  # "efficientnet_lite0" (ImageNet, offline) or "resnet50" (from scratch)
    #: False: the ImageNet backbone is a fixed feature extractor for HemaX and both baselines
    train_backbone: bool = False
    d_model: int = 128  # transformer width
    encoder_layers: int = 2  # transformer encoder layers
    decoder_layers: int = 2  # transformer decoder layers
    ffn_dim: int = 512  # transformer feed-forward width
    num_queries: int = 5  # object queries per image
    mask_dim: int = 32  # per-pixel mask embedding width
    fpn_dim: int = 32  # pixel-decoder width
    epochs: int = 24  # most HemaX epochs per run; each stops earlier when its validation loss stops improving
    lr_drop: int = 13  # learning rates /10 after this many epochs (DETR's step schedule, at 2/3 of a typical run's 20)
    patience: int = 4  # stop a HemaX run when its validation loss has not improved for this many epochs ...
    stop_after_drop: int = 2  # ... but never before this many epochs past the learning-rate drop
    batch_size: int = 32  # images per step
    lr: float = 0.0002  # AdamW learning rate (transformer and heads)
    lr_backbone: float = 5e-05  # AdamW learning rate of the backbone
    hidden_layers: list = field(default_factory=lambda: [0, 2, 4])  # attribute-head variants compared (Tables I–II)
    fasterrcnn_epochs: int = 12  # Faster R-CNN baseline epochs (BCCD)
    classifier_epochs: int = 30  # plain classifier epochs (PBC)
    n_boot: int = 1000  # bootstrap resamples for intervals
