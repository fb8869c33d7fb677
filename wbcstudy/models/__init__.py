"""Models: one registry (``build``) for every classifier, torchvision baselines, and one module per paper.

The package imports lazily (PEP 562): ``import wbcstudy.models`` loads only the
registry, and a name below imports its module (torchvision, diffusers, EfficientNet)
the first time it is used.
"""
from __future__ import annotations

import importlib
from typing import Any

from wbcstudy.models.registry import MODELS, build, constructor, names

#: public name → the submodule of ``wbcstudy.models`` that defines it
_LAZY: dict[str, str] = {
    "IMAGENET_MEAN": "baselines",
    "IMAGENET_STD": "baselines",
    "InputAdapter": "baselines",
    "count_parameters": "baselines",
    "efficientnet_lite0": "baselines",
    "resnet18": "baselines",
    "resnet50": "baselines",
    "with_input_adapter": "baselines",
    "Discriminator": "dcgan",
    "Generator": "dcgan",
    "generate": "dcgan",
    "train_dcgan": "dcgan",
    "RowLSTM": "wnet",
    "WNet": "wnet",
    "WNetSVM": "wnet",
    "alexnet": "wnet",
    "vgg16": "wnet",
}
_SUBMODULES = ("baselines", "dcgan", "diffusion", "registry", "resnext_cc", "trust_cnn", "wnet", "zoo")

__all__ = ["MODELS", "build", "constructor", "names", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name's module (or a submodule) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and submodules, loaded or not."""
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
