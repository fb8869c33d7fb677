"""Psychometric functions of accuracy against confidence (the CytoDiffusion uncertainty analysis).

ψ(x) = γ + (1 − γ − λ) S(x; m, w), S the logistic with S(m) = 0.5 and width w = the distance from S = 0.05 to
S = 0.95 (psignifit's parametrisation). γ (guess rate) is fixed at 1/classes; λ (lapse rate) has a Beta(1, 10)
prior. :func:`fit_psychometric` is a documented maximum-a-posteriori fit (binomial likelihood, Beta(1, 10) on λ, flat
on m and w); :func:`fit_psignifit` runs psignifit 4 (Bayesian, its default priors, the same γ and λ setup).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

_LOGIT_SPAN = 2 * np.log(1 / 0.05 - 1)  # logistic width between S=0.05 and S=0.95 in units of its scale


def logistic_psychometric(x: np.ndarray, threshold: float, width: float, guess: float, lapse: float) -> np.ndarray:
    """ψ(x) = guess + (1 − guess − lapse) / (1 + exp(−(x − threshold) · 2 ln 19 / width))."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    z = (np.asarray(x, dtype=float) - threshold) * _LOGIT_SPAN / width
    return guess + (1 - guess - lapse) * stats.logistic.cdf(z)


def bin_trials(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 25) -> np.ndarray:
    """(levels, n_correct, n_trials) rows: equal-width bins of confidence, level = mean confidence in the bin.

    Empty bins are dropped (psignifit's data format).
    """
    x = np.asarray(confidence, dtype=float)
    k = np.asarray(correct).astype(bool)
    if x.shape != k.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"confidence and correct must be equal-length 1-D arrays, got {x.shape}, {k.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("confidence contains NaN or infinite values")
    edges = np.linspace(x.min(), x.max(), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
    rows = [(x[idx == b].mean(), k[idx == b].sum(), (idx == b).sum()) for b in range(n_bins) if (idx == b).any()]
    return np.array(rows, dtype=float)


@dataclass
class PsychometricFit:
    """A fitted psychometric function (guess fixed)."""

    threshold: float
    width: float
    lapse: float
    guess: float
    log_posterior: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return logistic_psychometric(x, self.threshold, self.width, self.guess, self.lapse)


def fit_psychometric(data: np.ndarray, n_classes: int, lapse_prior: tuple[float, float] = (1.0, 10.0),
                     n_starts: int = 12) -> PsychometricFit:
    """MAP fit of threshold, width and lapse to binned ``data`` (levels, n_correct, n_trials), guess = 1/n_classes.

    Binomial likelihood, Beta(``lapse_prior``) prior on the lapse (bounded to [0, 0.5)), flat priors on threshold
    and (log) width; the best of ``n_starts`` L-BFGS-B starts spread over the data range.
    """
    d = np.asarray(data, dtype=float)
    if d.ndim != 2 or d.shape[1] != 3 or len(d) < 3:
        raise ValueError(f"data must be an (n >= 3, 3) array of (level, n_correct, n_trials), got {d.shape}")
    if np.any(d[:, 1] > d[:, 2]) or np.any(d[:, 1] < 0):
        raise ValueError("n_correct must lie between 0 and n_trials in every row")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    levels, k, n = d.T
    guess = 1.0 / n_classes
    span = float(levels.max() - levels.min()) or 1.0

    def neg_log_posterior(theta: np.ndarray) -> float:
        m, log_w, lapse = theta
        p = np.clip(logistic_psychometric(levels, m, np.exp(log_w), guess, lapse), 1e-12, 1 - 1e-12)
        ll = np.sum(stats.binom.logpmf(k, n, p))
        return -(ll + stats.beta.logpdf(lapse, *lapse_prior))

    rng = np.random.default_rng(0)
    bounds = [(levels.min() - span, levels.max() + span), (np.log(span / 200), np.log(span * 5)), (1e-6, 0.5)]
    best = None
    for i in range(n_starts):
        start = np.array([levels.min() + span * (i + 0.5) / n_starts, np.log(span * rng.uniform(0.1, 1.0)), 0.02])
        res = optimize.minimize(neg_log_posterior, start, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    m, log_w, lapse = best.x
    return PsychometricFit(threshold=float(m), width=float(np.exp(log_w)), lapse=float(lapse), guess=guess,
                           log_posterior=float(-best.fun))


def fit_psignifit(data: np.ndarray, n_classes: int, fix_eta: bool = False) -> dict:
    """psignifit 4 fit (logistic, ``{n}AFC`` so γ = 1/n, λ ~ Beta(1, 10), its default threshold/width priors).

    Returns the MAP estimates and 95% credible intervals of threshold, width and lambda (and eta unless fixed at 0).
    """
    import psignifit

    d = np.asarray(data, dtype=float)
    kwargs = dict(sigmoid="logistic", experiment_type=f"{int(n_classes)}AFC", beta_prior=10, verbose=False)
    if fix_eta:
        kwargs["fixed_parameters"] = {"eta": 0.0}
    result = psignifit.psignifit(d, **kwargs)
    out = {name: float(result.parameter_estimate_MAP[name])
           for name in ("threshold", "width", "lambda", "gamma", "eta")}
    for name in ("threshold", "width", "lambda"):
        low, high = result.confidence_intervals[name]["0.95"]
        out[f"{name}_ci"] = [float(low), float(high)]
    return out
