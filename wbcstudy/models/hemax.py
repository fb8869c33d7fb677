"""HemaX (paper 000): a DETR-style set predictor that classifies, localises, segments and explains WBCs.

One image → N object queries; each query gets a class (C WBC classes + no-object), a box
(cx, cy, w, h in [0, 1]), a 2-channel mask (cytoplasm, nucleus) and one classifier per
pathologist attribute. The N:C ratio is not a head: it is computed from the predicted
masks (:func:`nc_ratio`).

What differs from the authors' DETR-panoptic code (stated in the chapter):

- backbone: ``"efficientnet_lite0"`` (ImageNet weights loaded offline, BatchNorm frozen, the
  transformer reads its stride-16 features) or ``"resnet50"`` (torchvision, from scratch —
  no ImageNet ResNet-50 is available offline — stride-32 features as in DETR);
- the sine positional encoding is added once to the encoder input and the learned query
  embeddings are the decoder input (``nn.Transformer`` layers), rather than re-added inside
  every attention layer as DETR does;
- mask head: MaskFormer-style instead of DETR's attention-map FPN head — a small FPN pixel
  decoder (encoder memory + stride-8 and stride-4 backbone features, 3×3 conv + GroupNorm(8)
  + ReLU) gives per-pixel embeddings at stride 4, and each query's mask logits are the dot
  product of two query-embedding vectors (cytoplasm, nucleus) with them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wbcstudy.models.baselines import IMAGENET_MEAN, IMAGENET_STD, InputAdapter

__all__ = ["ATTRIBUTE_SIZES", "HemaX", "sine_position_encoding", "nc_ratio", "nucleus_fraction", "MLP"]

#: classes per attribute head, in order: granularity (no/yes), cytoplasm colour (pale/basophilic),
#: nucleus shape (horseshoe-kidney / bi-multilobed / round-oval), size (small/big) — see wbcstudy.data.hemax
ATTRIBUTE_SIZES: tuple[int, ...] = (2, 2, 3, 2)


def sine_position_encoding(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine encoding, (dim, height, width): dim/2 channels encode y, dim/2 encode x (normalised to 2π)."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width) / (width + eps) * scale
    i = torch.arange(half, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)
    pos_x, pos_y = x[..., None] / freq, y[..., None] / freq
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)


def nc_ratio(nucleus: torch.Tensor, cytoplasm: torch.Tensor) -> torch.Tensor:
    """The N:C ratio of binary masks (..., H, W): nucleus pixels / cytoplasm pixels, cytoplasm = the cell minus its
    nucleus.

    A pixel in both masks counts as nucleus. No cytoplasm pixels → ``inf`` (or ``nan`` with no nucleus either).
    """
    nuc = nucleus.bool()
    cyto = cytoplasm.bool() & ~nuc
    n = nuc.flatten(-2).sum(-1).float()
    c = cyto.flatten(-2).sum(-1).float()
    return n / c


def nucleus_fraction(nucleus: torch.Tensor, cytoplasm: torch.Tensor) -> torch.Tensor:
    """The bounded form of N:C used for its MSE: nucleus / (nucleus + cytoplasm) pixels = r / (1 + r), in [0, 1] (nan
    for an empty cell)."""
    nuc = nucleus.bool()
    cyto = cytoplasm.bool() & ~nuc
    n = nuc.flatten(-2).sum(-1).float()
    return n / (n + cyto.flatten(-2).sum(-1).float())


class MLP(nn.Sequential):
    """``layers`` Linear layers with ReLU between them (DETR's box MLP); ``layers=1`` is a single Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        """Build in_dim → hidden (× layers−1) → out_dim."""
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(nn.Linear(a, b))
            if k < layers - 1:
                mods.append(nn.ReLU(inplace=True))
        super().__init__(*mods)


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0's stem and MBConv blocks up to stride 16: features at strides 4, 8 and 16."""

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        from wbcstudy.models.baselines import efficientnet_lite0

        net = efficientnet_lite0(num_classes=1000, pretrained=pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        strides = [b._depthwise_conv.stride[0] if hasattr(b, "_depthwise_conv") else 1 for b in net._blocks]
        # keep blocks until the first one that would go to stride 32
        stride, keep, self.taps = 2, [], []
        for i, (block, s) in enumerate(zip(net._blocks, strides)):
            if stride * s > 16:
                break
            if s > 1 and keep:
                self.taps.append(len(keep) - 1)  # the last block before a down-sampling
            stride *= s
            keep.append(block)
        self.taps.append(len(keep) - 1)
        self.blocks = nn.ModuleList(keep)
        channels = [b._project_conv.out_channels for b in keep]
        # taps: strides 2, 4, 8, 16; keep the last three
        self.taps = self.taps[-3:]
        self.channels = [channels[t] for t in self.taps]
        self.memory_stride = 16
        self.drop_connect = net._global_params.drop_connect_rate or 0.0

    def freeze(self, stages: int) -> None:
        """Stop training the stem and the blocks up to stride 4 (stages ≥ 1), as DETR freezes ResNet's stem and
        layer1."""
        if stages >= 1:
            for p in list(self.stem.parameters()) + [p for b in self.blocks[: self.taps[0] + 1]
                                                     for p in b.parameters()]:
                p.requires_grad = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 4, 8 and 16."""
        x = self.stem(x)
        out = []
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect * i / n if self.drop_connect else None)
            if i in self.taps:
                out.append(x)
        return out


class _ResNet50Features(nn.Module):
    """torchvision ResNet-50 (from scratch): layer1, layer2 and layer4 outputs (strides 4, 8, 32), as DETR reads
    layer4."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = [256, 512, 2048]
        self.memory_stride = 32

    def freeze(self, stages: int) -> None:
        """Stop training the stem and layer1 (stages ≥ 1), as DETR does."""
        if stages >= 1:
            for p in list(self.stem.parameters()) + list(self.layer1.parameters()):
                p.requires_grad = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 4, 8 and 32."""
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        return [c1, c2, self.layer4(self.layer3(c2))]


def _conv_gn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class HemaX(nn.Module):
    """HemaX: backbone → transformer encoder/decoder → class, box, 2-channel mask and attribute heads per query.

    ``forward`` takes a uint8 NHWC batch (or float NCHW in [0, 1]) and returns a dict:
    ``pred_logits`` (B, N, C+1; the last is no-object), ``pred_boxes`` (B, N, 4; cx, cy, w, h in
    [0, 1]), ``pred_masks`` (B, N, 2, H/4, W/4; logits of cytoplasm and nucleus) and
    ``pred_attributes`` (a list with one (B, N, k) logit tensor per attribute).
    ``attribute_hidden_layers`` ∈ {0, 2, 4}: Linear(d, d)+ReLU layers before one Linear(d, Σk).
    ``fpn_dim`` is the pixel decoder's width; ``frozen_stages=1`` freezes the backbone up to stride 4
    (the default for a pretrained backbone; 0 for one trained from scratch).
    """

    def __init__(self, num_classes: int, attribute_sizes: Sequence[int] = ATTRIBUTE_SIZES,
                 attribute_hidden_layers: int = 0, backbone: str = "efficientnet_lite0", pretrained: bool = True,
                 d_model: int = 128, nheads: int = 8, encoder_layers: int = 2, decoder_layers: int = 2,
                 ffn_dim: int = 512, dropout: float = 0.1, num_queries: int = 10, mask_dim: int = 32,
                 fpn_dim: int = 32, frozen_stages: int | None = None) -> None:
        """Build the network; see the module docstring for the choices."""
        super().__init__()
        if attribute_hidden_layers < 0:
            raise ValueError(f"attribute_hidden_layers must be >= 0, got {attribute_hidden_layers}")
        self.num_classes, self.num_queries = num_classes, num_queries
        self.attribute_sizes = tuple(int(k) for k in attribute_sizes)
        self.attribute_hidden_layers = attribute_hidden_layers
        self.adapter = InputAdapter(IMAGENET_MEAN, IMAGENET_STD)
        if backbone == "efficientnet_lite0":
            self.backbone: nn.Module = _EfficientNetFeatures(pretrained)
            self.freeze_bn = pretrained  # DETR's frozen BatchNorm for a pretrained backbone
        elif backbone == "resnet50":
            self.backbone = _ResNet50Features()
            self.freeze_bn = False  # from scratch: its BatchNorm statistics must be learned
        else:
            raise ValueError(f"unknown backbone {backbone!r}: use 'efficientnet_lite0' or 'resnet50'")
        if frozen_stages is None:
            frozen_stages = 1 if self.freeze_bn else 0  # a from-scratch backbone must train all of itself
        if frozen_stages:
            self.backbone.freeze(frozen_stages)
        c4, c8, cm = self.backbone.channels
        self.input_proj = nn.Conv2d(cm, d_model, 1)
        self.transformer = nn.Transformer(d_model, nheads, encoder_layers, decoder_layers, ffn_dim, dropout,
                                          batch_first=True)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_head = nn.Linear(d_model, num_classes + 1)
        self.box_head = MLP(d_model, d_model, 4, 3)
        trunk: list[nn.Module] = []
        for _ in range(attribute_hidden_layers):
            trunk += [nn.Linear(d_model, d_model), nn.ReLU(inplace=True)]
        self.attribute_head = nn.Sequential(*trunk, nn.Linear(d_model, sum(self.attribute_sizes)))
        # MaskFormer-style mask head: FPN pixel decoder at stride 4 and a per-query (2 × mask_dim) embedding
        self.lateral8, self.lateral4 = nn.Conv2d(c8, fpn_dim, 1), nn.Conv2d(c4, fpn_dim, 1)
        self.fpn_m, self.fpn8, self.fpn4 = (_conv_gn(d_model, fpn_dim), _conv_gn(fpn_dim, fpn_dim),
                                            _conv_gn(fpn_dim, fpn_dim))
        self.pixel_embed = nn.Conv2d(fpn_dim, mask_dim, 1)
        self.mask_embed = MLP(d_model, d_model, 2 * mask_dim, 3)
        self.mask_dim = mask_dim

    def train(self, mode: bool = True) -> HemaX:
        """Train mode, keeping a pretrained backbone's BatchNorm frozen (eval) as DETR does.

        A backbone with no trainable parameter (:meth:`freeze_backbone`) is a fixed feature extractor and stays
        wholly in eval mode — no stochastic depth either — so its features are a function of the image alone
        and can be computed once (:meth:`backbone_features`) and reused in every epoch.
        """
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        elif mode and self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters (trained at the lower learning rate)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def freeze_backbone(self) -> None:
        """Use the backbone as a fixed feature extractor: no parameter of it trains (its forward then runs without
        autograd)."""
        for p in self.backbone.parameters():
            p.requires_grad = False

    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's features at strides 4, 8 and the memory stride (without autograd when it is frozen)."""
        x = self.adapter(images).contiguous()
        trains = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            return self.backbone(x)

    def forward(self, images: torch.Tensor | None = None, features: Sequence[torch.Tensor] | None = None) -> dict:
        """Set predictions for a batch (see the class docstring).

        ``features``: the batch's :meth:`backbone_features`, computed beforehand (a frozen backbone's are the same
        in every epoch); then ``images`` is not needed.
        """
        if features is None:
            if images is None:
                raise ValueError("HemaX.forward needs images or their backbone features")
            features = self.backbone_features(images)
        f4, f8, fm = features
        src = self.input_proj(fm)
        b, d, h, w = src.shape
        pos = sine_position_encoding(h, w, d).to(src)
        memory = self.transformer.encoder(src.flatten(2).transpose(1, 2) + pos.flatten(1).T[None])
        queries = self.query_embed.weight[None].expand(b, -1, -1)
        hs = self.transformer.decoder(queries, memory)
        logits = self.class_head(hs)
        boxes = self.box_head(hs).sigmoid()
        attr = self.attribute_head(hs).split(self.attribute_sizes, dim=-1)
        # pixel decoder
        m = self.fpn_m(memory.transpose(1, 2).reshape(b, d, h, w))
        p8 = self.fpn8(self.lateral8(f8) + F.interpolate(m, size=f8.shape[-2:], mode="nearest"))
        p4 = self.fpn4(self.lateral4(f4) + F.interpolate(p8, size=f4.shape[-2:], mode="nearest"))
        pixels = self.pixel_embed(p4)
        q = self.mask_embed(hs).view(b, self.num_queries, 2, self.mask_dim)
        masks = torch.einsum("bnkc,bchw->bnkhw", q, pixels)
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks, "pred_attributes": list(attr)}
