"""ResNeXt-CC (paper 004): ResNeXt with ECA down-sampling, cross-layer feature fusion (CFFM) and HSV input.

The backbone is built from torchvision's ResNeXt ``Bottleneck`` blocks. Every block runs
at stride 1; the resolution is halved only by explicit down-sampling layers between the
stem and the four stages — a 3×3 stride-2 convolution followed by ECA channel attention
(the paper's "feature enhancement module based on down-sampling"), or, for the ablation,
a plain strided convolution or a 2×2 max-pool. The head fuses the outputs of two Conv5
blocks (CFFM: 1×1 conv → 1×1 conv on each, element-wise product, GAP, FC) and the model
returns ``(logits, features)`` so that the center loss can act on the pooled features. Grad-CAM of the Conv5 and
fused maps: ``wbcstudy.experiments.resnext_cc.grad_cam`` (through ``wbcstudy.explain.gradcam``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from wbcstudy.data.transforms import rgb_to_hsv

__all__ = [
    "RESNEXT50_LAYERS",
    "RESNEXT101_LAYERS",
    "FUSIONS",
    "DOWNSAMPLINGS",
    "eca_kernel_size",
    "ECA",
    "CFFM",
    "ColourInput",
    "colour_mean_std",
    "ResNeXtCC",
    "resnext_cc",
]

RESNEXT50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)  # blocks in Conv2_x … Conv5_x of ResNeXt-50
RESNEXT101_LAYERS: tuple[int, int, int, int] = (3, 4, 23, 3)  # … and of ResNeXt-101
FUSIONS: dict[str, tuple[int, int] | None] = {"conv5_1+conv5_3": (0, 2), "conv5_2+conv5_3": (1, 2), "none": None}
DOWNSAMPLINGS: tuple[str, ...] = ("eca", "conv", "pool")


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's 1-D kernel size: the odd number nearest to |log2(C)/γ + b/γ|, ties rounded up.

    As ECA-Net's code: t = int(|log2(C)/γ + b/γ|), or t + 1 when t is even.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention (Wang et al. 2020): GAP → 1-D conv across channels (kernel k) → sigmoid → rescale."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        """Attention over ``channels``; ``kernel_size`` defaults to ``eca_kernel_size(channels)``."""
        super().__init__()
        self.kernel_size = kernel_size or eca_kernel_size(channels)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be odd, got {self.kernel_size}")
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` scaled per channel by its attention weight in (0, 1)."""
        pooled = x.mean(dim=(2, 3))  # (N, C)
        weights = torch.sigmoid(self.conv(pooled.unsqueeze(1))).squeeze(1)  # (N, C)
        return x * weights[:, :, None, None]


class CFFM(nn.Module):
    """Cross-layer feature fusion: each of two maps through 1×1 conv → BN → ReLU → 1×1 conv, then multiplied
    element-wise."""

    def __init__(self, channels: int) -> None:
        """Both inputs and the fused output have ``channels`` channels (2048 in the paper)."""
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1))

        self.first = branch()
        self.second = branch()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The fused map Z3 = Z1 ⊙ Z2, the same shape as the inputs."""
        if a.shape != b.shape:
            raise ValueError(f"CFFM inputs must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        return self.first(a) * self.second(b)


class ColourInput(nn.Module):
    """uint8 NHWC (or float [0, 1]) RGB batch → float NCHW in RGB or HSV (each channel in [0, 1]) → normalised."""

    def __init__(self, colour: str, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        """``colour`` is "rgb" or "hsv"; ``mean``/``std`` are per channel of that colour space, in the [0, 1] scale."""
        super().__init__()
        if colour not in ("rgb", "hsv"):
            raise ValueError(f"colour must be 'rgb' or 'hsv', got {colour!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"need three means and three positive stds, got {list(mean)} and {list(std)}")
        self.colour = colour
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as float NCHW in the model's colour space, each channel in [0, 1]."""
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D image batch, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            if x.shape[-1] != 3:
                raise ValueError(f"uint8 input must be NHWC with 3 channels, got shape {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2).float().div(255.0)
        elif x.is_floating_point():
            if x.shape[1] != 3:
                raise ValueError(f"float input must be NCHW with 3 channels, got shape {tuple(x.shape)}")
            x = x.float()
        else:
            raise TypeError(f"expected uint8 or floating-point input, got {x.dtype}")
        return rgb_to_hsv(x.contiguous()) if self.colour == "hsv" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float32 NCHW batch in channels-last memory format."""
        x = (self.unnormalised(x) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        """Colour space, mean and std in the module's repr."""
        return f"colour={self.colour}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def colour_mean_std(images: np.ndarray | torch.Tensor, colour: str,
                    batch: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 NHWC RGB images after conversion to ``colour`` ("rgb"/"hsv")."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    convert = ColourInput(colour)
    total, total_sq, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for i in range(0, len(x), batch):
        v = convert.unnormalised(x[i:i + batch]).double()
        total += v.sum(dim=(0, 2, 3))
        total_sq += (v * v).sum(dim=(0, 2, 3))
        count += v.shape[0] * v.shape[2] * v.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def _downsample(channels: int, kind: str) -> nn.Module:
    """A layer that halves the resolution: strided 3×3 conv (+ ECA for "eca"), or a 2×2 max-pool."""
    if kind == "pool":
        return nn.MaxPool2d(2)
    layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                               nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    if kind == "eca":
        layers.append(ECA(channels))
    return nn.Sequential(*layers)


class ResNeXtCC(nn.Module):
    """ResNeXt-CC: stem, then (down-sampling, stage) × 4 of torchvision ResNeXt Bottlenecks, then CFFM → GAP → FC.

    ``forward`` returns ``(logits, features)``; features are the GAP of the fused map (or
    of the last Conv5 block when ``fusion="none"``), the vectors the center loss acts on.
    """

    def __init__(
        self,
        num_classes: int = 2,
        layers: Sequence[int] = RESNEXT50_LAYERS,
        groups: int = 32,
        width_per_group: int = 4,
        base_planes: int = 64,
        stem_width: int = 64,
        stem_stride: int = 2,
        downsampling: str = "eca",
        fusion: str = "conv5_1+conv5_3",
        colour: str = "hsv",
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        """The paper's network is the default (ResNeXt-50 32×4d, 224 px: 7×7/2 stem); smaller widths for CPU runs."""
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must give four positive block counts (Conv2_x … Conv5_x), got {layers}")
        if downsampling not in DOWNSAMPLINGS:
            raise ValueError(f"downsampling must be one of {DOWNSAMPLINGS}, got {downsampling!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {tuple(FUSIONS)}, got {fusion!r}")
        if FUSIONS[fusion] is not None and layers[3] != 3:
            raise ValueError(f"fusion {fusion!r} needs exactly three Conv5 blocks (Conv5_1, Conv5_2, Conv5_3), got "
                             f"{layers[3]}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 (small inputs, 3×3 conv) or 2 (7×7 conv), got {stem_stride}")
        self.fusion, self.downsampling, self.layers = fusion, downsampling, layers
        self.input = ColourInput(colour, mean, std)
        kernel = 7 if stem_stride == 2 else 3
        self.stem = nn.Sequential(nn.Conv2d(3, stem_width, kernel, stride=stem_stride, padding=kernel // 2, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        self.stages = nn.ModuleList()
        inplanes = stem_width
        for i, blocks in enumerate(layers):
            self.down.append(_downsample(inplanes, downsampling))
            planes = base_planes * 2**i
            stage = []
            for _ in range(blocks):
                projection = None
                if inplanes != planes * Bottleneck.expansion:
                    projection = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, bias=False),
                                               nn.BatchNorm2d(planes * Bottleneck.expansion))
                stage.append(Bottleneck(inplanes, planes, stride=1, downsample=projection, groups=groups,
                                        base_width=width_per_group))
                inplanes = planes * Bottleneck.expansion
            self.stages.append(nn.Sequential(*stage))
        self.channels = inplanes
        self.cffm = CFFM(inplanes) if FUSIONS[fusion] is not None else None
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init each block's last BN (residual branch starts as identity), as torchvision offers
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The Conv5 block outputs (``conv5_1`` … ``conv5_<n>``) and, with a fusion, the fused map ``fused``."""
        x = self.stem(self.input(x))
        for i in range(3):
            x = self.stages[i](self.down[i](x))
        x = self.down[3](x)
        maps: dict[str, torch.Tensor] = {}
        for j, block in enumerate(self.stages[3]):
            x = block(x)
            maps[f"conv5_{j + 1}"] = x
        pair = FUSIONS[self.fusion]
        if pair is not None:
            maps["fused"] = self.cffm(maps[f"conv5_{pair[0] + 1}"], maps[f"conv5_{pair[1] + 1}"])
        return maps

    def head(self, maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and GAP features from the feature maps."""
        final = maps["fused"] if self.cffm is not None else maps[f"conv5_{self.layers[3]}"]
        features = final.mean(dim=(2, 3))
        return self.fc(features), features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)`` for a uint8 NHWC (or float NCHW in [0, 1]) RGB batch."""
        return self.head(self.feature_maps(x))


def resnext_cc(num_classes: int = 2, size: str = "cpu", depth: int = 50, **options) -> ResNeXtCC:
    """ResNeXt-CC at a named scale: "paper" (32×4d, 64–2048 channels) or "cpu" (8×4d on 16 base planes: 64–512
    channels).

    Both scales keep the paper's 7×7/2 stem.

    ``depth`` 50 or 101 picks the block counts: the paper's (3, 4, 6, 3) / (3, 4, 23, 3), or at
    "cpu" scale (1, 1, 2, 3) / (1, 1, 8, 3) — the same ratio of Conv4 blocks, fewer early blocks.
    Other keyword options (downsampling, fusion, colour, mean, std, layers …) go to ``ResNeXtCC``.
    """
    if depth not in (50, 101):
        raise ValueError(f"depth must be 50 or 101, got {depth}")
    if size == "paper":
        config = dict(layers=RESNEXT50_LAYERS if depth == 50 else RESNEXT101_LAYERS, groups=32, width_per_group=4,
                      base_planes=64, stem_width=64, stem_stride=2)
    elif size == "cpu":
        config = dict(layers=(1, 1, 2, 3) if depth == 50 else (1, 1, 8, 3), groups=8, width_per_group=4,
                      base_planes=16, stem_width=32, stem_stride=2)
    else:
        raise ValueError(f"size must be 'paper' or 'cpu', got {size!r}")
    config.update(options)
    return ResNeXtCC(num_classes=num_classes, **config)

