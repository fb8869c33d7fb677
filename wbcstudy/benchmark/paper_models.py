"""The summary's three paper models, each trained by its chapter's own package functions on PBC's five WBC classes.

- ``resnext_cc``: ResNeXt-CC (HSV input, cross-layer fusion, ECA down-sampling) with its chapter's headline parameters,
  widened to five classes; its loss is :class:`wbcstudy.losses.OneVsRestWeightedBCECenterLoss` (the chapter's weighted
  BCE, one class against the rest, plus center loss).
- ``hemax``: HemaX's class head, trained as its chapter trains it (WBCAtt's PBC cells, Zheng masks, BCCD boxes) on
  every cell that is *not* a ``pbc5`` test cell (:func:`exclude_pbc5_test`).
- ``cytodiffusion``: the class-conditional diffusion classifier of the chapter's 5-class domain-shift model; its
  probabilities are a softmax of the negative normalised errors at a temperature fitted on validation cells.

Each adapter is ``benchmark_<key>(profile, seed=0, precision="auto") -> BenchmarkModel`` and follows the store's
contract (``wbcstudy.benchmark.base``): ``parameters`` holds the chapter's parameters at the profile (what the
store compares), ``module`` is ``{"net": the trained nn.Module, "meta": facts made in training}`` (the temperature,
the weighting, the cells used), and ``factory`` names ``predictor_<key>(module, meta, precision) -> (predict,
anomaly_score or None)``, with which the adapter builds its own predict too, so a stored model predicts as the fresh
one did. Only training and validation cells of ``pbc5`` (and, for HemaX, other sources' cells) are used; validation
chooses epochs, weightings and temperatures, never the test cells.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from wbcstudy.benchmark.base import (
    WBC5,
    BenchmarkModel,
    Predict,
    attach_predictors,
    check_images,
    pbc5_split,
    unset_predict,
)
from wbcstudy.data.transforms import stratified_subset
from wbcstudy.run import chapter_parameters

__all__ = [
    "benchmark_resnext_cc", "predictor_resnext_cc", "pbc5_test_paths",
    "exclude_pbc5_test", "benchmark_data_sets", "hemax_headline_hidden", "hemax_class_probabilities",
    "benchmark_hemax", "predictor_hemax",
    "CYTODIFFUSION_TEST_CELLS", "CYTODIFFUSION_PERTURBED_CELLS", "errors_to_probabilities", "fit_temperature",
    "CYTODIFFUSION_INPUT_SIZE", "benchmark_cytodiffusion", "predictor_cytodiffusion", "FACTORIES",
]

Anomaly = Callable[[np.ndarray], np.ndarray]


def _checked(meta: dict, fn: Callable[[np.ndarray], np.ndarray]) -> Predict:
    """``fn`` behind a check that the images are uint8 (N, S, S, 3) at the model's ``image_size``; rows renormalised."""
    size = int(meta["image_size"])

    def predict(images: np.ndarray) -> np.ndarray:
        x = check_images(meta["key"], size, images)
        prob = np.asarray(fn(np.ascontiguousarray(x)), dtype=np.float64)
        return prob / prob.sum(axis=1, keepdims=True)

    return predict


# ----------------------------------------------------------------------------------------------------- ResNeXt-CC
def predictor_resnext_cc(module: dict, meta: dict, precision: str = "auto") -> tuple[Predict, None]:
    """``(predict, None)``: ResNeXt-CC's softmax probabilities (its HSV conversion and normalisation are inside the
    network); the anomaly score is the default one."""
    from wbcstudy.train import predict_proba

    net = module["net"].eval()
    return _checked(meta, lambda x: predict_proba(net, torch.from_numpy(x), precision=precision)), None


def benchmark_resnext_cc(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """ResNeXt-CC (the chapter's full model at its scale) trained on ``pbc5`` train with the chapter's parameters, 5
    classes.

    The chapter's optimiser (AdamW with ``AblationConfig``'s weight decay, one-cycle), learning rate, batch size,
    epochs, augmentation (the 8 symmetries of the square), image size, center-loss β and rate come from
    ``run.chapter_parameters("resnext_cc", profile)``; the full model's components from ``variant_spec("full")``. The
    epoch kept is the best on ``pbc5`` validation (the chapter has no validation split and keeps its last epoch). The
    parameter ``train_limit`` (smoke) keeps a stratified subset of training and of validation cells.
    """
    from wbcstudy.augment import flips_and_rot90
    from wbcstudy.experiments import resnext_cc as rcc
    from wbcstudy.losses import OneVsRestWeightedBCECenterLoss, class_shares
    from wbcstudy.models import build
    from wbcstudy.models.resnext_cc import colour_mean_std
    from wbcstudy.train import TrainConfig, fit, reached_plateau

    p = chapter_parameters("resnext_cc", profile)
    size, limit = int(p.image_size), int(p.train_limit)
    train_x, train_y = pbc5_split("train", size)
    val_x, val_y = pbc5_split("val", size)
    keep, keep_val = stratified_subset(train_y, limit, seed), stratified_subset(val_y, limit, seed + 1)
    train_x, train_y, val_x, val_y = train_x[keep], train_y[keep], val_x[keep_val], val_y[keep_val]
    config = rcc.AblationConfig(model_scale=p.model_scale, epochs=int(p.epochs), batch_size=int(p.batch_size),
                                lr=float(p.lr), center_weight=float(p.center_weight),
                                center_alpha=float(p.center_alpha))
    spec = rcc.variant_spec("full")
    mean, std = colour_mean_std(train_x, str(spec["colour"]))
    torch.manual_seed(seed)
    net = build("resnext_cc", len(WBC5), size=config.model_scale, depth=int(spec["depth"]), fusion=spec["fusion"],
                downsampling=spec["downsampling"], colour=spec["colour"], mean=mean, std=std)
    loss_fn = OneVsRestWeightedBCECenterLoss(class_shares(torch.from_numpy(train_y), len(WBC5)), net.channels,
                                             center_weight=config.center_weight, alpha=config.center_alpha)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               weight_decay=config.weight_decay, seed=seed, precision=precision, progress=False,
                               monitor="val_accuracy")
    result = fit(net, (torch.from_numpy(train_x), torch.from_numpy(train_y)),
                 (torch.from_numpy(val_x), torch.from_numpy(val_y)), train_config, augment=flips_and_rot90,
                 loss_fn=loss_fn, n_classes=len(WBC5))
    facts = {"train_cells": len(train_y), "val_cells": len(val_y), "best_epoch": int(result.best_epoch),
             "weight_decay": config.weight_decay, **{f"full_{k}": v for k, v in spec.items()}}
    note = (f"ResNeXt-CC's full model (HSV input, conv5_1+conv5_3 fusion, ECA down-sampling) at the chapter's "
            f"{config.model_scale} scale and {size} px with 5 outputs. Loss: the chapter's weighted BCE taken one "
            "class against the rest on the softmax probabilities (each class's positives weighted by the other "
            f"classes' share; exactly the chapter's binary loss at 2 classes) + {config.center_weight} x center loss "
            f"with 5 centres. {len(train_y)} pbc5 training cells, {config.epochs} epochs (the chapter's, on 208 "
            f"ALL-IDB2 cells), best of {len(val_y)} validation cells' accuracy kept (epoch {result.best_epoch}; the "
            f"chapter keeps its last epoch).")
    model = BenchmarkModel("resnext_cc", "ResNeXt-CC", "resnext_cc", size, "none", unset_predict, float(result.seconds),
                           bool(reached_plateau(result.history["val_accuracy"].tolist())), asdict(p), result.history,
                           note, module={"net": result.model.cpu().eval(), "meta": facts},
                           factory=f"{__name__}:predictor_resnext_cc")
    return attach_predictors(model, precision)


# ----------------------------------------------------------------------------------------------------------- HemaX
def pbc5_test_paths() -> set[str]:
    """Data-root-relative paths of the ``pbc5`` test cells (the summary's benchmark cells)."""
    from wbcstudy.data.construct import load_manifest

    df = load_manifest("pbc5")
    return set(df.loc[df["split"] == "test", "path"].astype(str))


def benchmark_data_sets(keys: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """What each benchmarked model trained and validated on, and every set the benchmark scores it on, as
    ``wbcstudy.data.leaks`` selections (for ``write_results(data_sets=...)``, which refuses a model scored on an image
    it learned from). Every adapter learns from ``pbc5``'s train split and chooses on its val split, except HemaX:
    WBCAtt's train/val PBC cells without the ``pbc5`` test cells (:func:`benchmark_hemax`; no Zheng, no BCCD). The
    evaluation sets: ``pbc5`` test, PBC-8's test cells of the unseen classes (anomaly), and the shift sets."""
    from wbcstudy.benchmark.base import ANOMALY_CLASSES
    from wbcstudy.data.shift import SHIFT_SETS

    def pbc5(split: str) -> dict:
        return {"manifest": "pbc5", "where": {"split": [split]}}

    evals = {"PBC-5 test": [pbc5("test")],
             "PBC-8 test, unseen classes": [{"manifest": "pbc8", "where": {"split": ["test"],
                                                                            "label": list(ANOMALY_CLASSES)}}],
             **{title: [{"manifest": name}] for name, title in SHIFT_SETS.items()}}
    out = {}
    for key in keys:
        if key == "hemax":
            out[key] = {"train": [{"manifest": "wbcatt", "where": {"split": ["train"]}, "except": [pbc5("test")]}],
                        "val": [{"manifest": "wbcatt", "where": {"split": ["val"]}, "except": [pbc5("test")]}],
                        "eval": evals}
        else:
            out[key] = {"train": [pbc5("train")], "val": [pbc5("val")], "eval": evals}
    return out


def exclude_pbc5_test(data, test_paths: set[str] | None = None):
    """``(data without its PBC rows that are pbc5 test cells, number dropped)``. A row matches by its path or, should
    the manifests ever spell the folders differently, by its file name among the pbc5 test files."""
    import os

    test_paths = pbc5_test_paths() if test_paths is None else set(test_paths)
    names = {os.path.basename(p) for p in test_paths}
    hit = np.array([p in test_paths or os.path.basename(p) in names for p in data.path.astype(str)], dtype=bool)
    drop = (data.source == "pbc") & hit
    return data.subset(np.flatnonzero(~drop)), int(drop.sum())


def hemax_headline_hidden(hidden_layers: list[int], results_path: str | None = None) -> int:
    """The attribute head the HemaX chapter headlines: the ``best_hidden`` its published results record (chosen by
    validation F1, ``experiments.hemax.choose_variant``), when it is among ``hidden_layers``; the first variant when no
    results are published or they name none of these."""
    import json
    from pathlib import Path

    from wbcstudy.paths import results_dir

    hidden = [int(h) for h in hidden_layers]
    path = Path(results_path) if results_path else results_dir() / "hemax.json"
    try:
        chosen = int(json.loads(path.read_text())["best_hidden"])
    except (OSError, KeyError, ValueError, TypeError):
        return hidden[0]
    return chosen if chosen in hidden else hidden[0]


def hemax_class_probabilities(class_prob: np.ndarray, classes: list[str]) -> np.ndarray:
    """HemaX's class probabilities (``predict_hemax`` has dropped the no-object column and renormalised the rest)
    with the columns put in :data:`WBC5` order and each row renormalised."""
    prob = np.asarray(class_prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] != len(classes) or sorted(classes) != sorted(WBC5):
        raise ValueError(f"HemaX classes {classes} (probabilities {prob.shape}) are not the five WBC5 classes")
    prob = prob[:, [list(classes).index(c) for c in WBC5]]
    return prob / prob.sum(axis=1, keepdims=True)


def _hemax_data(images: np.ndarray):
    """Unlabelled single-cell images as a ``HemaXData`` (every label unknown)."""
    from wbcstudy.data.hemax import HemaXData

    n, size = len(images), images.shape[1]
    return HemaXData(images=images, labels=np.full(n, -1, np.int64), boxes=np.zeros((n, 4), np.float32),
                     has_box=np.zeros(n, bool), mask_index=np.full(n, -1, np.int64),
                     masks=np.zeros((0, 2, size, size), np.uint8), attributes=np.full((n, 4), -1, np.int64),
                     nc_category=np.full(n, -1, np.int64), source=np.full(n, "pbc"), path=np.full(n, ""))


def predictor_hemax(module: dict, meta: dict, precision: str = "auto") -> tuple[Predict, None]:
    """``(predict, None)``: the chapter's ``predict_hemax`` on each single-cell image — the class probabilities of its
    most confident query, no-object column dropped and renormalised — in WBC5 order."""
    from wbcstudy.data.hemax import CLASSES
    from wbcstudy.experiments import hemax as ex

    net, batch = module["net"].eval(), int(meta["parameters"]["batch_size"])
    resolved = ex._precision(precision)

    def fn(x: np.ndarray) -> np.ndarray:
        return hemax_class_probabilities(ex.predict_hemax(net, _hemax_data(x), batch, resolved).class_prob,
                                         list(CLASSES))

    return _checked(meta, fn), None


def benchmark_hemax(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """HemaX trained by its chapter's ``train_hemax`` with its parameters, on cells that are not ``pbc5`` test cells.

    The data are the chapter's PBC cells (``build_hemax_data``: WBCAtt's PBC cells with their attributes, WBCAtt's own
    train/validation split) without its Zheng 2018 masks and BCCD boxes — the benchmark tests every model on those
    sets as other laboratories' cells, so HemaX must not learn from them — with every WBCAtt-PBC row that is a
    ``pbc5`` test cell removed *before* the chapter's ``train_pbc``/``eval_pbc`` caps are drawn (``subsample``). The
    attribute head is the chapter's headline variant (:func:`hemax_headline_hidden`).
    """
    from wbcstudy.data.hemax import build_hemax_data, subsample
    from wbcstudy.experiments import hemax as ex
    from wbcstudy.train import reached_plateau

    p = chapter_parameters("hemax", profile)
    size = int(p.image_size)
    hidden = hemax_headline_hidden(p.hidden_layers)
    test_paths = pbc5_test_paths()
    parts, dropped, wbcatt_rows = {}, {}, {}
    for split, prefix in (("train", "train"), ("val", "eval")):
        full = build_hemax_data(split, size, {"pbc": 0}, seed, sources=("pbc",))  # Zheng, BCCD: shift test sets
        wbcatt_rows[split] = int((full.source == "pbc").sum())
        clean, dropped[split] = exclude_pbc5_test(full, test_paths)
        parts[split] = subsample(clean, {"pbc": int(getattr(p, f"{prefix}_pbc"))}, seed)
    config = ex.HemaXConfig(backbone=p.backbone, d_model=p.d_model, encoder_layers=p.encoder_layers,
                            decoder_layers=p.decoder_layers, ffn_dim=p.ffn_dim, num_queries=p.num_queries,
                            mask_dim=p.mask_dim, fpn_dim=p.fpn_dim, epochs=p.epochs, batch_size=p.batch_size,
                            lr=p.lr, lr_backbone=p.lr_backbone, seed=seed, precision=precision, image_size=size,
                            train_backbone=p.train_backbone, lr_drop=p.lr_drop, stop_at_plateau=False,
                            patience=p.patience, min_epochs=p.lr_drop + p.stop_after_drop)
    config = dataclasses.replace(config, attribute_hidden_layers=hidden)
    run = ex.train_hemax(parts["train"], parts["val"], config)
    counts = {f"{split}_{source}": int((parts[split].source == source).sum())
              for split in parts for source in ("pbc", "zheng", "bccd")}
    facts = {**counts, "attribute_hidden_layers": hidden, "wbcatt_pbc_train_rows": wbcatt_rows["train"],
             "wbcatt_pbc_val_rows": wbcatt_rows["val"], "pbc5_test_cells_dropped_train": dropped["train"],
             "pbc5_test_cells_dropped_val": dropped["val"], "best_epoch": int(run.best_epoch)}
    note = (f"HemaX with {hidden} attribute hidden layers (the chapter's headline variant) and a "
            f"{'fine-tuned' if config.train_backbone else 'frozen'} {config.backbone} backbone at {size} px, trained "
            f"by the chapter's train_hemax on {counts['train_pbc']} WBCAtt-PBC cells, without the chapter's Zheng and "
            "BCCD cells (the benchmark tests on those sets as other laboratories) "
            f"(best validation-loss epoch {run.best_epoch} of {len(run.history)}). "
            f"WBCAtt's own split puts {dropped['train']} of its {wbcatt_rows['train']} training and {dropped['val']} "
            f"of its {wbcatt_rows['val']} validation PBC cells in the pbc5 test split: they were removed (matched by "
            "path) before the chapter's caps were drawn. Probabilities: the most confident query's class softmax with "
            f"the no-object column dropped and the five classes renormalised (predict_hemax), in WBC5 order.")
    plateau = bool(reached_plateau(run.history["val_loss"].tolist(), mode="min", tol=config.plateau_tol))
    model = BenchmarkModel("hemax", "HemaX (class head)", "hemax", size, "none", unset_predict, float(run.seconds),
                           plateau, asdict(p), run.history, note, module={"net": run.model.cpu().eval(), "meta": facts},
                           factory=f"{__name__}:predictor_hemax")
    return attach_predictors(model, precision)


# --------------------------------------------------------------------------------------------------- CytoDiffusion
#: Stratified clean pbc5 test cells the summary should give the diffusion classifier (about 0.25 s per cell here).
CYTODIFFUSION_TEST_CELLS: int = 200
#: Stratified cells per perturbation, anomaly or shift condition for the diffusion classifier.
CYTODIFFUSION_PERTURBED_CELLS: int = 40
#: The resolution the diffusion adapter's predict takes: the chapter decodes cells at 64 px and average-pools them.
CYTODIFFUSION_INPUT_SIZE: int = 64


def errors_to_probabilities(normalised_errors: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities from the classifier's per-class normalised errors: softmax(−error / temperature).

    The argmax is the classifier's argmin-error prediction (ties aside); a lower temperature is more confident.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = -np.asarray(normalised_errors, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(normalised_errors: np.ndarray, labels: np.ndarray, grid: np.ndarray | None = None) -> float:
    """The temperature (on a log grid, 1e-3 to 1e2) whose ``errors_to_probabilities`` gives ``labels`` the least
    negative log-likelihood: temperature scaling on validation cells."""
    grid = np.logspace(-3, 2, 201) if grid is None else np.asarray(grid, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    nll = [-np.log(np.clip(errors_to_probabilities(normalised_errors, t)[rows, labels], 1e-300, None)).mean()
           for t in grid]
    return float(grid[int(np.argmin(nll))])


def predictor_cytodiffusion(module: dict, meta: dict, precision: str = "auto") -> tuple[Predict, Anomaly]:
    """``(predict, anomaly_score)`` of the diffusion classifier (``DiffusionClassifierConfig.classify`` with the
    chapter's settings and the weighting chosen in training). Images come at 64 px and are average-pooled to the model's
    32 px (``pool_images``), as the chapter's ``load_arrays`` does. ``predict``: softmax of minus the normalised
    per-class errors at the fitted temperature; ``anomaly_score``: minus the chapter's confidence (the gap between
    the two smallest normalised errors: a low confidence flags an anomaly). The two share one classification of the
    same images (the last batch is remembered)."""
    import hashlib

    from wbcstudy.experiments import cytodiffusion as cd

    net, facts, params = module["net"].eval(), module["meta"], meta["parameters"]
    settings = cd.DiffusionClassifierConfig(int(params["max_trials"]), int(params["min_trials"]),
                                     int(params["images_per_call"]), facts["weighting"], precision)
    last: dict = {}

    def classify(x: np.ndarray):
        key = (x.shape, hashlib.sha1(x.tobytes()).hexdigest())
        if last.get("key") != key:
            result = settings.classify(net, cd.pool_images(x, int(params["image_size"])), len(WBC5), int(facts["seed"]))
            last.update(key=key, result=result)
        return last["result"]

    predict = _checked(meta, lambda x: errors_to_probabilities(classify(x).normalised_errors, facts["temperature"]))

    def anomaly(images: np.ndarray) -> np.ndarray:
        predict(images)  # checks the images; classifies them unless they were the last batch
        return -np.asarray(last["result"].confidence, dtype=np.float64)

    return predict, anomaly


def benchmark_cytodiffusion(profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
    """A 5-class diffusion model and classifier with the CytoDiffusion chapter's recipe, trained on ``pbc5`` train.

    ``train_diffusion_model`` with the chapter's parameters for ``benchmark_steps`` steps on
    ``load_arrays("pbc5", ...)`` (the chapter itself trains one 7-class model; making the summary score that model,
    restricted to the five white-cell classes, is the summary's next step); the per-timestep weighting chosen as the
    chapter chooses it (``fit_poly4_weighting`` + ``choose_weighting`` on ``eval_cells`` unpruned validation cells);
    the chapter's trials, pruning and batching. A softmax temperature for the normalised errors is fitted on
    ``shift_test_limit`` other validation cells, classified as test cells are. ``train_seconds`` includes the
    weighting and temperature fits.
    """
    from wbcstudy.diffusion_classifier import fit_poly4_weighting
    from wbcstudy.experiments import cytodiffusion as cd

    p = chapter_parameters("cytodiffusion", profile)
    size = int(p.image_size)
    recipe = cd.DiffusionModelConfig(size, p.unet_channels, p.batch_size, p.diffusion_lr, p.warmup_steps,
                                p.ema_decay, precision)
    start = time.perf_counter()
    train_x, train_y, names = cd.load_arrays("pbc5", "train", size, seed, limit=p.train_limit)
    val_x, val_y, _ = cd.load_arrays("pbc5", "val", size, seed, limit=p.val_limit)
    if list(names) != WBC5:
        raise ValueError(f"pbc5's classes {names} are not WBC5 {WBC5}")
    run = cd.train_diffusion_model(train_x, train_y, len(WBC5), int(p.benchmark_steps), recipe, seed=seed)
    net = run.ema_model.eval()
    settings = cd.DiffusionClassifierConfig(p.max_trials, p.min_trials, p.images_per_call, "uniform", precision)
    vy = val_y.numpy()
    fit_rows = stratified_subset(vy, int(p.eval_cells), seed)
    fit_run = settings.classify(net, val_x[fit_rows], len(WBC5), seed, prune=False, keep_errors=True)
    poly4 = fit_poly4_weighting(fit_run.timesteps, fit_run.raw_errors)
    choice = cd.choose_weighting(fit_run.raw_errors, fit_run.timesteps, vy[fit_rows], poly4)
    settings.weighting = choice.weighting
    rest = np.setdiff1d(np.arange(len(vy)), fit_rows)
    calib_rows = rest[stratified_subset(vy[rest], int(p.shift_test_limit), seed)]
    calib = settings.classify(net, val_x[calib_rows], len(WBC5), seed)
    temperature = fit_temperature(calib.normalised_errors, vy[calib_rows])
    seconds = time.perf_counter() - start
    weighting = choice.weighting if isinstance(choice.weighting, str) else [float(w) for w in choice.weighting]
    facts = {"seed": int(seed), "weighting": weighting, "weighting_name": choice.name,
             "weighting_validation_accuracy": choice.validation_accuracy, "temperature": temperature,
             "train_cells": len(train_y), "weighting_fit_cells": len(fit_rows), "calibration_cells": len(calib_rows),
             "calibration_seconds_per_image": calib.seconds / max(1, len(calib_rows)),
             "diffusion_train_seconds": float(run.seconds), "test_cells": CYTODIFFUSION_TEST_CELLS,
             "perturbed_cells": CYTODIFFUSION_PERTURBED_CELLS}
    note = (f"A 5-class diffusion model with the chapter's recipe ({p.benchmark_steps} steps at {size} px; cells "
            f"decoded at 64 px and average-pooled, as the chapter does) on {len(train_y)} pbc5 training cells; the "
            f"{choice.name} weighting, chosen on {len(fit_rows)} validation cells; {p.max_trials} trials with "
            f"pruning. Probabilities: softmax of minus the normalised per-class errors at temperature "
            f"{temperature:.3g}, fitted (least NLL) on {len(calib_rows)} other validation cells; anomaly score: minus "
            f"the chapter's confidence (the gap between the two smallest normalised errors).")
    model = BenchmarkModel("cytodiffusion", "CytoDiffusion", "cytodiffusion", CYTODIFFUSION_INPUT_SIZE, "none",
                           unset_predict, float(seconds), bool(cd.diffusion_plateau(run)), asdict(p), run.history, note,
                           module={"net": net, "meta": facts}, factory=f"{__name__}:predictor_cytodiffusion")
    return attach_predictors(model, precision)


#: key → the dotted name of its predict factory (what the store saves as ``factory``).
FACTORIES: dict[str, str] = {key: f"{__name__}:predictor_{key}" for key in ("resnext_cc", "hemax", "cytodiffusion")}
