"""Loss functions that the shared training loop does not provide (it defaults to cross-entropy).

What belongs here: losses a chapter passes to ``wbcstudy.train.fit(..., loss_fn=...)`` as
``loss_fn(outputs, targets)`` with integer class targets — e.g. the one-vs-rest hinge loss
of W-Net-SVM (paper 002), focal or class-balanced losses, distillation losses. Each loss
takes raw scores (not probabilities), reduces to a scalar by default, and is checked in
``tests/test_losses.py`` against a value computed by hand.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wbcstudy.train import logits_of

__all__ = ["multiclass_hinge_loss"]


def multiclass_hinge_loss(scores: object, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """One-vs-rest hinge loss ``max(0, 1 − t·y)`` with ``t = ±1`` per class, averaged over classes (and samples).

    This is TensorFlow's ``tf.losses.hinge_loss`` applied to one-hot labels (which it maps
    from {0, 1} to {−1, +1}) with its default reduction: the mean over every sample and
    class. ``scores`` is an (N, C) tensor — or a tuple whose first element is one, as
    ``wbcstudy.train.logits_of`` reads model outputs — and ``target`` holds N class indices.
    ``reduction="none"`` returns the per-sample mean over classes, ``"sum"`` the sum of those.
    The gradient is zero for every class whose margin ``t·y`` is at least 1.
    """
    scores = logits_of(scores)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ValueError(f"scores must be an (N, C) tensor, got {getattr(scores, 'shape', type(scores))}")
    target = torch.as_tensor(target, dtype=torch.long, device=scores.device)
    if target.shape != scores.shape[:1]:
        raise ValueError(f"{scores.shape[0]} score rows but target of shape {tuple(target.shape)}")
    signs = 2.0 * F.one_hot(target, scores.shape[1]).to(scores.dtype) - 1.0  # +1 for the true class, −1 elsewhere
    per_sample = torch.relu(1.0 - signs * scores).mean(dim=1)  # relu: zero gradient where the margin is ≥ 1
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"unknown reduction {reduction!r}: use 'mean', 'sum' or 'none'")
