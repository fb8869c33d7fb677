"""Readers, image and mask loaders, sources and transforms, checked against the datasets mirror."""
from __future__ import annotations

import colorsys
import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wbcstudy.data import (  # noqa: E402
    PBC_CLASSES,
    PBC_WBC_CLASSES,
    SOURCES,
    WBCATT_ATTRIBUTES,
    DatasetMissing,
    DatasetNotFoundError,
    UnreadableImageError,
    fetch,
    load_mask,
    load_pbc_image,
    locate,
    read_all_idb2,
    read_bccd,
    read_bccd_boxes,
    read_pbc,
    read_wbcatt,
    read_zheng,
    rgb_to_hsv,
    verify,
)
from wbcstudy.paths import data_root

needs_data = pytest.mark.skipif(
    not (data_root() / "pbc").is_dir(),
    reason=f"datasets not found under the data root {data_root()} (set WBCSTUDY_DATA to the mirror)",
)

# file counts per PBC class folder as the mirror's README gives them; neutrophil also holds .DS_169665.jpg
PBC_README_COUNTS = {
    "basophil": 1218,
    "eosinophil": 3117,
    "erythroblast": 1551,
    "ig": 2895,
    "lymphocyte": 1214,
    "monocyte": 1420,
    "neutrophil": 3329,
    "platelet": 2348,
}
DS_FILE = "pbc/PBC_dataset_normal_DIB/neutrophil/.DS_169665.jpg"


# ---------------------------------------------------------------- PBC


@needs_data
def test_read_pbc_counts_and_hidden_file() -> None:
    df = read_pbc()
    assert list(df.columns) == ["path", "label"]
    assert df["path"].is_monotonic_increasing and df["path"].is_unique
    counts = df["label"].value_counts().to_dict()
    expected = {**PBC_README_COUNTS, "neutrophil": PBC_README_COUNTS["neutrophil"] + 1}
    assert counts == expected
    assert DS_FILE in set(df["path"])
    assert PBC_CLASSES == sorted(PBC_CLASSES) and len(PBC_CLASSES) == 8
    assert set(PBC_WBC_CLASSES) < set(PBC_CLASSES)


@needs_data
def test_load_pbc_image_mirror_and_resize() -> None:
    path = read_pbc()["path"].iloc[0]
    full = load_pbc_image(path)
    assert full.shape == (256, 256, 3) and full.dtype == np.uint8
    assert np.array_equal(full, np.asarray(Image.open(data_root() / path).convert("RGB")))
    small = load_pbc_image(path, 32)
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    # the reduced-scale (draft) decode stays close to resizing the full decode
    ref = np.asarray(Image.fromarray(full).resize((32, 32), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(ref - small).mean() < 2.0


@needs_data
@pytest.mark.parametrize("width, height", [(360, 363), (366, 369)])  # both sizes occur in PBC as published
def test_load_pbc_image_original_size_window(tmp_path: Path, width: int, height: int) -> None:
    path = read_pbc()["path"].iloc[100]
    window = load_pbc_image(path)
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    original[48 : 48 + 256, 48 : 48 + 256] = window
    png = tmp_path / "original.png"
    Image.fromarray(original).save(png)
    assert np.array_equal(load_pbc_image(png), window)
    resized = np.asarray(Image.fromarray(window).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.array_equal(load_pbc_image(png, 64), resized)
    # an original-size JPEG decoded at reduced scale keeps the window in place
    smooth = np.asarray(Image.fromarray(original).resize((36, 36)).resize((width, height), Image.Resampling.BICUBIC))
    smooth = smooth.copy()
    smooth[48 : 48 + 256, 48 : 48 + 256] = window
    jpg = tmp_path / "original.jpg"
    Image.fromarray(smooth).save(jpg, quality=98)
    decoded_window = np.asarray(Image.open(jpg).convert("RGB"))[48 : 48 + 256, 48 : 48 + 256]
    expect = np.asarray(Image.fromarray(decoded_window).resize((32, 32), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(expect - load_pbc_image(jpg, 32)).mean() < 3.0


@needs_data
def test_load_pbc_image_errors(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match=r"\.DS_169665"):
        load_pbc_image(DS_FILE)
    odd = tmp_path / "odd.png"
    Image.new("RGB", (300, 300)).save(odd)
    with pytest.raises(ValueError, match=r"odd\.png.*300x300.*256x256.*360x363"):
        load_pbc_image(odd)
    src = data_root() / read_pbc()["path"].iloc[0]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(UnreadableImageError, match="truncated"):
        load_pbc_image(truncated)


# ---------------------------------------------------------------- WBCAtt, Zheng, BCCD, ALL-IDB2


@needs_data
def test_read_wbcatt() -> None:
    df = read_wbcatt()
    assert list(df.columns) == ["path", "label", "split", *WBCATT_ATTRIBUTES]
    assert len(WBCATT_ATTRIBUTES) == 11
    assert df["split"].value_counts().to_dict() == {"train": 6169, "val": 1030, "test": 3099}
    assert set(df["label"]) == set(PBC_WBC_CLASSES)
    assert df["path"].str.startswith("pbc/PBC_dataset_normal_DIB/").all()
    assert (df["path"].str.split("/").str[2] == df["label"]).all()
    assert all((data_root() / p).is_file() for p in df["path"].iloc[::500])


@needs_data
@pytest.mark.parametrize("number,count", [(1, 300), (2, 100)])
def test_read_zheng(number: int, count: int) -> None:
    df = read_zheng(number)
    assert list(df.columns) == ["path", "mask_path", "label"] and len(df) == count
    with open(data_root() / "zheng2018" / f"Class Labels of Dataset {number}.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    names = {1: "neutrophil", 2: "lymphocyte", 3: "monocyte", 4: "eosinophil", 5: "basophil"}
    expected = {f"zheng2018/Dataset {number}/{int(r[0]):03d}.bmp": names[int(r[1])] for r in rows}
    assert dict(zip(df["path"], df["label"])) == expected
    assert all((data_root() / m).is_file() for m in df["mask_path"])


@needs_data
def test_load_mask_zheng_and_all_idb2(tmp_path: Path) -> None:
    for path, cytoplasm in [("zheng2018/Dataset 1/001.png", 128), ("all_idb2/masks/Im001_1.png", 155)]:
        raw = np.asarray(Image.open(data_root() / path).convert("L"))
        mask = load_mask(path)
        assert mask.dtype == np.uint8 and mask.shape == raw.shape
        assert np.array_equal(mask == 0, raw == 0)
        assert np.array_equal(mask == 1, raw == cytoplasm)
        assert np.array_equal(mask == 2, raw == 255)
        assert set(np.unique(mask)) == {0, 1, 2}
    bad = tmp_path / "bad_mask.png"
    Image.fromarray(np.array([[0, 128], [155, 255]], dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"bad_mask\.png"):
        load_mask(bad)


@needs_data
def test_read_bccd() -> None:
    boxes = read_bccd_boxes()
    assert boxes["cell"].value_counts().to_dict() == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    wbc = read_bccd()
    assert list(wbc.columns) == [
        "image_path", "image_id", "xmin", "ymin", "xmax", "ymax", "n_wbc_in_image", "subtype", "voc_split",
    ]
    assert len(wbc) == 372
    assert set(wbc["voc_split"]) == {"train", "val", "test"}
    first = wbc.iloc[0]
    assert (first["image_id"], first["xmin"], first["ymin"], first["xmax"], first["ymax"]) == (0, 260, 177, 491, 376)
    assert first["subtype"] == "neutrophil" and first["n_wbc_in_image"] == 1
    parts = {p for s in wbc["subtype"] for p in s.split(",") if p}
    assert parts == {"basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"}
    assert (wbc["subtype"].str.contains(",")).sum() == 28  # several subtypes listed for one image
    assert (wbc["xmin"] < wbc["xmax"]).all() and (wbc["ymin"] < wbc["ymax"]).all()


@needs_data
def test_read_all_idb2() -> None:
    df = read_all_idb2()
    assert len(df) == 260 and df["label"].value_counts().to_dict() == {"blast": 130, "normal": 130}
    assert (df["label"] == np.where(df["path"].str.endswith("_1.png"), "blast", "normal")).all()


# ---------------------------------------------------------------- sources


def test_sources_registry() -> None:
    assert set(SOURCES) == {"pbc", "wbcatt", "zheng2018", "bccd", "all_idb2"}
    keys = {s.bibtex_key for s in SOURCES.values()}
    assert keys == {"acevedo2020pbc", "tsutsui2023wbcatt", "zheng2018micron", "bccd2017", "labati2011allidb"}
    assert SOURCES["all_idb2"].download_url is None
    assert SOURCES["pbc"].folder == "pbc/PBC_dataset_normal_DIB"


def test_missing_dataset_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        locate("pbc")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for part in ["'pbc'", str(tmp_path / "pbc" / "PBC_dataset_normal_DIB"), "data.mendeley.com/datasets/snkd93bnjr",
                 "CC BY 4.0", "WBCSTUDY_DATA", "<class>"]:
        assert part in msg, part
    with pytest.raises(DatasetNotFoundError, match=r"(?s)no public download.*scotti\.di\.unimi\.it/all"):
        fetch("all_idb2")
    assert not any(tmp_path.iterdir())


def test_fetch_offline_gives_helpful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", offline)
    monkeypatch.setitem(SOURCES, "zheng2018", dataclasses.replace(SOURCES["zheng2018"], sha256="0" * 64))
    with pytest.raises(DatasetMissing,
                       match=r"(?s)zheng2018.*failed.*ConnectionError.*GPL-3\.0.*WBCSTUDY_DATA") as info:
        fetch("zheng2018")
    assert "failed (ConnectionError)" in info.value.summary and "\n" not in info.value.summary


def test_every_source_states_its_archive_hash() -> None:
    fields = {f.name: f for f in dataclasses.fields(SOURCES["pbc"])}
    assert fields["sha256"].default is dataclasses.MISSING  # a required field: no entry can forget it
    for src in SOURCES.values():
        assert src.sha256 is None or (len(src.sha256) == 64 and int(src.sha256, 16) >= 0)
        assert src.download_url is not None or src.sha256 is None


def test_missing_and_partial_data_is_one_exception_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DatasetNotFoundError is DatasetMissing and issubclass(DatasetMissing, FileNotFoundError)
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    with pytest.raises(DatasetMissing) as info:
        load_pbc_image("pbc/PBC_dataset_normal_DIB/basophil/BA_1.jpg")
    assert (info.value.summary.startswith(f"dataset 'pbc' not found at {tmp_path}")
            and "WBCSTUDY_DATA" in info.value.summary)
    root = tmp_path / "pbc" / "PBC_dataset_normal_DIB"
    (root / "basophil").mkdir(parents=True)
    with pytest.raises(DatasetMissing, match=r"incomplete \(basophil/BA_1\.jpg is missing\)|incomplete \(pbc/"):
        load_pbc_image("pbc/PBC_dataset_normal_DIB/basophil/BA_1.jpg")
    with pytest.raises(DatasetMissing,
                       match=r"incomplete \(class folder eosinophil/ is missing\).*wbcstudy data verify pbc"):
        read_pbc()


@needs_data
def test_verify_mirror_and_altered_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert verify("all_idb2") == []
    shutil.copytree(data_root() / "all_idb2", tmp_path / "all_idb2")
    (tmp_path / "all_idb2" / "images" / "Im001_1.png").chmod(0o644)
    (tmp_path / "all_idb2" / "images" / "Im001_1.png").write_bytes(b"changed")
    (tmp_path / "all_idb2" / "masks" / "Im002_1.png").chmod(0o644)
    (tmp_path / "all_idb2" / "masks" / "Im002_1.png").unlink()
    (tmp_path / "all_idb2" / "extra.txt").write_text("x")
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    problems = verify("all_idb2")
    assert problems == [
        "changed: all_idb2/images/Im001_1.png (sha256 differs from all_idb2_inventory.csv)",
        "missing: all_idb2/masks/Im002_1.png",
        "unexpected: all_idb2/extra.txt (not in all_idb2_inventory.csv)",
    ]


# ---------------------------------------------------------------- transforms


def test_rgb_to_hsv_matches_colorsys() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 3, 17, generator=gen, dtype=torch.float64)
    # edge cases: black, white, grey, pure and tied colours
    specials = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1],
         [0, 1, 1], [1, 0, 1e-9], [0.2, 0.2, 0.9], [0.9, 0.2, 0.2]],
        dtype=torch.float64,
    )
    x[0, :, 0, :12] = specials.T
    hsv = rgb_to_hsv(x)
    assert hsv.shape == x.shape
    assert hsv.min() >= 0 and hsv.max() <= 1
    rgb = x.permute(0, 2, 3, 1).reshape(-1, 3).tolist()
    expected = torch.tensor([colorsys.rgb_to_hsv(*p) for p in rgb], dtype=torch.float64)
    got = hsv.permute(0, 2, 3, 1).reshape(-1, 3)
    hue_diff = (got[:, 0] - expected[:, 0]).abs()
    assert torch.minimum(hue_diff, 1 - hue_diff).max() < 1e-6  # hue is circular
    assert torch.allclose(got[:, 1:], expected[:, 1:], atol=1e-9)
    single = rgb_to_hsv(x[0].float())
    assert single.dtype == torch.float32 and single.max() < 1 + 1e-6
    diff = (single - hsv[0].float()).abs()
    diff[0] = torch.minimum(diff[0], 1 - diff[0])
    assert diff.max() < 1e-5


def test_area_downsample_averages_blocks() -> None:
    from wbcstudy.data import area_downsample

    img = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    img[0, :2, :2] = [0, 10, 255]
    img[0, 0, 0] = [4, 10, 255]  # block mean of channel 0: 4/4 = 1
    img[0, 2:, 2:, 1] = 201  # block (1, 1): 201 in channel 1
    out = area_downsample(img, 2)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [1, 10, 255]
    assert out[0, 1, 1].tolist() == [0, 201, 0] and out[0, 0, 1].tolist() == [0, 0, 0]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    expected = np.rint(x.reshape(3, 2, 4, 2, 4, 3).mean(axis=(2, 4)))
    assert np.array_equal(area_downsample(x, 4), expected.astype(np.uint8))
    assert np.array_equal(area_downsample(x, 1), x)
    with pytest.raises(ValueError, match="divisor"):
        area_downsample(x, 3)
