"""Influence of training images on test predictions: the README's shortcut, Koh & Liang's influence
functions with an exact damped Hessian, TracIn, and leave-one-out retraining to check them.

The exact analyses work on the *last layer over frozen features*: multinomial logistic regression
``logits = W z + b`` on the penultimate features ``z`` of a trained network, fitted to convergence
with an L2 penalty ``λ/2 ‖θ‖²`` (which makes the objective strongly convex, so the optimum and its
leave-one-out retrainings are unique — the setting in which Koh & Liang 2017 validated influence
functions). The parameters are held as one matrix ``θ`` of shape (k, d+1), the bias in the last column.

Sign conventions (all three scores are oriented so that *positive = helpful*):

* ``loo_effect[t, i] = L_t(θ̂_{−i}) − L_t(θ̂)``: how much the test loss rises when training image i is
  removed and the model retrained. Positive: i helped test image t.
* ``predicted_loo_effect = (1/n) ∇L_tᵀ (H + δI)⁻¹ ∇ℓ_i`` = ``−I_up,loss / n`` (Koh & Liang eq. 2, upweighting
  by ε = −1/n).
* ``tracin[t, i] = Σ_c η_c ∇ℓ_t(θ_c) · ∇ℓ_i(θ_c)`` over checkpoints (Pruthi et al. 2020); positive = proponent.

The README's score ``−(p_i − y_i)·(p_t − y_t)`` is returned exactly as written by ``readme_influence``; the
README says "positive → supports prediction".

``captum_influence`` computes Koh & Liang's scores for the same problem with captum's ``NaiveInfluenceFunction``
(an independent implementation: autograd Hessian, eigendecomposition), as a cross-check of ``predicted_loo_effect``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wbcstudy.evaluate import one_hot

__all__ = ["readme_influence", "last_layer_inputs", "LastLayerProblem", "tracin_last_layer", "captum_influence"]


def readme_influence(probs_train: np.ndarray, labels_train: np.ndarray, probs_test: np.ndarray,
                     labels_test: np.ndarray) -> np.ndarray:
    """The README's influence ``−(p_i − y_i)·(p_t − y_t)``: a matrix (n_test, n_train)."""
    p_tr = np.asarray(probs_train, dtype=np.float64)
    p_te = np.asarray(probs_test, dtype=np.float64)
    g_tr = p_tr - one_hot(labels_train, p_tr.shape[1])
    g_te = p_te - one_hot(labels_test, p_te.shape[1])
    return -(g_te @ g_tr.T)


@torch.inference_mode()
def last_layer_inputs(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The inputs of the model's last ``nn.Linear`` (its frozen penultimate features) for a batch, in eval mode."""
    from wbcstudy.models.trust_cnn import last_linear

    layer = last_linear(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach().float().cpu()))
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured)


def _augment(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)


@dataclass
class LastLayerProblem:
    """L2-regularised multinomial logistic regression on fixed features, in float64.

    ``features`` (n, d), integer ``labels`` (n,), ``l2`` the penalty λ of ``λ/2 ‖θ‖²`` (bias included).
    """

    features: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    l2: float = 1e-3

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features, dtype=torch.float64)
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.features) != len(self.labels):
            raise ValueError("features and labels differ in length")
        self.x = _augment(self.features)  # (n, d+1)

    @property
    def n(self) -> int:
        return len(self.labels)

    def loss(self, theta: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over the kept training rows (all by default) plus the L2 penalty."""
        x, y = (self.x, self.labels) if keep is None else (self.x[keep], self.labels[keep])
        return nn.functional.cross_entropy(x @ theta.T, y) + 0.5 * self.l2 * (theta ** 2).sum()

    def gradient(self, theta: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient of the training objective (over the kept rows) at θ, shape (k, d+1)."""
        x, y = (self.x, self.labels) if keep is None else (self.x[keep], self.labels[keep])
        r = torch.softmax(x @ theta.T, dim=1) - nn.functional.one_hot(y, self.n_classes).double()
        return r.T @ x / len(y) + self.l2 * theta

    def fit(self, theta0: torch.Tensor | None = None, keep: torch.Tensor | None = None,
            newton_steps: int = 2, max_iter: int = 500) -> torch.Tensor:
        """The minimiser θ̂ (k, d+1): L-BFGS (strong-Wolfe line search) from ``theta0`` or zero, polished by exact
        Newton steps so that the gradient is at round-off level (leave-one-out differences are O(1/n))."""
        theta = (torch.zeros(self.n_classes, self.x.shape[1], dtype=torch.float64) if theta0 is None
                 else theta0.detach().clone()).requires_grad_(True)
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = self.loss(theta, keep)
            value.backward()
            return value

        opt.step(closure)
        theta = theta.detach()
        for _ in range(newton_steps):
            h = self.hessian(theta, keep)
            theta = theta - torch.linalg.solve(h, self.gradient(theta, keep).reshape(-1)).reshape(theta.shape)
        return theta

    def probs(self, theta: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x if features is None else _augment(torch.as_tensor(features, dtype=torch.float64))
        return torch.softmax(x @ theta.T, dim=1)

    def per_sample_grads(self, theta: torch.Tensor, features: torch.Tensor | None = None,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample cross-entropy gradients (n, k·(d+1)), closed form ``(p − y) ⊗ [z, 1]`` (no penalty)."""
        x = self.x if features is None else _augment(torch.as_tensor(features, dtype=torch.float64))
        y = self.labels if labels is None else torch.as_tensor(labels, dtype=torch.long)
        r = torch.softmax(x @ theta.T, dim=1) - nn.functional.one_hot(y, self.n_classes).double()
        return (r[:, :, None] * x[:, None, :]).reshape(len(x), -1)

    def hessian(self, theta: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The exact Hessian of the training objective, (k·(d+1))², closed form
        ``1/n Σ (diag p − p pᵀ) ⊗ x xᵀ + λI``."""
        x = self.x if keep is None else self.x[keep]
        n = len(x)
        p = torch.softmax(x @ theta.T, dim=1)
        k, d1 = theta.shape
        h = torch.empty(k, d1, k, d1, dtype=torch.float64)
        for a in range(k):
            for b in range(a, k):
                w = (p[:, a] * (float(a == b) - p[:, b])) / n
                block = (x * w[:, None]).T @ x
                h[a, :, b, :] = block
                h[b, :, a, :] = block.T
        h = h.reshape(k * d1, k * d1)
        return h + self.l2 * torch.eye(k * d1, dtype=torch.float64)

    def _newton(self, theta: torch.Tensor, keep: torch.Tensor, tol: float, max_iter: int, row: int) -> torch.Tensor:
        """Full Newton steps (the Hessian at each iterate): the fallback where the frozen full-data Hessian converges
        too slowly (a nearly singular Hessian, e.g. features of a network trained in bf16)."""
        for _ in range(max_iter):
            g = self.gradient(theta, keep)
            if float(g.abs().max()) < tol:
                return theta
            step = torch.linalg.solve(self.hessian(theta, keep), g.reshape(-1)).reshape(theta.shape)
            theta = theta - step
            if float(step.abs().max()) < 1e-12 * (1.0 + float(theta.abs().max())):
                return theta  # converged to float64 precision: the gradient's floor lies above tol at this scale
        raise RuntimeError(f"leave-one-out retraining without row {row} did not converge "
                           f"(largest gradient entry {float(self.gradient(theta, keep).abs().max()):.2e} after Newton "
                           "steps)")

    def test_losses(self, theta: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = _augment(torch.as_tensor(features, dtype=torch.float64))
        return nn.functional.cross_entropy(x @ theta.T, torch.as_tensor(labels, dtype=torch.long), reduction="none")

    def predicted_loo_effect(self, theta: torch.Tensor, test_features: torch.Tensor, test_labels: torch.Tensor,
                             damping: float = 0.0, train_index: np.ndarray | None = None,
                             hessian: torch.Tensor | None = None) -> np.ndarray:
        """Koh & Liang's first-order estimate of ``L_t(θ̂_{−i}) − L_t(θ̂)``: (n_test, n_train) = ``−I_up,loss / n``.

        ``hessian``: the undamped ``self.hessian(theta)`` if already computed."""
        h = self.hessian(theta) if hessian is None else hessian
        h = h + damping * torch.eye(len(h), dtype=torch.float64)
        g_test = self.per_sample_grads(theta, test_features, test_labels)  # (t, P)
        s_test = torch.linalg.solve(h, g_test.T)  # (P, t): H⁻¹ ∇L_t
        g_train = self.per_sample_grads(theta)
        if train_index is not None:
            g_train = g_train[torch.as_tensor(train_index)]
        return (g_train @ s_test).T.numpy() / self.n

    def influence_up_loss(self, theta: torch.Tensor, test_features: torch.Tensor, test_labels: torch.Tensor,
                          damping: float = 0.0) -> np.ndarray:
        """Koh & Liang's ``I_up,loss(z_i, z_t) = −∇L_tᵀ H⁻¹ ∇L_i`` (n_test, n_train); positive = harmful."""
        return -self.n * self.predicted_loo_effect(theta, test_features, test_labels, damping)

    def loo_effect(self, theta: torch.Tensor, remove: np.ndarray, test_features: torch.Tensor,
                   test_labels: torch.Tensor, tol: float = 1e-10, max_iter: int = 200,
                   hessian: torch.Tensor | None = None) -> np.ndarray:
        """Exact leave-one-out: retrain without each training row in ``remove`` and return
        ``L_t(θ̂_{−i}) − L_t(θ̂)`` as (n_test, len(remove)).

        Each retraining starts at θ̂ and iterates ``θ ← θ − H(θ̂)⁻¹ ∇L_{−i}(θ)`` (Newton with the full-data
        Hessian, factorised once) until the largest gradient entry is below ``tol``: the objective is strongly
        convex, so this converges to the unique leave-one-out optimum, fast because removing one of n rows
        changes the Hessian by O(1/n)."""
        base = self.test_losses(theta, test_features, test_labels)
        h = self.hessian(theta) if hessian is None else hessian
        h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))  # matvecs beat triangular solves here
        out = []
        for i in np.asarray(remove, dtype=np.int64):
            keep = torch.ones(self.n, dtype=torch.bool)
            keep[int(i)] = False
            theta_i = theta.clone()
            for _ in range(max_iter):
                g = self.gradient(theta_i, keep)
                if float(g.abs().max()) < tol:
                    break
                theta_i = theta_i - (h_inv @ g.reshape(-1)).reshape(theta.shape)
            else:
                theta_i = self._newton(theta.clone(), keep, tol, max_iter=50, row=int(i))  # restart at θ̂
            out.append((self.test_losses(theta_i, test_features, test_labels) - base).numpy())
        return np.stack(out, axis=1)

    def to_linear(self, theta: torch.Tensor) -> nn.Linear:
        """θ as an ``nn.Linear`` (float32), e.g. to put the refitted layer back into a network."""
        layer = nn.Linear(theta.shape[1] - 1, theta.shape[0])
        with torch.no_grad():
            layer.weight.copy_(theta[:, :-1])
            layer.bias.copy_(theta[:, -1])
        return layer


def tracin_last_layer(problem: LastLayerProblem, test_features: torch.Tensor, test_labels: torch.Tensor,
                      epochs: int = 20, lr: float = 0.5, batch_size: int = 64, seed: int = 0,
                      train_index: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """TracIn-CP on the last layer: train it by mini-batch SGD from zero, keep a checkpoint after each epoch,
    and sum ``η ∇ℓ_t(θ_c)·∇ℓ_i(θ_c)`` over the checkpoints. Returns the scores (n_test, n_train) and the
    final θ. Positive: training image i is a proponent of (its gradient steps lowered the loss of) test image t."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(problem.n_classes, problem.x.shape[1], dtype=torch.float64)
    scores = np.zeros((len(test_labels), problem.n if train_index is None else len(train_index)))
    for _ in range(epochs):
        order = torch.randperm(problem.n, generator=gen)
        for j in range(0, problem.n, batch_size):
            idx = order[j:j + batch_size]
            theta = theta.requires_grad_(True)
            loss = problem.loss(theta, keep=idx)
            (g,) = torch.autograd.grad(loss, theta)
            theta = (theta - lr * g).detach()
        g_train = problem.per_sample_grads(theta)
        if train_index is not None:
            g_train = g_train[torch.as_tensor(train_index)]
        g_test = problem.per_sample_grads(theta, test_features, test_labels)
        scores += lr * (g_test @ g_train.T).numpy()
    return scores, theta


def captum_influence(problem: LastLayerProblem, theta: torch.Tensor, test_features: torch.Tensor,
                     test_labels: torch.Tensor, damping: float = 0.0) -> np.ndarray:
    """``problem.predicted_loo_effect(theta, ..., damping)`` computed by captum's ``NaiveInfluenceFunction``: (n_test,
    n_train).

    captum forms the Hessian of the *summed* training loss with autograd and inverts it through its full
    eigendecomposition (``projection_dim`` = every parameter, no eigenvalue dropped), adding ``hessian_reg`` to the
    diagonal; its score is ∇ℓ_tᵀ (H_sum + rI)⁻¹ ∇ℓ_i. With H_sum = n·H_loss and our objective's Hessian
    H_loss + λI, the choice r = n(λ + δ) makes captum's score equal (1/n) ∇ℓ_tᵀ (H + δI)⁻¹ ∇ℓ_i, ours.
    """
    import os
    import tempfile

    from captum.influence import NaiveInfluenceFunction
    from torch.utils.data import TensorDataset

    # captum (and nn.Linear's init) use the global RNG
    with tempfile.TemporaryDirectory() as folder, torch.random.fork_rng():
        layer = problem.to_linear(theta).double()
        n_params = sum(p.numel() for p in layer.parameters())
        path = os.path.join(folder, "last_layer.pt")
        torch.save(layer.state_dict(), path)
        influence = NaiveInfluenceFunction(
            layer, TensorDataset(problem.features, problem.labels), path,
            loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=problem.n, projection_dim=n_params,
            hessian_reg=problem.n * (problem.l2 + damping), hessian_inverse_tol=0.0)
        scores = influence.influence((torch.as_tensor(test_features, dtype=torch.float64),
                                      torch.as_tensor(test_labels, dtype=torch.long)))
    return scores.detach().numpy()
