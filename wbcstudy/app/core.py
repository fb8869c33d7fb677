"""The app's logic, free of Streamlit: upload validation, the checkpoint format, prediction with Grad-CAM.

The checkpoint is a plain dict readable with ``torch.load(..., weights_only=True)``:
``{"format": "wbcstudy-trust-app/1", "state_dict": {...}, "meta_json": "<JSON>"}`` where the metadata holds
the architecture name (one of ``wbcstudy.models.trust_cnn.ARCHITECTURES``), the class names, the input size,
the normalisation mean/std, how the model was trained (chapter, profile, test accuracy) and, when the chapter
calibrated one, the out-of-distribution rule ``"ood": {"score": "max_softmax", "threshold": t, "auroc": a, ...}``
(see ``calibrate_ood``): a prediction whose top probability is below ``t`` is flagged as not looking like any of
the classes. A checkpoint of a pipeline test (the smoke profile, or a test accuracy near chance) is refused
(``refusal``); one that does not say how it was trained (older runs) is flagged (``provenance_warning``).
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

from wbcstudy.data.readers import PBC_ORIGINAL_SIZES, PBC_WINDOW, PBC_WINDOW_ORIGIN
from wbcstudy.paths import project_root

__all__ = ["ImageRejected", "CheckpointError", "validate_image", "to_model_input", "save_checkpoint",
           "load_checkpoint", "default_checkpoint", "find_checkpoints", "Prediction", "predict", "calibrate_ood",
           "max_softmax", "ood_warning", "MAX_UPLOAD_BYTES", "MAX_PIXELS", "MIN_SIDE", "CHECKPOINT_FORMAT",
           "DEFAULT_CHECKPOINT", "MAKE_CHECKPOINT", "OOD_TPR", "PIPELINE_TEST_PROFILES", "read_meta", "refusal",
           "provenance_warning", "empty_gradcam_notice"]

#: 20 MB (10^6 bytes) of file. Streamlit's upload widget takes its limit in "MB" and, in a browser outside Windows,
#: counts and shows it in 10^6 bytes ("Limit 20MB per file", "File must be 20.0MB or smaller"): the app says MB too.
MAX_UPLOAD_BYTES = 20_000_000
#: Declared pixels above which an upload is refused from its header, before decoding (a decompression-bomb guard
#: far below PIL's own 89 MP warning): 16 MP holds a whole 4096×3072 microscope-camera frame; a single cell needs
#: far less (PBC: 360×363).
MAX_PIXELS = 16_000_000
MIN_SIDE = 16  # px: smaller images carry no cell to classify
CHECKPOINT_FORMAT = "wbcstudy-trust-app/1"
#: Where the trustworthiness chapter writes the app's model (rebuildable: `wbcstudy run trust`), at any profile.
DEFAULT_CHECKPOINT = "build/trust/app_model.pt"
#: The one command that writes a usable one: the book's cpu profile (smoke trains a pipeline test, not a classifier).
MAKE_CHECKPOINT = "wbcstudy run trust --profile cpu"
#: How long that takes (book/results/timings.json: 528 s on a CPU with native bf16, ≈ 2.5× that without).
MAKE_CHECKPOINT_TIME = "about 9 minutes on a CPU with native bf16, about 22 without"
#: Profiles whose checkpoint is a test that the chapter runs end to end, not a classifier: the app refuses them.
PIPELINE_TEST_PROFILES = ("smoke",)
#: The share of in-distribution cells the out-of-distribution threshold keeps (true-positive rate).
OOD_TPR = 0.95


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
        raise ImageRejected(f"The file is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB.")
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
        raise ImageRejected(f"The image is only {w}×{h} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed to show a "
                            "cell.")
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
    """The model's view of an image: a PBC original (360×363 or 366×369, the sizes the published set holds) cropped
    to the chapters' 256-px window at (48, 48); any other image centre-cropped to a square; then resized to ``size``
    (antialiased bilinear) → uint8 (size, size, 3)."""
    img = Image.fromarray(rgb)
    w, h = img.size
    if (w, h) in PBC_ORIGINAL_SIZES:  # the same window as wbcstudy.data.load_pbc_image
        x0, y0 = PBC_WINDOW_ORIGIN
        img = img.crop((x0, y0, x0 + PBC_WINDOW, y0 + PBC_WINDOW))
    elif w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def max_softmax(model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The top softmax probability of each image (uint8 NHWC at the model's input size), computed in float32."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size]).float()
            out.append(torch.softmax(logits, dim=1).max(dim=1).values.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def calibrate_ood(model: torch.nn.Module, in_dist_images: np.ndarray | torch.Tensor,
                  ood_images: np.ndarray | torch.Tensor, tpr: float = OOD_TPR) -> dict:
    """The app's out-of-distribution rule, calibrated on held-out cells (uint8 NHWC at the model's input size).

    Score: the top softmax probability. Threshold: the highest one that keeps at least ``tpr`` (95 %) of the
    in-distribution cells (with n of them: the ⌈tpr·n⌉-th highest score). AUROC: how well the score separates
    in-distribution cells (positives) from the out-of-distribution ones (e.g. PBC platelets and erythroblasts),
    0.5 = chance. Returns
    ``{"score": "max_softmax", "threshold", "auroc", "tpr", "fpr" (share of OOD cells that pass), "n_in", "n_ood"}``
    for ``save_checkpoint(..., ood=...)``.
    """
    from sklearn.metrics import roc_auc_score

    s_in, s_ood = max_softmax(model, in_dist_images), max_softmax(model, ood_images)
    if len(s_in) == 0 or len(s_ood) == 0:
        raise ValueError("calibrate_ood needs at least one in-distribution and one out-of-distribution image")
    keep = int(np.ceil(tpr * len(s_in) - 1e-9))  # the fewest in-distribution cells that make the rate
    threshold = float(np.sort(s_in)[len(s_in) - max(keep, 1)])
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_ood))]
    auroc = float(roc_auc_score(labels, np.r_[s_in, s_ood]))
    return {"score": "max_softmax", "threshold": threshold, "auroc": auroc, "tpr": float((s_in >= threshold).mean()),
            "fpr": float((s_ood >= threshold).mean()), "n_in": int(len(s_in)), "n_ood": int(len(s_ood))}


_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def ood_warning(meta: dict, probabilities: dict[str, float]) -> str | None:
    """The warning for a prediction whose top probability is below the checkpoint's OOD threshold (else None)."""
    rule = meta.get("ood")
    if not rule:
        return None
    top = max(probabilities.values())
    if top >= float(rule["threshold"]):
        return None
    n = len(meta["classes"])
    n = _WORDS[n] if n < len(_WORDS) else str(n)
    return (f"This does not look like one of the {n} white-cell classes the model knows: its top probability "
            f"({top:.1%}) is below {float(rule['threshold']):.1%}, which {float(rule.get('tpr', OOD_TPR)):.0%} of "
            "the white cells it was checked on reach. It may be a platelet, an erythroblast, debris or an image "
            "from another microscope; treat the label below as meaningless.")


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: str, classes: list[str], image_size: int,
                    mean: list[float], std: list[float], ood: dict | None = None, **info: object) -> Path:
    """Write the app's checkpoint (state dict + JSON metadata) for ``model``, built by ``build_trust_model(arch, ...)``.

    ``ood`` is the out-of-distribution rule from ``calibrate_ood`` (stored in the metadata; the app then warns).
    """
    from wbcstudy.models.trust_cnn import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}")
    if ood is not None:
        if ood.get("score") != "max_softmax" or not 0.0 <= float(ood.get("threshold", -1)) <= 1.0:
            raise ValueError("ood must come from calibrate_ood (score 'max_softmax', threshold in [0, 1]); got "
                             f"{ood!r}")
        info["ood"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in ood.items()}
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


def find_checkpoints(folder: str | Path | None = None, limit: int = 20) -> list[Path]:
    """App checkpoints under ``folder`` (default: the project's ``build/``), newest first.

    Only files in this app's format are listed; a file is recognised by the format tag in its pickled header,
    without loading its tensors.
    """
    import zipfile

    folder = Path(folder) if folder is not None else project_root() / "build"
    found = []
    for path in folder.rglob("*.pt") if folder.is_dir() else ():
        try:
            with zipfile.ZipFile(path) as zf:
                header = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if header and CHECKPOINT_FORMAT.encode() in zf.read(header):
                    found.append(path)
        except (OSError, zipfile.BadZipFile):
            continue
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]


def missing_checkpoint_message(path: Path) -> str:
    """What to do when the app's model is not at ``path``: the command that writes it, and what was found instead."""
    found = [p for p in find_checkpoints() if p.resolve() != path.resolve()]
    lines = [f"No trained model at {path}. Make one with `{MAKE_CHECKPOINT}` (the book's model; "
             f"{MAKE_CHECKPOINT_TIME}): it writes {DEFAULT_CHECKPOINT}."]
    if found:
        root = project_root()
        shown = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in found]
        lines.append("App checkpoints found under build/: " + ", ".join(shown) + ". Use one with "
                     f"`wbcstudy app --checkpoint {shown[0]}` (or set WBCSTUDY_APP_CHECKPOINT).")
    return "\n\n".join(lines)


def _load_failure(exc: Exception) -> str:
    """Why a checkpoint did not load, in one phrase (not torch's advice to load it with ``weights_only=False``:
    that would run whatever code the file holds)."""
    text = str(exc)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
        detail = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        return ("it does not load as plain tensors and values, so it is not an app checkpoint"
                + (f": {detail.rstrip('.')}" if detail else ""))
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _read_blob(path: Path) -> tuple[dict, dict]:
    """The checkpoint's dict and its metadata, loaded with ``weights_only=True``, or ``CheckpointError``."""
    if not path.is_file():
        raise CheckpointError(missing_checkpoint_message(path))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
        meta = json.loads(blob["meta_json"])
    except Exception as exc:
        raise CheckpointError(f"The checkpoint {path} cannot be loaded ({_load_failure(exc)}). "
                              f"Run `{MAKE_CHECKPOINT}` to write it again.") from None
    return blob, meta


def read_meta(path: str | Path | None = None) -> dict:
    """An app checkpoint's metadata (architecture, classes, how it was trained), without building the model."""
    return _read_blob(Path(path) if path else default_checkpoint())[1]


def refusal(meta: dict) -> str | None:
    """Why the app must not classify with this checkpoint (None when it may): a pipeline test's model (the smoke
    profile), or one whose recorded test accuracy is below twice chance, is not a classifier."""
    profile, accuracy = meta.get("profile"), meta.get("test_accuracy")
    n = len(meta.get("classes", ())) or 1
    scored = f" (test accuracy {float(accuracy):.3f}; chance is {1 / n:.3f})" if accuracy is not None else ""
    if profile in PIPELINE_TEST_PROFILES:
        why = (f"This model was trained at the trust chapter's {profile} profile{scored}: a test that the chapter "
               "runs end to end, not a classifier, so the app does not classify with it.")
    elif accuracy is not None and float(accuracy) < 2 / n:
        why = (f"This model's test accuracy is {float(accuracy):.3f}, less than twice chance ({1 / n:.3f} for "
               f"{n} classes): it is not a classifier, so the app does not classify with it.")
    else:
        return None
    return (f"{why} Make the book's model with `{MAKE_CHECKPOINT}` ({MAKE_CHECKPOINT_TIME}; it writes "
            f"{DEFAULT_CHECKPOINT}), then start the app again.")


def provenance_warning(meta: dict) -> str | None:
    """The warning for a checkpoint that does not record the profile it was trained at (older runs), else None."""
    if meta.get("profile"):
        return None
    return ("This checkpoint does not record the profile it was trained at or its test accuracy (an older run wrote "
            "it), so it may be a pipeline test rather than a classifier: do not trust its answers. "
            f"`{MAKE_CHECKPOINT}` writes a model that records both ({MAKE_CHECKPOINT_TIME}).")


def load_checkpoint(path: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, float32, CPU) and metadata from an app checkpoint, loaded with ``weights_only=True``."""
    from wbcstudy.models.trust_cnn import build_trust_model

    path = Path(path) if path else default_checkpoint()
    blob, meta = _read_blob(path)
    try:
        model = build_trust_model(meta["arch"], len(meta["classes"]), meta["image_size"], meta["mean"], meta["std"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"The checkpoint {path} cannot be loaded ({_load_failure(exc)}). "
                              f"Run `{MAKE_CHECKPOINT}` to write it again.") from None
    return model.float().eval(), meta


def empty_gradcam_notice(label: str) -> str:
    """What the app shows instead of an all-zero Grad-CAM map (which, drawn, is a flat tint that explains nothing)."""
    return (f"No Grad-CAM map for '{label}': the map is zero everywhere (no location in the last convolutional "
            "layer raises this class's score), so there is nothing to draw. A trained model rarely gives this; an "
            "untrained or collapsed one often does.")


@dataclass
class Prediction:
    """What the app shows: the class, every class's probability, the model's input and its Grad-CAM overlay (None,
    with ``cam_notice`` saying so, when the map is zero everywhere), and the out-of-distribution warning (None when
    the checkpoint has no OOD rule or the cell passes it)."""

    label: str
    probabilities: dict[str, float]
    model_input: np.ndarray
    cam: np.ndarray
    overlay: np.ndarray | None
    warning: str | None = None
    cam_notice: str | None = None


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
    probabilities = {c: float(p) for c, p in zip(classes, probs)}
    empty = not bool((cam > 0).any())  # Grad-CAM's ReLU left nothing: the scaled map is 0 everywhere
    return Prediction(label=classes[k], probabilities=probabilities, model_input=x, cam=cam,
                      overlay=None if empty else overlay(x, cam), warning=ood_warning(meta, probabilities),
                      cam_notice=empty_gradcam_notice(classes[k]) if empty else None)
