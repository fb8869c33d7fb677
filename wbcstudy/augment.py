"""Batch augmentations of image tensors (vectorised; seeded by the global torch RNG unless a generator is given)."""
from __future__ import annotations

import torch


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None,
                    channels_last: bool = True) -> torch.Tensor:
    """A random symmetry of the square per image (the dihedral group D4): horizontal flip, vertical flip, transpose.

    Three draws of ``torch.rand(n)`` (horizontal, vertical, transpose; each applied with probability 1/2, in that
    order) from ``generator``, or from the global torch RNG when it is None. ``channels_last``: NHWC images, else
    NCHW. Non-square images are flipped but never transposed.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (N,H,W,C) or (N,C,H,W), got shape {tuple(x.shape)}")
    n = x.shape[0]
    hflip, vflip, transpose = (torch.rand(n, generator=generator) < 0.5 for _ in range(3))
    height, width = (1, 2) if channels_last else (2, 3)
    mask = lambda m: m.view(n, 1, 1, 1).to(x.device)  # noqa: E731
    x = torch.where(mask(hflip), x.flip(width), x)
    x = torch.where(mask(vflip), x.flip(height), x)
    if x.shape[height] == x.shape[width]:
        x = torch.where(mask(transpose), x.transpose(height, width), x)
    return x.contiguous()


def dihedral_transform(x: torch.Tensor, code: int) -> torch.Tensor:
    """Dihedral element ``code`` in 0..7 (bits: horizontal flip, vertical flip, transpose) on the last two dims."""
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    return x


def dihedral_inverse(x: torch.Tensor, code: int) -> torch.Tensor:
    """Undo :func:`dihedral_transform` with the same ``code``."""
    if code & 4:
        x = x.transpose(-1, -2)
    if code & 2:
        x = x.flip(-2)
    if code & 1:
        x = x.flip(-1)
    return x


def flips_and_rot90(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip, vertical flip and transpose per NHWC image (global torch RNG): the 8 symmetries of the
    square."""
    return random_dihedral(x)


def keras_affine(x: torch.Tensor, rotation: float = 20.0, shift: float = 0.2, shear: float = 0.2, zoom: float = 0.2,
                 flips: bool = True, mode: str = "bilinear") -> torch.Tensor:
    """Keras ``ImageDataGenerator``-style augmentation on a uint8 NHWC batch (paper 003's settings by default).

    Per image: rotation uniform in ±``rotation`` degrees, horizontal/vertical shift uniform in ±``shift`` of
    the side, shear uniform in ±``shear`` *degrees* (Keras's ``shear_range`` is an angle in degrees, so 0.2
    is almost nothing), zoom drawn per axis uniform in [1 − zoom, 1 + zoom], random horizontal and vertical
    flips; points outside the image take the nearest edge pixel (Keras's ``fill_mode="nearest"``).
    ``mode`` is the resampling kernel (``grid_sample``'s): "bilinear" as Keras (``interpolation_order=1``), which
    blurs every image it moves by a fraction of a pixel; "bicubic" keeps most of the image's sharpness. Returns uint8
    NHWC.
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
    out = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=False)
    if flips:
        hflip = (torch.rand(n) < 0.5).view(n, 1, 1, 1).to(x.device)
        vflip = (torch.rand(n) < 0.5).view(n, 1, 1, 1).to(x.device)
        out = torch.where(hflip, out.flip(3), out)
        out = torch.where(vflip, out.flip(2), out)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
