"""Grad-CAM (Selvaraju et al. 2017) on image batches, computed in float32 whatever precision the model was trained in,
overlays, and two checks that the maps mean something: deletion/insertion curves (Petsiuk et al. 2018) and the
model-randomisation sanity check (Adebayo et al. 2018).

The maps are pytorch-grad-cam's ``GradCAM`` (its tests check equality to ~1e-5), reimplemented so that a model trained
under bf16 autocast, or holding bf16 weights, is explained in float32: the inputs, the model (a float32 copy when it
holds other dtypes), its outputs, the target layers' activations and their gradients are all float32, with autocast
switched off. For one layer ``L`` and class ``c``: weights ``a_k = mean_{ij} ∂y_c/∂A^k_{ij}``, map
``ReLU(Σ_k a_k A^k)``, scaled to [0, 1] (minus its minimum, over its maximum) and bilinearly resized to the input.
Several layers (e.g. ResNeXt-CC's conv5_1, conv5_3 and fused maps): ``gradcam_layer_maps`` returns one map per layer,
``gradcam_maps`` their mean rescaled to [0, 1] (pytorch-grad-cam's aggregation).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

__all__ = ["to_float_nchw", "gradcam_layer_maps", "gradcam_maps", "overlay", "deletion_insertion",
           "randomised_weights_similarity", "reinitialise", "float32_model"]

Layers = nn.Module | Sequence[nn.Module]


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images → float32 NCHW in [0, 1] (what ``InputAdapter`` accepts); a float NCHW batch is cast to
    float32."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.is_floating_point() and x.ndim == 4:
        return x.detach().float().contiguous()
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3) or a float batch (N, C, H, W), got {x.dtype} "
                         f"{tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div(255.0).contiguous()


def float32_model(model: nn.Module, layers: Sequence[nn.Module] = ()) -> tuple[nn.Module, list[nn.Module]]:
    """``model`` itself when every parameter and buffer is float32, else a float32 copy; with ``layers`` mapped into
    it."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model, list(layers)
    names = {id(m): name for name, m in model.named_modules()}
    missing = [layer for layer in layers if id(layer) not in names]
    if missing:
        raise ValueError("a target layer is not a sub-module of the model")
    fresh = copy.deepcopy(model).float()
    return fresh, [fresh.get_submodule(names[id(layer)]) if names[id(layer)] else fresh for layer in layers]


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    return first.device if first is not None else torch.device("cpu")


def _scale(cams: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Each map (N, h, w) minus its minimum over 1e-7 + its maximum, then bilinearly resized (pytorch-grad-cam's
    scaling)."""
    flat = cams.flatten(1)
    cams = cams - flat.amin(1).view(-1, 1, 1)
    cams = cams / (1e-7 + cams.flatten(1).amax(1).view(-1, 1, 1))
    if size is not None and tuple(cams.shape[1:]) != size:
        cams = nn.functional.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cams


def gradcam_layer_maps(model: nn.Module, layers: Layers, images: np.ndarray | torch.Tensor,
                       targets: Sequence[int] | np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps of each target layer, float32 (L, N, H, W), each map in [0, 1] at the input's size.

    ``images``: uint8 NHWC (scaled to float [0, 1] NCHW) or a float NCHW batch passed as it is. ``targets``: the class
    explained per image (default: the predicted class). A model returning a tuple is explained on its first output
    (the logits). The caller's model keeps its dtype, mode and ``requires_grad`` flags.
    """
    from wbcstudy.train import logits_of

    layer_list = [layers] if isinstance(layers, nn.Module) else list(layers)
    if not layer_list:
        raise ValueError("give at least one target layer")
    x = to_float_nchw(images)
    net, hooked = float32_model(model, layer_list)
    device = _device(net)
    was_training = net.training
    net.eval()
    captured: list[torch.Tensor | None] = [None] * len(hooked)

    def hook(i: int) -> Callable:
        def save(module: nn.Module, inputs: tuple, output: object) -> None:
            captured[i] = output[0] if isinstance(output, (tuple, list)) else output
        return save

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(hooked)]
    out = []
    try:
        for start in range(0, len(x), batch_size):
            # activations carry gradients even in a frozen net
            xb = x[start:start + batch_size].to(device).requires_grad_(True)
            with torch.enable_grad(), torch.autocast(device.type, enabled=False):
                logits = logits_of(net(xb)).float()
                t = logits.argmax(1) if targets is None else torch.as_tensor(
                    np.asarray(targets)[start:start + batch_size], dtype=torch.long, device=device)
                score = logits.gather(1, t.view(-1, 1)).sum()
                acts = list(captured)
                if any(a is None for a in acts):
                    raise ValueError("a target layer was not reached by the forward pass")
                grads = torch.autograd.grad(score, acts, allow_unused=True)
            per_layer = []
            for act, grad in zip(acts, grads):
                act = act.detach().float()
                grad = torch.zeros_like(act) if grad is None else grad.detach().float()
                if act.ndim != 4:
                    raise ValueError(f"Grad-CAM needs (N, C, h, w) activations, got {tuple(act.shape)}")
                cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
                per_layer.append(_scale(cam, tuple(xb.shape[2:])).cpu())
            out.append(torch.stack(per_layer))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return torch.cat(out, dim=1).numpy().astype(np.float32)


def gradcam_maps(model: nn.Module, layers: Layers, images: np.ndarray | torch.Tensor,
                 targets: Sequence[int] | np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``images``: one layer's map, or several layers' maps averaged and rescaled.

    Equal to ``pytorch_grad_cam.GradCAM(model, target_layers=layers)(x, targets)`` (see ``gradcam_layer_maps`` for
    the arguments); computed in float32, so bf16-trained models are explained too.
    """
    per_layer = torch.from_numpy(gradcam_layer_maps(model, layers, images, targets, batch_size))
    return _scale(per_layer.clamp_min(0).mean(0)).numpy().astype(np.float32)


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
    """Float32 softmax probability of each image's target class (autocast off)."""
    from wbcstudy.train import logits_of

    device = _device(model)
    with torch.autocast(device.type, enabled=False):
        logits = logits_of(model(x.to(device))).float()
    return torch.softmax(logits, dim=1).gather(1, targets.to(device)[:, None]).squeeze(1).cpu()


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
    net, _ = float32_model(model)
    was_training = net.training
    net.eval()
    deletion, insertion = [], []
    for f in fractions:
        chosen = rank < int(round(f * h * w))
        deletion.append(_target_probs(net, torch.where(chosen, base, x), t).numpy())
        insertion.append(_target_probs(net, torch.where(chosen, x, base), t).numpy())
    net.train(was_training)
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
