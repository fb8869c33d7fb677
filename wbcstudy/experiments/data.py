"""The data chapter's procedures: tables of the construction report and the split manifests, and the chapter's metrics.

The construction report is ``data/manifests/construction_report.json`` as written by
``wbcstudy.data.build_manifests``: ``{"datasets": {key: {"files", "images_read", "unreadable",
"duplicate_groups", "excluded", "usable"}}}``, each duplicate group ``{"paths", "labels", "kept"}``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["SPLIT_MANIFESTS", "construction_table", "unreadable_files", "duplicate_groups", "split_table",
           "lowdata_nesting", "decoded_sizes", "data_metrics"]

#: the manifests with a train/val/test split, in the order the chapter shows them
SPLIT_MANIFESTS: tuple[str, ...] = ("pbc8", "pbc5", "pbc_anomaly", "pbc_lowdata", "wbcatt", "all_idb2")
_SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test", "total")


def construction_table(report: Mapping, skip: Iterable[str] = ("wbcatt",)) -> pd.DataFrame:
    """One row per dataset: files, images read, unreadable files, duplicate groups, excluded and usable images."""
    skip = set(skip)
    rows = [{"dataset": key, "files": d["files"], "images read": d["images_read"], "unreadable": len(d["unreadable"]),
             "duplicate groups": len(d["duplicate_groups"]), "excluded": d["excluded"], "usable": d["usable"]}
            for key, d in report["datasets"].items() if key not in skip]
    return pd.DataFrame(rows).set_index("dataset")


def unreadable_files(report: Mapping) -> pd.DataFrame:
    """Every file that did not decode, with its dataset."""
    return pd.DataFrame([{"dataset": key, "file": path} for key, d in report["datasets"].items()
                         for path in d["unreadable"]],
                        columns=["dataset", "file"])


def duplicate_groups(report: Mapping) -> pd.DataFrame:
    """Every group of byte-identical files: the copies, their labels and the copy kept (none when the labels
    disagree)."""
    rows = [{"dataset": key, "copies": " = ".join(Path(p).name for p in g["paths"]), "labels": ", ".join(g["labels"]),
             "kept": Path(g["kept"]).name if g.get("kept") else "none (labels disagree)"}
            for key, d in report["datasets"].items() for g in d["duplicate_groups"]]
    return pd.DataFrame(rows, columns=["dataset", "copies", "labels", "kept"])


def split_table(manifest: pd.DataFrame, label: str = "label", split: str = "split") -> pd.DataFrame:
    """Images per class (rows) and split (columns train, val, test where present, and total), with a total row."""
    table = pd.crosstab(manifest[label], manifest[split], margins=True, margins_name="total")
    return table[[c for c in _SPLIT_ORDER if c in table.columns]]


def lowdata_nesting(lowdata: pd.DataFrame, sizes: Sequence[int] = (10, 20, 50, 150, 250)) -> pd.DataFrame:
    """Training images (all classes) per repeat (``subset_r*`` columns) and per-class budget k of the low-data manifest.

    A row's ``subset_r<i>`` value is the smallest per-class budget whose subset holds it (empty: none),
    so the subset for budget k is the rows with a value ≤ k.
    """
    repeats = [c for c in lowdata.columns if c.startswith("subset_r")]
    nested = {f"k={k}": [int((lowdata[c] <= k).fillna(False).sum()) for c in repeats] for k in sizes}
    return pd.DataFrame(nested, index=repeats).T.rename_axis("training images (all classes)")


def decoded_sizes(inventories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Usable files per dataset and decoded size (width, height in px), from the construction's inventories."""
    counts = {key: inv[inv.status == "ok"].dropna(subset=["width"]).astype({"width": int, "height": int})
              .groupby(["width", "height"]).size() for key, inv in inventories.items()}
    return pd.concat(counts).rename("usable files").to_frame()


def data_metrics(report: Mapping, manifests: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """The chapter's results: per dataset images read, unreadable files, duplicate groups, usable images; per manifest
    split sizes."""
    metrics: dict[str, int] = {}
    for key, d in report["datasets"].items():
        metrics[f"{key}_images_read"] = int(d["images_read"])
        metrics[f"{key}_unreadable_files"] = len(d["unreadable"])
        metrics[f"{key}_images_decoded"] = int(d["images_read"]) - len(d["unreadable"])
        metrics[f"{key}_duplicate_groups"] = len(d["duplicate_groups"])
        metrics[f"{key}_usable"] = int(d["usable"])
    for name, manifest in manifests.items():
        for split, n in manifest["split"].value_counts().sort_index().items():
            metrics[f"{name}_{split}"] = int(n)
    return metrics


def exact_intervals(metrics: Mapping[str, int]) -> dict[str, list[int]]:
    """A count measured on the whole dataset has no sampling error: its interval is the count itself."""
    return {key: [int(value), int(value)] for key, value in metrics.items()}


@dataclass
class Parameters:
    """The Data chapter's parameters, with the cpu profile's values as defaults.

    ``wbcstudy.run.chapter_parameters("data", profile)`` fills them from a profile, checked; the notebook's
    parameters cell holds the same names, types and values (a test checks it), and the summary reads a chapter's
    recipe from here, never from the notebook.
    """

    profile: str = 'cpu'  # papermill profile name, recorded in the results
    results_dir: str = 'book/results'  # where data.json is written (relative to the project root)
    #: "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively); nothing is trained here
    precision: str = 'auto'
    rebuild_manifests: bool = True  # re-run the whole construction and check it equals the committed manifests
    cells_per_class: int = 8  # cells shown per class in the PBC montage
