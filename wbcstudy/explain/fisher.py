"""Fisher information, as the paper's README writes it and as the real quantity.

The README's "Fisher score" of an image is ``‖p − y‖²``: the squared norm of the gradient of
the cross-entropy with respect to the *logits* (``p`` the softmax output, ``y`` the one-hot
label). It is not a Fisher information. The Fisher information of a model with parameters θ is
``F = E_x E_{y~p(y|x,θ)}[∇θ log p(y|x) ∇θ log p(y|x)ᵀ]``; the *empirical* Fisher replaces the
model's ``y`` by the observed label, ``F̂ = 1/n Σ_i g_i g_iᵀ`` with ``g_i = ∇θ ℓ(x_i, y_i)`` the
per-sample gradient. Per-sample gradients come from ``torch.func`` (``vmap`` over ``grad`` of a
``functional_call``), for any module — in the chapter the last layer over frozen features,
where ``g_i = (p_i − y_i) ⊗ [z_i, 1]`` and the two scores differ by the feature norm.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from wbcstudy.evaluate import one_hot

__all__ = ["readme_fisher_score", "per_sample_gradients", "empirical_fisher", "fisher_information",
           "per_sample_fisher_trace"]


def readme_fisher_score(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The README's score ``‖p − y‖²`` per image (``labels``: integers or a one-hot matrix)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    y = one_hot(y, p.shape[1]) if y.ndim == 1 else y.astype(np.float64)
    if y.shape != p.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ in shape")
    return ((p - y) ** 2).sum(axis=1)


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:  # one logit: binary logistic regression (target 0/1)
        return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), target.to(logits.dtype))
    return nn.functional.cross_entropy(logits, target)


def per_sample_gradients(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                         params: Sequence[str] | None = None, batch_size: int = 256) -> torch.Tensor:
    """Per-sample gradients ``∇θ ℓ(x_i, y_i)`` of the cross-entropy, flattened to (n, n_params).

    ``params`` names the parameters differentiated (default: every parameter that requires a
    gradient); the others, and all buffers, are held fixed. The module is evaluated in its
    current mode (call ``eval()`` first for BatchNorm/Dropout networks). A module with one
    output is treated as binary logistic regression with 0/1 targets.
    """
    named = dict(module.named_parameters())
    names = list(params) if params is not None else [n for n, p in named.items() if p.requires_grad]
    missing = sorted(set(names) - set(named))
    if missing:
        raise ValueError(f"module has no parameters {missing}")
    diff = {n: named[n].detach() for n in names}
    fixed = {n: p.detach() for n, p in named.items() if n not in diff}
    fixed.update(dict(module.named_buffers()))

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(module, {**fixed, **p}, (x.unsqueeze(0),))
        return _ce(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    chunks = []
    for i in range(0, len(inputs), batch_size):
        g = per_sample(diff, inputs[i:i + batch_size], targets[i:i + batch_size])
        chunks.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
    return torch.cat(chunks)


def empirical_fisher(grads: torch.Tensor) -> torch.Tensor:
    """The empirical Fisher ``1/n Σ g_i g_iᵀ`` of per-sample gradients (n, d) → (d, d)."""
    return grads.T @ grads / grads.shape[0]


def per_sample_fisher_trace(grads: torch.Tensor) -> np.ndarray:
    """Each image's contribution to the trace of the empirical Fisher: ``‖g_i‖²``."""
    return (grads.double() ** 2).sum(dim=1).cpu().numpy()


def fisher_information(module: nn.Module, inputs: torch.Tensor, params: Sequence[str] | None = None) -> torch.Tensor:
    """The (true, model) Fisher ``1/n Σ_i Σ_y p(y|x_i) g_{i,y} g_{i,y}ᵀ``, labels drawn from the model itself.

    Exact expectation over the classes (no sampling): one ``per_sample_gradients`` pass per class.
    """
    with torch.no_grad():
        logits = module(inputs)
    if logits.shape[-1] == 1:
        p1 = torch.sigmoid(logits.squeeze(-1))
        probs, classes = torch.stack([1 - p1, p1], dim=1), 2
    else:
        probs, classes = torch.softmax(logits, dim=1), logits.shape[-1]
    total = None
    for c in range(classes):
        g = per_sample_gradients(module, inputs, torch.full((len(inputs),), c, dtype=torch.long), params)
        term = (g * probs[:, c:c + 1].to(g.dtype)).T @ g
        total = term if total is None else total + term
    return total / len(inputs)
