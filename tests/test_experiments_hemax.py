"""HemaX chapter procedures on tiny synthetic data with hand-computable values."""
import numpy as np
import pandas as pd
import pytest

from wbcstudy.data.hemax import ATTRIBUTES, HemaXData, attribute_codes, mask_box, zheng_split
from wbcstudy.experiments.hemax import (
    Predictions,
    attribute_auc_by_correctness,
    box_iou_cxcywh,
    faithfulness,
    hemax_metrics,
    make_targets,
    mask_dice,
    variant_table,
)


def _data(n=4, s=4):
    masks = np.zeros((2, 2, s, s), np.uint8)
    masks[0, 0, :2, :2] = 1  # cytoplasm 4 px
    masks[0, 1, 2:, 2:] = 1  # nucleus 4 px → nucleus fraction 0.5
    masks[1, 1, :, :] = 1  # all nucleus → fraction 1
    return HemaXData(images=np.zeros((n, s, s, 3), np.uint8), labels=np.array([0, 1, 1, 2]),
                     boxes=np.tile(np.array([0.5, 0.5, 0.5, 0.5], np.float32), (n, 1)),
                     has_box=np.array([True, True, False, False]), mask_index=np.array([0, 1, -1, -1]), masks=masks,
                     attributes=np.array([[-1] * 4, [-1] * 4, [0, 1, 2, 0], [1, 0, -1, 1]]),
                     nc_category=np.array([-1, -1, 0, 1]), source=np.array(["zheng", "zheng", "pbc", "pbc"]),
                     path=np.array(["a", "b", "c", "d"]))


def _pred(data, classes=(0, 1, 0, 2)):
    n, s = len(data), data.images.shape[1]
    prob = np.full((n, 5), 0.1)
    prob[np.arange(n), classes] = 0.6
    masks = np.zeros((n, 2, s, s), bool)
    masks[0, 0, :2, :2] = True  # perfect cytoplasm on cell 0
    masks[0, 1, 2:, :] = True  # nucleus 8 px vs 4 true (overlap 4) → Dice 8/12
    attr = [np.eye(k)[[0, 0, 0, 1][: n] if k == 2 else [0, 0, 2, 0]] for k in (2, 2, 3, 2)]
    boxes = np.tile(np.array([0.5, 0.5, 0.5, 0.25], np.float32), (n, 1))  # IoU with the true box: 0.5
    frac = np.array([8 / 12, np.nan, 0.3, 0.3])
    return Predictions(prob, boxes, masks, attr, frac)


def test_box_iou_and_dice_hand_values():
    a = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert box_iou_cxcywh(a, np.array([[0.5, 0.5, 0.5, 0.25]]))[0] == pytest.approx(0.5)
    assert box_iou_cxcywh(a, np.array([[0.1, 0.1, 0.1, 0.1]]))[0] == 0
    p, t = np.zeros((2, 2), bool), np.zeros((2, 2), bool)
    p[0] = True
    t[:, 0] = True
    assert mask_dice(p, t) == pytest.approx(2 * 1 / 4)
    assert mask_dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1


def test_metrics_mask_each_label():
    data = _data()
    m = hemax_metrics(_pred(data), data)
    assert m["classification_accuracy"] == pytest.approx(3 / 4)
    assert m["box_jaccard"] == pytest.approx(0.5)  # only the two boxed cells
    # cell 0: Dice cyto 1, nucleus 8/12 → mean 5/6; cell 1: predicted empty vs all-nucleus → cyto 1 (both empty),
    # nucleus 0
    assert m["mask_dice"] == pytest.approx((5 / 6 + 0.5) / 2)
    # nucleus fraction: cell 0 true 0.5 vs 8/12; cell 1 true 1 vs NaN→0
    assert m["nc_ratio_mse"] == pytest.approx(((8 / 12 - 0.5) ** 2 + 1) / 2)
    # granularity labelled on cells 2, 3: predicted 0, 1 vs true 0, 1 → 1.0; nucleus shape only cell 2: 2 vs 2
    assert m["granularity_accuracy"] == 1 and m["nucleus_shape_accuracy"] == 1
    assert m["cytoplasm_colour_accuracy"] == pytest.approx(0.0)


def test_faithfulness_total_variation():
    data = _data()
    pred = _pred(data)
    long, tv = faithfulness(pred, data)
    g = tv[(tv.attribute == "granularity")].set_index("class")["total_variation"]
    # class 1 ("eosinophil"): true cells with granularity: cell 2 (no); predicted-as-1 cells with a label: none → NaN
    assert np.isnan(g["eosinophil"])
    # class 2 ("lymphocyte"): true cell 3 (yes); predicted-as-2 cell 3 predicted yes → TV 0
    assert g["lymphocyte"] == 0
    # class 0 ("basophil"): no labelled true cells → NaN
    assert np.isnan(g["basophil"])
    assert set(long.columns) == {"class", "attribute", "category", "p_model", "p_true"}


def test_attribute_auc_by_correctness_shape():
    data = _data()
    auc = attribute_auc_by_correctness(_pred(data), data)
    assert len(auc) == sum(len(c) for c in ATTRIBUTES.values())
    assert auc["n_correct"].iloc[0] == 1 and auc["n_wrong"].iloc[0] == 1  # cell 3 correct, cell 2 wrong


def test_make_targets_flip():
    data = _data()
    images, tg = make_targets(data, np.array([0, 2]), flip_h=np.array([True, False]), flip_v=None)
    assert tg.masks.shape == (2, 1, 2, 4, 4) and tg.has_mask.tolist() == [True, False]
    assert tg.masks[0, 0, 0, :2, 2:].sum() == 4  # cytoplasm moved to the right half
    assert tg.boxes[0, 0, 0].item() == pytest.approx(0.5)  # centred box stays centred


def test_attribute_mapping_and_boxes():
    df = pd.DataFrame({"granularity": ["yes", "no"], "cytoplasm_colour": ["light blue", "purple blue"],
                       "nucleus_shape": ["unsegmented-indented", "irregular"], "cell_size": ["big", "small"]})
    assert attribute_codes(df).tolist() == [[1, 0, 0, 1], [0, 1, -1, 0]]
    m = np.zeros((10, 10))
    m[2:6, 4:8] = 1
    assert mask_box(m).tolist() == pytest.approx([0.6, 0.4, 0.4, 0.4])
    assert zheng_split(pd.Series([0, 1, 2, 4])).tolist() == ["test", "val", "train", "train"]


def test_variant_table_mean_sd():
    metrics = pd.DataFrame({"hidden_layers": [0, 0, 2], "seed": [0, 1, 0], "classification_accuracy": [0.5, 0.7, 0.9],
                            "seconds": [1, 1, 1]})
    t = variant_table(metrics)
    assert t.loc["classification_accuracy", 0] == "0.6000 ± 0.1414" and t.loc["classification_accuracy", 2] == "0.9000"


def test_training_stops_once_the_validation_loss_levels_off(monkeypatch):
    """train_hemax stops at the first epoch where reached_plateau holds on the validation loss, and keeps the best
    epoch."""
    import torch

    from wbcstudy.experiments import hemax as ex

    losses = iter([3.0, 2.0, 1.50, 1.49, 1.495, 1.52, 1.0, 0.5])  # levelled off after epoch 5 (tol 0.02)
    monkeypatch.setattr(ex, "_evaluate", lambda *a, **k: ({"loss": next(losses)}, None))
    monkeypatch.setattr(ex, "hemax_metrics", lambda *a, **k: {"classification_accuracy": 0.5, "box_jaccard": 0.5,
                                                               "mask_dice": 0.5, "classification_f1": 0.5,
                                                               **{f"{n}_accuracy": 0.5 for n in ATTRIBUTES}})
    data = _data(s=32)
    cfg = ex.HemaXConfig(d_model=32, nheads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64, num_queries=2,
                         mask_dim=8,
                         fpn_dim=16, epochs=8, batch_size=4, precision="fp32", train_backbone=False, image_size=32)
    torch.manual_seed(0)
    run = ex.train_hemax(data, data, cfg)
    assert run.history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert run.best_epoch == 4
    no_stop = ex.train_hemax(data, data, ex.dataclasses.replace(cfg, stop_at_plateau=False, epochs=2))
    assert len(no_stop.history) == 2
    assert run.history["lr"].tolist() == [cfg.lr] * 6  # constant without lr_drop
    losses = iter([3.0, 2.0, 1.0])
    dropped = ex.train_hemax(data, data, ex.dataclasses.replace(cfg, stop_at_plateau=False, epochs=3, lr_drop=2))
    assert dropped.history["lr"].tolist() == pytest.approx([cfg.lr, cfg.lr, cfg.lr / 10])  # DETR's StepLR
    # patience: no better validation loss for 2 epochs after epoch 3 stops at 5, unless min_epochs holds it longer
    losses = iter([3.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0])
    patient = ex.train_hemax(data, data, ex.dataclasses.replace(cfg, stop_at_plateau=False, patience=2))
    assert patient.history["epoch"].tolist() == [1, 2, 3, 4, 5] and patient.best_epoch == 3
    losses = iter([3.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0])
    waited = ex.train_hemax(data, data, ex.dataclasses.replace(cfg, stop_at_plateau=False, patience=2, min_epochs=7))
    assert len(waited.history) == 7 and waited.best_epoch == 3


def test_attribute_aucs_over_seeds_average_the_runs_and_bracket_them():
    from wbcstudy.experiments.hemax import attribute_auc_by_attribute, attribute_auc_over_seeds

    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 5, n)
    attributes = np.stack([rng.integers(0, k, n) for k in (2, 2, 3, 2)], 1)
    prob = np.eye(5)[np.where(rng.random(n) < 0.7, labels, (labels + 1) % 5)]  # 70 % correct
    attr_prob = [np.clip(np.eye(k)[attributes[:, a]] * 0.6 + rng.random((n, k)) * 0.4, 0, 1)
                 for a, k in enumerate((2, 2, 3, 2))]  # informative attribute scores
    noise = [rng.random((n, k)) for k in (2, 2, 3, 2)]  # a second run whose attribute scores are noise
    pred = Predictions(prob, np.zeros((n, 4)), np.zeros((n, 2, 1, 1), bool), attr_prob, np.zeros(n))
    blind = Predictions(prob, np.zeros((n, 4)), np.zeros((n, 2, 1, 1), bool), noise, np.zeros(n))
    data = HemaXData(images=np.zeros((n, 1, 1, 3), np.uint8), labels=labels, boxes=np.zeros((n, 4), np.float32),
                     has_box=np.zeros(n, bool), mask_index=np.full(n, -1), masks=np.zeros((0, 2, 1, 1), np.uint8),
                     attributes=attributes, nc_category=np.full(n, -1), source=np.array(["pbc"] * n),
                     path=np.array([str(i) for i in range(n)]))
    point = attribute_auc_by_correctness(pred, data)
    one, ci = attribute_auc_over_seeds([pred], data, n_boot=200, seed=1)
    assert one["attribute_auc_wrong"] == pytest.approx(point["auc_wrong"].mean())
    by_attribute = attribute_auc_by_attribute(point, "wrong")
    assert one["attribute_auc_wrong_min"] == pytest.approx(by_attribute["min"])
    assert one["attribute_auc_correct_size"] == pytest.approx(attribute_auc_by_attribute(point, "correct")["size"])
    for group in ("correct", "wrong"):
        lo, hi = ci[f"attribute_auc_{group}"]
        assert 0.5 < lo <= point[f"auc_{group}"].mean() <= hi <= 1.0
    both, both_ci = attribute_auc_over_seeds([pred, blind], data, n_boot=200, seed=1)
    blind_auc = attribute_auc_by_correctness(blind, data)["auc_wrong"].mean()
    assert both["attribute_auc_wrong"] == pytest.approx((point["auc_wrong"].mean() + blind_auc) / 2)
    # the seed draw can pick the blind run twice: the interval reaches down towards its chance-level AUCs
    assert both_ci["attribute_auc_wrong"][0] < 0.6 < one["attribute_auc_wrong"]


def test_class_only_comparison_by_hand():
    from wbcstudy.experiments.hemax import class_only_comparison

    data = _data()  # attributes on cells 2 (class 1) and 3 (class 2); the training set is the same cells
    # HemaX's attribute hits: cell 2 [1, 0, 1, 1], cell 3 [1, 0, nan, 1]; its class for cell 2 is 0, which has no
    # labelled training cell (every class-only hit 0), for cell 3 it is 2 (class-only hits [1, 1, nan, 1])
    metrics, ci = class_only_comparison(data, data, [_pred(data)], n_boot=100, seed=0)
    assert metrics["class_only_attribute_accuracy"] == 1.0  # the true class gives each cell its own categories
    assert metrics["hemax_attribute_accuracy"] == pytest.approx(0.75)
    assert metrics["hemax_minus_class_only_granularity_accuracy"] == pytest.approx(0.5)  # (1 − 0 + 1 − 1) / 2
    assert metrics["hemax_minus_class_only_cytoplasm_colour_accuracy"] == pytest.approx(-0.5)
    assert metrics["hemax_minus_class_only_nucleus_shape_accuracy"] == pytest.approx(1.0)  # cell 2 only
    assert metrics["hemax_minus_class_only_attribute_accuracy"] == pytest.approx((0.75 - 1 / 3) / 2)
    lo, hi = ci["hemax_minus_class_only_attribute_accuracy"]
    assert lo == pytest.approx(-1 / 3) and hi == pytest.approx(0.75)  # two cells: each drawn twice at the ends


def test_seed_metrics_average_the_runs_and_the_variant_is_chosen_on_validation():
    import types

    from wbcstudy.experiments.hemax import choose_variant, seed_metrics

    data = _data()
    preds = [_pred(data), _pred(data, (0, 1, 1, 2))]  # 3/4 and 4/4 right
    metrics, ci = seed_metrics(preds, data, n_boot=100, seed=0)
    assert metrics["classification_accuracy"] == pytest.approx(0.875)
    assert metrics["box_jaccard"] == pytest.approx(0.5)
    lo, hi = ci["classification_accuracy"]
    assert lo < 0.875 < hi and hi == pytest.approx(1.0)  # the right seed drawn twice reaches 1
    assert set(ci) >= {"classification_f1", "classification_precision", "mask_dice", "granularity_accuracy"}

    def run(f1, best):
        return types.SimpleNamespace(history=pd.DataFrame({"epoch": [1, 2, 3], "val_f1": f1}), best_epoch=best)

    runs = {(0, 0): run([0.5, 0.7, 0.9], 2), (0, 1): run([0.5, 0.6, 0.9], 1),  # kept epochs: 0.7, 0.5
            (4, 0): run([0.6, 0.6, 0.65], 3), (4, 1): run([0.6, 0.65, 0.6], 2)}  # kept epochs: 0.65, 0.65
    assert choose_variant(runs) == 4  # by the last epochs (0.9, 0.9 vs 0.65, 0.6) it would be 0
    with pytest.raises(ValueError, match="no HemaX runs"):
        choose_variant({})


def _tiny_config(**kw):
    from wbcstudy.experiments import hemax as ex

    settings = dict(d_model=32, nheads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64, num_queries=2, mask_dim=8,
                    fpn_dim=16, batch_size=2, precision="fp32", train_backbone=False, image_size=32)
    return ex.HemaXConfig(**{**settings, **kw})


def test_feature_cache_holds_each_flipped_image_features():
    import torch

    from wbcstudy.experiments import hemax as ex

    data = _data(s=32)
    data.images[:] = np.random.default_rng(0).integers(0, 255, data.images.shape, dtype=np.uint8)
    model = ex.build_hemax(_tiny_config())
    cache = ex.cache_features(model, data, flips=True, batch_size=3)
    assert len(cache) == 4 and cache.flips and cache.levels[0].shape[:2] == (4, 4)
    idx, fh, fv = np.array([2, 0, 3]), np.array([True, False, True]), np.array([False, False, True])
    images, _ = make_targets(data, idx, fh, fv)  # the images as training flips them
    with torch.no_grad():
        direct = model.eval().backbone_features(images)
    for got, want in zip(cache.batch(idx, fh, fv), direct):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)  # batch-size-dependent kernels round differently
    plain = ex.cache_features(model, data, flips=False, batch_size=3)
    assert not plain.flips and torch.equal(plain.batch(idx)[0], cache.batch(idx)[0])
    with pytest.raises(ValueError, match="unflipped images only"):
        plain.batch(idx, fh, fv)
    with pytest.raises(ValueError, match="frozen backbone"):
        ex.cache_features(ex.build_hemax(_tiny_config(train_backbone=True)), data, flips=False)


def test_training_on_cached_features_equals_training_on_images():
    """The cache only saves the backbone's forward passes: same seed, same losses and weights as computing them per
    step."""
    import torch

    from wbcstudy.experiments import hemax as ex

    data = _data(s=32)
    data.images[:] = np.random.default_rng(1).integers(0, 255, data.images.shape, dtype=np.uint8)
    cfg = _tiny_config(epochs=2, stop_at_plateau=False)
    cached = ex.train_hemax(data, data, cfg)  # builds its own caches (a fixed backbone)
    direct = ex.train_hemax(data, data, cfg, features=(None, None))  # features computed in every step
    cols = ["train_loss", "val_loss", "val_accuracy", "val_mask_dice"]
    np.testing.assert_allclose(cached.history[cols].to_numpy(float), direct.history[cols].to_numpy(float), rtol=1e-4,
                               atol=1e-5)
    for (k, a), b in zip(cached.model.state_dict().items(), direct.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), k
    with pytest.raises(ValueError, match="training feature cache has 4 images, the training data 3"):
        ex.train_hemax(data.subset(np.arange(3)), data, cfg,
                       features=(ex.cache_features(cached.model, data, True), None))


def test_run_variants_in_worker_processes_match_one_process(one_thread):
    """Two one-thread workers give the runs (and test predictions) of one-thread training in this process."""
    from wbcstudy.experiments import hemax as ex

    data = _data(s=32)
    data.images[:] = np.random.default_rng(2).integers(0, 255, data.images.shape, dtype=np.uint8)
    cfg = _tiny_config(epochs=1, stop_at_plateau=False)
    baselines = {"classifier": dict(epochs=1, batch_size=2, precision="fp32", train_backbone=False)}
    alone = ex.run_variants(data, data, data, cfg, hidden_layers=(0, 2), seeds=(0, 1), baselines=baselines)
    parallel = ex.run_variants(data, data, data, cfg, hidden_layers=(0, 2), seeds=(0, 1), workers=2,
                               baselines=baselines)
    for result in (alone, parallel):  # the classifier trained on the two PBC cells, after the HemaX runs
        assert list(result["baselines"]) == ["classifier"] and len(result["baselines"]["classifier"]["pred"]) == 2
    np.testing.assert_allclose(parallel["baselines"]["classifier"]["prob"], alone["baselines"]["classifier"]["prob"],
                               atol=1e-5)
    with pytest.raises(ValueError, match="unknown baselines"):
        ex.run_variants(data, data, data, cfg, baselines={"resnet": {}})
    assert list(parallel["runs"]) == [(0, 0), (0, 1), (2, 0), (2, 1)] == list(alone["runs"])
    cols = ["classification_accuracy", "mask_dice", "box_jaccard"]
    np.testing.assert_allclose(parallel["metrics"][cols].to_numpy(float), alone["metrics"][cols].to_numpy(float),
                               atol=1e-6)
    for key, run in alone["runs"].items():
        np.testing.assert_allclose(parallel["runs"][key].history["train_loss"], run.history["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(parallel["predictions"][key].class_prob, alone["predictions"][key].class_prob,
                                   atol=1e-5)
    assert alone["runs"][(0, 0)].history["train_loss"].iloc[0] != alone["runs"][(0, 1)].history["train_loss"].iloc[0]
    assert not ex._VARIANT_INPUTS  # nothing left behind in this process


def test_variant_difference_averages_seeds_per_cell():
    from wbcstudy.experiments.hemax import variant_difference, variant_hits

    data = _data()  # labels 0, 1, 1, 2
    # 0 hidden: seed 0 gets cells 0-3 right, seed 1 cells 0-1; 4 hidden: both seeds get cell 0 only
    variants = {"predictions": {(0, 0): _pred(data, (0, 1, 1, 2)), (0, 1): _pred(data, (0, 1, 0, 0)),
                                (4, 0): _pred(data, (0, 0, 0, 0)), (4, 1): _pred(data, (0, 0, 0, 0))}}
    assert variant_hits(variants, data, 0, "classification_accuracy").tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    d, (lo, hi) = variant_difference(variants, data, 0, 4, "classification_accuracy", n_boot=200)
    assert d == pytest.approx((0 + 1 + 0.5 + 0.5) / 4) and 0 <= lo <= d <= hi <= 1
    # nucleus shape is labelled on cell 2 only (true 2; every prediction says 2): no difference, one cell
    assert variant_difference(variants, data, 0, 4, "nucleus_shape_accuracy", n_boot=50) == (0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="no run with 2 attribute hidden layers"):
        variant_hits(variants, data, 2, "classification_accuracy")


def test_class_only_attribute_baseline_and_per_attribute_aucs_by_hand():
    import types

    import pandas as pd

    from wbcstudy.experiments import hemax as ex

    # 2 classes used (0 and 1); granularity (a=0) follows the class exactly, size (a=3) does not; -1 = unlabelled
    labels = np.array([0, 0, 0, 1, 1, 1])
    attributes = np.array([[1, 0, 2, 0], [1, 0, 2, 1], [1, -1, 2, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 0]])
    train = types.SimpleNamespace(labels=labels, attributes=attributes)
    modes = ex.class_attribute_modes(train)
    assert modes.shape == (5, 4) and (modes[2:] == -1).all()  # classes without labelled cells
    assert modes[0].tolist() == [1, 0, 2, 0] and modes[1].tolist() == [0, 1, 1, 1]
    acc = ex.class_only_attribute_accuracy(modes, labels, train)
    assert acc["granularity"] == 1.0 and acc["cytoplasm_colour"] == 1.0  # 5 labelled cells, all the class's mode
    assert acc["nucleus_shape"] == pytest.approx(5 / 6) and acc["size"] == pytest.approx(4 / 6)
    assert acc["mean"] == pytest.approx((1 + 1 + 5 / 6 + 4 / 6) / 4)
    wrong_class = np.array([1, 0, 0, 1, 1, 1])  # a model that mislabels the first cell's class
    assert ex.class_only_attribute_accuracy(modes, wrong_class, train)["granularity"] == pytest.approx(5 / 6)
    table = pd.DataFrame({"attribute": ["granularity", "granularity", "size", "size"],
                          "category": ["no", "yes", "small", "big"], "auc_correct": [0.9, 0.7, 0.6, np.nan],
                          "auc_wrong": [0.8, 0.6, np.nan, np.nan]})
    wrong = ex.attribute_auc_by_attribute(table, "wrong")
    assert wrong["granularity"] == pytest.approx(0.7) and np.isnan(wrong["size"]) and wrong["min"] == pytest.approx(0.7)
    assert ex.attribute_auc_by_attribute(table, "correct") == pytest.approx({"granularity": 0.8, "size": 0.6,
                                                                             "min": 0.6})
    with pytest.raises(ValueError, match="correct"):
        ex.attribute_auc_by_attribute(table, "both")
