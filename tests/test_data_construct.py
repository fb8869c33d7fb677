"""Dataset construction and caches: inventories, duplicates, split manifests (bit-identical to the committed ones)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wbcstudy.data import PBC_CLASSES, PBC_WBC_CLASSES, build_manifests, inventory, load_manifest  # noqa: E402
from wbcstudy.data import cache as cache_mod  # noqa: E402
from wbcstudy.data.cache import cached_images, load_split_arrays  # noqa: E402
from wbcstudy.data.construct import stratified_folds, stratified_split  # noqa: E402
from wbcstudy.paths import data_root, manifests_dir

needs_data = pytest.mark.skipif(
    not (data_root() / "pbc").is_dir(),
    reason=f"datasets not found under the data root {data_root()} (set WBCSTUDY_DATA to the mirror)",
)
DS_FILE = "pbc/PBC_dataset_normal_DIB/neutrophil/.DS_169665.jpg"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All inventories and manifests constructed once from the mirror into a temporary folder."""
    if not (data_root() / "pbc").is_dir():
        pytest.skip(f"datasets not found under the data root {data_root()} (set WBCSTUDY_DATA to the mirror)")
    out = tmp_path_factory.mktemp("manifests")
    build_manifests(out)
    return out


def _read(built: Path, name: str) -> pd.DataFrame:
    """A freshly built manifest, read as strings (empty cells stay '')."""
    return pd.read_csv(built / f"{name}.csv", dtype=str, keep_default_na=False)


# ---------------------------------------------------------------- inventory and duplicates


def test_inventory_duplicate_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    a = np.full((8, 8, 3), 10, np.uint8)
    b = np.full((8, 8, 3), 200, np.uint8)
    for name, arr in [("x/a1.png", a), ("y/a2.png", a), ("x/a3.png", a), ("x/b1.png", b), ("y/b2.png", b)]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(tmp_path / name)
    (tmp_path / "x" / "bad.png").write_bytes(b"not an image")
    df = pd.DataFrame(
        {
            "path": ["x/b1.png", "y/b2.png", "x/a3.png", "x/a1.png", "y/a2.png", "x/bad.png"],
            "label": ["x", "y", "same", "same", "same", "x"],
        }
    )
    inv = inventory(df).set_index("path")
    assert list(inv.index) == sorted(df["path"])
    assert inv.loc["x/a1.png", "status"] == "ok" and inv.loc["x/a1.png", "duplicate_of"] == ""
    assert (inv.loc[["x/a3.png", "y/a2.png"], "status"] == "duplicate").all()
    assert (inv.loc[["x/a3.png", "y/a2.png"], "duplicate_of"] == "x/a1.png").all()
    # byte-identical copies with different labels: all excluded
    assert inv.loc["x/b1.png", "status"] == "duplicate" and inv.loc["x/b1.png", "duplicate_of"] == "y/b2.png"
    assert inv.loc["y/b2.png", "status"] == "duplicate" and inv.loc["y/b2.png", "duplicate_of"] == "x/b1.png"
    assert inv.loc["x/bad.png", "status"] == "unreadable" and pd.isna(inv.loc["x/bad.png", "width"])
    assert inv.loc["x/a1.png", "width"] == 8


def test_inventory_catches_truncated_jpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    inv = inventory(pd.DataFrame({"path": ["full.jpg", "cut.jpg"], "label": ["a", "a"]})).set_index("path")
    assert inv.loc["full.jpg", "status"] == "ok"
    assert inv.loc["cut.jpg", "status"] == "unreadable" and "truncated" in inv.loc["cut.jpg", "error"]


@needs_data
def test_pbc_unreadable_and_duplicates(built: Path) -> None:
    report = json.loads((built / "construction_report.json").read_text())
    pbc = report["datasets"]["pbc"]
    assert pbc["images_read"] == 17093
    assert pbc["unreadable"] == [DS_FILE]
    groups = pbc["duplicate_groups"]
    assert len(groups) == 17 and all(len(g["paths"]) == 2 for g in groups)
    cross = [g for g in groups if len(set(g["labels"])) > 1]
    assert len(cross) == 1 and sorted(cross[0]["labels"]) == ["eosinophil", "neutrophil"] and cross[0]["kept"] is None
    assert pbc["excluded"] == 1 + 16 + 2 and pbc["usable"] == 17093 - 19
    inv = _read(built, "pbc_inventory")
    assert inv["status"].value_counts().to_dict() == {"ok": 17074, "duplicate": 18, "unreadable": 1}
    assert set(inv["width"].iloc[:5]) == {"256"}
    assert report["wbcatt"]["dropped"] == 15 and report["wbcatt"]["rows_kept"] == 10298 - 15


@needs_data
def test_manifests_regenerate_bit_identically(built: Path) -> None:
    committed = manifests_dir()
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".csv", ".json"))
    for name in names:
        assert (built / name).read_bytes() == (committed / name).read_bytes(), f"{name} differs from data/manifests/"


# ---------------------------------------------------------------- splits


def _assert_stratified(df: pd.DataFrame, fractions: dict[str, float]) -> None:
    """Every class is split in the given proportions (to within one image)."""
    for label, group in df.groupby("label"):
        counts = group["split"].value_counts()
        for split, frac in fractions.items():
            assert abs(counts.get(split, 0) - frac * len(group)) <= 1, (label, split)


@needs_data
def test_pbc8_split(built: Path) -> None:
    df = _read(built, "pbc8")
    inv = _read(built, "pbc_inventory")
    assert list(df.columns) == ["path", "label", "split"]
    assert df["path"].is_unique and df["path"].is_monotonic_increasing
    assert set(df["path"]) == set(inv.loc[inv["status"] == "ok", "path"])
    assert sorted(df["label"].unique()) == PBC_CLASSES
    _assert_stratified(df, {"train": 0.8, "val": 0.1, "test": 0.1})


@needs_data
def test_pbc5_folds(built: Path) -> None:
    pbc8 = _read(built, "pbc8")
    df = _read(built, "pbc5")
    expect = pbc8[pbc8["label"].isin(PBC_WBC_CLASSES)].reset_index(drop=True)
    assert df[["path", "label", "split"]].equals(expect)
    fold10 = df["fold10"].astype(int)
    assert set(fold10) == set(range(10))
    assert (df["fold5"].astype(int) == fold10 // 2).all()
    per_class = pd.crosstab(df["label"], fold10)
    assert (per_class.max(axis=1) - per_class.min(axis=1) <= 1).all()


@needs_data
def test_pbc_anomaly(built: Path) -> None:
    df = _read(built, "pbc_anomaly")
    ery = df["label"] == "erythroblast"
    assert (df.loc[ery, "split"] == "test").all() and (df.loc[ery, "held_out"] == "1").all()
    assert (df.loc[~ery, "held_out"] == "0").all()
    _assert_stratified(df[~ery], {"train": 0.7, "val": 0.1, "test": 0.2})


@needs_data
def test_pbc_lowdata_nested_subsets(built: Path) -> None:
    df = _read(built, "pbc_lowdata")
    counts = pd.crosstab(df["label"], df["split"])
    assert (counts["train"] == 250).all() and (counts["test"] == 836).all() and (counts["val"] > 0).all()
    train = df["split"] == "train"
    for r in range(5):
        col = df[f"subset_r{r}"]
        assert (col[~train] == "").all()
        sizes = col[train].astype(int)
        assert set(sizes) == {10, 20, 50, 150, 250}
        previous: set[str] = set()
        for k in (10, 20, 50, 150, 250):
            chosen = df.loc[train][sizes <= k]
            assert (chosen["label"].value_counts() == k).all() and chosen["label"].nunique() == 8
            assert previous <= set(chosen["path"])
            previous = set(chosen["path"])
    assert not (df["subset_r0"] == df["subset_r1"]).all()


@needs_data
def test_wbcatt_zheng_bccd_all_idb2(built: Path) -> None:
    inv = _read(built, "pbc_inventory")
    ok = set(inv.loc[inv["status"] == "ok", "path"])
    att = _read(built, "wbcatt")
    assert set(att["path"]) <= ok and len(att) == 10298 - 15
    assert att["split"].value_counts().to_dict() == {"train": 6160, "test": 3094, "val": 1029}
    for n, rows in [(1, 299), (2, 100)]:
        z = _read(built, f"zheng{n}")
        assert len(z) == rows and set(z["fold5"]) == {"0", "1", "2", "3", "4"}
        per_class = pd.crosstab(z["label"], z["fold5"]).reindex(columns=list("01234"), fill_value=0)
        assert (per_class.max(axis=1) - per_class.min(axis=1) <= 1).all()
    bccd = _read(built, "bccd")
    usable = (bccd["n_wbc_in_image"] == "1") & (bccd["subtype"] != "") & ~bccd["subtype"].str.contains(",")
    assert (bccd["usable"] == usable.astype(int).astype(str)).all() and usable.sum() == 341
    assert (bccd.loc[~usable, "fold5"] == "-1").all() and set(bccd.loc[usable, "fold5"]) == set("01234")
    idb = _read(built, "all_idb2")
    assert len(idb) == 259 and "all_idb2/images/Im257_0.png" not in set(idb["path"])  # byte-identical to Im223_0
    _assert_stratified(idb, {"train": 0.7, "val": 0.1, "test": 0.2})


def test_split_helpers_small_classes() -> None:
    rng = np.random.default_rng(0)
    labels = ["a"] * 3 + ["b"] * 1 + ["c"] * 11
    folds = stratified_folds(labels, 5, rng)
    assert sorted(np.bincount(folds, minlength=5)) == [3, 3, 3, 3, 3]
    assert len(set(folds[:3])) == 3
    split = stratified_split(labels, {"train": 0.7, "val": 0.1, "test": 0.2}, np.random.default_rng(0))
    assert list(split[labels.index("b") : labels.index("b") + 1]) == ["train"]
    assert (split[4:] == "train").sum() == 11 - 1 - 2


def test_load_manifest_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="wbcstudy data build"):
        load_manifest("pbc8")


# ---------------------------------------------------------------- caches

_CALLS = {"allowed": True}


def _counting_loader(item: str, size: int, crop: str) -> np.ndarray:
    """Plain loader that fails once decoding is no longer allowed."""
    if not _CALLS["allowed"]:
        raise AssertionError(f"decoded {item} again although it is cached")
    return cache_mod.load_plain_item(item, size, crop)


_counting_loader.cache_version = "test-1"  # type: ignore[attr-defined]


@needs_data
def test_cache_reuses_decoded_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WBCSTUDY_CACHE", str(tmp_path))
    paths = load_manifest("zheng2")["path"].tolist()
    subset = paths[::7]
    _CALLS["allowed"] = True
    first = cached_images("zheng2", subset, 16, loader=_counting_loader)
    assert first.shape == (len(subset), 16, 16, 3) and first.dtype == np.uint8
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("zheng2_16px_none_")
    index = json.loads((tmp_path / files[0]).read_text())
    assert index["paths"] == sorted(subset)  # a small subset, no whole-dataset cache yet: only the subset decoded
    _CALLS["allowed"] = False
    assert np.array_equal(first, cached_images("zheng2", subset, 16, loader=_counting_loader))
    _CALLS["allowed"] = True
    whole = cached_images("zheng2", paths, 16, loader=_counting_loader)
    index = json.loads(next(p for p in tmp_path.glob("*.json") if p.name != files[0]).read_text())
    assert index["paths"] == sorted(paths)  # the whole dataset
    _CALLS["allowed"] = False
    again = cached_images("zheng2", subset, 16, loader=_counting_loader)  # now served from the whole-dataset cache
    assert np.array_equal(first, again) and np.array_equal(whole[::7], first)
    other = cached_images("zheng2", paths[:3], 16, loader=_counting_loader)
    assert np.array_equal(other[0], first[0])
    expected = np.asarray(Image.open(data_root() / subset[1]).convert("RGB")
                          .resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(first[1], expected)
    _CALLS["allowed"] = True


@needs_data
def test_load_split_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WBCSTUDY_CACHE", str(tmp_path))
    images, labels, classes = load_split_arrays("all_idb2", "val", 8)
    assert classes == ["blast", "normal"] and images.shape == (26, 8, 8, 3)
    assert np.bincount(labels).tolist() == [13, 13]
    x, y, c = load_split_arrays("bccd", "test", 8, classes=["eosinophil", "neutrophil"])
    assert c == ["eosinophil", "neutrophil"] and len(x) == len(y) == 20 + 36
    with pytest.raises(ValueError, match="no split"):
        load_split_arrays("all_idb2", "holdout", 8)


def test_wnet_crop_arithmetic() -> None:
    left, top, right, bottom = cache_mod.PBC_CROPS["wnet"]
    # original 360 wide x 363 high; mirror window starts at (48, 48); W-Net removes 80 px from top and left
    assert (left + 48, top + 48) == (80, 80)
    assert right - left == 360 - 80 - 80 == 200 and bottom - top == 200
    assert 363 - (bottom + 48) == 83 and right <= 256 and bottom <= 256


def test_cache_of_a_missing_dataset_is_one_dataset_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wbcstudy.data import DatasetMissing

    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("WBCSTUDY_CACHE", str(tmp_path / "cache"))
    items = load_manifest("zheng1")["path"].tolist()[:3]
    with pytest.raises(DatasetMissing) as info:
        cached_images("zheng1", items, 8)
    assert info.value.summary.startswith("dataset 'zheng2018' not found at")
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-built


def test_build_manifests_never_writes_into_the_installed_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from wbcstudy.data import DatasetMissing

    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path / "raw"))
    with pytest.raises(DatasetMissing):
        build_manifests()
    assert (tmp_path / "data" / "manifests").is_dir()  # the project's folder, where a checkout keeps them
