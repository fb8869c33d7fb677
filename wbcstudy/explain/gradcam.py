"""Grad-CAM (pytorch-grad-cam) on uint8 image batches, overlays, and two checks that the maps mean something:
deletion/insertion curves (Petsiuk et al. 2018) and the model-randomisation sanity check (Adebayo et al. 2018)."""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

__all__ = ["to_float_nchw", "gradcam_maps", "overlay", "deletion_insertion", "randomised_weights_similarity",
           "reinitialise"]


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images → float32 NCHW in [0, 1] (what ``InputAdapter`` accepts and Grad-CAM can size maps from)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div(255.0).contiguous()


def gradcam_maps(model: nn.Module, layer: nn.Module, images: np.ndarray | torch.Tensor,
                 targets: np.ndarray | list[int] | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] (each map scaled to its maximum) for uint8 NHWC ``images``.

    ``targets`` are the classes explained (default: the predicted class). The model is put in eval mode.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    import cv2

    cv2.setNumThreads(0)  # pytorch-grad-cam resizes with OpenCV; its thread pool beside torch's OpenMP one can stall a kernel

    x = to_float_nchw(images)
    model = model.float().eval()
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # a frozen base has no gradients to the target layer unless its parameters require them
        p.requires_grad_(True)
    out = []
    try:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                t = None if targets is None else [ClassifierOutputTarget(int(c)) for c in np.asarray(targets)[i:i + batch_size]]
                out.append(cam(input_tensor=xb, targets=t))
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    return np.concatenate(out).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """The Grad-CAM map drawn over one uint8 RGB image (H, W, 3) → uint8 (H, W, 3)."""
    import matplotlib

    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size")
    heat = matplotlib.colormaps[cmap](np.clip(cam, 0, 1))[..., :3]
    mixed = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * heat
    return (np.clip(mixed, 0, 1) * 255).round().astype(np.uint8)


@torch.inference_mode()
def _target_probs(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(x).float(), dim=1).gather(1, targets[:, None]).squeeze(1)


def deletion_insertion(model: nn.Module, images: np.ndarray | torch.Tensor, maps: np.ndarray, targets: np.ndarray,
                       steps: int = 16, baseline: str = "blur") -> dict[str, np.ndarray]:
    """Deletion and insertion curves: the target-class probability as the most salient pixels (by ``maps``) are
    replaced by a baseline image (deletion) or revealed on the baseline (insertion), in ``steps`` equal steps.

    Returns ``{"fraction": (steps+1,), "deletion": (N, steps+1), "insertion": (N, steps+1)}``; a map that ranks
    the pixels the model uses gives a fast-falling deletion curve (low area) and a fast-rising insertion curve
    (high area). Compare with random ``maps`` of the same shape. ``baseline``: ``"blur"`` (a heavily blurred
    copy, which removes detail but not colour) or ``"mean"`` (each image's mean colour).
    """
    from torchvision.transforms.functional import gaussian_blur

    x = to_float_nchw(images)
    n, _, h, w = x.shape
    if maps.shape != (n, h, w):
        raise ValueError(f"maps must have shape {(n, h, w)}, got {maps.shape}")
    if baseline == "blur":
        base = gaussian_blur(x, kernel_size=[2 * (h // 4) + 1, 2 * (w // 4) + 1], sigma=[h / 8, w / 8])
    elif baseline == "mean":
        base = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    else:
        raise ValueError(f"unknown baseline {baseline!r}: use 'blur' or 'mean'")
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    order = torch.as_tensor(-maps.reshape(n, -1)).argsort(dim=1, stable=True)  # most salient first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1).contiguous())
    rank = rank.view(n, 1, h, w)
    fractions = np.linspace(0, 1, steps + 1)
    model = model.float().eval()
    deletion, insertion = [], []
    for f in fractions:
        chosen = rank < int(round(f * h * w))
        deletion.append(_target_probs(model, torch.where(chosen, base, x), t).numpy())
        insertion.append(_target_probs(model, torch.where(chosen, x, base), t).numpy())
    return {"fraction": fractions, "deletion": np.stack(deletion, 1), "insertion": np.stack(insertion, 1)}


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every layer's parameters re-drawn from its initialiser (``reset_parameters``)."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if module is not fresh and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh


def randomised_weights_similarity(model: nn.Module, layer_of: Callable[[nn.Module], nn.Module],
                                  images: np.ndarray | torch.Tensor, targets: np.ndarray, seed: int = 0) -> np.ndarray:
    """Adebayo et al.'s model-randomisation test: the Spearman rank correlation, per image, between the Grad-CAM map
    of the trained model and of the same architecture with re-initialised weights (same target class). Maps that
    explain the model should change (low correlation); an edge detector would not."""
    trained = gradcam_maps(model, layer_of(model), images, targets)
    fresh_model = reinitialise(model, seed)
    fresh = gradcam_maps(fresh_model, layer_of(fresh_model), images, targets)
    out = []
    for a, b in zip(trained, fresh):
        if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant map ranks nothing: no similarity (Spearman is undefined)
            out.append(0.0)
            continue
        rho = spearmanr(a.ravel(), b.ravel())[0]
        out.append(0.0 if np.isnan(rho) else rho)
    return np.asarray(out)
