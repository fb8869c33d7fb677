"""Tests for wbcstudy.experiments.data on a hand-made construction report and tiny manifests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from wbcstudy.experiments import data as dx

REPORT = {"datasets": {
    "pbc": {"files": 6, "images_read": 5, "unreadable": ["pbc/x/not_an_image.jpg"], "excluded": 2, "usable": 3,
            "duplicate_groups": [{"paths": ["pbc/a/1.jpg", "pbc/a/2.jpg"], "labels": ["a", "a"], "kept": "pbc/a/1.jpg"},
                                 {"paths": ["pbc/a/3.jpg", "pbc/b/3.jpg"], "labels": ["a", "b"], "kept": None}]},
    "wbcatt": {"files": 0, "images_read": 0, "unreadable": [], "excluded": 0, "usable": 0, "duplicate_groups": []},
}}
MANIFEST = pd.DataFrame({"label": ["a", "a", "a", "b", "b"], "split": ["train", "train", "test", "train", "val"]})


def test_construction_tables() -> None:
    table = dx.construction_table(REPORT)
    assert list(table.index) == ["pbc"]  # wbcatt is skipped: it joins PBC's files
    assert table.loc["pbc"].to_dict() == {"files": 6, "images read": 5, "unreadable": 1, "duplicate groups": 2,
                                          "excluded": 2, "usable": 3}
    assert dx.unreadable_files(REPORT).values.tolist() == [["pbc", "pbc/x/not_an_image.jpg"]]
    groups = dx.duplicate_groups(REPORT)
    assert groups.copies.tolist() == ["1.jpg = 2.jpg", "3.jpg = 3.jpg"]
    assert groups.kept.tolist() == ["1.jpg", "none (labels disagree)"]
    assert dx.unreadable_files({"datasets": {}}).columns.tolist() == ["dataset", "file"]


def test_split_table_orders_splits_and_totals() -> None:
    table = dx.split_table(MANIFEST)
    assert table.columns.tolist() == ["train", "val", "test", "total"]
    assert table.loc["a"].tolist() == [2, 0, 1, 3] and table.loc["total"].tolist() == [3, 1, 1, 5]


def test_lowdata_nesting_counts_rows_within_each_budget() -> None:
    lowdata = pd.DataFrame({"subset_r0": [10, 20, 50, np.nan], "subset_r1": [20, 20, 250, 10]})
    table = dx.lowdata_nesting(lowdata, sizes=(10, 20, 50, 250))
    assert table.loc["k=10"].tolist() == [1, 1]
    assert table.loc["k=20"].tolist() == [2, 3]
    assert table.loc["k=50"].tolist() == [3, 3]
    assert table.loc["k=250"].tolist() == [3, 4]
    nullable = lowdata.astype("Int64")  # the manifest's own dtype: missing values are pd.NA
    pd.testing.assert_frame_equal(dx.lowdata_nesting(nullable, sizes=(10, 20, 50, 250)), table)


def test_decoded_sizes_count_usable_files_only() -> None:
    inv = pd.DataFrame({"status": ["ok", "ok", "ok", "unreadable"], "width": [256, 256, 360, np.nan],
                        "height": [256, 256, 363, np.nan]})
    sizes = dx.decoded_sizes({"pbc": inv})
    assert sizes["usable files"].to_dict() == {("pbc", 256, 256): 2, ("pbc", 360, 363): 1}


def test_data_metrics() -> None:
    metrics = dx.data_metrics(REPORT, {"toy": MANIFEST})
    assert (metrics["pbc_images_read"] == 5 and metrics["pbc_unreadable_files"] == 1
            and metrics["pbc_images_decoded"] == 4)
    assert metrics["pbc_duplicate_groups"] == 2 and metrics["pbc_usable"] == 3 and metrics["wbcatt_usable"] == 0
    assert (metrics["toy_train"], metrics["toy_val"], metrics["toy_test"]) == (3, 1, 1)
    assert all(isinstance(v, int) for v in metrics.values())
    assert dx.exact_intervals({"pbc_usable": 3}) == {"pbc_usable": [3, 3]}
