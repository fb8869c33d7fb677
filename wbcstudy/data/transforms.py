"""Image transforms and array helpers: RGB to HSV, channel statistics, stratified subsets."""
from __future__ import annotations

import numpy as np
import torch


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """HSV of float RGB in [0, 1] with shape (..., 3, H, W); every output channel in [0, 1] (hue as a fraction of a
    turn, as colorsys)."""
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected shape (..., 3, H, W), got {tuple(x.shape)}")
    r, g, b = x.unbind(dim=-3)
    maxc, argmax = x.max(dim=-3)
    minc = x.min(dim=-3).values
    delta = maxc - minc
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    sat = torch.where(maxc > 0, delta / safe_max, torch.zeros_like(maxc))
    # hue sector by the channel holding the maximum (ties resolved r, then g, then b, as colorsys does)
    hue_r = ((g - b) / safe_delta) % 6.0
    hue_g = (b - r) / safe_delta + 2.0
    hue_b = (r - g) / safe_delta + 4.0
    hue = torch.where(argmax == 0, hue_r, torch.where(argmax == 1, hue_g, hue_b))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = hue - torch.floor(hue)  # wrap 1.0 to 0.0
    return torch.stack([hue, sat, maxc], dim=-3)


def channel_mean_std(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 NHWC images, on the [0, 1] scale."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N,H,W,3), got {images.shape}")
    pixels = images.reshape(-1, 3)
    mean = pixels.mean(0, dtype=np.float64) / 255.0
    sq = (np.einsum("ij,ij->j", pixels.astype(np.float32), pixels.astype(np.float32), dtype=np.float64) / len(pixels)
          / 255.0**2)
    return mean.tolist(), np.sqrt(sq - mean**2).tolist()


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0, nested: bool = False) -> np.ndarray:
    """Sorted indices of about ``n`` items drawn per class in proportion to the class shares (every class keeps one or
    more).

    ``nested``: each class is one fixed random order cut at its share, so the items of a smaller ``n`` are among those
    of a larger one (same labels and seed); otherwise each class's items are drawn with ``Generator.choice``.
    """
    labels = np.asarray(labels)
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        k = max(1, round(n * len(idx) / len(labels)))
        picked.append(rng.permutation(idx)[:k] if nested else rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def area_downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 NHWC images shrunk by an integer ``factor`` per side, each output pixel the rounded mean of a factor×factor
    block.

    Exact box (area) averaging, so a 32 px array made from a cached 64 px array needs no second decode of the files.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N,H,W,3), got {images.shape} {images.dtype}")
    n, h, w, c = images.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor {factor} must be a positive divisor of the image sides {h}×{w}")
    blocks = images.reshape(n, h // factor, factor, w // factor, factor, c).astype(np.float32)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)
