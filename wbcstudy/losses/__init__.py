"""Losses that the shared training loop does not provide (it defaults to cross-entropy).

HemaX's set-prediction losses (Hungarian matching, GIoU, focal, Dice) are in ``wbcstudy.losses.set_prediction``.

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


# --------------------------------------------------------------------------- ResNeXt-CC (paper 004)
def class_shares(labels: torch.Tensor, n_classes: int = 2) -> torch.Tensor:
    """Fraction of each class among ``labels`` (integer class indices); every class must occur."""
    labels = torch.as_tensor(labels, dtype=torch.long).ravel()
    if labels.numel() == 0:
        raise ValueError("class shares of an empty label set")
    counts = torch.bincount(labels, minlength=n_classes).double()
    if counts.numel() != n_classes or (counts == 0).any():
        raise ValueError(f"every one of {n_classes} classes must occur in the labels; counts: {counts.tolist()}")
    return (counts / counts.sum()).float()


def weighted_bce(scores: object, target: torch.Tensor, shares: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """ResNeXt-CC's weighted BCE: −mean(α₁·y·log p + α₂·(1−y)·log(1−p)), p = softmax probability of class 1.

    ``scores`` are (N, 2) logits (or a tuple whose first element is), ``target`` holds 0/1 and
    ``shares`` = (share of class 0, share of class 1) in the training set. Each class's term is
    weighted by the *other* class's share (α₁ = share of class 0 for the positives, α₂ = share of
    class 1 for the negatives), so the minority class is weighted up. With two logits,
    p = sigmoid(z₁ − z₀), so with equal weights this is 0.5 × the softmax cross-entropy.
    """
    scores = logits_of(scores)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[1] != 2:
        raise ValueError(f"weighted_bce needs (N, 2) logits, got {getattr(scores, 'shape', type(scores))}")
    target = torch.as_tensor(target, dtype=torch.long, device=scores.device)
    if target.shape != scores.shape[:1]:
        raise ValueError(f"{scores.shape[0]} score rows but target of shape {tuple(target.shape)}")
    shares = torch.as_tensor(shares, dtype=scores.dtype, device=scores.device)
    if shares.shape != (2,) or (shares < 0).any():
        raise ValueError(f"shares must be two non-negative class fractions, got {shares.tolist()}")
    margin = scores[:, 1] - scores[:, 0]
    y = target.to(scores.dtype)
    log_p, log_not_p = F.logsigmoid(margin), F.logsigmoid(-margin)  # log p and log(1 − p), numerically stable
    return -(shares[0] * y * log_p + shares[1] * (1 - y) * log_not_p).mean()


class CenterLoss(torch.nn.Module):
    """Center loss (Wen et al. 2016): ½·mean_i ‖x_i − c_{y_i}‖², with centres moved per mini-batch at rate ``alpha``.

    The update is Wen et al.'s Eq. 4: Δc_j = Σ_{i: y_i=j} (c_j − x_i) / (1 + n_j), c_j ← c_j − α·Δc_j,
    applied after the loss is computed, whenever gradients are enabled (i.e. in training
    steps, not under ``torch.no_grad``/``inference_mode`` as in validation). The centres are
    a buffer, not a parameter: the optimiser never sees them. Centres start at zero.
    """

    def __init__(self, n_classes: int, feature_dim: int, alpha: float = 0.5) -> None:
        """``n_classes`` centres of dimension ``feature_dim``, updated with rate ``alpha`` in (0, 1]."""
        super().__init__()
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(n_classes, feature_dim))

    def forward(self, features: torch.Tensor, target: torch.Tensor, update: bool | None = None) -> torch.Tensor:
        """The loss for this batch; the centres are updated afterwards when ``update`` (default: gradients enabled)."""
        if features.ndim != 2 or features.shape[1] != self.centers.shape[1]:
            raise ValueError(f"features must be (N, {self.centers.shape[1]}), got {tuple(features.shape)}")
        target = torch.as_tensor(target, dtype=torch.long, device=features.device)
        if target.shape != features.shape[:1]:
            raise ValueError(f"{features.shape[0]} feature rows but target of shape {tuple(target.shape)}")
        if self.centers.device != features.device:
            self.centers = self.centers.to(features.device)
        centers = self.centers[target]
        loss = 0.5 * (features - centers.to(features.dtype)).pow(2).sum(dim=1).mean()
        if update if update is not None else torch.is_grad_enabled():
            self.update_centers(features.detach().float(), target)
        return loss

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, target: torch.Tensor) -> None:
        """One step of Wen et al.'s centre update for the classes present in the batch."""
        n_classes = self.centers.shape[0]
        counts = torch.bincount(target, minlength=n_classes).to(features.dtype)
        sums = torch.zeros_like(self.centers).index_add_(0, target, features)
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers -= self.alpha * delta


class WeightedBCECenterLoss(torch.nn.Module):
    """ResNeXt-CC's loss λ·weighted BCE + β·center loss on a model's ``(logits, features)``; λ = 1, β = 0.05 by default.

    A ``loss_fn(outputs, y)`` for ``wbcstudy.train.fit``. ``center_weight=0`` gives the
    weighted BCE alone (no centres are kept); ``shares`` as in ``weighted_bce``.
    """

    def __init__(self, shares: torch.Tensor | tuple[float, float], feature_dim: int, bce_weight: float = 1.0,
                 center_weight: float = 0.05, alpha: float = 0.5) -> None:
        """Class shares of the training set, the feature dimension, the two weights and the centre rate."""
        super().__init__()
        self.register_buffer("shares", torch.as_tensor(shares, dtype=torch.float32))
        self.bce_weight, self.center_weight = bce_weight, center_weight
        self.center = CenterLoss(2, feature_dim, alpha) if center_weight else None

    def forward(self, outputs: object, target: torch.Tensor) -> torch.Tensor:
        """The combined loss of one batch (updating the centres when gradients are enabled)."""
        loss = self.bce_weight * weighted_bce(outputs, target, self.shares.to(logits_of(outputs).device))
        if self.center is not None:
            if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
                raise ValueError("the center loss needs model outputs (logits, features)")
            loss = loss + self.center_weight * self.center(outputs[1], target)
        return loss


class OneVsRestWeightedBCECenterLoss(torch.nn.Module):
    """ResNeXt-CC's loss for K classes: one-vs-rest weighted BCE on the softmax probabilities + β·center loss.

    For each class k, p_k is its softmax probability and s_k its share of the training cells; the BCE term is
    −[(1 − s_k)·y_k·log p_k + s_k·(1 − y_k)·log(1 − p_k)], averaged over the K classes and the batch, so each class's
    positives are weighted by the share of the rest. With K = 2 this is exactly the chapter's
    ``weighted_bce`` (both classes' terms equal it). The center term is the chapter's
    ``CenterLoss`` with K centres on the model's pooled features.
    """

    def __init__(self, shares: torch.Tensor, feature_dim: int, bce_weight: float = 1.0, center_weight: float = 0.05,
                 alpha: float = 0.5) -> None:
        super().__init__()
        shares = torch.as_tensor(shares, dtype=torch.float32)
        if shares.ndim != 1 or len(shares) < 2 or (shares < 0).any():
            raise ValueError(f"shares must be K >= 2 non-negative class fractions, got {shares.tolist()}")
        self.register_buffer("shares", shares)
        self.bce_weight, self.center_weight = bce_weight, center_weight
        self.center = CenterLoss(len(shares), feature_dim, alpha) if center_weight else None

    def bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The one-vs-rest weighted BCE of (N, K) logits (in float32, from log-sum-exps)."""
        logits = logits.float()
        k = logits.shape[1]
        if k != len(self.shares):
            raise ValueError(f"{k} logits per cell for {len(self.shares)} class shares")
        target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
        log_z = torch.logsumexp(logits, dim=1, keepdim=True)
        log_p = logits - log_z
        diagonal = torch.eye(k, dtype=torch.bool, device=logits.device)
        others = logits[:, None, :].expand(-1, k, -1).masked_fill(diagonal, float("-inf"))
        log_not_p = torch.logsumexp(others, dim=2) - log_z  # log(1 − p_k) = log Σ_{j≠k} e^{z_j} − log Σ_j e^{z_j}
        y = F.one_hot(target, k).float()
        s = self.shares.to(logits.device)
        return -((1 - s) * y * log_p + s * (1 - y) * log_not_p).mean()

    def forward(self, outputs: object, target: torch.Tensor) -> torch.Tensor:
        """The combined loss of one batch (updating the centres when gradients are enabled)."""
        loss = self.bce_weight * self.bce(logits_of(outputs), target)
        if self.center is not None:
            if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
                raise ValueError("the center loss needs model outputs (logits, features)")
            loss = loss + self.center_weight * self.center(outputs[1].float(), target)
        return loss


__all__ += ["class_shares", "weighted_bce", "CenterLoss", "WeightedBCECenterLoss", "OneVsRestWeightedBCECenterLoss"]
