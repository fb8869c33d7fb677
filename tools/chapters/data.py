"""Cells of the data chapter (written to notebooks/data.ipynb by tools/make_notebooks.py)."""
from tools.cells import PROVENANCE, SETUP, code, md

CELLS = [
    md('''
# Data: the real datasets and how they are split

Every chapter of this study trains on real blood-cell images. This chapter shows what
those images are, where they come from and under which licence, what is wrong with the
files as published (one non-image, byte-identical duplicates), the rule that removes
them, and the fixed-seed splits every later chapter uses. **Question:** are the splits
the book relies on exactly what the code in `wbcstudy.data` produces from the data?
'''),
    code(SETUP, "hide-input"),
    code('''
profile: str = "cpu"  # papermill profile name, recorded in the results
results_dir: str = "book/results"  # where data.json is written (relative to the project root)
rebuild_manifests: bool = True  # re-run the whole construction and check it equals the committed manifests
cells_per_class: int = 8  # cells shown per class in the PBC montage
''', "parameters"),
    md('''
## The datasets

The study uses five public datasets from a local copy of their published layout (the
data root is the environment variable `WBCSTUDY_DATA`, else `data/raw/`). A missing
dataset raises an error naming where it is published and where to put it. The
registry `wbcstudy.data.SOURCES` holds each dataset's source, licence and citation:
'''),
    code('''
from wbcstudy.data import SOURCES
pd.DataFrame([{"dataset": s.title, "licence": s.licence, "published at": s.homepage, "cite": s.citation}
              for s in SOURCES.values()], index=list(SOURCES))
'''),
    md('''
## Construction: decode every file, find the bad ones, remove duplicates

`wbcstudy.data.build_manifests` reads every file, hashes it (SHA-256) and decodes it
completely. Files that do not decode are reported and excluded. Byte-identical files
are grouped: when all copies carry the same label the first path in sorted order is
kept; when the copies carry different labels, **all** copies are excluded because the
label is ambiguous. Splits are then drawn per class with fixed seeds
(`numpy.random.default_rng([2026, crc32(manifest name)])`) and written as CSV files
to `data/manifests/`, which are committed. Here the whole construction runs again
into a temporary folder and is compared byte for byte with the committed files.
'''),
    code('''
import filecmp, json, tempfile
from pathlib import Path
from wbcstudy.data import build_manifests, load_manifest
from wbcstudy.paths import manifests_dir

if rebuild_manifests:
    with tempfile.TemporaryDirectory() as tmp:
        built = build_manifests(Path(tmp))
        differing = [name for name, path in built.items() if not filecmp.cmp(path, manifests_dir() / path.name, shallow=False)]
    assert not differing, f"regenerated manifests differ from the committed ones: {differing}"
    print(f"{len(built)} manifest files regenerated; all identical to the committed ones")
report = json.loads((manifests_dir() / "construction_report.json").read_text())
'''),
    code('''
rows = []
for key, d in report["datasets"].items():
    if key == "wbcatt":
        continue
    rows.append({"dataset": key, "files": d["files"], "images read": d["images_read"], "unreadable": len(d["unreadable"]),
                 "duplicate groups": len(d["duplicate_groups"]), "excluded": d["excluded"], "usable": d["usable"]})
pd.DataFrame(rows).set_index("dataset")
'''),
    md('The files that are not images, and every group of byte-identical files with the rule applied:'),
    code('''
bad = [{"dataset": k, "file": p} for k, d in report["datasets"].items() for p in d["unreadable"]]
display(pd.DataFrame(bad))
dups = [{"dataset": k, "copies": " = ".join(Path(p).name for p in g["paths"]), "labels": ", ".join(g["labels"]),
         "kept": Path(g["kept"]).name if g.get("kept") else "none (labels disagree)"}
        for k, d in report["datasets"].items() for g in d["duplicate_groups"]]
pd.DataFrame(dups)
'''),
    md('''
## PBC: 8 classes of peripheral blood cells

PBC (Acevedo et al. 2020) holds single-cell images from a CellaVision DM96 analyser at
the Hospital Clinic of Barcelona. The local copy is cropped losslessly to the 256×256
window that holds the cell; `load_pbc_image` takes the same window from an original
360×363 file, so both layouts give identical pixels.
'''),
    code('''
from wbcstudy.data import PBC_CLASSES, load_pbc_image
inventories = {key: pd.read_csv(manifests_dir() / f"{key}_inventory.csv") for key in ["pbc", "zheng2018", "bccd", "all_idb2"]}
sizes = pd.concat({key: inv[inv.status == "ok"].dropna(subset=["width"]).astype({"width": int, "height": int})
                   .groupby(["width", "height"]).size() for key, inv in inventories.items()}).rename("usable files").to_frame()
display(Markdown("Decoded sizes (width × height, px) of the usable files of every dataset (masks included):"), sizes)
inv = inventories["pbc"]
usable = inv[inv["status"] == "ok"]
counts = usable["label"].value_counts().reindex(PBC_CLASSES).rename("usable images")
ax = counts.plot.barh(color=plots.class_palette(PBC_CLASSES), figsize=(6, 3.2))
ax.set_xlabel("images"); ax.set_ylabel("class"); ax.set_title("PBC: usable images per class"); ax.invert_yaxis()
plt.show()
'''),
    code('''
rng = np.random.default_rng(0)
picks = [(c, p) for c in PBC_CLASSES for p in rng.choice(usable.loc[usable.label == c, "path"].to_numpy(), cells_per_class, replace=False)]
images = np.stack([load_pbc_image(data_root() / p, 96) for _, p in picks])
fig = plots.montage(images, [c for c, _ in picks], ncols=cells_per_class, suptitle="PBC: random cells per class (96 px)")
plt.show()
'''),
    md('''
## The splits every chapter uses

| manifest | used by | rule |
|---|---|---|
| `pbc8.csv` | baseline, CytoDiffusion in-domain | 8 classes, stratified 80/10/10 |
| `pbc5.csv` | W-Net, trustworthiness | the `pbc8` rows of the five WBC classes, same split; `fold10` stratified 10-fold, `fold5 = fold10 // 2` |
| `pbc_anomaly.csv` | CytoDiffusion anomaly | erythroblasts held out: the other 7 classes 70/10/20, every erythroblast in test |
| `pbc_lowdata.csv` | CytoDiffusion low data | per class 250 train / 836 test / rest validation; nested subsets of 10/20/50/150 (and 250) per class for 5 repeats |
| `wbcatt.csv` | HemaX | WBCAtt's own train/val/test, joined to the PBC files |
| `zheng1.csv`, `zheng2.csv` | domain shift, transfer | stratified 5 folds |
| `bccd.csv` | domain shift, HemaX | one row per WBC box; usable = exactly one WBC box and one subtype in the image; stratified 5 folds over usable rows |
| `all_idb2.csv` | ResNeXt-CC | stratified 70/10/20 and 5 folds |
'''),
    code('''
def split_table(name: str, label: str = "label", split: str = "split") -> pd.DataFrame:
    df = load_manifest(name)
    table = pd.crosstab(df[label], df[split], margins=True, margins_name="total")
    return table[[c for c in ["train", "val", "test", "total"] if c in table.columns]]

for name in ["pbc8", "pbc5", "pbc_anomaly", "pbc_lowdata", "wbcatt", "all_idb2"]:
    display(Markdown(f"**{name}**"))
    display(split_table(name))
'''),
    code('''
lowdata = load_manifest("pbc_lowdata")
subset_cols = [c for c in lowdata.columns if c.startswith("subset_r")]
nested = {f"k={k}": [int((lowdata[c].fillna(999) <= k).sum()) for c in subset_cols] for k in (10, 20, 50, 150, 250)}
pd.DataFrame(nested, index=subset_cols).T.rename_axis("training images (all classes)")
'''),
    md('''
## Zheng 2018, BCCD and ALL-IDB2

Zheng et al. (2018) published two small sets of single WBC images with nucleus and
cytoplasm masks; BCCD holds whole smears with VOC boxes; ALL-IDB2 holds 130 blasts and
130 normal cells with masks. They serve as the domain-shift, transfer and
ALL-vs-normal sets of later chapters.
'''),
    code('''
from wbcstudy.data import load_mask, load_rgb, read_bccd_boxes
z1, z2 = load_manifest("zheng1"), load_manifest("zheng2")
display(pd.concat({"Zheng Dataset 1": z1.label.value_counts(), "Zheng Dataset 2": z2.label.value_counts()}, axis=1).fillna(0).astype(int))
fig, axes = plt.subplots(2, 6, figsize=(12, 4.4))
for row, df in enumerate([z1, z2]):
    for j in range(3):
        item = df.groupby("label").head(1).iloc[j]
        axes[row, 2 * j].imshow(load_rgb(data_root() / item.path)); axes[row, 2 * j].set_title(f"D{row + 1}: {item.label}")
        axes[row, 2 * j + 1].imshow(load_mask(data_root() / item.mask_path), cmap="viridis", vmin=0, vmax=2)
        axes[row, 2 * j + 1].set_title("mask: 0 bg, 1 cyto, 2 nucleus")
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("Zheng 2018: images and nucleus/cytoplasm masks"); plt.show()
'''),
    code('''
import matplotlib.patches as patches
bccd = load_manifest("bccd")
display(pd.crosstab(bccd.subtype.fillna("(none)"), bccd.usable.map({1: "usable", 0: "not usable"})))
boxes = read_bccd_boxes()
first = boxes[boxes.image_path == boxes.image_path.iloc[0]]
fig, ax = plt.subplots(figsize=(6, 4.5))
ax.imshow(load_rgb(data_root() / first.image_path.iloc[0]))
colours = {"WBC": "tab:purple", "RBC": "tab:red", "Platelets": "tab:orange"}
for box in first.itertuples():
    ax.add_patch(patches.Rectangle((box.xmin, box.ymin), box.xmax - box.xmin, box.ymax - box.ymin, fill=False, color=colours[box.cell], lw=1.5))
ax.set_title(f"BCCD {Path(first.image_path.iloc[0]).name}: WBC (purple), RBC (red), platelets (orange)"); ax.axis("off"); plt.show()
'''),
    code('''
allidb = load_manifest("all_idb2")
fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
for ax, item in zip(axes, allidb.groupby("label").head(3).itertuples()):
    ax.imshow(load_rgb(data_root() / item.path)); ax.set_title(item.label); ax.axis("off")
fig.suptitle("ALL-IDB2: blasts and normal lymphocytes"); plt.show()
'''),
    code('''
from wbcstudy.results import write_results
metrics = {}
for key, d in report["datasets"].items():
    metrics[f"{key}_images_read"] = d["images_read"]
    metrics[f"{key}_unreadable_files"] = len(d["unreadable"])
    metrics[f"{key}_duplicate_groups"] = len(d["duplicate_groups"])
    metrics[f"{key}_usable"] = d["usable"]
for name in ["pbc8", "pbc5", "pbc_anomaly", "pbc_lowdata", "wbcatt", "all_idb2"]:
    for split, n in load_manifest(name)["split"].value_counts().sort_index().items():
        metrics[f"{name}_{split}"] = int(n)
path = write_results("data", profile, time.perf_counter() - chapter_start, metrics, results_dir=results_dir)
print("wrote", path.name, "into", results_dir)
'''),
    md('## Provenance'),
    code(PROVENANCE, "nbval-ignore-output"),
]
