"""Tests for wbcstudy.diffusion_classifier on problems whose answer is known.

The test double is the exact (posterior-mean) ε-predictor for classes x_0 ~ N(μ_c, τ² I):
ε̂_c(x_t, t) = √(1−ᾱ) (x_t − √ᾱ μ_c) / D_t with D_t = ᾱ τ² + 1 − ᾱ, so
ε − ε̂_c = A_t ε − B_t (x_0 − μ_c) with B_t = √(ᾱ(1−ᾱ)) / D_t: the expected error is smallest for the template nearest
the image (the Bayes classifier of these classes). A reference implementation written after the authors' per-image loop
checks the batched one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ttest_rel

from wbcstudy import diffusion_classifier as dc
from wbcstudy.augment import dihedral_inverse, dihedral_transform
from wbcstudy.models.diffusion import make_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 8
K = 5


class TemplateDenoiser:
    """Exact ε-predictor for Gaussian classes N(templates[c], τ² I), plus an optional wobble.

    The wobble (a deterministic function of x_t and the class) makes per-trial errors noisy, so that the
    t-test has work to do. ``calls`` records the batch size of every call.
    """

    def __init__(self, templates: torch.Tensor, alphas_cumprod: torch.Tensor, wobble: float = 0.0,
                 tau: float = 0.3) -> None:
        self.templates, self.alphas, self.wobble, self.tau = templates, alphas_cumprod.float(), wobble, tau
        self.calls: list[int] = []

    def __call__(self, noisy: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(labels))
        ab = self.alphas[t].view(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() * (noisy - ab.sqrt() * self.templates[labels]) / (ab * self.tau**2 + 1 - ab)
        if self.wobble:
            eps = eps + self.wobble * torch.sin(3.0 * noisy + labels.view(-1, 1, 1, 1).float())
        return eps


def symmetrise(x: torch.Tensor) -> torch.Tensor:
    """Mean over the 8 dihedral images: a template the classifier's per-trial flips/rot90 leave unchanged."""
    return sum(dihedral_transform(x, code) for code in range(8)) / 8


def make_problem(seed: int = 0, n_per_class: int = 2, spread: float = 0.6, noise: float = 0.15,
                 symmetric: bool = True):
    """Templates far apart and images = a template plus a little noise; labels are the known answer."""
    g = torch.Generator().manual_seed(seed)
    templates = (torch.rand((K, 3, SIDE, SIDE), generator=g) * 2 - 1) * spread
    if symmetric:
        templates = symmetrise(templates) * 2
    labels = torch.arange(K).repeat_interleave(n_per_class)
    images = (templates[labels] + noise * torch.randn((len(labels), 3, SIDE, SIDE), generator=g)).clamp(-1, 1)
    return templates, images, labels.numpy()


def test_disk_mask_hand_counts() -> None:
    m = dc.disk_mask(5, 2 / 5)  # radius 2 around (2, 2): the 13 lattice points with x²+y² <= 4
    assert m.shape == (5, 5) and int(m.sum()) == 13
    assert m[2, 0] == 1 and m[0, 0] == 0 and m[0, 2] == 1 and m[1, 1] == 1
    m45 = dc.disk_mask(45, 20 / 45)  # the paper's latent: radius 20 of 45 px
    expected = sum(1 for y in range(45) for x in range(45) if (x - 22) ** 2 + (y - 22) ** 2 <= 400)
    assert int(m45.sum()) == expected
    with pytest.raises(ValueError, match="radius_fraction"):
        dc.disk_mask(8, 0)


def test_stratified_timesteps_cover_the_range_once() -> None:
    t = dc.stratified_timesteps(10, 1000, seed=3)
    expected = 999 - np.linspace(1, 999, 10, dtype=int)
    assert sorted(t.tolist()) == sorted(expected.tolist())
    assert not np.array_equal(t, np.sort(t)) and not np.array_equal(t, np.sort(t)[::-1])  # shuffled
    assert np.array_equal(t, dc.stratified_timesteps(10, 1000, seed=3))


def test_poly4_weights_hand_values_and_fit_recovers_coefficients() -> None:
    a = np.array(dc.PAPER_POLY4)
    t = np.array([0, 500, 999])
    s = (1000 - t) / 1000
    hand = 1 / (a[0] + a[1] * s + a[2] * s**2 + a[3] * s**3 + a[4] * s**4)
    assert np.allclose(dc.poly4_weights(t), hand, rtol=1e-9)
    # errors whose across-class std at timestep t is exactly poly4(s) for chosen coefficients
    coef = np.array([1.5, 2.0, -1.0, 0.5, 0.25])
    timesteps = np.repeat(np.linspace(0, 990, 12).astype(int), 3)
    spread = np.polynomial.polynomial.polyval((1000 - timesteps) / 1000, coef)
    base = np.array([-1.0, 1.0, -1.0, 1.0])  # std 1 across the 4 classes
    errors = 7.0 + spread[:, None] * base[None, :]
    fitted = dc.fit_poly4_weighting(timesteps, errors)
    assert np.allclose(fitted, coef, atol=1e-6)
    # the (N, trials, K) form with NaN rows ignored gives the same fit
    e3 = np.stack([errors[i::3] for i in range(3)])
    e3 = np.concatenate([e3, np.full((1, 12, 4), np.nan)])
    assert np.allclose(dc.fit_poly4_weighting(timesteps[::3], e3), coef, atol=1e-6)
    with pytest.raises(ValueError, match="not positive"):
        dc.poly4_weights(np.array([0]), [-1.0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="5 distinct"):
        dc.fit_poly4_weighting(np.array([1, 2]), np.ones((2, 3)))


def test_known_answer_and_pruning_schedule() -> None:
    """Clearly separated classes: every image right, wrong classes dropped at the scheduled checks, well before the
    end."""
    sched = make_scheduler()
    templates, images, labels = make_problem()
    model = TemplateDenoiser(templates, sched.alphas_cumprod)
    res = dc.diffusion_classify(model, images, sched, K, max_trials=60, weighting="uniform", images_per_call=4)
    assert np.array_equal(res.predictions, labels)
    checks = set(range(21, 60, 5))  # pruning runs after trial indices 20, 25, ... i.e. after 21, 26, ... trials
    assert set(res.trials.tolist()) <= checks and res.trials.max() <= 41
    assert np.array_equal(res.unet_evaluations, res.class_trials.sum(axis=1))
    assert np.all(res.class_trials[np.arange(len(labels)), labels] == res.trials)  # the answer is never pruned
    no_prune = dc.diffusion_classify(model, images, sched, K, max_trials=60, weighting="uniform", prune=False,
                                     images_per_call=4)
    assert np.array_equal(no_prune.predictions, labels)
    assert np.all(no_prune.unet_evaluations == 60 * K)
    # every call batches all active classes of up to 4 images
    assert max(model.calls) == 4 * K


def test_matches_reference_loop_and_is_batch_invariant() -> None:
    """A noisy problem: the batched classifier equals a per-image loop written after the authors' code."""
    sched = make_scheduler()
    templates, images, labels = make_problem(seed=1, n_per_class=1, spread=0.2, noise=0.3)
    model = TemplateDenoiser(templates, sched.alphas_cumprod, wobble=0.5)
    kw = dict(max_trials=80, weighting="poly4", augment=True, seed=5)
    res = dc.diffusion_classify(model, images, sched, K, images_per_call=3, keep_errors=True, **kw)
    single = dc.diffusion_classify(model, images, sched, K, images_per_call=1, **kw)
    assert np.array_equal(res.predictions, single.predictions)
    assert np.array_equal(res.unet_evaluations, single.unet_evaluations)
    assert np.allclose(res.confidence, single.confidence, rtol=1e-6)

    alphas = sched.alphas_cumprod.double()
    timesteps = dc.stratified_timesteps(80, 1000, 5)
    weights = dc.poly4_weights(timesteps)
    mask = dc.disk_mask(SIDE)
    for i in range(len(images)):
        gen = torch.Generator().manual_seed(5 * 1_000_003 + i)
        active = list(range(K))
        rows = np.zeros((80, K))
        first_raw = np.full(K, np.nan)
        n_done = 0
        for idx in range(80):
            code = int(torch.randint(0, 8, (1,), generator=gen))
            x0 = images[i]
            x0 = x0.flip(-1) if code & 1 else x0
            x0 = x0.flip(-2) if code & 2 else x0
            x0 = x0.transpose(-1, -2) if code & 4 else x0
            noise = torch.randn(x0.shape, generator=gen)
            ab = float(alphas[timesteps[idx]])
            noisy = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * noise
            for c in active:
                pred = model(noisy[None], torch.tensor([int(timesteps[idx])]), torch.tensor([c]))[0]
                raw = float((((noise - pred) * mask) ** 2).sum())
                if idx == 0:
                    first_raw[c] = raw
                rows[idx, c] = raw * weights[idx]
            row_min = min(rows[idx, c] for c in active)
            for c in range(K):
                rows[idx, c] = rows[idx, c] - row_min if c in active else rows[:idx, c].mean()
            n_done = idx + 1
            mean = rows[:n_done].mean(axis=0)
            best = min(active, key=lambda c: (mean[c], c))
            if idx >= 20 and idx % 5 == 0:
                for c in list(active):
                    if (c != best and ttest_rel(rows[:n_done, c], rows[:n_done, best]).pvalue < 2e-3
                            and mean[c] > mean[best]):
                        active.remove(c)
                if len(active) <= 1:
                    break
        mean = rows[:n_done].mean(axis=0)
        norm = mean / mean.mean()
        pred = min(active, key=lambda c: (norm[c], c))
        assert res.predictions[i] == pred
        assert res.trials[i] == n_done
        assert np.isclose(res.confidence[i], np.sort(np.delete(norm, pred))[0] - norm[pred], rtol=1e-5, atol=1e-9)
        assert np.allclose(res.normalised_errors[i], norm, rtol=1e-5)
        assert np.allclose(res.raw_errors[i, 0], first_raw, rtol=1e-5)  # kept errors are the unweighted disk errors
    # pruning only ever happens right after trials 21, 26, 31, ... or the class ran to the end
    allowed = set(range(21, 81, 5)) | {80}
    assert set(np.unique(res.class_trials).tolist()) <= allowed
    assert res.unet_evaluations.sum() < 80 * K * len(images)  # something was pruned


def test_pruning_drops_clearly_wrong_classes_early_and_keeps_the_answer() -> None:
    sched = make_scheduler()
    g = torch.Generator().manual_seed(2)
    templates = (torch.rand((K, 3, SIDE, SIDE), generator=g) * 2 - 1) * 0.8
    templates[1] = templates[0] + 0.05 * torch.randn((3, SIDE, SIDE), generator=g)  # a near twin of class 0
    templates = symmetrise(templates)
    image = templates[0:1] + 0.01 * torch.randn((1, 3, SIDE, SIDE), generator=g)
    model = TemplateDenoiser(templates, sched.alphas_cumprod, wobble=0.3)
    res = dc.diffusion_classify(model, image, sched, K, max_trials=100, weighting="uniform")
    assert res.predictions[0] == 0
    far = [2, 3, 4]
    assert res.class_trials[0, far].max() < res.class_trials[0, 1]  # the twin needs more evidence than the far classes
    assert res.class_trials[0, far].max() <= 41
    assert res.unet_evaluations[0] < 100 * K


def test_confidence_is_the_gap_between_the_two_smallest_scores() -> None:
    sched = make_scheduler()
    templates, images, labels = make_problem(seed=3, n_per_class=1)
    model = TemplateDenoiser(templates, sched.alphas_cumprod)
    res = dc.diffusion_classify(model, images, sched, K, max_trials=30, prune=False, weighting="uniform")
    s = np.sort(res.normalised_errors, axis=1)
    assert np.allclose(res.confidence, s[:, 1] - s[:, 0])
    assert np.allclose(res.normalised_errors.mean(axis=1), 1.0)
    # an image halfway between two templates is less confidently classified than one on a template
    mid = (templates[0] + templates[1]) / 2
    both = torch.stack([templates[0], mid])
    r2 = dc.diffusion_classify(model, both, sched, K, max_trials=30, prune=False, weighting="uniform")
    assert r2.confidence[0] > 2 * r2.confidence[1]


def test_accuracy_vs_trials_from_kept_errors() -> None:
    sched = make_scheduler()
    templates, images, labels = make_problem(seed=4, n_per_class=1)
    model = TemplateDenoiser(templates, sched.alphas_cumprod, wobble=0.2)
    res = dc.diffusion_classify(model, images, sched, K, max_trials=25, prune=False, keep_errors=True,
                                weighting="uniform")
    per_trial = dc.predictions_after_each_trial(res.raw_errors, np.ones(25))
    assert per_trial.shape == (K, 25)
    assert np.array_equal(per_trial[:, -1], res.predictions)
    first = res.raw_errors[:, 0, :]
    assert np.array_equal(per_trial[:, 0], first.argmin(axis=1))
    with pytest.raises(ValueError, match="complete"):
        dc.predictions_after_each_trial(np.full((1, 2, 3), np.nan), np.ones(2))


def test_trial_weights_and_accuracy_after_each_trial_by_hand() -> None:
    t = np.array([999, 500, 1])
    assert np.array_equal(dc.trial_weights(t, "uniform"), np.ones(3))
    assert np.allclose(dc.trial_weights(t, "poly4"), dc.poly4_weights(t, dc.PAPER_POLY4))
    assert np.allclose(dc.trial_weights(t, (2.0, 0, 0, 0, 0)), 0.5)
    with pytest.raises(ValueError, match="unknown weighting"):
        dc.trial_weights(t, "cosine")
    # two images (labels 1, 0), two trials at t=999 and t=1, two classes
    errors = np.array([[[0.0, 2.0], [1.0, 0.0]],    # trial 1 favours class 0 by 2, trial 2 class 1 by 1
                       [[0.0, 2.0], [0.0, 1.0]]])   # both trials favour class 0
    labels = np.array([1, 0])
    # uniform: image 0's running means (0, 2) then (0.5, 1.0): class 0 (wrong) after both trials
    assert np.allclose(dc.accuracy_after_each_trial(errors, np.array([999, 1]), labels, "uniform"), [0.5, 0.5])
    # 1/poly4 with poly4 = 1 - 0.9 s: weight ~1 at t=999 (s=0.001), ~10 at t=1 (s=0.999); image 0's means become
    # (0, 2) then (~5, 1): class 1 (right) after two trials
    weighted = dc.accuracy_after_each_trial(errors, np.array([999, 1]), labels, (1.0, -0.9, 0, 0, 0))
    assert np.allclose(weighted, [0.5, 1.0])
    with pytest.raises(ValueError, match="labels"):
        dc.accuracy_after_each_trial(errors, np.array([999, 1]), labels[:1], "uniform")


def test_counterfactual_heatmap_equals_template_difference() -> None:
    """For the exact denoiser, heatmap_c = mean_t(B_t) (μ_c − μ_pred) · disk: the ε and x_0 terms cancel."""
    sched = make_scheduler()
    templates, images, labels = make_problem(seed=5, n_per_class=1, symmetric=False)
    model = TemplateDenoiser(templates, sched.alphas_cumprod)
    heat, pred = dc.counterfactual_heatmaps(model, images[:2], sched, K, n_trials=12, augment=False,
                                            weighting="uniform", seed=0)
    assert np.array_equal(pred, labels[:2])
    ab = sched.alphas_cumprod.double()[dc.stratified_timesteps(12, 1000, 0)]
    b_t = lambda a: (a * (1 - a)) ** 0.5 / (a * 0.09 + 1 - a)  # noqa: E731  (τ = 0.3)
    root_snr = float(b_t(ab).mean())
    mask = dc.disk_mask(SIDE).numpy()
    for i in range(2):
        expected = root_snr * (templates - templates[pred[i]]).numpy() * mask
        assert np.allclose(heat[i], expected, rtol=1e-3, atol=1e-3)
        assert np.allclose(heat[i, pred[i]], 0)
    # with dihedral augmentation each trial's difference is mapped back to the image frame: replay the trial codes
    side = SIDE + 1  # odd side: the disk is symmetric under the dihedral group
    odd = torch.nn.functional.pad(templates, (0, 1, 0, 1))
    model_odd = TemplateDenoiser(odd, sched.alphas_cumprod)
    img_odd = torch.nn.functional.pad(images[:1], (0, 1, 0, 1))
    heat_aug, pred_aug = dc.counterfactual_heatmaps(model_odd, img_odd, sched, K, n_trials=12, augment=True,
                                                    weighting="uniform", seed=0)
    gen = torch.Generator().manual_seed(0)
    expected = torch.zeros((K, 3, side, side))
    for t in dc.stratified_timesteps(12, 1000, 0):
        code = int(torch.randint(0, 8, (1,), generator=gen))
        torch.randn((3, side, side), generator=gen)
        ab_t = float(sched.alphas_cumprod.double()[t])
        expected += b_t(ab_t) * dihedral_inverse(odd - odd[pred_aug[0]], code) / 12
    expected = expected.numpy() * dc.disk_mask(side).numpy()
    assert np.allclose(heat_aug[0], expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(heat_aug[0], root_snr * (odd - odd[pred_aug[0]]).numpy() * dc.disk_mask(side).numpy(),
                           atol=1e-2)  # the augmentation mattered


def test_bad_input_raises() -> None:
    sched = make_scheduler()
    templates, images, _ = make_problem()
    model = TemplateDenoiser(templates, sched.alphas_cumprod)
    with pytest.raises(ValueError, match="weighting"):
        dc.diffusion_classify(model, images, sched, K, weighting="snr")
    with pytest.raises(ValueError, match="at least 2 classes"):
        dc.diffusion_classify(model, images, sched, 1)
    with pytest.raises(ValueError, match="square"):
        dc.diffusion_classify(model, images[..., :6], sched, K)


def test_bf16_precision_autocasts_only_the_eps_predictions(monkeypatch) -> None:
    """precision="bf16" runs each ε-prediction under bf16 autocast (fp32 runs none) and keeps the known answer."""
    from wbcstudy.train import force_precision, precision_forced

    force_precision(None)
    sched = make_scheduler()
    templates, images, labels = make_problem()
    seen: list[bool] = []

    class Recording(TemplateDenoiser):
        def __call__(self, noisy, t, labels):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().__call__(noisy, t, labels)

    fp32 = dc.diffusion_classify(Recording(templates, sched.alphas_cumprod), images, sched, K, max_trials=10,
                                 prune=False, weighting="uniform", precision="fp32")
    assert seen and not any(seen)
    seen.clear()
    bf16 = dc.diffusion_classify(Recording(templates, sched.alphas_cumprod), images, sched, K, max_trials=10,
                                 prune=False, weighting="uniform", precision="bf16")
    assert seen and all(seen)
    assert np.array_equal(bf16.predictions, labels) and np.array_equal(fp32.predictions, labels)
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the call
    seen.clear()
    with precision_forced("bf16"):  # the chapter's forced precision wins over the argument
        dc.diffusion_classify(Recording(templates, sched.alphas_cumprod), images[:2], sched, K, max_trials=2,
                              prune=False)
    assert all(seen)


def test_candidates_restrict_the_classes_conditioned_on_and_predicted() -> None:
    """With the true class among the candidates the answer is unchanged; without it, the prediction is a candidate;
    classes outside the candidates are never evaluated and their normalised errors are NaN."""
    sched = make_scheduler()
    templates, images, labels = make_problem()
    kwargs = dict(max_trials=10, prune=False, weighting="uniform", precision="fp32")
    full = dc.diffusion_classify(TemplateDenoiser(templates, sched.alphas_cumprod), images, sched, K, **kwargs)
    keep = [0, 2, 4]
    denoiser = TemplateDenoiser(templates, sched.alphas_cumprod)
    part = dc.diffusion_classify(denoiser, images, sched, K, candidates=keep, **kwargs)
    inside = np.isin(labels, keep)
    assert np.array_equal(part.predictions[inside], labels[inside])
    assert np.array_equal(full.predictions, labels)
    assert np.isin(part.predictions, keep).all()  # the cells of classes 1 and 3 get a candidate's label
    assert np.isnan(part.normalised_errors[:, [1, 3]]).all() and np.isfinite(part.normalised_errors[:, keep]).all()
    assert np.allclose(part.normalised_errors[:, keep].mean(axis=1), 1.0)  # normalised over the candidates
    assert (part.unet_evaluations == 10 * len(keep)).all() and (full.unet_evaluations == 10 * K).all()
    assert sum(denoiser.calls) == len(labels) * 10 * len(keep)
    assert (part.confidence[inside] > 0).all()
    for bad in ([0], [0, 0], [0, K]):
        with pytest.raises(ValueError, match="candidates"):
            dc.diffusion_classify(denoiser, images[:1], sched, K, candidates=bad, **kwargs)
