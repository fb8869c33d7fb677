"""Tests for wbcstudy.experiments.wnet: hand-computed metrics and intervals, fold splits, and tiny separable
problems."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score

from wbcstudy.experiments import wnet as exp
from wbcstudy.intervals import wilson
from wbcstudy.train import CrossValResult, TrainConfig, cross_validate, fit

pytestmark = pytest.mark.usefixtures("one_thread")

Y = np.array([0, 0, 1, 1, 2, 2])
PRED = np.array([0, 1, 1, 1, 2, 0])
CLASSES = ["a", "b", "c"]


def test_metric_functions_by_hand() -> None:
    fns = exp.metric_functions(3)
    # recalls 1/2, 2/2, 1/2; precisions 1/2, 2/3, 1/1; F1 = 2tp/(support+predicted) = 2/4, 4/5, 2/3
    assert fns["accuracy"](Y, PRED) == pytest.approx(4 / 6)
    assert fns["balanced_accuracy"](Y, PRED) == pytest.approx(2 / 3)
    assert fns["recall"](Y, PRED) == pytest.approx(2 / 3)
    assert fns["precision"](Y, PRED) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert fns["f1"](Y, PRED) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert [fns[f"recall_{k}"](Y, PRED) for k in range(3)] == pytest.approx([0.5, 1.0, 0.5])
    assert fns["precision"](Y, PRED) == pytest.approx(precision_score(Y, PRED, average="macro"))
    assert fns["f1"](Y, PRED) == pytest.approx(f1_score(Y, PRED, average="macro"))
    assert fns["balanced_accuracy"](Y, PRED) == pytest.approx(balanced_accuracy_score(Y, PRED))


def test_summarise_predictions_keys_values_and_intervals() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    pred = np.where(rng.random(120) < 0.8, y, (y + 1) % 3)
    metrics, ci = exp.summarise_predictions(y, pred, CLASSES, "m", n_boot=200, per_class=True)
    assert set(metrics) == set(ci) == {"m_balanced_accuracy", "m_accuracy", "m_precision", "m_recall", "m_f1",
                                       "m_a_accuracy", "m_b_accuracy", "m_c_accuracy"}
    assert metrics["m_accuracy"] == pytest.approx((pred == y).mean())
    assert metrics["m_a_accuracy"] == pytest.approx((pred[:40] == 0).mean())
    for key, (low, high) in ci.items():
        assert 0.0 <= low <= metrics[key] <= high <= 1.0, key
    perfect, perfect_ci = exp.summarise_predictions(y, y, CLASSES, "p", n_boot=50)
    assert perfect["p_balanced_accuracy"] == 1.0 and perfect_ci["p_balanced_accuracy"] == [1.0, 1.0]


def test_split_fold_is_cross_validates_split_plus_unused_validation_cells() -> None:
    labels = np.tile([0, 1, 2, 2], 50)
    folds = np.repeat(np.arange(5), 40)
    s = exp.split_fold(labels, folds, 2, train_limit=60, val_limit=30, test_limit=20)
    assert set(folds[s.test]) == {2} and len(s.test) == 20
    assert not set(s.train) & set(s.val) and not (set(s.train) | set(s.val)) & set(np.flatnonzero(folds == 2))
    assert abs(len(s.train) - 60) <= 3 and abs(len(s.val) - 30) <= 3
    from wbcstudy.data.transforms import stratified_subset
    pool = np.flatnonzero(folds != 2)
    np.testing.assert_array_equal(s.train, pool[stratified_subset(labels[pool], 60, seed=2)])  # as cross_validate
    full = exp.split_fold(labels, folds, 0, val_limit=16)  # no train limit: validation comes out of the training cells
    assert len(full.train) + len(full.val) == 160 and not set(full.train) & set(full.val)
    assert len(exp.split_fold(labels, folds, 0).val) == 0


def test_cv_plateau() -> None:
    flat = pd.DataFrame({"val_balanced_accuracy": [0.5, 0.8, 0.9, 0.9, 0.905, 0.9]})
    rising = pd.DataFrame({"val_balanced_accuracy": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})
    assert exp.cv_plateau({0: flat, 1: flat})
    assert not exp.cv_plateau({0: flat, 1: rising})
    assert not exp.cv_plateau({0: pd.DataFrame({"train_loss": [1.0, 0.5]})})
    assert not exp.cv_plateau({})


def test_paired_difference_matches_cells_by_fold_and_row() -> None:
    y = np.repeat([0, 1, 2], 10)
    a = pd.DataFrame({"fold": np.tile([0, 1], 15), "row": np.arange(30), "y": y, "pred": y})
    b = a.assign(pred=0).sample(frac=1.0, random_state=0)  # always class 0, rows in another order
    d, (low, high) = exp.fold_pooled_difference(a, b, 3, "balanced_accuracy", n_boot=100)
    assert d == pytest.approx(1 - 1 / 3)
    # class-stratified: both are exact on every resample
    assert low == pytest.approx(2 / 3) and high == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exp.fold_pooled_difference(a, b.assign(fold=9), 3)
    # with seeds, cells are matched by seed too: seed 1 of B is right everywhere, so only seed 0 differs
    a2 = pd.concat([a.assign(seed=0), a.assign(seed=1)])
    b2 = pd.concat([b.assign(seed=0), a.assign(seed=1)])
    d, (low, high) = exp.fold_pooled_difference(a2, b2, 3, "accuracy", n_boot=200)
    assert d == pytest.approx((1 - 1 / 3) / 2)
    assert low < d < high  # the seed draw: both seeds 0 (2/3), both seeds 1 (0) or one of each


def _cv(y: np.ndarray, pred: np.ndarray) -> CrossValResult:
    frame = pd.DataFrame({"fold": np.arange(len(y)) % 2, "row": np.arange(len(y)), "y": y, "pred": pred})
    history = pd.DataFrame({"train_loss": [1.0, 0.5, 0.3, 0.3, 0.3, 0.3]})
    return CrossValResult(frame, {0: history, 1: history}, {0: 1.0, 1: 1.0}, {0: 5, 1: 5}, {})


def test_transfer_summary_by_hand() -> None:
    y = np.repeat(np.arange(5), 2)
    scratch = _cv(y, np.where(np.arange(10) < 6, y, (y + 1) % 5))  # 6 of 10 right
    tuned = _cv(y, np.where(np.arange(10) < 9, y, (y + 1) % 5))  # 9 of 10 right
    table, metrics, ci, plateau = exp.transfer_summary({"T": {"from scratch": scratch, "pre-trained": tuned}},
                                                       {"T": "t"}, 5, n_boot=200)
    assert metrics["t_scratch_accuracy"] == 0.6 and metrics["t_pretrained_accuracy"] == 0.9
    # folds, then cells within each class: each fold holds one cell per class (a stratified draw keeps it) and both
    # folds score 3/5, so no draw moves the accuracy
    assert ci["t_scratch_accuracy"] == pytest.approx([0.6, 0.6])
    assert metrics["t_pretrained_minus_scratch_accuracy"] == pytest.approx(0.3)
    low, high = ci["t_pretrained_minus_scratch_accuracy"]
    assert -1 <= low <= 0.3 <= high <= 1
    # scratch is right on both cells of classes 0–2 only: recalls 1, 1, 1, 0, 0; pre-trained misses one cell of class 4
    assert metrics["t_scratch_balanced_accuracy"] == pytest.approx(0.6)
    assert metrics["t_pretrained_balanced_accuracy"] == pytest.approx(0.9)
    assert metrics["t_pretrained_minus_scratch_balanced_accuracy"] == pytest.approx(0.3)
    assert metrics["t_majority_rate"] == pytest.approx(0.2)  # every class has two of the ten cells
    assert metrics["t_scratch_epochs"] == 6.0
    assert plateau == {"t_scratch": True, "t_pretrained": True}
    assert table.loc[("T", "difference"), "accuracy"] == pytest.approx(0.3)
    assert table.loc[("T", "always the commonest class"), "balanced accuracy"] == pytest.approx(0.2)
    # three seeds of the same folds, stacked: pooled over every seed's cells, the majority rate over the cells once
    seeds = {s: _cv(y, np.where(np.arange(10) < 6 + s, y, (y + 1) % 5)) for s in range(3)}  # 6, 7 and 8 of 10
    stacked = exp.stack_seeds(seeds)
    assert sorted(stacked.histories) == [(s, f) for s in range(3) for f in range(2)]
    table, metrics, ci, _ = exp.transfer_summary({"T": {"from scratch": stacked, "pre-trained": exp.stack_seeds(
        {s: tuned for s in range(3)})}}, {"T": "t"}, 5, n_boot=200)
    assert metrics["t_scratch_accuracy"] == pytest.approx(0.7) and metrics["t_majority_rate"] == pytest.approx(0.2)
    assert metrics["t_pretrained_minus_scratch_accuracy"] == pytest.approx(0.2)
    assert table.loc[("T", "from scratch"), "runs"] == 6 and table.loc[("T", "from scratch"), "cells"] == 10


def test_transfer_summary_majority_rate_of_an_unbalanced_set() -> None:
    y = np.array([0] * 7 + [1] * 2 + [2])
    always_zero = _cv(y, np.zeros(10, int))
    _, metrics, _, _ = exp.transfer_summary({"T": {"from scratch": always_zero, "pre-trained": always_zero}},
                                            {"T": "t"}, 3, n_boot=50)
    assert metrics["t_majority_rate"] == pytest.approx(0.7) == metrics["t_scratch_accuracy"]
    assert metrics["t_scratch_balanced_accuracy"] == pytest.approx(1 / 3)


def test_comparison_summary_reads_pooled_cells() -> None:
    y = np.repeat([0, 1, 2], 4)
    runs = {"W-Net": exp.ModelRun(_cv(y, y), 10, True), "LSTM": exp.ModelRun(_cv(y, np.zeros(12, int)), 20, False)}
    table, metrics, ci = exp.comparison_summary(runs, CLASSES, n_boot=50)
    assert (metrics["wnet_compare_balanced_accuracy"] == 1.0
            and metrics["lstm_balanced_accuracy"] == pytest.approx(1 / 3))
    assert metrics["lstm_precision"] == pytest.approx((1 / 3) / 3)  # class 0 predicted always: precision 1/3, others 0
    assert table.loc["LSTM", "parameters"] == 20 and not table.loc["LSTM", "plateau"]
    assert metrics["lstm_epochs"] == 6.0 and table.loc["LSTM", "epochs"] == 6.0
    sds = {k for k in metrics if k.endswith("_fold_sd")}  # one per metric: its SD over the folds
    assert set(ci) == set(metrics) - {"wnet_compare_epochs", "lstm_epochs"} - sds
    assert {k[:-len("_fold_sd")] for k in sds} == set(ci) and metrics["wnet_compare_balanced_accuracy_fold_sd"] == 0.0


def test_restrict_to_keeps_the_other_runs_cells_in_its_order() -> None:
    full = pd.DataFrame({"fold": [1, 1, 2, 2], "row": [0, 1, 2, 3], "y": [0, 1, 0, 1], "pred": [0, 0, 0, 1]})
    like = pd.DataFrame({"fold": [2, 1], "row": [3, 1], "y": [1, 1], "pred": [1, 1]})
    out = exp.restrict_to(full, like)
    assert out[["fold", "row", "pred"]].values.tolist() == [[2, 3, 1], [1, 1, 0]]


def _separable(n: int = 48, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark cells (class 0) and bright cells (class 1) with noise: a problem any CNN fits in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    base = np.where(y == 1, 190, 60)[:, None, None, None]
    x = np.clip(base + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return x, y


CONFIG = TrainConfig(epochs=4, batch_size=8, lr=3e-3, optimizer="adam", weight_decay=0.0, precision="fp32",
                     device="cpu", seed=0, progress=False, channels_last=False)


def test_monitoring_does_not_change_training_and_the_model_fits() -> None:
    from wbcstudy.models import build, with_input_adapter

    x, y = _separable(64)
    folds = (np.arange(64) // 2) % 2
    make = lambda: with_input_adapter(build("wnet", 2, image_size=8), [0.5] * 3, [0.25] * 3)  # noqa: E731
    torch.manual_seed(0)
    plain = cross_validate(make, torch.from_numpy(x), y, folds, CONFIG, train_limit=16)
    torch.manual_seed(0)
    monitored = exp.cross_validate_monitored(make, torch.from_numpy(x), y, folds, CONFIG, train_limit=16, val_limit=12)
    pd.testing.assert_frame_equal(plain.predictions, monitored.predictions)
    assert (monitored.predictions["y"] == monitored.predictions["pred"]).mean() >= 0.9
    for h in monitored.histories.values():
        assert list(h["epoch"]) == [1, 2, 3, 4] and "val_balanced_accuracy" in h


def test_compare_models_builds_through_the_registry() -> None:
    x, y = _separable(48)
    folds = (np.arange(48) // 2) % 2
    specs = {"W-Net": exp.ComparisonModelConfig("wnet", {"image_size": 8}),
             "LSTM": exp.ComparisonModelConfig("row_lstm", {"image_size": 8, "hidden": 4})}
    runs = exp.compare_models(specs, torch.from_numpy(x), y, folds, CONFIG, [0.5] * 3, [0.25] * 3, fold_ids=[0, 1],
                              val_limit=8, n_classes=2, log=None)
    # W-Net at 8 px: convs 448 + 4,640 + 18,496; FC 64·1024 + 1,024; output 1,024·2 + 2
    assert runs["W-Net"].parameters == 23_584 + 66_560 + 2_050
    assert runs["LSTM"].parameters == 4 * (4 * (24 + 4) + 2 * 4) + (4 * 2 + 2)  # PyTorch LSTM (two biases) + linear
    pred = runs["W-Net"].cv.predictions
    assert len(pred) == 48 and (pred["y"] == pred["pred"]).mean() >= 0.9
    assert all(len(h) == 4 and "val_balanced_accuracy" in h for h in runs["LSTM"].cv.histories.values())


def test_model_spec_learning_rate_and_epochs_replace_the_comparisons() -> None:
    x, y = _separable(32)
    folds = (np.arange(32) // 2) % 2
    specs = {"W-Net": exp.ComparisonModelConfig("wnet", {"image_size": 8}, lr=1e-5, max_epochs=2)}
    config = TrainConfig(**{**CONFIG.__dict__, "epochs": 1, "scheduler": "constant"})
    runs = exp.compare_models(specs, torch.from_numpy(x), y, folds, config, [0.5] * 3, [0.25] * 3, fold_ids=[0],
                              val_limit=4, n_classes=2, log=None)
    assert runs["W-Net"].cv.histories[0]["lr"].iloc[-1] == pytest.approx(1e-5)
    assert list(runs["W-Net"].cv.histories[0]["epoch"]) == [1, 2]


def test_stopping_at_the_plateau_keeps_the_best_epoch() -> None:
    """A separable problem levels off at perfect validation accuracy: the run stops long before its maximum."""
    from wbcstudy.models import build, with_input_adapter

    x, y = _separable(64)
    folds = (np.arange(64) // 2) % 2
    config = exp.until_plateau(30, 8, 3e-3)
    assert config.stop_at_plateau and config.scheduler == "constant" and config.monitor == "val_balanced_accuracy"
    config = TrainConfig(**{**config.__dict__, "precision": "fp32", "device": "cpu", "channels_last": False})
    make = lambda: with_input_adapter(build("wnet", 2, image_size=8), [0.5] * 3, [0.25] * 3)  # noqa: E731
    torch.manual_seed(0)
    cv = exp.cross_validate_monitored(make, torch.from_numpy(x), y, folds, config, fold_ids=[0], val_limit=12)
    h = cv.histories[0]
    assert 4 <= len(h) < 30 and exp.cv_plateau(cv.histories)
    assert (cv.predictions["y"] == cv.predictions["pred"]).mean() >= 0.9


def test_gan_plateau_needs_min_epochs_and_a_flat_curve() -> None:
    flat = [{"judge_accuracy": v} for v in (0.5, 0.9, 0.9, 0.9, 0.9)]
    assert exp.gan_plateau(flat, min_epochs=4) and not exp.gan_plateau(flat, min_epochs=6)
    rising = pd.DataFrame({"judge_accuracy": [0.2, 0.4, 0.6, 0.8, 0.95]})
    assert not exp.gan_plateau(rising, min_epochs=1)


def test_generated_cell_score_is_the_judges_accuracy_on_generated_cells() -> None:
    """A judge that always answers class 0 scores 1/3 on cells generated for three classes, with confidence 1/3 too."""
    from wbcstudy.models.dcgan import Generator

    class Always0(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 3) + torch.tensor([50.0, 0.0, 0.0])

    gen = Generator(nz=8, num_classes=3, ngf=4, image_size=32)
    score = exp.generated_cell_score(Always0(), gen, n_per_class=4, n_classes=3, seed=0)
    assert score["judge_accuracy"] == pytest.approx(1 / 3)
    assert score["judge_confidence"] == pytest.approx(1 / 3, abs=1e-6)
    assert score["monitor_seconds"] >= 0 and gen.training


def test_gan_checks_and_realism_on_a_perfect_generator() -> None:
    """'Generated' cells drawn from the real distribution: check 1 and check 2 must both succeed."""
    from wbcstudy.models import build, with_input_adapter

    x, y = _separable(96)
    fake, fake_y = _separable(40, seed=1)
    rows = np.arange(96)
    make = lambda: with_input_adapter(build("wnet", 2, image_size=8), [0.5] * 3, [0.25] * 3)  # noqa: E731
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    judge = fit(make(), (xt[:48], yt[:48]), (xt[48:64], yt[48:64]), CONFIG, n_classes=2)
    checks = exp.gan_checks(judge, make, x, y, rows[64:], fake, fake_y, CONFIG, 2, n_boot=50)
    assert checks.metrics["generated_classified_accuracy"] >= 0.9
    assert checks.metrics["synthetic_trained_real_accuracy"] >= 0.9
    k = int((checks.fake_pred == fake_y).sum())
    assert checks.ci["generated_classified_accuracy"] == pytest.approx(list(wilson(k, 40)))
    assert set(checks.plateau) == {"judge", "synthetic"}
    table, metrics = exp.realism_summary(checks.judge.model, x[64:], y[64:], fake, fake_y, x[64:], ["dark", "bright"])
    assert exp.judge_features(checks.judge.model, x[:3]).shape == (3, 1024)
    # a sample against itself (sqrtm round-off)
    assert metrics["frechet_wnet_real_reference"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["frechet_wnet_generated"] > 0
    assert list(table.index) == ["dark", "bright", "mean"]


def test_transfer_runs_wait_min_steps_before_plateau_stopping() -> None:
    """20 cells in 5 folds, batch 4: 16 training cells = 4 steps per epoch, so 20 steps mean at least 5 epochs."""
    from wbcstudy.models import build, with_input_adapter

    x, y = _separable(20)
    folds = np.arange(20) % 5
    make = lambda: with_input_adapter(build("wnet", 2, image_size=8), [0.5] * 3, [0.25] * 3)  # noqa: E731
    config = TrainConfig(**{**exp.until_plateau(8, 4, 3e-3, "train_loss").__dict__, "precision": "fp32",
                            "device": "cpu", "channels_last": False})
    runs = exp.transfer_runs(make(), make, {"T": (torch.from_numpy(x), y, folds)}, config, 5, n_classes=2, min_steps=20)
    for cv in runs["T"].values():
        assert len(cv.predictions) == 20
        assert all(5 <= len(h) <= 8 for h in cv.histories.values())
    seeded = exp.transfer_runs(make(), make, {"T": (torch.from_numpy(x), y, folds)}, config, 2, n_classes=2,
                               seeds=[3, 4])
    scratch = seeded["T"]["from scratch"].predictions
    assert len(scratch) == 16 and sorted(scratch["seed"].unique()) == [3, 4]  # 2 folds of 4 cells, 2 seeds
    same_cells = [sorted(part["row"]) for _, part in scratch.groupby("seed")]
    assert same_cells[0] == same_cells[1]


def test_mixed_set_accuracy_scores_real_and_generated_cells_together() -> None:
    real_y = np.repeat(np.arange(5), 20)  # 100 real cells, 20 per class
    fake_y = np.repeat(np.arange(5), 30)  # 150 generated cells
    real_pred = real_y.copy()  # every real cell right ...
    fake_pred = (fake_y + 1) % 5  # ... every generated cell wrong
    acc, (lo, hi), n = exp.mixed_set_accuracy(real_y, real_pred, fake_y, fake_pred, per_set=50, seed=0)
    assert n == 100 and acc == pytest.approx(0.5)  # 50 right of 50 real, 0 of 50 generated
    assert lo < 0.5 < hi
    acc, _, n = exp.mixed_set_accuracy(real_y, real_pred, fake_y, fake_y, per_set=10)
    assert n == 20 and acc == 1.0


def test_wnet_data_sets_describe_every_model_and_pass_the_leak_check() -> None:
    from wbcstudy.data.leaks import shared_images

    sets = exp.wnet_data_sets("fold5", [0, 1], [0, 1, 2], 0, {"zheng2": [0, 1], "bccd": [3]})
    assert sorted(sets) == ["dcgan_judge_synthetic", "pbc5_fold5_0", "pbc5_fold5_1", "pbc5_fold5_2",
                            "transfer_bccd_fold3", "transfer_zheng2_fold0", "transfer_zheng2_fold1"]
    assert sets["transfer_zheng2_fold1"]["eval"] == {"zheng2 fold5 1": [{"manifest": "zheng2",
                                                                         "where": {"fold5": ["1"]}}]}
    assert shared_images(sets) == []
    # a fold model described as training on its own fold is caught
    planted = {"pbc5_fold5_0": {"train": [{"manifest": "pbc5"}], "eval": sets["pbc5_fold5_0"]["eval"]}}
    (leak,) = shared_images(planted)
    assert leak["model"] == "pbc5_fold5_0" and leak["shared"] > 1000
