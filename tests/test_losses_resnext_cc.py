"""Tests for ResNeXt-CC's losses in wbcstudy.losses: weighted BCE and center loss against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from wbcstudy.losses import CenterLoss, WeightedBCECenterLoss, class_shares, weighted_bce


def test_class_shares_by_hand() -> None:
    assert torch.allclose(class_shares(torch.tensor([1, 1, 1, 0])), torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="every one of 2 classes"):
        class_shares(torch.tensor([1, 1]))


def test_weighted_bce_hand_computed() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.5], [-1.0, 0.0]])
    target = torch.tensor([1, 0, 1])
    shares = (0.3, 0.7)  # class 0 is 30% of training cells, class 1 70%
    p = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(-1.0))]  # sigmoid(z1 − z0)
    # positives weighted by the share of class 0 (0.3), negatives by the share of class 1 (0.7)
    expected = -(0.3 * math.log(p[0]) + 0.7 * math.log(1 - p[1]) + 0.3 * math.log(p[2])) / 3
    assert weighted_bce(logits, target, shares).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_bce((logits, None), target, shares).item() == pytest.approx(expected, rel=1e-6)
    # equal weights 1: the binary cross-entropy of the softmax, i.e. exactly the 2-class cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, target).item()
    assert weighted_bce(logits, target, (1.0, 1.0)).item() == pytest.approx(ce, rel=1e-6)


def test_weighted_bce_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        weighted_bce(torch.zeros(2, 3), torch.tensor([0, 1]), (0.5, 0.5))
    with pytest.raises(ValueError, match="target"):
        weighted_bce(torch.zeros(2, 2), torch.tensor([0, 1, 1]), (0.5, 0.5))


def test_center_loss_value_and_update_by_hand() -> None:
    loss_fn = CenterLoss(2, 2, alpha=0.5)
    loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    # ½·mean(‖(1,0)−(0,0)‖², ‖(0,2)−(0,0)‖², ‖(3,1)−(1,1)‖²) = ½·(1 + 4 + 4)/3 = 1.5
    loss = loss_fn(x, y)
    assert loss.item() == pytest.approx(1.5)
    # Δc0 = ((c0 − x1) + (c0 − x2)) / (1 + 2) = ((−1, 0) + (0, −2)) / 3 = (−1/3, −2/3) → c0 = (1/6, 1/3)
    # Δc1 = (c1 − x3) / (1 + 1) = (−2, 0) / 2 = (−1, 0) → c1 = (1.5, 1)
    assert torch.allclose(loss_fn.centers, torch.tensor([[1 / 6, 1 / 3], [1.5, 1.0]]))
    # the gradient with respect to the features is (x_i − c_{y_i}) / m
    x = x.clone().requires_grad_(True)
    fresh = CenterLoss(2, 2)
    fresh(x, y, update=False).backward()
    assert torch.allclose(x.grad, x.detach() / 3)


def test_center_loss_does_not_update_without_gradients() -> None:
    loss_fn = CenterLoss(2, 3)
    with torch.no_grad():
        loss_fn(torch.ones(4, 3), torch.tensor([0, 1, 0, 1]))
    assert torch.equal(loss_fn.centers, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="alpha"):
        CenterLoss(2, 3, alpha=0.0)


def test_combined_loss_is_bce_plus_weighted_center() -> None:
    logits = torch.tensor([[0.2, -0.4], [1.0, 3.0]])
    features = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    y = torch.tensor([0, 1])
    combined = WeightedBCECenterLoss((0.4, 0.6), feature_dim=2, center_weight=0.05)
    value = combined((logits, features), y).item()
    center = 0.5 * (5.0 + 1.0) / 2  # centres start at zero
    assert value == pytest.approx(weighted_bce(logits, y, (0.4, 0.6)).item() + 0.05 * center, rel=1e-6)
    assert not torch.equal(combined.center.centers, torch.zeros(2, 2))  # updated after the call
    bce_only = WeightedBCECenterLoss((0.4, 0.6), feature_dim=2, center_weight=0.0)
    assert bce_only.center is None
    with pytest.raises(ValueError, match="features"):
        combined(logits, y)
