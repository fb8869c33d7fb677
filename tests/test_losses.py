"""Tests for wbcstudy.losses: the one-vs-rest hinge loss against hand-computed values."""
from __future__ import annotations

import pytest
import torch

from wbcstudy.losses import multiclass_hinge_loss


def test_hinge_loss_hand_computed_two_samples_three_classes() -> None:
    scores = torch.tensor([[2.0, -0.5, 0.3], [0.2, 0.8, -1.5]])
    target = torch.tensor([0, 2])
    # sample 1, t = (+1, −1, −1): max(0, 1 − 2) = 0, max(0, 1 − 0.5) = 0.5, max(0, 1 + 0.3) = 1.3 → mean 1.8 / 3
    # sample 2, t = (−1, −1, +1): max(0, 1 + 0.2) = 1.2, max(0, 1 + 0.8) = 1.8, max(0, 1 − (−1.5)) = 2.5 → mean 5.5 / 3
    per_sample = multiclass_hinge_loss(scores, target, reduction="none")
    assert torch.allclose(per_sample, torch.tensor([1.8 / 3, 5.5 / 3]))
    assert multiclass_hinge_loss(scores, target).item() == pytest.approx(7.3 / 6)
    assert multiclass_hinge_loss(scores, target, reduction="sum").item() == pytest.approx(7.3 / 3)
    assert multiclass_hinge_loss((scores, "features"), target).item() == pytest.approx(7.3 / 6)  # tuple outputs


def test_hinge_loss_gradient_zero_where_margin_at_least_one() -> None:
    # every margin t·y ≥ 1 (exactly 1 in two places): zero loss and zero gradient
    scores = torch.tensor([[1.0, -3.0, -1.0], [-2.0, 1.5, -1.0]], requires_grad=True)
    loss = multiclass_hinge_loss(scores, torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))
    # one violated margin: only that score gets a gradient, −t / (N·C)
    scores = torch.tensor([[1.0, -3.0, 0.5]], requires_grad=True)
    multiclass_hinge_loss(scores, torch.tensor([0])).backward()
    assert torch.allclose(scores.grad, torch.tensor([[0.0, 0.0, 1.0 / 3]]))


def test_hinge_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        multiclass_hinge_loss(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        multiclass_hinge_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        multiclass_hinge_loss(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="max")
