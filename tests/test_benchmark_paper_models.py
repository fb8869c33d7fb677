"""The summary's paper-model adapters: HemaX's pbc5-test exclusion, class-order mapping, ResNeXt-CC's 5-class loss and
HSV input, and the diffusion classifier's probabilities and anomaly score."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wbcstudy.benchmark import paper_models as pm
from wbcstudy.benchmark.base import WBC5, BenchmarkModel, attach_predictors, model_meta
from wbcstudy.losses import OneVsRestWeightedBCECenterLoss


def _meta(key: str, size: int, recipe: dict) -> dict:
    model = BenchmarkModel(key, key, key, size, "none", lambda x: x, 0.0, False, recipe)
    return model_meta(model)


# ------------------------------------------------------------------------------------------------------- HemaX data
def _fake_hemax_data(paths: list[str], sources: list[str]):
    from wbcstudy.data.hemax import HemaXData

    n = len(paths)
    return HemaXData(images=np.zeros((n, 2, 2, 3), np.uint8), labels=np.arange(n) % 5,
                     boxes=np.zeros((n, 4), np.float32),
                     has_box=np.zeros(n, bool), mask_index=np.full(n, -1), masks=np.zeros((0, 2, 2, 2), np.uint8),
                     attributes=np.full((n, 4), -1), nc_category=np.full(n, -1), source=np.array(sources),
                     path=np.array(paths))


def test_exclude_pbc5_test_drops_exactly_the_wbcatt_rows_that_are_benchmark_test_cells():
    from wbcstudy.data.construct import load_manifest

    wbcatt, pbc5 = load_manifest("wbcatt"), load_manifest("pbc5")
    test_paths = pm.pbc5_test_paths()
    assert test_paths == set(pbc5.loc[pbc5.split == "test", "path"]) and len(test_paths) == 1028
    # WBCAtt's own split vs pbc5's: its cells overlap the test split
    for split, expected in (("train", 631), ("val", 82)):
        rows = wbcatt[wbcatt.split == split]
        data = _fake_hemax_data(rows.path.tolist(), ["pbc"] * len(rows))
        clean, dropped = pm.exclude_pbc5_test(data, test_paths)
        assert dropped == expected == int(rows.path.isin(test_paths).sum())
        assert len(clean) == len(rows) - expected
        assert not set(clean.path) & test_paths  # no benchmark test cell is left to train or select on
        assert set(clean.path) == set(rows.path) - test_paths


def test_exclude_pbc5_test_matches_file_names_and_keeps_other_sources():
    test = {"pbc/PBC_dataset_normal_DIB/basophil/BA_1.jpg"}
    data = _fake_hemax_data(["pbc/PBC_dataset_normal_DIB/basophil/BA_1.jpg", "other_root/basophil/BA_1.jpg",
                             "pbc/PBC_dataset_normal_DIB/basophil/BA_2.jpg", "zheng/BA_1.jpg"],
                            ["pbc", "pbc", "pbc", "zheng"])
    clean, dropped = pm.exclude_pbc5_test(data, test)
    assert dropped == 2  # the path itself and the same file under another folder spelling
    assert clean.path.tolist() == ["pbc/PBC_dataset_normal_DIB/basophil/BA_2.jpg", "zheng/BA_1.jpg"]


def test_hemax_headline_hidden_is_the_chapters_recorded_choice(tmp_path):
    path = tmp_path / "hemax.json"
    path.write_text('{"best_hidden": 2, "metrics": {"hidden0_classification_f1": 0.9}}')  # test F1 chooses nothing
    assert pm.hemax_headline_hidden([0, 2, 4], str(path)) == 2
    assert pm.hemax_headline_hidden([0, 4], str(path)) == 0  # a choice outside these variants: the first
    assert pm.hemax_headline_hidden([4, 0], str(tmp_path / "missing.json")) == 4


def test_hemax_class_probabilities_reorders_to_wbc5():
    classes = ["neutrophil", "basophil", "monocyte", "eosinophil", "lymphocyte"]
    prob = np.array([[0.5, 0.1, 0.2, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    out = pm.hemax_class_probabilities(prob * 2, classes)  # unnormalised rows are renormalised
    np.testing.assert_allclose(out[0], [0.1, 0.1, 0.1, 0.2, 0.5])
    np.testing.assert_allclose(out.sum(1), 1.0)
    with pytest.raises(ValueError):
        pm.hemax_class_probabilities(prob, ["a", "b", "c", "d", "e"])


class _FixedHemaX(nn.Module):
    """HemaX's output dictionary with fixed logits: query 1 is the confident cell, query 0 mostly no-object."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits  # (Q, C + 1)

    def forward(self, images: torch.Tensor) -> dict:
        b, q = len(images), self.logits.shape[0]
        return {"pred_logits": self.logits.expand(b, -1, -1), "pred_boxes": torch.full((b, q, 4), 0.5),
                "pred_masks": torch.zeros(b, q, 2, 4, 4),
                "pred_attributes": [torch.zeros(b, q, k) for k in (2, 2, 3, 2)]}


def test_predictor_hemax_drops_no_object_renormalises_and_keeps_wbc5_order():
    from wbcstudy.data.hemax import CLASSES

    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 5.0], [1.0, 2.0, 0.0, 0.5, 3.0, 1.0]])
    predict, anomaly = pm.predictor_hemax({"net": _FixedHemaX(logits), "meta": {}},
                                          _meta("hemax", 16, {"batch_size": 4}), "fp32")
    prob = predict(np.zeros((3, 16, 16, 3), np.uint8))
    expected = torch.softmax(logits[1], 0)[:-1]
    expected = (expected / expected.sum()).numpy()
    expected = expected[[CLASSES.index(c) for c in WBC5]]
    np.testing.assert_allclose(prob, np.tile(expected, (3, 1)), atol=1e-6)
    assert anomaly is None
    with pytest.raises(ValueError):
        predict(np.zeros((1, 32, 32, 3), np.uint8))  # not the model's resolution


# ------------------------------------------------------------------------------------------------------- ResNeXt-CC
def test_one_vs_rest_loss_is_the_chapters_weighted_bce_at_two_classes():
    from wbcstudy.losses import WeightedBCECenterLoss, weighted_bce

    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.4, 0.9]])
    y = torch.tensor([1, 0, 1])
    shares = torch.tensor([0.7, 0.3])
    ours = OneVsRestWeightedBCECenterLoss(shares, 4, center_weight=0.0)
    torch.testing.assert_close(ours(logits, y), weighted_bce(logits, y, shares))
    feats = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    chapter = WeightedBCECenterLoss(shares, 4, center_weight=0.05, alpha=0.5)
    with_center = OneVsRestWeightedBCECenterLoss(shares, 4, center_weight=0.05, alpha=0.5)
    torch.testing.assert_close(with_center((logits, feats), y), chapter((logits, feats), y))
    torch.testing.assert_close(with_center.center.centers, chapter.center.centers)  # the same centre update


def test_one_vs_rest_loss_by_hand_at_three_classes():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    shares = torch.tensor([0.5, 0.3, 0.2])
    p = torch.softmax(logits[0], 0)
    by_hand = -((1 - 0.5) * math.log(p[0]) + 0.3 * math.log(1 - p[1]) + 0.2 * math.log(1 - p[2])) / 3
    loss = OneVsRestWeightedBCECenterLoss(shares, 2, center_weight=0.0)(logits, torch.tensor([0]))
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)


def test_resnext_cc_five_class_forward_loss_and_hsv_input(one_thread):
    from wbcstudy.models import build
    from wbcstudy.models.resnext_cc import ColourInput

    torch.manual_seed(0)
    net = build("resnext_cc", 5, size="cpu", colour="hsv")
    x = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    logits, feats = net(x)
    assert logits.shape == (4, 5) and feats.shape == (4, net.channels)
    loss = OneVsRestWeightedBCECenterLoss(torch.full((5,), 0.2), net.channels)((logits, feats), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss) and net.fc.weight.grad is not None
    assert isinstance(net.input, ColourInput) and net.input.colour == "hsv"
    pure_red = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    pure_red[..., 0] = 255
    torch.testing.assert_close(net.input.unnormalised(pure_red)[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0]))  # H, S, V
    predict, anomaly = pm.predictor_resnext_cc({"net": net, "meta": {}}, _meta("resnext_cc", 64, {}), "fp32")
    prob = predict(x.numpy())
    assert prob.shape == (4, 5) and anomaly is None
    np.testing.assert_allclose(prob.sum(1), 1.0)
    # equal to the network's own softmax, up to the kernels a forced precision (WBCSTUDY_PRECISION=bf16) picks
    np.testing.assert_allclose(prob, torch.softmax(net.eval()(x)[0], 1).detach().numpy(), atol=2e-3)


def test_benchmark_resnext_cc_uses_the_full_hsv_model(one_thread):
    """The adapter at smoke (64 cells, one epoch) builds HSV input, fusion and ECA and returns a storable model."""
    from wbcstudy.benchmark.base import pbc5_split

    model = pm.benchmark_resnext_cc("smoke", 0, "fp32")
    net = model.module["net"]
    assert net.input.colour == "hsv" and net.cffm is not None and net.downsampling == "eca"
    assert model.factory == pm.FACTORIES["resnext_cc"] and set(model.parameters) >= {"epochs", "lr", "image_size"}
    x = pbc5_split("test", 64)[0][:3]
    again = attach_predictors(BenchmarkModel(**{**model.__dict__}), "fp32")  # the store's rebuild
    np.testing.assert_allclose(again.predict(x), model.predict(x))


# ------------------------------------------------------------------------------------------------------- diffusion
def test_errors_to_probabilities_by_hand():
    errors = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 2.0]])
    prob = pm.errors_to_probabilities(errors, 1.0)
    e = np.exp([-1.0, -2.0, -3.0])
    np.testing.assert_allclose(prob[0], e / e.sum())
    np.testing.assert_allclose(prob[1, :2], [0.5 / (1 + 0.5 * math.exp(-1.5))] * 2, rtol=1e-12)
    assert (pm.errors_to_probabilities(errors, 0.1).max(1) > prob.max(1)).all()  # lower temperature: sharper
    with pytest.raises(ValueError):
        pm.errors_to_probabilities(errors, 0.0)


def test_fit_temperature_recovers_the_calibrated_temperature():
    # errors (0, 1): p(class 0) = 1 / (1 + e^{-1/T}); three of four cells are class 0, so the NLL is least at p = 3/4,
    # T = 1 / ln 3
    errors = np.tile([[0.0, 1.0]], (4, 1))
    t = pm.fit_temperature(errors, np.array([0, 0, 0, 1]), grid=np.linspace(0.5, 1.5, 1001))
    assert t == pytest.approx(1 / math.log(3), abs=1e-3)


def test_predictor_cytodiffusion_probabilities_anomaly_and_pooling(one_thread):
    from wbcstudy.models.diffusion import ClassConditionalUNet, UNetConfig

    torch.manual_seed(0)
    net = ClassConditionalUNet(UNetConfig(image_size=16, n_classes=5, block_out_channels=(8, 8, 16, 16)))
    recipe = {"max_trials": 3, "min_trials": 2, "images_per_call": 2, "image_size": 16}
    facts = {"seed": 0, "weighting": "uniform", "temperature": 0.5}
    meta = _meta("cytodiffusion", 32, recipe)
    predict, anomaly = pm.predictor_cytodiffusion({"net": net, "meta": facts}, meta, "fp32")
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    prob = predict(x)
    assert prob.shape == (3, 5)
    np.testing.assert_allclose(prob.sum(1), 1.0)
    from wbcstudy.experiments import cytodiffusion as cd

    direct = cd.DiffusionClassifierConfig(3, 2, 2, "uniform", "fp32").classify(net, cd.pool_images(x, 16), 5, 0)
    np.testing.assert_allclose(prob, pm.errors_to_probabilities(direct.normalised_errors, 0.5))
    assert (prob.argmax(1) == direct.predictions).all()
    np.testing.assert_allclose(anomaly(x), -direct.confidence)  # minus the chapter's confidence
    with pytest.raises(ValueError):
        predict(x[:, :16, :16])


def test_registry_names_each_factory():
    assert set(pm.FACTORIES) == {"resnext_cc", "hemax", "cytodiffusion"}
    from wbcstudy.benchmark.base import resolve_factory

    for key, path in pm.FACTORIES.items():
        assert resolve_factory(path) is getattr(pm, f"predictor_{key}")
