"""Models: torchvision baselines and one module per paper."""
from __future__ import annotations

from wbcstudy.models.baselines import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputAdapter,
    count_parameters,
    efficientnet_lite0,
    resnet18,
    resnet50,
    with_input_adapter,
)
from wbcstudy.models.dcgan import Discriminator, Generator, generate, train_dcgan
from wbcstudy.models.wnet import RowLSTM, WNet, WNetSVM, alexnet, vgg16

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputAdapter",
    "count_parameters",
    "efficientnet_lite0",
    "resnet18",
    "resnet50",
    "with_input_adapter",
    "Discriminator",
    "Generator",
    "generate",
    "train_dcgan",
    "RowLSTM",
    "WNet",
    "WNetSVM",
    "alexnet",
    "vgg16",
]
