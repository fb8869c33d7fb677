"""Tests for wbcstudy.models.resnext_cc (ECA, CFFM, HSV input, the network) and wbcstudy.models.zoo (Grad-CAM:
test_experiments)."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from wbcstudy.data.transforms import rgb_to_hsv
from wbcstudy.models import zoo
from wbcstudy.models.baselines import count_parameters
from wbcstudy.models.resnext_cc import CFFM, ECA, ColourInput, ResNeXtCC, colour_mean_std, eca_kernel_size, resnext_cc


@pytest.mark.parametrize("channels, expected", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size_for_resnext_channel_counts(channels: int, expected: int) -> None:
    # |log2(C)/2 + 1/2| = 3.5, 4, 4.5, 5, 5.5, 6 → nearest odd with ties up (ECA-Net's code): 3, 5, 5, 5, 5, 7
    assert eca_kernel_size(channels) == expected
    assert ECA(channels).conv.kernel_size == (expected,)


def test_eca_kernel_size_rejects_nonpositive_channels() -> None:
    with pytest.raises(ValueError, match="positive"):
        eca_kernel_size(0)


def test_eca_forward_matches_hand_computation() -> None:
    torch.manual_seed(0)
    eca = ECA(4, kernel_size=3)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[1.0, -2.0, 0.5]]]))
    x = torch.randn(2, 4, 3, 5)
    pooled = x.mean(dim=(2, 3))  # (2, 4)
    padded = torch.nn.functional.pad(pooled, (1, 1))
    conv = torch.stack([1.0 * padded[:, i] - 2.0 * padded[:, i + 1] + 0.5 * padded[:, i + 2] for i in range(4)], dim=1)
    expected = x * torch.sigmoid(conv)[:, :, None, None]
    assert torch.allclose(eca(x), expected, atol=1e-6)


def test_rgb_to_hsv_matches_colorsys_on_random_and_edge_colours() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 6, 7)).astype(np.float32)
    rgb[:, 0, 0] = (0.0, 0.0, 0.0)  # black: h = s = 0
    rgb[:, 0, 1] = (1.0, 1.0, 1.0)  # white
    rgb[:, 0, 2] = (0.5, 0.5, 0.5)  # grey
    rgb[:, 0, 3] = (1.0, 0.0, 0.0)  # pure red, hue 0
    rgb[:, 0, 4] = (1.0, 0.0, 1e-3)  # red leaning to magenta: hue just below 1 wraps correctly
    rgb[:, 0, 5] = (0.2, 0.8, 0.8)  # g = b tie for the maximum
    hsv = rgb_to_hsv(torch.from_numpy(rgb)).numpy()
    expected = np.array([[colorsys.rgb_to_hsv(*rgb[:, i, j]) for j in range(7)] for i in range(6)]).transpose(2, 0, 1)
    assert np.allclose(hsv, expected, atol=1e-5)
    assert hsv.min() >= 0.0 and hsv.max() <= 1.0


def test_colour_input_uint8_hsv_matches_matplotlib() -> None:
    from matplotlib.colors import rgb_to_hsv as mpl_rgb_to_hsv

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    out = ColourInput("hsv").unnormalised(torch.from_numpy(images)).permute(0, 2, 3, 1).numpy()
    assert np.allclose(out, mpl_rgb_to_hsv(images / 255.0), atol=1e-5)
    mean, std = colour_mean_std(images, "hsv")
    ref = mpl_rgb_to_hsv(images / 255.0).reshape(-1, 3)
    assert np.allclose(mean, ref.mean(0), atol=1e-6) and np.allclose(std, ref.std(0), atol=1e-5)


def test_colour_input_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="colour"):
        ColourInput("lab")
    with pytest.raises(ValueError, match="NHWC"):
        ColourInput("rgb")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_cffm_shapes_and_product() -> None:
    torch.manual_seed(0)
    cffm = CFFM(16).eval()
    a, b = torch.randn(2, 16, 3, 3), torch.randn(2, 16, 3, 3)
    fused = cffm(a, b)
    assert fused.shape == (2, 16, 3, 3)
    assert torch.allclose(fused, cffm.first(a) * cffm.second(b))
    with pytest.raises(ValueError, match="same shape"):
        cffm(a, torch.randn(2, 16, 2, 2))


def _tiny(**options) -> ResNeXtCC:
    config = dict(layers=(1, 1, 1, 3), groups=4, width_per_group=4, base_planes=16, stem_width=16, stem_stride=2)
    config.update(options)
    return ResNeXtCC(num_classes=2, **config)


def test_network_output_shapes_and_feature_maps(one_thread) -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    logits, features = model(x)
    assert logits.shape == (2, 2) and features.shape == (2, 512)
    maps = model.feature_maps(x)
    assert list(maps) == ["conv5_1", "conv5_2", "conv5_3", "fused"]
    assert all(m.shape == (2, 512, 2, 2) for m in maps.values())  # 64 px / 32 (7×7/2 stem and four down-samplings)
    assert torch.allclose(features, maps["fused"].mean(dim=(2, 3)))
    pool = _tiny(downsampling="pool", fusion="none").eval()
    assert not any(isinstance(m, ECA) for m in pool.modules())
    assert sum(isinstance(m, ECA) for m in model.modules()) == 4  # one after each down-sampling
    assert torch.allclose(pool(x)[1], pool.feature_maps(x)["conv5_3"].mean(dim=(2, 3)))


def test_fusion_pairs_use_the_named_blocks() -> None:
    torch.manual_seed(0)
    model = _tiny(fusion="conv5_2+conv5_3").eval()
    x = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    maps = model.feature_maps(x)
    assert torch.allclose(maps["fused"], model.cffm(maps["conv5_2"], maps["conv5_3"]))
    with pytest.raises(ValueError, match="three Conv5 blocks"):
        _tiny(layers=(1, 1, 1, 2))
    with pytest.raises(ValueError, match="downsampling"):
        _tiny(downsampling="avg")


def test_parameter_count_of_cpu_configuration_by_hand() -> None:
    model = resnext_cc(2, "cpu")
    # every conv / BN / linear counted by hand from the configuration (8 groups, 16 base planes, width 4 per group)
    def conv(cin, cout, k, groups=1, bias=False):
        return cin // groups * cout * k * k + (cout if bias else 0)
    bn = lambda c: 2 * c  # noqa: E731
    def block(cin, planes):
        width = int(planes * 4 / 64) * 8
        n = (conv(cin, width, 1) + bn(width) + conv(width, width, 3, groups=8) + bn(width) + conv(width, planes * 4, 1)
             + bn(planes * 4))
        return n + (conv(cin, planes * 4, 1) + bn(planes * 4) if cin != planes * 4 else 0)
    def down(c):
        return conv(c, c, 3) + bn(c) + eca_kernel_size(c)
    total = conv(3, 32, 7) + bn(32)
    cin = 32
    for i, blocks in enumerate((1, 1, 2, 3)):
        total += down(cin)
        for _ in range(blocks):
            total += block(cin, 16 * 2**i)
            cin = 16 * 2**i * 4
    total += 2 * (conv(512, 512, 1) + bn(512) + conv(512, 512, 1, bias=True))  # CFFM
    total += 512 * 2 + 2  # FC
    assert count_parameters(model) == total
    with torch.device("meta"):  # the paper-scale networks' structure only: no memory, no initialisation cost
        paper, paper101 = resnext_cc(2, "paper"), resnext_cc(2, "paper", depth=101)
    assert paper.channels == 2048 and paper.cffm.first[0].in_channels == 2048
    assert [len(s) for s in paper.stages] == [3, 4, 6, 3] and [len(s) for s in paper101.stages] == [3, 4, 23, 3]
    # 32 groups × 4 channels
    assert paper.stages[3][0].conv2.groups == 32 and paper.stages[0][0].conv2.out_channels == 128


@pytest.mark.parametrize("name", ["inception_v3", "densenet121", "vgg16", "small_vit"])
def test_zoo_baselines_take_64px_inputs(name: str, one_thread) -> None:
    torch.manual_seed(0)
    model = getattr(zoo, name)(3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
