"""Streamlit app of the trustworthiness chapter: ``wbcstudy app`` or ``streamlit run wbcstudy/app/streamlit_app.py``.

The model comes from ``WBCSTUDY_APP_CHECKPOINT`` or ``build/trust/app_model.pt`` (written by the chapter).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from wbcstudy.app.core import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    CheckpointError,
    ImageRejected,
    default_checkpoint,
    load_checkpoint,
    predict,
    provenance_warning,
    refusal,
    validate_image,
)

#: The upload limit in MB (10^6 bytes), the unit Streamlit's widget shows it in ("Limit 20MB per file").
MAX_UPLOAD_MB = MAX_UPLOAD_BYTES // 10**6

st.set_page_config(page_title="WBC classifier (wbcstudy)", layout="centered")
st.title("White-blood-cell classifier")
st.caption("A research demonstration from the wbcstudy trustworthiness chapter — not a medical device. "
           "The model was trained on PBC single-cell images (CellaVision DM96, May-Grünwald-Giemsa stain); "
           "images from other microscopes or stains are outside what it has seen.")


@st.cache_resource(show_spinner="Loading the model…")
def _model(path: str, mtime: float):
    return load_checkpoint(path)


path = default_checkpoint()
try:
    model, meta = _model(str(path), path.stat().st_mtime if path.is_file() else 0.0)
except CheckpointError as exc:
    st.error(str(exc))
    st.stop()

refused = refusal(meta)
if refused:  # a pipeline test's model is not shown as a classifier
    st.error(refused)
    st.stop()
unknown = provenance_warning(meta)
if unknown:
    st.warning(unknown)

st.write(f"Model: **{meta['arch']}** at {meta['image_size']} px, classes: {', '.join(meta['classes'])}"
         + (f"; test accuracy {meta['test_accuracy']:.3f} ({meta.get('profile', '?')} profile)"
            if "test_accuracy" in meta else ""))

ood = meta.get("ood")
if ood:
    st.caption(f"Out-of-distribution check: images whose top probability is below {ood['threshold']:.1%} are flagged "
               f"(AUROC {ood['auroc']:.3f} between white cells and other PBC cells in the chapter).")
else:
    st.caption("This model carries no out-of-distribution check: it gives every image one of its classes.")

uploaded = st.file_uploader(f"Upload one image of a single stained white blood cell (at most {MAX_UPLOAD_MB} MB)",
                            key="upload", max_upload_size=MAX_UPLOAD_MB,
                            help=f"PNG, JPEG, BMP, TIFF, GIF or WebP, up to {MAX_UPLOAD_MB} MB and "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels.")
if uploaded is None:
    st.info("Upload an image (PNG, JPEG, BMP, TIFF…) to classify it.")
    st.stop()

try:
    rgb, notes = validate_image(uploaded.getvalue())
except ImageRejected as exc:
    st.error(f"Cannot classify {uploaded.name!r}: {exc}")
    st.stop()
for note in notes:
    st.warning(note)

try:
    result = predict(model, meta, rgb)
except Exception as exc:  # the app must never crash on an upload
    st.error(f"The model could not process this image ({type(exc).__name__}: {exc}).")
    st.stop()

if result.warning:
    st.warning(result.warning)
st.subheader(f"Predicted: {result.label} ({result.probabilities[result.label]:.1%})")
probs = pd.DataFrame({"class": list(result.probabilities), "probability": list(result.probabilities.values())})
st.bar_chart(probs, x="class", y="probability")
st.dataframe(probs.sort_values("probability", ascending=False).reset_index(drop=True), hide_index=True)
left, right = st.columns(2)
left.image(result.model_input, caption=f"model input ({meta['image_size']} px)", width="stretch")
if result.overlay is None:  # an all-zero map drawn is a flat tint that explains nothing
    right.info(result.cam_notice)
else:
    right.image(result.overlay, caption=f"Grad-CAM for '{result.label}'", width="stretch")
st.caption("Grad-CAM shows where the last convolutional layer's evidence for the predicted class lies; the chapter "
           "checks with deletion curves and randomised weights that such maps track what the model uses.")
