"""HemaX's training data: three public sources, each carrying the labels it has.

- PBC cells with WBCAtt attributes (``data/manifests/wbcatt.csv``, WBCAtt's own
  train/val/test split): class + four attributes + WBCAtt's N:C low/high; no box, no mask.
- Zheng et al. 2018 Datasets 1 and 2 (``zheng1.csv``, ``zheng2.csv``): class + expert
  nucleus/cytoplasm masks; the box is the mask's bounding box; split by the committed
  ``fold5`` column: fold 0 test, fold 1 validation, folds 2–4 training.
- BCCD smears (``bccd.csv``, usable rows = exactly one WBC box with one subtype; VOC
  split): class + WBC box on a whole 640×480 smear, resized (not padded) to a square.

WBCAtt → the paper's attributes (:data:`ATTRIBUTES`, :data:`WBCATT_MAP`):

- granularity: WBCAtt yes/no as is;
- cytoplasm colour: the paper's eosinophilic (pale) vs basophilic (blue): WBCAtt "light
  blue" (the pale cytoplasm of granulocytes) → pale; "blue" and "purple blue" → basophilic;
- nucleus shape: "unsegmented-band" and "unsegmented-indented" → horseshoe/kidney;
  "segmented-bilobed" and "segmented-multilobed" → bi/multilobed; "unsegmented-round" →
  round/oval; "irregular" (mostly basophils, whose nucleus the granules hide) has no
  counterpart → unknown (masked out of the loss and the metrics);
- size: WBCAtt's cell size small/big (the paper's size relative to RBCs has three levels;
  WBCAtt has two and no RBC reference);
- N:C: WBCAtt low/high is kept as a categorical check of the N:C computed from the masks.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from PIL import Image

from wbcstudy.data.cache import _versioned, cached_images
from wbcstudy.data.construct import load_manifest
from wbcstudy.data.readers import PBC_WBC_CLASSES, load_rgb, load_zheng_mask

__all__ = ["CLASSES", "ATTRIBUTES", "WBCATT_MAP", "SOURCES", "HemaXData", "attribute_codes", "mask_box",
           "zheng_split", "load_zheng_mask", "build_hemax_data", "subsample"]

CLASSES: list[str] = list(PBC_WBC_CLASSES)
#: attribute → the category names of its head, in index order
ATTRIBUTES: dict[str, list[str]] = {
    "granularity": ["no", "yes"],
    "cytoplasm_colour": ["pale", "basophilic"],
    "nucleus_shape": ["horseshoe/kidney", "bi/multilobed", "round/oval"],
    "size": ["small", "big"],
}
#: attribute → (WBCAtt column, WBCAtt value → category name; a value absent here is unknown)
WBCATT_MAP: dict[str, tuple[str, dict[str, str]]] = {
    "granularity": ("granularity", {"no": "no", "yes": "yes"}),
    "cytoplasm_colour": ("cytoplasm_colour", {"light blue": "pale", "blue": "basophilic", "purple blue": "basophilic"}),
    "nucleus_shape": ("nucleus_shape", {
        "unsegmented-band": "horseshoe/kidney", "unsegmented-indented": "horseshoe/kidney",
        "segmented-bilobed": "bi/multilobed", "segmented-multilobed": "bi/multilobed",
        "unsegmented-round": "round/oval"}),
    "size": ("cell_size", {"small": "small", "big": "big"}),
}
SOURCES: tuple[str, ...] = ("pbc", "zheng", "bccd")


def attribute_codes(df: pd.DataFrame) -> np.ndarray:
    """(n, 4) category indices of the paper's attributes from WBCAtt columns; −1 where the value has no counterpart."""
    out = np.full((len(df), len(ATTRIBUTES)), -1, dtype=np.int64)
    for a, (name, cats) in enumerate(ATTRIBUTES.items()):
        column, mapping = WBCATT_MAP[name]
        index = {c: i for i, c in enumerate(cats)}
        out[:, a] = [index[mapping[v]] if v in mapping else -1 for v in df[column].astype(str).str.strip()]
    return out


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The (cx, cy, w, h) box, normalised to [0, 1], of a mask's nonzero pixels (pixel edges, not centres)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask has no box")
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], dtype=np.float32)


def zheng_split(fold5: pd.Series) -> pd.Series:
    """Zheng's split from the committed 5 folds: fold 0 → test, fold 1 → val, others → train."""
    return fold5.map(lambda f: "test" if f == 0 else "val" if f == 1 else "train")


@dataclass
class HemaXData:
    """Images and whatever labels each has; −1 / NaN / False where a source has no such label.

    masks holds only the masked images' (2, S, S) cytoplasm/nucleus masks; mask_index points into it (−1: none).
    """

    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) class index into CLASSES
    boxes: np.ndarray  # (n, 4) cx, cy, w, h in [0, 1]
    has_box: np.ndarray  # (n,) bool
    mask_index: np.ndarray  # (n,) int, −1 without a mask
    masks: np.ndarray  # (m, 2, S, S) uint8 (cytoplasm without nucleus, nucleus)
    attributes: np.ndarray  # (n, 4) int, −1 unknown
    nc_category: np.ndarray  # (n,) WBCAtt N:C 0 low / 1 high, −1 unknown
    source: np.ndarray  # (n,) str: pbc, zheng, bccd
    path: np.ndarray  # (n,) str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_mask(self) -> np.ndarray:
        """(n,) whether each image has nucleus/cytoplasm masks."""
        return self.mask_index >= 0

    def subset(self, idx: np.ndarray) -> HemaXData:
        """The rows idx (masks re-indexed)."""
        idx = np.asarray(idx, dtype=np.int64)
        mi = self.mask_index[idx]
        keep = mi[mi >= 0]
        new_mi = np.full(len(idx), -1, dtype=np.int64)
        new_mi[mi >= 0] = np.arange(len(keep))
        out = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name not in ("masks", "mask_index")}
        return HemaXData(**out, mask_index=new_mi, masks=self.masks[keep])

    @staticmethod
    def concat(parts: list[HemaXData]) -> HemaXData:
        """One dataset from several (masks re-indexed)."""
        offset, mis = 0, []
        for p in parts:
            mis.append(np.where(p.mask_index >= 0, p.mask_index + offset, -1))
            offset += len(p.masks)
        out = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
               for f in fields(HemaXData) if f.name not in ("masks", "mask_index")}
        return HemaXData(**out, mask_index=np.concatenate(mis), masks=np.concatenate([p.masks for p in parts]))

    def counts(self) -> pd.DataFrame:
        """Per source: images, and how many carry each label."""
        df = pd.DataFrame({"source": self.source, "class": self.labels >= 0, "box": self.has_box,
                           "mask": self.has_mask, **{a: self.attributes[:, i] >= 0 for i, a in enumerate(ATTRIBUTES)}})
        out = df.groupby("source", sort=False).sum()
        out.insert(0, "images", df.groupby("source", sort=False).size())
        return out


def _empty(n: int, size: int) -> dict:
    return {"boxes": np.zeros((n, 4), np.float32), "has_box": np.zeros(n, bool), "mask_index": np.full(n, -1, np.int64),
            "masks": np.zeros((0, 2, size, size), np.uint8), "attributes": np.full((n, 4), -1, np.int64),
            "nc_category": np.full(n, -1, np.int64)}


def _limit(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most limit rows (0: all), drawn with a fixed seed and kept in manifest order."""
    if limit and limit < len(df):
        df = df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), limit, replace=False))]
    return df.reset_index(drop=True)


def _pbc(split: str, size: int, limit: int = 0, seed: int = 0) -> HemaXData:
    df = load_manifest("wbcatt")
    df = _limit(df[df["split"] == split], limit, seed)
    base = _empty(len(df), size)
    base["attributes"] = attribute_codes(df)
    base["nc_category"] = (df["nuclear_cytoplasmic_ratio"].map({"low": 0, "high": 1}).fillna(-1).astype(np.int64)
                           .to_numpy())
    images = cached_images("pbc", df["path"].tolist(), size)
    return HemaXData(images=images, labels=df["label"].map(CLASSES.index).to_numpy(np.int64),
                     source=np.full(len(df), "pbc"), path=df["path"].to_numpy(str), **base)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


def _zheng(split: str, size: int, limit: int = 0, seed: int = 0) -> HemaXData:
    parts = []
    for k in (1, 2):
        df = load_manifest(f"zheng{k}")
        df = _limit(df[zheng_split(df["fold5"]) == split], (limit + 1) // 2, seed)
        base = _empty(len(df), size)
        images = cached_images(f"zheng{k}", df["path"].tolist(), size)
        masks = np.zeros((len(df), 2, size, size), np.uint8)
        for i, mp in enumerate(df["mask_path"]):
            m = _resize_mask(load_zheng_mask(mp), size)
            masks[i, 0], masks[i, 1] = m == 1, m == 2
            base["boxes"][i] = mask_box(m > 0)
        base.update(has_box=np.ones(len(df), bool), mask_index=np.arange(len(df)), masks=masks)
        parts.append(HemaXData(images=images, labels=df["label"].map(CLASSES.index).to_numpy(np.int64),
                               source=np.full(len(df), "zheng"), path=df["path"].to_numpy(str), **base))
    return HemaXData.concat(parts)


@_versioned("bccd-smear-1")
def _load_smear(item: str, size: int, crop: str) -> np.ndarray:
    """A whole BCCD smear resized (aspect not kept) to size × size."""
    return load_rgb(item, size)


def _bccd(split: str, size: int, limit: int = 0, seed: int = 0) -> HemaXData:
    df = load_manifest("bccd")
    df = _limit(df[(df["usable"] == 1) & (df["voc_split"] == split)], limit, seed)
    base = _empty(len(df), size)
    w, h = 640.0, 480.0  # every BCCD smear is 640 × 480
    base["boxes"] = np.stack([(df.xmin + df.xmax) / 2 / w, (df.ymin + df.ymax) / 2 / h,
                              (df.xmax - df.xmin) / w, (df.ymax - df.ymin) / h], 1).astype(np.float32).clip(0, 1)
    base["has_box"] = np.ones(len(df), bool)
    images = cached_images("bccd_wbc", df["image_path"].tolist(), size, loader=_load_smear)
    return HemaXData(images=images, labels=df["subtype"].map(CLASSES.index).to_numpy(np.int64),
                     source=np.full(len(df), "bccd"), path=df["image_path"].to_numpy(str), **base)


def subsample(data: HemaXData, per_source: dict[str, int], seed: int = 0) -> HemaXData:
    """A fixed-seed random subset with at most per_source[s] images of each source (0 or absent: all)."""
    rng = np.random.default_rng(seed)
    keep = []
    for s in SOURCES:
        idx = np.flatnonzero(data.source == s)
        limit = per_source.get(s, 0)
        if limit and limit < len(idx):
            idx = np.sort(rng.choice(idx, limit, replace=False))
        keep.append(idx)
    return data.subset(np.concatenate(keep))


def build_hemax_data(split: str, size: int, per_source: dict[str, int] | None = None, seed: int = 0,
                     sources: tuple[str, ...] = SOURCES) -> HemaXData:
    """The images of one split (train, val or test) at size × size, from ``sources`` (default all three).

    per_source caps each source (pbc, zheng, bccd; 0 or absent: all), drawn with a fixed seed
    before any image is decoded (Zheng's cap is split evenly between its two datasets). The summary's HemaX leaves
    Zheng and BCCD out (``sources=("pbc",)``): it is tested on them as other laboratories' cells.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"HemaX's sources are {SOURCES}; got {tuple(sources)}")
    limits = per_source or {}
    builders = {"pbc": _pbc, "zheng": _zheng, "bccd": _bccd}
    return HemaXData.concat([builders[s](split, size, limits.get(s, 0), seed) for s in SOURCES if s in sources])
