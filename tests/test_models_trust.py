"""The trustworthiness paper's custom CNN and the chapter's model registry."""
import pytest
import torch
from torch import nn

from wbcstudy.models import count_parameters
from wbcstudy.models.trust_cnn import (
    ARCHITECTURES,
    TrustCNN,
    build_trust_model,
    gradcam_layer,
    last_linear,
    trust_cnn_parameter_count,
)


def test_parameter_count_matches_hand_computation_at_128_px():
    # convs + BN scale/shift of the four blocks, then Flatten(8·8·512) → 1024 → 512 → 5 with BN
    blocks = (1792 + 36928 + 128) + (73856 + 147584 + 256) + (295168 + 590080 + 512) + (1180160 + 2359808 + 1024)
    head = (32768 * 1024 + 1024) + 2048 + (1024 * 512 + 512) + 1024 + (512 * 5 + 5)
    assert trust_cnn_parameter_count(128) == blocks + head == 38_773_189
    assert count_parameters(TrustCNN(5, 128)) == 38_773_189


@pytest.mark.parametrize("size", [16, 64])
def test_forward_shape_and_count(size, one_thread):
    model = TrustCNN(5, size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
    assert count_parameters(model) == trust_cnn_parameter_count(size)


def test_structure_follows_the_spec():
    model = TrustCNN(5, 64)
    assert [b[0].out_channels for b in model.features] == [64, 128, 256, 512]
    assert [b[6].p for b in model.features] == [0.25, 0.25, 0.30, 0.40]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [1024, 512, 5]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="multiple of 16"):
        TrustCNN(5, 60)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_registry_builds_every_architecture(arch, one_thread):
    model = build_trust_model(arch, 5, 32, [0.5] * 3, [0.25] * 3).eval()
    x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    assert isinstance(gradcam_layer(model, arch), nn.Module)
    assert last_linear(model).out_features == 5
    if arch == "effnet_lite0_frozen":
        assert count_parameters(model) == 1280 * 5 + 5


def test_frozen_base_keeps_batchnorm_statistics(one_thread):
    model = build_trust_model("effnet_lite0_frozen", 5, 32, [0.5] * 3, [0.25] * 3)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    assert not bn.training
    model(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
    assert torch.equal(bn.running_mean, before)


def test_keras_affine_augmentation():
    from wbcstudy.augment import keras_affine

    x = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(keras_affine(x, rotation=0, shift=0, shear=0, zoom=0, flips=False), x)
    torch.manual_seed(0)
    y = keras_affine(x)
    assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(x, y)
    const = torch.full((2, 16, 16, 3), 90, dtype=torch.uint8)
    assert torch.equal(keras_affine(const), const)  # nearest-edge fill: a flat image stays flat


def test_keras_affine_bicubic_keeps_more_sharpness_than_bilinear():
    from wbcstudy.augment import keras_affine
    from wbcstudy.explain.robustness import laplacian_energy

    x = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(keras_affine(x, rotation=0, shift=0, shear=0, zoom=0, flips=False, mode="bicubic"), x)
    torch.manual_seed(1)
    bilinear = keras_affine(x)
    torch.manual_seed(1)
    bicubic = keras_affine(x, mode="bicubic")  # the same draws, another kernel
    assert laplacian_energy(bilinear) < laplacian_energy(bicubic) < 1.05 * laplacian_energy(x)


def test_build_model_creates_the_network_through_the_study_registry(one_thread, monkeypatch):
    from wbcstudy.models import registry

    built = []
    real = registry.build

    def spy(name, num_classes, **options):
        built.append(name)
        return real(name, num_classes, **options)

    monkeypatch.setattr(registry, "build", spy)
    torch.manual_seed(0)
    model = build_trust_model("trust_cnn", 5, 32, [0.5] * 3, [0.25] * 3)
    assert built == ["trust_cnn"]
    torch.manual_seed(0)
    direct = registry.build("trust_cnn", 5, image_size=32)
    for a, b in zip(model[1].state_dict().values(), direct.state_dict().values()):
        assert torch.equal(a, b)  # the same network, parameters and all, behind the input adapter
