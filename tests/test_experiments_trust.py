"""The trustworthiness chapter's procedures, on tiny synthetic data with values computed by hand."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wbcstudy.experiments.trust import (
    LeaveOneOutCheck,
    TrainedModel,
    TrustModelConfig,
    accuracy_table,
    augmentation_sharpness,
    captum_cross_check,
    fisher_comparison,
    gradcam_checks,
    harmful_images_summary,
    harmful_neighbours,
    influence_vs_leave_one_out,
    models_accuracy_difference,
    readme_robustness,
    resize_images,
    robustness_sweeps,
    stratified_tensors,
    train_trust_model,
)
from wbcstudy.train import TrainResult


def _colour_images(n_per_class=10, size=16, seed=0):
    """Class 0: reddish, class 1: bluish cells with noise — separable by colour alone."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (2 * n_per_class, size, size, 3), generator=gen, dtype=torch.uint8)
    y = torch.tensor([0] * n_per_class + [1] * n_per_class)
    x[:n_per_class, :, :, 0] += 180
    x[n_per_class:, :, :, 2] += 180
    return x, y


class _Fixed(nn.Module):
    """A 'model' whose logits are a fixed function of the mean red and blue: red → class 0, blue → class 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        x = x.permute(0, 3, 1, 2).float() / 255 if x.dtype == torch.uint8 else x
        r, b = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
        return self.w * 20 * torch.stack([r - b, b - r], 1)


def _fake_run(key, probs, size=16, model=None, plateau=True, seed=0):
    history = pd.DataFrame({"epoch": [1], "val_accuracy": [1.0]})
    result = TrainResult(model or _Fixed(), history, 1, 1.0, 0.5, "cpu", "fp32", True)
    return TrainedModel(TrustModelConfig(key, size, 1, 1e-3, seed=seed), result, np.asarray(probs, float), [0.5] * 3,
                        [0.25] * 3, 4, plateau)


def _seeded(key, probs_per_seed, plateaus=None, **options):
    """Runs of model ``key``, one per seed, keyed ``<key>_seed<k>``."""
    plateaus = plateaus or [True] * len(probs_per_seed)
    return {f"{key}_seed{s}": _fake_run(key, p, plateau=f, seed=s, **options)
            for s, (p, f) in enumerate(zip(probs_per_seed, plateaus))}


def test_resize_and_stratified_tensors():
    x = torch.full((4, 8, 8, 3), 100, dtype=torch.uint8)
    assert resize_images(x, 8) is x
    assert torch.equal(resize_images(x, 4), torch.full((4, 4, 4, 3), 100, dtype=torch.uint8))
    xs, ys = stratified_tensors(np.arange(10)[:, None], np.array([0] * 5 + [1] * 5), 4, seed=0)
    assert sorted(np.bincount(ys.numpy()).tolist()) == [2, 2] and len(xs) == 4
    xs, ys = stratified_tensors(np.arange(10)[:, None], np.zeros(10, int), 0, seed=0)
    assert len(xs) == 10


def test_accuracy_table_by_hand():
    y = np.array([0, 0, 1, 1])
    three = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # 3 of 4 right
    every = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])  # 4 of 4 right
    metrics, ci, table = accuracy_table(_seeded("cnn", [three, every], plateaus=[True, False]), y, n_boot=200, seed=0)
    assert metrics["cnn_accuracy"] == pytest.approx(0.875)  # the mean of the seeds' 0.75 and 1.0
    assert metrics["cnn_balanced_accuracy"] == pytest.approx(0.875)
    assert metrics["cnn_accuracy_min"] == 0.75 and metrics["cnn_accuracy_max"] == 1.0
    assert metrics["cnn_train_seconds"] == 1.0  # both seeds' 0.5 s
    lo, hi = ci["cnn_accuracy"]
    assert 0.5 <= lo <= 0.875 <= hi == 1.0  # seeds drawn: a draw of the perfect seed twice gives 1
    assert lo < 0.75  # and cells drawn within a seed: below the worse seed
    from wbcstudy.evaluate import expected_calibration_error

    assert metrics["cnn_ece"] == pytest.approx(np.mean([expected_calibration_error(y, p) for p in (three, every)]))
    assert table.loc["custom CNN", "seeds"] == 2 and table.loc["custom CNN", "seeds' range"] == "0.750–1.000"
    assert not table.loc["custom CNN", "plateau (every seed)"]


def test_plateau_record_needs_every_seed_and_judge_plateau_prefers_the_budget_test():
    from wbcstudy.experiments.trust import judge_plateau, plateau_record

    runs = _seeded("cnn", [np.zeros((2, 2))] * 2, plateaus=[True, False]) | _seeded("effnet_lite0_frozen",
                                                                                     [np.zeros((2, 2))] * 2)
    assert plateau_record(runs) == {"cnn_seed0": True, "cnn_seed1": False, "effnet_lite0_frozen_seed0": True,
                                    "effnet_lite0_frozen_seed1": True, "cnn": False, "effnet_lite0_frozen": True}
    rising = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_accuracy": [0.5, 0.6, 0.7, 0.8, 0.9]})
    result = TrainResult(_Fixed(), rising, 5, 0.9, 1.0, "cpu", "fp32", True)
    assert not judge_plateau(result)  # no budget test: the history, still rising
    result.budget_scores = {"half": 0.895, "full": 0.9}
    assert judge_plateau(result, tol=0.01)  # doubling the budget gained 0.005
    assert not judge_plateau(result, tol=0.004)


def test_robustness_at_the_models_resolution_and_readme_levels():
    x, y = _colour_images(4, size=32)
    run = _fake_run("cnn", np.zeros((8, 2)), size=16)
    levels = {"gaussian_noise": [0.0, 0.05], "gaussian_blur": [1, 5], "brightness": [1.0, 1.3]}
    sweep = robustness_sweeps({"cnn_seed0": run}, x, y.numpy(), levels)
    assert list(sweep.table.columns) == ["model", "seed", "run", "perturbation", "level", "accuracy", "n", "ci_low",
                                         "ci_high"]
    assert len(sweep.table) == 6 and (sweep.table.accuracy == 1.0).all()  # colour survives all three perturbations
    assert (sweep.table.n == 8).all() and (sweep.table.ci_high == 1.0).all() and (sweep.table.ci_low < 1).all()
    metrics, ci, table = readme_robustness(sweep, {"cnn_seed0": run}, n_boot=50)
    assert {k: v for k, v in metrics.items() if not k.endswith("minus_clean_accuracy")} == {
        "cnn_noise005_accuracy": 1.0, "cnn_blur5_accuracy": 1.0, "cnn_brightness13_accuracy": 1.0}
    assert metrics["cnn_blur5_minus_clean_accuracy"] == 0.0 and ci["cnn_blur5_minus_clean_accuracy"] == (0.0, 0.0)
    assert ci["cnn_noise005_accuracy"] == (1.0, 1.0)  # every draw of seeds and cells is all right
    assert table.loc["custom CNN", "clean"] == 1.0
    seen = []
    run.result.model = _Recorder(seen)
    robustness_sweeps({"cnn_seed0": run}, x, y.numpy(), {"brightness": [1.0]})
    assert seen == [(8, 16, 16, 3)]  # perturbed and predicted at the model's 16 px, not the 32 px source
    seen.clear()
    robustness_sweeps({"cnn_seed0": run}, x, y.numpy(), {"brightness": [1.0]},
                      sources={"cnn": torch.zeros((8, 64, 64, 3), dtype=torch.uint8)})
    assert seen == [(8, 16, 16, 3)]  # another source of the same cells, resized to the model's size


def test_readme_robustness_differences_are_paired_by_image():
    from wbcstudy.experiments.trust import RobustnessSweep

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    right, half = y.copy(), np.array([0, 0, 1, 1, 1, 1, 0, 0])  # all right; 4 of 8 right
    settings = {("gaussian_noise", 0.05), ("gaussian_blur", 5.0), ("brightness", 1.3), ("brightness", 1.0)}
    predictions = {(f"cnn_seed{s}", p, lv): right for p, lv in settings for s in (0, 1)}
    predictions.update({(f"resnet50_seed{s}", p, lv): (right if lv == 1.0 else half) for p, lv in settings
                        for s in (0, 1)})
    sweep = RobustnessSweep(pd.DataFrame(), predictions, y)
    runs = _seeded("cnn", [np.zeros((8, 2))] * 2) | _seeded("resnet50", [np.zeros((8, 2))] * 2)
    metrics, ci, table = readme_robustness(sweep, runs, n_boot=200, seed=0,
                                           pairs={"resnet50_minus_cnn": ("resnet50", "cnn")})
    assert metrics["resnet50_blur5_minus_clean_accuracy"] == pytest.approx(-0.5)
    assert metrics["resnet50_minus_cnn_noise005_accuracy"] == pytest.approx(-0.5)
    assert metrics["resnet50_minus_cnn_perturbed_accuracy"] == pytest.approx(-0.5)  # every setting 0.5 against 1
    lo, hi = ci["resnet50_minus_cnn_noise005_accuracy"]
    assert -1 <= lo <= -0.5 <= hi < 0  # ResNet50 is never better on any resample of the same images
    assert table.loc["ResNet50 (scratch)", "Δ blur5 [95% CI]"].startswith("-0.500 [")


def test_readme_robustness_intervals_hold_the_seeds_spread():
    from wbcstudy.experiments.trust import RobustnessSweep

    y = np.array([0, 1] * 10)
    wrong = 1 - y
    settings = {("gaussian_noise", 0.05), ("gaussian_blur", 5.0), ("brightness", 1.3), ("brightness", 1.0)}
    # seed 0 keeps every image under noise, seed 1 none: on cells alone each seed's interval is a point
    predictions = {(f"cnn_seed{s}", p, lv): (wrong if (s == 1 and p == "gaussian_noise") else y) for p, lv in settings
                   for s in (0, 1)}
    sweep = RobustnessSweep(pd.DataFrame(), predictions, y)
    metrics, ci, _ = readme_robustness(sweep, _seeded("cnn", [np.zeros((20, 2))] * 2), n_boot=400, seed=0)
    assert metrics["cnn_noise005_accuracy"] == pytest.approx(0.5)
    assert ci["cnn_noise005_accuracy"] == (0.0, 1.0)  # draws of both seeds the same one reach either end
    assert metrics["cnn_noise005_minus_clean_accuracy"] == pytest.approx(-0.5)


def test_augmentation_sharpness_table():
    x, _ = _colour_images(3, size=16)
    table = augmentation_sharpness(x, [16, 8], {"identity": lambda im: im, "blur": lambda im: im // 2})
    from wbcstudy.explain import laplacian_energy

    assert list(table.index) == [16, 8]
    assert (table.loc[16, "as they are"] == pytest.approx(laplacian_energy(x))
            == pytest.approx(table.loc[16, "identity"]))
    assert (table.loc[16, "blur"] < table.loc[16, "as they are"]
            and table.loc[16, "blur 5×5"] < table.loc[16, "blur 3×3"])


class _Recorder(nn.Module):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return torch.zeros(len(x), 2)


def test_train_trust_model_learns_colour_and_records_plateau(one_thread):
    x, y = _colour_images(12, size=16)
    run = train_trust_model(TrustModelConfig("cnn", 16, epochs=4, lr=3e-3, optimizer="adam", weight_decay=0.0),
                            (x, y), (x, y), x, n_classes=2, batch_size=8, seed=0)
    assert run.name == "custom CNN" and run.arch == "trust_cnn" and run.train_size == 24
    assert run.test_probs.shape == (24, 2)
    assert (run.test_probs.argmax(1) == y.numpy()).mean() == 1.0
    hist = run.result.history.val_accuracy.tolist()
    assert len(hist) == 4
    from wbcstudy.train import reached_plateau

    assert run.plateau == reached_plateau(hist)
    assert run.mean[0] > run.mean[1]  # from-scratch normalisation: the training images' own channel statistics


def test_train_trust_models_in_workers_match_one_process(one_thread):
    from functools import partial

    from wbcstudy.augment import keras_affine
    from wbcstudy.experiments.trust import train_trust_models

    x, y = _colour_images(8, size=16)
    specs = {"cnn": (TrustModelConfig("cnn", 16, epochs=2, lr=3e-3, optimizer="adam", weight_decay=0.0), (x, y)),
             "effnet_lite0_frozen": (TrustModelConfig("effnet_lite0_frozen", 16, epochs=1, lr=1e-3), (x[:8], y[:8]))}
    augment = partial(keras_affine, mode="bicubic")
    alone = train_trust_models(specs, (x, y), x, 2, batch_size=8, seed=0, augment=augment)
    parallel = train_trust_models(specs, (x, y), x, 2, batch_size=8, seed=0, augment=augment, workers=2)
    assert list(alone) == list(parallel) == ["cnn", "effnet_lite0_frozen"]
    assert parallel["effnet_lite0_frozen"].train_size == 8 and len(parallel["cnn"].result.history) == 2
    for key in specs:
        np.testing.assert_allclose(parallel[key].test_probs, alone[key].test_probs, atol=1e-5)
        np.testing.assert_allclose(parallel[key].result.history.train_loss, alone[key].result.history.train_loss,
                                   rtol=1e-5)


def test_fisher_comparison_trace_is_readme_times_feature_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    x = torch.randn(20, 12)
    y = np.arange(20) % 3
    with torch.no_grad():
        probs = torch.softmax(net(x), 1).double().numpy()
    comp = fisher_comparison(net, x, y, probs)
    z = (net[2](net[1](x))).detach().numpy()
    np.testing.assert_allclose(comp.readme, ((probs - np.eye(3)[y]) ** 2).sum(1))
    np.testing.assert_allclose(comp.trace, comp.readme * ((z.astype(float) ** 2).sum(1) + 1), rtol=1e-4)
    assert comp.eigenvalues.sum() == pytest.approx(comp.trace.mean(), rel=1e-4)  # trace of F̂ = mean ‖g‖²
    assert -1 <= comp.spearman <= 1


def _blobs(n=60, d=4, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(k, d, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    z = centres[y] + torch.randn(n, d, generator=gen)
    yt = torch.randint(0, k, (12,), generator=gen)
    zt = centres[yt] + 1.5 * torch.randn(12, d, generator=gen)
    return z, y, zt, yt.numpy()


def test_influence_vs_leave_one_out_on_blobs(one_thread):
    z, y, zt, yt = _blobs()
    check = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=4, loo_count=20, l2=1e-2, damping=0.0,
                                       tracin_epochs=3)
    assert isinstance(check, LeaveOneOutCheck)
    assert len(check.chosen) == 4 and len(set(check.chosen)) == 4 and len(check.removed) == 20
    assert check.actual.shape == (4, 20) and check.predicted.shape == (4, 60)
    assert check.metrics["influence_loo_spearman"] > 0.9  # Koh & Liang on a strongly convex problem: near exact
    assert check.metrics["influence_refit_accuracy"] == pytest.approx((check.test_probs.argmax(1) == yt).mean())
    assert check.table["Koh & Liang"].mean() == pytest.approx(check.metrics["influence_loo_spearman"])
    metrics, table = harmful_images_summary(check, zt, yt, top=5)
    train_pred = check.problem.probs(check.theta).numpy().argmax(1)
    assert metrics["train_misclassified_base_rate"] == pytest.approx((train_pred != y.numpy()).mean())
    t = check.chosen[0]
    harmful = np.argsort(check.predicted[0])[:5]
    assert table.loc[t, "harmful: other label than test"] == pytest.approx((y.numpy()[harmful] != yt[t]).mean())


def test_gradcam_checks_on_a_model_with_known_evidence(one_thread):
    from test_explain import TinyNet  # conv → ReLU → mean → linear, the Grad-CAM tests' model

    torch.manual_seed(0)
    net = TinyNet().eval()
    x, _ = _colour_images(2, size=16)
    targets = np.array([0, 1, 0, 1])
    maps, scores = gradcam_checks(net, lambda m: m.act, x, targets, steps=4, seed=0)
    from wbcstudy.explain import deletion_insertion, gradcam_maps

    np.testing.assert_array_equal(maps, gradcam_maps(net, net.act, x, targets=targets))
    curves = deletion_insertion(net, x, maps, targets, steps=4)
    assert scores["gradcam_deletion_auc"] == pytest.approx(curves["deletion"].mean())
    assert scores["gradcam_insertion_auc"] == pytest.approx(curves["insertion"].mean())
    assert -1 <= scores["gradcam_randomisation_rho"] <= 1


def test_accuracy_difference_is_paired():
    y = np.array([0, 0, 1, 1, 0, 1])
    good = np.eye(2)[y]  # all right
    bad = np.eye(2)[[0, 0, 1, 1, 1, 0]]  # 4 of 6 right
    runs = _seeded("cnn", [good, good]) | _seeded("vgg16", [bad, good])  # VGG16's seeds: 4 of 6, 6 of 6
    value, (lo, hi) = models_accuracy_difference(runs, "cnn", "vgg16", y, n_boot=300, seed=0)
    assert value == pytest.approx(1 / 6)
    assert 0 <= lo <= value <= hi <= 1  # A is never worse than B on any resample of the same cells
    assert lo == 0.0  # a draw of VGG16's perfect seed twice
    same = _seeded("cnn", [good]) | _seeded("vgg16", [good])
    assert models_accuracy_difference(same, "cnn", "vgg16", y, n_boot=50)[1] == (0.0, 0.0)


def test_influence_intervals_contain_their_estimates(one_thread):
    z, y, zt, yt = _blobs()
    check = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=2, loo_count=12, l2=1e-2, tracin_epochs=2, n_boot=100)
    for name in ("influence", "tracin", "readme_influence"):
        lo, hi = check.ci[f"{name}_loo_spearman"]
        assert -1 <= lo <= check.metrics[f"{name}_loo_spearman"] <= hi <= 1
    assert check.metrics["influence_test_images"] == 2 and check.metrics["influence_removals"] == 12


def test_row_spearman_equals_scipy_with_ties():
    from scipy.stats import spearmanr

    from wbcstudy.experiments.trust import _row_spearman

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (5, 12)).astype(float), rng.normal(size=(5, 12))
    np.testing.assert_allclose(_row_spearman(a, b), [spearmanr(r, q)[0] for r, q in zip(a, b)])
    assert np.isnan(_row_spearman(np.ones((1, 4)), b[:1, :4])[0])


def test_captum_cross_check_agrees_on_the_chapter_problem(one_thread):
    z, y, zt, yt = _blobs()
    check = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=3, loo_count=4, l2=1e-2, damping=1e-3,
                                       tracin_epochs=1, n_boot=10)
    metrics, theirs = captum_cross_check(check, zt, yt, damping=1e-3)
    assert theirs.shape == check.predicted.shape
    assert metrics["captum_influence_max_relative_difference"] < 1e-5 and metrics["captum_influence_spearman"] > 0.9999


def test_harmful_neighbours_finds_a_planted_duplicate(one_thread):
    z, y, zt, yt = _blobs()
    check = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=2, loo_count=4, l2=1e-2, tracin_epochs=1, n_boot=10)
    gen = torch.Generator().manual_seed(1)
    train_images = torch.randint(0, 256, (len(y), 6, 6, 3), generator=gen, dtype=torch.uint8)
    test_images = torch.randint(0, 256, (len(yt), 6, 6, 3), generator=gen, dtype=torch.uint8)
    t = int(check.chosen[0])
    harmful = int(np.argmin(check.predicted[0]))
    test_images[t] = train_images[harmful]  # the harmful training image is the test image's pixel twin
    z_twin = zt.clone()
    z_twin[t] = z[harmful]  # and its feature twin
    metrics, table = harmful_neighbours(check, train_images, test_images, z_twin, yt)
    row = table.loc[t]
    assert row["harmful training image"] == harmful and row["pixel RMSE"] == 0 and row["pixel rank"] == 1
    assert row["feature cosine"] == pytest.approx(1.0) and row["feature rank"] == 1 and bool(row["near-duplicate"])
    assert bool(row["same label"]) == (y[harmful].item() == yt[t])
    assert 0.5 <= metrics["harmful_near_duplicate_fraction"] <= 1


def test_training_similarity_by_hand(one_thread):
    from wbcstudy.experiments.trust import training_similarity

    z, y, zt, yt = _blobs()
    check = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=2, loo_count=2, l2=1e-2, tracin_epochs=1, n_boot=5)
    train_images = torch.full((len(y), 2, 2, 3), 10, dtype=torch.uint8)
    train_images[1] = 13  # every pixel 3 grey levels from the test image below
    rmse, cos = training_similarity(check, train_images, torch.full((2, 2, 3), 10, dtype=torch.uint8), z[1])
    assert rmse[0] == 0 and rmse[1] == pytest.approx(3.0)
    centred = z.double() - z.double().mean(0)
    expected = (centred @ centred[1]) / (centred.norm(dim=1) * centred[1].norm())
    np.testing.assert_allclose(cos, expected.numpy(), rtol=1e-5)


class _ColourFeatures(nn.Module):
    """A 'frozen base' whose features are the mean red and blue of a uint8 NHWC image, and a linear head on them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        x = x.float() / 255
        return self.fc(torch.stack([x[..., 0].mean((1, 2)), x[..., 2].mean((1, 2))], 1))


def test_frozen_heads_train_on_features_once_and_read_images_like_any_run(one_thread):
    from wbcstudy.experiments.trust import frozen_features, train_frozen_heads
    from wbcstudy.train import predict_proba

    x, y = _colour_images(12, size=16)
    torch.manual_seed(0)
    base = _ColourFeatures().eval()
    z = frozen_features(base, x, 16, precision="fp32")
    red, blue = x[..., 0].float().mean((1, 2)) / 255, x[..., 2].float().mean((1, 2)) / 255
    np.testing.assert_allclose(z.numpy(), torch.stack([red, blue], 1).numpy(), rtol=1e-6)
    spec = TrustModelConfig("effnet_lite0_frozen", 16, epochs=4, lr=0.3, scheduler="wsd", budget_check=True)
    runs = train_frozen_heads(base, spec, (z, y), (z, y), z, seeds=[3, 4], batch_size=8)
    assert list(runs) == ["effnet_lite0_frozen_seed3", "effnet_lite0_frozen_seed4"]
    a, b = runs.values()
    assert a.spec.seed == 3 and a.train_size == 24 and set(a.result.budget_scores) == {"half", "full"}
    assert not torch.equal(a.model.fc.weight, b.model.fc.weight)  # each seed its own head
    assert not torch.equal(a.model.fc.weight, base.fc.weight)  # the base's own layer untouched, a copy trained
    for run in (a, b):  # the run's network on images = its head on the precomputed features (bf16 round-off)
        np.testing.assert_allclose(predict_proba(run.model, x), run.test_probs, atol=5e-3)
    assert (a.test_probs.argmax(1) == y.numpy()).mean() == 1.0
    # robustness: features computed once for both heads give each run's own predictions
    levels = {"gaussian_noise": [0.0, 0.2], "brightness": [1.0, 0.6]}
    shared = robustness_sweeps(runs, x, y.numpy(), levels, shared_base=list(runs))
    alone = robustness_sweeps(runs, x, y.numpy(), levels)
    assert shared.predictions.keys() == alone.predictions.keys()
    for key, pred in alone.predictions.items():
        np.testing.assert_array_equal(shared.predictions[key], pred)


def test_influence_over_seeds_bootstrap_ranks_equal_an_explicit_resample():
    from wbcstudy.experiments.trust import _rank_under_weights, _row_spearman, _weighted_row_pearson

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 9)), rng.normal(size=(3, 9))
    counts = np.bincount(rng.integers(0, 9, 9), minlength=9).astype(float)
    explicit = _row_spearman(np.repeat(a, counts.astype(int), axis=1), np.repeat(b, counts.astype(int), axis=1))
    order_a, order_b = np.argsort(a, axis=1), np.argsort(b, axis=1)
    ranked = _weighted_row_pearson(_rank_under_weights(order_a, np.argsort(order_a, axis=1), counts),
                                   _rank_under_weights(order_b, np.argsort(order_b, axis=1), counts), counts)
    np.testing.assert_allclose(ranked, explicit, rtol=1e-12)


def test_influence_over_seeds_pools_checks_and_its_interval_holds_their_spread(one_thread):
    from wbcstudy.experiments.trust import influence_over_seeds

    z, y, zt, yt = _blobs()
    good = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=6, loo_count=15, l2=1e-2, tracin_epochs=2, seed=0,
                                      n_boot=0)
    assert good.ci == {} and len(set(good.chosen)) == 6 and len(good.removed) == 15
    bad = influence_vs_leave_one_out(z, y, zt, yt, 3, loo_tests=5, loo_count=20, l2=1e-2, tracin_epochs=2, seed=1,
                                     n_boot=0)
    bad.predicted = -bad.predicted  # a second "seed" whose scores point the wrong way
    metrics, ci = influence_over_seeds([good, bad], n_boot=300, seed=0)
    rho_good = np.nanmean(_row_spearman_rows(good.predicted[:, good.removed], good.actual))
    rho_bad = np.nanmean(_row_spearman_rows(bad.predicted[:, bad.removed], bad.actual))
    assert metrics["influence_loo_spearman"] == pytest.approx((rho_good + rho_bad) / 2)
    assert metrics["influence_test_images"] == 5 and metrics["influence_removals"] == 15  # the fewest of any seed
    lo, hi = ci["influence_loo_spearman"]
    assert lo < rho_bad + 0.1 and hi > rho_good - 0.1  # draws of one seed twice reach near either seed's value


def _row_spearman_rows(a, b):
    from scipy.stats import spearmanr

    return np.array([spearmanr(r, s)[0] for r, s in zip(a, b)])


def test_top_fraction_gap_and_fisher_contrast_gap_by_hand():
    from wbcstudy.experiments.trust import fisher_contrast_gap, top_fraction_gap

    score = np.arange(10.0)  # the top decile: the last image
    contrast = np.array([0.5] * 9 + [0.1])
    assert top_fraction_gap(score, contrast) == pytest.approx(0.4)
    assert top_fraction_gap(score, contrast, top=0.2) == pytest.approx(0.5 - 0.3)
    value, (lo, hi) = fisher_contrast_gap([score, score[::-1]], contrast, n_boot=200, seed=0)
    # seed 1 scores the low-contrast image lowest: its top decile is image 0 (contrast 0.5), gap (3.6+0.1)/9 - 0.5
    assert value == pytest.approx((0.4 + (4.1 / 9 - 0.5)) / 2)
    assert lo <= value <= hi


def test_harmful_label_noise_is_the_mean_over_seeds_of_the_excess_over_the_base_rate():
    from wbcstudy.experiments.trust import harmful_label_noise

    column = "harmful: misclassified by the layer"
    seed0 = ({"harmful_misclassified_fraction": 0.3, "train_misclassified_base_rate": 0.1},
             pd.DataFrame({column: [0.2, 0.4]}))
    seed1 = ({"harmful_misclassified_fraction": 0.1, "train_misclassified_base_rate": 0.1},
             pd.DataFrame({column: [0.1, 0.1, 0.1]}))
    metrics, ci = harmful_label_noise([seed0, seed1], n_boot=300, seed=0)
    assert metrics["harmful_mislabelled_minus_base_rate"] == pytest.approx((0.2 + 0.0) / 2)
    assert metrics["train_misclassified_base_rate"] == pytest.approx(0.1)
    lo, hi = ci["harmful_mislabelled_minus_base_rate"]
    assert lo == 0.0 and 0.2 < hi <= 0.3  # seed 1 twice gives 0 (a quarter of the draws); seed 0 twice up to 0.3
