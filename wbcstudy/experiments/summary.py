"""The Summary chapter's parameters (its procedures live in ``wbcstudy.benchmark``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Parameters:
    """The Summary chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("summary", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name: also the profile whose chapter recipes train the benchmarked models
    results_dir: str = 'book/results'  # where summary.json is written (the audit reads the published book/results)
    precision: str = 'auto'  # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively)
    deterministic: bool = False  # ask torch for deterministic algorithms (the smoke profile's regression copy)
    seed: int = 0  # seeds every benchmarked model's training and the test-cell subsets
    n_boot: int = 1000  # bootstrap resamples for every interval
    test_limit: int = 0  # PBC-5 test cells for the classification metrics (0: all 1,028), a stratified subset otherwise
    #: of those, the stratified subset the diffusion classifier is tested on (~0.36 s a cell)
    diffusion_test_limit: int = 200
    robustness_cells: int = 500  # stratified test cells every perturbation level is applied to
    shift_limit: int = 0  # cells per domain-shift set (0: all), stratified
    anomaly_limit: int = 0  # normal and anomalous cells for the anomaly AUROC (0: all test cells of the classes)
    #: the diffusion classifier's perturbed cells (the README's three settings only)
    diffusion_robustness_cells: int = 40
    diffusion_shift_limit: int = 40  # the diffusion classifier's cells per domain-shift set (in each variant)
    #: the shift sets as is, scale-matched, stain-normalised
    shift_variants: list = field(default_factory=lambda: ['as_is', 'matched', 'stainnorm'])
    diffusion_anomaly_limit: int = 60  # the diffusion classifier's normal and anomalous cells for the anomaly AUROC
    #: cells the diffusion classifier's milliseconds per image are timed on (others: 256)
    diffusion_latency_cells: int = 16
    retrain: bool = False  # train every model again even where build/models holds one made with the same recipe
