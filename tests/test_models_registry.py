"""Tests for wbcstudy.models.build (the one model registry) and the package's lazy imports."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import wbcstudy.models as models
from wbcstudy.models import build, names

pytestmark = pytest.mark.usefixtures("one_thread")

#: each registry name with options that keep it small and the input size it is checked on
SMALL: dict[str, tuple[dict, int]] = {
    "resnet18": ({"small_input": True}, 32),
    "resnet50": ({}, 32),
    "efficientnet_lite0": ({"pretrained": False}, 32),
    "wnet": ({"image_size": 32}, 32),
    "wnet_svm": ({"image_size": 32}, 32),
    "alexnet": ({"image_size": 32, "classifier_width": 64}, 32),
    "vgg16": ({"image_size": 32, "classifier_width": 64}, 32),
    "row_lstm": ({"image_size": 32, "hidden": 8}, 32),
    "trust_cnn": ({"image_size": 32}, 32),
    "resnext_cc": ({"size": "cpu"}, 32),
    "inception_v3": ({}, 32),
    "densenet121": ({}, 32),
    "small_vit": ({"image_size": 32, "depth": 1, "dim": 32, "mlp_dim": 64}, 32),
    "vgg16_tv": ({}, 32),
}


def test_the_registry_names_every_architecture() -> None:
    assert set(names()) == set(SMALL)
    assert len(names()) == 14


@pytest.mark.parametrize("name", list(SMALL))
def test_every_name_builds_and_gives_logits(name: str) -> None:
    options, size = SMALL[name]
    torch.manual_seed(0)
    model = build(name, 3, **options).eval()
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    logits = out[0] if isinstance(out, tuple) else out  # ResNeXt-CC returns (logits, features)
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_options_reach_the_constructor() -> None:
    small, big = build("resnet18", 4, small_input=True), build("resnet18", 4)
    assert small.conv1.kernel_size == (3, 3) and big.conv1.kernel_size == (7, 7)
    assert build("wnet", 5, image_size=64, dropout=0.6).dropout == 0.6
    with pytest.raises(TypeError):
        build("densenet121", 3, no_such_option=1)


def test_resnet18_has_torchvision_parameter_count() -> None:
    from torchvision import models as tv_models

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build("resnet18", 8)) == count(tv_models.resnet18(weights=None, num_classes=8)) == 11_180_616
    assert count(build("resnet18", 1000)) == 11_689_512  # torchvision's published ResNet-18 size


def test_the_two_vgg16s_are_different_models() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    convs = 14_723_136  # VGG16-BN's 13 convolutions and BatchNorms, shared by both
    assert count(build("vgg16_tv", 5)) == convs + (512 * 512 + 512) + (512 * 5 + 5)
    assert (count(build("vgg16", 5, classifier_width=512))
            == convs + (25_088 * 512 + 512) + (512 * 512 + 512) + (512 * 5 + 5))


def test_unknown_name_lists_the_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet34'.*resnet18.*vgg16_tv"):
        build("resnet34", 3)


def test_public_names_still_import_from_the_package() -> None:
    from wbcstudy.models import IMAGENET_MEAN, WNet, count_parameters, vgg16, with_input_adapter  # noqa: F401

    assert vgg16.__module__ == "wbcstudy.models.wnet"
    assert models.zoo.vgg16 is models.registry.constructor("vgg16_tv")
    assert "resnet18" in dir(models)
    with pytest.raises(AttributeError):
        models.no_such_name  # noqa: B018


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = ("import sys, wbcstudy.models as m; "
            "heavy = [k for k in ('torchvision', 'diffusers', 'efficientnet_lite_pytorch') if k in sys.modules]; "
            "assert not heavy, heavy; m.build('wnet', 3, image_size=32); "
            "assert 'torchvision' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
