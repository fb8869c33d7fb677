"""Benchmark adapters for four chapters' classifiers: W-Net, the trust chapter's CNN, ResNet-18 and EfficientNet-Lite0.

Each ``benchmark_<key>(profile, seed, precision)`` trains that chapter's headline model on PBC's five WBC classes
(``pbc5``: the training split to learn, the validation split to choose the epoch or stop; the test split is never
touched) by calling the chapter's own package functions with the chapter's parameters at ``profile``
(its typed ``Parameters``, ``run.chapter_parameters``), and returns a :class:`~wbcstudy.benchmark.base.BenchmarkModel`
that the model store can save (``module`` + ``factory``). Images come from the same decoded-array cache the benchmark
evaluates on, at the model's own resolution and crop (``pbc5_split``).

What differs from the chapters, by necessity: the chapters train W-Net in 5-fold cross-validation and ResNet-18 on
PBC-8's eight classes; here each trains once on ``pbc5``'s training split. The chapters resize from a 64-px decode
(W-Net: 2×2 box averages of the 64-px ``wnet`` crop; the trust chapter: a bilinear resize of the 64-px window); here
every model's images are decoded straight at its own size, for training and testing alike.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from wbcstudy.benchmark.base import (
    WBC5,
    BenchmarkModel,
    attach_predictors,
    check_images,
    pbc5_split,
    unset_predict,
)
from wbcstudy.run import chapter_parameters
from wbcstudy.train import precision_forced

__all__ = ["classifier_predictors", "benchmark_wnet", "benchmark_trust_cnn", "benchmark_resnet18",
           "benchmark_efficientnet_lite0", "RESNET18_SIZE", "FACTORY"]

#: The dotted name of this module's predict factory (stored with every model these adapters train).
FACTORY: str = "wbcstudy.benchmark.classifiers:classifier_predictors"
#: The Baseline chapter's headline ResNet-18 resolution (its ``resnet18_64`` model; fixed in the chapter, not a
#: parameter).
RESNET18_SIZE: int = 64


def classifier_predictors(module: torch.nn.Module, meta: dict, precision: str = "auto"):
    """``(predict, None)`` for a network that maps uint8 NHWC images to logits (an ``InputAdapter`` first): ``predict``
    returns softmax probabilities (``wbcstudy.train.predict_proba``, batches of 256) and refuses images that are not
    at the model's ``image_size``; the anomaly score is the default (one minus the top probability)."""
    from wbcstudy.train import predict_proba

    size = int(meta["image_size"])
    module.eval()

    def predict(images: np.ndarray) -> np.ndarray:
        x = check_images(meta["key"], size, images)
        return predict_proba(module, torch.from_numpy(np.array(x, copy=True)), precision=precision)

    return predict, None


def _subset(x: np.ndarray, y: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of about ``limit`` rows (all rows for 0), as the chapters draw them."""
    from wbcstudy.data import stratified_subset

    keep = stratified_subset(y, limit, seed)
    return np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])


# --------------------------------------------------------------------------------------------------------- W-Net
def benchmark_wnet(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """W-Net (the W-Net chapter's cross-validated model, trained here once) at ``wnet_size`` px on the paper's
    border crop: ``models.build("wnet", dropout=...)`` behind an input adapter with the training cells' channel
    statistics, ``experiments.wnet.until_plateau(wnet_max_epochs, batch_size, wnet_lr)`` (Adam, constant rate, stop at
    the plateau of the validation balanced accuracy, best epoch kept), flips and 90° rotations, ``val_limit``
    validation cells. ``data_limit`` (smoke) keeps the training split's share of that many cells."""
    from wbcstudy.augment import flips_and_rot90
    from wbcstudy.data import channel_mean_std, load_manifest
    from wbcstudy.experiments.wnet import until_plateau
    from wbcstudy.models import build, with_input_adapter
    from wbcstudy.train import fit, reached_plateau

    p = chapter_parameters("wnet", profile)
    size, crop = p.wnet_size, "wnet"
    with precision_forced(precision):
        x_tr, y_tr = pbc5_split("train", size, crop)
        x_va, y_va = pbc5_split("val", size, crop)
        if p.data_limit:
            x_tr, y_tr = _subset(x_tr, y_tr, round(p.data_limit * len(y_tr) / len(load_manifest("pbc5"))), seed)
        x_va, y_va = _subset(x_va, y_va, p.val_limit, seed + 1)
        mean, std = channel_mean_std(x_tr)
        torch.manual_seed(seed)
        net = with_input_adapter(build("wnet", len(WBC5), image_size=size, dropout=p.dropout), mean, std)
        config = until_plateau(p.wnet_max_epochs, p.batch_size, p.wnet_lr, seed=seed)
        result = fit(net, (torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                     (torch.from_numpy(x_va), torch.from_numpy(y_va)), config, augment=flips_and_rot90,
                     n_classes=len(WBC5))
    plateau = bool(reached_plateau(result.history["val_balanced_accuracy"].tolist()))
    note = (f"W-Net at {size} px, wnet crop; trained once on pbc5's training split ({len(y_tr)} cells; the chapter "
            f"cross-validates on 5 folds), {len(result.history)} of at most {p.wnet_max_epochs} epochs, best epoch "
            f"{result.best_epoch} on {len(y_va)} validation cells")
    model = BenchmarkModel("wnet", "W-Net", "wnet", size, crop, unset_predict, result.seconds, plateau, asdict(p),
                           result.history, note, module=result.model, factory=FACTORY)
    return attach_predictors(model, precision)


# ------------------------------------------------------------------------------------------- the trust chapter
def _trust_model(key: str, arch: str, name: str, size: int, epochs: int, lr: float, profile: str,
                 seed: int, precision: str, **spec_options) -> BenchmarkModel:
    """One of the trust chapter's models through its own ``train_trust_model`` (best validation epoch kept), trained
    on ``train_limit`` training and ``eval_limit`` validation cells with the chapter's augmentation (``keras_affine``
    resampled with ``augment_resampling``)."""
    from functools import partial

    from wbcstudy.augment import keras_affine
    from wbcstudy.experiments.trust import TrustModelConfig, stratified_tensors, train_trust_model

    p = chapter_parameters("trust", profile)
    with precision_forced(precision):
        x_tr, y_tr = pbc5_split("train", size)
        x_va, y_va = pbc5_split("val", size)
        train = stratified_tensors(x_tr, y_tr, p.train_limit, seed)  # the chapter's seeds: train seed, val seed + 1
        val = stratified_tensors(x_va, y_va, p.eval_limit, seed + 1)
        spec = TrustModelConfig(arch, size, epochs, lr, **spec_options)
        # train_trust_model also predicts a "test" batch: it gets one validation cell, so the test split stays unseen
        run = train_trust_model(spec, train, val, val[0][:1], len(WBC5), p.batch_size, seed,
                                augment=partial(keras_affine, mode=p.augment_resampling))
    history = run.result.history
    note = (f"{run.name} at {size} px as in the trust chapter: {len(history)} epochs, best epoch "
            f"{run.result.best_epoch} on {len(val[1])} validation cells; {run.train_size} training cells; augmentation "
            f"resampled {p.augment_resampling}")
    model = BenchmarkModel(key, name, "trust", size, "none", unset_predict, run.result.seconds, bool(run.plateau),
                           asdict(p), history, note, module=run.model, factory=FACTORY)
    return attach_predictors(model, precision)


def benchmark_trust_cnn(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """The trust chapter's custom CNN (``TrustCNN``) at ``cnn_size`` px: ``cnn_epochs`` epochs of Adam (no weight decay,
    one-cycle to ``cnn_lr``), as the chapter's ``TrustModelConfig("cnn", ..., optimizer="adam", weight_decay=0.0)``."""
    p = chapter_parameters("trust", profile)
    return _trust_model("trust_cnn", "cnn", "Trust CNN", p.cnn_size, p.cnn_epochs, p.cnn_lr, profile, seed, precision,
                        optimizer="adam", weight_decay=0.0)


def benchmark_efficientnet_lite0(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """EfficientNet-Lite0 from its ImageNet weights, fine-tuned end to end as in the trust chapter
    (``effnet_lite0_finetuned``: ``effnet_finetuned_epochs`` epochs of AdamW, one-cycle to ``finetune_lr``) at
    ``effnet_size`` px. The chapter's frozen-base variant is not benchmarked: the fine-tuned one is its stronger
    model."""
    p = chapter_parameters("trust", profile)
    model = _trust_model("efficientnet_lite0", "effnet_lite0_finetuned", "EfficientNet-Lite0", p.effnet_size,
                         p.effnet_finetuned_epochs, p.finetune_lr, profile, seed, precision)
    model.note += "; ImageNet weights, fine-tuned end to end (the chapter's frozen-base variant is not benchmarked)"
    return model


# ------------------------------------------------------------------------------------------------ the baseline
def benchmark_resnet18(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """The Baseline chapter's ResNet-18 at 64 px, one seed: ``experiments.baseline.train_classifier("resnet18", ...)``
    with the chapter's recipe (AdamW to ``lr`` on its ``scheduler`` with ``cooldown`` and ``budget_check``,
    ``weight_decay``, ``label_smoothing``, ``batch_size``, ``resnet18_64_epochs``, ``zero_init_residual``, random flips
    and 90° rotations, best validation epoch kept; plateau by the chapter's test and ``plateau_tol``) on
    ``train_limit`` / ``eval_limit`` cells — on pbc5's five classes instead of the chapter's PBC-8."""
    from dataclasses import replace

    from wbcstudy.augment import random_dihedral
    from wbcstudy.data import channel_mean_std
    from wbcstudy.experiments.baseline import plateaus, train_classifier
    from wbcstudy.train import TrainConfig

    p = chapter_parameters("baseline", profile)
    size = RESNET18_SIZE
    with precision_forced(precision):
        x_tr, y_tr = _subset(*pbc5_split("train", size), p.train_limit, seed)  # load_pbc_arrays' subsets and seed
        x_va, y_va = _subset(*pbc5_split("val", size), p.eval_limit, seed)
        val = (torch.from_numpy(x_va), torch.from_numpy(y_va))
        # train_classifier also predicts a "test" split: it gets one validation cell, so the test split stays unseen
        data = {size: {"train": (torch.from_numpy(x_tr), torch.from_numpy(y_tr)), "val": val,
                       "test": (val[0][:1], val[1][:1])}}
        config = TrainConfig(batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay,
                             label_smoothing=p.label_smoothing, seed=seed, progress=False, precision=precision,
                             scheduler=p.scheduler, cooldown=p.cooldown, budget_check=p.budget_check)
        mean, std = channel_mean_std(x_tr)
        run = train_classifier("resnet18", size, data, replace(config, epochs=p.resnet18_64_epochs), mean, std,
                               len(WBC5), augment=random_dihedral, zero_init_residual=True)
    result = run[0]
    plateau = bool(plateaus({"resnet18": run}, tol=p.plateau_tol)["resnet18"])
    note = (f"ResNet-18 from scratch at {size} px, seed {seed} (the chapter's headline is the mean of 3 seeds on "
            f"PBC-8); {len(result.history)} epochs, best epoch {result.best_epoch} on {len(y_va)} validation cells; "
            f"{len(y_tr)} training cells")
    model = BenchmarkModel("resnet18", "ResNet-18", "baseline", size, "none", unset_predict, result.seconds, plateau,
                           asdict(p), result.history, note, module=result.model, factory=FACTORY)
    return attach_predictors(model, precision)
