"""How realistic generated images are: cosine-similarity gap, Fréchet distance in a learned feature space,
and a classifier two-sample test (C2ST).

The checks stand in for a human expert's judgement of generated cells (W-Net and CytoDiffusion
chapters). Each takes uint8 NHWC images or feature matrices and returns plain numbers.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import linalg, stats
from torch import nn

from wbcstudy.evaluate import wilson_interval

__all__ = ["mean_cosine_similarity", "cosine_similarity_gap", "frechet_distance", "C2STResult",
           "classifier_two_sample_test"]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (flattened per item, float64) scaled to unit length."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cosine similarity is undefined for an all-zero item")
    return flat / norms


def mean_cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> float:
    """Mean cosine similarity over all pairs (a_i, b_j); with ``b`` None, over the distinct pairs i < j of ``a``.

    Items are flattened (an image becomes its vector of pixel values); the similarity of two
    vectors is u·v / (‖u‖‖v‖). The mean over all pairs equals ū_a · ū_b, where ū is the mean of
    the unit vectors, so no pair matrix is built.
    """
    ua = _unit_rows(a)
    if b is None:
        n = len(ua)
        if n < 2:
            raise ValueError("need at least two items for within-set similarity")
        s = ua.sum(axis=0)
        return float((s @ s - n) / (n * (n - 1)))  # Σ_{i≠j} u_i·u_j = ‖Σu‖² − Σ‖u_i‖²
    ub = _unit_rows(b)
    return float(ua.mean(axis=0) @ ub.mean(axis=0))


def cosine_similarity_gap(real: np.ndarray, real_labels: np.ndarray, generated: np.ndarray,
                          generated_labels: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per class: mean real–real and real–generated cosine similarity and their gap (real–real minus real–generated).

    This is the paper's Table 7 check made precise: within each class, the mean similarity
    over distinct pairs of real images, the mean over all (real, generated) pairs, and the
    difference, in cosine units (×100 gives the paper's percentage points).
    """
    rows = []
    for k, name in enumerate(classes):
        r, g = real[np.asarray(real_labels) == k], generated[np.asarray(generated_labels) == k]
        if len(r) < 2 or len(g) < 1:
            raise ValueError(f"class {name!r} needs at least two real and one generated item, got {len(r)} and "
                             f"{len(g)}")
        rr, rg = mean_cosine_similarity(r), mean_cosine_similarity(r, g)
        rows.append({"class": name, "n_real": len(r), "n_generated": len(g), "real_real": rr,
                     "real_generated": rg, "gap": rr - rg})
    return pd.DataFrame(rows).set_index("class")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature matrices (rows = items): ‖μa−μb‖² + tr(Σa + Σb −
    2(ΣaΣb)^½).

    The FID formula (Heusel et al. 2017); which network gives the features decides what it
    measures, so report it with the network's name and a real-vs-real reference value.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (n, d) feature matrices with the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two items per set")
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # fewer items than dimensions make the covariances singular; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():  # as the reference implementation (pytorch-fid): offset the diagonals
            eps = 1e-6 * np.eye(len(cov_a))
            root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root.real))


@dataclass
class C2STResult:
    """Held-out accuracy of a real-vs-generated classifier: 0.5 means the two sets cannot be told apart."""

    accuracy: float
    low: float
    high: float
    p_value: float  # one-sided binomial test of accuracy > 0.5
    n_test: int
    history: pd.DataFrame


def classifier_two_sample_test(real: np.ndarray, generated: np.ndarray,
                               make_model: Callable[[], nn.Module], config, test_fraction: float = 0.5,
                               seed: int = 0, augment=None) -> C2STResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): train ``make_model()`` to tell real (0) from generated (1).

    Equal numbers of real and generated images are drawn (the smaller set's size), each set is
    split at random into training and held-out parts (``test_fraction`` held out), the model is
    trained with ``wbcstudy.train.fit`` under ``config`` on the training parts, and its accuracy on
    the held-out parts is returned with a Wilson interval and the binomial p-value against 0.5.
    ``make_model`` must return a two-class model that accepts uint8 NHWC batches.
    """
    from wbcstudy.train import fit, predict_proba

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    real, generated = np.asarray(real), np.asarray(generated)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {real.shape[1:]} vs {generated.shape[1:]}")
    n = min(len(real), len(generated))
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"{n} images per set are too few for a two-sample test")
    rng = np.random.default_rng(seed)
    r_idx, g_idx = rng.permutation(len(real))[:n], rng.permutation(len(generated))[:n]
    x_train = np.concatenate([real[r_idx[n_test:]], generated[g_idx[n_test:]]])
    y_train = np.r_[np.zeros(n - n_test), np.ones(n - n_test)].astype(np.int64)
    x_test = np.concatenate([real[r_idx[:n_test]], generated[g_idx[:n_test]]])
    y_test = np.r_[np.zeros(n_test), np.ones(n_test)].astype(np.int64)
    result = fit(make_model(), (torch.from_numpy(x_train), torch.from_numpy(y_train)), None, config,
                 augment=augment, n_classes=2)
    pred = predict_proba(result.model, torch.from_numpy(x_test)).argmax(1)
    correct = int((pred == y_test).sum())
    low, high = wilson_interval(correct, len(y_test))
    p_value = float(stats.binomtest(correct, len(y_test), 0.5, alternative="greater").pvalue)
    return C2STResult(correct / len(y_test), low, high, p_value, len(y_test), result.history)
