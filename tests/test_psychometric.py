"""Tests for wbcstudy.psychometric: hand values of ψ, binning, and recovery of known parameters by both fits."""
from __future__ import annotations

import numpy as np
import pytest

from wbcstudy import psychometric as ps

TRUE = dict(threshold=0.4, width=0.5, guess=1 / 8, lapse=0.04)


def simulate(n_images: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0, 1, n_images)
    correct = rng.uniform(size=n_images) < ps.logistic_psychometric(confidence, **TRUE)
    return confidence, correct


def test_psychometric_hand_values() -> None:
    g, lam = TRUE["guess"], TRUE["lapse"]
    assert ps.logistic_psychometric(0.4, **TRUE) == pytest.approx(g + (1 - g - lam) * 0.5)
    assert ps.logistic_psychometric(0.4 - 0.25, **TRUE) == pytest.approx(g + (1 - g - lam) * 0.05)
    assert ps.logistic_psychometric(0.4 + 0.25, **TRUE) == pytest.approx(g + (1 - g - lam) * 0.95)
    assert ps.logistic_psychometric(1e6, **TRUE) == pytest.approx(1 - lam)
    assert ps.logistic_psychometric(-1e6, **TRUE) == pytest.approx(g)
    with pytest.raises(ValueError, match="width"):
        ps.logistic_psychometric(0.0, 0.0, 0.0, 0.1, 0.0)


def test_bin_trials_counts() -> None:
    conf = np.array([0.0, 0.1, 0.45, 0.55, 1.0, 0.95])
    correct = np.array([0, 1, 1, 0, 1, 1])
    rows = ps.bin_trials(conf, correct, n_bins=2)  # bins [0, 0.5), [0.5, 1]
    assert np.allclose(rows, [[np.mean([0, 0.1, 0.45]), 2, 3], [np.mean([0.55, 1.0, 0.95]), 2, 3]])
    assert ps.bin_trials(conf, correct, n_bins=25)[:, 2].sum() == 6
    with pytest.raises(ValueError, match="equal-length"):
        ps.bin_trials(conf, correct[:3])


def test_map_fit_recovers_known_parameters() -> None:
    conf, correct = simulate()
    fit = ps.fit_psychometric(ps.bin_trials(conf, correct, 25), n_classes=8)
    assert fit.guess == pytest.approx(1 / 8)
    assert fit.threshold == pytest.approx(TRUE["threshold"], abs=0.03)
    assert fit.width == pytest.approx(TRUE["width"], rel=0.15)
    assert fit.lapse == pytest.approx(TRUE["lapse"], abs=0.02)
    wrong = ps.PsychometricFit(0.7, 0.5, 0.04, 1 / 8, 0.0)
    data = ps.bin_trials(conf, correct, 25)
    assert (np.abs(fit(data[:, 0]) - data[:, 1] / data[:, 2]).mean()
            < np.abs(wrong(data[:, 0]) - data[:, 1] / data[:, 2]).mean())
    with pytest.raises(ValueError, match="n_correct"):
        ps.fit_psychometric(np.array([[0, 5, 3], [1, 1, 3], [2, 1, 3]]), 8)


def test_psignifit_recovers_known_parameters_and_agrees_with_the_map_fit() -> None:
    conf, correct = simulate(seed=1)
    data = ps.bin_trials(conf, correct, 25)
    out = ps.fit_psignifit(data, n_classes=8)
    assert out["gamma"] == pytest.approx(1 / 8)
    assert out["threshold"] == pytest.approx(TRUE["threshold"], abs=0.04)
    assert out["width"] == pytest.approx(TRUE["width"], rel=0.2)
    assert out["lambda"] == pytest.approx(TRUE["lapse"], abs=0.03)
    assert out["threshold_ci"][0] <= TRUE["threshold"] <= out["threshold_ci"][1]
    mine = ps.fit_psychometric(data, n_classes=8)
    assert mine.threshold == pytest.approx(out["threshold"], abs=0.03)
