"""One registry for every classifier architecture in the study: ``build(name, num_classes, **options)``.

Each name maps to the constructor in the module that defines the model; the module is
imported only when its name is built, so importing the registry pulls in neither
torchvision nor EfficientNet. Options go unchanged to that constructor (see its
docstring for what it accepts, e.g. ``small_input`` for the ResNets, ``image_size`` for
W-Net, ``pretrained`` for EfficientNet-Lite0, ``size`` for ResNeXt-CC).

``vgg16`` and ``vgg16_tv`` are two different models that share torchvision's 13
VGG16(-BN) convolutions: ``vgg16`` (``wnet.vgg16``, the W-Net and trust chapters')
keeps torchvision's 7×7 adaptive pool and three-layer 25,088→w→w→C head (w = 4096 by
default, as in the papers), whereas ``vgg16_tv`` (``zoo.vgg16``) replaces it with a
global average pool and a 512→512→C head, a CIFAR-size network with 190 times fewer
head parameters. Neither can stand in for the other, so both stay.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the registry itself imports nothing heavy, not even torch
    from torch import nn

__all__ = ["MODELS", "names", "build", "constructor"]

#: name → (module under ``wbcstudy.models``, constructor in it). Every constructor takes ``num_classes``.
MODELS: dict[str, tuple[str, str]] = {
    "resnet18": ("baselines", "resnet18"),  # torchvision ResNet-18 from scratch; small_input=True: CIFAR stem
    "resnet50": ("baselines", "resnet50"),  # torchvision ResNet-50 from scratch; small_input=True: CIFAR stem
    # ImageNet weights offline; pretrained, freeze_base, image_size
    "efficientnet_lite0": ("baselines", "efficientnet_lite0"),
    "wnet": ("wnet", "WNet"),  # W-Net (paper 002); image_size, dropout
    "wnet_svm": ("wnet", "WNetSVM"),  # W-Net trained with the hinge loss (WNetSVM.loss_fn)
    "alexnet": ("wnet", "alexnet"),  # torchvision AlexNet from scratch; image_size, classifier_width
    "vgg16": ("wnet", "vgg16"),  # torchvision VGG16(-BN) with its 7×7 pool and 3-layer head; classifier_width
    "row_lstm": ("wnet", "RowLSTM"),  # W-Net's RNN baseline: an LSTM over image rows; image_size, hidden
    "trust_cnn": ("trust_cnn", "TrustCNN"),  # the trustworthiness paper's (003) CNN; image_size
    "resnext_cc": ("resnext_cc", "resnext_cc"),  # ResNeXt-CC (paper 004), returns (logits, features); size, depth
    "inception_v3": ("zoo", "inception_v3"),  # torchvision Inception-V3, inputs below 75 px upsampled
    "densenet121": ("zoo", "densenet121"),  # torchvision DenseNet-121 from scratch
    "small_vit": ("zoo", "small_vit"),  # a 6-layer ViT-Tiny-width VisionTransformer; image_size, patch_size
    "vgg16_tv": ("zoo", "vgg16"),  # torchvision VGG16-BN with a global-pool 512→512→C head
}


def names() -> tuple[str, ...]:
    """Every architecture name ``build`` accepts, in the registry's order."""
    return tuple(MODELS)


def constructor(name: str) -> Callable[..., nn.Module]:
    """The function or class that builds ``name`` (its module is imported now); ValueError for an unknown name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    module, attr = MODELS[name]
    return getattr(importlib.import_module(f"wbcstudy.models.{module}"), attr)


def build(name: str, num_classes: int, **options) -> nn.Module:
    """A fresh ``name`` classifier with ``num_classes`` outputs; ``options`` go to its constructor."""
    return constructor(name)(num_classes=num_classes, **options)
