"""The CytoDiffusion inference procedure: a class-conditional ε-predictor used as a classifier.

Per trial one timestep and ONE noise tensor (and one dihedral augmentation) are drawn per image and shared by all of
its candidate classes; the timesteps are stratified (``linspace(1, T-1)``, shuffled once). The error of class c is
the sum of squared ε-errors inside a central disk, times a per-timestep weight (1/poly4 or uniform). Each trial's
weighted errors are shifted so the smallest active one is 0; a class's score is the running mean of its shifted
errors, normalised by the mean over classes; the prediction is the argmin over active classes. From trial index
``min_trials`` on, every ``prune_every`` trials, a class whose errors are worse than the current best's by a paired
t-test with p < ``p_value`` is dropped; an image stops when one class is left or after ``max_trials``. Confidence is
the gap between the predicted class's normalised score and the next smallest one (paper v1).

``eps_model(noisy, timesteps, labels)`` is any callable returning ε̂ of the shape of ``noisy`` (the UNet of
``wbcstudy.models.diffusion`` or a test double). Each image has its own generator seeded by (seed, image index), so
results do not depend on how many images share a UNet call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import ttest_rel

from wbcstudy.augment import dihedral_inverse, dihedral_transform

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

PAPER_POLY4 = (0.9270553940204841, 9.836536887830196, -4.6840608002246205, 6.018538389994896, -9.339786177681749)
"""The authors' coefficients a0..a4 of poly4(s), s = (T - t) / T, fitted on their SD-1.5 latent errors."""


@dataclass
class DiffusionClassification:
    """Result of :func:`diffusion_classify` for N images and K classes."""

    predictions: np.ndarray  # (N,) argmin class
    confidence: np.ndarray  # (N,) gap between the next smallest and the predicted normalised score
    normalised_errors: np.ndarray  # (N, K) running mean of shifted weighted errors / its mean over classes
    unet_evaluations: np.ndarray  # (N,) ε-predictions computed (one per active class per trial)
    trials: np.ndarray  # (N,) trials run before stopping
    class_trials: np.ndarray  # (N, K) trials in which each class was still active
    timesteps: np.ndarray  # (max_trials,) the stratified, shuffled timestep sequence (shared by all images)
    raw_errors: np.ndarray | None  # (N, max_trials, K) unweighted disk errors, NaN where not computed (keep_errors)
    seconds: float


def disk_mask(side: int, radius_fraction: float = 0.44) -> torch.Tensor:
    """(side, side) float mask: 1 where the distance to pixel (side//2, side//2) is <= radius_fraction * side."""
    if side < 1 or radius_fraction <= 0:
        raise ValueError(f"need side >= 1 and radius_fraction > 0, got {side}, {radius_fraction}")
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    dist = torch.sqrt((xx - side // 2).float() ** 2 + (yy - side // 2).float() ** 2)
    return (dist <= radius_fraction * side).float()


def stratified_timesteps(n_trials: int, num_train_timesteps: int = 1000, seed: int = 0) -> np.ndarray:
    """The authors' timestep sequence: ``(T-1) - linspace(1, T-1, n, int)`` shuffled once with ``seed``."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be positive, got {n_trials}")
    steps = np.linspace(1, num_train_timesteps - 1, n_trials, dtype=int)
    np.random.default_rng(seed).shuffle(steps)
    return (num_train_timesteps - 1) - steps  # scheduler.timesteps[k] = T-1-k for T inference steps


def poly4_weights(timesteps: np.ndarray, coefficients: Sequence[float] = PAPER_POLY4,
                  num_train_timesteps: int = 1000) -> np.ndarray:
    """Per-timestep weights 1 / poly4(s), s = (T - t) / T; a non-positive polynomial value is an error."""
    coefficients = np.asarray(coefficients, dtype=float)
    if coefficients.shape != (5,):
        raise ValueError(f"poly4 needs 5 coefficients a0..a4, got {coefficients.shape}")
    s = (num_train_timesteps - np.asarray(timesteps, dtype=float)) / num_train_timesteps
    value = np.polynomial.polynomial.polyval(s, coefficients)
    if np.any(value <= 0):
        raise ValueError(f"poly4 is not positive at s={s[value <= 0][:5]}; refit the weighting on more timesteps")
    return 1.0 / (value + 1e-10)


def trial_weights(timesteps: np.ndarray, weighting: str | Sequence[float] = "poly4",
                  num_train_timesteps: int = 1000) -> np.ndarray:
    """Per-trial weights: "poly4" (the paper's coefficients), "uniform" (ones) or 1/poly4 of 5 refitted coefficients."""
    if isinstance(weighting, str):
        if weighting == "poly4":
            return poly4_weights(timesteps, PAPER_POLY4, num_train_timesteps)
        if weighting == "uniform":
            return np.ones(len(timesteps))
        raise ValueError(f"unknown weighting {weighting!r}: use 'poly4', 'uniform' or 5 coefficients")
    return poly4_weights(timesteps, weighting, num_train_timesteps)


def fit_poly4_weighting(timesteps: np.ndarray, raw_errors: np.ndarray, num_train_timesteps: int = 1000) -> np.ndarray:
    """Coefficients a0..a4 of the poly4 fitted to the median over images of the across-class std of the errors.

    ``raw_errors`` is (N, n_trials, K) (NaN = not computed; only complete rows count) with ``timesteps`` (n_trials,),
    or (M, K) with ``timesteps`` (M,). The fitted weighting 1/poly4 puts every timestep's class spread on one scale.
    """
    t = np.asarray(timesteps)
    e = np.asarray(raw_errors, dtype=float)
    if e.ndim == 3:
        if e.shape[1] != len(t):
            raise ValueError(f"raw_errors has {e.shape[1]} trials but {len(t)} timesteps were given")
        t = np.broadcast_to(t, e.shape[:2]).reshape(-1)
        e = e.reshape(-1, e.shape[2])
    if e.ndim != 2 or len(e) != len(t):
        raise ValueError(f"raw_errors must be (N, trials, K) or (M, K) matching timesteps; got {e.shape}, {t.shape}")
    keep = np.all(np.isfinite(e), axis=1)
    t, spread = t[keep], e[keep].std(axis=1)
    levels = np.unique(t)
    if len(levels) < 5:
        raise ValueError(f"need at least 5 distinct timesteps with complete errors to fit poly4, got {len(levels)}")
    median_spread = np.array([np.median(spread[t == lv]) for lv in levels])
    s = (num_train_timesteps - levels.astype(float)) / num_train_timesteps
    return np.polynomial.polynomial.polyfit(s, median_spread, 4)


def _as_model_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1]; float NCHW passes through."""
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be NHWC with 3 channels, got {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    return images.float()


def _image_generators(n: int, seed: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 1_000_003 + offset + i) for i in range(n)]


def _trial_input(clean: torch.Tensor, gen: torch.Generator, alpha_bar: float, augment: bool):
    """One trial's noisy image, its noise and its augmentation code (the noise and code come from ``gen``)."""
    code = int(torch.randint(0, 8, (1,), generator=gen)) if augment else 0
    x0 = dihedral_transform(clean, code)
    noise = torch.randn(x0.shape, generator=gen)
    noisy = (alpha_bar ** 0.5) * x0 + ((1 - alpha_bar) ** 0.5) * noise
    return noisy, noise, code


def _model_device(eps_model: object) -> torch.device:
    """Where the ε-predictor's parameters live (CPU for parameter-free callables); inputs are drawn on the CPU."""
    try:
        return next(eps_model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """A reusable bf16 autocast context for the ε-predictions when ``precision`` resolves to bf16, else a disabled
    one."""
    from wbcstudy.train import select_precision

    chosen = select_precision(precision, device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=chosen == "bf16")


def _alphas_cumprod(scheduler_or_alphas) -> torch.Tensor:
    a = getattr(scheduler_or_alphas, "alphas_cumprod", scheduler_or_alphas)
    return torch.as_tensor(a, dtype=torch.float64)


def _ordered_argmin(values: np.ndarray, active: np.ndarray) -> int:
    """argmin over active classes; ties go to the lower index (the authors' deterministic sort)."""
    candidates = np.flatnonzero(active)
    return int(candidates[np.argmin(values[candidates])])


def diffusion_classify(
    eps_model: EpsModel,
    images: torch.Tensor | np.ndarray,
    scheduler,
    n_classes: int,
    max_trials: int = 100,
    min_trials: int = 20,
    prune_every: int = 5,
    p_value: float = 2e-3,
    prune: bool = True,
    weighting: str | Sequence[float] = "poly4",
    radius_fraction: float = 0.44,
    augment: bool = True,
    images_per_call: int = 8,
    seed: int = 0,
    keep_errors: bool = False,
    precision: str = "fp32",
    candidates: Sequence[int] | None = None,
) -> DiffusionClassification:
    """Classify ``images`` (uint8 NHWC or float NCHW in [-1, 1]) with the CytoDiffusion procedure.

    ``scheduler`` gives ``alphas_cumprod`` (a DDPMScheduler or the tensor itself). ``weighting`` is "poly4" (the
    paper's coefficients), "uniform", or 5 refitted coefficients. All active classes of up to ``images_per_call``
    images go through one ``eps_model`` call per trial. ``precision`` ("fp32", "bf16" or "auto", through
    ``wbcstudy.train.select_precision``): bf16 autocasts the ε-predictions only; the errors are summed in float64.
    ``candidates`` restricts the classification to those class indices (a domain-shift test on the classes the shifted
    set has): only they are conditioned on, pruned among and predicted; the other classes' ``normalised_errors`` are
    NaN and cost no UNet evaluation, and the normalisation and the confidence use the candidates alone.
    """
    start = time.perf_counter()
    device = _model_device(eps_model)
    autocast = _autocast(device, precision)
    x = _as_model_images(images)
    alphas = _alphas_cumprod(scheduler)
    T = len(alphas)
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    if max_trials < 1 or min_trials < 1 or prune_every < 1 or images_per_call < 1:
        raise ValueError("max_trials, min_trials, prune_every and images_per_call must be positive")
    timesteps = stratified_timesteps(max_trials, T, seed)
    weights = trial_weights(timesteps, weighting, T)
    mask = disk_mask(x.shape[-1], radius_fraction) if x.shape[-1] == x.shape[-2] else None
    if mask is None:
        raise ValueError(f"images must be square for the central disk, got {tuple(x.shape[-2:])}")

    allowed = np.ones(n_classes, dtype=bool)
    if candidates is not None:
        chosen = [int(c) for c in candidates]
        if len(set(chosen)) != len(chosen) or len(chosen) < 2 or not all(0 <= c < n_classes for c in chosen):
            raise ValueError(f"candidates must be at least 2 distinct class indices in [0, {n_classes}), "
                             f"got {list(candidates)}")
        allowed[:] = False
        allowed[chosen] = True

    n = len(x)
    predictions = np.zeros(n, dtype=int)
    confidence = np.zeros(n)
    normalised = np.zeros((n, n_classes))
    evaluations = np.zeros(n, dtype=int)
    trials_run = np.zeros(n, dtype=int)
    class_trials = np.zeros((n, n_classes), dtype=int)
    raw = np.full((n, max_trials, n_classes), np.nan) if keep_errors else None
    classes = torch.arange(n_classes)

    for lo in range(0, n, images_per_call):
        chunk = x[lo:lo + images_per_call]
        m = len(chunk)
        gens = _image_generators(m, seed, lo)
        active = np.tile(allowed, (m, 1))
        running = [np.zeros((max_trials, n_classes)) for _ in range(m)]  # shifted weighted errors per trial
        done = np.zeros(m, dtype=bool)
        for trial in range(max_trials):
            live = np.flatnonzero(~done)
            if len(live) == 0:
                break
            t = int(timesteps[trial])
            ab = float(alphas[t])
            noisy_rows, noise_rows, label_rows, owners = [], [], [], []
            for j in live:
                noisy, noise, _ = _trial_input(chunk[j], gens[j], ab, augment)
                cls = classes[torch.from_numpy(active[j])]
                noisy_rows.append(noisy.expand(len(cls), *noisy.shape))
                noise_rows.append(noise.expand(len(cls), *noise.shape))
                label_rows.append(cls)
                owners.append((j, cls.numpy()))
            noisy_b = torch.cat(noisy_rows)
            labels_b = torch.cat(label_rows)
            with torch.no_grad(), autocast:
                eps_hat = eps_model(noisy_b.to(device, memory_format=torch.channels_last),
                                    torch.full((len(labels_b),), t, dtype=torch.long, device=device),
                                    labels_b.to(device)).float().cpu()
            err = ((torch.cat(noise_rows) - eps_hat.float()) ** 2 * mask).sum(dim=(1, 2, 3)).double().numpy()
            pos = 0
            for j, cls in owners:
                e = err[pos:pos + len(cls)]
                pos += len(cls)
                g = lo + j
                if raw is not None:
                    raw[g, trial, cls] = e
                weighted = e * weights[trial]
                row = running[j][trial]
                row[cls] = weighted - weighted.min()
                inactive = ~active[j]
                if trial > 0:
                    row[inactive] = running[j][:trial, inactive].mean(axis=0)
                evaluations[g] += len(cls)
                class_trials[g, cls] += 1
                trials_run[g] = trial + 1
                mean = running[j][:trial + 1].mean(axis=0)
                best = _ordered_argmin(mean, active[j])
                if prune and trial >= min_trials and trial % prune_every == 0:
                    for c in np.flatnonzero(active[j]):
                        if c == best:
                            continue
                        p = ttest_rel(running[j][:trial + 1, c], running[j][:trial + 1, best]).pvalue
                        if p < p_value and mean[c] > mean[best]:
                            active[j, c] = False
                    if active[j].sum() <= 1:
                        done[j] = True
        for j in range(m):
            g = lo + j
            k = trials_run[g]
            mean = running[j][:k].mean(axis=0)
            total = mean[allowed].mean()
            norm = mean / total if total > 0 else mean.copy()
            norm[~allowed] = np.nan
            normalised[g] = norm
            predictions[g] = _ordered_argmin(norm, active[j])
            others = norm[allowed & (np.arange(n_classes) != predictions[g])]
            confidence[g] = others.min() - norm[predictions[g]]
    return DiffusionClassification(predictions=predictions, confidence=confidence, normalised_errors=normalised,
                                   unet_evaluations=evaluations, trials=trials_run, class_trials=class_trials,
                                   timesteps=timesteps, raw_errors=raw, seconds=time.perf_counter() - start)


def predictions_after_each_trial(raw_errors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, trials) argmin of the running mean of shifted weighted errors after 1..trials trials (no pruning).

    ``raw_errors`` must be complete (from ``diffusion_classify(..., prune=False, keep_errors=True)``); used for
    accuracy against the number of trials.
    """
    e = np.asarray(raw_errors, dtype=float)
    if e.ndim != 3 or not np.all(np.isfinite(e)):
        raise ValueError("raw_errors must be a complete (N, trials, K) array (run without pruning)")
    w = np.asarray(weights, dtype=float)
    if w.shape != (e.shape[1],):
        raise ValueError(f"{w.shape} weights for {e.shape[1]} trials")
    shifted = e * w[None, :, None]
    shifted = shifted - shifted.min(axis=2, keepdims=True)
    running = np.cumsum(shifted, axis=1) / np.arange(1, e.shape[1] + 1)[None, :, None]
    return running.argmin(axis=2)


def counterfactual_heatmaps(
    eps_model: EpsModel,
    images: torch.Tensor | np.ndarray,
    scheduler,
    n_classes: int,
    n_trials: int = 50,
    weighting: str | Sequence[float] = "poly4",
    radius_fraction: float = 0.44,
    augment: bool = True,
    seed: int = 0,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Counterfactual heatmaps (paper eqs. 10-11): per image and class c, the mean over trials of the masked
    (ε − ε̂_c), aligned back to the image, minus the same for the predicted class.

    Returns (heatmaps (N, K, C, H, W), predictions (N,)). All classes run every trial (no pruning); the prediction is
    the argmin of the weighted mean error, as in :func:`diffusion_classify` without pruning; ``precision`` as there.
    """
    device = _model_device(eps_model)
    autocast = _autocast(device, precision)
    x = _as_model_images(images)
    alphas = _alphas_cumprod(scheduler)
    T = len(alphas)
    timesteps = stratified_timesteps(n_trials, T, seed)
    weights = trial_weights(timesteps, weighting, T)
    mask = disk_mask(x.shape[-1], radius_fraction)
    classes = torch.arange(n_classes)
    heatmaps = np.zeros((len(x), n_classes, *x.shape[1:]), dtype=np.float32)
    predictions = np.zeros(len(x), dtype=int)
    for i in range(len(x)):
        gen = _image_generators(1, seed, i)[0]
        diff_sum = torch.zeros((n_classes, *x.shape[1:]))
        shifted_sum = np.zeros(n_classes)
        for trial in range(n_trials):
            t = int(timesteps[trial])
            noisy, noise, code = _trial_input(x[i], gen, float(alphas[t]), augment)
            with torch.no_grad(), autocast:
                eps_hat = eps_model(noisy.expand(n_classes, *noisy.shape).to(device, memory_format=torch.channels_last),
                                    torch.full((n_classes,), t, dtype=torch.long, device=device),
                                    classes.to(device)).float().cpu()
            diff = (noise.unsqueeze(0) - eps_hat) * mask
            err = (diff ** 2).sum(dim=(1, 2, 3)).double().numpy() * weights[trial]
            shifted_sum += err - err.min()
            diff_sum += dihedral_inverse(diff, code)
        predictions[i] = int(np.argmin(shifted_sum))
        mean_diff = diff_sum / n_trials
        heatmaps[i] = (mean_diff - mean_diff[predictions[i]]).numpy()
    return heatmaps, predictions


def accuracy_after_each_trial(raw_errors: np.ndarray, timesteps: np.ndarray, labels: np.ndarray,
                              weighting: str | Sequence[float] = "poly4",
                              num_train_timesteps: int = 1000) -> np.ndarray:
    """(trials,) accuracy after 1..trials trials of kept, unpruned errors under a weighting (no new UNet passes).

    Used to compare weightings on the same errors: on validation cells to choose one, on test cells only to report.
    """
    labels = np.asarray(labels)
    if len(labels) != len(raw_errors):
        raise ValueError(f"{len(labels)} labels for {len(raw_errors)} images")
    per_trial = predictions_after_each_trial(raw_errors, trial_weights(timesteps, weighting, num_train_timesteps))
    return (per_trial == labels[:, None]).mean(axis=0)
