"""Realism checks of generated images against hand computations and known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from torch import nn

from wbcstudy.models.baselines import with_input_adapter
from wbcstudy.realism import classifier_two_sample_test, cosine_similarity_gap, frechet_distance, mean_cosine_similarity
from wbcstudy.train import TrainConfig


def test_mean_cosine_similarity_matches_the_pair_loop():
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 2, 2, 3)), rng.random((4, 2, 2, 3))
    fa, fb = a.reshape(7, -1), b.reshape(4, -1)
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    within = np.mean([cos(fa[i], fa[j]) for i in range(7) for j in range(7) if i != j])
    between = np.mean([cos(u, v) for u in fa for v in fb])
    assert mean_cosine_similarity(a) == pytest.approx(within, abs=1e-12)
    assert mean_cosine_similarity(a, b) == pytest.approx(between, abs=1e-12)


def test_mean_cosine_similarity_hand_case_and_errors():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # pairs: (e1,e2)=0, (e1,d)=1/√2, (e2,d)=1/√2
    assert mean_cosine_similarity(a) == pytest.approx(2 / np.sqrt(2) / 3)
    with pytest.raises(ValueError, match="all-zero"):
        mean_cosine_similarity(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="two items"):
        mean_cosine_similarity(np.ones((1, 3)))


def test_cosine_similarity_gap_is_zero_for_copies_and_positive_for_noise():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (20, 4, 4, 3)).astype(np.uint8)
    labels = np.repeat([0, 1], 10)
    same = cosine_similarity_gap(real, labels, real, labels, ["a", "b"])
    # real–real averages over distinct pairs, real–generated over all pairs incl. the 10 self-pairs (similarity 1)
    rr = same["real_real"].to_numpy()
    assert np.allclose(same["real_generated"], (rr * 90 + 10) / 100)
    shifted = cosine_similarity_gap(real, labels, 255 - real, labels, ["a", "b"])
    assert (shifted["gap"] > 0).all() and list(shifted.index) == ["a", "b"]
    with pytest.raises(ValueError, match="class 'b'"):
        cosine_similarity_gap(real, labels, real[:5], labels[:5], ["a", "b"])


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(300, 3)) * 2 + 1
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # one dimension, equal variance: the distance is the squared mean shift
    x = rng.normal(size=(1000, 1))
    assert frechet_distance(x, x + 3.0) == pytest.approx(9.0, rel=1e-6)
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(a, b[:, :2])


def _tiny_cnn():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    return with_input_adapter(net, [0.5] * 3, [0.25] * 3)


def test_c2st_separates_different_sets_and_not_identical_ones(one_thread):
    rng = np.random.default_rng(3)
    real = rng.integers(0, 128, (120, 8, 8, 3)).astype(np.uint8)
    bright = rng.integers(128, 256, (120, 8, 8, 3)).astype(np.uint8)
    same = rng.integers(0, 128, (120, 8, 8, 3)).astype(np.uint8)
    cfg = TrainConfig(epochs=15, batch_size=16, lr=1e-2, progress=False, device="cpu", precision="fp32")
    easy = classifier_two_sample_test(real, bright, _tiny_cnn, cfg, seed=0)
    assert easy.accuracy > 0.95 and easy.p_value < 1e-6 and easy.n_test == 120
    null = classifier_two_sample_test(real, same, _tiny_cnn, cfg, seed=0)
    assert 0.3 < null.accuracy < 0.7 and null.low < 0.5 < null.high
    with pytest.raises(ValueError, match="differ in shape"):
        classifier_two_sample_test(real, bright[:, :4], _tiny_cnn, cfg)
