"""The leak check: data sets described as manifest selections, compared by content hash."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from wbcstudy import check
from wbcstudy.data.leaks import LeakError, content_hashes, selection_paths, shared_images
from wbcstudy.results import write_results

# a toy world: two manifests whose rows point at source files, and the files' content hashes
MANIFESTS = {
    "cells": pd.DataFrame({"path": ["a.png", "b.png", "c.png", "d.png", "e.png"],
                           "split": ["train", "train", "val", "test", "test"], "fold5": ["0", "1", "2", "3", "4"]}),
    "crops": pd.DataFrame({"image_path": ["s1.jpg", "s1.jpg", "s2.jpg"], "fold5": ["0", "0", "1"]}),
}
HASHES = {"a.png": "h-a", "b.png": "h-b", "c.png": "h-c", "d.png": "h-d", "e.png": "h-a",  # e.png is a copy of a.png
          "s1.jpg": "h-s1", "s2.jpg": "h-s2"}


def sel(manifest, **where):
    return {"manifest": manifest, "where": where}


def test_selections_resolve_to_source_files_and_hashes():
    assert selection_paths(sel("cells", split=["train", "val"]), MANIFESTS) == ["a.png", "b.png", "c.png"]
    assert selection_paths(sel("cells", fold5=[3, 4]), MANIFESTS) == ["d.png", "e.png"]  # values compared as text
    assert selection_paths({"manifest": "cells"}, MANIFESTS) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    without = {"manifest": "cells", "except": [sel("cells", split="test")]}
    assert selection_paths(without, MANIFESTS) == ["a.png", "b.png", "c.png"]
    with pytest.raises(LeakError, match="no column 'fold10'"):
        selection_paths(sel("cells", fold10=[1]), MANIFESTS)
    with pytest.raises(LeakError, match="in no dataset inventory"):
        content_hashes(["z.png"], HASHES)
    with pytest.raises(LeakError, match="a data-set selection is"):
        selection_paths({"split": "train"}, MANIFESTS)


def test_a_shared_image_is_found_by_content_not_by_path():
    clean = {"m": {"train": [sel("cells", split="train")], "val": [sel("cells", split="val")],
                   "eval": {"held out": [sel("cells", fold5=["3"])]}}}
    assert shared_images(clean, MANIFESTS, HASHES) == []
    # e.png has another path than a.png but the same content: scoring on it is scoring on a training image
    dirty = {"m": {"train": [sel("cells", split="train")], "eval": {"test": [sel("cells", split="test")]}}}
    (leak,) = shared_images(dirty, MANIFESTS, HASHES)
    assert leak == {"model": "m", "eval": "test", "shared": 1, "eval_path": "e.png", "train_path": "a.png"}
    # validation data count too; crops are traced to the smear they were cut from
    crops = {"det": {"val": [sel("crops", fold5="0")], "eval": {"crops": [{"manifest": "crops"}]}}}
    assert shared_images(crops, MANIFESTS, HASHES)[0]["shared"] == 1


def test_the_real_manifests_pbc5_splits_share_no_image_and_hemax_s_old_training_data_leaks():
    pbc5 = {"resnet18": {"train": [sel("pbc5", split="train")], "val": [sel("pbc5", split="val")],
                         "eval": {"pbc5 test": [sel("pbc5", split="test")]}}}
    assert shared_images(pbc5) == []
    # HemaX trained on Zheng 2's folds 2-4 and BCCD's and scored on all of Zheng 2 and BCCD (issue 29's finding)
    hemax = {"hemax": {"train": [sel("zheng2", fold5=["2", "3", "4"]), sel("bccd", fold5=["2", "3", "4"])],
                       "eval": {"zheng2": [{"manifest": "zheng2"}], "bccd": [{"manifest": "bccd"}]}}}
    found = {leak["eval"]: leak["shared"] for leak in shared_images(hemax)}
    assert set(found) == {"zheng2", "bccd"} and min(found.values()) > 0


def test_write_results_refuses_a_leak_and_check_reports_one(tmp_path):
    leaky = {"m": {"train": [sel("pbc5", split="train")], "eval": {"itself": [sel("pbc5", split="train")]}}}
    with pytest.raises(LeakError, match="m is scored on .* image\\(s\\) of 'itself'"):
        write_results("alpha", "cpu", 1.0, {"acc": 0.5}, results_dir=str(tmp_path), paper={}, data_sets=leaky)
    assert not (tmp_path / "alpha.json").exists()
    clean = {"m": {"train": [sel("pbc5", split="train")], "eval": {"test": [sel("pbc5", split="test")]}}}
    path = write_results("alpha", "cpu", 1.0, {"acc": 0.5}, results_dir=str(tmp_path), paper={}, data_sets=clean)
    assert json.loads(path.read_text())["data_sets"] == clean
    root = tmp_path / "tree"
    (root / "book" / "results").mkdir(parents=True)
    (root / "book" / "results" / "alpha.json").write_text(path.read_text())
    assert check.check_leaks(root, ["alpha"]) == []
    record = json.loads(path.read_text())
    record["data_sets"] = leaky  # a results file edited, or manifests rebuilt, after the run
    (root / "book" / "results" / "alpha.json").write_text(json.dumps(record))
    (problem,) = check.check_leaks(root, ["alpha"])
    assert problem.startswith("alpha.json: m is scored on") and "'itself'" in problem
