"""The trustworthiness chapter's procedures (paper 003): train its five models, score them on the test split, sweep
perturbations, compare the README's Fisher and influence shortcuts with the real quantities, and check Grad-CAM.

Every function takes arrays and models and returns numbers and tables; the chapter's cells call them and show what
they return. Images are uint8 NHWC tensors; each model's ``InputAdapter`` scales and normalises them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from wbcstudy.train import TrainConfig, TrainResult, fit, predict_proba, seed_key, seeded

__all__ = ["MODEL_NAMES", "TrustModelConfig", "TrainedModel", "resize_images", "stratified_tensors",
           "judge_plateau", "seed_key", "runs_of", "model_keys", "train_trust_model", "train_trust_models",
           "frozen_backbone", "frozen_features", "train_frozen_heads", "plateau_record", "budget_table",
           "accuracy_table", "models_accuracy_difference", "RobustnessSweep", "robustness_sweeps", "readme_robustness",
           "sweep_means", "augmentation_sharpness", "FisherComparison", "fisher_comparison", "LeaveOneOutCheck",
           "influence_vs_leave_one_out", "influence_over_seeds", "seeds_mean_interval", "top_fraction_gap",
           "fisher_contrast_gap", "harmful_label_noise", "captum_cross_check", "training_similarity",
           "harmful_images_summary", "harmful_neighbours", "gradcam_checks"]

#: The chapter's models: key → readable name.
MODEL_NAMES: dict[str, str] = {"cnn": "custom CNN", "vgg16": "VGG16 (scratch)", "resnet50": "ResNet50 (scratch)",
                               "effnet_lite0_frozen": "EfficientNet-Lite0 frozen",
                               "effnet_lite0_finetuned": "EfficientNet-Lite0 fine-tuned"}
#: key → architecture name of ``wbcstudy.models.trust_cnn.build_trust_model`` (what an app checkpoint records).
ARCH_OF: dict[str, str] = {"cnn": "trust_cnn", "vgg16": "vgg16", "resnet50": "resnet50",
                           "effnet_lite0_frozen": "effnet_lite0_frozen",
                           "effnet_lite0_finetuned": "effnet_lite0_finetuned"}


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images at ``size`` px (antialiased bilinear); unchanged when already that size."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    out = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def stratified_tensors(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, limit: int, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subset of about ``limit`` images (all of them when ``limit`` is 0 or too large), as tensors."""
    from wbcstudy.data import stratified_subset

    x, y = np.asarray(x), np.asarray(y)
    keep = stratified_subset(y, limit, seed) if limit and limit < len(y) else np.arange(len(y))
    return torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(np.ascontiguousarray(y[keep]))


@dataclass
class TrustModelConfig:
    """How one of the chapter's models is trained: its key in ``MODEL_NAMES``, input size and schedule."""

    key: str
    size: int
    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    seed: int | None = None  #: this model's seed (weights, shuffling, augmentation); None: the call's seed
    scheduler: str = "onecycle"  #: ``TrainConfig.scheduler``
    cooldown: float = 0.2  #: "wsd": the share of the steps cooling the learning rate down
    budget_check: bool = False  #: "wsd": the budget-sensitivity plateau test (a copy cooled down from half the budget)
    plateau_tol: float = 0.01  #: the plateau tests' tolerance in validation accuracy


@dataclass
class TrainedModel:
    """A trained model with its test-split probabilities, normalisation and whether it reached its plateau."""

    spec: TrustModelConfig
    result: TrainResult
    test_probs: np.ndarray
    mean: list[float]
    std: list[float]
    train_size: int
    plateau: bool
    name: str = field(init=False)
    arch: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.arch = MODEL_NAMES[self.spec.key], ARCH_OF[self.spec.key]

    @property
    def model(self) -> nn.Module:
        """The best-validation-epoch network."""
        return self.result.model

    @property
    def key(self) -> str:
        """The model's key in ``MODEL_NAMES`` (a run's key in a chapter's dict adds ``_seed<k>``)."""
        return self.spec.key


def judge_plateau(result: TrainResult, tol: float = 0.01) -> bool:
    """Whether a run reached its plateau: by the budget-sensitivity test where it ran one (doubling the budget gained
    less than ``tol`` validation accuracy), else by its validation-accuracy history (``reached_plateau``)."""
    return result.plateau(tol)


def runs_of(runs: dict[str, TrainedModel], key: str) -> dict[str, TrainedModel]:
    """The seeded runs of model ``key`` (``seed_key(key, k)``), in their order in ``runs``."""
    chosen = seeded(runs, key)
    if not chosen:
        raise ValueError(f"no seeded runs of {key!r} among {sorted(runs)}")
    return chosen


def model_keys(runs: dict[str, TrainedModel]) -> list[str]:
    """The model keys of a dict of seeded runs, in first-seen order."""
    return list(dict.fromkeys(run.key for run in runs.values()))


def train_trust_model(spec: TrustModelConfig, train: tuple[torch.Tensor, torch.Tensor],
                      val: tuple[torch.Tensor, torch.Tensor],
                      test_x: torch.Tensor, n_classes: int, batch_size: int = 64, seed: int = 0,
                      augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> TrainedModel:
    """Train one model at its own resolution (``wbcstudy.train.fit``, best validation epoch kept) and score the test
    split.

    From-scratch networks normalise with the training images' channel mean/std, EfficientNet with ImageNet's;
    ``spec.seed`` (when given) replaces ``seed``; ``plateau`` is ``judge_plateau``: the budget-sensitivity test with
    ``spec.budget_check``, else the validation-accuracy history.
    """
    from wbcstudy.data import channel_mean_std
    from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD
    from wbcstudy.models.trust_cnn import build_trust_model

    x_train = resize_images(train[0], spec.size)
    pretrained = spec.key.startswith("effnet")
    mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if pretrained else channel_mean_std(x_train.numpy())
    seed = seed if spec.seed is None else spec.seed
    torch.manual_seed(seed)
    model = build_trust_model(ARCH_OF[spec.key], n_classes, spec.size, mean, std, pretrained=pretrained)
    config = TrainConfig(epochs=spec.epochs, batch_size=batch_size, lr=spec.lr, optimizer=spec.optimizer,
                         weight_decay=spec.weight_decay, seed=seed, scheduler=spec.scheduler, cooldown=spec.cooldown,
                         budget_check=spec.budget_check, progress=False)
    result = fit(model, (x_train, train[1]), (resize_images(val[0], spec.size), val[1]), config, augment=augment,
                 n_classes=n_classes)
    probs = predict_proba(result.model, resize_images(test_x, spec.size))
    plateau = judge_plateau(result, spec.plateau_tol)
    return TrainedModel(spec, result, probs, [float(m) for m in mean], [float(s) for s in std], len(x_train), plateau)


def _trust_job(job: tuple) -> TrainedModel:
    """One model's training (a picklable unit of work for a worker process)."""
    spec, train, val, test_x, n_classes, batch_size, seed, augment = job
    run = train_trust_model(spec, train, val, test_x, n_classes, batch_size, seed, augment)
    run.result.model = run.result.model.cpu()
    return run


def train_trust_models(specs: dict[str, tuple[TrustModelConfig, tuple[torch.Tensor, torch.Tensor]]],
                       val: tuple[torch.Tensor, torch.Tensor], test_x: torch.Tensor, n_classes: int,
                       batch_size: int = 64,
                       seed: int = 0, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       workers: int = 1) -> dict[str, TrainedModel]:
    """``train_trust_model`` for every ``key → (spec, training images)``, in the specs' order.

    ``workers`` > 1 trains that many models at a time, each in a one-thread worker process (:mod:`wbcstudy.parallel`):
    put the longest first, so that the others share the second worker meanwhile.
    """
    from wbcstudy.parallel import run_jobs

    jobs = [(spec, train, val, test_x, n_classes, batch_size, seed, augment) for spec, train in specs.values()]
    return dict(zip(specs, run_jobs(_trust_job, jobs, workers)))


def frozen_backbone(n_classes: int, size: int) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet base frozen (``build_trust_model("effnet_lite0_frozen")``), in eval mode:
    the network every frozen-base head is put on, and whose features ``frozen_features`` computes."""
    from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD
    from wbcstudy.models.trust_cnn import build_trust_model

    return build_trust_model("effnet_lite0_frozen", n_classes, size, IMAGENET_MEAN, IMAGENET_STD,
                             pretrained=True).eval()


def frozen_features(backbone: nn.Module, x: torch.Tensor, size: int, batch_size: int = 128,
                    precision: str = "auto") -> torch.Tensor:
    """The inputs of ``backbone``'s last ``nn.Linear`` (for EfficientNet-Lite0: the 1280 pooled features) of images
    ``x`` resized to ``size`` px, float32 (N, d): computed once, since a frozen base gives every seed the same ones."""
    from wbcstudy.explain import last_layer_inputs
    from wbcstudy.train import select_device, select_precision

    prec = select_precision(precision, select_device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
        return last_layer_inputs(backbone, resize_images(x, size), batch_size=batch_size).float()


def train_frozen_heads(backbone: nn.Module, spec: TrustModelConfig, train: tuple[torch.Tensor, torch.Tensor],
                       val: tuple[torch.Tensor, torch.Tensor], test: torch.Tensor, seeds: Sequence[int],
                       batch_size: int = 64, dropout: float = 0.2) -> dict[str, TrainedModel]:
    """A frozen base's new head trained once per seed on its precomputed features (``frozen_features``): ``train``
    and ``val`` are (features, labels), ``test`` the test features; keys ``seed_key(spec.key, seed)``.

    The head is the network's own (dropout ``dropout``, then its last ``nn.Linear``); each seed sets its initial
    weights, the shuffling and the dropout. No augmentation: the features are those of the images as they are. Each
    run's ``model`` is a copy of ``backbone`` with the seed's trained head, so that it reads images like any other run
    (robustness, Grad-CAM, the app).
    """
    import copy

    from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD
    from wbcstudy.models.trust_cnn import last_linear

    layer = last_linear(backbone)
    n_classes = layer.out_features
    out = {}
    for seed in seeds:
        torch.manual_seed(int(seed))
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(layer.in_features, n_classes))
        config = TrainConfig(epochs=spec.epochs, batch_size=batch_size, lr=spec.lr, optimizer=spec.optimizer,
                             weight_decay=spec.weight_decay, seed=int(seed), scheduler=spec.scheduler,
                             cooldown=spec.cooldown, budget_check=spec.budget_check, channels_last=False,
                             progress=False)
        result = fit(head, train, val, config, n_classes=n_classes)
        probs = predict_proba(result.model, test)
        model = copy.deepcopy(backbone)
        last_linear(model).load_state_dict(result.model[1].state_dict())
        result.model = model.eval()
        out[seed_key(spec.key, seed)] = TrainedModel(TrustModelConfig(**{**spec.__dict__, "seed": int(seed)}), result,
                                                     probs, list(IMAGENET_MEAN), list(IMAGENET_STD), len(train[1]),
                                                     judge_plateau(result, spec.plateau_tol))
    return out


def _as_runs(runs: dict[str, TrainedModel]) -> dict[str, tuple[TrainResult, np.ndarray]]:
    """The baseline chapter's form of runs, ``key → (training result, test probabilities)``, for its seed helpers."""
    return {k: (r.result, r.test_probs) for k, r in runs.items()}


def plateau_record(runs: dict[str, TrainedModel]) -> dict[str, bool]:
    """Every run's plateau flag, and per model key whether every one of its seeds reached its plateau."""
    record = {k: bool(r.plateau) for k, r in runs.items()}
    return record | {key: all(r.plateau for r in runs_of(runs, key).values()) for key in model_keys(runs)}


def budget_table(runs: dict[str, TrainedModel]) -> pd.DataFrame:
    """The budget-sensitivity test's numbers of every run that ran it (``baseline.budget_sensitivity``)."""
    from wbcstudy.experiments.baseline import budget_sensitivity

    return budget_sensitivity(_as_runs(runs), {k: f"{r.name} (seed {r.spec.seed})" for k, r in runs.items()})


def accuracy_table(runs: dict[str, TrainedModel], test_y: np.ndarray, n_boot: int = 1000, seed: int = 0
                   ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Test metrics per model as means over its seeds (runs ``<key>_seed<k>``) with hierarchical 95% intervals:
    ``(metrics, ci, table)``.

    Metrics are named ``<key>_accuracy``, ``_balanced_accuracy``, ``_macro_f1``, ``_auroc`` (the baseline's
    ``evaluate_seeds``: intervals that draw the seeds, then the test cells within each class), ``_accuracy_sd``,
    ``_accuracy_min``/``_max``, ``_train_seconds`` (all seeds), and ``<key>_ece`` (the mean seed's ECE, interval
    likewise); every interval is hierarchical. The table also counts the classes each model's seeds predict at all
    (the fewest over its seeds).
    """
    from wbcstudy.evaluate import expected_calibration_error
    from wbcstudy.experiments.baseline import evaluate_seeds
    from wbcstudy.intervals import hierarchical_bootstrap

    y = np.asarray(test_y)
    metrics: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    rows = []
    for key in model_keys(runs):
        chosen = runs_of(runs, key)
        m, c, accuracies = evaluate_seeds(_as_runs(chosen), key, y, n_boot=n_boot, seed=seed)
        labels = list(range(next(iter(chosen.values())).test_probs.shape[1]))
        ece = lambda t, p: expected_calibration_error(t, p, labels=labels)  # noqa: E731
        m[f"{key}_ece"], c[f"{key}_ece"], _ = hierarchical_bootstrap(
            ece, [(y, r.test_probs) for r in chosen.values()], n_boot=n_boot, seed=seed, stratify=True, pool=False)
        metrics.update(m)
        ci.update(c)
        first = next(iter(chosen.values()))
        rows.append({"model": first.name, "px": first.spec.size, "seeds": len(chosen), "accuracy": m[f"{key}_accuracy"],
                     "95% CI": "[{:.3f}, {:.3f}]".format(*c[f"{key}_accuracy"]),
                     "seeds' range": f"{min(accuracies):.3f}–{max(accuracies):.3f}",
                     "balanced accuracy": m[f"{key}_balanced_accuracy"], "macro F1": m[f"{key}_macro_f1"],
                     "ECE": m[f"{key}_ece"],
                     "classes predicted": min(int(len(np.unique(r.test_probs.argmax(1)))) for r in chosen.values()),
                     "plateau (every seed)": all(r.plateau for r in chosen.values())})
    return metrics, ci, pd.DataFrame(rows).set_index("model")


def models_accuracy_difference(runs: dict[str, TrainedModel], a: str, b: str, test_y: np.ndarray,
                               n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean test accuracy of model ``a``'s seeds minus model ``b``'s on the same cells, with an interval that draws
    the cells and, for each side, its seeds (``baseline.seeds_accuracy_difference``; interval kind hierarchical)."""
    from wbcstudy.experiments.baseline import seeds_accuracy_difference

    value, interval = seeds_accuracy_difference(_as_runs(runs), a, b, test_y, n_boot=n_boot, seed=seed)
    return value, _containing(value, interval)


@dataclass
class RobustnessSweep:
    """Every run's accuracy under each perturbation and level, with the predictions behind it."""

    table: pd.DataFrame  #: long: model, seed, run, perturbation, level, accuracy, n, ci_low, ci_high (Wilson 95%)
    #: (run key, perturbation, level) → predicted class per image
    predictions: dict[tuple[str, str, float], np.ndarray]
    y: np.ndarray  #: the images' true classes


def _shared_base_predictions(runs: dict[str, TrainedModel], keys: Sequence[str], x: torch.Tensor,
                             levels: dict[str, Sequence[float]]) -> dict[str, dict[tuple[str, float], np.ndarray]]:
    """Predictions of runs that share one frozen base (their networks differ only in the last layer): the base's
    features of each perturbed image set are computed once, and each run's last layer applied to them."""
    from wbcstudy.explain import IDENTITY_LEVELS, PERTURBATIONS
    from wbcstudy.models.trust_cnn import last_linear

    first = runs[keys[0]]
    size = first.spec.size
    images = resize_images(x, size)
    heads = {k: last_linear(runs[k].model).float() for k in keys}
    out: dict[str, dict[tuple[str, float], np.ndarray]] = {k: {} for k in keys}
    clean = None
    for name, values in levels.items():
        for level in values:
            if float(level) == float(IDENTITY_LEVELS[name]):
                if clean is None:
                    clean = frozen_features(first.model, images, size)
                z = clean
            else:
                z = frozen_features(first.model, PERTURBATIONS[name](images, level), size)
            with torch.no_grad():
                for k, layer in heads.items():
                    out[k][(name, float(level))] = layer(z).argmax(1).numpy()
    return out


def robustness_sweeps(runs: dict[str, TrainedModel], x: torch.Tensor, y: np.ndarray,
                      levels: dict[str, Sequence[float]], sources: dict[str, torch.Tensor] | None = None,
                      shared_base: Sequence[str] = ()) -> RobustnessSweep:
    """Accuracy of every run under each perturbation and level, applied at the run's own input resolution.

    The images are resized to each model's size first and perturbed there (a 5×5 blur means the same to the
    network as in the README's code, and noise is not averaged away by a later resize); each accuracy gets a
    Wilson 95% interval over the images. ``sources`` gives, per model key, the same cells at another stored
    resolution to resize from (default ``x``); ``shared_base`` names run keys whose networks share one frozen base
    (``_shared_base_predictions``: its features computed once per perturbed image set, not once per run).
    """
    from wbcstudy.explain import perturbed_predictions, sweep_table

    y = np.asarray(y)
    sources = sources or {}
    shared = list(shared_base)
    shared_preds = (_shared_base_predictions(runs, shared, sources.get(runs[shared[0]].key, x), levels)
                    if shared else {})
    tables, predictions = [], {}
    for key, run in runs.items():
        if key in shared_preds:
            preds = shared_preds[key]
        else:
            images = resize_images(sources.get(run.key, x), run.spec.size)
            preds = perturbed_predictions(lambda xb, m=run.model: predict_proba(m, xb), images, levels)
        predictions.update({(key, name, level): p for (name, level), p in preds.items()})
        tables.append(sweep_table(preds, y).assign(model=run.name, seed=run.spec.seed, run=key))
    table = pd.concat(tables, ignore_index=True)[["model", "seed", "run", "perturbation", "level", "accuracy", "n",
                                                  "ci_low", "ci_high"]]
    return RobustnessSweep(table, predictions, y)


#: The README's single setting of each perturbation → the suffix of its metrics.
README_SUFFIX: dict[str, str] = {"gaussian_noise": "noise005", "gaussian_blur": "blur5", "brightness": "brightness13"}


def _readme_hits(sweep: RobustnessSweep, runs: dict[str, TrainedModel], key: str
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Model ``key``'s hits (1/0, (seeds, cells)) on the clean images and at each README setting."""
    from wbcstudy.explain import IDENTITY_LEVELS, README_LEVELS

    def hits(pert: str, level: float) -> np.ndarray:
        rows = []
        for k in runs_of(runs, key):
            pred = sweep.predictions.get((k, pert, float(level)))
            if pred is None:
                raise ValueError(f"the sweep has no predictions of {k} for {pert} at {level}")
            rows.append((pred == sweep.y).astype(float))
        return np.stack(rows)

    return (hits("brightness", IDENTITY_LEVELS["brightness"]),
            {pert: hits(pert, level) for pert, level in README_LEVELS.items()})


def readme_robustness(sweep: RobustnessSweep, runs: dict[str, TrainedModel], n_boot: int = 1000, seed: int = 0,
                      pairs: dict[str, tuple[str, str]] | None = None
                      ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Each model's accuracy clean and at the README's single settings (noise σ 0.05, 5×5 blur, brightness ×1.3),
    and the change from clean, as means over its seeds: ``(metrics, ci, table)``; every interval is hierarchical.

    Metrics: ``<key>_noise005_accuracy``, ``<key>_blur5_accuracy``, ``<key>_brightness13_accuracy`` (seeds, then the
    images within each class, drawn), ``<key>_<setting>_minus_clean_accuracy`` (paired by image within each seed,
    likewise drawn); for each ``name → (a, b)`` of ``pairs``, ``<name>_perturbed_accuracy``: a's accuracy over the
    three settings (each image's mean hit) minus b's, with cells and each side's seeds drawn
    (``wbcstudy.intervals.seed_cell_difference``); and with both models ``resnet50_minus_cnn_<setting>_accuracy``
    likewise.
    """
    from wbcstudy.intervals import hierarchical_bootstrap, seed_cell_difference

    y = sweep.y
    mean_of = lambda t, d: float(np.mean(d))  # noqa: E731
    rows, metrics, ci, readme = [], {}, {}, {}
    for key in model_keys(runs):
        clean, at = _readme_hits(sweep, runs, key)
        readme[key] = (clean, at)
        row: dict[str, object] = {"model": MODEL_NAMES[key], "clean": float(clean.mean())}
        for pert, hits in at.items():
            name, change = f"{key}_{README_SUFFIX[pert]}_accuracy", f"{key}_{README_SUFFIX[pert]}_minus_clean_accuracy"
            metrics[name], ci[name], _ = hierarchical_bootstrap(mean_of, [(y, h) for h in hits], n_boot=n_boot,
                                                                seed=seed, stratify=True, pool=False)
            ci[name] = _containing(metrics[name], ci[name])
            metrics[change], ci[change], _ = hierarchical_bootstrap(
                mean_of, [(y, h - c) for h, c in zip(hits, clean)], n_boot=n_boot, seed=seed, stratify=True,
                pool=False)
            ci[change] = _containing(metrics[change], ci[change])
            row[pert] = metrics[name]
            row[f"Δ {README_SUFFIX[pert]} [95% CI]"] = "{:+.3f} [{:+.3f}, {:+.3f}]".format(metrics[change], *ci[change])
        rows.append(row)
    for name, (a, b) in (pairs or {}).items():
        if a in readme and b in readme:
            key = f"{name}_perturbed_accuracy"
            mean_a, mean_b = (np.mean(list(readme[m][1].values()), axis=0) for m in (a, b))
            metrics[key], interval = seed_cell_difference(mean_a, mean_b, n_boot=n_boot, seed=seed)
            ci[key] = _containing(metrics[key], interval)
    if "resnet50" in readme and "cnn" in readme:
        for pert, suffix in README_SUFFIX.items():
            key = f"resnet50_minus_cnn_{suffix}_accuracy"
            metrics[key], interval = seed_cell_difference(readme["resnet50"][1][pert], readme["cnn"][1][pert],
                                                          n_boot=n_boot, seed=seed)
            ci[key] = _containing(metrics[key], interval)
    return metrics, ci, pd.DataFrame(rows).set_index("model")


def sweep_means(sweep: RobustnessSweep) -> pd.DataFrame:
    """The sweep per model, perturbation and level: the mean accuracy over the model's seeds and the seeds' range
    (columns model, perturbation, level, accuracy, seed_low, seed_high)."""
    grouped = sweep.table.groupby(["model", "perturbation", "level"], sort=False)["accuracy"]
    return grouped.agg(accuracy="mean", seed_low="min", seed_high="max").reset_index()


def augmentation_sharpness(x: torch.Tensor, sizes: Sequence[int],
                           augmentations: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                           seed: int = 0) -> pd.DataFrame:
    """Mean squared Laplacian (``wbcstudy.explain.laplacian_energy``) of images at each size: as they are, 3×3- and
    5×5-blurred, and after each augmentation (drawn with the same seed); one row per size, one column per version."""
    from wbcstudy.explain import gaussian_blur, laplacian_energy

    rows = []
    for size in sizes:
        images = resize_images(x, size)
        row: dict[str, float] = {"px": size, "as they are": laplacian_energy(images),
                                 "blur 3×3": laplacian_energy(gaussian_blur(images, 3)),
                                 "blur 5×5": laplacian_energy(gaussian_blur(images, 5))}
        for name, augment in augmentations.items():
            torch.manual_seed(seed)
            row[name] = laplacian_energy(augment(images))
        rows.append(row)
    return pd.DataFrame(rows).set_index("px")


@dataclass
class FisherComparison:
    """The README's ‖p − y‖² against the last layer's per-sample empirical-Fisher trace ‖g‖², per test image."""

    readme: np.ndarray  #: ‖p − y‖² per image
    trace: np.ndarray  #: ‖g_i‖², g_i the per-sample gradient of the last layer's parameters
    features: torch.Tensor  #: the last layer's inputs z_i
    eigenvalues: np.ndarray  #: the empirical Fisher's eigenvalues, largest first
    spearman: float  #: rank correlation of the two scores


def fisher_comparison(model: nn.Module, x: torch.Tensor, y: np.ndarray, probs: np.ndarray) -> FisherComparison:
    """Both Fisher scores of ``model``'s last ``nn.Linear`` on images ``x`` with labels ``y`` (``probs``: its
    predictions)."""
    from wbcstudy.explain import (
        empirical_fisher,
        last_layer_inputs,
        per_sample_fisher_trace,
        per_sample_gradients,
        readme_fisher_score,
    )
    from wbcstudy.explain.gradcam import float32_model
    from wbcstudy.models.trust_cnn import last_linear

    net, _ = float32_model(model)
    net.eval()
    z = last_layer_inputs(net, x)
    grads = per_sample_gradients(last_linear(net), z, torch.as_tensor(np.asarray(y), dtype=torch.long)).double()
    readme = readme_fisher_score(probs, y)
    trace = per_sample_fisher_trace(grads)
    # same non-zero spectrum
    gram = grads @ grads.T / len(grads) if len(grads) < grads.shape[1] else empirical_fisher(grads)
    eig = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0).numpy()
    return FisherComparison(readme, trace, z, eig, float(spearmanr(readme, trace)[0]))


@dataclass
class LeaveOneOutCheck:
    """Influence scores (Koh & Liang, TracIn, the README's) against actual leave-one-out retraining of the last
    layer."""

    problem: object  #: the ``LastLayerProblem``
    theta: torch.Tensor  #: its fitted parameters
    chosen: np.ndarray  #: indices of the followed test images
    removed: np.ndarray  #: training images actually removed, one at a time
    predicted: np.ndarray  #: Koh & Liang, (tests, all training images)
    tracin: np.ndarray
    readme: np.ndarray
    actual: np.ndarray  #: (tests, removed) change of the test loss on removal
    test_probs: np.ndarray  #: the refitted layer's test probabilities
    table: pd.DataFrame  #: Spearman ρ of each score with the actual effect, per followed test image
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]  #: percentile bootstrap over the removed training images


def _mean_spearman(scores: np.ndarray, actual: np.ndarray) -> float:
    """Mean over rows (test images) of the Spearman ρ between a score row and the actual-effect row."""
    return float(np.nanmean([spearmanr(a, b)[0] for a, b in zip(scores, actual)]))


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row of ``a`` with the same row of ``b`` (average ranks for ties; NaN for a constant row)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(-1) / np.where(denom > 0, denom, 1.0), np.nan)


def _containing(value: float, interval: tuple[float, float]) -> tuple[float, float]:
    """A percentile interval widened, where it has to be, to contain its point estimate (a skewed bootstrap
    distribution can leave it just outside; the results contract asks for an interval around the value)."""
    return (min(float(interval[0]), value), max(float(interval[1]), value))


def influence_vs_leave_one_out(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: np.ndarray,
                               n_classes: int, loo_tests: int, loo_count: int, l2: float = 1e-3, damping: float = 1e-3,
                               tracin_epochs: int = 10, seed: int = 0, class_names: Sequence[str] | None = None,
                               n_boot: int = 1000) -> LeaveOneOutCheck:
    """Refit the last layer on frozen features, score every training image's influence on ``loo_tests`` test images
    drawn at random (whatever the layer predicts for them), then retrain without each of ``loo_count`` random training
    images.

    Metrics: ``influence_loo_spearman``, ``tracin_loo_spearman``, ``readme_influence_loo_spearman`` (means over the
    followed test images), ``influence_test_images``, ``influence_removals`` and ``influence_refit_accuracy``; the
    three ρ get percentile bootstrap intervals that resample both the followed test images and the removed training
    images (``n_boot`` resamples; none with 0, for a check that ``influence_over_seeds`` pools with others).
    """
    from wbcstudy.explain import LastLayerProblem, readme_influence, tracin_last_layer

    y_test = np.asarray(y_test)
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    problem = LastLayerProblem(z_train, y_train, n_classes, l2=l2)
    theta = problem.fit()
    p_test = problem.probs(theta, z_test).numpy()
    refit_acc = float((p_test.argmax(1) == y_test).mean())
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(y_test), min(loo_tests, len(y_test)), replace=False)).astype(int)
    zt, yt = z_test[chosen], torch.as_tensor(y_test[chosen])
    hessian = problem.hessian(theta)
    predicted = problem.predicted_loo_effect(theta, zt, yt, damping=damping, hessian=hessian)
    readme = readme_influence(problem.probs(theta).numpy(), np.asarray(y_train), p_test[chosen], y_test[chosen])
    tracin, _ = tracin_last_layer(problem, zt, yt, epochs=tracin_epochs, lr=0.5, batch_size=64, seed=seed)
    removed = np.sort(rng.choice(problem.n, min(loo_count, problem.n), replace=False))
    actual = problem.loo_effect(theta, removed, zt, yt, hessian=hessian)
    table = pd.DataFrame({"test image": chosen, "true": [names[y_test[t]] for t in chosen],
                          "predicted": [names[p_test[t].argmax()] for t in chosen],
                          "Koh & Liang": _row_spearman(predicted[:, removed], actual),
                          "TracIn": _row_spearman(tracin[:, removed], actual),
                          "README (as written)": _row_spearman(readme[:, removed], actual)}).set_index("test image")
    metrics = {"influence_loo_spearman": float(table["Koh & Liang"].mean()),
               "tracin_loo_spearman": float(table["TracIn"].mean()),
               "readme_influence_loo_spearman": float(table["README (as written)"].mean()),
               "influence_refit_accuracy": refit_acc,
               "influence_test_images": len(chosen), "influence_removals": len(removed)}
    check = LeaveOneOutCheck(problem, theta, chosen, removed, predicted, tracin, readme, actual, p_test, table, metrics,
                             {})
    if n_boot > 0:
        check.ci = influence_over_seeds([check], n_boot=n_boot, seed=seed + 1)[1]
    return check


#: The influence scores a ``LeaveOneOutCheck`` holds → the name of their metric (``<name>_loo_spearman``).
INFLUENCE_SCORES: dict[str, str] = {"predicted": "influence", "tracin": "tracin", "readme": "readme_influence"}


def _rank_under_weights(order: np.ndarray, inverse: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of each row's values when value j appears ``weights[j]`` times (a bootstrap's column counts),
    from the rows' ``argsort`` (``order``) and its inverse: the ranks scipy's ``rankdata`` gives the resampled row,
    for rows without ties."""
    w = weights[order]
    upto = np.cumsum(w, axis=1)
    return np.take_along_axis(upto - w + (w + 1) / 2, inverse, axis=1)


def _weighted_row_pearson(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, columns weighted (NaN: a constant row)."""
    total = weights.sum()
    ca = a - (a * weights).sum(1, keepdims=True) / total
    cb = b - (b * weights).sum(1, keepdims=True) / total
    denom = np.sqrt((ca * ca * weights).sum(1) * (cb * cb * weights).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ca * cb * weights).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


def influence_over_seeds(checks: Sequence[LeaveOneOutCheck], n_boot: int = 1000, seed: int = 0
                         ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The influence-against-leave-one-out ρ of several CNN seeds (one ``LeaveOneOutCheck`` each): means over the
    seeds of each seed's mean over its followed test images, with hierarchical 95% intervals.

    Each replicate draws the seeds with replacement, then within each drawn seed its followed test images and its
    removed training images (each ρ is a rank correlation over the removals, recomputed on the drawn ones), so that the
    interval holds the seed-to-seed spread, the choice of test images and the choice of removals. Metrics:
    ``<name>_loo_spearman`` for ``INFLUENCE_SCORES``, ``influence_test_images`` and ``influence_removals`` (the fewest
    of any seed), ``influence_refit_accuracy`` (mean).
    """
    from wbcstudy.intervals import percentile_interval

    if not checks:
        raise ValueError("no leave-one-out checks")
    metrics: dict[str, float] = {
        f"{name}_loo_spearman": float(np.mean([np.nanmean(_row_spearman(getattr(c, attr)[:, c.removed], c.actual))
                                               for c in checks]))
        for attr, name in INFLUENCE_SCORES.items()}
    metrics |= {"influence_test_images": min(len(c.chosen) for c in checks),
                "influence_removals": min(len(c.removed) for c in checks),
                "influence_refit_accuracy": float(np.mean([c.metrics["influence_refit_accuracy"] for c in checks]))}
    prepared = []
    for c in checks:
        arrays = {"actual": c.actual, **{attr: getattr(c, attr)[:, c.removed] for attr in INFLUENCE_SCORES}}
        orders = {k: np.argsort(v, axis=1, kind="stable") for k, v in arrays.items()}
        prepared.append({k: (o, np.argsort(o, axis=1)) for k, o in orders.items()})
    rng = np.random.default_rng(seed)
    samples = {attr: np.empty(n_boot) for attr in INFLUENCE_SCORES}
    for b in range(n_boot):
        per_seed = {attr: [] for attr in INFLUENCE_SCORES}
        for s in rng.integers(0, len(checks), len(checks)):
            c, ranks = checks[s], prepared[s]
            cols = np.bincount(rng.integers(0, len(c.removed), len(c.removed)), minlength=len(c.removed)).astype(float)
            rows = np.bincount(rng.integers(0, len(c.chosen), len(c.chosen)), minlength=len(c.chosen)).astype(float)
            actual = _rank_under_weights(*ranks["actual"], cols)
            for attr in INFLUENCE_SCORES:
                rho = _weighted_row_pearson(_rank_under_weights(*ranks[attr], cols), actual, cols)
                keep = np.isfinite(rho) & (rows > 0)
                per_seed[attr].append(float((rho[keep] * rows[keep]).sum() / rows[keep].sum()) if keep.any()
                                      else np.nan)
        for attr in INFLUENCE_SCORES:
            samples[attr][b] = np.nanmean(per_seed[attr]) if np.isfinite(per_seed[attr]).any() else np.nan
    ci = {f"{name}_loo_spearman": _containing(metrics[f"{name}_loo_spearman"], percentile_interval(samples[attr]))
          for attr, name in INFLUENCE_SCORES.items()}
    return metrics, ci


def seeds_mean_interval(per_seed: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0
                        ) -> tuple[float, tuple[float, float]]:
    """The mean over seeds of each seed's mean of its per-item values (test images, cells), with a hierarchical 95%
    interval (seeds drawn, then the items within each; ``hierarchical_bootstrap(pool=False)``)."""
    from wbcstudy.intervals import hierarchical_bootstrap

    groups = [(np.zeros(len(v)), np.asarray(v, dtype=float)) for v in per_seed]
    value, interval, _ = hierarchical_bootstrap(lambda t, v: float(np.mean(v)), groups, n_boot=n_boot, seed=seed,
                                                pool=False)
    return value, _containing(value, interval)


def top_fraction_gap(score: np.ndarray, value: np.ndarray, top: float = 0.1) -> float:
    """Mean ``value`` of the items outside the top ``top`` share by ``score`` minus the mean of those inside it (the
    top share: score at or above its ``1 − top`` quantile)."""
    score, value = np.asarray(score, dtype=float), np.asarray(value, dtype=float)
    high = score >= np.quantile(score, 1 - top)
    if high.all() or not high.any():
        return float("nan")
    return float(value[~high].mean() - value[high].mean())


def fisher_contrast_gap(scores: Sequence[np.ndarray], contrast: np.ndarray, n_boot: int = 1000, seed: int = 0,
                        top: float = 0.1) -> tuple[float, tuple[float, float]]:
    """How much lower the contrast of the images with the highest README Fisher score is: ``top_fraction_gap`` of
    each seed's scores (the same test images, ``contrast`` per image), the mean over seeds, with a hierarchical 95%
    interval (seeds, then images, drawn; the top share found again in each draw)."""
    from wbcstudy.intervals import hierarchical_bootstrap

    groups = [(np.asarray(s, dtype=float), np.asarray(contrast, dtype=float)) for s in scores]
    value, interval, _ = hierarchical_bootstrap(lambda s, c: top_fraction_gap(s, c, top), groups, n_boot=n_boot,
                                                seed=seed, pool=False)
    return value, _containing(value, interval)


def training_similarity(check: LeaveOneOutCheck, train_images: torch.Tensor, test_image: torch.Tensor, z: torch.Tensor
                        ) -> tuple[np.ndarray, np.ndarray]:
    """How close every training image of the influence problem is to one test image: ``(pixel RMSE, feature cosine)``.

    Pixel RMSE in grey levels (0-255) between uint8 images of one size; feature cosine between the last layer's
    inputs *centred on the training images' mean* (uncentred, every feature vector of a network shares one large
    common direction and all cosines crowd near 1).
    """
    problem = check.problem
    features = problem.features.float()  # type: ignore[attr-defined]
    mean = features.mean(0, keepdim=True)
    cosine = F.cosine_similarity(features - mean, z.reshape(1, -1).float() - mean, dim=1).numpy()
    diff = train_images.reshape(len(train_images), -1).float() - test_image.reshape(1, -1).float()
    return (diff ** 2).mean(1).sqrt().numpy(), cosine


def harmful_images_summary(check: LeaveOneOutCheck, z_test: torch.Tensor, y_test: np.ndarray, top: int = 10
                           ) -> tuple[dict[str, float], pd.DataFrame]:
    """For each followed test image, its ``top`` most harmful training images (lowest Koh & Liang score): the share
    with another label, the share the refitted layer misclassifies, and the highest (centred) feature cosine to the
    test image.

    Metrics: ``harmful_misclassified_fraction`` (mean over test images) and ``train_misclassified_base_rate``.
    """
    problem = check.problem
    y_train = problem.labels.numpy()  # type: ignore[attr-defined]
    train_pred = problem.probs(check.theta).numpy().argmax(1)  # type: ignore[attr-defined]
    feats = problem.features.float()  # type: ignore[attr-defined]
    mean = feats.mean(0, keepdim=True)
    rows = []
    for j, t in enumerate(check.chosen):
        harmful = np.argsort(check.predicted[j])[:top]
        cos = F.cosine_similarity(feats[harmful] - mean, z_test[t:t + 1].float() - mean, dim=1).numpy()
        rows.append({"test image": int(t),
                     "harmful: other label than test": float((y_train[harmful] != y_test[t]).mean()),
                     "harmful: misclassified by the layer": float((train_pred[harmful] != y_train[harmful]).mean()),
                     "harmful: max feature cosine to test": float(cos.max())})
    table = pd.DataFrame(rows).set_index("test image")
    metrics = {"harmful_misclassified_fraction": float(table["harmful: misclassified by the layer"].mean()),
               "train_misclassified_base_rate": float((train_pred != y_train).mean())}
    return metrics, table


def harmful_label_noise(summaries: Sequence[tuple[dict[str, float], pd.DataFrame]], n_boot: int = 1000, seed: int = 0
                        ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``harmful_images_summary`` of several CNN seeds together: how much more often the most harmful training images
    are misclassified by the refitted layer than its training images are at all, as a mean over the seeds.

    Metrics: ``harmful_mislabelled_minus_base_rate`` (per followed test image: the share of its most harmful images
    misclassified, minus the seed's base rate; averaged over the images, then the seeds; hierarchical interval, seeds
    then test images drawn), ``harmful_misclassified_fraction`` and ``train_misclassified_base_rate`` (means over
    the seeds).
    """
    column = "harmful: misclassified by the layer"
    per_seed = [t[column].to_numpy(float) - m["train_misclassified_base_rate"] for m, t in summaries]
    value, interval = seeds_mean_interval(per_seed, n_boot=n_boot, seed=seed)
    mean = lambda name: float(np.mean([m[name] for m, _ in summaries]))  # noqa: E731
    return ({"harmful_mislabelled_minus_base_rate": value,
             "harmful_misclassified_fraction": mean("harmful_misclassified_fraction"),
             "train_misclassified_base_rate": mean("train_misclassified_base_rate")},
            {"harmful_mislabelled_minus_base_rate": interval})


def captum_cross_check(check: LeaveOneOutCheck, z_test: torch.Tensor, y_test: np.ndarray, damping: float = 1e-3
                       ) -> tuple[dict[str, float], np.ndarray]:
    """Koh & Liang's scores of the followed test images recomputed by captum's ``NaiveInfluenceFunction``
    (``wbcstudy.explain.captum_influence``) and compared with ours: ``(metrics, captum's scores)``.

    Metrics: ``captum_influence_max_relative_difference`` (largest absolute difference over the largest absolute
    score) and ``captum_influence_spearman`` (the smallest, over the followed test images, rank correlation of the
    two rows of scores over every training image).
    """
    from wbcstudy.explain import captum_influence

    chosen = check.chosen
    theirs = captum_influence(check.problem, check.theta, z_test[chosen],  # type: ignore[arg-type]
                              torch.as_tensor(np.asarray(y_test)[chosen]), damping=damping)
    ours = check.predicted
    rho = _row_spearman(theirs, ours)
    return {"captum_influence_max_relative_difference": float(np.abs(theirs - ours).max() / np.abs(ours).max()),
            "captum_influence_spearman": float(np.nanmin(rho))}, theirs


def harmful_neighbours(check: LeaveOneOutCheck, train_images: torch.Tensor, test_images: torch.Tensor,
                       z_test: torch.Tensor, y_test: np.ndarray,
                       near: int = 5) -> tuple[dict[str, float], pd.DataFrame]:
    """Whether each followed test image's most harmful training image (lowest Koh & Liang score) is a near-duplicate
    of it: pixel RMSE and feature cosine between the two (``training_similarity``), and where the harmful image ranks
    among all the problem's training images by each (1 = the test image's nearest).

    A near-duplicate here: among the test image's ``near`` nearest training images by pixel RMSE *and* by feature
    cosine. Metrics: ``harmful_near_duplicate_fraction`` and ``harmful_pixel_rank_median``.
    """
    y_train = check.problem.labels.numpy()  # type: ignore[attr-defined]
    rows = []
    for j, t in enumerate(check.chosen):
        harmful = int(np.argmin(check.predicted[j]))
        rmse, cosine = training_similarity(check, train_images, test_images[t], z_test[t])
        pixel_rank = int((rmse < rmse[harmful]).sum()) + 1
        feature_rank = int((cosine > cosine[harmful]).sum()) + 1
        rows.append({"test image": int(t), "harmful training image": harmful,
                     "same label": bool(y_train[harmful] == np.asarray(y_test)[t]),
                     "pixel RMSE": float(rmse[harmful]), "pixel rank": pixel_rank,
                     "nearest pixel RMSE": float(rmse.min()),
                     "feature cosine": float(cosine[harmful]), "feature rank": feature_rank,
                     "near-duplicate": pixel_rank <= near and feature_rank <= near})
    table = pd.DataFrame(rows).set_index("test image")
    metrics = {"harmful_near_duplicate_fraction": float(table["near-duplicate"].mean()),
               "harmful_pixel_rank_median": float(table["pixel rank"].median())}
    return metrics, table


def gradcam_checks(model: nn.Module, layer_of: Callable[[nn.Module], nn.Module], x: torch.Tensor, targets: np.ndarray,
                   steps: int = 10, seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Grad-CAM maps of ``targets`` on ``x`` and the two checks that they mean something: ``(maps, scores)``.

    Scores: mean deletion and insertion AUC (mean probability over the curve) in Grad-CAM order and in a random
    order, and the mean Spearman ρ between the maps of the trained and a re-initialised model.
    """
    from wbcstudy.explain import deletion_insertion, gradcam_maps, randomised_weights_similarity

    maps = gradcam_maps(model, layer_of(model), x, targets=targets)
    curves = deletion_insertion(model, x, maps, targets, steps=steps)
    random_maps = np.random.default_rng(seed).random(maps.shape).astype(np.float32)
    random_curves = deletion_insertion(model, x, random_maps, targets, steps=steps)
    rho = randomised_weights_similarity(model, layer_of, x, targets, seed=seed)
    return maps, {"gradcam_deletion_auc": float(curves["deletion"].mean()),
                  "random_deletion_auc": float(random_curves["deletion"].mean()),
                  "gradcam_insertion_auc": float(curves["insertion"].mean()),
                  "random_insertion_auc": float(random_curves["insertion"].mean()),
                  "gradcam_randomisation_rho": float(np.mean(rho))}


@dataclass
class Parameters:
    """The Trustworthiness chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("trust", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where trust.json is written (relative to the project root)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    app_checkpoint: str = 'build/trust/app_model.pt'  # where the Streamlit app's model is written
    seed: int = 0  # the first seed: weight init, subsets, shuffling and augmentation; every model also runs seed+1, ...
    seeds: int = 3  # independent trainings of every model (its numbers are means over them)
    cnn_size: int = 32  # custom CNN input in px (the paper: 128; a multiple of 16)
    #: "vgg16", "resnet50": from-scratch stand-ins for the README's frozen-ImageNet nets (none at cpu)
    scratch_models: list = field(default_factory=lambda: [])
    vgg_size: int = 32  # VGG16 from-scratch input in px (the paper: 224, ImageNet-frozen)
    resnet_size: int = 64  # ResNet50 from-scratch input in px (the paper: 224, ImageNet-frozen)
    effnet_size: int = 56  # EfficientNet-Lite0 fine-tuned input in px
    #: EfficientNet-Lite0 frozen input in px (the README's frozen bases: 224); its features are computed once
    frozen_size: int = 128
    source_size: int = 64  # px of the decoded PBC cache the other models' inputs are resized from
    train_limit: int = 0  # 0: every training image for the custom CNN and EfficientNet; >0: a stratified subset
    scratch_train_limit: int = 1500  # stratified training subset for VGG16 and ResNet50 from scratch
    eval_limit: int = 0  # 0: the whole validation and test splits; >0: stratified subsets
    cnn_epochs: int = 6  # custom CNN epochs per seed (Adam, peak lr cnn_lr; the budget test compares 3 with 6)
    scratch_epochs: int = 2  # VGG16 and ResNet50 epochs per seed
    effnet_frozen_epochs: int = 30  # epochs of the frozen EfficientNet's head on its features, per seed
    effnet_finetuned_epochs: int = 4  # EfficientNet-Lite0 fine-tuned end to end, per seed (the budget test: 2 vs 4)
    scheduler: str = 'wsd'  # learning-rate schedule: "wsd" (warm-up, stable, linear cool-down) or "onecycle"
    cooldown: float = 0.2  # "wsd": the share of the steps spent cooling the learning rate down to 0
    #: "wsd": also cool a copy down from half the budget: the budget-sensitivity plateau test (models of 4+ epochs)
    budget_check: bool = True
    plateau_tol: float = 0.01  # a model is at its plateau when doubling its budget gains less validation accuracy
    augment_resampling: str = 'bicubic'  # kernel of the augmentation's affine resampling (Keras: "bilinear"; see below)
    batch_size: int = 64  # training batch size (the paper: 32)
    workers: int = 2  # models trained at a time, each in a one-thread process (1: one after another, here)
    cnn_lr: float = 0.001  # peak learning rate of the custom CNN (the paper: Adam 5e-4, constant with plateau decay)
    scratch_lr: float = 0.002  # peak learning rate for VGG16 / ResNet50
    head_lr: float = 0.003  # peak learning rate of the frozen-base EfficientNet head
    finetune_lr: float = 0.001  # peak learning rate of EfficientNet fine-tuning
    robust_limit: int = 300  # test images in each robustness sweep (stratified)
    influence_train: int = 1000  # training images of the last-layer influence problem
    influence_l2: float = 0.001  # L2 penalty of the last-layer problem (makes it strongly convex)
    influence_damping: float = 0.001  # damping δ added to the Hessian
    loo_count: int = 300  # training images retrained without, per CNN seed, for the leave-one-out check
    loo_tests: int = 100  # test images drawn at random, per CNN seed, whose loss the leave-one-out check follows
    tracin_epochs: int = 10  # epochs of last-layer SGD whose checkpoints TracIn sums over
    gradcam_count: int = 32  # test images per model for the deletion/insertion and randomisation checks
    deletion_steps: int = 10  # steps of the deletion/insertion curves
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
