"""Readers for each dataset's published layout: tables of files and labels, and image/mask loaders."""
from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wbcstudy.data.sources import incomplete, locate
from wbcstudy.paths import data_root

PBC_CLASSES: list[str] = [
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
]
PBC_WBC_CLASSES: list[str] = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]

WBCATT_ATTRIBUTES: list[str] = [
    "cell_size",
    "cell_shape",
    "nucleus_shape",
    "nuclear_cytoplasmic_ratio",
    "chromatin_density",
    "cytoplasm_vacuole",
    "cytoplasm_texture",
    "cytoplasm_colour",
    "granule_type",
    "granule_colour",
    "granularity",
]

ZHENG_CLASSES: dict[int, str] = {1: "neutrophil", 2: "lymphocyte", 3: "monocyte", 4: "eosinophil", 5: "basophil"}
BCCD_SUBTYPES: list[str] = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]

# PBC geometry: the mirror holds the 256x256 window at top-left (x, y) = (48, 48) of the original image, which is
# 360x363 (W x H) for most files and 366x369 for some (e.g. basophil/BA_165215.jpg as published)
PBC_ORIGINAL_SIZE: tuple[int, int] = (360, 363)
PBC_ORIGINAL_SIZES: tuple[tuple[int, int], ...] = ((360, 363), (366, 369))
PBC_WINDOW_ORIGIN: tuple[int, int] = (48, 48)
PBC_WINDOW: int = 256


def pbc_window_origin(width: int, height: int) -> tuple[int, int] | None:
    """Top-left (x, y) of the 256x256 PBC window in an image of this size: (0, 0) for the mirror's crop, (48, 48)
    for an original (any size the window fits in: 360x363 and 366x369 occur); ``None`` when it does not fit."""
    if (width, height) == (PBC_WINDOW, PBC_WINDOW):
        return (0, 0)
    x0, y0 = PBC_WINDOW_ORIGIN
    if width >= x0 + PBC_WINDOW and height >= y0 + PBC_WINDOW:
        return (x0, y0)
    return None


class UnreadableImageError(ValueError):
    """A file that should be an image cannot be decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def _rel(path: Path) -> str:
    """A path relative to the data root, as a posix string."""
    return path.relative_to(data_root()).as_posix()


def _dataset_of(path: Path) -> str | None:
    """The registry key of the dataset whose folder holds path (None if none does)."""
    from wbcstudy.data.sources import SOURCES

    root = data_root()
    for key, src in SOURCES.items():
        if path.is_relative_to(root / src.folder):
            return key
    return None


def _present(path: str | Path) -> Path:
    """The absolute path of an image that must exist: a missing file of a dataset raises ``DatasetMissing``."""
    full = _abs(path)
    if not full.exists():
        key = _dataset_of(full)
        if key is not None:
            locate(key)  # the whole dataset missing: its own message
            raise incomplete(key, f"{full.relative_to(data_root())} is missing")
    return full


def _abs(path: str | Path) -> Path:
    """A path as given if absolute or existing, else taken relative to the data root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return data_root() / p


def read_pbc() -> pd.DataFrame:
    """Every file in PBC's class folders (hidden ones included): columns path, label; sorted by path."""
    root = locate("pbc")
    rows = []
    for label in PBC_CLASSES:
        folder = root / label
        if not folder.is_dir():
            raise incomplete("pbc", f"class folder {folder.name}/ is missing")
        rows += [(_rel(p), label) for p in folder.iterdir() if p.is_file()]
    return pd.DataFrame(rows, columns=["path", "label"]).sort_values("path", ignore_index=True)


def _reduce_factor(box: tuple[int, int, int, int], size: int | None) -> int:
    """The largest JPEG DCT scale 1/f (f in 8, 4, 2) that divides the box corners and keeps it at least 2*size wide."""
    if size is None:
        return 1
    for factor in (8, 4, 2):
        exact = all(c % factor == 0 for c in box)
        if exact and min(box[2] - box[0], box[3] - box[1]) // factor >= 2 * size:
            return factor
    return 1


def load_pbc_image(
    path: str | Path, size: int | None = None, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """A PBC image as uint8 HxWx3: the 256x256 window (mirror crop, or at (48, 48) of an original of any published
    size: 360x363 or 366x369), resized to size x size.

    box = (left, top, right, bottom) optionally crops inside the 256 window first (window coordinates).
    When size is much smaller than the crop, JPEGs are decoded at 1/2, 1/4 or 1/8 scale (PIL draft)
    and then reduced with PIL's antialiased bilinear resize.
    """
    full = _present(path)
    box = box or (0, 0, PBC_WINDOW, PBC_WINDOW)
    if not (0 <= box[0] < box[2] <= PBC_WINDOW and 0 <= box[1] < box[3] <= PBC_WINDOW):
        raise ValueError(f"crop box {box} is not inside the {PBC_WINDOW}x{PBC_WINDOW} window")
    try:
        img = Image.open(full)
    except Exception as exc:
        raise UnreadableImageError(full, f"{type(exc).__name__}: {exc}") from exc
    with img:
        w, h = img.size
        origin = pbc_window_origin(w, h)
        if origin is None:
            raise ValueError(
                f"{full}: PBC image of size {w}x{h} (WxH); expected the mirror's 256x256 crop "
                f"or an original (e.g. 360x363 or 366x369) that holds the 256x256 window at (48, 48)"
            )
        x0, y0 = origin
        absolute = (x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3])
        factor = _reduce_factor(absolute, size)
        if factor > 1 and img.format == "JPEG":
            # PIL picks the DCT scale min(w // rw, h // rh) rounded down to 1, 2, 4 or 8
            img.draft("RGB", (w // factor, h // factor))
            factor = round(w / img.size[0])
        else:
            factor = 1
        try:
            img.load()
            rgb = img.convert("RGB").crop(tuple(c // factor for c in absolute))
        except Exception as exc:
            raise UnreadableImageError(full, f"{type(exc).__name__}: {exc}") from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Any image file as uint8 HxWx3, optionally resized (antialiased bilinear) to size x size."""
    full = _present(path)
    try:
        with Image.open(full) as img:
            img.load()
            rgb = img.convert("RGB")
    except Exception as exc:
        raise UnreadableImageError(full, f"{type(exc).__name__}: {exc}") from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def read_wbcatt() -> pd.DataFrame:
    """WBCAtt's three CSVs: columns path (relative to data root), label, split, the 11 attributes; sorted by path."""
    root = locate("wbcatt")
    frames = []
    for split in ("train", "val", "test"):
        df = pd.read_csv(root / f"pbc_attr_v1_{split}.csv", dtype=str, keep_default_na=False)
        missing = {"label", "path", *WBCATT_ATTRIBUTES} - set(df.columns)
        if missing:
            raise ValueError(f"{root / f'pbc_attr_v1_{split}.csv'}: missing columns {sorted(missing)}")
        df = df.assign(path="pbc/" + df["path"].str.strip(), label=df["label"].str.strip().str.lower(), split=split)
        frames.append(df[["path", "label", "split", *WBCATT_ATTRIBUTES]])
    out = pd.concat(frames, ignore_index=True).sort_values("path", ignore_index=True)
    bad = sorted(set(out["label"]) - set(PBC_WBC_CLASSES))
    if bad:
        raise ValueError(f"WBCAtt labels not among the PBC WBC classes: {bad}")
    return out


def read_zheng(dataset: int) -> pd.DataFrame:
    """Zheng et al. Dataset 1 or 2: columns path (bmp), mask_path (png), label; sorted by path."""
    if dataset not in (1, 2):
        raise ValueError(f"Zheng dataset must be 1 or 2, not {dataset!r}")
    root = locate("zheng2018")
    labels_csv = root / f"Class Labels of Dataset {dataset}.csv"
    with open(labels_csv, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        codes = {int(r[0]): int(r[1]) for r in reader if r and r[0].strip()}
    rows = []
    for bmp in sorted((root / f"Dataset {dataset}").glob("*.bmp")):
        number = int(bmp.stem)
        if number not in codes:
            raise ValueError(f"{bmp}: no class label in {labels_csv}")
        if codes[number] not in ZHENG_CLASSES:
            raise ValueError(f"{labels_csv}: image {number} has unknown class code {codes[number]}")
        rows.append((_rel(bmp), _rel(bmp.with_suffix(".png")), ZHENG_CLASSES[codes[number]]))
    if len(rows) != len(codes):
        raise ValueError(f"{labels_csv} labels {len(codes)} images but {len(rows)} BMP files were found")
    return pd.DataFrame(rows, columns=["path", "mask_path", "label"]).sort_values("path", ignore_index=True)


def load_mask(path: str | Path) -> np.ndarray:
    """A segmentation mask as uint8 HxW: 0 background, 1 cytoplasm, 2 nucleus (Zheng 0/128/255, ALL-IDB2 0/155/255)."""
    full = _present(path)
    try:
        with Image.open(full) as img:
            img.load()
            arr = np.asarray(img if img.mode in ("L", "I", "I;16") else img.convert("L"))
    except Exception as exc:
        raise UnreadableImageError(full, f"{type(exc).__name__}: {exc}") from exc
    values = set(np.unique(arr).tolist())
    for cytoplasm in (128, 155):
        if values <= {0, cytoplasm, 255}:
            out = np.zeros(arr.shape, dtype=np.uint8)
            out[arr == cytoplasm] = 1
            out[arr == 255] = 2
            return out
    raise ValueError(
        f"{full}: mask values {sorted(values)[:10]} are not 0/128/255 (Zheng) or 0/155/255 (ALL-IDB2)"
    )


def load_zheng_mask(path: str) -> np.ndarray:
    """A Zheng mask as 0 background / 1 cytoplasm / 2 nucleus; stray grey values (a few masks of Dataset 2 hold e.g. 9)
    are snapped to the nearest of 0, 128 and 255 instead of rejected as ``readers.load_mask`` does."""
    try:
        return load_mask(path)
    except ValueError:
        with Image.open(_present(path)) as img:
            raw = np.asarray(img.convert("L")).astype(np.int16)
        levels = np.array([0, 128, 255])
        return np.abs(raw[..., None] - levels).argmin(-1).astype(np.uint8)


def _voc_objects(xml_path: Path) -> list[tuple[str, int, int, int, int]]:
    """The (name, xmin, ymin, xmax, ymax) boxes of one Pascal-VOC annotation file."""
    out = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{xml_path}: object {name!r} without bndbox")
        coords = [int(round(float(bb.findtext(k) or "nan"))) for k in ("xmin", "ymin", "xmax", "ymax")]
        out.append((name, *coords))
    return out


def _bccd_voc_splits(root: Path) -> dict[str, str]:
    """Image stem -> train/val/test from BCCD's ImageSets/Main lists."""
    splits: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for line in (root / "BCCD" / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
            splits[line.strip()] = split
    return splits


def _bccd_subtypes(root: Path) -> dict[int, str]:
    """Image number -> comma-joined lowercase WBC subtypes from labels.csv ('' when the category is empty)."""
    labels: dict[int, str] = {}
    with open(root / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            image = (row.get("Image") or "").strip()
            if not image:
                continue
            parts = [p.strip().lower() for p in (row.get("Category") or "").split(",") if p.strip()]
            unknown = [p for p in parts if p not in BCCD_SUBTYPES]
            if unknown:
                raise ValueError(f"{root / 'labels.csv'}: image {image} has unknown subtype(s) {unknown}")
            labels[int(image)] = ",".join(parts)
    return labels


def read_bccd_boxes() -> pd.DataFrame:
    """All BCCD boxes (WBC, RBC, Platelets): image_path, image_id, cell, xmin, ymin, xmax, ymax, voc_split."""
    root = locate("bccd")
    splits = _bccd_voc_splits(root)
    rows = []
    for xml_path in sorted((root / "BCCD" / "Annotations").glob("*.xml")):
        image = root / "BCCD" / "JPEGImages" / f"{xml_path.stem}.jpg"
        image_id = int(xml_path.stem.rsplit("_", 1)[1])
        for name, *box in _voc_objects(xml_path):
            rows.append((_rel(image), image_id, name, *box, splits.get(xml_path.stem, "")))
    cols = ["image_path", "image_id", "cell", "xmin", "ymin", "xmax", "ymax", "voc_split"]
    return pd.DataFrame(rows, columns=cols).sort_values(
        ["image_path", "cell", "xmin", "ymin", "xmax", "ymax"], ignore_index=True
    )


def read_bccd() -> pd.DataFrame:
    """One row per BCCD WBC box with the image's subtype label(s) and its VOC split; sorted by image_path."""
    root = locate("bccd")
    boxes = read_bccd_boxes()
    wbc = boxes[boxes["cell"] == "WBC"].drop(columns="cell").reset_index(drop=True)
    wbc["n_wbc_in_image"] = wbc.groupby("image_path")["image_id"].transform("size").astype(int)
    subtypes = _bccd_subtypes(root)
    wbc["subtype"] = wbc["image_id"].map(subtypes).fillna("")
    cols = ["image_path", "image_id", "xmin", "ymin", "xmax", "ymax", "n_wbc_in_image", "subtype", "voc_split"]
    return wbc[cols].sort_values(["image_path", "xmin", "ymin", "xmax", "ymax"], ignore_index=True)


def read_all_idb2() -> pd.DataFrame:
    """ALL-IDB2: columns path, mask_path, label ('blast' for ImNNN_1, 'normal' for ImNNN_0); sorted by path."""
    root = locate("all_idb2")
    rows = []
    for img in sorted((root / "images").glob("Im*_*.png")):
        flag = img.stem.rsplit("_", 1)[1]
        if flag not in ("0", "1"):
            raise ValueError(f"{img}: name does not end in _0 or _1")
        rows.append((_rel(img), _rel(root / "masks" / img.name), "blast" if flag == "1" else "normal"))
    return pd.DataFrame(rows, columns=["path", "mask_path", "label"]).sort_values("path", ignore_index=True)
