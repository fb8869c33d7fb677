"""Cells of the trustworthiness chapter (written to notebooks/trust.ipynb by tools/make_notebooks.py)."""
from tools.cells import PROVENANCE, SETUP, code, md

CELLS = [
    md('''
# Trustworthiness: accuracy, robustness, calibration, Fisher information, influence and Grad-CAM

The paper (a project README with Keras code, `003` in the study's sources) trains a custom CNN, VGG16 and
ResNet50 on five white-blood-cell classes, claims test accuracies of about 95%, 97% and 98%, and then
examines trust: robustness to noise, blur and brightness; a "Fisher information" score per image; "influence
functions" of training images; Grad-CAM maps; and a Streamlit app. Its Fisher score is ‖p − y‖² and its
influence is −(p_i − y_i)·(p_j − y_j): both are built from the gradient of the loss with respect to the
*logits*, not the parameters. **Questions:** on PBC's five WBC classes, how accurate, robust, calibrated and
explainable is each model — and how do the README's shortcut scores compare with the real empirical Fisher
information and with influence functions validated against actual leave-one-out retraining?
'''),
    code(SETUP, "hide-input"),
    code('''
profile: str = "cpu"  # papermill profile name, recorded in the results
results_dir: str = "book/results"  # where trust.json is written (relative to the project root)
app_checkpoint: str = "build/trust/app_model.pt"  # where the Streamlit app's model is written
seed: int = 0  # seeds weight init, subsets, shuffling and augmentation
cnn_size: int = 32  # custom CNN input in px (the paper: 128; a multiple of 16)
vgg_size: int = 32  # VGG16 from-scratch input in px (the paper: 224, ImageNet-frozen)
resnet_size: int = 64  # ResNet50 from-scratch input in px (the paper: 224, ImageNet-frozen)
effnet_size: int = 64  # EfficientNet-Lite0 input in px
source_size: int = 64  # px of the decoded PBC cache every model's input is resized from
train_limit: int = 0  # 0: every training image for the custom CNN and EfficientNet; >0: a stratified subset
scratch_train_limit: int = 1500  # stratified training subset for VGG16 and ResNet50 from scratch
eval_limit: int = 0  # 0: the whole validation and test splits; >0: stratified subsets
cnn_epochs: int = 2  # custom CNN epochs (Adam, peak lr cnn_lr, one-cycle)
scratch_epochs: int = 2  # VGG16 and ResNet50 epochs
effnet_frozen_epochs: int = 2  # EfficientNet-Lite0 with a frozen ImageNet base: only the head trains
effnet_finetuned_epochs: int = 1  # EfficientNet-Lite0 fine-tuned end to end
batch_size: int = 64  # training batch size (the paper: 32)
cnn_lr: float = 0.001  # peak learning rate of the custom CNN (the paper: Adam 5e-4, constant with plateau decay)
scratch_lr: float = 0.002  # peak learning rate for VGG16 / ResNet50
head_lr: float = 0.003  # peak learning rate of the frozen-base EfficientNet head
finetune_lr: float = 0.001  # peak learning rate of EfficientNet fine-tuning
robust_limit: int = 200  # test images in each robustness sweep
influence_train: int = 1000  # training images of the last-layer influence problem
influence_l2: float = 0.001  # L2 penalty of the last-layer problem (makes it strongly convex)
influence_damping: float = 0.001  # damping δ added to the Hessian
loo_count: int = 40  # training images retrained without, for the leave-one-out check
loo_tests: int = 4  # test images whose loss the leave-one-out check follows
tracin_epochs: int = 10  # epochs of last-layer SGD whose checkpoints TracIn sums over
gradcam_count: int = 32  # test images per model for the deletion/insertion and randomisation checks
deletion_steps: int = 10  # steps of the deletion/insertion curves
n_boot: int = 1000  # bootstrap resamples for the confidence intervals
''', "parameters"),
    md('''
## What the paper claims, and what we use instead

| model | the paper | here |
|---|---|---|
| custom CNN | 4 double-conv blocks (64/128/256/512, BN, dropout .25/.25/.30/.40), dense 1024-512 with BN and dropout .5; 128 px; Adam 5e-4, batch 32; **~95%** | the same network (`wbcstudy.models.TrustCNN`) at `cnn_size` px |
| VGG16 | ImageNet base, frozen, small dense head; 224 px; **~97%** | VGG16-BN trained **from scratch** at `vgg_size` px on a training subset (no ImageNet VGG weights offline) |
| ResNet50 | ImageNet base, frozen; 224 px; **~98%** | ResNet50 **from scratch** at `resnet_size` px, same training subset |
| — | — | EfficientNet-Lite0 with its ImageNet weights (the only ImageNet weights available offline): **frozen base + new head** (the paper's idea) and **fine-tuned** |

- **Data:** PBC's five WBC classes (basophil, eosinophil, lymphocyte, monocyte, neutrophil; `data/manifests/pbc5.csv`,
  its train/val/test split) instead of the Kaggle set derived from Raabin-WBC. PBC is cleaner (one analyser,
  one stain, centred cells), so accuracies should be at least as high.
- **Resolution and length of training:** this chapter's `cpu` profile runs on two CPU cores in under 15 minutes;
  the custom CNN costs about 0.85 GMAC per 64-px image (5–6× a ResNet-18), VGG16 and ResNet50 from scratch are
  slower still. So the networks see small images for a few epochs, and VGG16/ResNet50 a training subset; the
  `paper` profile restores 128/224 px and long training for a GPU. The VGG16/ResNet50 numbers here are therefore
  *not* a test of the paper's frozen-ImageNet claims; EfficientNet-Lite0 frozen is the closest test of that idea.
- **Augmentation** as in the authors' code: rotation ±20°, shifts ±0.2, shear 0.2 (Keras: degrees), zoom ±0.2,
  flips (`wbcstudy.augment.keras_affine`).
'''),
    code('''
import torch
import torch.nn.functional as F
from wbcstudy.data import load_split_arrays, stratified_subset

def subset(x, y, limit, offset=0):
    keep = stratified_subset(y, limit, seed + offset) if limit and limit < len(y) else np.arange(len(y))
    return torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep])

def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images at another size (antialiased bilinear), from the source_size cache."""
    if x.shape[1] == size:
        return x
    out = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

arrays = {s: load_split_arrays("pbc5", s, source_size) for s in ("train", "val", "test")}
classes = arrays["train"][2]
train64 = subset(*arrays["train"][:2], train_limit)
val64 = subset(*arrays["val"][:2], eval_limit, 1)
test64 = subset(*arrays["test"][:2], eval_limit, 2)
scratch64 = subset(train64[0].numpy(), train64[1].numpy(), scratch_train_limit, 3)
test_y = test64[1].numpy()
counts = pd.DataFrame({"train": np.bincount(train64[1], minlength=len(classes)),
                       "train (VGG16/ResNet50)": np.bincount(scratch64[1], minlength=len(classes)),
                       "val": np.bincount(val64[1], minlength=len(classes)),
                       "test": np.bincount(test_y, minlength=len(classes))}, index=classes)
counts.loc["total"] = counts.sum()
counts
'''),
    code('''
from wbcstudy.augment import keras_affine
torch.manual_seed(seed)
demo = test64[0][[int(np.flatnonzero(test_y == c)[0]) for c in range(len(classes))]]
fig = plots.montage(torch.cat([demo, keras_affine(demo), keras_affine(demo)]), titles=[*classes, *[""] * (2 * len(classes))],
                    ncols=len(classes), suptitle="Test cells (top) and two draws of the paper's augmentation")
plt.show()
'''),
    md('''
## Training the models

Every model goes through `wbcstudy.train.fit` (one-cycle schedule, best validation epoch kept, fp32 on this
CPU). The custom CNN uses Adam as in the paper; the others AdamW. Inputs are uint8 images; each model's first
layer (`InputAdapter`) scales and normalises them (training-set mean/std for the networks trained from
scratch, ImageNet's for EfficientNet).
'''),
    code('''
from wbcstudy.data import channel_mean_std
from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD, count_parameters
from wbcstudy.models.trust_cnn import build_model
from wbcstudy.train import TrainConfig, fit, predict_proba

names = {"cnn": "custom CNN", "vgg16": "VGG16 (scratch)", "resnet50": "ResNet50 (scratch)",
         "effnet_lite0_frozen": "EfficientNet-Lite0 frozen", "effnet_lite0_finetuned": "EfficientNet-Lite0 fine-tuned"}
arch_of = {"cnn": "trust_cnn", "vgg16": "vgg16", "resnet50": "resnet50",
           "effnet_lite0_frozen": "effnet_lite0_frozen", "effnet_lite0_finetuned": "effnet_lite0_finetuned"}
size_of = {"cnn": cnn_size, "vgg16": vgg_size, "resnet50": resnet_size,
           "effnet_lite0_frozen": effnet_size, "effnet_lite0_finetuned": effnet_size}
runs, norm = {}, {}

def train_model(key, train, epochs, peak_lr, optimizer="adamw", weight_decay=0.01):
    size = size_of[key]
    x_train, y_train = resize(train[0], size), train[1]
    pretrained = key.startswith("effnet")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if pretrained else channel_mean_std(x_train.numpy())
    torch.manual_seed(seed)
    model = build_model(arch_of[key], len(classes), size, mean, std, pretrained=pretrained)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=peak_lr, optimizer=optimizer, weight_decay=weight_decay,
                         seed=seed, progress=False)
    result = fit(model, (x_train, y_train), (resize(val64[0], size), val64[1]), config, augment=keras_affine, n_classes=len(classes))
    probs = predict_proba(result.model, resize(test64[0], size))
    per_epoch = result.history.seconds.mean()
    print(f"{names[key]}: {size} px, {len(y_train)} training images, {count_parameters(result.model):,} trainable parameters, "
          f"best epoch {result.best_epoch}/{epochs}, {per_epoch:.0f} s per epoch")
    runs[key], norm[key] = (result, probs), (list(mean), list(std))

train_model("cnn", train64, cnn_epochs, cnn_lr, optimizer="adam", weight_decay=0.0)
'''),
    code('''
train_model("vgg16", scratch64, scratch_epochs, scratch_lr)
train_model("resnet50", scratch64, scratch_epochs, scratch_lr)
'''),
    code('''
train_model("effnet_lite0_frozen", train64, effnet_frozen_epochs, head_lr)
train_model("effnet_lite0_finetuned", train64, effnet_finetuned_epochs, finetune_lr)
'''),
    code('''
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for key, (result, _) in runs.items():
    h = result.history
    axes[0].plot(h.epoch, h.val_loss, marker="o", label=names[key])
    axes[1].plot(h.epoch, h.val_accuracy, marker="o", label=names[key])
axes[0].set(xlabel="epoch", ylabel="validation cross-entropy", title="Validation loss")
axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
axes[1].legend(fontsize=8); plt.show()
'''),
    md('''
## Accuracy on the test split

95% intervals are stratified bootstrap percentile intervals over test cells (`wbcstudy.evaluate.metrics_with_ci`).
'''),
    code('''
from sklearn.metrics import classification_report
from wbcstudy.evaluate import confusion, metrics_with_ci
metrics, ci, rows = {}, {}, []
result_key = {"cnn": "cnn", "vgg16": "vgg16", "resnet50": "resnet50",
              "effnet_lite0_frozen": "effnet_lite0_frozen", "effnet_lite0_finetuned": "effnet_lite0_finetuned"}
for key, (result, probs) in runs.items():
    m, c = metrics_with_ci(test_y, probs, n_boot=n_boot, seed=seed)
    k = result_key[key]
    metrics[f"{k}_accuracy"], ci[f"{k}_accuracy"] = m["accuracy"], c["accuracy"]
    metrics[f"{k}_balanced_accuracy"], ci[f"{k}_balanced_accuracy"] = m["balanced_accuracy"], c["balanced_accuracy"]
    metrics[f"{k}_macro_f1"], metrics[f"{k}_auroc"], metrics[f"{k}_ece"] = m["macro_f1"], m["auroc"], m["ece"]
    metrics[f"{k}_train_seconds"] = result.seconds
    rows.append({"model": names[key], "px": size_of[key], "accuracy": m["accuracy"],
                 "95% CI": "[{:.3f}, {:.3f}]".format(*c["accuracy"]), "balanced accuracy": m["balanced_accuracy"],
                 "macro F1": m["macro_f1"], "ECE": m["ece"], "training": f"{result.seconds:.1f} s"})
pd.DataFrame(rows).set_index("model")
'''),
    code('''
reports = {names[k]: pd.DataFrame(classification_report(test_y, p.argmax(1), labels=range(len(classes)), target_names=classes,
                                                        output_dict=True, zero_division=0)).T.loc[classes, ["precision", "recall", "f1-score"]]
           for k, (_, p) in runs.items()}
pd.concat(reports, axis=1).round(3)
'''),
    code('''
fig, axes = plt.subplots(len(runs), 1, figsize=(6.5, 5.6 * len(runs)))
for ax, (key, (_, probs)) in zip(np.atleast_1d(axes), runs.items()):
    plots.plot_confusion(confusion(test_y, probs.argmax(1), len(classes)), classes, ax=ax, title=names[key])
plt.tight_layout(); plt.show()
'''),
    md('''
## Calibration

Trust needs more than accuracy: when a model says 90%, is it right 90% of the time? Reliability diagrams
(15 equal-width confidence bins) and the expected calibration error (ECE) per model.
'''),
    code('''
fig, ax = plt.subplots(figsize=(5.5, 5.2))
for key, (_, probs) in runs.items():
    plots.plot_reliability(test_y, probs, ax=ax, label=names[key], title="Reliability on the test split")
plt.show()
'''),
    md('''
## Robustness: accuracy under noise, blur and brightness, over a severity sweep

The README tests one level of each (Gaussian noise σ = 0.05 on the [0, 1] scale, a 5×5 Gaussian blur, brightness
×1.3: dashed lines below). One level says little, so each perturbation is swept (`wbcstudy.explain.robustness`),
on `robust_limit` test images per model.
'''),
    code('''
from wbcstudy.explain import README_LEVELS, severity_sweep
levels = {"gaussian_noise": [0.0, 0.02, 0.05, 0.1, 0.2], "gaussian_blur": [1, 3, 5, 7, 9], "brightness": [0.6, 0.8, 1.0, 1.3, 1.6]}
robust_x, robust_y = subset(test64[0].numpy(), test_y, robust_limit, 4)
robust_y = robust_y.numpy()
sweeps = []
for key, (result, _) in runs.items():
    size = size_of[key]
    table = severity_sweep(lambda xb: predict_proba(result.model, resize(xb, size)), robust_x, robust_y, levels)
    sweeps.append(table.assign(model=names[key]))
sweeps = pd.concat(sweeps, ignore_index=True)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
titles = {"gaussian_noise": "Gaussian noise σ", "gaussian_blur": "Gaussian blur kernel (px)", "brightness": "brightness factor"}
for ax, (pert, title) in zip(axes, titles.items()):
    for model_name, t in sweeps[sweeps.perturbation == pert].groupby("model", sort=False):
        ax.plot(t.level, t.accuracy, marker="o", label=model_name)
    ax.axvline(README_LEVELS[pert], ls="--", color="grey")
    ax.set(xlabel=title, ylabel="accuracy", title=title, ylim=(0, 1))
axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()
sweeps.pivot_table(index=["perturbation", "level"], columns="model", values="accuracy", sort=False).round(3)
'''),
    md('''
Perturbations are applied at the source resolution (64 px in the `cpu` profile) before a model's own resize, so a 5×5 kernel is a stronger blur relative to the cell
than at the paper's 128/224 px. For each model, the accuracy drop at the README's single setting:
'''),
    code('''
readme_rows = []
for model_name in sweeps.model.unique():
    row = {"model": model_name}
    base = sweeps[(sweeps.model == model_name) & (sweeps.perturbation == "brightness") & (sweeps.level == 1.0)].accuracy.item()
    row["clean"] = base
    for pert, level in README_LEVELS.items():
        row[f"{pert} {level:g}"] = sweeps[(sweeps.model == model_name) & (sweeps.perturbation == pert) & (sweeps.level == level)].accuracy.item()
    readme_rows.append(row)
readme_robust = pd.DataFrame(readme_rows).set_index("model")
for key in runs:
    r = readme_robust.loc[names[key]]
    metrics[f"{result_key[key]}_noise005_accuracy"] = r["gaussian_noise 0.05"]
    metrics[f"{result_key[key]}_blur5_accuracy"] = r["gaussian_blur 5"]
    metrics[f"{result_key[key]}_brightness13_accuracy"] = r["brightness 1.3"]
readme_robust.round(3)
'''),
    md('''
## Fisher information, twice

**The README's score** is ‖p − y‖², the squared gradient of the cross-entropy with respect to the logits.
**The real quantity** is the Fisher information of the parameters. We compute, for the custom CNN's last layer
(512 → 5, 2,565 parameters), per-sample gradients g_i = ∇θ ℓ(x_i, y_i) with `torch.func` (`vmap` over `grad`),
the empirical Fisher F̂ = 1/n Σ g_i g_iᵀ, and each image's share of its trace, ‖g_i‖². For this layer
g_i = (p_i − y_i) ⊗ [z_i, 1], so ‖g_i‖² = ‖p_i − y_i‖² (‖z_i‖² + 1): the two scores agree exactly in how they
treat the prediction and differ by the norm of the image's features.
'''),
    code('''
from scipy.stats import spearmanr
from wbcstudy.explain import empirical_fisher, last_layer_inputs, per_sample_fisher_trace, per_sample_gradients, readme_fisher_score
from wbcstudy.models.trust_cnn import last_linear

cnn, cnn_probs = runs["cnn"][0].model.float().eval(), runs["cnn"][1]
test_cnn = resize(test64[0], cnn_size)
z_test = last_layer_inputs(cnn, test_cnn)
layer = last_linear(cnn)
grads = per_sample_gradients(layer, z_test, torch.as_tensor(test_y))
fisher_readme = readme_fisher_score(cnn_probs, test_y)
fisher_trace = per_sample_fisher_trace(grads)
G = grads.double()
F_hat = empirical_fisher(G)  # (2565, 2565); its non-zero eigenvalues are those of the smaller Gram matrix G Gᵀ / n
eig = torch.linalg.eigvalsh(G @ G.T / len(G) if len(G) < G.shape[1] else F_hat).flip(0).clamp(min=0).numpy()
rho_fisher = spearmanr(fisher_readme, fisher_trace)[0]
metrics["fisher_readme_vs_empirical_spearman"] = rho_fisher
gray = test64[0].float().mean(-1)
contrast = gray.flatten(1).std(1).numpy()
fisher_table = pd.DataFrame({"README ‖p−y‖²": fisher_readme, "empirical Fisher ‖g‖²": fisher_trace,
                             "feature norm² + 1": (z_test.double() ** 2).sum(1).numpy() + 1, "image contrast (grey std)": contrast,
                             "correct": cnn_probs.argmax(1) == test_y})
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
axes[0].scatter(fisher_readme, fisher_trace, s=6, c=np.where(fisher_table.correct, "tab:blue", "tab:red"))
axes[0].set(xscale="log", yscale="log", xlabel="README score ‖p − y‖²", ylabel="per-sample Fisher trace ‖g‖²",
            title=f"Spearman ρ = {rho_fisher:.3f} (red: misclassified)")
axes[1].hist(np.log10(fisher_readme + 1e-12), bins=40); axes[1].set(xlabel="log10 README score", ylabel="test images", title="README score distribution")
axes[2].semilogy(eig[:50] / eig.sum(), marker="."); axes[2].set(xlabel="eigenvalue rank", ylabel="share of trace", title="Empirical Fisher spectrum (last layer)")
plt.tight_layout(); plt.show()
fisher_table.drop(columns="correct").corr(method="spearman").round(3)
'''),
    code('''
top_readme = np.argsort(-fisher_readme)[:8]
top_trace = np.argsort(-fisher_trace)[:8]
overlap = len(set(np.argsort(-fisher_readme)[:50]) & set(np.argsort(-fisher_trace)[:50]))
metrics["fisher_top50_overlap"] = overlap / 50
label = lambda i: f"{classes[test_y[i]][:4]}→{classes[cnn_probs[i].argmax()][:4]}"  # noqa: E731
plots.montage(test64[0][top_readme], titles=[label(i) for i in top_readme], suptitle="Highest README score (true→predicted)"); plt.show()
plots.montage(test64[0][top_trace], titles=[label(i) for i in top_trace], suptitle="Highest empirical-Fisher share (true→predicted)"); plt.show()
high = fisher_readme >= np.quantile(fisher_readme, 0.9)
Markdown(f"The 50 highest-scoring test images by the two scores share {overlap} images. The top decile by the README score "
         f"has median contrast {np.median(contrast[high]):.1f} against {np.median(contrast[~high]):.1f} for the rest "
         f"(grey-level standard deviation at 64 px), and {100 * (~fisher_table.correct[high]).mean():.0f}% of it is misclassified.")
'''),
    md('''
## Influence, twice — checked against leave-one-out retraining

**The README's influence** of training image i on test image t is −(p_i − y_i)·(p_t − y_t), "positive → supports
the prediction". **Koh & Liang's influence function** is I(i, t) = −∇L_tᵀ H⁻¹ ∇L_i, with H the Hessian of the
training loss; removing image i changes the test loss by about −I/n. We compute it *exactly* on a problem
small enough to check: the custom CNN's last layer refitted to convergence on its frozen 512-d features of
`influence_train` training images (multinomial logistic regression with a small L2 penalty, which makes the
problem strongly convex), with the exact Hessian (2,565 × 2,565) plus damping δ. **TracIn** sums
η ∇L_t·∇L_i over checkpoints of an SGD run of the same layer. Then we *actually* remove each of `loo_count`
randomly chosen training images, retrain the layer to convergence, and measure how each test loss changes.
All scores are oriented so that positive = helpful (removing the image raises the test loss); the README
score is used as written.

captum's influence module (`captum.influence`) was not used: it is not installed in this study's pinned
environment; the last-layer problem is small enough for an exact Hessian, which is what its naive
influence-function class computes as well.
'''),
    code('''
from wbcstudy.explain import LastLayerProblem, readme_influence, tracin_last_layer
inf_x, inf_y = subset(train64[0].numpy(), train64[1].numpy(), influence_train, 5)
z_train = last_layer_inputs(cnn, resize(inf_x, cnn_size))
problem = LastLayerProblem(z_train, inf_y, len(classes), l2=influence_l2)
t0 = time.perf_counter()
theta = problem.fit()
refit_acc = float((problem.probs(theta, z_test).argmax(1).numpy() == test_y).mean())
rng = np.random.default_rng(seed)
p_test_refit = problem.probs(theta, z_test).numpy()
wrong = np.flatnonzero(p_test_refit.argmax(1) != test_y)
right = np.flatnonzero(p_test_refit.argmax(1) == test_y)
n_wrong = min(len(wrong), loo_tests // 2)
chosen = np.concatenate([rng.choice(wrong, n_wrong, replace=False), rng.choice(right, loo_tests - n_wrong, replace=False)])
zt, yt = z_test[chosen], torch.as_tensor(test_y[chosen])
hessian = problem.hessian(theta)  # exact, (k·(d+1))², computed once
predicted = problem.predicted_loo_effect(theta, zt, yt, damping=influence_damping, hessian=hessian)  # (tests, all train)
readme_inf = readme_influence(problem.probs(theta).numpy(), inf_y.numpy(), p_test_refit[chosen], test_y[chosen])
tracin, _ = tracin_last_layer(problem, zt, yt, epochs=tracin_epochs, lr=0.5, batch_size=64, seed=seed)
removed = rng.choice(problem.n, min(loo_count, problem.n), replace=False)
actual = problem.loo_effect(theta, removed, zt, yt, hessian=hessian)
influence_seconds = time.perf_counter() - t0
rows = []
for j, t in enumerate(chosen):
    rows.append({"test image": int(t), "true": classes[test_y[t]], "predicted": classes[p_test_refit[t].argmax()],
                 "Koh & Liang": spearmanr(predicted[j, removed], actual[j])[0],
                 "TracIn": spearmanr(tracin[j, removed], actual[j])[0],
                 "README (as written)": spearmanr(readme_inf[j, removed], actual[j])[0]})
loo_table = pd.DataFrame(rows).set_index("test image")
metrics["influence_loo_spearman"] = loo_table["Koh & Liang"].mean()
metrics["tracin_loo_spearman"] = loo_table["TracIn"].mean()
metrics["readme_influence_loo_spearman"] = loo_table["README (as written)"].mean()
metrics["influence_refit_accuracy"] = refit_acc
print(f"last layer refitted on {problem.n} training images: test accuracy {refit_acc:.3f}; "
      f"{len(removed)} leave-one-out retrainings for {len(chosen)} test images in {influence_seconds:.0f} s")
loo_table.round(3)
'''),
    code('''
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, (name, scores) in zip(axes, {"Koh & Liang (damped exact Hessian)": predicted, "TracIn": tracin, "README −(p_i−y_i)·(p_t−y_t)": readme_inf}.items()):
    for j in range(len(chosen)):
        ax.scatter(scores[j, removed], actual[j], s=10, label=f"test {chosen[j]}")
    ax.axhline(0, color="grey", lw=0.5); ax.axvline(0, color="grey", lw=0.5)
    ax.set(xlabel="predicted score", ylabel="actual leave-one-out change of test loss", title=name)
axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()
'''),
    md('''
### Most helpful and most harmful training images

For each followed test image, the training images with the largest and smallest Koh & Liang influence
(over all `influence_train` training images of the problem). If harmful images pointed at label noise, they
would be images the network itself classifies as another class; if at duplicates, they would be near-identical
in feature space to the test image.
'''),
    code('''
train_pred = problem.probs(theta).numpy().argmax(1)
base_rate = float((train_pred != inf_y.numpy()).mean())
feat_n = F.normalize(z_train, dim=1)
harm_rows = []
for j, t in enumerate(chosen[:2]):
    order = np.argsort(-predicted[j])
    helpful, harmful = order[:6].copy(), order[-6:][::-1].copy()
    images = torch.cat([test64[0][[t]], inf_x[helpful], inf_x[harmful]])
    titles = [f"TEST {classes[test_y[t]][:4]}→{classes[p_test_refit[t].argmax()][:4]}"]
    titles += [f"+ {classes[inf_y[i]][:4]}" for i in helpful] + [f"− {classes[inf_y[i]][:4]}" for i in harmful]
    plots.montage(images, titles=titles, ncols=13, tile_size=1.2,
                  suptitle=f"Test image {t}: most helpful (+) and most harmful (−) training images, labelled"); plt.show()
for j, t in enumerate(chosen):
    harmful = np.argsort(predicted[j])[:10]
    cos = (feat_n[harmful] @ F.normalize(z_test[t:t + 1], dim=1).T).squeeze(1).numpy()
    harm_rows.append({"test image": int(t), "harmful: other label than test": float((inf_y.numpy()[harmful] != test_y[t]).mean()),
                      "harmful: misclassified by the layer": float((train_pred[harmful] != inf_y.numpy()[harmful]).mean()),
                      "harmful: max feature cosine to test": float(cos.max())})
harm_table = pd.DataFrame(harm_rows).set_index("test image")
metrics["harmful_misclassified_fraction"] = harm_table["harmful: misclassified by the layer"].mean()
metrics["train_misclassified_base_rate"] = base_rate
print(f"base rate of misclassified training images in the problem: {base_rate:.3f}")
harm_table.round(3)
'''),
    md('''
## Grad-CAM, and whether the maps mean something

Grad-CAM (`pytorch-grad-cam`) on each model's last convolutional stage, for correctly and wrongly classified
test cells. Two checks that the maps are more than pictures: **deletion/insertion** (Petsiuk et al. 2018) —
remove the most-highlighted pixels first (replaced by a blurred copy) and watch the probability of the explained
class fall; insert them first into the blurred copy and watch it rise; compare with a random pixel order — and
the **model-randomisation test** (Adebayo et al. 2018): re-initialise the weights and measure how similar the
maps stay (Spearman ρ between maps; a map that survives randomisation does not explain the trained model).
'''),
    code('''
from wbcstudy.explain import deletion_insertion, gradcam_maps, overlay, randomised_weights_similarity
from wbcstudy.models.trust_cnn import gradcam_layer
cam_idx = stratified_subset(test_y, min(gradcam_count, len(test_y)), seed + 6)
cam_rows, cams = [], {}
for key, (result, probs) in runs.items():
    model, size = result.model.float().eval(), size_of[key]
    x = resize(test64[0][cam_idx], size)
    pred = probs[cam_idx].argmax(1)
    maps = gradcam_maps(model, gradcam_layer(model), x, targets=pred)
    cams[key] = maps
    curves = deletion_insertion(model, x, maps, pred, steps=deletion_steps)
    rand_maps = np.random.default_rng(seed).random(maps.shape).astype(np.float32)
    rand_curves = deletion_insertion(model, x, rand_maps, pred, steps=deletion_steps)
    rho = randomised_weights_similarity(model, gradcam_layer, x, pred, seed=seed)
    row = {"model": names[key], "deletion AUC (Grad-CAM)": curves["deletion"].mean(), "deletion AUC (random)": rand_curves["deletion"].mean(),
           "insertion AUC (Grad-CAM)": curves["insertion"].mean(), "insertion AUC (random)": rand_curves["insertion"].mean(),
           "map ρ trained vs randomised": float(np.mean(rho))}
    cam_rows.append(row)
    k = result_key[key]
    metrics[f"{k}_gradcam_deletion_auc"], metrics[f"{k}_random_deletion_auc"] = row["deletion AUC (Grad-CAM)"], row["deletion AUC (random)"]
    metrics[f"{k}_gradcam_insertion_auc"], metrics[f"{k}_random_insertion_auc"] = row["insertion AUC (Grad-CAM)"], row["insertion AUC (random)"]
    metrics[f"{k}_gradcam_randomisation_rho"] = row["map ρ trained vs randomised"]
cam_table = pd.DataFrame(cam_rows).set_index("model")
cam_table.round(3)
'''),
    code('''
fig, axes = plt.subplots(len(runs), 6, figsize=(11, 2.0 * len(runs)))
for r, (key, (_, probs)) in enumerate(runs.items()):
    pred = probs[cam_idx].argmax(1)
    ok, bad = np.flatnonzero(pred == test_y[cam_idx]), np.flatnonzero(pred != test_y[cam_idx])
    picks = (list(ok[:4]) + list(bad[:2]) + list(ok[4:]) + list(bad[2:]))[:6]
    for c, i in enumerate(picks):
        x64 = resize(test64[0][cam_idx[i]:cam_idx[i] + 1], size_of[key])[0].numpy()
        axes[r, c].imshow(overlay(x64, cams[key][i]))
        colour = "black" if pred[i] == test_y[cam_idx[i]] else "red"
        axes[r, c].set_title(f"{classes[test_y[cam_idx[i]]][:4]}→{classes[pred[i]][:4]}", fontsize=8, color=colour)
        axes[r, c].axis("off")
    axes[r, 0].text(-0.1, 0.5, names[key], transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
fig.suptitle("Grad-CAM of the predicted class (true→predicted; red: wrong)"); plt.tight_layout(); plt.show()
'''),
    md('''
## The app's model

The Streamlit app (`wbcstudy app`) loads the custom CNN or EfficientNet-Lite0 model with the best *validation*
accuracy (VGG16 and ResNet50 checkpoints would be 90–110 MB) from a checkpoint this chapter writes (a state dict and JSON metadata, read with `torch.load(..., weights_only=True)`). It is too large
to commit (tens of MB), so it is rebuilt by running the chapter; the app tells the user so when it is missing.
'''),
    code('''
from pathlib import Path
from wbcstudy.app import save_checkpoint
from wbcstudy.paths import project_root
best = max(["cnn", "effnet_lite0_frozen", "effnet_lite0_finetuned"], key=lambda k: runs[k][0].best_score)  # VGG16/ResNet50: 90-110 MB
ckpt = Path(app_checkpoint) if Path(app_checkpoint).is_absolute() else project_root() / app_checkpoint
save_checkpoint(ckpt, runs[best][0].model, arch_of[best], classes, size_of[best], *norm[best],
                test_accuracy=float(metrics[f"{result_key[best]}_accuracy"]), profile=profile, chapter="trust")
print(f"app model: {names[best]} ({ckpt.stat().st_size / 2**20:.1f} MiB) → {app_checkpoint}; start the app with `wbcstudy app`")
'''),
    md('## Paper vs reproduction'),
    code('''
from wbcstudy.results import comparison_table, load_results, write_results
paper = {"cnn_accuracy": 0.95, "vgg16_accuracy": 0.97, "resnet50_accuracy": 0.98,
         "noise_sigma": 0.05, "blur_kernel": 5, "brightness_factor": 1.3}
seconds = time.perf_counter() - chapter_start
write_results("trust", profile, seconds, metrics, ci, paper, results_dir=results_dir,
              extra={"substitutions": f"PBC five WBC classes; custom CNN at {cnn_size} px (paper 128); VGG16/ResNet50 from scratch at "
                     f"{vgg_size}/{resnet_size} px on {len(scratch64[1])} training images (paper: frozen ImageNet, 224 px); EfficientNet-Lite0 "
                     f"ImageNet at {effnet_size} px; {cnn_epochs}/{scratch_epochs}/{effnet_frozen_epochs}/{effnet_finetuned_epochs} epochs; CPU fp32",
                     "app_model": {"arch": arch_of[best], "path": app_checkpoint}})
res = load_results("trust", results_dir)
comparison_table(res, {"cnn_accuracy": "custom CNN accuracy (paper ~0.95)",
                       "vgg16_accuracy": "VGG16 accuracy (paper ~0.97, frozen ImageNet; here from scratch)",
                       "resnet50_accuracy": "ResNet50 accuracy (paper ~0.98, frozen ImageNet; here from scratch)",
                       "effnet_lite0_frozen_accuracy": "EfficientNet-Lite0 frozen base (the paper's idea)",
                       "effnet_lite0_finetuned_accuracy": "EfficientNet-Lite0 fine-tuned"})
'''),
    md('## What this means'),
    code('''
acc = {k: metrics[f"{result_key[k]}_accuracy"] for k in runs}
best_acc = max(acc, key=acc.get)
ece = {k: metrics[f"{result_key[k]}_ece"] for k in runs}
drops = {pert: {names[k]: readme_robust.loc[names[k], "clean"] - readme_robust.loc[names[k], col] for k in runs}
         for pert, col in [("noise", "gaussian_noise 0.05"), ("blur", "gaussian_blur 5"), ("brightness", "brightness 1.3")]}
worst_drop = {p: max(d, key=d.get) for p, d in drops.items()}
cam_ok = [r["model"] for r in cam_rows if r["deletion AUC (Grad-CAM)"] < r["deletion AUC (random)"]]
Markdown(f"""
- **Accuracy.** The most accurate model here is {names[best_acc]} ({acc[best_acc]:.3f}); the custom CNN reached
  {acc['cnn']:.3f} against the README's ~0.95, at {cnn_size} px and {cnn_epochs} epoch(s) instead of 128 px and early stopping.
  VGG16 ({acc['vgg16']:.3f}) and ResNet50 ({acc['resnet50']:.3f}) were trained from scratch on {len(scratch64[1])} images for
  {scratch_epochs} epoch(s), so they say nothing about the README's frozen-ImageNet ~0.97/~0.98 (for which the README's own
  notebooks hold no evidence); the frozen-base idea is tested by EfficientNet-Lite0 frozen ({acc['effnet_lite0_frozen']:.3f})
  against fine-tuned ({acc['effnet_lite0_finetuned']:.3f}).
- **Calibration.** ECE ranges from {min(ece.values()):.3f} ({names[min(ece, key=ece.get)]}) to {max(ece.values()):.3f}
  ({names[max(ece, key=ece.get)]}); accuracy and calibration do not rank the models the same way.
- **Robustness.** At the README's single settings the largest drops are: noise σ=0.05 — {worst_drop['noise']}
  ({drops['noise'][worst_drop['noise']]:+.3f} lost), 5×5 blur — {worst_drop['blur']} ({drops['blur'][worst_drop['blur']]:+.3f}),
  brightness ×1.3 — {worst_drop['brightness']} ({drops['brightness'][worst_drop['brightness']]:+.3f}). The sweeps show
  that a single level can rank models differently from the whole curve.
- **Fisher.** The README score and the last-layer empirical Fisher share ρ = {rho_fisher:.3f} (Spearman): the README score
  is the logit-space factor of the real per-sample Fisher, which adds the feature norm. They agree on *which* images are
  uncertain in broad strokes (high scores are mostly misclassified or low-confidence cells) and disagree where feature
  norms differ, so the README's ranking is a proxy, not a Fisher information.
- **Influence.** Against actual leave-one-out retraining, Koh & Liang's influence (exact damped Hessian) has mean
  Spearman ρ = {metrics['influence_loo_spearman']:.3f}, TracIn {metrics['tracin_loo_spearman']:.3f}, and the README's
  −(p_i−y_i)·(p_t−y_t) as written {metrics['readme_influence_loo_spearman']:.3f}. The README's score ignores the images'
  features (any two images with similar residuals get the same score) and, for images of the test image's own class,
  its sign says "harmful" where removing them usually hurts.
- **Grad-CAM.** Deleting pixels in Grad-CAM order lowers the explained class's probability faster than a random order
  for {len(cam_ok)} of {len(cam_rows)} models ({', '.join(cam_ok) if cam_ok else 'none'}); the randomisation check's
  correlations are in the table above: the lower, the more the maps depend on what the model learned.
""")
'''),
    md('## Provenance'),
    code(PROVENANCE, "nbval-ignore-output"),
]
