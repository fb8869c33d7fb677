"""The trustworthiness chapter's Streamlit app: upload a cell image, see the class, every probability and Grad-CAM.

Start it with ``wbcstudy app`` (or ``streamlit run wbcstudy/app/streamlit_app.py``); the logic lives in
``wbcstudy.app.core`` so it can be tested without Streamlit.
"""
from pathlib import Path

from wbcstudy.app.core import (
    CheckpointError,
    ImageRejected,
    Prediction,
    calibrate_ood,
    default_checkpoint,
    find_checkpoints,
    load_checkpoint,
    predict,
    save_checkpoint,
    to_model_input,
    validate_image,
)

#: The Streamlit script (``streamlit run`` this file).
SCRIPT = Path(__file__).with_name("streamlit_app.py")

__all__ = ["SCRIPT", "CheckpointError", "ImageRejected", "Prediction", "calibrate_ood", "default_checkpoint",
           "find_checkpoints", "load_checkpoint",
           "predict", "save_checkpoint", "to_model_input", "validate_image"]
