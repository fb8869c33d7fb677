"""The trustworthiness app: upload validation, the checkpoint format, and the Streamlit app under AppTest."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from wbcstudy.app import (
    SCRIPT,
    CheckpointError,
    ImageRejected,
    load_checkpoint,
    predict,
    save_checkpoint,
    validate_image,
)
from wbcstudy.app.core import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    calibrate_ood,
    find_checkpoints,
    ood_warning,
    provenance_warning,
    refusal,
    to_model_input,
)
from wbcstudy.models.trust_cnn import build_trust_model

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


def test_declared_dimensions_are_rejected_before_decoding(monkeypatch):
    """A JPEG whose header claims 4000×5000 is refused from its header: the decoder never runs."""
    from PIL import ImageFile

    header_only = _jpeg(_cell(64))
    sof = header_only.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    claimed = header_only[:sof + 5] + (5000).to_bytes(2, "big") + (4000).to_bytes(2, "big") + header_only[sof + 9:]
    assert Image.open(io.BytesIO(claimed)).size == (4000, 5000)

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageRejected, match="4000×5000 pixels"):
        validate_image(claimed)


@pytest.mark.parametrize("width, height", [(360, 363), (366, 369)])  # both sizes occur in PBC as published
def test_model_input_takes_the_chapters_window_from_pbc_originals(width, height, tmp_path, monkeypatch):
    from wbcstudy.data import load_pbc_image

    rng = np.random.default_rng(1)
    pbc = np.zeros((height, width, 3), np.uint8)
    pbc[48:48 + 256, 48:48 + 256] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)  # the window; black rim
    path = tmp_path / "original.png"
    Image.fromarray(pbc).save(path)
    assert np.array_equal(to_model_input(pbc, 256), pbc[48:48 + 256, 48:48 + 256])
    assert np.array_equal(to_model_input(pbc, 32), load_pbc_image(path, 32))  # the app sees what the chapters see


def test_model_input_squares_other_images():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # centre square is white
    assert (to_model_input(wide, 16) == 255).all()


# ---------------------------------------------------------------- checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_trust_model("trust_cnn", len(CLASSES), 32, [0.5] * 3, [0.25] * 3).eval()
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
    with pytest.raises(CheckpointError, match="cannot be loaded") as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert "not an app checkpoint" in message and "wbcstudy run trust --profile cpu" in message
    assert "weights_only" not in message and "will likely succeed" not in message  # never advise unsafe loading
    assert "\n" not in message


def _model_meta(**info) -> dict:
    return {"arch": "trust_cnn", "classes": CLASSES, "image_size": 32, **info}


def test_a_pipeline_tests_checkpoint_is_refused_and_an_unrecorded_one_flagged():
    smoke = refusal(_model_meta(profile="smoke", test_accuracy=0.23))
    assert "smoke profile" in smoke and "not a classifier" in smoke and "0.230" in smoke
    assert "wbcstudy run trust --profile cpu" in smoke and "minutes" in smoke
    near_chance = refusal(_model_meta(profile="cpu", test_accuracy=0.39))  # chance 0.2; below twice chance
    assert "twice chance" in near_chance and "not a classifier" in near_chance
    assert refusal(_model_meta(profile="cpu", test_accuracy=0.98)) is None
    assert refusal(_model_meta()) is None and "does not record the profile" in provenance_warning(_model_meta())
    assert provenance_warning(_model_meta(profile="cpu", test_accuracy=0.98)) is None


def test_predict_returns_probabilities_and_a_map(checkpoint, one_thread):
    model, meta = load_checkpoint(checkpoint[0])
    result = predict(model, meta, _cell(100))
    assert set(result.probabilities) == set(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.cam.shape == (32, 32) and result.overlay.shape == (32, 32, 3)
    assert result.cam.max() > 0 and result.cam_notice is None


# ---------------------------------------------------------------- out-of-distribution rule
class _Brightness(torch.nn.Module):
    """A stand-in classifier: class 0's logit is 4 × the image's mean brightness (0..1), the other four 0."""

    def forward(self, x):
        m = x.float().mean(dim=(1, 2, 3)) / 255
        return torch.stack([4 * m, *[torch.zeros_like(m)] * 4], dim=1)


def _flat(values) -> np.ndarray:
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values])


def test_calibrate_ood_threshold_and_auroc_by_hand():
    bright = np.arange(156, 256)  # 100 in-distribution cells: confident
    dark = np.arange(0, 40)  # 40 out-of-distribution cells: flat outputs
    rule = calibrate_ood(_Brightness(), _flat(bright), _flat(dark))
    top = lambda v: float(np.exp(4 * v / 255) / (np.exp(4 * v / 255) + 4))  # noqa: E731
    assert rule["score"] == "max_softmax"
    assert rule["threshold"] == pytest.approx(top(bright[5]), abs=1e-6)  # keeps 95 of the 100 in-distribution cells
    assert rule["tpr"] == pytest.approx(0.95) and rule["fpr"] == 0.0 and rule["auroc"] == 1.0
    assert (rule["n_in"], rule["n_ood"]) == (100, 40)
    mixed = calibrate_ood(_Brightness(), _flat([10, 200]), _flat([100, 250]))  # one of the 4 pairs ordered right
    assert mixed["auroc"] == pytest.approx(0.25)


def test_ood_rule_travels_in_the_checkpoint_and_warns(tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_trust_model("trust_cnn", len(CLASSES), 32, [0.5] * 3, [0.25] * 3).eval()
    rule = {"score": "max_softmax", "threshold": 0.99, "auroc": 0.9, "tpr": 0.95}
    path = save_checkpoint(tmp_path / "m.pt", model, "trust_cnn", CLASSES, 32, [0.5] * 3, [0.25] * 3, ood=rule)
    loaded, meta = load_checkpoint(path)
    assert meta["ood"] == rule
    result = predict(loaded, meta, _cell(64))
    assert max(result.probabilities.values()) < 0.99
    assert "does not look like one of the five white-cell classes" in result.warning
    assert ood_warning({**meta, "ood": {**rule, "threshold": 0.0}}, result.probabilities) is None
    assert ood_warning({k: v for k, v in meta.items() if k != "ood"}, result.probabilities) is None
    with pytest.raises(ValueError, match="calibrate_ood"):
        save_checkpoint(tmp_path / "bad.pt", model, "trust_cnn", CLASSES, 32, [0.5] * 3, [0.25] * 3,
                        ood={"threshold": 2})


def test_find_checkpoints_lists_only_app_checkpoints(checkpoint, tmp_path):
    (tmp_path / "smoke" / "trust").mkdir(parents=True)
    app = tmp_path / "smoke" / "trust" / "app_model.pt"
    app.write_bytes(checkpoint[0].read_bytes())
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert find_checkpoints(tmp_path) == [app]


# ---------------------------------------------------------------- the Streamlit app
def _app(monkeypatch, path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WBCSTUDY_APP_CHECKPOINT", str(path))
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.run()
    return at


def test_app_without_a_checkpoint_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    at = _app(monkeypatch, tmp_path / "missing.pt")
    assert not at.exception
    assert "`wbcstudy run trust --profile cpu`" in at.error[0].value and "build/trust/app_model.pt" in at.error[0].value
    assert "minutes" in at.error[0].value
    assert "found" not in at.error[0].value


def test_app_without_its_checkpoint_lists_the_ones_it_found(monkeypatch, tmp_path, checkpoint):
    elsewhere = tmp_path / "build" / "smoke" / "trust" / "app_model.pt"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(checkpoint[0].read_bytes())
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    monkeypatch.delenv("WBCSTUDY_APP_CHECKPOINT", raising=False)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.run()
    assert not at.exception
    message = at.error[0].value
    assert str(tmp_path / "build" / "trust" / "app_model.pt") in message
    assert "wbcstudy run trust --profile cpu" in message
    assert ("build/smoke/trust/app_model.pt" in message
            and "wbcstudy app --checkpoint build/smoke/trust/app_model.pt" in message)


def test_app_states_the_real_upload_limit(monkeypatch, checkpoint):
    """In the unit the widget shows it in: Streamlit's "Limit 20MB per file" counts 10^6 bytes (outside Windows)."""
    at = _app(monkeypatch, checkpoint[0])
    uploader = at.file_uploader[0]
    assert "20 MB" in uploader.label and "MiB" not in uploader.label and "200" not in uploader.label
    assert "20 MB" in uploader.help and "MiB" not in uploader.help
    assert uploader.proto.max_upload_size_mb == 20 and MAX_UPLOAD_BYTES == 20 * 10**6
    with pytest.raises(ImageRejected, match=r"is 20\.0 MB; the limit is 20 MB\.$"):
        validate_image(b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert "MiB" not in (SCRIPT.parents[2] / ".streamlit" / "config.toml").read_text()


def _saved(tmp_path, name="m.pt", zero_classifier=False, **info):
    torch.manual_seed(0)
    model = build_trust_model("trust_cnn", len(CLASSES), 32, [0.5] * 3, [0.25] * 3).eval()
    if zero_classifier:  # logits = bias alone: no gradient reaches the last conv layer, so Grad-CAM is 0 everywhere
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
    return save_checkpoint(tmp_path / name, model, "trust_cnn", CLASSES, 32, [0.5] * 3, [0.25] * 3, **info)


def test_app_refuses_a_smoke_checkpoint(monkeypatch, tmp_path):
    at = _app(monkeypatch, _saved(tmp_path, profile="smoke", test_accuracy=0.23, chapter="trust"))
    assert not at.exception and len(at.error) == 1
    assert "smoke profile" in at.error[0].value and "not a classifier" in at.error[0].value
    assert "wbcstudy run trust --profile cpu" in at.error[0].value
    assert not at.file_uploader  # nothing to classify with: no upload box


def test_app_flags_a_checkpoint_that_does_not_say_how_it_was_trained(monkeypatch, tmp_path, one_thread):
    at = _app(monkeypatch, _saved(tmp_path))  # an older run's checkpoint: no profile, no test accuracy
    assert not at.exception and not at.error
    assert any("does not record the profile" in w.value for w in at.warning)
    at.file_uploader[0].set_value(("cell.png", _png(_cell(80)), "image/png")).run()
    assert any(s.value.startswith("Predicted: ") for s in at.subheader)


def test_an_all_zero_gradcam_map_is_reported_not_drawn(monkeypatch, tmp_path, one_thread):
    path = _saved(tmp_path, zero_classifier=True, profile="test", test_accuracy=0.5)
    model, meta = load_checkpoint(path)
    result = predict(model, meta, _cell(64))
    assert not result.cam.any() and result.overlay is None
    assert "zero everywhere" in result.cam_notice and result.label in result.cam_notice
    at = _app(monkeypatch, path)
    at.file_uploader[0].set_value(("cell.png", _png(_cell(80)), "image/png")).run()
    assert not at.exception and not at.error
    assert any("zero everywhere" in i.value for i in at.info)
    assert len(at.get("image")) == 1  # the model input only: no flat tint labelled Grad-CAM


def test_app_warns_on_an_out_of_distribution_upload(monkeypatch, tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_trust_model("trust_cnn", len(CLASSES), 32, [0.5] * 3, [0.25] * 3).eval()
    rule = {"score": "max_softmax", "threshold": 0.99, "auroc": 0.9, "tpr": 0.95}
    path = save_checkpoint(tmp_path / "m.pt", model, "trust_cnn", CLASSES, 32, [0.5] * 3, [0.25] * 3, ood=rule)
    at = _app(monkeypatch, path)
    assert any("Out-of-distribution check" in c.value for c in at.caption)
    at.file_uploader[0].set_value(("platelet.png", _png(_cell(80)), "image/png")).run()
    assert not at.exception and not at.error
    assert any("does not look like one of the five white-cell classes" in w.value for w in at.warning)


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
