"""One definition of the domain-shift sets: other laboratories' white cells as is, at PBC's scale, and stain-normalised.

Every chapter that tests a PBC-trained model on another laboratory's cells (the summary's shift table, CytoDiffusion's
shift test, W-Net's transfer targets) draws them from :func:`shift_set`, so that "Zheng Dataset 1" means the same
cells everywhere. Each set — the five white-cell classes of Zheng 2018's Datasets 1 and 2 and of BCCD's white-cell
boxes — comes in three variants:

``as_is``
    the crops the project has always used (``wbcstudy.data.cache``): Zheng's images whole, a BCCD box as the square
    around it. Measured as below, the median cell spans 0.63 of a Zheng 1 image's width, 0.52 of a Zheng 2 image's
    and 0.95 of a BCCD square, against 0.52 of PBC's 256-px window (0.67 of its 200-px centre crop): Zheng 2 is
    already at PBC's scale, Zheng 1 a little and BCCD far magnified.
``matched``
    the same cells through a window of **one size per set** (in the set's source pixels), chosen so that the set's
    median cell spans the same fraction of the window as PBC's median cell does in the model's crop. One size per set
    keeps the cells' sizes relative to each other (a monocyte stays larger than a lymphocyte); only the set's scale
    changes. Where the window is larger than the source image (Zheng's single-cell images, a BCCD box near the smear's
    edge) the outside is filled with the median colour of the source image's border.
``stainnorm``
    ``matched``, then Reinhard et al.'s (2001) colour transfer in CIE L*a*b*: each image's per-channel mean and
    standard deviation (over its real pixels, not the fill) are mapped to those of PBC's training cells. Reinhard
    rather than Macenko because Macenko's two-stain (haematoxylin/eosin) model is built for histology, while a
    Romanowsky/May-Grünwald-Giemsa smear has no H&E stain vectors to estimate; Reinhard assumes nothing about the
    stains.

How the cell's size is measured: Zheng from the experts' cell masks (cytoplasm and nucleus), BCCD from the annotated
box (the geometric mean of its sides), PBC by :func:`pbc_cell_mask`, a colour threshold (the cell's purple/blue hue at
a minimum saturation, closed, opened, filled, the component at the centre) measured on a fixed stratified subset of
PBC-5's training split — never a test set — and shown on a figure by the chapters. :func:`segmentation_check` puts
the threshold beside experts' masks: on ALL-IDB2's 259 lymphoid cells its sizes are unbiased whatever the opening
(median ratio 0.98, IoU 0.88); on Zheng 2, whose granulocytes touch red cells, a 5-px opening over-sized them by 14 %
and the 21-px disc used here by none (IoU 0.62 → 0.74). That opening was read off Zheng 2's masks, a shift set: it
changes how a size is measured, never which cells are scored or how. A cell's size is its equivalent diameter (the
diameter of a disc of the same area) over the image's width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import pandas as pd
from PIL import Image

#: The shift sets: manifest → readable name.
SHIFT_SETS: dict[str, str] = {"zheng1": "Zheng Dataset 1", "zheng2": "Zheng Dataset 2", "bccd": "BCCD crops"}
#: The variants: name → readable name.
VARIANTS: dict[str, str] = {"as_is": "as is", "matched": "scale-matched",
                            "stainnorm": "scale-matched, stain-normalised (Reinhard)"}
#: The results-key infix of each variant: ``<model>_<set>_<infix>balanced_accuracy``.
KEY_INFIX: dict[str, str] = {"as_is": "", "matched": "matched_", "stainnorm": "stainnorm_"}
#: The five white-cell classes every shift set has (the order of the labels).
SHIFT_CLASSES: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
#: Side in px of each PBC crop's window (``wbcstudy.data.cache.PBC_CROPS``) inside the 256-px PBC window.
PBC_CROP_SIDE: dict[str, int] = {"none": 256, "wnet": 200, "centre200": 200}
#: PBC-5 training cells the reference (cell size, Reinhard statistics) is measured on, and their seed.
REFERENCE_CELLS: int = 500
REFERENCE_SEED: int = 0


class ShiftSetError(ValueError):
    """A shift set, variant or crop that is not defined, or a source the measurement cannot use (names which)."""


# ------------------------------------------------------------------------------------------------- measurement
def pbc_cell_mask(image: np.ndarray, min_saturation: int = 25, opening: int = 21) -> np.ndarray:
    """The white cell of a PBC window (uint8 HxWx3) as a boolean mask: pixels of the cell's purple/blue hue
    (OpenCV hue 110–175 of 180) with saturation ≥ ``min_saturation`` after a 5×5 blur, closed (7×7), opened with a
    disc of ``opening`` px per 256 px of width (it cuts the thin bridges to touching red cells), holes filled, the
    connected component at the image centre (else the largest). Red cells are red (hue near 0) and the background
    unsaturated, so neither passes; a red cell the stain turned lilac can still join the white cell, which is why only
    the median over many cells is used. :func:`segmentation_check` measures it against experts' masks."""
    from scipy import ndimage as ndi

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShiftSetError(f"pbc_cell_mask needs a uint8 HxWx3 image, got {image.shape} {image.dtype}")
    hsv = cv2.cvtColor(cv2.GaussianBlur(image, (5, 5), 0), cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    mask = ((hue >= 110) & (hue <= 175) & (sat >= min_saturation)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    disc = max(3, int(round(opening * image.shape[1] / 256)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (disc, disc)))
    mask = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    h, w = mask.shape
    centre = labels[h // 2, w // 2]
    if centre == 0:
        centre = 1 + int(np.argmax(ndi.sum(mask, labels, range(1, n + 1))))
    return labels == centre


def segmentation_check(manifest: str, **kwargs) -> dict[str, float]:
    """:func:`pbc_cell_mask` against the experts' cell masks of a manifest with a ``mask_path`` column (ALL-IDB2,
    Zheng 1 or 2): the median over its cells of the ratio of the two sizes (:func:`mask_fraction`; 1 = unbiased) and
    of the intersection over union. ``kwargs`` go to :func:`pbc_cell_mask`."""
    from wbcstudy.data.construct import load_manifest
    from wbcstudy.data.readers import load_rgb, load_zheng_mask

    df = load_manifest(manifest)
    if "mask_path" not in df.columns:
        raise ShiftSetError(f"manifest {manifest!r} has no mask_path column: no experts' masks to check against")
    ratios, ious = [], []
    for path, mask_path in zip(df["path"], df["mask_path"]):
        ours, expert = pbc_cell_mask(load_rgb(path), **kwargs), load_zheng_mask(mask_path) > 0
        ratios.append(mask_fraction(ours) / max(mask_fraction(expert), 1e-9))
        ious.append((ours & expert).sum() / max(1, (ours | expert).sum()))
    return {"cells": float(len(df)), "size_ratio": float(np.median(ratios)), "iou": float(np.median(ious))}


def mask_fraction(mask: np.ndarray) -> float:
    """A cell's size as a fraction of the image width: the equivalent diameter sqrt(4·area/π) of ``mask`` over the
    mask's width."""
    mask = np.asarray(mask, dtype=bool)
    return float(np.sqrt(4.0 * mask.sum() / np.pi) / mask.shape[1])


def set_rows(name: str, classes: tuple[str, ...] = SHIFT_CLASSES) -> pd.DataFrame:
    """The manifest rows of a shift set, in the order ``wbcstudy.data.cache.load_split_arrays`` reads them (BCCD: the
    usable boxes), with a ``label`` column (BCCD's subtype) and only the rows of ``classes``."""
    from wbcstudy.data.construct import load_manifest

    if name not in SHIFT_SETS:
        raise ShiftSetError(f"unknown shift set {name!r}; the shift sets are {', '.join(SHIFT_SETS)}")
    df = load_manifest(name)
    if name == "bccd":
        df = df[df["usable"] == 1].assign(label=lambda d: d["subtype"])
    return df[df["label"].isin(classes)].reset_index(drop=True)


@lru_cache(maxsize=16)
def _set_fractions(name: str, classes: tuple[str, ...]) -> np.ndarray:
    """:func:`cell_fractions` of a whole set, once per process (read-only)."""
    out = cell_fractions(name, set_rows(name, classes))
    out.setflags(write=False)
    return out


def cell_fractions(name: str, rows: pd.DataFrame | None = None) -> np.ndarray:
    """Each cell's size in its **as-is** image, as a fraction of the width: Zheng from the experts' masks (cytoplasm
    and nucleus), a BCCD box as sqrt(width·height) over its longer side (the side of its as-is square)."""
    from wbcstudy.data.readers import load_zheng_mask

    rows = set_rows(name) if rows is None else rows
    if name == "bccd":
        w = (rows["xmax"] - rows["xmin"]).to_numpy(float)
        h = (rows["ymax"] - rows["ymin"]).to_numpy(float)
        return np.sqrt(w * h) / np.maximum(w, h)
    return np.array([mask_fraction(load_zheng_mask(p) > 0) for p in rows["mask_path"]])


@dataclass(frozen=True)
class PbcReference:
    """What a matched or normalised shift set is matched to, measured on PBC-5 training cells."""

    fraction: float  # median cell size over the width of the 256-px PBC window
    fractions: np.ndarray = field(repr=False)  # every measured cell's
    lab_mean: tuple[float, float, float]  # Reinhard's target: mean of the cells' per-image L*, a*, b* means
    lab_std: tuple[float, float, float]  # ... and of their per-image standard deviations
    paths: tuple[str, ...] = field(repr=False)  # the cells measured

    def crop_fraction(self, crop: str) -> float:
        """The median cell size as a fraction of a PBC crop's width (``wbcstudy.data.cache.PBC_CROPS``)."""
        if crop not in PBC_CROP_SIDE:
            raise ShiftSetError(f"unknown PBC crop {crop!r}; choose one of {', '.join(PBC_CROP_SIDE)}")
        return self.fraction * PBC_CROP_SIDE["none"] / PBC_CROP_SIDE[crop]


def _lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 CIE L*a*b* (L in 0–100)."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def lab_statistics(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel L*a*b* mean and standard deviation of an image's pixels (only those in ``valid``, if given)."""
    lab = _lab(image).reshape(-1, 3)
    if valid is not None:
        lab = lab[np.asarray(valid, dtype=bool).reshape(-1)]
    if len(lab) == 0:
        raise ShiftSetError("Reinhard statistics of an image with no valid pixels")
    return lab.mean(0), lab.std(0)


@lru_cache(maxsize=4)
def pbc_reference(cells: int = REFERENCE_CELLS, seed: int = REFERENCE_SEED) -> PbcReference:
    """Cell size and colour statistics of ``cells`` PBC-5 training cells (a fixed stratified subset)."""
    from wbcstudy.data.construct import load_manifest
    from wbcstudy.data.readers import load_pbc_image
    from wbcstudy.data.transforms import stratified_subset

    df = load_manifest("pbc5")
    df = df[df["split"] == "train"].reset_index(drop=True)
    df = df.iloc[stratified_subset(df["label"].to_numpy(), cells, seed)]
    fractions, means, stds = [], [], []
    for path in df["path"]:
        image = load_pbc_image(path)
        fractions.append(mask_fraction(pbc_cell_mask(image)))
        mean, std = lab_statistics(image)
        means.append(mean)
        stds.append(std)
    fractions_arr = np.asarray(fractions)
    return PbcReference(float(np.median(fractions_arr)), fractions_arr, tuple(float(v) for v in np.mean(means, 0)),
                        tuple(float(v) for v in np.mean(stds, 0)), tuple(df["path"]))


# ------------------------------------------------------------------------------------------------- the images
def reinhard(image: np.ndarray, target_mean, target_std, valid: np.ndarray | None = None) -> np.ndarray:
    """Reinhard et al.'s colour transfer: the image's L*a*b* channels standardised (statistics over ``valid``
    pixels) and rescaled to ``target_mean``/``target_std``; uint8 RGB in, uint8 RGB out."""
    mean, std = lab_statistics(image, valid)
    lab = (_lab(image) - mean) / np.maximum(std, 1e-6) * np.asarray(target_std, np.float32) + np.asarray(
        target_mean, np.float32)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def border_colour(image: np.ndarray, width: int = 2) -> np.ndarray:
    """The median colour of an image's outer ``width`` pixels (what a window larger than the image is filled with)."""
    edge = np.concatenate([image[:width].reshape(-1, 3), image[-width:].reshape(-1, 3),
                           image[:, :width].reshape(-1, 3), image[:, -width:].reshape(-1, 3)])
    return np.median(edge, axis=0).astype(np.uint8)


def window(image: np.ndarray, cx: float, cy: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``side``×``side`` square of ``image`` centred on (cx, cy); where it leaves the image it is filled with
    :func:`border_colour`. Returns (square, mask of the pixels that came from the image)."""
    h, w = image.shape[:2]
    side = max(1, int(round(side)))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = border_colour(image)
    real = np.zeros((side, side), dtype=bool)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
        real[y0 - top:y1 - top, x0 - left:x1 - left] = True
    return out, real


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize to size×size (as the cache's loaders do)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


@dataclass
class ShiftSet:
    """One shift set in one variant, at one size: the images a model is scored on, and how they were made."""

    name: str  # manifest: zheng1, zheng2 or bccd
    title: str  # readable name
    variant: str  # as_is, matched or stainnorm
    images: np.ndarray = field(repr=False)  # uint8 NHWC
    labels: np.ndarray = field(repr=False)  # indices into classes
    classes: tuple[str, ...]
    rows: pd.DataFrame = field(repr=False)  # the manifest rows, in the images' order
    fraction: float  # the set's median cell size in its as-is images (fraction of the width)
    target_fraction: float  # PBC's median cell size in the model's crop: what ``matched`` aims at
    window_scale: float  # the matched window's side over the as-is image's side (> 1: zoomed out; BCCD: median)
    window_side: float  # the matched window's side in source pixels: one size for the whole set

    @property
    def selection(self) -> dict:
        """The set as a data-set selection for the results' ``data_sets`` (``wbcstudy.data.leaks``)."""
        return {"manifest": self.name}


@lru_cache(maxsize=8)
def _windows(name: str, classes: tuple[str, ...], keep: bytes, zheng_scale: float,
             bccd_side: float) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The matched windows (source pixels) of a set's ``keep`` rows with the mask of their real pixels, decoded once
    per process for every model that reads the same crop — Zheng: ``zheng_scale`` × the image's width around its
    centre; BCCD: ``bccd_side`` smear pixels around the box's centre."""
    from wbcstudy.data.readers import load_rgb

    rows = set_rows(name, classes).iloc[np.frombuffer(keep, dtype=np.int64)]
    out = []
    for row in rows.itertuples(index=False):
        if name == "bccd":
            smear = load_rgb(row.image_path)
            out.append(window(smear, (row.xmin + row.xmax) / 2, (row.ymin + row.ymax) / 2, bccd_side))
        else:
            source = load_rgb(row.path)
            h, w = source.shape[:2]
            out.append(window(source, w / 2, h / 2, w * zheng_scale))
    for image, real in out:
        image.setflags(write=False)
        real.setflags(write=False)
    return tuple(out)


def shift_set(name: str, size: int, variant: str = "as_is", crop: str = "none",
              classes: tuple[str, ...] = SHIFT_CLASSES, limit: int = 0, seed: int = 0,
              reference: PbcReference | None = None, keep: np.ndarray | None = None) -> ShiftSet:
    """A shift set's images at ``size`` px for a model that reads PBC through ``crop``, in one variant.

    ``limit`` > 0 keeps a stratified subset of that many cells (``wbcstudy.data.transforms.stratified_subset`` with
    ``seed``), the same cells in every variant. The matched window is one size per set: Zheng's images are viewed
    through a window ``fraction / target_fraction`` times their width, centred; BCCD's boxes through a square of
    ``median(sqrt(w·h)) / target_fraction`` smear pixels around each box's centre. ``reference`` defaults to
    :func:`pbc_reference` (measured once per process). ``keep`` (indices into the set's rows, :func:`set_rows`)
    chooses the cells instead of ``limit``: a caller's own subset, the same in every variant.
    """
    from wbcstudy.data.cache import load_split_arrays
    from wbcstudy.data.readers import _present
    from wbcstudy.data.transforms import stratified_subset

    if variant not in VARIANTS:
        raise ShiftSetError(f"unknown shift-set variant {variant!r}; the variants are {', '.join(VARIANTS)}")
    reference = pbc_reference() if reference is None else reference
    target = reference.crop_fraction(crop)
    rows = set_rows(name, classes)
    index = {c: k for k, c in enumerate(classes)}
    labels = rows["label"].map(index).to_numpy(np.int64)
    if keep is None:
        keep = stratified_subset(labels, limit, seed) if limit else np.arange(len(rows))
    keep = np.asarray(keep, dtype=np.int64)
    if len(keep) and (keep.min() < 0 or keep.max() >= len(rows)):
        raise ShiftSetError(f"{name}: keep holds row indices outside its {len(rows)} rows")
    fraction = float(np.median(_set_fractions(name, tuple(classes))))
    if name == "bccd":  # one square of smear pixels for the set, around each box's centre
        w = (rows["xmax"] - rows["xmin"]).to_numpy(float)
        h = (rows["ymax"] - rows["ymin"]).to_numpy(float)
        side = float(np.median(np.sqrt(w * h))) / target
        scale = float(np.median(side / np.maximum(w, h)))  # reported: the window over the as-is square, median
    else:  # Zheng: the images of one set share a size; the window is that size times fraction / target
        scale = fraction / target
        with Image.open(_present(rows["path"].iloc[0])) as first:
            side = scale * first.size[0]
    kept = rows.iloc[keep].reset_index(drop=True)
    if variant == "as_is":
        images, loaded, _ = load_split_arrays(name, None, size, classes=list(classes))
        if not np.array_equal(loaded, labels):
            raise ShiftSetError(f"{name}: the cached images' labels are not in the manifest's order")
        images = images[keep]
    else:
        images = np.stack([_resize(reinhard(image, reference.lab_mean, reference.lab_std, real)
                                   if variant == "stainnorm" else image, size)
                           for image, real in _windows(name, tuple(classes), keep.tobytes(),
                                                       float(scale if name != "bccd" else 0.0),
                                                       float(side if name == "bccd" else 0.0))])
    return ShiftSet(name, SHIFT_SETS[name], variant, images, labels[keep], tuple(classes), kept, fraction, target,
                    scale, side)
