"""Decoded-image caches: every image of a dataset at one size and crop, stored once as .npy and indexed by path.

A cache file holds all images of a dataset (its manifest's rows in sorted order) so that any
subset, such as one split, is served by indexing. Its name carries the dataset, size and crop
and a hash of the item list and the loader's version, so a changed manifest or loader makes a
new cache instead of serving stale pixels.

Crops of PBC (all in the mirror's 256x256 window, whose top-left corner is (x, y) = (48, 48) of
the original 360x363 (width x height) image):

* ``"none"``: the whole 256x256 window.
* ``"wnet"``: the W-Net paper's border crop, 80 px off the top, 81 off the bottom, 80 off the left
  and 80 off the right, which the paper states for a 360x361 image and which leaves a 200x200 centre
  window. On PBC's original 360 (wide) x 363 (high) images the same top/left margins give columns
  80..279 (360 - 80 - 80 = 200 wide) and rows 80..279 (200 high; the bottom margin becomes
  363 - 280 = 83 rather than 81, so the window stays square). In mirror coordinates this is
  (80 - 48, 80 - 48) = (32, 32) to (32 + 200, 32 + 200) = (232, 232), inside the 256 window.
* ``"centre200"``: MedMNIST's BloodMNIST crop, the 200x200 centre of the 360x363 original: columns
  (360 - 200) / 2 = 80..279 and rows 81..280 (the centre row offset, 81.5, rounded down); in mirror
  coordinates (32, 33) to (232, 233). It is the ``"wnet"`` window moved down by one row.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wbcstudy.data.construct import load_manifest
from wbcstudy.data.readers import _present, load_pbc_image, load_rgb
from wbcstudy.data.sources import locate
from wbcstudy.paths import cache_dir

PROCESSES: int = 2
PBC_CROPS: dict[str, tuple[int, int, int, int] | None] = {"none": None, "wnet": (32, 32, 232, 232),
                                                        "centre200": (32, 33, 232, 233)}
DATASETS: tuple[str, ...] = ("pbc", "zheng1", "zheng2", "bccd_wbc", "all_idb2")
MANIFEST_DATASET: dict[str, str] = {
    "pbc8": "pbc",
    "pbc5": "pbc",
    "wbcatt": "pbc",
    "pbc_anomaly": "pbc",
    "pbc_lowdata": "pbc",
    "zheng1": "zheng1",
    "zheng2": "zheng2",
    "bccd": "bccd_wbc",
    "all_idb2": "all_idb2",
}

#: The registry key (``wbcstudy.data.SOURCES``) of the dataset each cache reads its files from.
SOURCE_OF: dict[str, str] = {"pbc": "pbc", "zheng1": "zheng2018", "zheng2": "zheng2018", "bccd_wbc": "bccd",
                             "all_idb2": "all_idb2"}

Loader = Callable[[str, int, str], np.ndarray]


def _versioned(version: str) -> Callable[[Loader], Loader]:
    """Tag a loader with the version that enters the cache key (bump it when its pixels change)."""

    def tag(fn: Loader) -> Loader:
        fn.cache_version = version  # type: ignore[attr-defined]
        return fn

    return tag


@_versioned("pbc-1")
def load_pbc_item(item: str, size: int, crop: str) -> np.ndarray:
    """A PBC image (path) cropped as named ('none', 'wnet' or 'centre200') and resized to size x size."""
    if crop not in PBC_CROPS:
        raise ValueError(f"unknown PBC crop {crop!r}; choose one of {sorted(PBC_CROPS)}")
    return load_pbc_image(item, size, PBC_CROPS[crop])


@_versioned("rgb-1")
def load_plain_item(item: str, size: int, crop: str) -> np.ndarray:
    """A whole single-cell image (Zheng BMP, ALL-IDB2 PNG) resized to size x size; only crop 'none'."""
    if crop != "none":
        raise ValueError(f"crop {crop!r} is defined only for PBC; use 'none'")
    return load_rgb(item, size)


def bccd_item_id(image_path: str, xmin: int, ymin: int, xmax: int, ymax: int) -> str:
    """The cache item name of one BCCD WBC box: 'image_path#xmin,ymin,xmax,ymax'."""
    return f"{image_path}#{int(xmin)},{int(ymin)},{int(xmax)},{int(ymax)}"


@_versioned("bccd-box-1")
def load_bccd_box_item(item: str, size: int, crop: str) -> np.ndarray:
    """A BCCD WBC box ('image_path#xmin,ymin,xmax,ymax'): the square around the box centre (side = longer box
    side, black outside the image), resized."""
    if crop != "none":
        raise ValueError(f"crop {crop!r} is defined only for PBC; use 'none'")
    image_path, _, coords = item.partition("#")
    xmin, ymin, xmax, ymax = (int(c) for c in coords.split(","))
    side = max(xmax - xmin, ymax - ymin)
    left = (xmin + xmax - side) // 2
    top = (ymin + ymax - side) // 2
    with Image.open(_present(image_path)) as img:
        square = img.convert("RGB").crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


DEFAULT_LOADERS: dict[str, Loader] = {
    "pbc": load_pbc_item,
    "zheng1": load_plain_item,
    "zheng2": load_plain_item,
    "bccd_wbc": load_bccd_box_item,
    "all_idb2": load_plain_item,
}


def manifest_items(manifest: str, df: pd.DataFrame | None = None) -> list[str]:
    """The cache item names of a manifest's rows (paths; BCCD box ids for 'bccd')."""
    df = load_manifest(manifest) if df is None else df
    if manifest == "bccd":
        return [bccd_item_id(*row)
                for row in df[["image_path", "xmin", "ymin", "xmax", "ymax"]].itertuples(index=False)]
    return df["path"].tolist()


def _universe(dataset: str) -> list[str]:
    """All items of a dataset, sorted: the rows of its defining manifest."""
    manifest = {"pbc": "pbc8", "bccd_wbc": "bccd"}.get(dataset, dataset)
    return sorted(manifest_items(manifest))


def _loader_version(loader: Loader) -> str:
    """What identifies a loader's output in the cache key."""
    version = getattr(loader, "cache_version", None)
    return f"{getattr(loader, '__module__', '')}.{getattr(loader, '__qualname__', repr(loader))}:{version}"


def _decode(task: tuple[Loader, str, int, str]) -> np.ndarray:
    """Run a loader on one item and check the result's shape and type."""
    loader, item, size, crop = task
    arr = np.asarray(loader(item, size, crop))
    if arr.shape != (size, size, 3) or arr.dtype != np.uint8:
        raise ValueError(f"loader gave {arr.shape} {arr.dtype} for {item}; expected ({size}, {size}, 3) uint8")
    return arr


def cache_files(dataset: str, items: Sequence[str], size: int, crop: str, loader: Loader) -> tuple[Path, Path]:
    """The .npy array and .json index paths of the cache for (dataset, size, crop, item list, loader version)."""
    key = json.dumps([dataset, size, crop, _loader_version(loader), list(items)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = f"{dataset}_{size}px_{crop}_{digest}"
    folder = cache_dir()
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _build(array_path: Path, index_path: Path, items: list[str], size: int, crop: str, loader: Loader,
           meta: dict, processes: int) -> None:
    """Decode every item into a fresh .npy (written under a temporary name, then renamed) and its index."""
    tmp = array_path.with_name(array_path.name + f".tmp{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3))
    tasks = [(loader, item, size, crop) for item in items]
    try:
        if processes <= 1 or len(tasks) < 64:
            for i, task in enumerate(tasks):
                out[i] = _decode(task)
        else:
            with Pool(processes) as pool:
                chunk = max(1, min(256, len(tasks) // (4 * processes)))
                for i, arr in enumerate(pool.imap(_decode, tasks, chunksize=chunk)):
                    out[i] = arr
        out.flush()
        del out
        os.replace(tmp, array_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    index_tmp = index_path.with_name(index_path.name + f".tmp{os.getpid()}")
    index_tmp.write_text(json.dumps({**meta, "paths": items}, indent=1) + "\n")
    os.replace(index_tmp, index_path)


def cached_images(
    dataset: str,
    paths: Sequence[str],
    size: int,
    crop: str = "none",
    loader: Loader | None = None,
    processes: int = PROCESSES,
) -> np.ndarray:
    """Images (N, size, size, 3) uint8 for the given items, from the dataset's on-disk cache (built on first use).

    dataset is one of pbc, zheng1, zheng2, bccd_wbc, all_idb2; paths are data-root-relative paths
    (BCCD: bccd_item_id strings). The cache holds every item of the dataset's manifest; it holds
    exactly the requested items instead when some requested item is not in the manifest, or when
    they are at most a quarter of it and the whole-dataset cache has not been built yet.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    loader = loader or DEFAULT_LOADERS[dataset]
    paths = [str(p) for p in paths]
    try:
        items = _universe(dataset)
    except FileNotFoundError:
        items = []
    wanted = set(paths)
    if not wanted <= set(items):
        items = sorted(wanted)
    elif 4 * len(wanted) <= len(items) and not cache_files(dataset, items, size, crop, loader)[0].is_file():
        items = sorted(wanted)  # a small subset (smoke runs) is not worth decoding the whole dataset for
    array_path, index_path = cache_files(dataset, items, size, crop, loader)
    if not (array_path.is_file() and index_path.is_file()):
        locate(SOURCE_OF[dataset])  # a missing dataset: one DatasetMissing naming it, before any decoding
        meta = {"dataset": dataset, "size": size, "crop": crop, "loader": _loader_version(loader)}
        _build(array_path, index_path, items, size, crop, loader, meta, processes)
    stored = json.loads(index_path.read_text())["paths"]
    position = {p: i for i, p in enumerate(stored)}
    rows = np.fromiter((position[p] for p in paths), dtype=np.int64, count=len(paths))
    data = np.load(array_path, mmap_mode="r")
    return np.asarray(data[rows])


def load_split_arrays(
    manifest: str,
    split: str | None,
    size: int,
    classes: list[str] | None = None,
    crop: str = "none",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (uint8 NHWC), integer labels and class names for one split of a manifest (split None: all rows).

    classes defaults to the sorted labels of the whole manifest; rows whose label is not in
    classes are left out. For 'bccd' only usable rows are taken, labelled by subtype, split by voc_split.
    """
    if manifest not in MANIFEST_DATASET:
        raise ValueError(f"unknown manifest {manifest!r}; choose one of {sorted(MANIFEST_DATASET)}")
    df = load_manifest(manifest)
    label_col, split_col = "label", "split"
    if manifest == "bccd":
        df = df[df["usable"] == 1]
        label_col, split_col = "subtype", "voc_split"
    classes = list(classes) if classes is not None else sorted(df[label_col].unique())
    if split is not None:
        if split_col not in df:
            raise ValueError(f"manifest {manifest!r} has no {split_col!r} column; pass split=None and use its folds")
        known = sorted(df[split_col].unique())
        if split not in known:
            raise ValueError(f"manifest {manifest!r} has no split {split!r}; its splits are {known}")
        df = df[df[split_col] == split]
    df = df[df[label_col].isin(classes)]
    images = cached_images(MANIFEST_DATASET[manifest], manifest_items(manifest, df), size, crop)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in df[label_col]], dtype=np.int64)
    return images, labels, classes
