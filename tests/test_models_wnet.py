"""Tests for wbcstudy.models.wnet: the paper's parameter count, shapes, Xavier init, LSTM count by hand, dropout."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wbcstudy.losses import multiclass_hinge_loss
from wbcstudy.models import baselines as bl
from wbcstudy.models import wnet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def torchvision_nets() -> dict[str, nn.Module]:
    """AlexNet and VGG16 (with and without batch-norm) with narrow classifiers, built once (VGG's init is slow)."""
    return {"alexnet": wnet.alexnet(5, 64, classifier_width=32),
            "vgg16": wnet.vgg16(5, 64, classifier_width=64),
            "vgg16_plain": wnet.vgg16(5, 64, batch_norm=False, classifier_width=64)}


def _wnet_count_by_hand(image_size: int, classes: int = 5) -> int:
    convs = (3 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 9 * 64 + 64)
    flat = (image_size // 8) ** 2 * 64
    return convs + flat * 1024 + 1024 + 1024 * classes + classes


def test_wnet_parameter_count_matches_paper_at_128_px() -> None:
    assert _wnet_count_by_hand(128) == 16_806_949  # the paper's §2.3 figure
    assert bl.count_parameters(wnet.WNet(5, 128)) == 16_806_949
    assert bl.count_parameters(wnet.WNetSVM(5, 128)) == 16_806_949  # §3.2: same network
    assert wnet.wnet_parameter_count(128) == 16_806_949


def test_wnet_parameter_count_at_64_px() -> None:
    # flatten 8·8·64 = 4,096 → 1,024: 23,584 conv + 4,195,328 FC1 + 5,125 FC2
    assert _wnet_count_by_hand(64) == 4_224_037
    assert bl.count_parameters(wnet.WNet(5, 64)) == 4_224_037
    assert wnet.wnet_parameter_count(64) == 4_224_037


def _row_lstm_count_by_hand(hidden: int, image_size: int, classes: int = 5) -> int:
    n_in = 3 * image_size
    return 4 * (hidden * (n_in + hidden) + 2 * hidden) + hidden * classes + classes


def test_row_lstm_parameter_count_by_hand() -> None:
    assert _row_lstm_count_by_hand(32, 128) == 53_669  # 4·(32·(384+32) + 64) + 32·5 + 5
    assert bl.count_parameters(wnet.RowLSTM(5, 32, 128)) == 53_669
    assert bl.count_parameters(wnet.RowLSTM(5, 32, 64)) == _row_lstm_count_by_hand(32, 64)


@pytest.mark.parametrize("size", [64, 128])
def test_output_shapes(size: int, torchvision_nets: dict[str, nn.Module]) -> None:
    x = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    models = {
        "wnet": wnet.WNet(5, size),
        "wnet_svm": wnet.WNetSVM(5, size),
        "lstm": wnet.RowLSTM(5, 32, size),
        "alexnet": torchvision_nets["alexnet"],  # adaptive pooling: one model serves 64 and 128 px
        "vgg16": torchvision_nets["vgg16"],
    }
    for name, model in models.items():
        adapted = bl.with_input_adapter(model, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
        with torch.no_grad():
            out = adapted(x)
        assert out.shape == (2, 5), name
        assert torch.isfinite(out).all(), name


def test_xavier_uniform_init_and_zero_bias() -> None:
    model = wnet.WNet(5, 64)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 5
    for layer in layers:
        w = layer.weight
        receptive = w[0, 0].numel() if w.ndim == 4 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))  # the paper's sqrt(6 / (in + out))
        assert w.abs().max() <= bound
        expected_std = math.sqrt(2 / (fan_in + fan_out))  # std of U(−bound, bound)
        assert w.std().item() == pytest.approx(expected_std, rel=0.1 if w.numel() > 1000 else 0.3)
        assert torch.count_nonzero(layer.bias) == 0


def test_dropout_default_is_drop_probability_0_4() -> None:
    model = wnet.WNet()
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.4] * 4  # after each of the 3 pools and after FC1
    assert [m.p for m in wnet.WNet(dropout=0.6).modules() if isinstance(m, nn.Dropout)] == [0.6] * 4
    with pytest.raises(ValueError):
        wnet.WNet(dropout=1.0)


def test_wnet_svm_uses_hinge_loss() -> None:
    assert wnet.WNetSVM.loss_fn is multiclass_hinge_loss
    assert isinstance(wnet.WNetSVM(5, 64), wnet.WNet)


def test_row_lstm_reads_rows_as_time_steps() -> None:
    model = wnet.RowLSTM(5, 4, 8).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        full = model(x)
        # the prediction after the last row equals stepping the LSTM through the rows one by one
        rows = x.permute(0, 2, 3, 1).reshape(1, 8, 24)
        state = None
        for t in range(8):
            out, state = model.lstm(rows[:, t:t + 1], state)
        assert torch.allclose(full, model.fc(state[0][-1]), atol=1e-6)
        assert rows[0, 0, :3].tolist() == x[0, :, 0, 0].tolist()  # pixel (0, 0)'s R, G, B come first


def test_classifier_width_and_batch_norm_options(torchvision_nets: dict[str, nn.Module]) -> None:
    vgg = torchvision_nets["vgg16"]
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.features) == 13
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg.features) == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in torchvision_nets["vgg16_plain"].features)
    linears = [m for m in vgg.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25_088, 64), (64, 64), (64, 5)]
    alex = torchvision_nets["alexnet"]
    linears = [m for m in alex.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9_216, 32), (32, 32), (32, 5)]
    small = wnet.alexnet(5, 32, classifier_width=32)  # upsampled to 64 px first, no extra parameters
    assert isinstance(small[0], nn.Upsample) and sum(p.numel() for p in small.parameters()) == sum(
        p.numel() for p in alex.parameters())
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError):
        wnet.alexnet(5, 4)


def test_wnet_embed_is_the_first_fc_layer_output() -> None:
    torch.manual_seed(0)
    net = wnet.WNet(5, 32).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = net.embed(x)
    assert feats.shape == (3, 1024) and (feats >= 0).all()  # after ReLU
    fc1 = net.classifier[1]
    expected = torch.relu(fc1(net.features(x).flatten(1)))
    assert torch.allclose(feats, expected)
    assert torch.allclose(net.classifier[-1](feats), net(x), atol=1e-6)  # the logits are a linear map of it
