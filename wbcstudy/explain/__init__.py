"""Trustworthiness analyses: Fisher information, influence functions, Grad-CAM and robustness perturbations."""
from wbcstudy.explain.fisher import (
    empirical_fisher,
    fisher_information,
    per_sample_fisher_trace,
    per_sample_gradients,
    readme_fisher_score,
)

__all__ = [
    "empirical_fisher",
    "fisher_information",
    "per_sample_fisher_trace",
    "per_sample_gradients",
    "readme_fisher_score",
]
from wbcstudy.explain.gradcam import (
    deletion_insertion,
    gradcam_layer_maps,
    gradcam_maps,
    overlay,
    randomised_weights_similarity,
)
from wbcstudy.explain.influence import (
    LastLayerProblem,
    captum_influence,
    last_layer_inputs,
    readme_influence,
    tracin_last_layer,
)
from wbcstudy.explain.robustness import (
    IDENTITY_LEVELS,
    PERTURBATIONS,
    README_LEVELS,
    SWEEP_LEVELS,
    brightness,
    gaussian_blur,
    gaussian_noise,
    laplacian_energy,
    perturbed_predictions,
    severity_sweep,
    sweep_table,
)

__all__ += [
    "deletion_insertion", "gradcam_layer_maps", "gradcam_maps", "overlay", "randomised_weights_similarity",
    "LastLayerProblem", "captum_influence", "last_layer_inputs", "readme_influence", "tracin_last_layer",
    "IDENTITY_LEVELS", "PERTURBATIONS", "README_LEVELS", "SWEEP_LEVELS", "brightness", "gaussian_blur",
    "gaussian_noise", "laplacian_energy", "perturbed_predictions", "severity_sweep", "sweep_table",
]
