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


def keras_affine(x: torch.Tensor, rotation: float = 20.0, shift: float = 0.2, shear: float = 0.2, zoom: float = 0.2,
                 flips: bool = True) -> torch.Tensor:
    """Keras ``ImageDataGenerator``-style augmentation on a uint8 NHWC batch (paper 003's settings by default).

    Per image: rotation uniform in ±``rotation`` degrees, horizontal/vertical shift uniform in ±``shift`` of
    the side, shear uniform in ±``shear`` *degrees* (Keras's ``shear_range`` is an angle in degrees, so 0.2
    is almost nothing), zoom drawn per axis uniform in [1 − zoom, 1 + zoom], random horizontal and vertical
    flips; points outside the image take the nearest edge pixel (Keras's ``fill_mode="nearest"``).
    Bilinear resampling; returns uint8 NHWC.
    """
    import math

    import torch.nn.functional as F

    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (N,H,W,C), got shape {tuple(x.shape)}")
    n = x.shape[0]
    u = lambda: torch.rand(n) * 2 - 1  # noqa: E731  uniform in [-1, 1]
    angle = u() * math.radians(rotation)
    sh = u() * math.radians(shear)
    zx, zy = 1 + u() * zoom, 1 + u() * zoom
    tx, ty = u() * shift * 2, u() * shift * 2  # normalised coordinates span 2 per side
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output → input sampling matrix R(angle) · S(shear) · Z(zx, zy), Keras's composition, plus the shift
    zeros, ones = torch.zeros(n), torch.ones(n)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear_m = torch.stack([torch.stack([ones, -torch.sin(sh)], 1), torch.stack([zeros, torch.cos(sh)], 1)], 1)
    zoom_m = torch.diag_embed(torch.stack([zx, zy], 1))
    a = rot @ shear_m @ zoom_m
    theta = torch.cat([a, torch.stack([tx, ty], 1)[:, :, None]], 2).to(x.device)
    img = x.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if flips:
        hflip = (torch.rand(n) < 0.5).view(n, 1, 1, 1).to(x.device)
        vflip = (torch.rand(n) < 0.5).view(n, 1, 1, 1).to(x.device)
        out = torch.where(hflip, out.flip(3), out)
        out = torch.where(vflip, out.flip(2), out)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
