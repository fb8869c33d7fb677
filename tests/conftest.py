"""Shared test set-up: the data root defaults to the mirror beside the checkout; a one-thread fixture for small
models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "WBCSTUDY_DATA" not in os.environ and _MIRROR.is_dir():
    os.environ["WBCSTUDY_DATA"] = str(_MIRROR)  # the mirror every checkout has beside it (CI sets it explicitly)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Restore ``sys.modules["__main__"]`` after each test: Streamlit's AppTest leaves the app script there, and spawned
    worker processes (the ResNeXt-CC grid's) re-run whatever ``__main__`` names."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small models: they only slow down when the two cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The HTML book built once per test session from the committed chapters (Jupyter Book 1, warnings as errors);
    with ``WBCSTUDY_BOOK_HTML`` set (``make browser-check``), the book already built there, the one that is deployed."""
    import subprocess
    import sys

    from wbcstudy.paths import project_root

    given = os.environ.get("WBCSTUDY_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"WBCSTUDY_BOOK_HTML={given} holds no built book (run `make book-html` first)")
        return html
    out = tmp_path_factory.mktemp("book")
    root = project_root()
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--path-output", str(out), "-W", "-n",
           "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "_build" / "html"


def pytest_configure(config) -> None:
    """The test session is an entry: ``WBCSTUDY_PRECISION`` (CI forces each precision in turn) is read once and forced
    on every model the unit tests train. The regression notebooks' kernels run under the smoke profile's machine pins
    (fp32, AVX2 kernels), as they were made."""
    from wbcstudy.notebook import set_library_environment
    from wbcstudy.train import force_precision, precision_from_environment

    force_precision(precision_from_environment())
    set_library_environment()
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        from wbcstudy.run import SMOKE_ENV

        os.environ.update(SMOKE_ENV)  # nbval's kernels inherit this environment (--nbval-current-env)


@pytest.fixture(autouse=True)
def _keep_the_forced_precision():
    """A test that forces or lifts a precision (``train.force_precision``) leaves the session's force as it found it."""
    from wbcstudy import train

    before = train.forced_precision()
    yield
    train.force_precision(before)
