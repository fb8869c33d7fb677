"""Dataset construction: file inventories (hash, decode, de-duplicate) and the fixed-seed split manifests."""
from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

from wbcstudy.data import readers
from wbcstudy.data.sources import SOURCES, image_size, locate
from wbcstudy.paths import data_root, manifests_dir, project_root

SEED: int = 2026
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
INVENTORY_COLUMNS: list[str] = ["path", "label", "sha256", "width", "height", "status", "duplicate_of"]
INVENTORY_KEYS: list[str] = ["pbc", "wbcatt", "zheng2018", "bccd", "all_idb2"]
LOWDATA_TRAIN: int = 250
LOWDATA_TEST: int = 836
LOWDATA_SUBSETS: tuple[int, ...] = (10, 20, 50, 150, 250)
LOWDATA_REPEATS: int = 5
PROCESSES: int = 2


# ---------------------------------------------------------------- inventory


def _inspect_file(task: tuple[str, str, bool]) -> tuple[str, int, int, str]:
    """sha256, width, height (-1 if not decoded) and error text ('' if fine) of one file."""
    root, rel, decode = task
    full = Path(root) / rel
    data = full.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if not decode:
        return sha, -1, -1, ""
    size = image_size(full)  # decodes completely (a JPEG at 1/8 scale, which still reads every byte)
    if isinstance(size, str):
        return sha, -1, -1, size
    return sha, size[0], size[1], ""


def _inspect_all(paths: list[str], decode: list[bool], processes: int = PROCESSES) -> list[tuple[str, int, int, str]]:
    """Inspect many files, in a process pool when there are many."""
    root = str(data_root())
    tasks = [(root, p, d) for p, d in zip(paths, decode)]
    if processes <= 1 or len(tasks) < 200:
        return [_inspect_file(t) for t in tasks]
    with Pool(processes) as pool:
        return pool.map(_inspect_file, tasks, chunksize=max(1, len(tasks) // (4 * processes)))


def inventory(df: pd.DataFrame, dedupe: bool = True, processes: int = PROCESSES) -> pd.DataFrame:
    """Hash and decode every file of df (columns path[, label]) and mark unreadable files and duplicates.

    Returns columns path, label, sha256, width, height, status, duplicate_of, error (sorted by path).
    status is "ok", "unreadable" (an image file that PIL cannot open and fully load) or "duplicate".
    Duplicate rule (with dedupe=True; only readable files take part): byte-identical files
    (same sha256) whose copies all carry the same label keep the first path in sorted order
    ("ok") and exclude the others ("duplicate", duplicate_of = the kept path); if the copies
    carry different labels, all of them are excluded because the label is ambiguous
    (each "duplicate", duplicate_of = the first other copy in sorted order).
    Non-image files (by suffix) are hashed only; their width/height are empty.
    """
    out = pd.DataFrame({"path": df["path"].astype(str)})
    out["label"] = df["label"].fillna("").astype(str).to_numpy() if "label" in df else ""
    out = out.sort_values("path", ignore_index=True)
    if out["path"].duplicated().any():
        raise ValueError(f"inventory: paths listed twice: {out['path'][out['path'].duplicated()].tolist()[:5]}")
    paths = out["path"].tolist()
    decode = [Path(p).suffix.lower() in IMAGE_SUFFIXES for p in paths]
    results = _inspect_all(paths, decode, processes)
    out["sha256"] = [r[0] for r in results]
    out["width"] = pd.array([r[1] if r[1] >= 0 else pd.NA for r in results], dtype="Int64")
    out["height"] = pd.array([r[2] if r[2] >= 0 else pd.NA for r in results], dtype="Int64")
    out["error"] = [r[3] for r in results]
    out["status"] = np.where(out["error"] != "", "unreadable", "ok")
    out["duplicate_of"] = ""
    if dedupe:
        readable = out[out["status"] == "ok"]
        for _, group in readable.groupby("sha256", sort=True):
            if len(group) < 2:
                continue
            members = sorted(group["path"])
            if group["label"].nunique() == 1:
                rest = group.index[group["path"] != members[0]]
                out.loc[rest, "status"] = "duplicate"
                out.loc[rest, "duplicate_of"] = members[0]
            else:
                for idx, path in zip(group.index, group["path"]):
                    out.loc[idx, "status"] = "duplicate"
                    out.loc[idx, "duplicate_of"] = next(m for m in members if m != path)
    return out[[*INVENTORY_COLUMNS, "error"]]


def duplicate_groups(inv: pd.DataFrame) -> list[dict]:
    """Groups of byte-identical readable files in an inventory: sha256, paths, labels, kept path (None if ambiguous)."""
    readable = inv[inv["status"] != "unreadable"]
    groups = []
    for sha, group in readable.groupby("sha256", sort=True):
        if len(group) < 2:
            continue
        group = group.sort_values("path")
        kept = group.loc[group["status"] == "ok", "path"].tolist()
        groups.append(
            {
                "sha256": sha,
                "paths": group["path"].tolist(),
                "labels": group["label"].tolist(),
                "kept": kept[0] if kept else None,
            }
        )
    return sorted(groups, key=lambda g: g["paths"][0])


def _all_files(key: str) -> list[str]:
    """Every file under a dataset's folder, relative to the data root."""
    root = data_root()
    return sorted(p.relative_to(root).as_posix() for p in locate(key).rglob("*") if p.is_file())


def _samples(key: str) -> pd.DataFrame:
    """The labelled sample files of a dataset (path, label) that de-duplication applies to."""
    if key == "pbc":
        return readers.read_pbc()
    if key == "zheng2018":
        return pd.concat([readers.read_zheng(1), readers.read_zheng(2)])[["path", "label"]]
    if key == "bccd":
        boxes = readers.read_bccd_boxes()
        images = pd.DataFrame({"path": sorted(boxes["image_path"].unique())})
        images["image_id"] = images["path"].str.extract(r"_(\d+)\.jpg$", expand=False).astype(int)
        images["label"] = images["image_id"].map(readers._bccd_subtypes(locate("bccd"))).fillna("")
        jpgs = [p for p in _all_files("bccd") if p.startswith("bccd/BCCD/JPEGImages/")]
        extra = sorted(set(jpgs) - set(images["path"]))
        return pd.concat([images[["path", "label"]], pd.DataFrame({"path": extra, "label": ""})])
    if key == "all_idb2":
        return readers.read_all_idb2()[["path", "label"]]
    if key == "wbcatt":
        return pd.DataFrame({"path": [], "label": []})
    raise KeyError(key)


def dataset_inventory(key: str, processes: int = PROCESSES) -> pd.DataFrame:
    """Inventory of every file under a dataset's folder; column sample marks the images that are de-duplicated.

    Other files (masks, annotations, metadata) are hashed and, if images, decoded, but never
    marked duplicate.
    """
    samples = _samples(key)
    others = sorted(set(_all_files(key)) - set(samples["path"]))
    inv = pd.concat(
        [
            inventory(samples, dedupe=True, processes=processes).assign(sample=True),
            inventory(pd.DataFrame({"path": others, "label": ""}), dedupe=False, processes=processes).assign(
                sample=False
            ),
        ]
    )
    return inv.sort_values("path", ignore_index=True)


# ---------------------------------------------------------------- splits


def _rng(name: str) -> np.random.Generator:
    """The generator of one manifest: default_rng([SEED, crc32(name)]), independent of the other manifests."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def stratified_split(labels: Iterable[str], fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Split names per row: within each class (sorted), a seeded permutation cut by fractions (first split takes the
    rest)."""
    labels = np.asarray(list(labels), dtype=object)
    names = list(fractions)
    out = np.empty(len(labels), dtype=object)
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(labels == cls)
        perm = idx[rng.permutation(len(idx))]
        counts = [int(np.floor(len(idx) * fractions[n] + 0.5)) for n in names[1:]]
        first = len(idx) - sum(counts)
        if first < 0:
            raise ValueError(f"class {cls!r} has too few rows ({len(idx)}) for fractions {fractions}")
        bounds = np.cumsum([0, first, *counts])
        for name, lo, hi in zip(names, bounds[:-1], bounds[1:]):
            out[perm[lo:hi]] = name
    return out


def stratified_folds(labels: Iterable[str], k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold numbers 0..k-1 per row: within each class (sorted), a seeded shuffle dealt round-robin, the deal continuing
    across classes."""
    labels = np.asarray(list(labels), dtype=object)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(labels == cls)
        perm = idx[rng.permutation(len(idx))]
        folds[perm] = (offset + np.arange(len(perm))) % k
        offset += len(perm)
    return folds


def _usable(inv: pd.DataFrame) -> pd.DataFrame:
    """Sample rows of an inventory with status ok."""
    return inv[(inv["status"] == "ok") & inv["sample"]]


def _pbc8(pbc_inv: pd.DataFrame) -> pd.DataFrame:
    """All usable PBC images, stratified 80/10/10 train/val/test."""
    df = _usable(pbc_inv)[["path", "label"]].reset_index(drop=True)
    df["split"] = stratified_split(df["label"], {"train": 0.8, "val": 0.1, "test": 0.1}, _rng("pbc8"))
    return df


def _pbc5(pbc8: pd.DataFrame) -> pd.DataFrame:
    """The pbc8 rows of the 5 WBC classes with their split, plus stratified fold10 and fold5 = fold10 // 2."""
    df = pbc8[pbc8["label"].isin(readers.PBC_WBC_CLASSES)].reset_index(drop=True)
    df["fold10"] = stratified_folds(df["label"], 10, _rng("pbc5"))
    df["fold5"] = df["fold10"] // 2
    return df


def _pbc_anomaly(pbc8: pd.DataFrame) -> pd.DataFrame:
    """Erythroblasts held out into test; the other 7 classes stratified 70/10/20."""
    df = pbc8[["path", "label"]].copy()
    held = df["label"] == "erythroblast"
    df["split"] = "test"
    df.loc[~held, "split"] = stratified_split(
        df.loc[~held, "label"], {"train": 0.7, "val": 0.1, "test": 0.2}, _rng("pbc_anomaly")
    )
    df["held_out"] = held.astype(int)
    return df.reset_index(drop=True)


def _pbc_lowdata(pbc8: pd.DataFrame) -> pd.DataFrame:
    """Per class 250 train / 836 test / rest val, and nested train subsets of 10..250 for 5 repeats."""
    df = pbc8[["path", "label"]].reset_index(drop=True)
    rng = _rng("pbc_lowdata")
    counts = df["label"].value_counts()
    short = {c: int(n) for c, n in counts.items() if n < LOWDATA_TRAIN + LOWDATA_TEST}
    if short:
        raise ValueError(
            f"low-data split needs {LOWDATA_TRAIN} train + {LOWDATA_TEST} test images per class; "
            f"too few usable images in: {short}"
        )
    split = np.empty(len(df), dtype=object)
    labels = df["label"].to_numpy()
    for cls in sorted(counts.index):
        perm = np.flatnonzero(labels == cls)[rng.permutation(int(counts[cls]))]
        split[perm[:LOWDATA_TRAIN]] = "train"
        split[perm[LOWDATA_TRAIN : LOWDATA_TRAIN + LOWDATA_TEST]] = "test"
        split[perm[LOWDATA_TRAIN + LOWDATA_TEST :]] = "val"
    df["split"] = split
    ks = np.asarray(LOWDATA_SUBSETS)
    for r in range(LOWDATA_REPEATS):
        col = pd.array([pd.NA] * len(df), dtype="Int64")
        for cls in sorted(counts.index):
            train_idx = np.flatnonzero((labels == cls) & (split == "train"))
            rank = np.empty(len(train_idx), dtype=np.int64)
            rank[rng.permutation(len(train_idx))] = np.arange(len(train_idx))
            # smallest k with rank < k: the first k of the permutation form the k-subset
            col[train_idx] = ks[np.searchsorted(ks, rank, side="right")]
        df[f"subset_r{r}"] = col
    return df


def _wbcatt(pbc_inv: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """WBCAtt's own splits and attributes, without rows whose PBC file is excluded or absent; with a drop report."""
    att = readers.read_wbcatt()
    status = pbc_inv.set_index("path")["status"]
    pbc_label = pbc_inv.set_index("path")["label"]
    row_status = att["path"].map(status).fillna("absent")
    keep = row_status == "ok"
    mismatch = att.loc[keep & (att["path"].map(pbc_label) != att["label"]), "path"].tolist()
    report = {
        "rows_read": int(len(att)),
        "rows_kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "dropped_by_reason": {k: int(v) for k, v in row_status[~keep].value_counts().sort_index().items()},
        "dropped_paths": att.loc[~keep, "path"].tolist(),
        "label_differs_from_pbc_folder": mismatch,
    }
    return att[keep].reset_index(drop=True), report


def _zheng(zheng_inv: pd.DataFrame, dataset: int) -> pd.DataFrame:
    """Usable images of Zheng Dataset N with masks, labels and a stratified fold5."""
    df = readers.read_zheng(dataset)
    df = df[df["path"].isin(_usable(zheng_inv)["path"])].reset_index(drop=True)
    df["fold5"] = stratified_folds(df["label"], 5, _rng(f"zheng{dataset}"))
    return df


def _bccd(bccd_inv: pd.DataFrame) -> pd.DataFrame:
    """BCCD WBC boxes; usable = readable image with exactly one WBC box and exactly one subtype; fold5 over usable
    rows."""
    df = readers.read_bccd()
    ok_images = set(bccd_inv.loc[bccd_inv["status"] == "ok", "path"])
    one_type = (df["subtype"] != "") & ~df["subtype"].str.contains(",")
    df["usable"] = ((df["n_wbc_in_image"] == 1) & one_type & df["image_path"].isin(ok_images)).astype(int)
    df["fold5"] = -1
    use = df["usable"] == 1
    df.loc[use, "fold5"] = stratified_folds(df.loc[use, "subtype"], 5, _rng("bccd"))
    return df


def _all_idb2(inv: pd.DataFrame) -> pd.DataFrame:
    """Usable ALL-IDB2 images with masks, stratified 70/10/20 split and a stratified fold5."""
    df = readers.read_all_idb2()
    df = df[df["path"].isin(_usable(inv)["path"])].reset_index(drop=True)
    rng = _rng("all_idb2")
    df["split"] = stratified_split(df["label"], {"train": 0.7, "val": 0.1, "test": 0.2}, rng)
    df["fold5"] = stratified_folds(df["label"], 5, rng)
    return df


MANIFEST_COLUMNS: dict[str, list[str]] = {
    "pbc8": ["path", "label", "split"],
    "pbc5": ["path", "label", "split", "fold10", "fold5"],
    "wbcatt": ["path", "label", "split", *readers.WBCATT_ATTRIBUTES],
    "pbc_anomaly": ["path", "label", "split", "held_out"],
    "pbc_lowdata": ["path", "label", "split", *[f"subset_r{r}" for r in range(LOWDATA_REPEATS)]],
    "zheng1": ["path", "mask_path", "label", "fold5"],
    "zheng2": ["path", "mask_path", "label", "fold5"],
    "bccd": [
        "image_path", "image_id", "xmin", "ymin", "xmax", "ymax", "n_wbc_in_image",
        "subtype", "voc_split", "usable", "fold5",
    ],
    "all_idb2": ["path", "mask_path", "label", "split", "fold5"],
}


def _write_csv(df: pd.DataFrame, path: Path, columns: list[str]) -> Path:
    """Write rows sorted by their first columns, in a fixed column order, with \\n line ends."""
    keys = ["image_path", "xmin", "ymin", "xmax", "ymax"] if columns[0] == "image_path" else ["path"]
    out = df[columns].sort_values(keys, kind="stable")
    out.to_csv(path, index=False, lineterminator="\n")
    return path


def _split_counts(df: pd.DataFrame, split_col: str, label_col: str) -> dict:
    """Images per split and label."""
    return {
        str(s): {str(k): int(v) for k, v in g[label_col].value_counts().sort_index().items()}
        for s, g in df.groupby(split_col, sort=True)
    }


def build_manifests(out_dir: Path | None = None, processes: int = PROCESSES) -> dict[str, Path]:
    """Inventory every dataset and write the inventories, split manifests and construction_report.json into out_dir
    (default: ``data/manifests`` in the project, never the copy an installed package ships)."""
    out_dir = Path(out_dir) if out_dir is not None else project_root() / "data" / "manifests"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    report: dict = {"seed": SEED, "data_sources": {k: SOURCES[k].folder for k in INVENTORY_KEYS}, "datasets": {}}
    invs: dict[str, pd.DataFrame] = {}
    for key in INVENTORY_KEYS:
        inv = dataset_inventory(key, processes)
        invs[key] = inv
        written[f"{key}_inventory"] = _write_csv(inv, out_dir / f"{key}_inventory.csv", INVENTORY_COLUMNS)
        samples = inv[inv["sample"]]
        report["datasets"][key] = {
            "files": int(len(inv)),
            "images_read": int(len(samples)),
            "unreadable": inv.loc[inv["status"] == "unreadable", "path"].tolist(),
            "duplicate_groups": duplicate_groups(samples),
            "excluded": int((samples["status"] != "ok").sum()),
            "usable": int((samples["status"] == "ok").sum()),
            "usable_per_label": {k: int(v) for k, v in _usable(inv)["label"].value_counts().sort_index().items()},
        }

    pbc8 = _pbc8(invs["pbc"])
    wbcatt, wbcatt_report = _wbcatt(invs["pbc"])
    manifests = {
        "pbc8": pbc8,
        "pbc5": _pbc5(pbc8),
        "wbcatt": wbcatt,
        "pbc_anomaly": _pbc_anomaly(pbc8),
        "pbc_lowdata": _pbc_lowdata(pbc8),
        "zheng1": _zheng(invs["zheng2018"], 1),
        "zheng2": _zheng(invs["zheng2018"], 2),
        "bccd": _bccd(invs["bccd"]),
        "all_idb2": _all_idb2(invs["all_idb2"]),
    }
    report["wbcatt"] = wbcatt_report
    bccd = manifests["bccd"]
    images_with_boxes = readers.read_bccd_boxes()["image_path"].unique()
    report["bccd"] = {
        "wbc_boxes": int(len(bccd)),
        "images_with_wbc": int(bccd["image_path"].nunique()),
        "images_without_wbc": int(len(set(images_with_boxes)) - bccd["image_path"].nunique()),
        "usable_rows": int(bccd["usable"].sum()),
        "not_usable_reasons": {
            "several_wbc_boxes": int((bccd["n_wbc_in_image"] > 1).sum()),
            "no_subtype": int((bccd["subtype"] == "").sum()),
            "several_subtypes": int(bccd["subtype"].str.contains(",").sum()),
        },
        "usable_per_subtype": {
            k: int(v) for k, v in bccd.loc[bccd["usable"] == 1, "subtype"].value_counts().sort_index().items()
        },
    }
    report["manifests"] = {}
    for name, df in manifests.items():
        written[name] = _write_csv(df, out_dir / f"{name}.csv", MANIFEST_COLUMNS[name])
        label_col = "subtype" if name == "bccd" else "label"
        entry: dict = {"rows": int(len(df))}
        split_col = "voc_split" if name == "bccd" else "split"
        if split_col in df:
            sub = df[df["usable"] == 1] if name == "bccd" else df
            entry["per_split"] = _split_counts(sub, split_col, label_col)
        for fold_col in ("fold10", "fold5"):
            if fold_col in df:
                sub = df[df[fold_col] >= 0]
                entry[f"per_{fold_col}"] = {str(k): int(v)
                                            for k, v in sub[fold_col].value_counts().sort_index().items()}
                break
        if name == "pbc_lowdata":
            entry["subset_sizes_r0"] = {
                str(k): int((df["subset_r0"].fillna(10**9) <= k).sum()) for k in LOWDATA_SUBSETS
            }
        report["manifests"][name] = entry
    report_path = out_dir / "construction_report.json"
    report_path.write_text(json.dumps(report, sort_keys=True, indent=2) + "\n")
    written["construction_report"] = report_path
    return written


def load_manifest(name: str) -> pd.DataFrame:
    """A committed manifest (e.g. 'pbc8') from manifests_dir(); subset_r* columns as nullable Int64."""
    stem = name[:-4] if name.endswith(".csv") else name
    path = manifests_dir() / f"{stem}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest {stem!r} not found at {path}; run `wbcstudy data build` to construct the manifests "
            f"(known: {', '.join([*MANIFEST_COLUMNS, *[k + '_inventory' for k in INVENTORY_KEYS]])})"
        )
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in df.columns:
        if col.startswith("subset_") or col in ("width", "height"):
            df[col] = pd.to_numeric(df[col].replace("", pd.NA)).astype("Int64")
        elif col in ("fold5", "fold10", "held_out", "usable", "image_id", "xmin", "ymin", "xmax", "ymax",
                     "n_wbc_in_image"):
            df[col] = df[col].astype(np.int64)
    return df
