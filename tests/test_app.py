"""The trustworthiness app: upload validation, the checkpoint format, and the Streamlit app under AppTest."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from wbcstudy.app import SCRIPT, CheckpointError, ImageRejected, load_checkpoint, predict, save_checkpoint, validate_image
from wbcstudy.app.core import MAX_PIXELS, to_model_input
from wbcstudy.models.trust_cnn import build_model

CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _cell(size=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _bomb_png(width=20_000, height=20_000) -> bytes:
    """A tiny PNG file whose header claims width×height pixels (400 MP): the decompression-bomb shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = zlib.compress(b"\x00" * (width // 8 + 1) * 16)  # a few rows of a 1-bit image; never decoded
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


BAD_UPLOADS = {
    "empty": (b"", "empty"),
    "not an image": (b"name,label\nBA_1.jpg,basophil\n", "not an image"),
    "truncated": (_jpeg(_cell(128))[:600], "truncated or corrupt"),
    "decompression bomb": (_bomb_png(), "megapixels"),  # 400 MP: PIL's own bomb error
    "huge image": (_bomb_png(6000, 6000), "megapixels"),  # 36 MP: the app's header check
    "three pixels": (_png(_cell(3)[:1]), "at least 16"),
}


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_uploads_are_rejected_with_a_reason(name):
    data, reason = BAD_UPLOADS[name]
    with pytest.raises(ImageRejected, match=reason):
        validate_image(data)


def test_rgb_image_passes_unchanged():
    cell = _cell(40)
    rgb, notes = validate_image(_png(cell))
    assert rgb.dtype == np.uint8 and (rgb == cell).all() and notes == []


def test_grayscale_is_converted_with_a_note():
    gray = _cell(32)[..., 0]
    rgb, notes = validate_image(_png(gray, "L"))
    assert rgb.shape == (32, 32, 3) and (rgb[..., 1] == gray).all()
    assert any("grayscale" in n for n in notes)


def test_16_bit_grayscale_is_rescaled():
    img = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    rgb, notes = validate_image(buf.getvalue())
    assert rgb.shape == (32, 32, 3) and rgb.max() == 255 and rgb.min() == 0
    assert any("bit" in n for n in notes)


def test_rgba_is_flattened_onto_white():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom half transparent
    rgb, notes = validate_image(_png(rgba, "RGBA"))
    assert tuple(rgb[0, 0]) == (200, 0, 0) and tuple(rgb[-1, -1]) == (255, 255, 255)
    assert any("transparent" in n for n in notes)


def test_bomb_threshold_is_below_pil_limit():
    assert MAX_PIXELS < Image.MAX_IMAGE_PIXELS


def test_model_input_crops_pbc_originals_and_squares_others():
    pbc = np.zeros((363, 360, 3), np.uint8)
    pbc[48:48 + 256, 48:48 + 256] = 255  # the training window is white, the rim black
    assert (to_model_input(pbc, 32) == 255).all()
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # centre square is white
    assert (to_model_input(wide, 16) == 255).all()


# ---------------------------------------------------------------- checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("trust_cnn", len(CLASSES), 32, [0.5] * 3, [0.25] * 3).eval()
    path = tmp_path_factory.mktemp("ckpt") / "app_model.pt"
    save_checkpoint(path, model, "trust_cnn", CLASSES, 32, [0.5] * 3, [0.25] * 3, test_accuracy=0.5, profile="test")
    return path, model


def test_checkpoint_round_trip_with_weights_only(checkpoint):
    path, model = checkpoint
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"format", "state_dict", "meta_json"}
    loaded, meta = load_checkpoint(path)
    assert meta["classes"] == CLASSES and meta["image_size"] == 32 and meta["arch"] == "trust_cnn"
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="wbcstudy run trust"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(bad)


def test_predict_returns_probabilities_and_a_map(checkpoint, one_thread):
    model, meta = load_checkpoint(checkpoint[0])
    result = predict(model, meta, _cell(100))
    assert set(result.probabilities) == set(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.cam.shape == (32, 32) and result.overlay.shape == (32, 32, 3)


# ---------------------------------------------------------------- the Streamlit app
def _app(monkeypatch, path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WBCSTUDY_APP_CHECKPOINT", str(path))
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.run()
    return at


def test_app_without_a_checkpoint_says_how_to_make_one(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "missing.pt")
    assert not at.exception
    assert "wbcstudy run trust" in at.error[0].value


def test_app_classifies_an_upload(monkeypatch, checkpoint, one_thread):
    at = _app(monkeypatch, checkpoint[0])
    assert not at.exception and not at.error
    at.file_uploader[0].set_value(("cell.png", _png(_cell(80)), "image/png")).run()
    assert not at.exception and not at.error
    assert any(s.value.startswith("Predicted: ") for s in at.subheader)
    table = at.dataframe[0].value
    assert sorted(table["class"]) == sorted(CLASSES)
    assert table["probability"].sum() == pytest.approx(1.0, abs=1e-5)
    assert len(at.get("image")) == 2  # the model input and the Grad-CAM overlay


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_app_rejects_bad_uploads_without_crashing(monkeypatch, checkpoint, name):
    at = _app(monkeypatch, checkpoint[0])
    data, reason = BAD_UPLOADS[name]
    at.file_uploader[0].set_value((f"{name}.png", data, "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and reason in at.error[0].value
    assert not at.subheader  # no prediction shown


def test_app_converts_grayscale_with_a_warning(monkeypatch, checkpoint, one_thread):
    at = _app(monkeypatch, checkpoint[0])
    at.file_uploader[0].set_value(("gray.png", _png(_cell(48)[..., 0], "L"), "image/png")).run()
    assert not at.exception and not at.error
    assert any("grayscale" in w.value for w in at.warning)
    assert any(s.value.startswith("Predicted: ") for s in at.subheader)
