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

from wbcstudy.train import TrainConfig, TrainResult, fit, predict_proba, reached_plateau

__all__ = ["MODEL_NAMES", "TrustModelConfig", "TrainedModel", "resize_images", "stratified_tensors",
           "train_trust_model", "train_trust_models",
           "accuracy_table", "models_accuracy_difference", "RobustnessSweep", "robustness_sweeps", "readme_robustness",
           "augmentation_sharpness", "FisherComparison", "fisher_comparison", "LeaveOneOutCheck",
           "influence_vs_leave_one_out", "captum_cross_check", "training_similarity", "harmful_images_summary",
           "harmful_neighbours", "gradcam_checks"]

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


def train_trust_model(spec: TrustModelConfig, train: tuple[torch.Tensor, torch.Tensor],
                      val: tuple[torch.Tensor, torch.Tensor],
                      test_x: torch.Tensor, n_classes: int, batch_size: int = 64, seed: int = 0,
                      augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> TrainedModel:
    """Train one model at its own resolution (``wbcstudy.train.fit``, best validation epoch kept) and score the test
    split.

    From-scratch networks normalise with the training images' channel mean/std, EfficientNet with ImageNet's;
    ``plateau`` is ``reached_plateau`` of the validation-accuracy history.
    """
    from wbcstudy.data import channel_mean_std
    from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD
    from wbcstudy.models.trust_cnn import build_trust_model

    x_train = resize_images(train[0], spec.size)
    pretrained = spec.key.startswith("effnet")
    mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if pretrained else channel_mean_std(x_train.numpy())
    torch.manual_seed(seed)
    model = build_trust_model(ARCH_OF[spec.key], n_classes, spec.size, mean, std, pretrained=pretrained)
    config = TrainConfig(epochs=spec.epochs, batch_size=batch_size, lr=spec.lr, optimizer=spec.optimizer,
                         weight_decay=spec.weight_decay, seed=seed, progress=False)
    result = fit(model, (x_train, train[1]), (resize_images(val[0], spec.size), val[1]), config, augment=augment,
                 n_classes=n_classes)
    probs = predict_proba(result.model, resize_images(test_x, spec.size))
    plateau = reached_plateau(result.history["val_accuracy"].tolist())
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


def accuracy_table(runs: dict[str, TrainedModel], test_y: np.ndarray, n_boot: int = 1000, seed: int = 0
                   ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Test metrics per model with stratified bootstrap 95% intervals: ``(metrics, ci, table)``.

    Metrics are named ``<key>_accuracy``, ``<key>_balanced_accuracy``, ``<key>_macro_f1``, ``<key>_auroc``,
    ``<key>_ece`` and ``<key>_train_seconds``; the table also counts the classes each model predicts at all.
    """
    from wbcstudy.evaluate import metrics_with_ci

    metrics: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    rows = []
    for key, run in runs.items():
        m, c = metrics_with_ci(test_y, run.test_probs, labels=list(range(run.test_probs.shape[1])), n_boot=n_boot,
                               seed=seed)
        for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
            metrics[f"{key}_{name}"], ci[f"{key}_{name}"] = float(m[name]), tuple(c[name])
        metrics[f"{key}_ece"], metrics[f"{key}_train_seconds"] = float(m["ece"]), float(run.result.seconds)
        rows.append({"model": run.name, "px": run.spec.size, "accuracy": m["accuracy"],
                     "95% CI": "[{:.3f}, {:.3f}]".format(*c["accuracy"]), "balanced accuracy": m["balanced_accuracy"],
                     "macro F1": m["macro_f1"], "ECE": m["ece"],
                     "classes predicted": int(len(np.unique(run.test_probs.argmax(1)))), "plateau": run.plateau})
    return metrics, ci, pd.DataFrame(rows).set_index("model")


def models_accuracy_difference(run_a: TrainedModel, run_b: TrainedModel, test_y: np.ndarray, n_boot: int = 1000,
                               seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Test accuracy of A minus B and its paired, class-stratified bootstrap 95% interval over test cells."""
    from wbcstudy.intervals import bootstrap_difference

    y = np.asarray(test_y)
    pred_a, pred_b = run_a.test_probs.argmax(1), run_b.test_probs.argmax(1)
    accuracy = lambda t, p: float((t == p).mean())  # noqa: E731
    value = accuracy(y, pred_a) - accuracy(y, pred_b)
    return value, _containing(value,
                              bootstrap_difference(accuracy, y, pred_a, pred_b, n_boot=n_boot, seed=seed, strata=True))


@dataclass
class RobustnessSweep:
    """Every model's accuracy under each perturbation and level, with the predictions behind it."""

    table: pd.DataFrame  #: long: model, perturbation, level, accuracy, n, ci_low, ci_high (Wilson 95%)
    #: (model key, perturbation, level) → predicted class per image
    predictions: dict[tuple[str, str, float], np.ndarray]
    y: np.ndarray  #: the images' true classes


def robustness_sweeps(runs: dict[str, TrainedModel], x: torch.Tensor, y: np.ndarray,
                      levels: dict[str, Sequence[float]]) -> RobustnessSweep:
    """Accuracy of every model under each perturbation and level, applied at the model's own input resolution.

    The images are resized to each model's size first and perturbed there (a 5×5 blur means the same to the
    network as in the README's code, and noise is not averaged away by a later resize); each accuracy gets a
    Wilson 95% interval over the images.
    """
    from wbcstudy.explain import perturbed_predictions, sweep_table

    y = np.asarray(y)
    tables, predictions = [], {}
    for key, run in runs.items():
        preds = perturbed_predictions(lambda xb, m=run.model: predict_proba(m, xb), resize_images(x, run.spec.size),
                                      levels)
        predictions.update({(key, name, level): p for (name, level), p in preds.items()})
        tables.append(sweep_table(preds, y).assign(model=run.name))
    table = pd.concat(tables, ignore_index=True)[["model", "perturbation", "level", "accuracy", "n", "ci_low",
                                                  "ci_high"]]
    return RobustnessSweep(table, predictions, y)


def readme_robustness(sweep: RobustnessSweep, runs: dict[str, TrainedModel], n_boot: int = 1000, seed: int = 0
                      ) -> tuple[dict[str, float], dict[str, tuple[float, float]], pd.DataFrame]:
    """Each model's accuracy clean and at the README's single settings (noise σ 0.05, 5×5 blur, brightness ×1.3),
    and the change from clean: ``(metrics, ci, table)``.

    Metrics: ``<key>_noise005_accuracy``, ``<key>_blur5_accuracy``, ``<key>_brightness13_accuracy`` (Wilson
    intervals), ``<key>_<setting>_minus_clean_accuracy`` (paired, class-stratified bootstrap over the same images), and
    with both models ``resnet50_minus_cnn_<setting>_accuracy`` (paired bootstrap).
    """
    from wbcstudy.explain import IDENTITY_LEVELS, README_LEVELS
    from wbcstudy.intervals import bootstrap_difference, wilson

    y = sweep.y
    accuracy = lambda t, p: float((t == p).mean())  # noqa: E731
    suffix = {"gaussian_noise": "noise005", "gaussian_blur": "blur5", "brightness": "brightness13"}

    def pred(key: str, pert: str, level: float) -> np.ndarray:
        hit = sweep.predictions.get((key, pert, float(level)))
        if hit is None:
            raise ValueError(f"the sweep has no predictions of {key} for {pert} at {level}")
        return hit

    rows, metrics, ci = [], {}, {}
    for key, run in runs.items():
        clean = pred(key, "brightness", IDENTITY_LEVELS["brightness"])
        row: dict[str, object] = {"model": run.name, "clean": accuracy(y, clean)}
        for pert, level in README_LEVELS.items():
            p = pred(key, pert, level)
            name = f"{key}_{suffix[pert]}_accuracy"
            metrics[name] = value = accuracy(y, p)
            ci[name] = wilson(int((p == y).sum()), len(y))
            change = f"{key}_{suffix[pert]}_minus_clean_accuracy"
            metrics[change] = value - row["clean"]  # type: ignore[operator]
            ci[change] = _containing(metrics[change],
                                     bootstrap_difference(accuracy, y, p, clean, n_boot=n_boot, seed=seed, strata=True))
            row[f"{pert} {level:g}"] = value
            row[f"Δ {suffix[pert]} [95% CI]"] = "{:+.3f} [{:+.3f}, {:+.3f}]".format(metrics[change], *ci[change])
        rows.append(row)
    if "resnet50" in runs and "cnn" in runs:
        for pert, level in README_LEVELS.items():
            name = f"resnet50_minus_cnn_{suffix[pert]}_accuracy"
            a, b = pred("resnet50", pert, level), pred("cnn", pert, level)
            metrics[name] = accuracy(y, a) - accuracy(y, b)
            ci[name] = _containing(metrics[name],
                                   bootstrap_difference(accuracy, y, a, b, n_boot=n_boot, seed=seed, strata=True))
    return metrics, ci, pd.DataFrame(rows).set_index("model")


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
    (half misclassified where possible), then retrain without each of ``loo_count`` random training images.

    Metrics: ``influence_loo_spearman``, ``tracin_loo_spearman``, ``readme_influence_loo_spearman`` (means over the
    followed test images), ``influence_test_images``, ``influence_loo_removed`` and ``influence_refit_accuracy``; the
    three ρ get percentile bootstrap intervals that resample both the followed test images and the removed training
    images (``n_boot`` resamples).
    """
    from wbcstudy.explain import LastLayerProblem, readme_influence, tracin_last_layer
    from wbcstudy.intervals import percentile_interval

    y_test = np.asarray(y_test)
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    problem = LastLayerProblem(z_train, y_train, n_classes, l2=l2)
    theta = problem.fit()
    p_test = problem.probs(theta, z_test).numpy()
    refit_acc = float((p_test.argmax(1) == y_test).mean())
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(p_test.argmax(1) != y_test), np.flatnonzero(p_test.argmax(1) == y_test)
    n_wrong = min(len(wrong), loo_tests // 2)
    n_right = min(len(right), loo_tests - n_wrong)
    chosen = np.concatenate([rng.choice(wrong, n_wrong, replace=False),
                             rng.choice(right, n_right, replace=False)]).astype(int)
    zt, yt = z_test[chosen], torch.as_tensor(y_test[chosen])
    hessian = problem.hessian(theta)
    predicted = problem.predicted_loo_effect(theta, zt, yt, damping=damping, hessian=hessian)
    readme = readme_influence(problem.probs(theta).numpy(), np.asarray(y_train), p_test[chosen], y_test[chosen])
    tracin, _ = tracin_last_layer(problem, zt, yt, epochs=tracin_epochs, lr=0.5, batch_size=64, seed=seed)
    removed = rng.choice(problem.n, min(loo_count, problem.n), replace=False)
    actual = problem.loo_effect(theta, removed, zt, yt, hessian=hessian)
    rows = []
    for j, t in enumerate(chosen):
        rows.append({"test image": int(t), "true": names[y_test[t]], "predicted": names[p_test[t].argmax()],
                     "Koh & Liang": spearmanr(predicted[j, removed], actual[j])[0],
                     "TracIn": spearmanr(tracin[j, removed], actual[j])[0],
                     "README (as written)": spearmanr(readme[j, removed], actual[j])[0]})
    table = pd.DataFrame(rows).set_index("test image")
    metrics = {"influence_loo_spearman": float(table["Koh & Liang"].mean()),
               "tracin_loo_spearman": float(table["TracIn"].mean()),
               "readme_influence_loo_spearman": float(table["README (as written)"].mean()),
               "influence_refit_accuracy": refit_acc,
               "influence_test_images": len(chosen), "influence_loo_removed": len(removed)}
    ci = {}
    boot_rng = np.random.default_rng(seed + 1)
    draws = [(boot_rng.integers(0, len(chosen), len(chosen)), boot_rng.integers(0, len(removed), len(removed)))
             for _ in range(n_boot)]
    for name, scores in (("influence", predicted), ("tracin", tracin), ("readme_influence", readme)):
        own = scores[:, removed]
        rhos = (_row_spearman(own[rows][:, cols], actual[rows][:, cols]) for rows, cols in draws)
        samples = [r[np.isfinite(r)].mean() if np.isfinite(r).any() else np.nan for r in rhos]  # NaN: constant rows
        ci[f"{name}_loo_spearman"] = _containing(metrics[f"{name}_loo_spearman"], percentile_interval(samples))
    return LeaveOneOutCheck(problem, theta, chosen, removed, predicted, tracin, readme, actual, p_test, table, metrics,
                            ci)


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
    seed: int = 0  # seeds weight init, subsets, shuffling and augmentation
    cnn_size: int = 32  # custom CNN input in px (the paper: 128; a multiple of 16)
    #: "vgg16", "resnet50": from-scratch stand-ins for the README's frozen-ImageNet nets (none at cpu)
    scratch_models: list = field(default_factory=lambda: [])
    vgg_size: int = 32  # VGG16 from-scratch input in px (the paper: 224, ImageNet-frozen)
    resnet_size: int = 64  # ResNet50 from-scratch input in px (the paper: 224, ImageNet-frozen)
    effnet_size: int = 64  # EfficientNet-Lite0 input in px
    source_size: int = 64  # px of the decoded PBC cache every model's input is resized from
    train_limit: int = 0  # 0: every training image for the custom CNN and EfficientNet; >0: a stratified subset
    scratch_train_limit: int = 1500  # stratified training subset for VGG16 and ResNet50 from scratch
    eval_limit: int = 0  # 0: the whole validation and test splits; >0: stratified subsets
    cnn_epochs: int = 8  # custom CNN epochs (Adam, peak lr cnn_lr, one-cycle)
    scratch_epochs: int = 2  # VGG16 and ResNet50 epochs
    effnet_frozen_epochs: int = 10  # EfficientNet-Lite0 with a frozen ImageNet base: only the head trains
    effnet_finetuned_epochs: int = 3  # EfficientNet-Lite0 fine-tuned end to end
    augment_resampling: str = 'bicubic'  # kernel of the augmentation's affine resampling (Keras: "bilinear"; see below)
    batch_size: int = 64  # training batch size (the paper: 32)
    workers: int = 2  # models trained at a time, each in a one-thread process (1: one after another, here)
    cnn_lr: float = 0.001  # peak learning rate of the custom CNN (the paper: Adam 5e-4, constant with plateau decay)
    scratch_lr: float = 0.002  # peak learning rate for VGG16 / ResNet50
    head_lr: float = 0.003  # peak learning rate of the frozen-base EfficientNet head
    finetune_lr: float = 0.001  # peak learning rate of EfficientNet fine-tuning
    robust_limit: int = 500  # test images in each robustness sweep (stratified)
    influence_train: int = 1000  # training images of the last-layer influence problem
    influence_l2: float = 0.001  # L2 penalty of the last-layer problem (makes it strongly convex)
    influence_damping: float = 0.001  # damping δ added to the Hessian
    loo_count: int = 60  # training images retrained without, for the leave-one-out check
    loo_tests: int = 20  # test images whose loss the leave-one-out check follows (half misclassified where possible)
    tracin_epochs: int = 10  # epochs of last-layer SGD whose checkpoints TracIn sums over
    gradcam_count: int = 32  # test images per model for the deletion/insertion and randomisation checks
    deletion_steps: int = 10  # steps of the deletion/insertion curves
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
