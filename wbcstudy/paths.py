"""Where the project, the data, the cache and the results live."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
#: Where an installed (non-editable) package keeps the files it ships from the repository (see setup.py).
_SHIPPED_DIR = _PACKAGE_DIR / "_data"


def _is_checkout(path: Path) -> bool:
    """Whether path is a checkout of the project (it holds ``_config.yml`` and ``wbcstudy/``)."""
    return (path / "_config.yml").is_file() and (path / "wbcstudy").is_dir()


def project_root() -> Path:
    """The repository root: ``WBCSTUDY_ROOT``, else the nearest parent of the cwd that is a checkout, else the
    checkout the package was installed from (editable install), else the cwd (an installed wheel, e.g. on Colab:
    builds, caches and results go under the working directory)."""
    env = os.environ.get("WBCSTUDY_ROOT")
    if env:
        return Path(env).resolve()
    for candidate in [Path.cwd(), *Path.cwd().parents]:
        if _is_checkout(candidate):
            return candidate
    if _is_checkout(_PACKAGE_DIR.parent):
        return _PACKAGE_DIR.parent
    return Path.cwd()


def shipped(*parts: str) -> Path:
    """A folder the package ships as package data (``manifests``, ``params``, ``claims``) under ``wbcstudy/_data``."""
    from importlib.resources import files

    return Path(str(files("wbcstudy").joinpath("_data", *parts)))


def _repo_or_shipped(relative: str, name: str) -> Path:
    """``relative`` under the project root when it is there, else the copy shipped in the package."""
    path = project_root() / relative
    if path.is_dir():
        return path
    packaged = shipped(name)
    return packaged if packaged.is_dir() else path


def data_root() -> Path:
    """Root of the raw datasets: ``WBCSTUDY_DATA``, else ``data/raw/`` in the project."""
    env = os.environ.get("WBCSTUDY_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_absolute():
            path = (project_root() / path).resolve()
        return path
    return project_root() / "data" / "raw"


def cache_dir() -> Path:
    """Directory for decoded-array caches: ``WBCSTUDY_CACHE``, else ``data/cache/`` (git-ignored)."""
    env = os.environ.get("WBCSTUDY_CACHE")
    path = Path(env).expanduser() if env else project_root() / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def manifests_dir() -> Path:
    """Committed split manifests and inventories: ``data/manifests`` in the checkout, else the installed copy."""
    return _repo_or_shipped("data/manifests", "manifests")


def params_dir() -> Path:
    """The chapters' papermill parameter files (``notebooks/params/<chapter>/<profile>.yml``), else the installed
    copy."""
    return _repo_or_shipped("notebooks/params", "params")


def claims_dir() -> Path:
    """The papers' claims files (``book/claims/<chapter>.yml``), else the installed copy."""
    return _repo_or_shipped("book/claims", "claims")


def results_dir(name: str = "book/results") -> Path:
    """Directory a chapter writes its results JSON into (relative names are taken from the project root)."""
    path = Path(name)
    if not path.is_absolute():
        path = project_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path
