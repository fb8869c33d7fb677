"""Tests for wbcstudy.models.diffusion: class-vector conditioning, min-SNR weights, augmentation and mixup,
bitwise resume of training, learning on a toy problem, DDIM sampling, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wbcstudy.augment import dihedral_inverse, dihedral_transform, flips_and_rot90, random_dihedral
from wbcstudy.models import diffusion as dm

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(n_classes: int = 3, size: int = 8) -> dm.ClassConditionalUNet:
    torch.manual_seed(0)
    return dm.ClassConditionalUNet(dm.UNetConfig(image_size=size, n_classes=n_classes, block_out_channels=(8, 16),
                                                 attention_levels=(False, True), norm_num_groups=4))


def toy_data(n: int = 24, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of flat-coloured images (red, green, blue) with a little noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = np.full((n, size, size, 3), 40, dtype=np.int16)
    images[np.arange(n), :, :, labels] = 215
    images = images + rng.integers(-10, 11, images.shape)
    return images.clip(0, 255).astype(np.uint8), labels


def test_attention_defaults_to_the_lowest_resolution_only() -> None:
    assert dm.UNetConfig().attention_levels == (False, False, False, True)
    assert dm.UNetConfig(image_size=8, block_out_channels=(8, 16, 16)).attention_levels == (False, False, True)
    assert (dm.UNetConfig(image_size=8, block_out_channels=(8, 16), attention_levels=(1, 1)).attention_levels
            == (True, True))
    with pytest.raises(ValueError, match="attention_levels has 1 entries for 2 blocks"):
        dm.UNetConfig(image_size=8, block_out_channels=(8, 16), attention_levels=(True,))


def test_class_vector_projection_is_an_embedding_and_mixes_linearly() -> None:
    model = tiny().eval()
    w = model.class_projection.weight  # (time_embed_dim, n_classes)
    one_hot = torch.eye(3)
    assert torch.allclose(model.class_projection(one_hot), w.T)  # row c of the table for class c
    mixed = torch.tensor([[0.3, 0.7, 0.0]])
    assert torch.allclose(model.class_projection(mixed), 0.3 * w.T[0] + 0.7 * w.T[1], atol=1e-6)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        by_int = model(x, 500, torch.tensor([0, 1, 2]))
        by_vec = model(x, torch.tensor([500, 500, 500]), one_hot)
        other = model(x, 500, torch.tensor([1, 2, 0]))
    assert torch.equal(by_int, by_vec)
    assert not torch.allclose(by_int, other)  # the class changes the prediction
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(x, 500, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="class vectors must be"):
        model(x, 500, torch.ones(3, 4))


def test_min_snr_weights_hand_values() -> None:
    sched = dm.make_scheduler()
    t = torch.tensor([0, 10, 100, 400, 999])
    ab = sched.alphas_cumprod[t].double()
    snr = ab / (1 - ab)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    assert torch.allclose(dm.min_snr_weights(sched, t, 5.0).double(), expected, rtol=1e-5)
    assert dm.min_snr_weights(sched, torch.tensor([999]), 5.0).item() == pytest.approx(1.0)  # SNR < 5: weight 1
    # linear betas 1e-4..0.02: ᾱ_0 = 1 - 1e-4, so the weight at t=0 is 5 / 9999
    assert dm.min_snr_weights(sched, torch.tensor([0]), 5.0).item() == pytest.approx(5 / 9999, rel=1e-3)


def test_dihedral_gives_one_of_eight_symmetries_per_image() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).repeat(8, 1, 1, 1)
    out = random_dihedral(x, torch.Generator().manual_seed(0), channels_last=False)
    for i in range(len(x)):
        variants = []
        for code in range(8):
            v = x[i]
            v = v.flip(2) if code & 1 else v
            v = v.flip(1) if code & 2 else v
            v = v.transpose(1, 2) if code & 4 else v
            variants.append(v)
        assert any(torch.equal(out[i], v) for v in variants)
        assert any(torch.equal(out[i], dihedral_transform(x[i], code)) for code in range(8))
    assert len({out[i].flatten().tolist().__repr__() for i in range(0, 16, 2)}) > 1  # not all the same element
    assert torch.equal(out, random_dihedral(x, torch.Generator().manual_seed(0), channels_last=False))
    for code in range(8):
        assert torch.equal(dihedral_inverse(dihedral_transform(x[0], code), code), x[0])


def test_flips_and_rot90_output_is_pinned_for_a_seed() -> None:
    """The classifiers' augmentation gives the same images, and uses the same RNG draws, as before it shared code."""
    x = torch.arange(6 * 4 * 4 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).view(6, 4, 4, 3)
    torch.manual_seed(7)
    y = flips_and_rot90(x)
    assert y[:, 0, 0, 0].tolist() == [36, 57, 132, 144, 201, 249]
    assert y[:, 0, 1, 0].tolist() == [24, 69, 120, 156, 198, 10]
    assert y[:, 1, 0, 0].tolist() == [39, 54, 135, 147, 213, 246]
    assert int((y.long() * torch.arange(y.numel()).view_as(y)).sum()) == 5423258
    assert torch.rand(1).item() == pytest.approx(0.9699196219444275)  # exactly three rand(n) draws were used
    # the diffusion trainer's NCHW form with a generator seeded alike makes the same choices
    nchw = random_dihedral(x.permute(0, 3, 1, 2), torch.Generator().manual_seed(7), channels_last=False)
    assert torch.equal(nchw.permute(0, 2, 3, 1), y)
    rect = torch.zeros(2, 4, 6, 3, dtype=torch.uint8)
    assert flips_and_rot90(rect).shape == rect.shape  # non-square images are never transposed


def test_class_vector_mixup_blends_image_and_vector_with_the_same_lambda() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 4, 4)
    labels = torch.arange(64) % 8
    mixed_x, vectors = dm.class_vector_mixup(x, labels, 8, 0.3, g)
    assert torch.allclose(vectors.sum(1), torch.ones(64))
    assert vectors.min() >= 0
    lam = vectors[torch.arange(64), labels]  # weight of the image's own class (partner of another class or itself)
    same = vectors.max(1).values == 1
    # Beta(0.3, 0.3) puts most mass near 0 and 1: many nearly pure pairs, some well mixed
    assert ((lam > 0.9) | (lam < 0.1)).float().mean() > 0.4 and ((lam > 0.2) & (lam < 0.8)).any()
    for i in torch.nonzero(~same).flatten()[:10].tolist():
        j_class = (int(torch.topk(vectors[i], 2).indices[1]) if int(vectors[i].argmax()) == labels[i]
                   else int(vectors[i].argmax()))
        partners = [j for j in range(64) if labels[j] == j_class]
        assert any(torch.allclose(mixed_x[i], lam[i] * x[i] + (1 - lam[i]) * x[j], atol=1e-5) for j in partners)
    plain_x, plain_v = dm.class_vector_mixup(x, labels, 8, 0.0, g)
    assert torch.equal(plain_x, x) and torch.equal(plain_v, torch.nn.functional.one_hot(labels, 8).float())


def test_training_resumes_bitwise(tmp_path) -> None:
    images, labels = toy_data()
    cfg = dict(steps=6, batch_size=8, warmup_steps=3, log_every=2, checkpoint_every=100, seed=3)
    straight = dm.train_diffusion(tiny(), images, labels, dm.DiffusionTrainConfig(**cfg))
    ckpt = tmp_path / "diffusion.pt"
    part = dm.train_diffusion(tiny(), images, labels,
                              dm.DiffusionTrainConfig(**cfg, checkpoint=ckpt, stop_after_step=3))
    assert not part.completed and part.steps_done == 3 and ckpt.is_file()
    resumed = dm.train_diffusion(tiny(), images, labels, dm.DiffusionTrainConfig(**cfg, checkpoint=ckpt))
    assert resumed.completed and resumed.steps_done == 6
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.history.equals(resumed.history)
    # the EMA differs from the raw weights, and a checkpoint written with other settings is refused
    assert any(not torch.equal(a, b) for a, b in zip(straight.model.parameters(), straight.ema_model.parameters()))
    with pytest.raises(ValueError, match="different settings"):
        dm.train_diffusion(tiny(), images, labels, dm.DiffusionTrainConfig(**{**cfg, "lr": 1e-3}, checkpoint=ckpt))


def test_training_learns_the_toy_classes() -> None:
    """After a short run the loss falls, and the class-conditional ε-error ranks the true class first on average."""
    images, labels = toy_data(48)
    res = dm.train_diffusion(tiny(), images, labels, dm.DiffusionTrainConfig(
        steps=120, batch_size=16, lr=3e-3, warmup_steps=10, log_every=20, ema_decay=0.9, mixup_alpha=0.3))
    loss = res.history["loss"].to_numpy()
    assert loss[-1] < 0.7 * loss[0]
    from wbcstudy.diffusion_classifier import diffusion_classify
    out = diffusion_classify(res.ema_model, images[:12], res.scheduler, 3, max_trials=20, prune=False,
                             weighting="uniform", radius_fraction=1.0)
    assert (out.predictions == labels[:12]).mean() >= 0.75


def test_ddim_samples_are_seeded_images_that_depend_on_the_class() -> None:
    model = tiny().eval()
    a = dm.ddim_sample(model, [0, 1, 2], steps=5, seed=4)
    assert a.shape == (3, 8, 8, 3) and a.dtype == np.uint8
    assert np.array_equal(a, dm.ddim_sample(model, [0, 1, 2], steps=5, seed=4))
    b = dm.ddim_sample(model, [2, 2, 2], steps=5, seed=4)
    assert not np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])


def test_bad_input_raises() -> None:
    images, labels = toy_data()
    with pytest.raises(ValueError, match="UNet expects 16 px"):
        dm.train_diffusion(tiny(size=16), images, labels, dm.DiffusionTrainConfig(steps=1))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        dm.train_diffusion(tiny(), images, labels + 1, dm.DiffusionTrainConfig(steps=1))
    with pytest.raises(ValueError, match="uint8 images"):
        dm.train_diffusion(tiny(), images.astype(np.float32), labels, dm.DiffusionTrainConfig(steps=1))
    with pytest.raises(ValueError, match="divisible"):
        dm.UNetConfig(image_size=30, block_out_channels=(8, 16, 16), attention_levels=(False, False, True))


def test_bf16_autocasts_the_forward_pass_and_loss_but_not_the_update(monkeypatch) -> None:
    """bf16: the loss is close to fp32's on the same batch, weights, gradients and EMA stay fp32, training still
    learns."""
    from wbcstudy.train import force_precision, precision_forced

    force_precision(None)
    images, labels = toy_data()
    model = tiny()
    x = dm.to_model_range(images[:8])
    vectors = torch.nn.functional.one_hot(torch.as_tensor(labels[:8]), 3).float()
    sched = dm.make_scheduler()
    loss32 = dm.diffusion_loss(model, sched, x, vectors, torch.Generator().manual_seed(0), 5.0, "fp32")
    loss16 = dm.diffusion_loss(model, sched, x, vectors, torch.Generator().manual_seed(0), 5.0, "bf16")
    assert loss16.dtype == torch.float32 and loss16.item() == pytest.approx(loss32.item(), rel=0.05)
    assert loss16.item() != loss32.item()  # bf16 did run
    loss16.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        dm.autocast(torch.device("cpu"), "auto")
    res = dm.train_diffusion(tiny(), images, labels,
                             dm.DiffusionTrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5,
                                                     log_every=20, precision="bf16"))
    assert res.precision == "bf16" and all(p.dtype == torch.float32 for p in res.ema_model.parameters())
    assert res.history["loss"].iloc[-1] < res.history["loss"].iloc[0]
    with precision_forced("fp32"):  # a chapter's forced precision wins over the config
        config = dm.DiffusionTrainConfig(steps=1, precision="bf16")
        assert dm.train_diffusion(tiny(), images, labels, config).precision == "fp32"
