"""Batch augmentations on uint8 NHWC image tensors (vectorised, seeded by the global torch RNG)."""
from __future__ import annotations

import torch


def flips_and_rot90(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip, vertical flip and transpose per image: the 8 symmetries of the square (the dihedral group D4)."""
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (N,H,W,C), got shape {tuple(x.shape)}")
    n = x.shape[0]
    hflip, vflip, transpose = (torch.rand(n) < 0.5 for _ in range(3))
    mask = lambda m: m.view(n, 1, 1, 1).to(x.device)  # noqa: E731
    x = torch.where(mask(hflip), x.flip(2), x)
    x = torch.where(mask(vflip), x.flip(1), x)
    if x.shape[1] == x.shape[2]:
        x = torch.where(mask(transpose), x.transpose(1, 2), x)
    return x.contiguous()
