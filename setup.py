"""Packaging hook: the wheel ships the committed manifests, chapter parameter files and claims files.

They live in the repository at ``data/manifests``, ``notebooks/params`` and ``book/claims``; ``build_py`` copies
them into the built package as ``wbcstudy/_data/{manifests,params,claims}``, where ``wbcstudy.paths`` finds them
when no checkout is at hand (an installed wheel, e.g. on Colab). Everything else is in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: repository folder -> name under wbcstudy/_data
SHIPPED = {"data/manifests": "manifests", "notebooks/params": "params", "book/claims": "claims"}
PATTERNS = ("*.csv", "*.json", "*.yml", "*.yaml")


class BuildPyWithData(build_py):
    """``build_py`` that also copies the shipped repository folders into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        here = Path(__file__).resolve().parent
        for source, name in SHIPPED.items():
            src = here / source
            dest = Path(self.build_lib) / "wbcstudy" / "_data" / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for pattern in PATTERNS:
                for path in src.rglob(pattern) if src.is_dir() else ():
                    target = dest / path.relative_to(src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)


setup(cmdclass={"build_py": BuildPyWithData})
