"""Datasets: sources, readers, construction of split manifests, decoded-array caches and transforms."""
from wbcstudy.data.cache import cached_images, load_split_arrays
from wbcstudy.data.construct import SEED, build_manifests, inventory, load_manifest
from wbcstudy.data.readers import (
    PBC_CLASSES,
    PBC_WBC_CLASSES,
    WBCATT_ATTRIBUTES,
    UnreadableImageError,
    load_mask,
    load_pbc_image,
    load_rgb,
    read_all_idb2,
    read_bccd,
    read_bccd_boxes,
    read_pbc,
    read_wbcatt,
    read_zheng,
)
from wbcstudy.data.sources import SOURCES, DatasetMissing, DatasetNotFoundError, DatasetSource, fetch, locate, verify
from wbcstudy.data.transforms import area_downsample, channel_mean_std, rgb_to_hsv, stratified_subset

__all__ = [
    "SOURCES",
    "SEED",
    "DatasetMissing",
    "DatasetNotFoundError",
    "DatasetSource",
    "PBC_CLASSES",
    "PBC_WBC_CLASSES",
    "UnreadableImageError",
    "WBCATT_ATTRIBUTES",
    "build_manifests",
    "cached_images",
    "fetch",
    "inventory",
    "load_manifest",
    "load_mask",
    "load_split_arrays",
    "load_pbc_image",
    "load_rgb",
    "locate",
    "read_all_idb2",
    "read_bccd",
    "read_bccd_boxes",
    "read_pbc",
    "read_wbcatt",
    "read_zheng",
    "rgb_to_hsv",
    "area_downsample",
    "channel_mean_std",
    "stratified_subset",
    "verify",
]
