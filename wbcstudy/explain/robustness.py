"""Image perturbations for robustness tests, on uint8 NHWC batches, a severity sweep with Wilson intervals, and an
image-sharpness measure.

The README's one-level settings: Gaussian noise σ = 0.05 (on the [0, 1] scale), a 5×5 Gaussian blur
(OpenCV's default σ for that kernel, 1.1) and brightness ×1.3.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["gaussian_noise", "gaussian_blur", "brightness", "PERTURBATIONS", "README_LEVELS", "SWEEP_LEVELS",
           "IDENTITY_LEVELS", "severity_sweep", "perturbed_predictions", "sweep_table", "opencv_sigma",
           "laplacian_energy"]


def _check(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Add N(0, σ²) noise on the [0, 1] scale, clip to [0, 1], round back to uint8 (σ = 0: unchanged)."""
    x = _check(x)
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    if sigma == 0:
        return x.clone()
    gen = torch.Generator().manual_seed(seed)
    noisy = x.float() / 255 + sigma * torch.randn(x.shape, generator=gen)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def opencv_sigma(kernel: int) -> float:
    """The σ OpenCV's ``GaussianBlur`` uses for a k×k kernel when given σ = 0: 0.3·((k − 1)/2 − 1) + 0.8."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_blur(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """A k×k Gaussian blur with OpenCV's default σ for that kernel (k odd; k = 1: unchanged); reflected borders."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    x = _check(x)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd positive integer, got {kernel}")
    if kernel == 1:
        return x.clone()
    out = tv_blur(x.permute(0, 3, 1, 2).float(), kernel_size=[kernel, kernel], sigma=[opencv_sigma(kernel)] * 2)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply every pixel by ``factor`` and clip to 255 (factor 1: unchanged)."""
    x = _check(x)
    if factor < 0:
        raise ValueError("factor must be >= 0")
    return (x.float() * factor).round().clamp(0, 255).to(torch.uint8)


PERTURBATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "gaussian_noise": lambda x, level: gaussian_noise(x, float(level)),
    "gaussian_blur": lambda x, level: gaussian_blur(x, int(level)),
    "brightness": lambda x, level: brightness(x, float(level)),
}
#: The README's single settings, marked on the severity curves.
README_LEVELS: dict[str, float] = {"gaussian_noise": 0.05, "gaussian_blur": 5, "brightness": 1.3}
#: The severity sweep around them (the trust chapter's curves and the summary's robustness panel): each contains the
#: README's setting and the identity level.
SWEEP_LEVELS: dict[str, list[float]] = {"gaussian_noise": [0.0, 0.02, 0.05, 0.1, 0.2], "gaussian_blur": [1, 3, 5, 7, 9],
                                        "brightness": [0.6, 0.8, 1.0, 1.3, 1.6]}


#: The level at which each perturbation leaves the images unchanged.
IDENTITY_LEVELS: dict[str, float] = {"gaussian_noise": 0.0, "gaussian_blur": 1, "brightness": 1.0}


def perturbed_predictions(predict: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor,
                          levels: dict[str, Sequence[float]]) -> dict[tuple[str, float], np.ndarray]:
    """Predicted class per image under each perturbation and level: ``{(perturbation, level): labels}``.

    ``predict`` maps images to class probabilities; the clean images are predicted once, for every identity level.
    """
    out: dict[tuple[str, float], np.ndarray] = {}
    clean: np.ndarray | None = None
    for name, values in levels.items():
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r}; choose from {sorted(PERTURBATIONS)}")
        for level in values:
            if float(level) == float(IDENTITY_LEVELS[name]):
                if clean is None:
                    clean = np.asarray(predict(x)).argmax(1)
                out[(name, float(level))] = clean
            else:
                out[(name, float(level))] = np.asarray(predict(PERTURBATIONS[name](x, level))).argmax(1)
    return out


def sweep_table(predictions: dict[tuple[str, float], np.ndarray], y: np.ndarray, level: float = 0.95) -> pd.DataFrame:
    """Accuracy per (perturbation, level) with its Wilson interval: columns perturbation, level, accuracy, n,
    ci_low, ci_high."""
    from wbcstudy.intervals import wilson

    y = np.asarray(y)
    rows = []
    for (name, value), pred in predictions.items():
        k = int((np.asarray(pred) == y).sum())
        lo, hi = wilson(k, len(y), level)
        rows.append({"perturbation": name, "level": float(value), "accuracy": k / len(y), "n": len(y), "ci_low": lo,
                     "ci_high": hi})
    return pd.DataFrame(rows)


def severity_sweep(predict: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, y: np.ndarray,
                   levels: dict[str, Sequence[float]]) -> pd.DataFrame:
    """Accuracy of ``predict`` (images → class probabilities) under each perturbation at each level.

    Returns a long table with columns perturbation, level, accuracy, n and the Wilson 95% interval ci_low, ci_high.
    """
    return sweep_table(perturbed_predictions(predict, x, levels), y)


def laplacian_energy(x: torch.Tensor) -> float:
    """Mean squared response of the 4-neighbour Laplacian on the grey level (0-255) of uint8 NHWC images, borders
    excluded: a sharpness measure (a blurred image scores lower)."""
    x = _check(x)
    grey = x.float().mean(-1)
    lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * grey[:, 1:-1, 1:-1])
    return float((lap ** 2).mean())
