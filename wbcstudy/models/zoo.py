"""More torchvision baselines (from scratch) for small inputs: Inception-V3, DenseNet-121, VGG16-BN and a small ViT.

Each builder returns a plain ``nn.Module`` mapping a normalised float NCHW batch to logits;
wrap it with ``wbcstudy.models.baselines.with_input_adapter`` to feed uint8 images. The
adaptations to 64-px inputs are stated in each docstring. Chapters build them through the
registry: ``wbcstudy.models.build("inception_v3" | "densenet121" | "small_vit" | "vgg16_tv", ...)``;
``vgg16_tv`` (this module's ``vgg16``, global-pool head) is a different model from ``vgg16``
(``wnet.vgg16``, torchvision's 7×7-pool head).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tv_models

__all__ = ["ResizeInput", "inception_v3", "densenet121", "vgg16", "small_vit", "INCEPTION_MIN_SIZE"]

# the smallest input torchvision's Inception-V3 accepts (its stride-2 valid convolutions run out below)
INCEPTION_MIN_SIZE = 75


class ResizeInput(nn.Module):
    """Bilinearly resize an NCHW batch to ``size``×``size`` before ``model`` (a no-op when it already is that size)."""

    def __init__(self, model: nn.Module, size: int) -> None:
        """Wrap ``model``, which needs inputs of ``size`` px."""
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on the resized batch."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)


def inception_v3(num_classes: int, min_size: int = INCEPTION_MIN_SIZE) -> nn.Module:
    """torchvision Inception-V3 from scratch, no auxiliary head; inputs below ``min_size`` px are upsampled to it.

    At 75 px, the smallest size torchvision's network accepts, the map before the global pool is 1×1.
    """
    model = tv_models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=num_classes,
                                   transform_input=False)
    return ResizeInput(model, min_size)


def densenet121(num_classes: int) -> nn.Module:
    """torchvision DenseNet-121 from scratch, unchanged (a 64 px input leaves a 2×2 map before the global pool)."""
    return tv_models.densenet121(weights=None, num_classes=num_classes)


def vgg16(num_classes: int, batch_norm: bool = True) -> nn.Module:
    """torchvision VGG16 (with BatchNorm by default) from scratch, with a small-input head.

    The 13 convolutions are torchvision's; the 7×7 adaptive pool and the 25088→4096→4096
    classifier (120 M parameters sized for 224 px) become a global average pool and
    512→512→``num_classes`` with dropout 0.5 — the usual CIFAR-size VGG head. Without
    BatchNorm a from-scratch VGG16 trains poorly at this budget, hence ``batch_norm=True``.
    """
    model = (tv_models.vgg16_bn if batch_norm else tv_models.vgg16)(weights=None)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                     nn.Linear(512, num_classes))
    return model


def small_vit(num_classes: int, image_size: int = 64, patch_size: int = 8, depth: int = 6, heads: int = 4,
              dim: int = 192, mlp_dim: int = 384) -> nn.Module:
    """A small torchvision VisionTransformer from scratch (ViT-Tiny width, 6 layers; 8-px patches give 64 tokens at 64
    px)."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    return tv_models.VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=depth, num_heads=heads,
                                       hidden_dim=dim, mlp_dim=mlp_dim, num_classes=num_classes)
