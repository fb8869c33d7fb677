"""Tests for wbcstudy.experiments.resnext_cc: splits, metrics, paired bootstrap differences, plateaus, Grad-CAM
and the ablation grid, on tiny synthetic data with values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wbcstudy.experiments import resnext_cc as rcc
from wbcstudy.models.resnext_cc import ResNeXtCC


def test_variant_spec_changes_exactly_one_component() -> None:
    assert rcc.variant_spec("full") == rcc.FULL
    for name, change in rcc.VARIANTS.items():
        spec = rcc.variant_spec(name)
        assert {k for k in spec if spec[k] != rcc.FULL[k]} == set(change)
    assert set(rcc.DIFFERENCE_KEYS) == set(rcc.VARIANTS) - {"full"}
    with pytest.raises(ValueError, match="unknown ResNeXt-CC variant"):
        rcc.variant_spec("lab")


def test_binary_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.7])  # predicted 1 1 0 0 1: tp 2, fn 1, tn 1, fp 1
    m = rcc.binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["auroc"] == pytest.approx(4 / 6)  # positive above negative in 4 of the 6 pairs
    assert rcc.accuracy_at_half(y, p) == pytest.approx(0.6)
    assert rcc.accuracy_at_half([1, 0], [0.5, 0.5]) == 0.5  # 0.5 is a negative prediction


def test_binary_metrics_with_ci_is_inside_the_range_and_contains_the_value() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, 80), 0, 1)
    m, ci = rcc.binary_metrics_with_ci(y, p, n_boot=300, seed=1)
    for k, (low, high) in ci.items():
        assert 0.0 <= low <= m[k] <= high <= 1.0, k
    perfect, ci_perfect = rcc.binary_metrics_with_ci(y, y.astype(float), n_boot=50)
    assert perfect["accuracy"] == 1.0 and ci_perfect["accuracy"] == (1.0, 1.0)


def _predictions(variant: str, correct: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int = 0) -> pd.DataFrame:
    prob = np.where(correct, y, 1 - y).astype(float) * 0.8 + 0.1  # 0.9 for a right "1", 0.1 for a right "0"
    return pd.DataFrame({"variant": variant, "fold": folds, "seed": seed, "row": np.arange(len(y)), "y": y,
                         "prob": prob})


def test_ablation_difference_and_its_paired_bootstrap_by_hand() -> None:
    n = 200
    y = np.tile([0, 1], n // 2)
    folds = np.repeat([0, 1], n // 2)
    full_correct = np.ones(n, bool)
    variant_correct = np.ones(n, bool)
    variant_correct[::5] = False  # the variant errs on 40 of 200 cells the full model gets right
    both_wrong = np.zeros(n, bool)
    both_wrong[1::5] = True  # … and both err on 40 more: shared errors cancel in a paired comparison
    full_correct &= ~both_wrong
    variant_correct &= ~both_wrong
    preds = pd.concat([_predictions("full", full_correct, y, folds), _predictions("rgb", variant_correct, y, folds),
                       _predictions("same", full_correct, y, folds)])
    table = rcc.ablation_differences(preds, ["rgb", "same"], n_boot=4000, seed=0)
    row = table.loc["rgb"]
    assert row.cells == n and row.replicates == 2
    assert row.reference == pytest.approx(0.8) and row.value == pytest.approx(0.6)
    assert row.difference == pytest.approx(0.2)
    # per cell the difference is 1 on 40 cells and 0 on 160: the bootstrap mean is Binomial(200, 0.2)/200,
    # whose 95% interval is about 0.2 ± 1.96·sqrt(0.2·0.8/200) = [0.145, 0.255]
    half = 1.96 * math.sqrt(0.2 * 0.8 / n)
    assert row.low == pytest.approx(0.2 - half, abs=0.012) and row.high == pytest.approx(0.2 + half, abs=0.012)
    assert table.loc["same", ["difference", "low", "high"]].tolist() == [0.0, 0.0, 0.0]


def test_ablation_differences_pair_only_shared_cells_and_check_labels() -> None:
    y = np.array([0, 1, 0, 1])
    folds = np.array([0, 0, 1, 1])
    full = _predictions("full", np.array([True, True, True, False]), y, folds)
    pool = _predictions("pool", np.array([False, True, True, True]), y, folds)
    pool = pool[pool.fold == 0]  # the variant ran on fold 0 only
    row = rcc.ablation_differences(pd.concat([full, pool]), ["pool"], n_boot=100).loc["pool"]
    assert row.cells == 2 and row.replicates == 1
    assert row.reference == 1.0 and row.value == 0.5 and row.difference == 0.5
    bad = pool.assign(y=1 - pool.y)
    with pytest.raises(ValueError, match="disagree on the labels"):
        rcc.ablation_differences(pd.concat([full, bad]), ["pool"], n_boot=10)
    with pytest.raises(ValueError, match="shares no test cells"):
        rcc.ablation_differences(pd.concat([full, pool.assign(seed=7)]), ["pool"], n_boot=10)


def test_imbalanced_draw_counts_and_determinism() -> None:
    labels = np.array([0] * 30 + [1] * 70)
    keep = rcc.imbalanced_draw(labels, 50, 0.68, seed=3)
    assert len(keep) == 50 and (labels[keep] == 1).sum() == 34 and np.all(np.diff(keep) > 0)
    assert np.array_equal(keep, rcc.imbalanced_draw(labels, 50, 0.68, seed=3))
    with pytest.raises(ValueError, match="cannot draw"):
        rcc.imbalanced_draw(labels, 100, 0.9, seed=0)


def test_splits_keep_test_folds_out_of_training() -> None:
    images = np.arange(20 * 2 * 2 * 3, dtype=np.uint8).reshape(20, 2, 2, 3)
    labels = np.tile([0, 1], 10)
    fold_of = np.repeat(np.arange(5), 4)
    splits = rcc.cross_validation_splits(images, labels, fold_of, folds=[1, 3], seeds=[0, 1], train_limit=8)
    assert [(s.fold, s.seed) for s in splits] == [(1, 0), (1, 1), (3, 0), (3, 1)]
    for s in splits:
        assert np.array_equal(s.test_rows, np.flatnonzero(fold_of == s.fold))
        assert len(s.train_y) == 8 and int(s.train_y.sum()) == 4  # stratified subset
        train_rows = {int(v) for v in s.train_x[:, 0, 0, 0]}  # the first byte identifies the image (12 bytes apart)
        assert not train_rows & {int(v) for v in images[s.test_rows, 0, 0, 0]}
    test_labels = np.array([0] * 40 + [1] * 60)
    pbc = rcc.imbalanced_splits(images, labels, np.zeros((100, 2, 2, 3), np.uint8), test_labels, seeds=[0, 1],
                                n_train=10, n_test=25, positive_share=0.6)
    assert np.array_equal(pbc[0].test_rows, pbc[1].test_rows) and int(pbc[0].test_y.sum()) == 15
    assert int(pbc[0].train_y.sum()) == 6


def test_mean_histories_and_plateau_by_variant() -> None:
    def h(acc):
        return pd.DataFrame({"epoch": range(1, len(acc) + 1), "train_loss": [1.0] * len(acc), "train_accuracy": acc})
    histories = {
        ("full", 0, 0): h([0.5, 0.7, 0.8, 0.80, 0.80, 0.80]),
        # mean: the last 3 epochs gain 0.005 < 0.01 on the best before
        ("full", 1, 0): h([0.5, 0.7, 0.8, 0.81, 0.80, 0.80]),
        ("rgb", 0, 0): h([0.5, 0.6, 0.7, 0.8, 0.9, 0.95]),  # still rising
    }
    curves = rcc.mean_histories(histories)
    assert curves[curves.variant == "full"].train_accuracy.tolist() == pytest.approx([0.5, 0.7, 0.8, 0.805, 0.8, 0.8])
    assert rcc.plateau_by_variant(histories, prefix="allidb_") == {"allidb_full": True, "allidb_rgb": False}


class _FixedFeatures(nn.Module):
    """(logits, features) with the features = the image's pixel values as floats."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(x), 2), x.flatten(1).float()


def test_feature_compactness_by_hand() -> None:
    images = np.zeros((4, 1, 1, 3), np.uint8)
    images[:, 0, 0, 0] = [0, 2, 10, 12]
    labels = np.array([0, 0, 1, 1])
    ratio, feats = rcc.feature_compactness(_FixedFeatures(), images, labels)
    assert feats.shape == (4, 3)
    assert ratio == pytest.approx(1 / 10)  # centroids 1 and 11: within-class distance 1, between 10


def _tiny_model() -> ResNeXtCC:
    torch.manual_seed(0)
    return ResNeXtCC(num_classes=2, layers=(1, 1, 1, 3), groups=4, width_per_group=4, base_planes=16, stem_width=16,
                     stem_stride=2).eval()


def test_grad_cam_of_fused_map_is_unchanged_from_the_old_implementation(one_thread) -> None:
    # Recorded from wbcstudy.models.resnext_cc.grad_cam before it was removed (the same tiny model and images):
    # it divided each upsampled map by its maximum; wbcstudy.explain.gradcam also subtracts the map's minimum first
    # (as pytorch-grad-cam does), so old = min + (1 − min) · new, exactly, because bilinear resizing is affine.
    old_min = [0.403772, 0.657422, 0.844102]
    old_mean = [0.639297, 0.832423, 0.916263]
    old_pixels = {(0, 0): [0.434289, 0.694243, 0.859833], (16, 16): [0.44259, 0.698448, 0.861772],
                  (31, 40): [0.592097, 0.819659, 0.950943], (63, 63): [0.719128, 0.978027, 0.961117]}
    model = _tiny_model()
    with torch.no_grad():  # the untrained maps are ~1e-5, where gradcam's 1e-7 in "map / (1e-7 + max)" shows; the old
        model.fc.weight.mul_(1e4)  # maps (divided by their maximum) do not change when the logits are scaled
    x = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cams = rcc.grad_cam(model, x.numpy(), target=1, names=("conv5_1", "conv5_3", "fused"))
    assert set(cams) == {"conv5_1", "conv5_3", "fused"} and cams["fused"].shape == (3, 64, 64)
    new = cams["fused"]
    assert new.min() == pytest.approx(0.0, abs=1e-6) and new.max() == pytest.approx(1.0, abs=1e-5)
    m = np.array(old_min)[:, None, None]
    old = m + (1 - m) * new
    assert old.mean(axis=(1, 2)) == pytest.approx(old_mean, abs=2e-5)
    for (r, c), values in old_pixels.items():
        assert old[:, r, c] == pytest.approx(values, abs=2e-5)
    # by hand: logits = FC(GAP(fused)), so d logit_1 / d fused_k = w_1k / (h·w) and the map is ReLU(Σ_k w_1k fused_k)
    fused = model.feature_maps(x)["fused"].detach()
    raw = torch.relu((model.fc.weight[1].detach()[None, :, None, None] * fused).sum(1))
    raw = raw - raw.flatten(1).amin(1).view(-1, 1, 1)
    raw = raw / raw.flatten(1).amax(1).view(-1, 1, 1)
    up = nn.functional.interpolate(raw[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert np.allclose(new, up.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no layer named"):
        rcc.grad_cam(ResNeXtCC(layers=(1, 1, 1, 3), groups=4, base_planes=16, stem_width=16, fusion="none"), x.numpy(),
                     0, names=("fused",))


def test_ablation_grid_pairs_variants_on_the_same_cells(one_thread) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.tile([0, 1], 6)
    images[labels == 1, :8] = 255  # a bright band marks the positives
    fold_of = np.repeat([0, 1, 2], 4)
    config = rcc.AblationConfig(epochs=1, batch_size=8)
    splits = rcc.cross_validation_splits(images, labels, fold_of, folds=[0], seeds=[0])
    grid = rcc.run_ablation_grid(["rgb"], splits, config)
    preds = grid.predictions
    assert list(preds.columns) == rcc.PREDICTION_COLUMNS and len(preds) == 2 * 4
    assert preds.groupby("variant").row.apply(list).to_dict() == {"full": [0, 1, 2, 3], "rgb": [0, 1, 2, 3]}
    assert preds.prob.between(0, 1).all() and set(grid.models) == {"full", "rgb"}
    for _, run in grid.runs.iterrows():
        part = preds[preds.variant == run.variant]
        assert run.accuracy == rcc.accuracy_at_half(part.y, part.prob) and run.epochs == 1 and run.train_cells == 8
    assert grid.models["rgb"][0].input.colour == "rgb" and grid.models["full"][0].input.colour == "hsv"
    again = rcc.run_ablation_grid(["rgb"], splits, config, keep_first=False)  # seeded: the same predictions
    assert np.allclose(again.predictions.prob, preds.prob, atol=1e-6) and not again.models


# --------------------------------------------------------------------------- seeds, cells and the colour control
def test_auroc_matches_sklearn_with_ties_and_is_nan_with_one_class() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    assert rcc.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert rcc.auroc([0, 0, 1], [0.1, 0.9, 0.5]) == pytest.approx(0.5)  # the positive beats one of two negatives
    assert math.isnan(rcc.auroc([1, 1], [0.2, 0.7]))


def test_binary_metrics_with_ci_averages_the_seeds() -> None:
    y = np.repeat([0, 1], 20)
    right = y.astype(float) * 0.8 + 0.1
    wrong_half = right.copy()
    wrong_half[:10] = 0.9  # this seed errs on 10 of the 20 negatives
    m1, ci1 = rcc.binary_metrics_with_ci(y, right, n_boot=200, seed=0)
    m2, ci2 = rcc.binary_metrics_with_ci(y, np.stack([right, right], axis=1), n_boot=200, seed=0)
    assert m1 == m2 and ci1 == ci2  # two identical seeds are one seed: the cells, not the runs, are counted
    m, ci = rcc.binary_metrics_with_ci(y, np.stack([right, wrong_half], axis=1), n_boot=300, seed=0)
    assert m["accuracy"] == pytest.approx((1.0 + 30 / 40) / 2) and m["specificity"] == pytest.approx((1.0 + 0.5) / 2)
    for k, (low, high) in ci.items():
        assert 0.0 <= low <= m[k] <= high <= 1.0, k
    with pytest.raises(ValueError, match="cells, replicates"):
        rcc.binary_metrics_with_ci(y, np.zeros((3, 2)))


def _seeded(variant: str, correct_by_seed: list[np.ndarray], y: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    return pd.concat([_predictions(variant, c, y, folds, seed=s) for s, c in enumerate(correct_by_seed)])


def test_pooled_by_seed_and_seed_metrics_by_hand() -> None:
    y = np.array([0, 1, 0, 1])
    folds = np.array([0, 0, 1, 1])
    preds = _seeded("full", [np.array([True, True, True, False]), np.array([True, False, False, False])], y, folds)
    labels, probs = rcc.pooled_by_seed(preds.sample(frac=1.0, random_state=0), "full")  # row order does not matter
    assert labels.tolist() == [0, 1, 0, 1] and probs.shape == (4, 2)
    assert probs[:, 0].tolist() == pytest.approx([0.1, 0.9, 0.1, 0.1])
    table = rcc.seed_metrics(preds, ["full"])
    assert table.loc["full"].tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="no predictions"):
        rcc.pooled_by_seed(preds, "rgb")


def test_ablation_differences_resample_cells_and_seeds() -> None:
    n = 200
    y = np.tile([0, 1], n // 2)
    folds = np.repeat([0, 1], n // 2)
    full = np.ones(n, bool)
    variant = np.ones(n, bool)
    variant[::5] = False  # 40 of 200 cells lost
    one = pd.concat([_predictions("full", full, y, folds), _predictions("rgb", variant, y, folds)])
    three = pd.concat([_seeded("full", [full] * 3, y, folds), _seeded("rgb", [variant] * 3, y, folds)])
    a = rcc.ablation_differences(one, ["rgb"], n_boot=500, seed=0).loc["rgb"]
    b = rcc.ablation_differences(three, ["rgb"], n_boot=500, seed=0).loc["rgb"]
    # three identical seeds add no cells: the same difference and the same interval as one seed (the same resamples)
    assert b.cells == n and b.seeds == 3 and b.replicates == 6
    assert (b.difference, b.low, b.high) == pytest.approx((a.difference, a.low, a.high))
    # seeds that disagree: the difference is the mean of the per-seed differences, which are reported
    noisy = variant.copy()
    noisy[1::5] = False  # a second seed loses 40 more cells
    mixed = pd.concat([_seeded("full", [full, full], y, folds), _seeded("rgb", [variant, noisy], y, folds)])
    row = rcc.ablation_differences(mixed, ["rgb"], n_boot=500, seed=0).loc["rgb"]
    assert row.difference == pytest.approx((0.2 + 0.4) / 2)
    assert (row.seed_min, row.seed_max) == pytest.approx((0.2, 0.4))
    # the seeds are redrawn too (half the resamples hold one seed twice): the interval spans both seeds' differences,
    # where resampling cells alone would give about 0.3 ± 0.06
    assert row.low < 0.2 < 0.4 < row.high


def test_colour_statistics_by_hand_and_hue_wraps_around() -> None:
    import colorsys

    red_blue = np.zeros((1, 2, 2, 3), np.uint8)
    red_blue[0, 0] = [255, 0, 0]  # hue 0
    red_blue[0, 1] = [0, 0, 255]  # hue 2/3 of a turn
    stats = rcc.colour_statistics(red_blue).iloc[0]
    assert list(rcc.colour_statistics(red_blue).columns) == list(rcc.COLOUR_FEATURES)
    assert (stats.red_mean, stats.green_mean, stats.blue_mean) == pytest.approx((0.5, 0.0, 0.5))
    assert (stats.red_std, stats.blue_std) == pytest.approx((0.5, 0.5))
    assert stats.hue_cos == pytest.approx((1 + math.cos(4 * math.pi / 3)) / 2)  # 0.25
    assert stats.hue_sin == pytest.approx(math.sin(4 * math.pi / 3) / 2)  # -0.433
    assert stats.hue_concentration == pytest.approx(0.5)
    assert ((stats.saturation_mean, stats.saturation_std, stats.value_mean, stats.value_std)
            == pytest.approx((1, 0, 1, 0)))
    # hues just below and just above a full turn are neighbours: their circular mean is near 0, not 0.5
    near_turn = np.zeros((1, 1, 2, 3), np.uint8)
    near_turn[0, 0, 0] = [255, 0, 15]  # hue ≈ 0.99
    near_turn[0, 0, 1] = [255, 15, 0]  # hue ≈ 0.01
    hues = [colorsys.rgb_to_hsv(*(near_turn[0, 0, k] / 255.0))[0] for k in (0, 1)]
    assert hues[0] > 0.98 and hues[1] < 0.02
    s = rcc.colour_statistics(near_turn).iloc[0]
    assert s.hue_cos == pytest.approx(np.mean([math.cos(2 * math.pi * h) for h in hues]), abs=1e-9)
    assert s.hue_cos > 0.99 and abs(s.hue_sin) < 1e-9 and s.hue_concentration > 0.99
    with pytest.raises(ValueError, match="uint8 images"):
        rcc.colour_statistics(red_blue.astype(np.float32))


def test_colour_stats_predictions_are_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 30)
    fold_of = np.repeat(np.arange(3), 20)
    features = pd.DataFrame(rng.normal(0, 1, (60, len(rcc.COLOUR_FEATURES))), columns=list(rcc.COLOUR_FEATURES))
    features["hue_cos"] += 10 * labels  # the hue separates the classes
    preds = rcc.colour_stats_predictions(features, labels, fold_of, folds=[0, 2], seeds=[0, 1])
    assert list(preds.columns) == rcc.PREDICTION_COLUMNS
    assert sorted(preds[preds.seed == 0].row) == sorted(np.flatnonzero(fold_of != 1))
    assert np.array_equal(preds[preds.seed == 0].prob.to_numpy(), preds[preds.seed == 1].prob.to_numpy())
    assert rcc.accuracy_at_half(preds.y, preds.prob) == 1.0
    rgb_only = rcc.colour_stats_predictions(features, labels, fold_of, folds=[0], columns=rcc.RGB_FEATURES)
    assert rcc.accuracy_at_half(rgb_only.y, rgb_only.prob) < 0.9  # noise only
    # the test fold's labels are never seen: flipping them changes nothing about its predictions
    flipped = labels.copy()
    flipped[fold_of == 0] = 1 - flipped[fold_of == 0]
    again = rcc.colour_stats_predictions(features, flipped, fold_of, folds=[0])
    assert np.allclose(again.prob, preds[(preds.fold == 0) & (preds.seed == 0)].prob)


def test_worker_pool_grid_merge_and_baselines_match_one_process(one_thread) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.tile([0, 1], 6)
    images[labels == 1, :8] = 255
    fold_of = np.repeat([0, 1, 2], 4)
    config = rcc.AblationConfig(epochs=1, batch_size=8)
    splits = rcc.cross_validation_splits(images, labels, fold_of, folds=[0], seeds=[0, 1])
    alone = rcc.run_ablation_grid(["rgb"], splits, config)
    pool = rcc.worker_pool(2)
    try:
        parallel = rcc.run_ablation_grid(["rgb"], splits, config, pool=pool)
        deep = rcc.run_ablation_grid(["pool"], splits[:1], config, keep_first=False, with_full=False, pool=pool)
        specs = rcc.baseline_specs(32, 32, 0.002, 0.001)
        base = rcc.run_baselines(["small_vit"], specs, {32: images}, labels, fold_of, [0, 1], 0, config, 1, pool=pool)
    finally:
        pool.shutdown()
    assert rcc.worker_pool(1) is None
    assert np.allclose(parallel.predictions.prob, alone.predictions.prob, atol=1e-6)
    assert parallel.predictions[["variant", "fold", "seed", "row"]].equals(
        alone.predictions[["variant", "fold", "seed", "row"]])
    assert set(parallel.models) == {"full", "rgb"} and parallel.models["rgb"][0].input.colour == "rgb"
    assert set(deep.predictions.variant) == {"pool"} and len(deep.predictions) == 4
    merged = rcc.merge_grids(parallel, deep)
    assert len(merged.runs) == 5 and ("pool", 0, 0) in merged.histories and set(merged.models) == {"full", "rgb"}
    row = rcc.ablation_differences(merged.predictions, ["pool"], n_boot=50).loc["pool"]
    assert row.seeds == 1 and row.cells == 4  # paired with the full model's seed-0 runs only
    assert sorted(base.predictions.fold.unique()) == [0, 1] and base.runs.epochs.tolist() == [1, 1]
    with pytest.raises(ValueError, match="nothing to train"):
        rcc.run_ablation_grid([], splits, config, with_full=False)
