"""Trustworthiness analyses: Fisher information, influence functions, Grad-CAM and robustness perturbations."""
from wbcstudy.explain.fisher import (
    empirical_fisher,
    fisher_information,
    one_hot,
    per_sample_fisher_trace,
    per_sample_gradients,
    readme_fisher_score,
)

__all__ = [
    "empirical_fisher",
    "fisher_information",
    "one_hot",
    "per_sample_fisher_trace",
    "per_sample_gradients",
    "readme_fisher_score",
]
