"""W-Net (paper 002) and the baselines it was compared with: W-Net-SVM, a row-LSTM, AlexNet and VGG16.

Every model takes the output of ``InputAdapter`` — a normalised float batch of shape
(N, 3, H, W) — and returns (N, num_classes) scores; wrap it with
``with_input_adapter(model, mean, std)`` to feed uint8 NHWC images. ResNet50, the
remaining baseline, is ``wbcstudy.models.baselines.resnet50``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision import models as tv_models

from wbcstudy.hardware import needs_fp32
from wbcstudy.losses import multiclass_hinge_loss

__all__ = ["WNet", "WNetSVM", "RowLSTM", "alexnet", "vgg16", "wnet_parameter_count"]

WNET_FILTERS: tuple[int, int, int] = (16, 32, 64)
WNET_HIDDEN: int = 1024
WNET_DROPOUT: float = 0.4  # the paper's "p = 0.6" read as TensorFlow 1's keep_prob


def _pooled_size(image_size: int, n_pools: int = 3) -> int:
    """Side of the feature map after ``n_pools`` 2×2/2 max-pools with TensorFlow 'SAME' padding (ceil(s/2) each)."""
    for _ in range(n_pools):
        image_size = math.ceil(image_size / 2)
    return image_size


def wnet_parameter_count(image_size: int = 128, num_classes: int = 5) -> int:
    """Number of trainable W-Net parameters, by formula: 16,806,949 at 128 px and 4,224,037 at 64 px (5 classes)."""
    n, c_in = 0, 3
    for c_out in WNET_FILTERS:
        n += 9 * c_in * c_out + c_out
        c_in = c_out
    flat = _pooled_size(image_size) ** 2 * WNET_FILTERS[-1]
    return n + flat * WNET_HIDDEN + WNET_HIDDEN + WNET_HIDDEN * num_classes + num_classes


class WNet(nn.Module):
    """W-Net: three 3×3 conv–ReLU–max-pool–dropout blocks (16, 32, 64 filters), FC 1024–ReLU–dropout, FC num_classes.

    As in the paper (§2.3): stride-1 'same' convolutions, 2×2 stride-2 max-pooling
    (TensorFlow 'SAME' padding, i.e. ``ceil_mode=True``; identical to plain pooling when
    ``image_size`` is divisible by 8), dropout after every pooling layer and after the
    first fully connected layer, and Xavier (Glorot uniform) weights with zero biases,
    TensorFlow's defaults. At 128 px the network has exactly the paper's 16,806,949
    trainable parameters (flatten 16·16·64 = 16,384 → 1,024); at 64 px it has 4,224,037
    (flatten 8·8·64 = 4,096 → 1,024).

    Dropout: the paper writes "dropout with p = 0.6" for a TensorFlow model; TF 1's
    ``tf.nn.dropout(x, keep_prob)`` takes the probability of *keeping* a unit, so we read
    it as keep 0.6, i.e. drop probability 0.4 — the ``dropout`` default here. Pass
    ``dropout=0.6`` for the other reading. The model returns logits; softmax belongs to
    the cross-entropy loss.
    """

    def __init__(self, num_classes: int = 5, image_size: int = 128, dropout: float = WNET_DROPOUT) -> None:
        """Build the layers for ``image_size``-pixel square inputs and initialise them (Xavier uniform, zero bias)."""
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a drop probability in [0, 1), got {dropout}")
        self.num_classes, self.image_size, self.dropout = num_classes, image_size, dropout
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in WNET_FILTERS:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding="same"), nn.ReLU(inplace=True),
                       nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True), nn.Dropout(dropout)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = _pooled_size(image_size) ** 2 * WNET_FILTERS[-1]
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, WNET_HIDDEN), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(WNET_HIDDEN, num_classes))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) of a normalised (N, 3, H, W) batch."""
        return self.classifier(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 1,024 activations of the first fully connected layer (after ReLU; dropout inactive in eval mode)."""
        return self.classifier[:3](self.features(x))


class WNetSVM(WNet):
    """W-Net-SVM: the W-Net network with its scores trained by the one-vs-rest hinge loss instead of softmax
    cross-entropy.

    The architecture and parameter count (16,806,949 at 128 px) are W-Net's; only the
    loss differs (paper §3.2). Train it with
    ``fit(..., loss_fn=WNetSVM.loss_fn)`` (= ``wbcstudy.losses.multiclass_hinge_loss``);
    predictions are the argmax of the scores, as for W-Net.
    """

    loss_fn = staticmethod(multiclass_hinge_loss)


class RowLSTM(nn.Module):
    """The paper's RNN baseline: one LSTM layer reading the image's rows as time steps, last hidden state → linear.

    Each of the H time steps is one image row of W·3 values (for 128 px: 128 steps of
    384 values, paper §3.6), taken from the same normalised (N, 3, H, W) input as the CNNs
    and reordered to (N, H, W·3) with the colour channels interleaved per pixel, as a
    reshaped NHWC array would be. PyTorch's LSTM keeps two bias vectors (``b_ih`` and
    ``b_hh``), so it has ``4·(h·(in + h) + 2h)`` parameters — 4h more than a Keras/TF
    LSTM with one bias (53,504 vs 53,376 for h = 32 at 128 px); the classifier adds
    ``h·C + C``.
    """

    def __init__(self, num_classes: int = 5, hidden: int = 32, image_size: int = 128) -> None:
        """An LSTM over ``image_size`` rows of ``image_size``·3 values with ``hidden`` units, then a linear
        classifier."""
        super().__init__()
        self.image_size, self.hidden = image_size, hidden
        self.lstm = nn.LSTM(input_size=image_size * 3, hidden_size=hidden, num_layers=1, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a normalised (N, 3, H, W) batch, from the LSTM's hidden state after the last row."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[3] != self.image_size:
            raise ValueError(f"expected (N, 3, H, {self.image_size}) input, got {tuple(x.shape)}")
        rows = x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1)  # (N, H, W·3)
        if needs_fp32("lstm", rows):  # no bf16 LSTM kernel on this CPU (AVX2): the LSTM alone runs in fp32
            with torch.autocast("cpu", enabled=False):
                _, (h_last, _) = self.lstm(rows.float())
        else:
            _, (h_last, _) = self.lstm(rows)
        return self.fc(h_last[-1])


def _classifier_head(in_features: int, width: int, num_classes: int, dropout: float,
                     dropout_first: bool) -> nn.Sequential:
    """torchvision's three-layer FC head (Linear–ReLU–Dropout ×2, Linear) with hidden width ``width``."""
    if dropout_first:  # AlexNet: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, width), nn.ReLU(inplace=True),
                             nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(inplace=True),
                             nn.Linear(width, num_classes))
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(True), nn.Dropout(dropout),  # VGG
                         nn.Linear(width, width), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(width, num_classes))


def alexnet(num_classes: int = 5, image_size: int = 128, classifier_width: int = 4096,
            dropout: float = 0.5) -> nn.Module:
    """torchvision AlexNet from scratch; ``classifier_width`` (default 4096, as torchvision) shrinks the FC layers for
    CPU runs.

    No change is needed for 64–128 px inputs: the feature extractor ends at 1×1 (64 px)
    or 3×3 (128 px) and torchvision's ``AdaptiveAvgPool2d((6, 6))`` replicates it to
    6×6·256 = 9,216 features, so the FC layers see the shape they were built for.
    Inputs below 64 px would shrink to nothing before the last pooling (its 11×11 stride-4
    stem and three stride-2 pools need at least 63 px), so for ``image_size < 64`` the
    returned model first upsamples its input bilinearly to 64 px (an ``nn.Sequential`` of
    ``nn.Upsample`` and the AlexNet; no parameters are added). torchvision's AlexNet
    (64-192-384-256-256 filters) has 57,024,325 parameters for 5 classes; the paper's
    46,767,493 are those of the original AlexNet (96-256-384-384-256 filters, ungrouped)
    whose 224 px input leaves 5×5·256 features.
    """
    if image_size < 8:
        raise ValueError(f"AlexNet needs inputs of at least 8 px, got {image_size}")
    model = tv_models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    if classifier_width != 4096:
        model.classifier = _classifier_head(256 * 6 * 6, classifier_width, num_classes, dropout, dropout_first=True)
    if image_size < 64:
        return nn.Sequential(nn.Upsample(size=(64, 64), mode="bilinear", align_corners=False), model)
    return model


def vgg16(num_classes: int = 5, image_size: int = 128, batch_norm: bool = True, classifier_width: int = 4096,
          dropout: float = 0.5) -> tv_models.VGG:
    """torchvision VGG16 from scratch, with batch-norm by default (``vgg16_bn``); ``classifier_width`` shrinks the FC
    layers.

    ``batch_norm=True`` is the "sane training" option: plain VGG16 trained from scratch
    without batch-norm often does not train at all (13 stacked conv layers with default
    initialisation; Simonyan & Zisserman initialised the deep nets from shallower ones),
    which may be why the paper's VGG reached only 44% balanced accuracy.
    ``batch_norm=False`` gives the paper's plain VGG16. Any input from 32 px works: the five
    max-pools leave 1×1 to 4×4 maps that ``AdaptiveAvgPool2d((7, 7))`` replicates to
    7×7·512 = 25,088 features. With ``classifier_width=4096`` the two hidden FC layers hold
    119.6 M of the 134.3 M parameters (5 classes; the paper reports 121,796,165); a width
    of 512 keeps the convolutional part intact and makes CPU training feasible. The image
    size is only checked (≥ 32 px).
    """
    if image_size < 32:
        raise ValueError(f"VGG16 needs inputs of at least 32 px, got {image_size}")
    factory = tv_models.vgg16_bn if batch_norm else tv_models.vgg16
    model = factory(weights=None, num_classes=num_classes, dropout=dropout)
    if classifier_width != 4096:
        model.classifier = _classifier_head(512 * 7 * 7, classifier_width, num_classes, dropout, dropout_first=False)
        for module in model.classifier:
            if isinstance(module, nn.Linear):  # torchvision's VGG initialisation of linear layers
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)
    return model
