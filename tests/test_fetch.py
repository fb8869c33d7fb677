"""`wbcstudy data fetch` and `verify`, offline: small archives in the published layouts, served over HTTP on
127.0.0.1 or read from a file:// URL, with and without a recorded sha256 (then checked by content and locked)."""
from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import hashlib
import http.server
import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wbcstudy import cli
from wbcstudy.data import PBC_CLASSES, SOURCES, DatasetMissing, fetch, load_pbc_image, read_pbc, sources
from wbcstudy.data.readers import PBC_ORIGINAL_SIZES, PBC_WINDOW_ORIGIN, pbc_window_origin
from wbcstudy.data.sources import LOCK_NAME, PBC_SIZES, Expect, check_content, verify_report

#: (width, height) of the synthetic originals: both sizes occur in PBC as published
SIZES = [(360, 363), (366, 369)]
#: what the test PBC archive holds: one original per class
TINY_PBC = tuple(Expect(f"{label}/*.jpg", 1, PBC_SIZES) for label in PBC_CLASSES)


def _image(width: int, height: int, seed: int, fmt: str = "JPEG") -> tuple[bytes, np.ndarray]:
    """A smooth synthetic image as encoded bytes, and its decoded pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue(), np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _pbc_members(seed: int = 0) -> dict[str, bytes]:
    """One original JPEG per class, named as published (folder PBC_dataset_normal_DIB/<class>/)."""
    return {f"PBC_dataset_normal_DIB/{label}/{label[:2].upper()}_{1000 + i}.jpg": _image(*SIZES[i % 2], seed + i)[0]
            for i, label in enumerate(PBC_CLASSES)}


def _write_pbc_zip(path: Path, members: dict[str, bytes]) -> Path:
    """The Mendeley archive's shape: an outer zip holding PBC_dataset_normal_DIB.zip with the class folders."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("snkd93bnjr-1/PBC_dataset_normal_DIB.zip", inner.getvalue())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclasses.dataclass
class Served:
    url: str
    archive: Path

    @property
    def sha256(self) -> str:
        return _sha(self.archive)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


@pytest.fixture()
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving one PBC archive (which a test may replace)."""
    folder = tmp_path_factory.mktemp("served")
    archive = _write_pbc_zip(folder / "snkd93bnjr-1.zip", _pbc_members())
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}/{archive.name}", archive)
    finally:
        server.shutdown()
        server.server_close()


def _point_at(monkeypatch, tmp_path: Path, key: str, url: str, sha256: str | None, **changes) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("WBCSTUDY_DATA", str(root))
    defaults = {"expected": TINY_PBC} if key == "pbc" else {}
    monkeypatch.setitem(sources.SOURCES, key, dataclasses.replace(sources.SOURCES[key], download_url=url,
                                                                  sha256=sha256, **{**defaults, **changes}))
    return root


def _files_left(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_documented_pbc_content_matches_the_readers():
    pbc = SOURCES["pbc"]
    assert pbc.original_sizes == PBC_ORIGINAL_SIZES and pbc.crop_window[:2] == PBC_WINDOW_ORIGIN
    assert all(pbc_window_origin(w, h) == PBC_WINDOW_ORIGIN for w, h in pbc.original_sizes)
    assert sum(e.count for e in pbc.expected) == 17_092 and {e.pattern for e in pbc.expected} == {
        f"{c}/*.jpg" for c in PBC_CLASSES}
    counts = {e.pattern: e.count for src in SOURCES.values() for e in src.expected}
    assert counts["Dataset 1/*.bmp"] == 300 and counts["BCCD/JPEGImages/*.jpg"] == 364
    assert counts["images/Im*_1.png"] == counts["images/Im*_0.png"] == 130


def test_fetch_verifies_the_hash_and_unpacks_the_published_layout(served, tmp_path, monkeypatch):
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, served.sha256)
    folder = fetch("pbc")
    assert folder == root / "pbc" / "PBC_dataset_normal_DIB"
    assert sorted(p.name for p in folder.iterdir()) == sorted(PBC_CLASSES)
    table = read_pbc()
    assert sorted(table["label"]) == sorted(PBC_CLASSES)
    for i, label in enumerate(PBC_CLASSES):  # the readers take the chapters' window from either original size
        pixels = _image(*SIZES[i % 2], i)[1]
        path = f"pbc/PBC_dataset_normal_DIB/{label}/{label[:2].upper()}_{1000 + i}.jpg"
        assert np.array_equal(load_pbc_image(path), pixels[48:48 + 256, 48:48 + 256])
    assert not (root / LOCK_NAME).exists()  # a recorded hash needs no lock
    assert _files_left(root / ".downloads") == []  # the archive is not kept
    assert fetch("pbc") == folder  # in place: nothing downloaded again


def test_fetch_refuses_an_archive_whose_hash_differs(served, tmp_path, monkeypatch):
    wrong = hashlib.sha256(b"another archive").hexdigest()
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, wrong)
    with pytest.raises(DatasetMissing, match="refusing to unpack 'pbc'.*does not have the recorded sha256") as info:
        fetch("pbc")
    assert "\n" not in info.value.summary
    assert _files_left(root) == []  # the unverified download is gone, nothing unpacked


def test_fetch_without_a_recorded_hash_checks_the_content_and_locks_it(served, tmp_path, monkeypatch):
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    said: list[str] = []
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    folder = fetch("pbc", report=said.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted(PBC_CLASSES)
    lock = json.loads((root / LOCK_NAME).read_text())
    assert lock["pbc"]["sha256"] == hashlib.sha256(served.archive.read_bytes()).hexdigest()
    assert lock["pbc"]["url"] == served.url
    assert datetime.datetime.fromisoformat(lock["pbc"]["fetched"]) >= before
    assert len(said) == 1 and lock["pbc"]["sha256"] in said[0] and str(root / LOCK_NAME) in said[0]
    assert _files_left(root / ".downloads") == [] and not list(root.glob(".unpacking-*"))

    # the publisher's file changes: the next fetch compares with the lock and refuses, leaving nothing behind
    locked = served.sha256
    _write_pbc_zip(served.archive, _pbc_members(seed=100))
    assert served.sha256 != locked
    shutil.rmtree(root / "pbc")
    with pytest.raises(DatasetMissing, match=f"refusing to unpack 'pbc'.*recorded sha256 {locked}") as info:
        fetch("pbc")
    assert "\n" not in info.value.summary and str(root / LOCK_NAME) in info.value.summary
    assert _files_left(root) == [root / LOCK_NAME]
    assert json.loads((root / LOCK_NAME).read_text()) == lock  # the lock is kept as it was


def _refused(root: Path, *words: str) -> None:
    with pytest.raises(DatasetMissing) as info:
        fetch("pbc", report=lambda line: pytest.fail(f"nothing may be recorded: {line}"))
    summary = info.value.summary
    assert "\n" not in summary and "'pbc'" in summary, summary
    for word in words:
        assert word in summary, (word, summary)
    assert _files_left(root) == [] and not list(root.glob(".unpacking-*"))  # no archive, nothing unpacked, no lock
    return summary


def test_a_tampered_archive_is_refused_and_leaves_nothing(served, tmp_path, monkeypatch):
    members = _pbc_members()
    victim = next(n for n in members if "/monocyte/" in n)
    members[victim] = b"\xff\xd8\xff\xe0 not really a JPEG" + bytes(200)
    _write_pbc_zip(served.archive, members)
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    _refused(root, "failed the content check", "does not decode: " + victim.split("/", 1)[1])


def test_a_truncated_archive_is_refused_and_leaves_nothing(served, tmp_path, monkeypatch):
    data = served.archive.read_bytes()
    served.archive.write_bytes(data[: len(data) // 2])
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    _refused(root, "cannot be unpacked", "BadZipFile", "wbcstudy data fetch pbc")


def test_a_wrong_class_count_is_refused(served, tmp_path, monkeypatch):
    members = _pbc_members()
    extra = next(n for n in members if "/basophil/" in n)
    members[extra.replace("1000", "2000")] = members[extra]
    del members[next(n for n in members if "/platelet/" in n)]
    _write_pbc_zip(served.archive, members)
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    _refused(root, "2 problem(s)", "basophil/*.jpg: 2 file(s), expected 1", "platelet/*.jpg: 0 file(s), expected 1")


def test_an_image_of_an_undocumented_size_is_refused(served, tmp_path, monkeypatch):
    members = _pbc_members()
    victim = next(n for n in members if "/ig/" in n)
    members[victim] = _image(256, 256, 7)[0]  # the mirror's crop, not an original
    _write_pbc_zip(served.archive, members)
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    _refused(root, f"wrong size: {victim.split('/', 1)[1]} is 256x256, expected 360x363 or 366x369")


def test_a_download_that_is_not_https_is_refused_before_downloading(tmp_path, monkeypatch):
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("must not download"))
    root = _point_at(monkeypatch, tmp_path, "pbc", "http://example.org/snkd93bnjr-1.zip", None)
    _refused(root, "not an HTTPS address", "wbcstudy data verify pbc")


def _zheng_archive(path: Path, labels: bytes = b"1,2\n") -> dict[str, bytes]:
    """A tiny GitHub-style archive of the Zheng repository: one image, its mask and the two label files."""
    members = {
        "Dataset 1/001.bmp": _image(120, 116, 1, "BMP")[0],
        "Dataset 1/001.png": _image(120, 116, 2, "PNG")[0],
        "Class Labels of Dataset 1.csv": labels,
        "Class Labels of Dataset 2.csv": b"3\n",
        "README.rst": b"upstream readme\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"segmentation_WBC-master/{name}", data)
    return members


def _inventory(path: Path, key: str, members: dict[str, bytes]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "sha256", "width", "height", "status", "duplicate_of"])
        for name, data in sorted(members.items()):
            writer.writerow([f"{key}/{name}", "", hashlib.sha256(data).hexdigest(), "", "", "ok", ""])
    return path


ZHENG_TINY = (Expect("Dataset 1/*.bmp", 1, max_size=(120, 120)), Expect("Dataset 1/*.png", 1, max_size=(120, 120)),
              Expect("Class Labels of Dataset *.csv", 2))


def test_file_url_and_the_inventory_sha256_per_file(tmp_path, monkeypatch):
    archive = tmp_path / "segmentation_WBC-master.zip"
    members = _zheng_archive(archive)
    inventory = _inventory(tmp_path / "zheng2018_inventory.csv", "zheng2018", members)
    monkeypatch.setattr(sources, "inventory_path", lambda key: inventory)
    root = _point_at(monkeypatch, tmp_path, "zheng2018", archive.as_uri(), None, expected=ZHENG_TINY)
    folder = fetch("zheng2018", report=lambda line: None)
    assert (folder / "Class Labels of Dataset 1.csv").read_bytes() == b"1,2\n"
    assert json.loads((root / LOCK_NAME).read_text())["zheng2018"]["sha256"] == _sha(archive)
    assert check_content("zheng2018") == []

    # without the lock, a label file that differs from the committed inventory is refused by the content check
    shutil.rmtree(folder)
    (root / LOCK_NAME).unlink()
    _zheng_archive(archive, labels=b"5,5\n")
    with pytest.raises(DatasetMissing) as info:
        fetch("zheng2018")
    assert info.value.summary.startswith("refusing to install 'zheng2018'") and "\n" not in info.value.summary
    assert "changed: Class Labels of Dataset 1.csv (sha256 differs from zheng2018_inventory.csv)" in info.value.summary
    assert _files_left(root) == []


def _bccd_archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BCCD_Dataset-master/BCCD/JPEGImages/BloodImage_00000.jpg", _image(640, 480, 3)[0])
        zf.writestr("BCCD_Dataset-master/BCCD/Annotations/BloodImage_00000.xml", b"<annotation/>")
        zf.writestr("BCCD_Dataset-master/LICENSE", b"MIT\n")


def test_bccd_labels_are_a_manual_step_named_on_every_fetch(tmp_path, monkeypatch):
    archive = tmp_path / "BCCD_Dataset-master.zip"
    _bccd_archive(archive)
    # counts and decoding only
    monkeypatch.setattr(sources, "inventory_path", lambda key: tmp_path / "no_inventory.csv")
    root = _point_at(monkeypatch, tmp_path, "bccd", archive.as_uri(), None,
                     expected=(Expect("BCCD/JPEGImages/*.jpg", 1, ((640, 480),)), Expect("BCCD/Annotations/*.xml", 1)))
    for _ in range(2):  # after the download, and again when the images are in place
        with pytest.raises(DatasetMissing) as info:
            fetch("bccd", report=lambda line: None)
        summary = info.value.summary
        assert "\n" not in summary and summary.startswith("dataset 'bccd'")
        assert "kaggle.com/datasets/paultimothymooney/blood-cells" in summary
        assert str(root / "bccd" / "labels.csv") in summary
    assert (root / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00000.jpg").is_file()
    assert json.loads((root / LOCK_NAME).read_text())["bccd"]["sha256"] == _sha(archive)
    (root / "bccd" / "labels.csv").write_text(",Image,Category\n,0,NEUTROPHIL\n")
    assert fetch("bccd") == root / "bccd"


def test_verify_accepts_pbc_originals_by_what_they_are(tmp_path, monkeypatch):
    root = tmp_path / "data"
    folder = root / "pbc" / "PBC_dataset_normal_DIB" / "basophil"
    folder.mkdir(parents=True)
    crop = _image(256, 256, 1)[0]
    files = {"BA_1.jpg": crop,                       # the mirror's crop: matches the inventory
             "BA_2.jpg": _image(360, 363, 2)[0],     # an original: its sha256 differs, but it is what it should be
             "BA_3.jpg": _image(300, 300, 3)[0],     # neither
             "BA_4.jpg": _image(366, 369, 4)[0][:2000]}  # a truncated original
    for name, data in files.items():
        (folder / name).write_bytes(data)
    inventory = _inventory(tmp_path / "pbc_inventory.csv", "pbc/PBC_dataset_normal_DIB",
                           {f"basophil/{n}": crop if n == "BA_1.jpg" else b"the mirror's crop" for n in files})
    monkeypatch.setattr(sources, "inventory_path", lambda key: inventory)
    monkeypatch.setenv("WBCSTUDY_DATA", str(root))
    report = verify_report("pbc")
    assert (report.matched, report.originals) == (1, 1)
    assert [p.split(" ")[1] for p in report.problems] == ["pbc/PBC_dataset_normal_DIB/basophil/BA_3.jpg",
                                                          "pbc/PBC_dataset_normal_DIB/basophil/BA_4.jpg"]
    assert all(p.startswith("changed:") and "not a decodable original of 360x363 or 366x369" in p
               for p in report.problems)
    assert "1 are decodable original images" in report.describe()


def test_cli_fetch_with_the_right_hash(served, tmp_path, monkeypatch, capsys):
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, served.sha256)
    assert cli.main(["data", "fetch", "pbc"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "pbc" / "PBC_dataset_normal_DIB")


def test_cli_fetch_without_a_hash_prints_the_recorded_one(served, tmp_path, monkeypatch, capsys):
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    assert cli.main(["data", "fetch", "pbc"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 2 and served.sha256 in lines[0] and lines[1] == str(root / "pbc" / "PBC_dataset_normal_DIB")


def test_cli_fetch_reports_on_every_dataset(served, tmp_path, monkeypatch, capsys):
    import pooch

    archive = tmp_path / "BCCD_Dataset-master.zip"
    _bccd_archive(archive)
    # counts and decoding only
    monkeypatch.setattr(sources, "inventory_path", lambda key: tmp_path / "no_inventory.csv")
    # no network in tests: only the two local archives and ALL-IDB2 (a copy of the registry, so its order stays)
    monkeypatch.setattr(sources, "SOURCES", {k: v for k, v in SOURCES.items() if k in ("pbc", "bccd", "all_idb2")})
    root = _point_at(monkeypatch, tmp_path, "pbc", served.url, None)
    _point_at(monkeypatch, tmp_path, "bccd", archive.as_uri(), None,
              expected=(Expect("BCCD/JPEGImages/*.jpg", 1),))
    calls = []
    real = pooch.retrieve
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: calls.append(k["progressbar"]) or real(*a, **k))

    assert cli.main(["data", "fetch"]) == 2  # every dataset: the first failure does not stop the others
    out, err = capsys.readouterr()
    assert f"pbc: {root / 'pbc' / 'PBC_dataset_normal_DIB'}" in out.splitlines()
    assert any(line.startswith("bccd: not fetched: dataset 'bccd'") and "labels.csv" in line
               for line in out.splitlines())
    assert any(line.startswith("all_idb2: not fetched:") and "scotti.di.unimi.it" in line for line in out.splitlines())
    last = err.strip().splitlines()[-1]
    assert last.startswith("wbcstudy: dataset(s) bccd, all_idb2 not fetched")

    shutil.rmtree(root / "pbc")
    assert cli.main(["data", "fetch", "--all"]) == 2  # public ones only, with a progress bar; bccd still lacks labels
    out, err = capsys.readouterr()
    assert any(line.startswith("all_idb2: skipped, it has no public download") for line in out.splitlines())
    assert err.strip().splitlines()[-1].startswith("wbcstudy: dataset(s) bccd not fetched")
    assert calls == [False, True]  # the progress bar is asked for with --all (pooch downloads pbc; bccd is a file)
    assert cli.main(["data", "verify", "--all"]) == 2
    assert "--all goes with `wbcstudy data fetch`" in capsys.readouterr().err
