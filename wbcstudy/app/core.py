"""The app's logic, free of Streamlit: upload validation, the checkpoint format, prediction with Grad-CAM.

The checkpoint is a plain dict readable with ``torch.load(..., weights_only=True)``:
``{"format": "wbcstudy-trust-app/1", "state_dict": {...}, "meta_json": "<JSON>"}`` where the metadata holds
the architecture name (one of ``wbcstudy.models.trust_cnn.ARCHITECTURES``), the class names, the input size,
the normalisation mean/std, and how the model was trained (chapter, profile, test accuracy).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from wbcstudy.data.readers import PBC_ORIGINAL_SIZE, PBC_WINDOW, PBC_WINDOW_ORIGIN
from wbcstudy.paths import project_root

__all__ = ["ImageRejected", "CheckpointError", "validate_image", "to_model_input", "save_checkpoint",
           "load_checkpoint", "default_checkpoint", "Prediction", "predict", "MAX_UPLOAD_BYTES", "MAX_PIXELS",
           "MIN_SIDE", "CHECKPOINT_FORMAT", "DEFAULT_CHECKPOINT"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB of file
MAX_PIXELS = 25_000_000  # 25 megapixels decoded (a decompression-bomb guard far below PIL's own 89 MP warning)
MIN_SIDE = 16  # px: smaller images carry no cell to classify
CHECKPOINT_FORMAT = "wbcstudy-trust-app/1"
#: Where the trustworthiness chapter writes the app's model (rebuildable: `wbcstudy run trust`).
DEFAULT_CHECKPOINT = "build/trust/app_model.pt"


class ImageRejected(ValueError):
    """An upload the app will not classify; the message says why, in words for the user."""


class CheckpointError(RuntimeError):
    """The app's model is missing or unreadable; the message says how to produce it."""


def validate_image(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Decode an uploaded file into a uint8 RGB array (H, W, 3), or raise ``ImageRejected`` with a clear reason.

    Rejected: empty or oversized files, files that are not images, truncated or corrupt images, images larger
    than ``MAX_PIXELS`` (checked from the header before decoding: a decompression bomb never gets decoded),
    images smaller than ``MIN_SIDE`` on a side. Converted, with a note: grayscale, palette, 16-bit and
    CMYK images (to RGB), transparency (flattened onto white), multi-frame files (first frame),
    EXIF-rotated photos (turned upright).
    """
    if not data:
        raise ImageRejected("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageRejected(f"The file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB.")
    notes: list[str] = []
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageRejected(f"The image is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); the limit is "
                                    f"{MAX_PIXELS / 1e6:.0f} megapixels. Very large images (possibly a decompression "
                                    "bomb) are not decoded.")
            if getattr(img, "n_frames", 1) > 1:
                notes.append(f"The file holds {img.n_frames} frames; the first one is classified.")
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"The image is too large to decode safely: more than {MAX_PIXELS / 1e6:.0f} megapixels "
                            f"(decompression bomb guard; {exc})") from None
    except UnidentifiedImageError:
        raise ImageRejected("This file is not an image that can be read (PNG, JPEG, BMP, TIFF, GIF or WebP).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"The image is truncated or corrupt and cannot be decoded ({exc}).") from None
    except Exception as exc:  # any other decoder failure is still the file's fault, not a crash
        raise ImageRejected(f"The image could not be decoded ({type(exc).__name__}: {exc}).") from None
    if min(w, h) < MIN_SIDE:
        raise ImageRejected(f"The image is only {w}×{h} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed to show a cell.")
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:
        upright = img
    if upright.size != img.size or upright is not img and upright.tobytes() != img.tobytes():
        notes.append("The photo was turned upright following its EXIF orientation.")
    img = upright
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi == lo else (arr - lo) / (hi - lo) * 255
        img = Image.fromarray(arr.round().astype(np.uint8), "L")
        notes.append(f"A {mode} (high bit depth) grayscale image was rescaled to 8 bits and converted to RGB; "
                     "the model was trained on colour images, so expect a less reliable answer.")
    elif mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            notes.append("The image has transparent pixels; they were flattened onto a white background.")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if mode in ("L", "1", "LA"):
        notes.append("The image is grayscale; it was converted to RGB. The model was trained on stained colour "
                     "images, so expect a less reliable answer.")
    elif mode == "CMYK":
        notes.append("The image is CMYK; it was converted to RGB.")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return rgb, notes


def to_model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """The model's view of an image: PBC originals (360×363) cropped to the 256-px window used in training; any
    other image centre-cropped to a square; then resized to ``size`` (antialiased bilinear) → uint8 (size, size, 3)."""
    img = Image.fromarray(rgb)
    w, h = img.size
    if (w, h) == PBC_ORIGINAL_SIZE:  # PBC originals are 360×363; training used the 256×256 window
        x0, y0 = PBC_WINDOW_ORIGIN
        img = img.crop((x0, y0, x0 + PBC_WINDOW, y0 + PBC_WINDOW))
    elif w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: str, classes: list[str], image_size: int,
                    mean: list[float], std: list[float], **info: object) -> Path:
    """Write the app's checkpoint (state dict + JSON metadata) for ``model``, built by ``build_model(arch, ...)``."""
    from wbcstudy.models.trust_cnn import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}")
    meta = {"arch": arch, "classes": list(classes), "image_size": int(image_size), "mean": [float(m) for m in mean],
            "std": [float(s) for s in std], **info}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta_json": json.dumps(meta)}, path)
    return path


def default_checkpoint() -> Path:
    """``WBCSTUDY_APP_CHECKPOINT`` if set, else ``build/trust/app_model.pt`` under the project root."""
    env = os.environ.get("WBCSTUDY_APP_CHECKPOINT")
    return Path(env) if env else project_root() / DEFAULT_CHECKPOINT


def load_checkpoint(path: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, float32, CPU) and metadata from an app checkpoint, loaded with ``weights_only=True``."""
    from wbcstudy.models.trust_cnn import build_model

    path = Path(path) if path else default_checkpoint()
    if not path.is_file():
        raise CheckpointError(
            f"No trained model at {path}. The trustworthiness chapter writes it: run "
            "`wbcstudy run trust --profile cpu` (or `--profile smoke` for a quick, weak model), "
            "or point WBCSTUDY_APP_CHECKPOINT at a checkpoint.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
        meta = json.loads(blob["meta_json"])
        model = build_model(meta["arch"], len(meta["classes"]), meta["image_size"], meta["mean"], meta["std"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"The checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}). "
                              "Re-run `wbcstudy run trust` to write it again.") from None
    return model.float().eval(), meta


@dataclass
class Prediction:
    """What the app shows: the class, every class's probability, the model's input and its Grad-CAM overlay."""

    label: str
    probabilities: dict[str, float]
    model_input: np.ndarray
    cam: np.ndarray
    overlay: np.ndarray


def predict(model: torch.nn.Module, meta: dict, rgb: np.ndarray) -> Prediction:
    """Classify one validated RGB image and explain the predicted class with Grad-CAM."""
    from wbcstudy.explain.gradcam import gradcam_maps, overlay
    from wbcstudy.models.trust_cnn import gradcam_layer

    x = to_model_input(rgb, int(meta["image_size"]))
    batch = torch.from_numpy(x[None].copy())
    with torch.inference_mode():
        probs = torch.softmax(model(batch).float(), dim=1)[0].numpy()
    k = int(probs.argmax())
    cam = gradcam_maps(model, gradcam_layer(model, meta["arch"]), batch, targets=[k])[0]
    classes = list(meta["classes"])
    return Prediction(label=classes[k], probabilities={c: float(p) for c, p in zip(classes, probs)},
                      model_input=x, cam=cam, overlay=overlay(x, cam))
