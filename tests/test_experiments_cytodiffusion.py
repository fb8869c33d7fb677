"""Tests for wbcstudy.experiments.cytodiffusion: hand-computable metrics and intervals, the weighting choice, the
Turing-test substitutes, segmented (resumed) training, and the experiment loops on tiny synthetic data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from wbcstudy.diffusion_classifier import PAPER_POLY4
from wbcstudy.experiments import cytodiffusion as cd
from wbcstudy.intervals import wilson

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = cd.DiffusionModelConfig(image_size=8, unet_channels=(8, 16), batch_size=8, lr=3e-3, warmup_steps=2,
                               ema_decay=0.9, precision="fp32", device="cpu")
SETTINGS = cd.DiffusionClassifierConfig(max_trials=4, min_trials=2, images_per_call=4, weighting="uniform",
                                        precision="fp32")


def toy(n: int = 24, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of flat red, green and blue images with a little noise (uint8 NHWC)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = np.full((n, size, size, 3), 40, dtype=np.int16)
    images[np.arange(n), :, :, labels] = 215
    images = (images + rng.integers(-10, 11, images.shape)).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels)


def test_pool_images_averages_two_by_two_blocks() -> None:
    x = np.zeros((1, 4, 4, 3), np.uint8)
    x[0, :2, :2] = [10, 20, 30]
    x[0, 0, 0] = [11, 20, 31]  # block mean (11+10+10+10)/4 = 10.25 → 10, (31+30+30+30)/4 = 30.25 → 30
    x[0, 2:, 2:] = 255
    out = cd.pool_images(x, 2)
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, 0, 0].tolist() == [10, 20, 30] and out[0, 1, 1].tolist() == [255, 255, 255]
    assert out[0, 0, 1].tolist() == [0, 0, 0]
    assert torch.equal(cd.pool_images(x, 4), torch.from_numpy(x))  # already that size
    with pytest.raises(ValueError, match="uint8 NHWC"):
        cd.pool_images(x.astype(np.float32), 2)


def test_pooled_balanced_accuracy_and_its_interval() -> None:
    y_parts = [np.array([0, 0, 1, 1]), np.array([0, 1])]
    pred_parts = [np.array([0, 1, 1, 1]), np.array([0, 1])]
    value, (low, high) = cd.balanced_accuracy_with_ci(y_parts, pred_parts, 2, n_boot=200, seed=0)
    assert value == pytest.approx((2 / 3 + 1) / 2)  # class 0: 2 of 3 right, class 1: 3 of 3
    assert 0 <= low <= value <= high <= 1


def test_paired_difference_hand_values() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect, all_zero = y.copy(), np.zeros(6, int)
    diff, interval = cd.metric_difference(balanced_accuracy_score, y, perfect, all_zero, n_boot=100)
    assert diff == pytest.approx(1 - 1 / 3)
    assert interval == pytest.approx((2 / 3, 2 / 3))  # class-stratified resamples: both scores are fixed
    assert cd.metric_difference(balanced_accuracy_score, y, perfect, perfect, n_boot=50) == (0.0, (0.0, 0.0))


def test_indomain_comparison_picks_the_best_baseline_and_pairs_the_difference() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    baselines = {"a": np.array([0, 0, 1, 1, 2, 0]), "b": np.array([0, 1, 1, 0, 2, 2])}
    metrics, ci, best = cd.indomain_comparison(y, y.copy(), baselines, 3, n_boot=100)
    assert best == "a"
    assert metrics["baseline_a_indomain_balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["baseline_b_indomain_balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert metrics["baseline_indomain_accuracy"] == pytest.approx(5 / 6)
    assert metrics["indomain_balanced_accuracy"] == 1.0
    assert metrics["indomain_balanced_accuracy_difference"] == pytest.approx(1 - 2.5 / 3)
    assert ci["baseline_indomain_balanced_accuracy"] == ci["baseline_a_indomain_balanced_accuracy"]
    low, high = ci["indomain_balanced_accuracy_difference"]
    assert 0 <= low <= 1 - 2.5 / 3 <= high


def test_anomaly_comparison_auc_of_low_confidence() -> None:
    flag = np.array([0, 0, 0, 1, 1])
    ours = np.array([0.9, 0.8, 0.7, 0.1, 0.2])  # anomalies get the lowest confidence: AUC 1
    baseline = np.array([0.1, 0.2, 0.3, 0.9, 0.8])  # the reverse: AUC 0
    metrics, ci = cd.anomaly_comparison(flag, ours, baseline, n_boot=100)
    assert metrics == {"anomaly_auc": 1.0, "baseline_anomaly_auc": 0.0, "anomaly_auc_difference": 1.0}
    assert ci["anomaly_auc"] == (1.0, 1.0) and ci["anomaly_auc_difference"] == (1.0, 1.0)


def test_turing_substitutes() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    obvious = np.full((20, 4, 4, 3), 255, np.uint8)
    labels, judged = np.array([0, 1, 2, 0]), np.array([0, 1, 1, 0])
    metrics, ci, folds = cd.turing_substitutes(real, obvious, labels, judged)
    assert folds == 5 and metrics["c2st_accuracy"] == 1.0
    assert metrics["class_agreement"] == 0.75 and ci["class_agreement"] == wilson(3, 4)
    assert ci["c2st_accuracy"] == wilson(40, 40)
    alike = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)  # same distribution as the real ones
    assert 0.2 <= cd.turing_substitutes(real, alike, labels, judged)[0]["c2st_accuracy"] <= 0.8


def test_classification_cost_by_hand() -> None:
    def result(pred, evaluations, seconds=0.0):
        return cd.DiffusionClassification(np.array(pred), np.zeros(len(pred)), np.zeros((len(pred), 2)),
                                          np.array(evaluations), np.zeros(len(pred)), np.zeros((len(pred), 2)),
                                          np.arange(4), None, seconds)

    cost = cd.classification_cost(result([0, 1], [4, 8], seconds=0.5), result([0, 1], [8, 8]), result([0, 0], [4, 4]),
                                  n_classes=2, max_trials=4)
    assert cost == {"seconds_per_image": 0.25, "images_per_second": 4.0, "unet_evaluations_per_image_pruned": 6.0,
                    "unet_evaluations_per_image_unpruned": 8.0, "pruning_unet_call_reduction": 2.0,
                    "pruned_vs_unpruned_agreement": 0.5, "pruning_check_cells": 2.0}


def test_choose_weighting_by_validation_accuracy() -> None:
    # one label-0 image, two trials at t=998 and t=500. Uniform: shifted errors [0.5, 0] and [0, 1] → mean favours
    # class 0 (right). The paper's poly4 weights t=998 about 5x more than t=500 → favours class 1 (wrong).
    raw = np.array([[[1.0, 0.5], [0.0, 1.0]]])
    timesteps, labels = np.array([998, 500]), np.array([0])
    choice = cd.choose_weighting(raw, timesteps, labels, refitted=PAPER_POLY4)
    assert choice.validation_accuracy == {"refitted poly4": 0.0, "paper's poly4": 0.0, "uniform": 1.0}
    assert choice.name == "uniform" and choice.weighting == "uniform" and choice.refit_note == "positive on [0, 1]"
    crossing = cd.choose_weighting(raw, timesteps, labels, refitted=[-1.0, 0, 0, 0, 0])
    assert "refitted poly4" not in crossing.candidates and crossing.refit_note.startswith("not usable")
    tie = cd.choose_weighting(np.array([[[0.0, 1.0], [0.0, 1.0]]]), timesteps, labels, refitted=PAPER_POLY4)
    assert tie.name == "refitted poly4"  # equals go to the refitted, then the paper's, then uniform


def test_training_in_segments_equals_training_straight_through(tmp_path) -> None:
    x, y = toy()
    straight = cd.train_diffusion_model(x, y, 3, 4, TINY, seed=1)
    from wbcstudy.train import select_precision

    assert straight.steps_done == 4 and straight.precision == select_precision(TINY.precision, torch.device("cpu"))
    first = cd.train_diffusion_model(x, y, 3, 2, TINY, seed=1, checkpoint=tmp_path / "c.pt", stop_after_step=2,
                                     total_steps=4)
    assert first.steps_done == 2 and not first.completed
    resumed = cd.train_diffusion_model(x, y, 3, 4, TINY, seed=1, checkpoint=tmp_path / "c.pt", total_steps=4)
    for a, b in zip(straight.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_diffusion_plateau_uses_a_tolerance_relative_to_the_loss() -> None:
    from types import SimpleNamespace

    import pandas as pd

    def run(losses):
        return SimpleNamespace(history=pd.DataFrame({"loss": losses}))

    still_falling = [0.080, 0.060, 0.050, 0.045, 0.041, 0.038, 0.036]  # -5% per point: an absolute 0.01 calls it flat
    assert not cd.diffusion_plateau(run(still_falling))
    flat = [0.080, 0.050, 0.0402, 0.0400, 0.0401, 0.0399, 0.0400]  # the last three improve the best by 0.25%
    assert cd.diffusion_plateau(run(flat))
    assert not cd.diffusion_plateau(run([0.05, 0.04]))  # too short to judge


def test_scaling_run_records_each_step_count(tmp_path) -> None:
    x, y = toy()
    test = toy(6, seed=1)
    out = tmp_path / "scaling.json"
    record = cd.scaling_run((x, y), test, 3, TINY, [3, 2], seed=1, max_trials=4, report_trials=(2, 4), out_json=out)
    assert [row["steps"] for row in record["rows"]] == [2, 3]
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    from wbcstudy.train import select_precision

    assert record["test_cells"] == 6 and record["train_cells"] == 24
    assert record["precision"] == select_precision(TINY.precision, torch.device("cpu"))  # the recipe's, unless forced
    assert not (tmp_path / "scaling_checkpoint.pt").exists()
    # the last row is the straight 3-step model, classified without pruning, uniform weighting, 4 trials
    model = cd.train_diffusion_model(x, y, 3, 3, TINY, seed=1).ema_model
    res = cd.diffusion_classify(model, test[0], cd.make_scheduler(), 3, max_trials=4, prune=False, weighting="uniform",
                                images_per_call=32, seed=1)
    assert (record["rows"][-1]["balanced_accuracy_4_trials"]
            == pytest.approx(balanced_accuracy_score(test[1], res.predictions)))
    assert record["rows"][-1]["accuracy_4_trials"] == pytest.approx(float((res.predictions == test[1].numpy()).mean()))
    with pytest.raises(ValueError, match="report_trials"):
        cd.scaling_run((x, y), test, 3, TINY, [2], max_trials=4, report_trials=(40,))


def test_small_helpers_by_hand() -> None:
    assert cd.top2_logit_gap(np.array([[1.0, 3.0, 2.5], [0.0, -1.0, 4.0]])).tolist() == [0.5, 4.0]
    column = pd.Series([10, 20, 50, pd.NA, 150], dtype="Int64")
    assert cd.lowdata_subset_rows(column, 20).tolist() == [0, 1]
    assert cd.baseline_epochs_for(40, 64, 80, 2) == 32 and cd.baseline_epochs_for(3, 64, 400, 2) == 2
    with pytest.raises(ValueError, match="unknown baseline"):
        cd.build_classifier("vit", 3, toy()[0])


def test_baseline_run_records_history_and_plateau() -> None:
    x, y = toy(24, size=16)
    run = cd.train_baseline((x, y), toy(9, size=16, seed=2), 3, epochs=2, batch_size=8, precision="fp32")
    assert run.name == "resnet18" and len(run.history) == 2
    assert run.plateau is False  # two epochs cannot show a plateau (it needs window + 1 = 4 values)
    assert cd.logits(run.model, x[:5]).shape == (5, 3)


def test_restricted_helpers_by_hand() -> None:
    scores = np.array([[5.0, 1.0, 2.0, 0.5], [0.0, 3.0, -1.0, 4.0]])
    assert cd.restricted_argmax(scores, [1, 2]).tolist() == [2, 1]  # class 0 (row 0) and 3 (row 1) are not candidates
    assert cd.restricted_argmax(scores, [0, 1, 2, 3]).tolist() == [0, 3]
    assert cd.majority_rate(np.array([0, 1, 1, 1, 2])) == pytest.approx(0.6)


def test_subset_result_keeps_the_rows_and_their_share_of_the_time() -> None:
    x, y = toy(6)
    model = _tiny_trained()
    result = SETTINGS.classify(model, x, 3, seed=0, prune=False, keep_errors=True)
    part = cd.subset_result(result, np.array([1, 4]))
    assert part.predictions.tolist() == result.predictions[[1, 4]].tolist()
    assert part.raw_errors.shape == (2, 4, 3)
    assert part.seconds == pytest.approx(result.seconds * 2 / 6)  # unpruned: every cell costs the same passes


def _tiny_trained():
    x, y = toy()
    return cd.train_diffusion_model(x, y, 3, 2, TINY, seed=0).ema_model


def test_train_to_plateau_stops_when_the_gain_is_small_and_keeps_the_curve() -> None:
    x, y = toy()
    val = toy(9, seed=2)
    judge = lambda images: np.zeros(len(images), dtype=int)  # noqa: E731
    run = cd.train_to_plateau((x, y), val, 3, TINY, [2, 4, 6], SETTINGS, seed=0, eval_trials=4, min_gain=1.01,
                              judge=judge, real_images=x[:6].numpy(), samples_per_class=2, ddim_steps=2)
    # a gain of more than 1.0 in balanced accuracy is impossible: training stops at the second checkpoint
    assert run.curve["step"].tolist() == [2, 4] and run.plateau is True
    assert run.result.steps_done == 4 and run.result.history["step"].iloc[-1] == 4
    assert sorted(run.samples) == [2, 4] and run.samples[4].shape == (6, 8, 8, 3)
    assert run.curve["class_agreement"].iloc[0] == pytest.approx(1 / 3)  # the judge says class 0 for all
    assert run.turing[0]["class_agreement"] == run.curve["class_agreement"].iloc[-1]  # the last checkpoint's
    assert run.validation.raw_errors.shape == (9, 4, 3)
    straight = cd.train_diffusion_model(x, y, 3, 4, TINY, seed=0, stop_after_step=4, total_steps=6)
    for a, b in zip(run.result.ema_model.parameters(), straight.ema_model.parameters()):
        assert torch.equal(a, b)  # continued from its checkpoint = trained straight through
    never = cd.train_to_plateau((x, y), val, 3, TINY, [2, 4], SETTINGS, eval_trials=4, min_gain=-2.0,
                                samples_per_class=0)
    assert never.curve["step"].tolist() == [2, 4] and never.plateau is False  # still "gaining" at the last step
    assert never.turing is None  # no judge, no samples


def test_shift_comparison_restricts_both_models_to_the_candidates() -> None:
    x, y = toy()
    model = _tiny_trained()
    baseline = cd.train_baseline((x, y), toy(9, seed=2), 3, epochs=1, batch_size=8, precision="fp32").model
    sx, sy = toy(9, seed=3)
    keep = sy.numpy() != 2
    shifted = (sx[keep], sy.numpy()[keep])
    shift = cd.shift_comparison(model, baseline, {"shifted": shifted}, [0, 1], SETTINGS, 3, n_boot=50)
    labels, ours, base = shift.predictions["shifted"]
    assert set(ours) <= {0, 1} and set(base) <= {0, 1}
    row = shift.rows.loc["shifted"]
    assert row["n"] == keep.sum() and row["chance"] == 0.5
    assert shift.metrics["domain_shift_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, ours))
    assert shift.metrics["domain_shift_balanced_accuracy_difference"] == pytest.approx(
        row["CytoDiffusion (ours)"] - row["ResNet-18"])
    with pytest.raises(ValueError, match="outside the candidates"):
        cd.shift_comparison(model, baseline, {"all": (sx, sy.numpy())}, [0, 1], SETTINGS, 3)


def test_low_data_loop_pools_its_repeats() -> None:
    x, y = toy()
    val = toy(9, seed=2)
    shifted = toy(9, seed=3)
    low = cd.low_data(lambda size, r: (x[:3 * size], y[:3 * size]), val, shifted, 3, [2, 4], [2, 3], TINY, SETTINGS,
                      repeats=1, baseline_min_epochs=1, baseline_batch_size=8, n_boot=50)
    assert low.rows["train cells"].tolist() == [6, 12]
    assert low.rows["ResNet-18 epochs"].tolist() == [3, 2]  # ceil(2·8/6), ceil(3·8/12): the diffusion model's images
    for size, row in zip([2, 4], low.rows.itertuples()):
        assert low.metrics[f"lowdata_{size}_balanced_accuracy"] == pytest.approx(row[5])
    assert {"lowdata_2_diffusion", "lowdata_4_resnet18"} <= set(low.plateau)
    with pytest.raises(ValueError, match="step counts"):
        cd.low_data(lambda s, r: (x, y), val, shifted, 3, [2], [2, 3], TINY, SETTINGS)
