"""What every chapter notebook does first and last: set-up, the run's precision, and its provenance."""
from __future__ import annotations

import os
import time
import warnings

import pandas as pd

_START: list[float] = []


def on_colab() -> bool:
    """Whether the notebook runs on Google Colab."""
    import sys

    return "google.colab" in sys.modules


#: What the entries set for the libraries the study uses before they are imported: diffusers must never try the
#: network (nothing is downloaded from a model hub here) nor print its advisory warnings into a chapter.
LIBRARY_ENVIRONMENT: dict[str, str] = {"HF_HUB_OFFLINE": "1", "DIFFUSERS_NO_ADVISORY_WARNINGS": "1"}


def set_library_environment() -> None:
    """Set :data:`LIBRARY_ENVIRONMENT` where the environment does not already say otherwise (the entries call it)."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


#: Where a Colab session keeps the datasets it fetches.
COLAB_DATA = "/content/wbcstudy-data"


def setup() -> None:
    """Start the chapter's clock, set the book's figure style and table precision, and say where the data is read from.

    On Colab, with no ``WBCSTUDY_DATA`` set, the data root becomes ``/content/wbcstudy-data`` and the public
    datasets are fetched there (each download checked against its recorded sha256).
    """
    from wbcstudy import plots

    _START[:] = [time.perf_counter()]
    set_library_environment()
    if on_colab() and "WBCSTUDY_DATA" not in os.environ:
        os.environ["WBCSTUDY_DATA"] = COLAB_DATA
        _fetch_public_data()
    # tqdm.auto, imported by accelerate outside Jupyter
    warnings.filterwarnings("ignore", message="IProgress not found")
    # pandas 3 (copy-on-write) hands out read-only arrays from ``Series.to_numpy()``; a chapter that wraps one in
    # ``torch.from_numpy`` (W-Net's labels) only reads the tensor, and torch's warning, with the kernel's temporary cell
    # path, would be printed into the book
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    plots.set_style()
    pd.set_option("display.precision", 3)
    pd.set_option("display.float_format", "{:.3f}".format)  # never 9.640e-02: three decimals in every table
    where = "WBCSTUDY_DATA" if "WBCSTUDY_DATA" in os.environ else "data/raw/ (set WBCSTUDY_DATA to change it)"
    print("data root:", where)


def _fetch_public_data() -> None:
    """Fetch every public dataset into the data root; a dataset that cannot be fetched is named in one line."""
    from wbcstudy.data import sources

    for key, source in sources.SOURCES.items():
        try:
            print(f"{key}: {sources.fetch(key)}")
        except Exception as error:  # noqa: BLE001 - each dataset is reported and the others still fetched
            print(f"{key}: not fetched ({str(error).splitlines()[0]}); see `wbcstudy data sources` to place it by hand")


def elapsed() -> float:
    """Seconds since :func:`setup` (0 when it was not called)."""
    return time.perf_counter() - _START[0] if _START else 0.0


def apply_paper_profile_on_colab_gpu(chapter: str, namespace: dict) -> dict:
    """On Colab with a GPU, replace the cpu defaults in ``namespace`` by the chapter's ``paper`` profile; returns what
    changed.

    Only an interactive Colab run whose ``profile`` is still the default ``cpu`` is changed: a papermill run keeps the
    profile it was given.
    """
    import torch

    if not (on_colab() and torch.cuda.is_available() and namespace.get("profile") == "cpu"):
        return {}
    from wbcstudy.run import load_profile

    changed = dict(load_profile(chapter, "paper"))
    changed["profile"] = "paper"
    namespace.update(changed)
    print(f"Colab with a GPU: using the paper profile ({', '.join(sorted(changed))})")
    return changed


#: The mime prefix myst-nb gives a value glued without display (``myst_nb.glue(..., display=False)``).
GLUE_PREFIX = "application/papermill.record/"


def glue(**values: object) -> None:
    """Glue each value under its name for the chapter's MyST prose, where ``{glue:text}`name:.3f``` pastes it.

    The same record ``myst_nb.glue(name, value, display=False)`` writes (no myst-nb needed where a chapter runs):
    nothing is shown in the notebook, and the book pastes the value when it renders the text. A float is glued at 5
    significant digits (more than any sentence prints), so that the copies nbval compares do not depend on the last bits
    a CPU's kernels leave; a NumPy scalar as the Python number; text as it is (pasted without quotes). A glued name is
    what the prose cites: name it for what it is (``hsv_gain``, not ``x``).
    """
    import numbers

    from IPython.display import display

    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Number)):
            raise TypeError(f"glue {name}: a number or a text, got {type(value).__name__}")
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, numbers.Real):
            value = float(f"{float(value):.5g}")
        elif not isinstance(value, str):
            raise TypeError(f"glue {name}: a real number or a text, got {type(value).__name__}")
        display({GLUE_PREFIX + "text/plain": repr(value)}, raw=True,
                metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}})


def configure(precision: str = "auto", deterministic: bool = False) -> str:
    """Apply the chapter's ``precision`` parameter to every model it trains; returns the precision the CPU/GPU will use.

    The entry of a chapter's kernel: ``fp32`` or ``bf16`` force that precision (``wbcstudy.train.force_precision``);
    ``auto`` keeps a precision forced from outside (``WBCSTUDY_PRECISION``, read here once, as the runner and the test
    session set it for the smoke profile), else uses bf16 where the hardware runs it natively.
    ``deterministic`` asks torch for deterministic algorithms (the smoke profile's regression copies need it).
    """
    import torch

    from wbcstudy.train import PRECISIONS, force_precision, precision_from_environment, select_device, select_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    force_precision(precision if precision != "auto" else precision_from_environment())
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = select_device("auto")
    chosen = select_precision("auto", device)
    print(f"precision: {chosen} (requested {precision})")  # the machine itself is in the provenance table
    return chosen


def provenance_table(profile: str) -> pd.DataFrame:
    """Print the run's profile, wall-clock and commit; return the versions and machine as a one-column table."""
    from wbcstudy.results import git_commit, provenance

    print(f"profile: {profile}; wall-clock: {elapsed():.1f} s; commit: {git_commit()}")
    return pd.Series(provenance(), name="version").to_frame()
