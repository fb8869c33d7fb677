"""Shared test set-up: point the data root at the mirror beside the checkout when none is set."""
from __future__ import annotations

import os
from pathlib import Path

_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "WBCSTUDY_DATA" not in os.environ and _MIRROR.is_dir():
    os.environ["WBCSTUDY_DATA"] = str(_MIRROR)  # the mirror every checkout has beside it (CI sets it explicitly)
