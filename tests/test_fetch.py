"""`wbcstudy data fetch`, offline: a small archive in PBC's published layout served over HTTP on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wbcstudy import cli
from wbcstudy.data import PBC_CLASSES, SOURCES, DatasetMissing, fetch, load_pbc_image, read_pbc

#: (width, height) of the synthetic originals: both sizes occur in PBC as published
SIZES = [(360, 363), (366, 369)]


def _jpeg(width: int, height: int, seed: int) -> tuple[bytes, np.ndarray]:
    """A smooth synthetic original as JPEG bytes, and its decoded pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _published_pbc_zip(path: Path) -> dict[str, np.ndarray]:
    """The Mendeley archive's shape: an outer zip holding PBC_dataset_normal_DIB.zip with the 8 class folders."""
    inner = io.BytesIO()
    decoded = {}
    with zipfile.ZipFile(inner, "w") as zf:
        for i, label in enumerate(PBC_CLASSES):
            width, height = SIZES[i % 2]
            data, pixels = _jpeg(width, height, i)
            name = f"PBC_dataset_normal_DIB/{label}/{label[:2].upper()}_{1000 + i}.jpg"
            zf.writestr(name, data)
            decoded[f"pbc/{name}"] = pixels
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("snkd93bnjr-1/PBC_dataset_normal_DIB.zip", inner.getvalue())
    return decoded


@pytest.fixture()
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving one archive; yields (url, sha256, decoded pixels by path)."""
    folder = tmp_path_factory.mktemp("served")
    archive = folder / "snkd93bnjr-1.zip"
    decoded = _published_pbc_zip(archive)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        yield url, hashlib.sha256(archive.read_bytes()).hexdigest(), decoded
    finally:
        server.shutdown()
        server.server_close()


def _point_pbc_at(monkeypatch, tmp_path: Path, url: str, sha256: str | None) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("WBCSTUDY_DATA", str(root))
    monkeypatch.setitem(SOURCES, "pbc", dataclasses.replace(SOURCES["pbc"], download_url=url, sha256=sha256))
    return root


def test_fetch_verifies_the_hash_and_unpacks_the_published_layout(served, tmp_path, monkeypatch):
    url, sha256, decoded = served
    root = _point_pbc_at(monkeypatch, tmp_path, url, sha256)
    folder = fetch("pbc")
    assert folder == root / "pbc" / "PBC_dataset_normal_DIB"
    assert sorted(p.name for p in folder.iterdir()) == sorted(PBC_CLASSES)
    table = read_pbc()
    assert sorted(table["path"]) == sorted(decoded) and sorted(table["label"]) == sorted(PBC_CLASSES)
    for path, pixels in decoded.items():  # the readers take the chapters' window from either original size
        assert np.array_equal(load_pbc_image(path), pixels[48:48 + 256, 48:48 + 256])
    assert fetch("pbc") == folder  # in place: nothing downloaded again


def test_fetch_refuses_an_archive_whose_hash_differs(served, tmp_path, monkeypatch):
    url, sha256, _ = served
    wrong = hashlib.sha256(b"another archive").hexdigest()
    root = _point_pbc_at(monkeypatch, tmp_path, url, wrong)
    with pytest.raises(DatasetMissing, match="refusing to unpack 'pbc'.*does not have the recorded sha256") as info:
        fetch("pbc")
    assert "\n" not in info.value.summary
    assert not (root / "pbc").exists()
    assert not [p for p in (root / ".downloads").rglob("*") if p.is_file()]  # the unverified download is gone


def test_fetch_refuses_without_a_known_hash_before_downloading(served, tmp_path, monkeypatch, capsys):
    url, _, _ = served
    root = _point_pbc_at(monkeypatch, tmp_path, url, None)
    assert cli.main(["data", "fetch", "pbc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wbcstudy: refusing to fetch 'pbc': no sha256")
    assert not root.exists() or not any(root.rglob("*.zip"))


def test_cli_fetch_with_the_right_hash(served, tmp_path, monkeypatch, capsys):
    url, sha256, _ = served
    root = _point_pbc_at(monkeypatch, tmp_path, url, sha256)
    assert cli.main(["data", "fetch", "pbc"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "pbc" / "PBC_dataset_normal_DIB")
