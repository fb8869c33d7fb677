"""Tests for wbcstudy.models.dcgan: shapes and ranges, conditioning, parameter counts, one epoch, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wbcstudy.models import dcgan
from wbcstudy.models.baselines import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_ranges(size: int) -> None:
    torch.manual_seed(0)
    g = dcgan.Generator(nz=16, ngf=8, image_size=size)
    d = dcgan.Discriminator(ndf=8, image_size=size)
    images = g(torch.randn(3, 16))
    assert images.shape == (3, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    assert d(images).shape == (3,)
    out = dcgan.generate(g, 5, seed=1)
    assert out.shape == (5, size, size, 3) and out.dtype == np.uint8
    assert out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, dcgan.generate(g, 5, seed=1))  # seeded noise


def test_conditional_generator_depends_on_label() -> None:
    torch.manual_seed(0)
    g = dcgan.Generator(nz=16, num_classes=5, ngf=8, image_size=32).eval()
    d = dcgan.Discriminator(num_classes=5, ndf=8, image_size=32).eval()
    z = torch.randn(1, 16).repeat(2, 1)
    with torch.no_grad():
        images = g(z, torch.tensor([0, 3]))
        assert not torch.allclose(images[0], images[1])
        same = images[:1].repeat(2, 1, 1, 1)
        logits = d(same, torch.tensor([0, 3]))
        assert logits[0] != logits[1]  # the label map changes the discriminator's verdict
    assert dcgan.generate(g, 4, labels=2).shape == (4, 32, 32, 3)
    with pytest.raises(ValueError):
        g(z)


def _generator_count(nz: int, ngf: int, extra_in: int = 0) -> int:
    """64 px: ConvT 4×4 (no bias) nz→8g→4g→2g→g→3, BatchNorm (2 per channel) after all but the last."""
    chans = [nz + extra_in, 8 * ngf, 4 * ngf, 2 * ngf, ngf, 3]
    convs = sum(16 * a * b for a, b in zip(chans, chans[1:]))
    return convs + 2 * (8 + 4 + 2 + 1) * ngf


def _discriminator_count(ndf: int, in_channels: int = 3) -> int:
    """64 px: Conv 4×4 (no bias) 3→d→2d→4d→8d→1, BatchNorm on the middle three."""
    chans = [in_channels, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]
    convs = sum(16 * a * b for a, b in zip(chans, chans[1:]))
    return convs + 2 * (2 + 4 + 8) * ndf


def test_parameter_counts_64px_width_32() -> None:
    assert _generator_count(100, 32) == 1_100_224
    assert _discriminator_count(32) == 694_656
    assert count_parameters(dcgan.Generator(100, None, 32, 64)) == 1_100_224
    assert count_parameters(dcgan.Discriminator(None, 32, 64)) == 694_656
    # conditional: a 5×5 embedding widens the noise; a 5×(64·64) label map adds a fourth input channel
    assert count_parameters(dcgan.Generator(100, 5, 32, 64)) == _generator_count(100, 32, 5) + 25
    assert count_parameters(dcgan.Discriminator(5, 32, 64)) == _discriminator_count(32, 4) + 5 * 64 * 64


def test_dcgan_init_is_normal_0_02() -> None:
    torch.manual_seed(0)
    g = dcgan.Generator(100, None, 32, 64)
    w = g.net[0].weight
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = g.net[1].weight
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)


def _tiny_pair(conditional: bool) -> tuple[dcgan.Generator, dcgan.Discriminator]:
    torch.manual_seed(0)
    classes = 3 if conditional else None
    return dcgan.Generator(16, classes, 8, 32), dcgan.Discriminator(classes, 8, 32)


@pytest.mark.parametrize("conditional", [False, True])
def test_one_epoch_changes_weights_and_is_deterministic(conditional: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 64) if conditional else None
    runs = []
    for _ in range(2):
        g, d = _tiny_pair(conditional)
        g0 = [p.detach().clone() for p in g.parameters()]
        d0 = [p.detach().clone() for p in d.parameters()]
        history = dcgan.train_dcgan(g, d, images, labels, epochs=1, batch_size=16, seed=7, device="cpu")
        assert list(history.columns) == ["epoch", "step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"]
        assert len(history) == 1 and np.isfinite(history.drop(columns="seconds").to_numpy()).all()
        assert 0 < history.d_real[0] < 1 and 0 < history.d_fake[0] < 1
        assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
        runs.append((history.drop(columns="seconds"), [p.detach() for p in g.parameters()]))
    assert runs[0][0].equals(runs[1][0])  # same seed → identical history
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_train_dcgan_checks_inputs() -> None:
    g, d = _tiny_pair(conditional=True)
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        dcgan.train_dcgan(g, d, images, None, device="cpu")  # conditional needs labels
    with pytest.raises(ValueError):
        dcgan.train_dcgan(g, d, np.zeros((4, 64, 64, 3), dtype=np.uint8), [0, 1, 2, 0], device="cpu")
    with pytest.raises(ValueError):
        dcgan.Generator(image_size=128)


def test_tanh_range_round_trip() -> None:
    pixels = torch.tensor([[[[0, 127, 255]]]], dtype=torch.uint8)  # one 1×1 RGB image
    scaled = dcgan.to_tanh_range(pixels)
    assert torch.allclose(scaled.flatten(), torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))
    assert dcgan.from_tanh_range(scaled).tolist() == [[[[0, 127, 255]]]]


def test_callback_columns_stop_and_bf16_autocast() -> None:
    """The callback's numbers become columns, ``stop`` ends training early, and bf16 autocast still trains both
    models."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 32)
    g, d = _tiny_pair(conditional=True)
    g0 = [p.detach().clone() for p in g.parameters()]
    seen = []
    history = dcgan.train_dcgan(g, d, images, labels, epochs=5, batch_size=8, seed=1, device="cpu", precision="bf16",
                                channels_last=True,
                                callback=lambda epoch: seen.append(epoch) or {"score": 10.0 * epoch},
                                stop=lambda rows: rows[-1]["score"] >= 20)
    assert seen == [1, 2] and list(history["epoch"]) == [1, 2]
    assert list(history["step"]) == [4, 8] and list(history["score"]) == [10.0, 20.0]  # 32 cells / batch 8 = 4 steps
    assert np.isfinite(history[["d_loss", "g_loss"]].to_numpy()).all()
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert g.training and all(p.dtype == torch.float32 for p in g.parameters())
