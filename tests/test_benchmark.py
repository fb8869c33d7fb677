"""The summary's benchmark: the model store, the measurements on hand-made models, the image sets and the registry."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wbcstudy.benchmark import METHODS, measure
from wbcstudy.benchmark.base import WBC5, BenchmarkModel
from wbcstudy.benchmark.classifiers import FACTORY, classifier_predictors
from wbcstudy.benchmark.store import load_model, load_or_train, model_path, stored_mismatch


def hand_model(predict, size: int = 8, key: str = "hand", anomaly_score=None) -> BenchmarkModel:
    return BenchmarkModel(key, "hand-made", "none", size, "none", predict, 1.5, True, anomaly_score=anomaly_score)


# --------------------------------------------------------------------------------------------------------- store
class TinyTrainer:
    """A train function that builds a tiny linear classifier on 8-px images and counts its calls."""

    def __init__(self, parameters: dict) -> None:
        self.calls, self.parameters = 0, parameters

    def __call__(self, profile: str, seed: int = 0, precision: str = "auto") -> BenchmarkModel:
        from wbcstudy.models import with_input_adapter

        self.calls += 1
        torch.manual_seed(seed + self.calls)
        net = with_input_adapter(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, len(WBC5))), [0.5] * 3, [0.25] * 3)
        meta = {"key": "tiny", "image_size": 8}
        history = pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.625]})
        model = BenchmarkModel("tiny", "Tiny", "wnet", 8, "none", classifier_predictors(net, meta, "fp32")[0], 0.0,
                               False, dict(self.parameters), history, "a note", module=net, factory=FACTORY)
        return model


def test_store_round_trip_and_retraining(tmp_path):
    lines: list[str] = []
    trainer = TinyTrainer({"lr": 0.1})
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    first = load_or_train("tiny", "smoke", trainer, seed=3, precision="fp32", root=tmp_path, parameters={"lr": 0.1},
                          log=lines.append)
    assert trainer.calls == 1 and model_path("tiny", "smoke", tmp_path).is_file()
    again = load_or_train("tiny", "smoke", trainer, seed=3, precision="fp32", root=tmp_path, parameters={"lr": 0.1},
                          log=lines.append)
    assert trainer.calls == 1  # served from the store
    np.testing.assert_array_equal(first.predict(images), again.predict(images))
    for name in ("key", "name", "chapter", "image_size", "crop", "train_seconds", "plateau", "parameters", "note",
                 "factory"):
        assert getattr(again, name) == getattr(first, name), name
    assert first.train_seconds > 0  # the store's wall-clock of the training call
    pd.testing.assert_frame_equal(again.history, first.history)
    # changed parameters, another seed, a forced retrain: trained anew, and the reason is said
    load_or_train("tiny", "smoke", trainer, seed=3, precision="fp32", root=tmp_path, parameters={"lr": 0.2},
                  log=lines.append)
    assert trainer.calls == 2 and "parameters changed (lr: 0.1 -> 0.2)" in lines[-2]
    load_or_train("tiny", "smoke", trainer, seed=4, precision="fp32", root=tmp_path, parameters={"lr": 0.2},
                  log=lines.append)
    assert trainer.calls == 3 and "seed 3, not 4" in lines[-2]


def _stored_tiny(tmp_path) -> tuple[list[str], TinyTrainer, Path, dict]:
    """A tiny model trained and stored once: the log lines, its trainer, its path and its stored payload."""
    lines: list[str] = []
    trainer = TinyTrainer({"lr": 0.1})
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1}, precision="fp32", log=lines.append)
    path = model_path("tiny", "smoke", tmp_path)
    return lines, trainer, path, torch.load(path, weights_only=False)


def test_store_refuses_corrupt_and_changed_files(tmp_path):
    lines, trainer, path, payload = _stored_tiny(tmp_path)
    # weights changed behind the store's back: the probe predictions no longer match
    with torch.no_grad():
        payload["module"][1][1].weight[0].add_(1.0)  # (a shift of every row would leave the softmax as it is)
    torch.save(payload, path)
    with pytest.raises(ValueError, match="predicts the probe images differently"):
        load_model(path, precision="fp32")
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1}, precision="fp32", log=lines.append)
    assert trainer.calls == 2 and "probe images differently" in lines[-2]
    path.write_bytes(b"not a model")
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1}, precision="fp32", log=lines.append)
    assert trainer.calls == 3 and "cannot be read" in lines[-2]


def test_a_format_1_file_is_read_with_its_recipe_as_parameters(tmp_path):
    lines, trainer, path, payload = _stored_tiny(tmp_path)
    payload["format"], payload["meta"]["recipe"] = 1, payload["meta"].pop("parameters")  # as format 1 wrote it
    torch.save(payload, path)
    model = load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1, "other": 3},
                          precision="fp32", log=lines.append)
    assert trainer.calls == 1 and model.parameters == {"lr": 0.1} and "loaded from" in lines[-1]
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.2}, precision="fp32", log=lines.append)
    assert trainer.calls == 2 and "lr: 0.1 -> 0.2" in lines[-2]
    payload["format"] = 7
    torch.save(payload, path)
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.2}, precision="fp32", log=lines.append)
    assert trainer.calls == 3 and "format 1 or 2" in lines[-2]


def test_stored_mismatch_compares_the_stored_parameter_keys():
    meta = {"key": "k", "profile": "cpu", "seed": 0, "chapter": "wnet", "parameters": {"a": 1, "b": 2}}
    assert stored_mismatch(meta, "k", "cpu", 0, {"a": 1, "b": 2, "unused": 9}) is None
    assert "b: 2 -> 3" in stored_mismatch(meta, "k", "cpu", 0, {"a": 1, "b": 3})
    assert "(gone)" in stored_mismatch(meta, "k", "cpu", 0, {"a": 1})
    assert "profile" in stored_mismatch(meta, "k", "smoke", 0, {"a": 1, "b": 2})
    hemax = {**meta, "key": "hemax"}  # stored before its adapter's revision 2 (no Zheng, no BCCD): retrained
    assert "revision 1 -> 2" in stored_mismatch(hemax, "hemax", "cpu", 0, {"a": 1, "b": 2})
    assert stored_mismatch({**hemax, "revision": 2}, "hemax", "cpu", 0, {"a": 1, "b": 2}) is None


def test_classifier_predictors_refuse_another_resolution():
    from wbcstudy.models import with_input_adapter

    net = with_input_adapter(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)), [0.5] * 3, [0.25] * 3)
    predict, anomaly_score = classifier_predictors(net, {"key": "tiny", "image_size": 8}, "fp32")
    probs = predict(np.zeros((3, 8, 8, 3), dtype=np.uint8))
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1) and anomaly_score is None
    with pytest.raises(ValueError, match="8, 8, 3"):
        predict(np.zeros((3, 16, 16, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------ measurements
def test_classification_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    pred = np.array([0, 1, 1, 1, 2, 3, 4, 0])
    top = np.array([0.9, 0.6, 0.8, 0.7, 0.95, 0.55, 0.65, 0.85])
    probs = np.full((8, 5), 0.0)
    for i, (p, t) in enumerate(zip(pred, top)):
        probs[i] = (1 - t) / 4
        probs[i, p] = t
    model = hand_model(lambda x: probs)
    metrics, ci, out = measure.classification(model, np.zeros((8, 8, 8, 3), np.uint8), y, n_boot=200, seed=0)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1 + 1 + 0.5) / 5)
    # F1 per class: 0: P 1/2 R 1/2; 1: P 2/3 R 1; 2, 3: 1; 4: P 1 R 1/2
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 1.0, 1.0, 2 * 0.5 / 1.5]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    # 15 bins of width 1/15: every confidence in its own bin except 0.85 and 0.9 (bin 12, (0.8, 0.8667] and 13)
    correct = (pred == y).astype(float)
    bins = np.clip(np.ceil(top * 15).astype(int) - 1, 0, 14)
    ece = sum(abs(correct[bins == b].sum() - top[bins == b].sum()) for b in np.unique(bins)) / 8
    assert metrics["ece"] == pytest.approx(ece)
    assert metrics["n"] == 8 and np.array_equal(out, probs)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "ece"):
        assert ci[name][0] <= metrics[name] <= ci[name][1]


def test_calibration_interval_matches_the_evaluate_ece_per_resample():
    from wbcstudy.evaluate import expected_calibration_error
    from wbcstudy.intervals import percentile_interval, resample_indices

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 60)
    probs = rng.dirichlet(np.ones(5), 60)
    value, (low, high) = measure.calibration_interval(y, probs, n_boot=40, seed=2)
    assert value == pytest.approx(expected_calibration_error(y, probs, labels=list(range(5))))
    idx = resample_indices(60, 40, 2, y)
    boot = [expected_calibration_error(y[i], probs[i], labels=list(range(5))) for i in idx]
    lo, hi = percentile_interval(boot)
    assert low == pytest.approx(min(lo, value)) and high == pytest.approx(max(hi, value))


def brightness_model(size: int = 8, seen: list | None = None) -> BenchmarkModel:
    """Class 1 when the image's mean grey level is above 128, else class 0; records the shapes it is given."""

    def predict(images):
        if seen is not None:
            seen.append(np.shape(images))
        bright = np.asarray(images, dtype=float).mean(axis=(1, 2, 3)) > 128
        probs = np.zeros((len(images), 5))
        probs[np.arange(len(images)), bright.astype(int)] = 1.0
        return probs

    return hand_model(predict, size)


def test_robustness_perturbs_at_the_model_resolution():
    seen: list = []
    model = brightness_model(8, seen)
    images = np.full((20, 8, 8, 3), 120, dtype=np.uint8)
    y = np.zeros(20, dtype=np.int64)
    table, metrics, ci = measure.robustness(model, images, y, limit=10, seed=0, n_boot=100)
    assert all(shape[1:] == (8, 8, 3) for shape in seen)
    assert {shape[0] for shape in seen} == {10}  # the stratified subset, every call
    row = lambda p, level: table[(table.perturbation == p) & (table.level == level)].iloc[0]  # noqa: E731
    assert row("brightness", 1.0).accuracy == 1.0 and row("brightness", 1.3).accuracy == 0.0  # 120 × 1.3 = 156
    assert row("brightness", 0.6).accuracy == 1.0 and row("gaussian_blur", 9).accuracy == 1.0  # flat images stay flat
    assert metrics["clean_accuracy"] == 1.0
    assert (metrics["brightness13_minus_clean_accuracy"] == -1.0
            and ci["brightness13_minus_clean_accuracy"] == [-1.0, -1.0])
    assert metrics["blur5_minus_clean_accuracy"] == 0.0
    assert row("brightness", 1.3).ci_high < 0.35  # Wilson interval of 0 of 10
    with pytest.raises(ValueError, match="works at 8 px"):
        measure.robustness(model, np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, np.int64))


def test_fixed_subset_is_stratified_and_nested():
    y = np.repeat(np.arange(5), [10, 20, 30, 40, 100])
    small, large = measure.fixed_subset(y, 40, seed=3), measure.fixed_subset(y, 100, seed=3)
    assert set(small) <= set(large)
    assert np.bincount(y[small], minlength=5).tolist() == [2, 4, 6, 8, 20]
    assert np.array_equal(measure.fixed_subset(y, 0), np.arange(len(y)))
    assert np.array_equal(small, measure.fixed_subset(y.copy(), 40, seed=3))


def test_auroc_and_anomaly_on_a_hand_case(monkeypatch):
    assert measure.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert measure.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # anomalies: class 0 scores 5 and 7 (above every normal cell), class 1 scores 2 and 0 (one in the middle, one below)
    anomalous = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (5, 7, 2, 0)])
    monkeypatch.setattr(measure, "benchmark_images",
                        lambda manifest, split, size, crop="none", classes=WBC5: (anomalous, np.array([0, 0, 1, 1])))
    model = hand_model(lambda x: None, anomaly_score=lambda x: np.asarray(x, float).mean(axis=(1, 2, 3)))
    normal = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (1, 3, 4)])
    table, metrics, ci = measure.anomaly(model, normal, n_boot=50, classes=["erythroblast", "ig"])
    assert metrics["anomaly_erythroblast_auroc"] == pytest.approx(1.0)
    assert metrics["anomaly_ig_auroc"] == pytest.approx(1 / 6)  # 2 beats 1; 0 beats nothing
    assert metrics["anomaly_auroc"] == pytest.approx((6 + 1) / 12)
    assert table["anomalous cells"].tolist() == [2, 2, 4]
    for key, value in metrics.items():
        assert ci[key][0] <= value <= ci[key][1]


def test_latency_is_per_image_and_restores_threads():
    before = torch.get_num_threads()
    model = hand_model(lambda x: time.sleep(0.02) or np.zeros((len(x), 5)))
    ms = measure.latency_ms_per_image(model, np.zeros((10, 8, 8, 3), np.uint8), threads=1, warmup=2)
    assert 1.5 <= ms <= 10  # one 20 ms call for 10 images (plus overhead)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------------ image sets
def _data_available() -> bool:
    from wbcstudy.data.sources import locate

    try:
        locate("zheng2018")
        locate("bccd")
    except Exception:  # noqa: BLE001 - any missing dataset skips the test
        return False
    return True


@pytest.mark.skipif(not _data_available(), reason="Zheng 2018 and BCCD are not in the data root")
def test_shift_sets_are_restricted_to_wbc5():
    from wbcstudy.data import load_manifest

    frame = load_manifest("bccd")
    usable = frame[frame["usable"] == 1]
    x, y = measure.benchmark_images("bccd", None, 32)
    assert len(y) == int(usable["subtype"].isin(WBC5).sum()) and set(np.unique(y)) <= set(range(5))
    zheng = load_manifest("zheng1")
    x1, y1 = measure.benchmark_images("zheng1", None, 32, crop="wnet")  # PBC's crops do not apply: read uncropped
    assert x1.shape == (int(zheng["label"].isin(WBC5).sum()), 32, 32, 3)
    assert np.array_equal(y1, zheng.loc[zheng["label"].isin(WBC5), "label"].map(WBC5.index).to_numpy())
    assert x1 is measure.benchmark_images("zheng1", None, 32)[0]  # one decode per (set, size, crop)
    assert not x1.flags.writeable
    table, metrics, ci, predictions = measure.shift_scores(brightness_model(32), n_boot=20, limit=30)
    assert all(25 <= n <= 35 for n in table["n"])  # about 30 cells per set, stratified
    assert set(metrics) == {f"{s}_{m}" for s in ("zheng1", "zheng2", "bccd")
                            for m in ("accuracy", "balanced_accuracy", "chance", "majority_rate")}
    assert set(predictions) == {(s, "as_is") for s in ("zheng1", "zheng2", "bccd")}
    y, pred = predictions[("zheng1", "as_is")]
    assert metrics["zheng1_chance"] == 0.2 and metrics["zheng1_majority_rate"] == np.bincount(y).max() / len(y)
    assert set(pred) <= {0, 1}  # the brightness model names class 0 or 1


@pytest.mark.skipif(not _data_available(), reason="Zheng 2018 and BCCD are not in the data root")
def test_shift_variants_score_the_same_cells_and_split_the_drop():
    from sklearn.metrics import balanced_accuracy_score

    sets = {"zheng2": measure.SHIFT_SETS["zheng2"]}
    table, metrics, ci, predictions = measure.shift_scores(brightness_model(32), n_boot=50, limit=40, sets=sets,
                                                           variants=("as_is", "matched", "stainnorm"))
    assert list(table.index.get_level_values("variant")) == ["as is", "scale-matched",
                                                             "scale-matched, stain-normalised (Reinhard)"]
    assert table["n"].nunique() == 1
    ys = [predictions[("zheng2", v)][0] for v in ("as_is", "matched", "stainnorm")]
    assert all(np.array_equal(ys[0], other) for other in ys[1:])  # the same cells in every variant
    ba = {v: balanced_accuracy_score(*predictions[("zheng2", v)]) for v in ("as_is", "matched", "stainnorm")}
    assert metrics["zheng2_matched_balanced_accuracy"] == pytest.approx(ba["matched"])
    assert metrics["zheng2_matched_minus_as_is_balanced_accuracy"] == pytest.approx(ba["matched"] - ba["as_is"])
    assert metrics["zheng2_stainnorm_minus_matched_balanced_accuracy"] == pytest.approx(ba["stainnorm"] - ba["matched"])
    for key in ("zheng2_matched_minus_as_is_balanced_accuracy", "zheng2_stainnorm_balanced_accuracy"):
        assert ci[key][0] <= metrics[key] <= ci[key][1]
    with pytest.raises(ValueError, match="unknown shift-set variant"):
        measure.shift_scores(brightness_model(32), sets=sets, variants=("scaled",))


def test_registry_lists_the_seven_methods_in_order():
    assert list(METHODS) == ["wnet", "trust_cnn", "resnext_cc", "hemax", "cytodiffusion", "resnet18",
                             "efficientnet_lite0"]
    assert all(callable(fn) for fn in METHODS.values())


@pytest.mark.skipif(not _data_available(), reason="Zheng 2018 and BCCD are not in the data root")
def test_run_benchmark_scores_one_model_on_the_fixed_cells():
    result = measure.run_benchmark(brightness_model(32, []), n_boot=20, test_limit=50, robust_limit=20, shift_limit=10,
                                   anomaly_limit=10, latency_limit=8, threads=1)
    x, y = measure.test_cells(32)
    assert len(y) == 1028 and np.array_equal(result.rows, measure.fixed_subset(y, 50, 0))
    assert result.metrics["hand_n"] == len(result.rows) == len(result.probs)
    for key in ("hand_balanced_accuracy", "hand_ece", "hand_blur5_minus_clean_accuracy",
                "hand_zheng2_balanced_accuracy", "hand_anomaly_auroc", "hand_ms_per_image", "hand_train_seconds"):
        assert key in result.metrics
    assert result.metrics["hand_train_seconds"] == 1.5
    assert (set(result.robustness["n"]) == {len(measure.fixed_subset(y, 20, 0))}
            and set(result.robustness["model"]) == {"hand-made"})
    for key, (low, high) in result.ci.items():
        assert low <= result.metrics[key] <= high, key


def test_store_serves_a_model_saved_under_another_precision(tmp_path):
    trainer = TinyTrainer({"lr": 0.1})
    load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1}, precision="bf16", log=None)
    model = load_or_train("tiny", "smoke", trainer, root=tmp_path, parameters={"lr": 0.1}, precision="fp32", log=None)
    assert trainer.calls == 1 and model.predict(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 5)


# ---------------------------------------------------------------------------------------------- the summary's tables
def _result(key: str, rows: list[int], pred: list[int]) -> measure.BenchmarkResult:
    probs = np.full((len(rows), len(WBC5)), 0.01)
    probs[np.arange(len(rows)), pred] = 0.96
    return measure.BenchmarkResult(key, {}, {}, np.array(rows), probs, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


def test_difference_to_best_pairs_the_cells_both_models_scored(monkeypatch):
    y = np.array([0, 0, 1, 1, 2, 2])
    monkeypatch.setattr(measure, "test_labels", lambda: y)
    best = _result("best", [0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 2])  # all right
    # scored on 3 of the cells only (a nested subset): wrong on cell 2 -> recall 1, 0, 1 on classes 0, 1, 2
    slow = _result("slow", [0, 2, 4], [0, 2, 2])
    diff, ci, cells = measure.difference_to_best({"best": best, "slow": slow}, "best", n_boot=200)
    assert cells == {"slow": 3}
    assert diff["slow"] == pytest.approx(2 / 3 - 1.0)
    assert ci["slow"][0] <= diff["slow"] <= ci["slow"][1] <= 0.0


def test_summary_table_reads_each_models_prefixed_metrics():
    model = hand_model(lambda x: None, key="k")
    names = ("n", "accuracy", "balanced_accuracy", "macro_f1", "ece", "ms_per_image", "train_seconds")
    metrics = {f"k_{n}": v for n, v in zip(names, (10, 0.9, 0.8, 0.7, 0.05, 1.25, 12.0))}
    result = measure.BenchmarkResult("k", metrics, {"k_balanced_accuracy": [0.7, 0.9]}, np.arange(10),
                                     np.zeros((10, 5)), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    row = measure.summary_table({"k": model}, {"k": result}).loc["hand-made"]
    assert (row["test cells"], row["balanced accuracy"], row["ci_low"], row["ci_high"]) == (10, 0.8, 0.7, 0.9)
    assert (row["ECE"], row["ms per image"], row["training (s)"], row["plateau"]) == (0.05, 1.25, 12.0, True)


def test_readme_levels_only_is_the_clean_images_and_the_readmes_settings():
    from wbcstudy.explain import IDENTITY_LEVELS, README_LEVELS

    assert measure.README_LEVELS_ONLY == {k: [IDENTITY_LEVELS[k], README_LEVELS[k]] for k in README_LEVELS}
    for name, levels in measure.README_LEVELS_ONLY.items():
        assert set(levels) <= set(measure.LEVELS[name])  # a subset of the full sweep: the same conditions
    from wbcstudy.explain import PERTURBATIONS, SWEEP_LEVELS

    assert measure.LEVELS is SWEEP_LEVELS and set(SWEEP_LEVELS) == set(PERTURBATIONS)  # the trust chapter's one sweep
    assert all(levels == sorted(levels) for levels in SWEEP_LEVELS.values())  # increasing, as the curves are drawn


def test_curve_column_prefers_validation_balanced_accuracy_then_loss():
    from wbcstudy.benchmark.figures import curve_column

    assert (curve_column(pd.DataFrame(columns=["epoch", "val_accuracy", "val_balanced_accuracy"]))[0]
            == "val_balanced_accuracy")
    assert curve_column(pd.DataFrame(columns=["step", "loss"])) == ("loss", "training loss")
    with pytest.raises(ValueError, match="has none of"):
        curve_column(pd.DataFrame(columns=["epoch"]))


def test_latency_warm_up_is_another_batch_than_the_timed_one():
    seen: list[bytes] = []

    def predict(x):
        seen.append(np.asarray(x).tobytes())
        return np.full((len(x), len(WBC5)), 0.2)

    images = np.arange(4 * 8 * 8 * 3, dtype=np.int64).reshape(4, 8, 8, 3).astype(np.uint8)
    measure.latency_ms_per_image(hand_model(predict), images, threads=1, warmup=64)
    assert len(seen) == 2 and seen[0] != seen[1] and seen[1] == images.tobytes()


@pytest.mark.skipif(not _data_available(), reason="Zheng 2018 and BCCD are not in the data root")
def test_shift_decomposition_and_below_chance_read_the_same_predictions():
    from sklearn.metrics import balanced_accuracy_score

    result = measure.run_benchmark(brightness_model(32, []), n_boot=30, test_limit=50, robust_limit=10,
                                   shift_limit=20, anomaly_limit=10, latency_limit=4, threads=1,
                                   shift_variants=("as_is", "matched", "stainnorm"))
    parts = measure.shift_decomposition(result, "hand-made", n_boot=30)
    assert list(parts["test set"]) == [t for _, t in measure.SHIFT_SETS.values()]
    own = balanced_accuracy_score(measure.test_labels()[result.rows], result.probs.argmax(1))
    for (_, row), (part, _) in zip(parts.iterrows(), measure.SHIFT_SETS.values()):
        ba = {v: balanced_accuracy_score(*result.shift_predictions[(part, v)]) for v in ("as_is", "matched",
                                                                                        "stainnorm")}
        assert row["PBC"] == pytest.approx(own) and row["rest"] == pytest.approx(own - ba["stainnorm"])
        assert row["scale"] == pytest.approx(ba["matched"] - ba["as_is"])
        assert row["stain"] == pytest.approx(ba["stainnorm"] - ba["matched"])
        assert row["stain CI"][0] <= row["stain"] <= row["stain CI"][1]
        assert row["rest CI"][0] <= row["rest"] <= row["rest CI"][1]
    with pytest.raises(ValueError, match="needs all three variants"):
        measure.shift_decomposition(measure.run_benchmark(brightness_model(32, []), n_boot=10, test_limit=20,
                                                          robust_limit=5, shift_limit=10, anomaly_limit=5,
                                                          latency_limit=2, threads=1), "hand-made")


def test_benchmark_data_sets_pass_the_leak_check_and_a_planted_overlap_fails():
    from wbcstudy.benchmark.paper_models import benchmark_data_sets
    from wbcstudy.data.leaks import shared_images

    sets = benchmark_data_sets(list(METHODS))
    assert set(sets) == set(METHODS) and shared_images(sets) == []
    assert "Zheng Dataset 1" in sets["hemax"]["eval"]
    planted = {"hemax": {**sets["hemax"], "train": sets["hemax"]["train"] + [{"manifest": "zheng1"}]}}
    (leak,) = shared_images(planted)  # HemaX's chapter data (with Zheng 1) scored on Zheng 1: refused
    assert leak["model"] == "hemax" and leak["eval"] == "Zheng Dataset 1"


def test_below_chance_lists_systematic_confusions_and_only_them():
    y = np.repeat(np.arange(5), 10)
    wrong = (y + 1) % 5  # every cell called the next class: balanced accuracy 0
    wrong[:3] = 0  # three basophils right: recall 0.3 for one class, 0.06 in all
    one_class = np.full(50, 4)  # neutrophil for every cell: exactly chance, not below
    right = y.copy()
    empty = pd.DataFrame()
    result = measure.BenchmarkResult("m", {}, {}, np.arange(0), np.zeros((0, 5)), empty, empty, empty,
                                     shift_predictions={("zheng1", "as_is"): (y, wrong),
                                                        ("zheng1", "matched"): (y, one_class),
                                                        ("bccd", "stainnorm"): (y, right)})
    low = measure.below_chance({"m": result}, {"m": "model M"})
    assert len(low) == 1
    row = low.iloc[0]
    assert (row["model"], row["test set"], row["variant"]) == ("model M", "Zheng Dataset 1", "as is")
    assert row["balanced accuracy"] == pytest.approx(0.06) and row["chance"] == 0.2
    # the commonest prediction: basophil (3 right + the 10 neutrophils called basophil) for 13 of 50 cells
    assert row["most named"] == "basophil" and row["share named so"] == pytest.approx(13 / 50)
