"""The trustworthiness paper's (003) custom CNN, and the model registry its chapter and app share.

The authors' Keras network (128 px): four blocks of [conv 3×3 'same' + ReLU, conv 3×3
'same' + ReLU, BatchNorm, max-pool 2×2, dropout] with 64/128/256/512 filters and
dropout 0.25/0.25/0.30/0.40, then Flatten → Dense 1024 (ReLU) → BatchNorm → Dropout 0.5
→ Dense 512 (ReLU) → BatchNorm → Dropout 0.5 → Dense(classes) with softmax (the softmax
is left to the loss here: the model returns logits).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TrustCNN", "FrozenBase", "trust_cnn_parameter_count", "ARCHITECTURES", "build_trust_model", "gradcam_layer",
           "last_linear"]

BLOCK_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
BLOCK_DROPOUT: tuple[float, ...] = (0.25, 0.25, 0.30, 0.40)


def _block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.BatchNorm2d(c_out), nn.MaxPool2d(2), nn.Dropout(dropout),
    )


class TrustCNN(nn.Module):
    """The paper's custom CNN; ``image_size`` must be divisible by 16 (four 2×2 pools before the flatten)."""

    def __init__(self, num_classes: int = 5, image_size: int = 128, widths: Sequence[int] = BLOCK_WIDTHS,
                 dropout: Sequence[float] = BLOCK_DROPOUT, dense: Sequence[int] = (1024, 512),
                 head_dropout: float = 0.5) -> None:
        super().__init__()
        if image_size % 16 or image_size < 16:
            raise ValueError(f"image_size must be a positive multiple of 16 (four 2x2 max-pools), got {image_size}")
        if len(widths) != len(dropout):
            raise ValueError("widths and dropout must have one entry per block")
        blocks, c_in = [], 3
        for width, p in zip(widths, dropout):
            blocks.append(_block(c_in, width, p))
            c_in = width
        self.features = nn.Sequential(*blocks)
        side = image_size // 2 ** len(widths)
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = c_in * side * side
        for d in dense:
            layers += [nn.Linear(d_in, d), nn.ReLU(inplace=True), nn.BatchNorm1d(d), nn.Dropout(head_dropout)]
            d_in = d
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(d_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) of a normalised float NCHW batch."""
        return self.classifier(self.head(self.features(x)))


def trust_cnn_parameter_count(image_size: int = 128, num_classes: int = 5) -> int:
    """Trainable parameters of ``TrustCNN`` computed by hand (convs, BN scale/shift, dense layers)."""
    total, c_in = 0, 3
    for w in BLOCK_WIDTHS:
        total += (9 * c_in * w + w) + (9 * w * w + w) + 2 * w
        c_in = w
    flat = c_in * (image_size // 16) ** 2
    total += (flat * 1024 + 1024) + 2 * 1024 + (1024 * 512 + 512) + 2 * 512 + (512 * num_classes + num_classes)
    return total


#: Architectures the chapter trains and the app can rebuild from a checkpoint's metadata.
ARCHITECTURES: tuple[str, ...] = ("trust_cnn", "vgg16", "resnet50", "effnet_lite0_frozen", "effnet_lite0_finetuned")


class FrozenBase(nn.Module):
    """A pre-trained network whose base stays in inference mode: only its classifier trains, and its BatchNorm
    layers keep their ImageNet statistics in ``train()`` mode too (as a Keras base with ``trainable=False``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> "FrozenBase":
        super().train(mode)
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_trust_model(arch: str, num_classes: int, image_size: int, mean: Sequence[float], std: Sequence[float],
                pretrained: bool = False, vgg_width: int = 512) -> nn.Sequential:
    """``InputAdapter`` + network for one of ``ARCHITECTURES`` (uint8 NHWC or float [0,1] NCHW input → logits).

    The network comes from the study's registry (``wbcstudy.models.build``); this adds the chapter's composition:
    the input adapter, and for ``effnet_lite0_frozen`` an ImageNet base kept frozen (``FrozenBase``).

    ``pretrained`` loads EfficientNet-Lite0's ImageNet weights (training); a checkpoint
    being restored passes ``False`` and loads its own state dict.
    """
    from wbcstudy.models.baselines import with_input_adapter
    from wbcstudy.models.registry import build

    if arch == "trust_cnn":
        net: nn.Module = build("trust_cnn", num_classes, image_size=image_size)
    elif arch == "vgg16":
        net = build("vgg16", num_classes, image_size=image_size, batch_norm=True, classifier_width=vgg_width)
    elif arch == "resnet50":
        net = build("resnet50", num_classes)
    elif arch in ("effnet_lite0_frozen", "effnet_lite0_finetuned"):
        net = build("efficientnet_lite0", num_classes, pretrained=pretrained, freeze_base=arch.endswith("frozen"))
        if arch.endswith("frozen"):
            net = FrozenBase(net)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    return with_input_adapter(net, mean, std)


def gradcam_layer(model: nn.Module, arch: str | None = None) -> nn.Module:
    """The layer Grad-CAM reads: the last convolutional stage (last conv block / ResNet layer4 / EfficientNet head
    conv)."""
    net = model[1] if isinstance(model, nn.Sequential) and len(model) == 2 else model
    if isinstance(net, FrozenBase):
        net = net.net
    if isinstance(net, TrustCNN):
        return net.features[-1][3]  # ReLU after the last conv, before BN/pool, as the Keras code's last Conv2D output
    if hasattr(net, "layer4"):
        return net.layer4[-1]
    if hasattr(net, "_conv_head"):
        return net._bn1 if hasattr(net, "_bn1") else net._conv_head
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no convolutional layer for Grad-CAM")
    return convs[-1]


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (the classifier layer the influence and Fisher analyses differentiate)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layer")
    return linears[-1]
