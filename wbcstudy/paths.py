"""Where the project, the data, the cache and the results live."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root: ``WBCSTUDY_ROOT``, else the nearest parent of the cwd holding ``_config.yml`` and ``wbcstudy/``, else the package's parent."""
    env = os.environ.get("WBCSTUDY_ROOT")
    if env:
        return Path(env).resolve()
    for candidate in [Path.cwd(), *Path.cwd().parents]:
        if (candidate / "_config.yml").is_file() and (candidate / "wbcstudy").is_dir():
            return candidate
    return _PACKAGE_DIR.parent


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
    """Committed split manifests and inventories."""
    return project_root() / "data" / "manifests"


def results_dir(name: str = "book/results") -> Path:
    """Directory a chapter writes its results JSON into (relative names are taken from the project root)."""
    path = Path(name)
    if not path.is_absolute():
        path = project_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path
