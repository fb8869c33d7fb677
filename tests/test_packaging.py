"""Installed use: the wheel ships the manifests and parameter files; dependency ranges with exact pins beside them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from wbcstudy.paths import project_root

ROOT = project_root()
#: what a build needs from the checkout (copied, so that the build leaves nothing in the work tree)
BUILD_INPUTS = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "wbcstudy", "data/manifests",
                "notebooks/params", "book/claims"]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0]).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel in BUILD_INPUTS:
        path = ROOT / rel
        if path.is_dir():
            shutil.copytree(path, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("wbcstudy-*.whl")
    return whl


def test_wheel_ships_manifests_params_and_claims(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ["wbcstudy/_data/manifests/pbc8.csv", "wbcstudy/_data/manifests/pbc_inventory.csv",
                "wbcstudy/_data/manifests/construction_report.json", "wbcstudy/_data/params/data/smoke.yml"]:
        assert rel in names, rel
    shipped = {n.removeprefix("wbcstudy/_data/manifests/") for n in names if n.startswith("wbcstudy/_data/manifests/")}
    assert shipped == {p.name for p in (ROOT / "data" / "manifests").iterdir() if p.is_file()}
    params = {n.removeprefix("wbcstudy/_data/params/") for n in names if n.startswith("wbcstudy/_data/params/")}
    assert params == {p.relative_to(ROOT / "notebooks" / "params").as_posix()
                      for p in (ROOT / "notebooks" / "params").rglob("*.yml")}


def test_unpacked_wheel_finds_its_manifests_without_a_checkout(wheel, tmp_path):
    unpacked, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(wheel).extractall(unpacked)
    empty.mkdir()
    code = ("from wbcstudy import paths; import wbcstudy.data as d; print(paths.manifests_dir()); "
            "print(paths.params_dir()); print(len(d.load_manifest('pbc8')))")
    env = {**os.environ, "PYTHONPATH": str(unpacked), "WBCSTUDY_ROOT": str(empty)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=empty, timeout=300)
    assert out.returncode == 0, out.stderr
    manifests, params, rows = out.stdout.split()
    assert Path(manifests) == unpacked / "wbcstudy" / "_data" / "manifests" and (Path(manifests) / "pbc8.csv").is_file()
    assert Path(params) == unpacked / "wbcstudy" / "_data" / "params"
    assert int(rows) == 17092 - 1 - 17  # the PBC manifest: every readable, de-duplicated image


def test_wheel_installed_into_a_fresh_venv_reads_a_manifest(wheel, tmp_path):
    """A fresh venv holding only the wheel (its dependencies come from this environment through a .pth line)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the wheel's own files
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WBCSTUDY_ROOT", "PYTHONPATH")}
    code = ("import wbcstudy, wbcstudy.paths as p; from wbcstudy.data import load_manifest; "
            "print(wbcstudy.__file__); print(p.project_root()); print(len(load_manifest('pbc5')))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert out.returncode == 0, out.stderr
    module, root, rows = out.stdout.split()
    assert Path(module).is_relative_to(site)  # the installed copy, not the checkout
    assert Path(root) == work  # no checkout: builds and caches go under the working directory
    assert int(rows) > 8000


def test_dependency_ranges_admit_colab_and_the_constraints_pin_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    deps = {_name(d): d for d in project["dependencies"]}
    assert deps["torch"] == "torch>=2.4" and deps["torchvision"] == "torchvision>=0.19"
    extras = project["optional-dependencies"]
    assert any(_name(d) == "jupyterlab" for d in extras["lab"]) and "colab" in extras
    lines = [ln.strip() for ln in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()]
    pins = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    pins = {_name(k): v for k, v in pins.items()}
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "wbcstudy" not in pins and not any(ln.startswith("-e") for ln in lines)
    wanted = set(deps) | {_name(d) for name, extra in extras.items() if name != "lab" for d in extra}
    assert wanted <= set(pins), sorted(wanted - set(pins))


def test_every_chapters_colab_install_points_at_the_books_repository():
    """The repository address lives in _config.yml (the book's repository button); each chapter's Colab set-up cell
    installs from that address and no other (a re-run carries a change of address into every chapter)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
    for source in sorted((root / "notebooks").glob("*.md")):
        found = set(re.findall(r"git\+(https://[^\s\"']+)", source.read_text()))
        assert found == {url}, f"{source.name} installs from {found}, the book's repository is {url}"
