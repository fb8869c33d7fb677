"""Values of the trustworthiness analyses: Fisher, influence, Grad-CAM checks, perturbations."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from wbcstudy.explain import (
    LastLayerProblem,
    brightness,
    deletion_insertion,
    empirical_fisher,
    fisher_information,
    gaussian_blur,
    gaussian_noise,
    gradcam_maps,
    overlay,
    per_sample_fisher_trace,
    per_sample_gradients,
    randomised_weights_similarity,
    readme_fisher_score,
    readme_influence,
    severity_sweep,
    tracin_last_layer,
)
from wbcstudy.explain.gradcam import reinitialise
from wbcstudy.explain.robustness import opencv_sigma


# ---------------------------------------------------------------- Fisher
def test_readme_fisher_score_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    # ‖(0.7,0.2,0.1) − (1,0,0)‖² = 0.09 + 0.04 + 0.01; ‖(0.1,0.1,0.8) − (1,0,0)‖² = 0.81 + 0.01 + 0.64
    assert readme_fisher_score(p, np.array([0, 0])) == pytest.approx([0.14, 1.46])
    assert readme_fisher_score(p, np.eye(3)[[0, 0]]) == pytest.approx([0.14, 1.46])


def _logistic_data(n=40, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen) < 0.5).long()
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64))
        model.bias.fill_(0.3)
    return model, x, y


def test_empirical_fisher_of_logistic_regression_matches_closed_form():
    model, x, y = _logistic_data()
    g = per_sample_gradients(model, x, y)
    xt = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # [weight, bias] order of the parameters
    p = torch.sigmoid(model(x)).squeeze(1)
    closed_g = (p - y)[:, None] * xt
    torch.testing.assert_close(g, closed_g)
    closed_f = (((p - y) ** 2)[:, None, None] * xt[:, :, None] * xt[:, None, :]).mean(0)
    torch.testing.assert_close(empirical_fisher(g), closed_f)


def test_true_fisher_of_logistic_regression_matches_closed_form():
    model, x, _ = _logistic_data()
    xt = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    p = torch.sigmoid(model(x)).detach().squeeze(1)
    closed = ((p * (1 - p))[:, None, None] * xt[:, :, None] * xt[:, None, :]).mean(0)
    torch.testing.assert_close(fisher_information(model, x), closed)


def test_softmax_last_layer_grads_and_fisher_trace():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    layer = nn.Linear(4, 3).double()
    g = per_sample_gradients(layer, z, y)
    problem = LastLayerProblem(z, y, 3)
    theta = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
    closed = problem.per_sample_grads(theta).reshape(30, 3, 5)
    torch.testing.assert_close(g[:, :12].reshape(30, 3, 4), closed[:, :, :4])
    torch.testing.assert_close(g[:, 12:], closed[:, :, 4])
    probs = torch.softmax(layer(z), 1).detach().numpy()
    # ‖(p − y) ⊗ [z, 1]‖² = ‖p − y‖² (‖z‖² + 1): the README score times the feature norm
    expected = readme_fisher_score(probs, y.numpy()) * ((z ** 2).sum(1).numpy() + 1)
    assert per_sample_fisher_trace(g) == pytest.approx(expected)


def test_per_sample_gradients_of_a_subset_of_parameters():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    g = per_sample_gradients(net, x, y, params=["2.weight", "2.bias"])
    assert g.shape == (5, 10)
    loss = nn.functional.cross_entropy(net(x[2:3]), y[2:3])
    gw, gb = torch.autograd.grad(loss, [net[2].weight, net[2].bias])
    torch.testing.assert_close(g[2], torch.cat([gw.flatten(), gb]))
    with pytest.raises(ValueError, match="no parameters"):
        per_sample_gradients(net, x, y, params=["nope"])


# ---------------------------------------------------------------- influence
def test_readme_influence_by_hand():
    p_tr = np.array([[0.6, 0.4], [0.2, 0.8]])
    p_te = np.array([[0.9, 0.1]])
    # labels 0, 1: g_tr = (−0.4, 0.4), (0.2, −0.2); g_te = (−0.1, 0.1): −g_te·g_tr = −0.08, +0.04
    assert readme_influence(p_tr, np.array([0, 1]), p_te, np.array([0])) == pytest.approx(np.array([[-0.08, 0.04]]))


def _blobs(n=60, d=4, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(k, d, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    z = centres[y] + torch.randn(n, d, generator=gen)
    yt = torch.arange(k)
    zt = centres[yt] + torch.randn(k, d, generator=gen)
    return z, y, zt, yt


def test_hessian_and_fit():
    z, y, _, _ = _blobs()
    problem = LastLayerProblem(z, y, 3, l2=1e-2)
    theta = problem.fit()
    assert float(problem.gradient(theta).abs().max()) < 1e-10
    auto = torch.func.hessian(lambda t: problem.loss(t.reshape(theta.shape)))(theta.reshape(-1))
    torch.testing.assert_close(problem.hessian(theta), auto)


def test_influence_matches_exact_leave_one_out(one_thread):
    z, y, zt, yt = _blobs()
    problem = LastLayerProblem(z, y, 3, l2=1e-2)
    theta = problem.fit()
    predicted = problem.predicted_loo_effect(theta, zt, yt)
    actual = problem.loo_effect(theta, np.arange(problem.n), zt, yt)
    for t in range(len(yt)):
        assert spearmanr(predicted[t], actual[t])[0] > 0.95
        assert np.corrcoef(predicted[t], actual[t])[0, 1] > 0.95
    # I_up,loss is −n times the predicted removal effect; damping shrinks it
    up = problem.influence_up_loss(theta, zt, yt)
    assert up == pytest.approx(-problem.n * predicted)
    damped = problem.predicted_loo_effect(theta, zt, yt, damping=10.0)
    assert np.abs(damped).sum() < np.abs(predicted).sum()


def test_captum_naive_influence_function_agrees_with_ours(one_thread):
    from wbcstudy.explain import captum_influence

    z, y, zt, yt = _blobs()
    problem = LastLayerProblem(z, y, 3, l2=1e-2)
    theta = problem.fit()
    for damping in (0.0, 0.05):
        ours = problem.predicted_loo_effect(theta, zt, yt, damping=damping)
        torch.manual_seed(123)
        expected_draw = torch.rand(3)
        torch.manual_seed(123)
        theirs = captum_influence(problem, theta, zt, yt, damping=damping)
        # captum's re-seeding does not leak into the caller's generator
        assert torch.equal(torch.rand(3), expected_draw)
        assert theirs.shape == (3, problem.n)
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6 * np.abs(ours).max())


def test_leave_one_out_falls_back_to_full_newton_steps(one_thread):
    z, y, zt, yt = _blobs()
    problem = LastLayerProblem(z, y, 3, l2=1e-2)
    theta = problem.fit()
    rows = np.arange(5)
    frozen = problem.loo_effect(theta, rows, zt, yt)  # the frozen-Hessian iteration converges here
    fallback = problem.loo_effect(theta, rows, zt, yt, max_iter=1)  # one frozen step, then full Newton steps
    np.testing.assert_allclose(fallback, frozen, rtol=1e-6, atol=1e-12)
    with pytest.raises(RuntimeError, match="row 0 did not converge"):
        problem._newton(theta + 5.0, torch.ones(problem.n, dtype=torch.bool), tol=1e-10, max_iter=1, row=0)


def test_tracin_ranks_same_class_images_as_proponents():
    z, y, zt, yt = _blobs()
    problem = LastLayerProblem(z, y, 3, l2=1e-2)
    scores, theta = tracin_last_layer(problem, zt, yt, epochs=5, lr=0.5, batch_size=16)
    assert scores.shape == (3, problem.n)
    for t in range(3):
        same = (y == yt[t]).numpy()
        assert scores[t, same].mean() > scores[t, ~same].mean()


# ---------------------------------------------------------------- Grad-CAM
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


class TopLeftRed(nn.Module):
    """Class 1 ⇔ the top-left quadrant is red: a model whose evidence is known."""

    def forward(self, x):
        s = 40 * (x[:, 0, :8, :8].mean(dim=(1, 2)) - 0.5)
        return torch.stack([torch.zeros_like(s), s], 1)


def _images(n=4, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=gen, dtype=torch.uint8)


def test_gradcam_maps_shape_and_range(one_thread):
    torch.manual_seed(0)
    net = TinyNet()
    maps = gradcam_maps(net, net.act, _images(), targets=[0, 1, 0, 1])
    assert maps.shape == (4, 16, 16)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_overlay():
    img = np.full((8, 8, 3), 100, np.uint8)
    assert (overlay(img, np.zeros((8, 8)), alpha=0.0) == img).all()
    out = overlay(img, np.ones((8, 8)))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    with pytest.raises(ValueError):
        overlay(img, np.zeros((4, 4)))


def test_deletion_curve_is_steeper_for_the_true_evidence():
    x = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    x[:, :8, :8, 0] = 255  # red top-left quadrant → class 1
    x[:, 8:, 8:, 1] = 255
    good = np.zeros((2, 16, 16), np.float32)
    good[:, :8, :8] = 1.0
    bad = np.zeros((2, 16, 16), np.float32)
    bad[:, 8:, 8:] = 1.0
    model = TopLeftRed()
    c_good = deletion_insertion(model, x, good, np.array([1, 1]), steps=8, baseline="mean")
    c_bad = deletion_insertion(model, x, bad, np.array([1, 1]), steps=8, baseline="mean")
    assert c_good["deletion"].shape == (2, 9)
    assert c_good["deletion"][:, 0] == pytest.approx(c_good["insertion"][:, -1])  # both are the intact image
    assert c_good["deletion"].mean() < c_bad["deletion"].mean()
    assert c_good["insertion"].mean() > c_bad["insertion"].mean()


def test_randomised_weights_change_parameters_and_give_correlations(one_thread):
    torch.manual_seed(0)
    net = TinyNet()
    fresh = reinitialise(net, seed=1)
    assert not torch.equal(fresh.conv.weight, net.conv.weight)
    targets = np.array([0, 1, 0, 1])
    rho = randomised_weights_similarity(net, lambda m: m.act, _images(), targets, seed=1)
    # the same Spearman correlations computed here from the two models' maps
    ours = gradcam_maps(net, net.act, _images(), targets)
    theirs = gradcam_maps(fresh, fresh.act, _images(), targets)
    expected = [spearmanr(a.ravel(), b.ravel())[0] if np.ptp(a) and np.ptp(b) else 0.0 for a, b in zip(ours, theirs)]
    np.testing.assert_allclose(rho, expected, atol=1e-12)
    assert len(set(np.round(rho, 6))) > 1  # the images differ, so do their correlations


# ---------------------------------------------------------------- perturbations
def test_noise():
    x = torch.full((2, 32, 32, 3), 128, dtype=torch.uint8)
    assert torch.equal(gaussian_noise(x, 0.0), x)
    noisy = gaussian_noise(x, 0.05, seed=3)
    assert (noisy.float() / 255 - 128 / 255).std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(noisy, gaussian_noise(x, 0.05, seed=3))
    assert gaussian_noise(torch.full_like(x, 255), 0.5).max() == 255


def test_blur():
    assert opencv_sigma(5) == pytest.approx(1.1)
    assert opencv_sigma(3) == pytest.approx(0.8)
    const = torch.full((1, 16, 16, 3), 77, dtype=torch.uint8)
    assert torch.equal(gaussian_blur(const, 5), const)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 255).to(torch.uint8)
    checker = checker[None, :, :, None].expand(1, 16, 16, 3).contiguous()
    assert torch.equal(gaussian_blur(checker, 1), checker)
    assert gaussian_blur(checker, 5).float().std() < 0.2 * checker.float().std()
    with pytest.raises(ValueError):
        gaussian_blur(checker, 4)


def test_brightness():
    x = torch.tensor([0, 100, 200, 250], dtype=torch.uint8).view(1, 2, 2, 1).expand(1, 2, 2, 3).contiguous()
    assert brightness(x, 1.3)[0, :, :, 0].flatten().tolist() == [0, 130, 255, 255]
    assert torch.equal(brightness(x, 1.0), x)


def test_severity_sweep():
    x = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    y = np.array([0, 0, 1, 1])
    predict = lambda xb: np.tile([0.9, 0.1], (len(xb), 1))  # noqa: E731  always class 0
    table = severity_sweep(predict, x, y, {"gaussian_noise": [0, 0.1], "brightness": [1.0]})
    assert list(table.columns) == ["perturbation", "level", "accuracy", "n", "ci_low", "ci_high"]
    assert table.accuracy.tolist() == [0.5, 0.5, 0.5] and table.n.tolist() == [4, 4, 4]
    # Wilson 95% for 2 of 4 by hand: centre (2 + z²/2)/(4 + z²) = 0.5, half-width z·sqrt(4·0.25 + z²/4)/(4 + z²)
    z = 1.959964
    half = z * np.sqrt(1 + z * z / 4) / (4 + z * z)
    assert (table.ci_low.iloc[0] == pytest.approx(0.5 - half, abs=1e-6)
            and table.ci_high.iloc[0] == pytest.approx(0.5 + half, abs=1e-6))
    with pytest.raises(ValueError):
        severity_sweep(predict, x, y, {"rain": [1]})


def test_perturbed_predictions_predict_the_clean_images_once():
    from wbcstudy.explain.robustness import perturbed_predictions

    x = torch.full((3, 8, 8, 3), 100, dtype=torch.uint8)
    seen = []

    def predict(xb):
        seen.append(int(xb[0, 0, 0, 0]))
        return np.tile([0.2, 0.8], (len(xb), 1))

    preds = perturbed_predictions(predict, x,
                                  {"gaussian_noise": [0.0], "gaussian_blur": [1, 3], "brightness": [1.0, 2.0]})
    assert sorted(preds) == [("brightness", 1.0), ("brightness", 2.0), ("gaussian_blur", 1.0), ("gaussian_blur", 3.0),
                             ("gaussian_noise", 0.0)]
    assert seen == [100, 100, 200]  # clean once (shared by the three identity levels), blur 3 (flat: unchanged), ×2
    assert (preds[("gaussian_noise", 0.0)] is preds[("brightness", 1.0)]
            and preds[("brightness", 2.0)].tolist() == [1, 1, 1])


def test_laplacian_energy_by_hand_and_blur_lowers_it():
    from wbcstudy.explain.robustness import laplacian_energy

    x = torch.zeros(1, 3, 3, 3, dtype=torch.uint8)
    x[0, 1, 1] = 10  # one bright centre pixel: the Laplacian at the centre is -40 (the only interior pixel)
    assert laplacian_energy(x) == pytest.approx(1600.0)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 200).to(torch.uint8)
    img = checker[None, :, :, None].expand(2, 16, 16, 3).contiguous()
    assert laplacian_energy(img) == pytest.approx(800.0 ** 2)  # |4·200 − 0| or |0 − 4·200| at every interior pixel
    assert laplacian_energy(gaussian_blur(img, 3)) < 0.2 * laplacian_energy(img)


def test_gradcam_works_on_a_frozen_network_and_leaves_it_frozen(one_thread):
    torch.manual_seed(0)
    net = TinyNet()
    for p in net.parameters():
        p.requires_grad_(False)
    maps = gradcam_maps(net, net.act, _images(2), targets=[0, 1])
    assert maps.shape == (2, 16, 16) and maps.max() > 0
    assert not any(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------- Grad-CAM: values against pytorch-grad-cam, bf16
class TwoStageNet(nn.Module):
    """Two conv stages (8 → 4 px): layers of two resolutions, as ResNeXt-CC's conv5_1/conv5_3/fused maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def _library_gradcam(model, layers, x, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in targets])


@pytest.mark.parametrize("which", ["act1", "act2", "both"])
def test_gradcam_equals_pytorch_grad_cam(which, one_thread):
    from wbcstudy.explain.gradcam import gradcam_layer_maps, to_float_nchw

    torch.manual_seed(0)
    net = TwoStageNet().eval()
    layers = {"act1": [net.act1], "act2": [net.act2], "both": [net.act1, net.act2]}[which]
    images = _images(5, size=8, seed=2)
    targets = np.array([0, 1, 2, 1, 0])
    ours = gradcam_maps(net, layers, images, targets=targets)
    theirs = _library_gradcam(net, layers, to_float_nchw(images), targets)
    assert ours.shape == theirs.shape == (5, 8, 8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    per_layer = gradcam_layer_maps(net, layers, images, targets=targets)
    assert per_layer.shape == (len(layers), 5, 8, 8)
    for layer, maps in zip(layers, per_layer):  # each layer's own map is the library's map for that layer alone
        np.testing.assert_allclose(_scale_like_library(maps),
                                   _library_gradcam(net, [layer], to_float_nchw(images), targets), atol=1e-5)


def _scale_like_library(maps):
    maps = maps - maps.reshape(len(maps), -1).min(1)[:, None, None]
    return maps / (1e-7 + maps.reshape(len(maps), -1).max(1)[:, None, None])


def test_gradcam_default_target_is_the_predicted_class(one_thread):
    torch.manual_seed(1)
    net = TwoStageNet().eval()
    images = _images(3, size=8, seed=4)
    from wbcstudy.explain.gradcam import to_float_nchw

    predicted = net(to_float_nchw(images)).argmax(1).numpy()
    np.testing.assert_array_equal(gradcam_maps(net, net.act2, images),
                                  gradcam_maps(net, net.act2, images, targets=predicted))


def test_gradcam_of_a_bf16_trained_model_does_not_crash_and_matches_fp32(one_thread):
    torch.manual_seed(0)
    net = TwoStageNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):  # a few steps of bf16 autocast training, as wbcstudy.train.fit runs on CPUs with native bf16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images = _images(4, size=8, seed=5)
    targets = np.array([0, 1, 2, 0])
    fp32 = gradcam_maps(net, [net.act1, net.act2], images, targets=targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # called inside autocast: still computed in float32
        inside = gradcam_maps(net, [net.act1, net.act2], images, targets=targets)
    np.testing.assert_allclose(inside, fp32, atol=1e-6)
    bf16 = copy.deepcopy(net).to(torch.bfloat16)  # bf16 weights: explained through a float32 copy, left in bf16
    maps = gradcam_maps(bf16, [bf16.act1, bf16.act2], images, targets=targets)
    assert maps.dtype == np.float32 and maps.shape == (4, 8, 8) and np.isfinite(maps).all()
    assert next(bf16.parameters()).dtype == torch.bfloat16
    np.testing.assert_allclose(maps, gradcam_maps(bf16.float(), [bf16.act1, bf16.act2], images, targets=targets),
                               atol=1e-6)
    curves = deletion_insertion(copy.deepcopy(net).to(torch.bfloat16), images, maps, targets, steps=2, baseline="mean")
    assert np.isfinite(curves["deletion"]).all()


def test_gradcam_takes_a_float_nchw_batch_and_tuple_outputs(one_thread):
    torch.manual_seed(0)
    net = TwoStageNet().eval()

    class WithFeatures(nn.Module):  # logits and features, as ResNeXt-CC returns
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x), x.mean(dim=(2, 3))

    from wbcstudy.explain.gradcam import to_float_nchw

    images = _images(2, size=8)
    wrapped = WithFeatures()
    np.testing.assert_allclose(gradcam_maps(wrapped, net.act2, to_float_nchw(images), targets=[1, 2]),
                               gradcam_maps(net, net.act2, images, targets=[1, 2]), atol=1e-7)
